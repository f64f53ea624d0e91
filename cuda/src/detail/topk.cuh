// Block-wide top-k selection for the GPU exact search.
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
__device__ void block_bitonic_sort(float* s, std::int64_t* id, int n) {
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

/// Grid: one block of kTopkThreads per query row; dynamic shared memory
/// topk_smem_bytes(k). Merges row r of the tile S (ncols scores, row stride ldS;
/// column j is base row col0 + j, whose id is ids[col0 + j] or col0 + j) into the
/// sorted lists best_s / best_i (k per row).
__global__ void __launch_bounds__(kTopkThreads)
    topk_merge_kernel(const float* __restrict__ S, std::int64_t ldS, std::int64_t ncols,
                      std::int64_t col0, const std::int64_t* __restrict__ ids, int k,
                      float* __restrict__ best_s, std::int64_t* __restrict__ best_i) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int P = pow2_ceil(k + kTopkCap);
  std::int64_t* sh_i = reinterpret_cast<std::int64_t*>(smem);
  float* sh_s = reinterpret_cast<float*>(smem + static_cast<std::size_t>(P) * sizeof(std::int64_t));
  __shared__ int count;

  const std::int64_t row = blockIdx.x;
  const float* srow = S + row * ldS;
  float* bs = best_s + row * k;
  std::int64_t* bi = best_i + row * k;
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31;

  for (int i = tid; i < k; i += blockDim.x) {
    sh_s[i] = bs[i];
    sh_i[i] = bi[i];
  }
  if (tid == 0) count = 0;
  __syncthreads();
  float thr_s = sh_s[k - 1];
  std::int64_t thr_i = sh_i[k - 1];

  const std::int64_t per_round = static_cast<std::int64_t>(kTopkItems) * blockDim.x;
  for (std::int64_t base = 0; base < ncols; base += per_round) {
#pragma unroll
    for (int it = 0; it < kTopkItems; ++it) {
      const std::int64_t j = base + static_cast<std::int64_t>(it) * blockDim.x + tid;
      float sc = 0.0f;
      std::int64_t id = 0;
      bool pass = false;
      if (j < ncols) {
        sc = srow[j];
        pass = sc >= thr_s;  // cheap reject first: ids are read only for the few survivors
        if (pass) {
          id = ids != nullptr ? ids[col0 + j] : col0 + j;
          pass = better(sc, id, thr_s, thr_i);
        }
      }
      const unsigned mask = __ballot_sync(0xffffffffu, pass);
      if (mask != 0u) {
        int start = 0;
        if (lane == 0) start = atomicAdd(&count, __popc(mask));
        start = __shfl_sync(0xffffffffu, start, 0);
        if (pass) {
          const int pos = k + start + __popc(mask & ((1u << lane) - 1u));
          sh_s[pos] = sc;
          sh_i[pos] = id;
        }
      }
    }
    __syncthreads();
    const int c = count;  // uniform: read after the barrier, changed only after the next one
    __syncthreads();
    if (c > kTopkCap - static_cast<int>(per_round)) {
      block_bitonic_sort(sh_s, sh_i, k + c);
      if (tid == 0) count = 0;
      __syncthreads();
      thr_s = sh_s[k - 1];
      thr_i = sh_i[k - 1];
    }
  }
  const int c = count;
  if (c > 0) block_bitonic_sort(sh_s, sh_i, k + c);
  for (int i = tid; i < k; i += blockDim.x) {
    bs[i] = sh_s[i];
    bi[i] = sh_i[i];
  }
}

}  // namespace simdex::cuda::detail
