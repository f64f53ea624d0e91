// Emulator build of cuda/src/flat_index.cu (simdex_emu/prelude.h is force-included).
#include "../../src/flat_index.cu"
