// Row-wise kernels (norms, finiteness, scatter / move / gather of stored rows).
#include <cmath>

#include "detail/rows.cuh"
#include "detail/launch.cuh"
#include "simdex/cuda/common.h"

namespace simdex::cuda::detail {

namespace {

constexpr int kWarpsPerBlock = 8;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float aux_of(float nn, int metric) {
  if (metric == 1) return nn > 0.0f ? rsqrtf(nn) : 0.0f;
  if (metric == 2 || metric == 3) return nn;
  return 0.0f;
}

// One warp per row.
__global__ void row_aux_kernel(const float* __restrict__ x, std::int64_t n, std::int64_t d,
                               std::int64_t ld, int metric, float* __restrict__ aux) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  if (row >= n) return;
  const float* p = x + row * ld;
  float acc = 0.0f;
  for (std::int64_t c = lane; c < d; c += 32) acc = fmaf(p[c], p[c], acc);
  acc = warp_sum(acc);
  if (lane == 0) aux[row] = aux_of(acc, metric);
}

__global__ void nonfinite_kernel(const float* __restrict__ x, std::int64_t n, std::int64_t d,
                                 std::int64_t ld, unsigned long long* count) {
  const std::int64_t total = n * d;
  unsigned long long bad = 0;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / d, c = i - r * d;
    if (!isfinite(x[r * ld + c])) ++bad;
  }
  if (bad != 0) atomicAdd(count, bad);
}

// One warp per row.
__global__ void scatter_rows_kernel(const float* __restrict__ src, std::int64_t n, std::int64_t d,
                                    std::int64_t ld, const std::int64_t* __restrict__ dest,
                                    const std::int64_t* __restrict__ new_ids, int metric,
                                    float* __restrict__ data, float* __restrict__ aux,
                                    std::int64_t* __restrict__ ids) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  if (i >= n) return;
  const float* p = src + i * ld;
  float* q = data + dest[i] * d;
  float acc = 0.0f;
  for (std::int64_t c = lane; c < d; c += 32) {
    const float v = p[c];
    q[c] = v;
    acc = fmaf(v, v, acc);
  }
  acc = warp_sum(acc);
  if (lane == 0) {
    aux[dest[i]] = aux_of(acc, metric);
    ids[dest[i]] = new_ids[i];
  }
}

__global__ void apply_moves_kernel(const std::int64_t* __restrict__ dst,
                                   const std::int64_t* __restrict__ src, std::int64_t nmoves,
                                   std::int64_t d, float* data, float* aux, std::int64_t* ids) {
  for (std::int64_t m = 0; m < nmoves; ++m) {
    const std::int64_t a = dst[m], b = src[m];
    for (std::int64_t c = threadIdx.x; c < d; c += blockDim.x) data[a * d + c] = data[b * d + c];
    if (threadIdx.x == 0) {
      aux[a] = aux[b];
      ids[a] = ids[b];
    }
    __syncthreads();  // a later move may read the row just written
  }
}

__global__ void gather_rows_kernel(const float* __restrict__ data, std::int64_t d,
                                   const std::int64_t* __restrict__ rows, std::int64_t n,
                                   float* __restrict__ out) {
  const std::int64_t total = n * d;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / d, c = i - r * d;
    out[i] = data[rows[r] * d + c];
  }
}

unsigned grid_for_warps(std::int64_t rows) {
  return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

unsigned grid_for_elems(std::int64_t total) {
  const std::int64_t blocks = (total + 255) / 256;
  return static_cast<unsigned>(blocks < 65536 ? (blocks > 0 ? blocks : 1) : 65536);
}

}  // namespace

void launch_row_aux(const float* x, std::int64_t n, std::int64_t d, std::int64_t ld, int metric,
                    float* aux, cudaStream_t stream) {
  if (n <= 0) return;
  SIMDEX_LAUNCH(grid_for_warps(n), kWarpsPerBlock * 32, 0, stream, row_aux_kernel)(x, n, d, ld, metric, aux);
  SIMDEX_CUDA_CHECK_LAUNCH();
}

void launch_count_nonfinite(const float* x, std::int64_t n, std::int64_t d, std::int64_t ld,
                            unsigned long long* count, cudaStream_t stream) {
  if (n <= 0 || d <= 0) return;
  SIMDEX_LAUNCH(grid_for_elems(n * d), 256, 0, stream, nonfinite_kernel)(x, n, d, ld, count);
  SIMDEX_CUDA_CHECK_LAUNCH();
}

void launch_scatter_rows(const float* src, std::int64_t n, std::int64_t d, std::int64_t ld,
                         const std::int64_t* dest, const std::int64_t* new_ids, int metric,
                         float* data, float* aux, std::int64_t* ids, cudaStream_t stream) {
  if (n <= 0) return;
  SIMDEX_LAUNCH(grid_for_warps(n), kWarpsPerBlock * 32, 0, stream, scatter_rows_kernel)(
      src, n, d, ld, dest, new_ids, metric, data, aux, ids);
  SIMDEX_CUDA_CHECK_LAUNCH();
}

void launch_apply_moves(const std::int64_t* dst, const std::int64_t* src, std::int64_t nmoves,
                        std::int64_t d, float* data, float* aux, std::int64_t* ids,
                        cudaStream_t stream) {
  if (nmoves <= 0) return;
  SIMDEX_LAUNCH(1, 256, 0, stream, apply_moves_kernel)(dst, src, nmoves, d, data, aux, ids);
  SIMDEX_CUDA_CHECK_LAUNCH();
}

void launch_gather_rows(const float* data, std::int64_t d, const std::int64_t* rows, std::int64_t n,
                        float* out, cudaStream_t stream) {
  if (n <= 0) return;
  SIMDEX_LAUNCH(grid_for_elems(n * d), 256, 0, stream, gather_rows_kernel)(data, d, rows, n, out);
  SIMDEX_CUDA_CHECK_LAUNCH();
}

}  // namespace simdex::cuda::detail
