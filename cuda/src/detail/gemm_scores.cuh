// Tiled FP32 GEMM with a fused "inner product -> score" epilogue.
//
// C[i][j] = score(<A_i, B_j>) for A (m x K) and B (n x K), both K-contiguous (the
// "NT" product queries x base^T). Classic SIMT scheme: a 128 x 128 block tile,
// K in steps of 8 through double-buffered shared memory with a register
// prefetch of the next step, and an 8 x 8 register tile per thread split into
// 4 x 4 quadrants (rows ty*4 and 64+ty*4, columns tx*4 and 64+tx*4) so that the
// shared-memory reads are float4 broadcasts without bank conflicts.
#pragma once

#include <cstdint>

#include "metric.cuh"

namespace simdex::cuda::detail {

inline constexpr int kGemmBM = 128;
inline constexpr int kGemmBN = 128;
inline constexpr int kGemmBK = 8;
inline constexpr int kGemmThreads = 256;
inline constexpr int kGemmPad = 4;  // keeps float4 alignment and staggers the transposed stores

// Load the 128 x 8 slice [row0, row0+128) x [k0, k0+8) of a K-contiguous matrix:
// each thread reads 4 consecutive k of one row (zero outside the matrix).
__device__ __forceinline__ void gemm_load_slice(const float* __restrict__ M, std::int64_t rows,
                                                std::int64_t ld, std::int64_t K,
                                                std::int64_t row0, std::int64_t k0, bool vec,
                                                float (&v)[4]) {
  const int t = static_cast<int>(threadIdx.x);
  const std::int64_t r = row0 + (t >> 1);
  const std::int64_t kk = k0 + (t & 1) * 4;
  if (r < rows) {
    const float* p = M + r * ld + kk;
    if (vec && kk + 3 < K) {  // vec: K % 4 == 0 and 16-byte aligned rows
      const float4 f = *reinterpret_cast<const float4*>(p);
      v[0] = f.x;
      v[1] = f.y;
      v[2] = f.z;
      v[3] = f.w;
      return;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = (kk + i < K) ? p[i] : 0.0f;
    return;
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = 0.0f;
}

__device__ __forceinline__ void gemm_store_slice(float (*S)[kGemmBM + kGemmPad], const float (&v)[4]) {
  const int t = static_cast<int>(threadIdx.x);
  const int r = t >> 1, kk = (t & 1) * 4;
#pragma unroll
  for (int i = 0; i < 4; ++i) S[kk + i][r] = v[i];
}

/// Grid: (ceil(n / 128), ceil(m / 128)); block: 256 threads.
/// a_aux / b_aux: per-row values from row_aux (cosine: inverse norms; L2: squared
/// norms of B), unused for inner product.
__global__ void __launch_bounds__(kGemmThreads)
    gemm_scores_kernel(const float* __restrict__ A, std::int64_t m, std::int64_t lda,
                       const float* __restrict__ B, std::int64_t n, std::int64_t ldb, std::int64_t K,
                       float* __restrict__ C, std::int64_t ldc, int metric,
                       const float* __restrict__ a_aux, const float* __restrict__ b_aux, bool vec) {
  __shared__ __align__(16) float As[2][kGemmBK][kGemmBM + kGemmPad];
  __shared__ __align__(16) float Bs[2][kGemmBK][kGemmBN + kGemmPad];

  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.y) * kGemmBM;
  const std::int64_t col0 = static_cast<std::int64_t>(blockIdx.x) * kGemmBN;
  const int tx = static_cast<int>(threadIdx.x) & 15, ty = static_cast<int>(threadIdx.x) >> 4;

  float acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;

  float ra[4], rb[4];
  gemm_load_slice(A, m, lda, K, row0, 0, vec, ra);
  gemm_load_slice(B, n, ldb, K, col0, 0, vec, rb);
  gemm_store_slice(As[0], ra);
  gemm_store_slice(Bs[0], rb);
  __syncthreads();

  const std::int64_t steps = (K + kGemmBK - 1) / kGemmBK;
  for (std::int64_t s = 0; s < steps; ++s) {
    const int buf = static_cast<int>(s & 1);
    const bool more = s + 1 < steps;
    if (more) {  // prefetch the next slice into registers while this one is used
      gemm_load_slice(A, m, lda, K, row0, (s + 1) * kGemmBK, vec, ra);
      gemm_load_slice(B, n, ldb, K, col0, (s + 1) * kGemmBK, vec, rb);
    }
#pragma unroll
    for (int kk = 0; kk < kGemmBK; ++kk) {
      float a[8], b[8];
      const float4 a0 = *reinterpret_cast<const float4*>(&As[buf][kk][ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&As[buf][kk][64 + ty * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&Bs[buf][kk][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&Bs[buf][kk][64 + tx * 4]);
      a[0] = a0.x; a[1] = a0.y; a[2] = a0.z; a[3] = a0.w;
      a[4] = a1.x; a[5] = a1.y; a[6] = a1.z; a[7] = a1.w;
      b[0] = b0.x; b[1] = b0.y; b[2] = b0.z; b[3] = b0.w;
      b[4] = b1.x; b[5] = b1.y; b[6] = b1.z; b[7] = b1.w;
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    if (more) {  // the other buffer was last read before the previous barrier
      gemm_store_slice(As[buf ^ 1], ra);
      gemm_store_slice(Bs[buf ^ 1], rb);
    }
    __syncthreads();
  }

  // Epilogue: inner products -> scores (higher is better), written as float4 where possible.
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const std::int64_t r = row0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + (i - 4));
    if (r >= m) continue;
    const float ra_aux = (metric == kScoreCosine) ? a_aux[r] : 0.0f;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const std::int64_t c = col0 + h * 64 + tx * 4;
      float v[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const std::int64_t cj = c + j;
        float sc = acc[i][h * 4 + j];
        if (cj < n) {
          if (metric == kScoreCosine)
            sc = sc * ra_aux * b_aux[cj];
          else if (metric == kScoreL2 || metric == kScoreSqL2)
            sc = 2.0f * sc - b_aux[cj];
        }
        v[j] = sc;
      }
      float* out = C + r * ldc + c;
      if (c + 3 < n) {  // ldc % 4 == 0 and C is 16-byte aligned (the tile buffer)
        *reinterpret_cast<float4*>(out) = make_float4(v[0], v[1], v[2], v[3]);
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j)
          if (c + j < n) out[j] = v[j];
      }
    }
  }
}

}  // namespace simdex::cuda::detail
