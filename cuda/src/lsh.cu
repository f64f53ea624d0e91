// GPU LSH tables: CUB radix sort per table; multi-probe lookup; exact re-ranking.
#include <algorithm>
#include <cub/device/device_radix_sort.cuh>

#include "detail/hash.cuh"
#include "detail/launch.cuh"
#include "detail/metric.cuh"
#include "detail/rows.cuh"
#include "detail/topk.cuh"
#include "simdex/cuda/lsh.h"

namespace simdex::cuda {

namespace {

constexpr int kRerankThreads = 128;
constexpr int kRerankWarps = kRerankThreads / 32;
constexpr int kPerWarpRound = 8;  // candidates a warp scores between two block barriers

unsigned grid_for(std::int64_t n) {
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>((n + 255) / 256, 65536)));
}

__global__ void column_keys_kernel(const std::uint64_t* __restrict__ codes, std::int64_t n, int L, int t,
                                   std::uint64_t* __restrict__ keys, std::int32_t* __restrict__ rows) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    keys[i] = codes[i * L + t];
    rows[i] = static_cast<std::int32_t>(i);
  }
}

// One thread per (query, table): probe 0 is the code, probe p flips the p-th least
// confident bit (smallest |projection|; ties by lower bit).
__global__ void probes_kernel(const std::uint64_t* __restrict__ qcodes, const float* __restrict__ proj,
                              std::int64_t nq, int L, int K, int P, std::uint64_t* __restrict__ probes) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < nq * L;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t q = i / L;
    const int t = static_cast<int>(i % L);
    const std::uint64_t code = qcodes[i];
    const float* m = proj + q * L * K + static_cast<std::int64_t>(t) * K;
    probes[i * P] = code;
    std::uint64_t used = 0;
    for (int p = 1; p < P; ++p) {
      int best = -1;
      for (int j = 0; j < K; ++j)
        if (!((used >> j) & 1u) && (best < 0 || m[j] < m[best])) best = j;
      used |= 1ull << best;
      probes[i * P + p] = code ^ (1ull << best);
    }
  }
}

// One thread per (query, table, probe): [lo, hi) of the probe's bucket in the table.
__global__ void ranges_kernel(const std::uint64_t* __restrict__ probes, std::int64_t total, int L, int P,
                              const std::uint64_t* __restrict__ sorted, std::int64_t n,
                              std::int64_t* __restrict__ lo_out, std::int64_t* __restrict__ hi_out) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int t = static_cast<int>((i / P) % L);
    const std::uint64_t key = probes[i];
    const std::uint64_t* s = sorted + static_cast<std::int64_t>(t) * n;
    std::int64_t a = 0, b = n;
    while (a < b) {  // lower bound
      const std::int64_t mid = (a + b) / 2;
      if (s[mid] < key) a = mid + 1; else b = mid;
    }
    std::int64_t c = a, e = n;
    while (c < e) {  // upper bound
      const std::int64_t mid = (c + e) / 2;
      if (s[mid] <= key) c = mid + 1; else e = mid;
    }
    lo_out[i] = a;
    hi_out[i] = c;
  }
}

// Sort the first n entries, then drop duplicates (a row found in several tables has
// the bitwise-same score) and pad the first k slots with empties.
__device__ void merge_dedup(float* s, std::int64_t* id, int n, int k) {
  detail::block_bitonic_sort(s, id, n);
  if (threadIdx.x == 0) {
    int w = 0;
    for (int i = 0; i < n && w < k; ++i) {
      if (id[i] == detail::kEmpty) break;
      if (w > 0 && id[i] == id[w - 1] && s[i] == s[w - 1]) continue;
      s[w] = s[i];
      id[w] = id[i];
      ++w;
    }
    for (; w < k; ++w) {
      s[w] = -__int_as_float(0x7f800000);
      id[w] = detail::kEmpty;
    }
  }
  __syncthreads();
}

