// Tensor-core (TF32 WMMA) variant of gemm_scores_kernel, same contract and epilogue.
//
// Block tile 128 x 128, K in steps of 32 through shared memory; 8 warps as 2 x 4, each
// owning a 64 x 32 sub-tile (4 x 2 accumulator fragments of 16 x 16, FP32 accumulate).
// Precision:
//   split = false: plain TF32 inputs (10-bit mantissa): inner products carry ~1e-3
//                  relative error; fastest.
//   split = true:  "3xTF32": each input x = hi + lo with hi = tf32(x), lo = tf32(x - hi),
//                  and a*b ~ hi_a*hi_b + hi_a*lo_b + lo_a*hi_b, which recovers about FP32
//                  accuracy at three tensor-core products per step.
#pragma once

#include <mma.h>

#include <cstdint>

#include "metric.cuh"

namespace simdex::cuda::detail {

inline constexpr int kTcBM = 128;
inline constexpr int kTcBN = 128;
inline constexpr int kTcBK = 32;
inline constexpr int kTcLd = kTcBK + 4;  // floats per shared row: a multiple of 4 as WMMA needs
inline constexpr int kTcThreads = 256;

// Load rows [row0, row0+128) x k [k0, k0+32) of a K-contiguous matrix into S (row-major,
// ld kTcLd), zero outside the matrix. 4096 floats: 16 per thread as 4 groups of 4.
__device__ __forceinline__ void tc_load_tile(const float* __restrict__ M, std::int64_t rows, std::int64_t ld,
                                             std::int64_t K, std::int64_t row0, std::int64_t k0, bool vec,
                                             float* S) {
#pragma unroll
  for (int g = 0; g < 4; ++g) {
    const int e = (g * kTcThreads + static_cast<int>(threadIdx.x)) * 4;  // element index in the 128 x 32 tile
    const int r = e / kTcBK, c = e % kTcBK;
    const std::int64_t gr = row0 + r, gc = k0 + c;
    float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (gr < rows) {
      const float* p = M + gr * ld + gc;
      if (vec && gc + 3 < K) {
        const float4 f = *reinterpret_cast<const float4*>(p);
        v[0] = f.x;
        v[1] = f.y;
        v[2] = f.z;
        v[3] = f.w;
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) v[i] = gc + i < K ? p[i] : 0.0f;
      }
    }
    *reinterpret_cast<float4*>(S + r * kTcLd + c) = make_float4(v[0], v[1], v[2], v[3]);
  }
}

template <typename Frag>
__device__ __forceinline__ void tc_split(const Frag& x, Frag& hi, Frag& lo) {
#pragma unroll
  for (int i = 0; i < x.num_elements; ++i) {
    const float v = x.x[i];  // read first: hi may alias x
    const float h = nvcuda::wmma::__float_to_tf32(v);
    lo.x[i] = nvcuda::wmma::__float_to_tf32(v - h);
    hi.x[i] = h;
  }
}

/// Grid: (ceil(n / 128), ceil(m / 128)); block: 256 threads. Arguments as gemm_scores_kernel.
__global__ void __launch_bounds__(kTcThreads)
    gemm_scores_tc_kernel(const float* __restrict__ A, std::int64_t m, std::int64_t lda, const float* __restrict__ B,
                          std::int64_t n, std::int64_t ldb, std::int64_t K, float* __restrict__ C, std::int64_t ldc,
                          int metric, const float* __restrict__ a_aux, const float* __restrict__ b_aux, bool vec,
                          bool split) {
  // TF32 WMMA needs sm_80+; the build targets sm_80 and sm_90 only.
  namespace wmma = nvcuda::wmma;
  __shared__ __align__(32) float As[kTcBM * kTcLd];
  __shared__ __align__(32) float Bs[kTcBN * kTcLd];
  __shared__ __align__(32) float scratch[8][16 * 16];

  const std::int64_t row0 = static_cast<std::int64_t>(blockIdx.y) * kTcBM;
  const std::int64_t col0 = static_cast<std::int64_t>(blockIdx.x) * kTcBN;
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  const int wm = warp >> 2, wn = warp & 3;  // warp tile: rows wm*64 .. +64, cols wn*32 .. +32

  using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
  using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major>;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[4][2];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  for (std::int64_t k0 = 0; k0 < K; k0 += kTcBK) {
    tc_load_tile(A, m, lda, K, row0, k0, vec, As);
    tc_load_tile(B, n, ldb, K, col0, k0, vec, Bs);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTcBK; kk += 8) {
      FragA a[4], a_lo[4];
      FragB b[2], b_lo[2];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        wmma::load_matrix_sync(a[i], As + (wm * 64 + i * 16) * kTcLd + kk, kTcLd);
        if (split) {
          tc_split(a[i], a[i], a_lo[i]);
        } else {
#pragma unroll
          for (int e = 0; e < a[i].num_elements; ++e) a[i].x[e] = wmma::__float_to_tf32(a[i].x[e]);
        }
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        // B is stored n-major (row n holds its k values): that is a K x N column-major matrix.
        wmma::load_matrix_sync(b[j], Bs + (wn * 32 + j * 16) * kTcLd + kk, kTcLd);
        if (split) {
          tc_split(b[j], b[j], b_lo[j]);
        } else {
#pragma unroll
          for (int e = 0; e < b[j].num_elements; ++e) b[j].x[e] = wmma::__float_to_tf32(b[j].x[e]);
        }
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          if (split) {
            wmma::mma_sync(acc[i][j], a_lo[i], b[j], acc[i][j]);
            wmma::mma_sync(acc[i][j], a[i], b_lo[j], acc[i][j]);
          }
          wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
        }
    }
    __syncthreads();
  }

  // Epilogue through a per-warp 16 x 16 scratch: scores as in gemm_scores_kernel.
  float* sc = scratch[warp];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(sc, acc[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      const std::int64_t r0 = row0 + wm * 64 + i * 16, c0 = col0 + wn * 32 + j * 16;
      for (int e = lane; e < 256; e += 32) {
        const std::int64_t r = r0 + e / 16, c = c0 + e % 16;
        if (r < m && c < n) {
          float v = sc[e];
          if (metric == kScoreCosine)
            v = v * a_aux[r] * b_aux[c];
          else if (metric == kScoreL2 || metric == kScoreSqL2)
            v = 2.0f * v - b_aux[c];
          C[r * ldc + c] = v;
        }
      }
      __syncwarp();
    }
}

}  // namespace simdex::cuda::detail
