// Emulator build of cuda/src/lsh.cu (simdex_emu/prelude.h is force-included).
#include "../../src/lsh.cu"