// One block per query: each warp walks the ranges r = warp, warp + 4, ... and scores
// one candidate at a time (lanes split the dimensions); lane 0 offers it to the
// shared-memory top-k. Block barriers every kPerWarpRound candidates per warp.
__global__ void __launch_bounds__(kRerankThreads)
    rerank_kernel(const float* __restrict__ q, std::int64_t ldq, std::int64_t d, const float* __restrict__ q_aux,
                  const float* __restrict__ x, const float* __restrict__ x_aux,
                  const std::int32_t* __restrict__ sorted_rows, std::int64_t n, const std::int64_t* __restrict__ lo,
                  const std::int64_t* __restrict__ hi, int LP, int P, const std::int64_t* __restrict__ x_ids, int k,
                  int metric, float* __restrict__ out_d, std::int64_t* __restrict__ out_i) {
  SIMDEX_DYNAMIC_SHARED(unsigned char, smem);
  const int P2 = detail::pow2_ceil(k + detail::kTopkCap);
  std::int64_t* sh_i = reinterpret_cast<std::int64_t*>(smem);
  float* sh_s = reinterpret_cast<float*>(smem + static_cast<std::size_t>(P2) * sizeof(std::int64_t));
  __shared__ int count;

  const std::int64_t qi = blockIdx.x;
  const float* qv = q + qi * ldq;
  const int tid = static_cast<int>(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const float qa = metric == detail::kScoreIP ? 0.0f : q_aux[qi];
  for (int i = tid; i < k; i += blockDim.x) {
    sh_s[i] = -__int_as_float(0x7f800000);
    sh_i[i] = detail::kEmpty;
  }
  if (tid == 0) count = 0;
  __syncthreads();
  float thr_s = -__int_as_float(0x7f800000);
  std::int64_t thr_i = detail::kEmpty;

  const std::int64_t* qlo = lo + qi * LP;
  const std::int64_t* qhi = hi + qi * LP;
  int r = warp;
  std::int64_t off = r < LP ? qlo[r] : 0, end = r < LP ? qhi[r] : 0;
  for (;;) {
    for (int c = 0; c < kPerWarpRound; ++c) {
      while (r < LP && off >= end) {  // warp-uniform: r, off, end are the same in every lane
        r += kRerankWarps;
        if (r < LP) {
          off = qlo[r];
          end = qhi[r];
        }
      }
      if (r >= LP) break;
      const std::int64_t row = sorted_rows[static_cast<std::int64_t>(r / P) * n + off];
      ++off;
      const float* xr = x + row * d;
      float dot = 0.0f;
      for (std::int64_t j = lane; j < d; j += 32) dot = fmaf(qv[j], xr[j], dot);
      for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
      float sc = dot;
      if (metric == detail::kScoreCosine)
        sc = dot * qa * x_aux[row];
      else if (metric == detail::kScoreL2 || metric == detail::kScoreSqL2)
        sc = 2.0f * dot - x_aux[row];
      if (lane == 0) {
        const std::int64_t id = x_ids != nullptr ? x_ids[row] : row;
        if (detail::better(sc, id, thr_s, thr_i)) {
          const int pos = atomicAdd(&count, 1);
          sh_s[k + pos] = sc;
          sh_i[k + pos] = id;
        }
      }
    }
    const int more = __syncthreads_or(r < LP);
    const int c = count;
    __syncthreads();
    if (c > detail::kTopkCap - kRerankThreads / 32 * kPerWarpRound) {
      merge_dedup(sh_s, sh_i, k + c, k);
      if (tid == 0) count = 0;
      __syncthreads();
      thr_s = sh_s[k - 1];
      thr_i = sh_i[k - 1];
    }
    if (!more) break;
  }
  const int c = count;
  if (c > 0) merge_dedup(sh_s, sh_i, k + c, k);
  for (int i = tid; i < k; i += blockDim.x) {
    const std::int64_t o = qi * k + i;
    if (sh_i[i] == detail::kEmpty) {
      out_d[o] = __int_as_float(0x7f800000);
      out_i[o] = -1;
      continue;
    }
    const float v = sh_s[i];
    float dist = -v;
    if (metric == detail::kScoreCosine) {
      dist = fminf(2.0f, fmaxf(0.0f, 1.0f - v));
    } else if (metric == detail::kScoreL2 || metric == detail::kScoreSqL2) {
      dist = fmaxf(0.0f, qa - v);
      if (metric == detail::kScoreL2) dist = sqrtf(dist);
    }
    out_d[o] = dist;
    out_i[o] = sh_i[i];
  }
}

}  // namespace

