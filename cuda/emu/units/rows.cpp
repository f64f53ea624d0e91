// Emulator build of cuda/src/rows.cu (simdex_emu/prelude.h is force-included).
#include "../../src/rows.cu"
