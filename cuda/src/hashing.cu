// Sign-random-projection hashing with float64 in-order accumulation (the rule in
// simdex/cuda/hashing.h), so codes are reproducible bit for bit off the GPU.
#include <algorithm>

#include "detail/hash.cuh"
#include "detail/launch.cuh"
#include "simdex/cuda/hashing.h"

namespace simdex::cuda {

namespace {

constexpr int kHashTV = 64;       // vectors per block
constexpr int kHashTP = 64;       // plane slots per block (whole tables only)
constexpr int kHashDK = 32;       // dimensions per shared-memory step
constexpr int kHashThreads = 256;

// Block (bx, by): vectors [bx*64, +64) x tables [by*tpb, +tpb), tpb = tables per
// block. Thread t computes planes {t%32, t%32+32} for vectors (t/32)*8 .. +8.
__global__ void __launch_bounds__(kHashThreads)
    hash_kernel(const float* __restrict__ X, std::int64_t n, std::int64_t ldx,
                const float* __restrict__ P, std::int64_t ldp, std::int64_t d, int L, int K,
                int tables_per_block, std::uint64_t* __restrict__ codes, float* __restrict__ proj) {
  __shared__ float Xs[kHashTV][kHashDK + 1];
  __shared__ float Ps[kHashTP][kHashDK + 1];
  __shared__ unsigned char bits[kHashTV][kHashTP];

  const int tid = static_cast<int>(threadIdx.x);
  const std::int64_t v0 = static_cast<std::int64_t>(blockIdx.x) * kHashTV;
  const int t0 = static_cast<int>(blockIdx.y) * tables_per_block;
  const int ntab = min(tables_per_block, L - t0);
  const int nplanes = ntab * K;  // <= 64
  const std::int64_t p0 = static_cast<std::int64_t>(t0) * K;
  const int pl = tid & 31, vg = tid >> 5;

  double acc[8][2];
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i][0] = acc[i][1] = 0.0;

  for (std::int64_t c0 = 0; c0 < d; c0 += kHashDK) {
    for (int e = tid; e < kHashTV * kHashDK; e += kHashThreads) {
      const int v = e / kHashDK, c = e % kHashDK;
      Xs[v][c] = (v0 + v < n && c0 + c < d) ? X[(v0 + v) * ldx + c0 + c] : 0.0f;
    }
    for (int e = tid; e < kHashTP * kHashDK; e += kHashThreads) {
      const int p = e / kHashDK, c = e % kHashDK;
      Ps[p][c] = (p < nplanes && c0 + c < d) ? P[(p0 + p) * ldp + c0 + c] : 0.0f;
    }
    __syncthreads();
    const int cmax = static_cast<int>(min(static_cast<std::int64_t>(kHashDK), d - c0));
    for (int c = 0; c < cmax; ++c) {  // strictly increasing c: the accumulation order of the rule
      const double pa = Ps[pl][c], pb = Ps[pl + 32][c];
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const double xv = Xs[vg * 8 + i][c];
        acc[i][0] = fma(xv, pa, acc[i][0]);  // exact product, so fma == multiply-then-add
        acc[i][1] = fma(xv, pb, acc[i][1]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    bits[vg * 8 + i][pl] = acc[i][0] > 0.0 ? 1 : 0;
    bits[vg * 8 + i][pl + 32] = acc[i][1] > 0.0 ? 1 : 0;
  }
  if (proj != nullptr) {
    const std::int64_t LK = static_cast<std::int64_t>(L) * K;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const std::int64_t v = v0 + vg * 8 + i;
      if (v >= n) continue;
      if (pl < nplanes) proj[v * LK + p0 + pl] = static_cast<float>(fabs(acc[i][0]));
      if (pl + 32 < nplanes) proj[v * LK + p0 + pl + 32] = static_cast<float>(fabs(acc[i][1]));
    }
  }
  __syncthreads();
  for (int e = tid; e < kHashTV * ntab; e += kHashThreads) {
    const int v = e / ntab, t = e % ntab;
    if (v0 + v >= n) continue;
    std::uint64_t code = 0;
    for (int j = 0; j < K; ++j) code |= static_cast<std::uint64_t>(bits[v][t * K + j]) << j;
    codes[(v0 + v) * L + t0 + t] = code;
  }
}

}  // namespace

namespace detail {

void launch_hash(const float* x, std::int64_t n, std::int64_t ldx, const float* planes, std::int64_t ldp,
                 std::int64_t d, int L, int K, std::uint64_t* codes, float* proj, cudaStream_t stream) {
  if (n == 0) return;
  const int tpb = std::max(1, kHashTP / K);
  const dim3 grid(static_cast<unsigned>((n + kHashTV - 1) / kHashTV), static_cast<unsigned>((L + tpb - 1) / tpb));
  SIMDEX_CHECK_ARG(grid.y <= 65535u, "too many tables for one launch: ", L);
  SIMDEX_LAUNCH(grid, kHashThreads, 0, stream, hash_kernel)(x, n, ldx, planes, ldp, d, L, K, tpb, codes, proj);
  SIMDEX_CUDA_CHECK_LAUNCH();
}

}  // namespace detail

void hash_vectors(const DeviceMatrix& x, const DeviceMatrix& planes, std::int64_t num_tables,
                  std::int64_t bits, std::uint64_t* codes, cudaStream_t stream) {
  SIMDEX_CHECK_ARG(num_tables >= 1 && num_tables <= (1 << 20), "num_tables must be in [1, 2^20], got ",
                   num_tables);
  SIMDEX_CHECK_ARG(bits >= 1 && bits <= 64, "bits per table must be in [1, 64], got ", bits);
  SIMDEX_CHECK_ARG(planes.rows == num_tables * bits, "planes must have num_tables * bits = ",
                   num_tables * bits, " rows, got ", planes.rows);
  SIMDEX_CHECK_ARG(planes.cols == x.cols, "planes have dimension ", planes.cols, " but vectors have ",
                   x.cols);
  SIMDEX_CHECK_ARG(x.ld >= x.cols && planes.ld >= planes.cols, "row strides must be >= the columns");
  detail::launch_hash(x.data, x.rows, x.ld, planes.data, planes.ld, x.cols, static_cast<int>(num_tables),
                      static_cast<int>(bits), codes, nullptr, stream);
  SIMDEX_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace simdex::cuda
