// Block-wide top-k selection helpers (used by the exact search in knn.cu and the
// LSH re-ranking in lsh.cu).
//
// Each query keeps a running list of its k best (score, id) pairs, sorted best
// first, in global memory. One thread block per query reads a row of the score
// tile: every element is compared with the current k-th best (a register
// threshold), survivors are appended to a shared-memory buffer (warp-aggregated
// atomics), and when the buffer may overflow it is merged with the list by a
// bitonic sort in shared memory. After the first tile almost nothing passes the
// threshold, so the cost is close to one streaming read of the tile.
//
// Order: higher score first; equal scores by smaller id (the CPU rule, topk.h).
// Empty slots are (-inf, kEmpty) and lose against every real candidate.
#pragma once

#include <cstdint>

namespace simdex::cuda::detail {

inline constexpr std::int64_t kEmpty = INT64_MAX;
inline constexpr int kTopkThreads = 128;
inline constexpr int kTopkItems = 4;      // elements per thread per round
inline constexpr int kTopkCap = 1024;     // candidate buffer (>= 2 * rows per round)

__device__ __forceinline__ bool better(float sa, std::int64_t ia, float sb, std::int64_t ib) {
  return sa > sb || (sa == sb && ia < ib);
}

/// Smallest power of two >= n (n >= 1).
__host__ __device__ __forceinline__ int pow2_ceil(int n) {
  int p = 1;
  while (p < n) p <<= 1;
  return p;
}

/// Shared memory the top-k kernel needs for k.
inline std::size_t topk_smem_bytes(int k) {
  const int p = pow2_ceil(k + kTopkCap);
  return static_cast<std::size_t>(p) * (sizeof(float) + sizeof(std::int64_t));
}

// Sort the first n entries of (s, id) best first; entries [n, P) are set to empty.
__device__ inline void block_bitonic_sort(float* s, std::int64_t* id, int n) {
  const int P = pow2_ceil(n);
  for (int i = n + static_cast<int>(threadIdx.x); i < P; i += blockDim.x) {
    s[i] = -__int_as_float(0x7f800000);  // -inf
    id[i] = kEmpty;
  }
  __syncthreads();
  for (int size = 2; size <= P; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int t = static_cast<int>(threadIdx.x); t < P / 2; t += blockDim.x) {
        const int lo = 2 * stride * (t / stride) + (t % stride);
        const int hi = lo + stride;
        const bool best_first = (lo & size) == 0;
        const bool swap = best_first ? better(s[hi], id[hi], s[lo], id[lo])
                                     : better(s[lo], id[lo], s[hi], id[hi]);
        if (swap) {
          const float ts = s[lo];
          s[lo] = s[hi];
          s[hi] = ts;
          const std::int64_t ti = id[lo];
          id[lo] = id[hi];
          id[hi] = ti;
        }
      }
      __syncthreads();
    }
  }
}

}  // namespace simdex::cuda::detail
