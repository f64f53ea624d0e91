// Emulator build of cuda/src/hashing.cu (simdex_emu/prelude.h is force-included).
#include "../../src/hashing.cu"
