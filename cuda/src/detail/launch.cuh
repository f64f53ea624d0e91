// Kernel launch and dynamic shared memory, spelled so that the same sources also
// build for the CPU emulator (cuda/emu, -DSIMDEX_CUDA_EMU), which has no <<< >>>.
//
//   SIMDEX_LAUNCH(grid, block, smem, stream, kernel)(args...);
//   SIMDEX_DYNAMIC_SHARED(unsigned char, smem);   // inside a kernel
#pragma once

#ifdef SIMDEX_CUDA_EMU
// Defined by cuda/emu/include/simdex_emu/prelude.h (force-included there).
#ifndef SIMDEX_LAUNCH
#error "emulator builds force-include simdex_emu/prelude.h"
#endif
#else
#define SIMDEX_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define SIMDEX_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif
