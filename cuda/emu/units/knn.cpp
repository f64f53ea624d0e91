// Emulator build of cuda/src/knn.cu (simdex_emu/prelude.h is force-included).
#include "../../src/knn.cu"
