// Emulator build of cuda/src/common.cu (simdex_emu/prelude.h is force-included).
#include "../../src/common.cu"