GpuLSH::GpuLSH(const DeviceMatrix& x, const DeviceMatrix& planes, std::int64_t num_tables, std::int64_t bits,
               Metric metric, cudaStream_t stream)
    : n_(x.rows), d_(x.cols), L_(num_tables), K_(bits), metric_(metric) {
  SIMDEX_CHECK_ARG(x.rows >= 0 && x.rows < (std::int64_t{1} << 31), "the GPU LSH holds fewer than 2^31 vectors, got ",
                   x.rows);
  SIMDEX_CHECK_ARG(x.cols >= 1 && x.ld >= x.cols, "bad base shape ", x.rows, " x ", x.cols, " (row stride ", x.ld, ")");
  SIMDEX_CHECK_ARG(num_tables >= 1 && num_tables <= 65535, "num_tables must be in [1, 65535], got ", num_tables);
  SIMDEX_CHECK_ARG(bits >= 1 && bits <= 64, "bits per table must be in [1, 64], got ", bits);
  SIMDEX_CHECK_ARG(planes.rows == num_tables * bits && planes.cols == x.cols && planes.ld >= planes.cols,
                   "planes must be (num_tables * bits) x d = ", num_tables * bits, " x ", x.cols, ", got ",
                   planes.rows, " x ", planes.cols);
  const std::int64_t n = n_, d = d_, LK = L_ * K_;
  x_.resize_discard(static_cast<std::size_t>(std::max<std::int64_t>(n * d, 1)));
  planes_.resize_discard(static_cast<std::size_t>(LK * d));
  x_aux_.resize_discard(static_cast<std::size_t>(std::max<std::int64_t>(n, 1)));
  codes_.resize_discard(static_cast<std::size_t>(std::max<std::int64_t>(L_ * n, 1)));
  rows_.resize_discard(static_cast<std::size_t>(std::max<std::int64_t>(L_ * n, 1)));
  if (n > 0)
    SIMDEX_CUDA_CHECK(cudaMemcpy2DAsync(x_.data(), d * sizeof(float), x.data, x.ld * sizeof(float), d * sizeof(float),
                                        n, cudaMemcpyDeviceToDevice, stream));
  SIMDEX_CUDA_CHECK(cudaMemcpy2DAsync(planes_.data(), d * sizeof(float), planes.data, planes.ld * sizeof(float),
                                      d * sizeof(float), LK, cudaMemcpyDeviceToDevice, stream));
  if (n == 0) {
    SIMDEX_CUDA_CHECK(cudaStreamSynchronize(stream));
    return;
  }
  detail::launch_row_aux(x_.data(), n, d, d, static_cast<int>(metric_), x_aux_.data(), stream);
  DeviceBuffer<std::uint64_t> all_codes(static_cast<std::size_t>(n * L_));
  detail::launch_hash(x_.data(), n, d, planes_.data(), d, d, static_cast<int>(L_), static_cast<int>(K_),
                      all_codes.data(), nullptr, stream);
  DeviceBuffer<std::uint64_t> keys(static_cast<std::size_t>(n));
  DeviceBuffer<std::int32_t> iota(static_cast<std::size_t>(n));
  std::size_t temp_bytes = 0;
  SIMDEX_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys.data(), codes_.data(), iota.data(),
                                                    rows_.data(), static_cast<int>(n), 0, static_cast<int>(K_),
                                                    stream));
  DeviceBuffer<unsigned char> temp(std::max<std::size_t>(temp_bytes, 1));
  for (std::int64_t t = 0; t < L_; ++t) {
    SIMDEX_LAUNCH(grid_for(n), 256, 0, stream, column_keys_kernel)(all_codes.data(), n, static_cast<int>(L_),
                                                        static_cast<int>(t), keys.data(), iota.data());
    SIMDEX_CUDA_CHECK_LAUNCH();
    SIMDEX_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data(), temp_bytes, keys.data(), codes_.data() + t * n,
                                                      iota.data(), rows_.data() + t * n, static_cast<int>(n), 0,
                                                      static_cast<int>(K_), stream));
  }
  SIMDEX_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void GpuLSH::search(const DeviceMatrix& q, std::int64_t k, int num_probes, const idx_t* x_ids, float* distances,
                    idx_t* labels, cudaStream_t stream) const {
  SIMDEX_CHECK_ARG(q.cols == d_ && q.ld >= q.cols && q.rows >= 0, "queries must be nq x ", d_, ", got ", q.rows,
                   " x ", q.cols);
  SIMDEX_CHECK_ARG(k >= 1 && k <= kMaxK, "k must be in [1, ", kMaxK, "] on the GPU, got ", k);
  const int max_probes = static_cast<int>(std::min<std::int64_t>(kMaxProbes, K_ + 1));
  SIMDEX_CHECK_ARG(num_probes >= 1 && num_probes <= max_probes, "num_probes must be in [1, ", max_probes,
                   "] (probe 0 plus single-bit flips of ", K_, " bits), got ", num_probes);
  const std::int64_t nq = q.rows;
  if (nq == 0) return;
  const int L = static_cast<int>(L_), K = static_cast<int>(K_), P = num_probes;
  const int metric_code = static_cast<int>(metric_);
  DeviceBuffer<float> q_aux(static_cast<std::size_t>(nq));
  detail::launch_row_aux(q.data, nq, d_, q.ld, metric_code, q_aux.data(), stream);
  DeviceBuffer<std::uint64_t> qcodes(static_cast<std::size_t>(nq * L));
  DeviceBuffer<float> proj(static_cast<std::size_t>(nq * L * K));
  detail::launch_hash(q.data, nq, q.ld, planes_.data(), d_, d_, L, K, qcodes.data(), proj.data(), stream);
  const std::int64_t total = nq * L * P;
  DeviceBuffer<std::uint64_t> probes(static_cast<std::size_t>(total));
  SIMDEX_LAUNCH(grid_for(nq * L), 256, 0, stream, probes_kernel)(qcodes.data(), proj.data(), nq, L, K, P, probes.data());
  SIMDEX_CUDA_CHECK_LAUNCH();
  DeviceBuffer<std::int64_t> lo(static_cast<std::size_t>(total)), hi(static_cast<std::size_t>(total));
  SIMDEX_LAUNCH(grid_for(total), 256, 0, stream, ranges_kernel)(probes.data(), total, L, P, codes_.data(), n_, lo.data(),
                                                     hi.data());
  SIMDEX_CUDA_CHECK_LAUNCH();
  const std::size_t smem = detail::topk_smem_bytes(static_cast<int>(k));
  SIMDEX_LAUNCH(static_cast<unsigned>(nq), kRerankThreads, smem, stream, rerank_kernel)(
      q.data, q.ld, d_, q_aux.data(), x_.data(), x_aux_.data(), rows_.data(), n_, lo.data(), hi.data(), L * P, P,
      x_ids, static_cast<int>(k), metric_code, distances, labels);
  SIMDEX_CUDA_CHECK_LAUNCH();
  SIMDEX_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace simdex::cuda
