// Exact batched k-NN: tiled GEMM-with-epilogue + block top-k merge, streamed over
// the base so that device memory stays O(query_block * base_block).
#include <algorithm>

#include "detail/gemm_scores.cuh"
#include "detail/launch.cuh"
#include "detail/gemm_tc.cuh"
#include "detail/rows.cuh"
#include "detail/topk.cuh"
#include "simdex/cuda/knn.h"

namespace simdex::cuda {

namespace detail {

/// Grid: one block of kTopkThreads per query row; dynamic shared memory
/// topk_smem_bytes(k). Merges row r of the tile S (ncols scores, row stride ldS;
/// column j is base row col0 + j, whose id is ids[col0 + j] or col0 + j) into the
/// sorted lists best_s / best_i (k per row).
__global__ void __launch_bounds__(kTopkThreads)
    topk_merge_kernel(const float* __restrict__ S, std::int64_t ldS, std::int64_t ncols,
                      std::int64_t col0, const std::int64_t* __restrict__ ids, int k,
                      float* __restrict__ best_s, std::int64_t* __restrict__ best_i) {
  SIMDEX_DYNAMIC_SHARED(unsigned char, smem);
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

}  // namespace detail

namespace {

__global__ void init_best_kernel(std::int64_t n, float* s, std::int64_t* id) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    s[i] = -__int_as_float(0x7f800000);
    id[i] = detail::kEmpty;
  }
}

// Scores -> user distances (the CPU's to_distance), empty slots -> (+inf, -1).
__global__ void finalize_kernel(std::int64_t rows, int k, int metric, const float* __restrict__ q_aux,
                                const float* __restrict__ s, const std::int64_t* __restrict__ id,
                                float* __restrict__ out_d, std::int64_t* __restrict__ out_i) {
  const std::int64_t n = rows * k;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    if (id[i] == detail::kEmpty) {
      out_d[i] = __int_as_float(0x7f800000);
      out_i[i] = -1;
      continue;
    }
    const float v = s[i];
    float dist = -v;
    if (metric == detail::kScoreCosine) {
      dist = fminf(2.0f, fmaxf(0.0f, 1.0f - v));
    } else if (metric == detail::kScoreL2 || metric == detail::kScoreSqL2) {
      dist = fmaxf(0.0f, q_aux[i / k] - v);
      if (metric == detail::kScoreL2) dist = sqrtf(dist);
    }
    out_d[i] = dist;
    out_i[i] = id[i];
  }
}

unsigned elem_grid(std::int64_t n) {
  const std::int64_t b = (n + 255) / 256;
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>(b, 65536)));
}

std::int64_t round_up(std::int64_t v, std::int64_t m) { return (v + m - 1) / m * m; }

// A private non-blocking stream with the events that order it against the caller's.
struct SideStream {
  cudaStream_t stream = nullptr;
  cudaEvent_t gemm_done[2] = {nullptr, nullptr};
  cudaEvent_t topk_done[2] = {nullptr, nullptr};
  cudaEvent_t fence = nullptr;

  explicit SideStream(cudaStream_t main) {
    try {
      SIMDEX_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
      for (cudaEvent_t* e : {&gemm_done[0], &gemm_done[1], &topk_done[0], &topk_done[1], &fence})
        SIMDEX_CUDA_CHECK(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
      SIMDEX_CUDA_CHECK(cudaEventRecord(fence, main));
      SIMDEX_CUDA_CHECK(cudaStreamWaitEvent(stream, fence, 0));
    } catch (...) {
      release();
      throw;
    }
  }
  void join(cudaStream_t main) {
    SIMDEX_CUDA_CHECK(cudaEventRecord(fence, stream));
    SIMDEX_CUDA_CHECK(cudaStreamWaitEvent(main, fence, 0));
  }
  ~SideStream() { release(); }
  SideStream(const SideStream&) = delete;
  SideStream& operator=(const SideStream&) = delete;

 private:
  void release() noexcept {  // destroying with work pending is allowed: freed when it ends
    for (cudaEvent_t e : {gemm_done[0], gemm_done[1], topk_done[0], topk_done[1], fence})
      if (e != nullptr) cudaEventDestroy(e);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

void check_matrix(const DeviceMatrix& m, const char* name) {
  SIMDEX_CHECK_ARG(m.rows >= 0 && m.cols >= 1, name, " must have rows >= 0 and cols >= 1, got ",
                   m.rows, " x ", m.cols);
  SIMDEX_CHECK_ARG(m.ld >= m.cols, name, " row stride ", m.ld, " is smaller than its ", m.cols,
                   " columns; pass a row-major (C-contiguous rows) array");
  SIMDEX_CHECK_ARG(m.rows == 0 || m.data != nullptr, name, " has a null data pointer");
}

}  // namespace

void row_aux(const DeviceMatrix& x, Metric metric, float* aux, cudaStream_t stream) {
  check_matrix(x, "x");
  detail::launch_row_aux(x.data, x.rows, x.cols, x.ld, static_cast<int>(metric), aux, stream);
}

std::int64_t count_nonfinite(const DeviceMatrix& x, cudaStream_t stream) {
  check_matrix(x, "x");
  DeviceBuffer<unsigned long long> count(1);
  SIMDEX_CUDA_CHECK(cudaMemsetAsync(count.data(), 0, count.bytes(), stream));
  detail::launch_count_nonfinite(x.data, x.rows, x.cols, x.ld, count.data(), stream);
  unsigned long long host = 0;
  SIMDEX_CUDA_CHECK(cudaMemcpyAsync(&host, count.data(), sizeof(host), cudaMemcpyDeviceToHost, stream));
  SIMDEX_CUDA_CHECK(cudaStreamSynchronize(stream));
  return static_cast<std::int64_t>(host);
}

void knn(const DeviceMatrix& q, const DeviceMatrix& x, std::int64_t k, Metric metric,
         const float* x_aux, const idx_t* x_ids, float* distances, idx_t* labels,
         cudaStream_t stream, const GpuKnnParams& params) {
  check_matrix(q, "queries");
  check_matrix(x, "base");
  SIMDEX_CHECK_ARG(x.cols == q.cols, "base has dimension ", x.cols, " but queries have ", q.cols);
  SIMDEX_CHECK_ARG(k >= 1 && k <= kMaxK, "k must be in [1, ", kMaxK, "] on the GPU, got ", k,
                   "; use the CPU index (device='cpu') for larger k");
  SIMDEX_CHECK_ARG(params.query_block >= 1 && params.base_block >= 1,
                   "block sizes must be >= 1, got query_block=", params.query_block,
                   " base_block=", params.base_block);
  const std::int64_t nq = q.rows, nb = x.rows, d = q.cols;
  if (nq == 0) return;
  const int metric_code = static_cast<int>(metric);
  if (params.precision != Precision::kFP32) {
    int dev = 0, major = 0;
    SIMDEX_CUDA_CHECK(cudaGetDevice(&dev));
    SIMDEX_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    SIMDEX_CHECK_ARG(major >= 8, "precision tf32 / tf32x3 needs tensor cores with TF32 (compute capability "
                                 ">= 8.0); this device has ", major, ".x: use precision='fp32'");
  }

  const std::int64_t qb = std::min(round_up(params.query_block, detail::kGemmBM), round_up(nq, detail::kGemmBM));
  const std::int64_t bb =
      std::min(round_up(params.base_block, detail::kGemmBN), round_up(std::max<std::int64_t>(nb, 1), detail::kGemmBN));
  const std::int64_t ldc = bb;  // a multiple of 128: float4 stores stay aligned

  // Two tile buffers and a side stream: the GEMM of tile t+1 (on `stream`) overlaps
  // the top-k merge of tile t (on `side`); events hand each buffer back and forth.
  DeviceBuffer<float> tiles[2] = {DeviceBuffer<float>(static_cast<std::size_t>(qb * ldc)),
                                  DeviceBuffer<float>(static_cast<std::size_t>(qb * ldc))};
  DeviceBuffer<float> q_aux(static_cast<std::size_t>(nq));
  DeviceBuffer<float> best_s(static_cast<std::size_t>(qb * k));
  DeviceBuffer<idx_t> best_i(static_cast<std::size_t>(qb * k));
  DeviceBuffer<float> own_x_aux;
  if (metric != Metric::kInnerProduct) {
    detail::launch_row_aux(q.data, nq, d, q.ld, metric_code, q_aux.data(), stream);
    if (x_aux == nullptr && nb > 0) {
      own_x_aux.resize_discard(static_cast<std::size_t>(nb));
      detail::launch_row_aux(x.data, nb, d, x.ld, metric_code, own_x_aux.data(), stream);
      x_aux = own_x_aux.data();
    }
  }
  const bool vec = d % 4 == 0 && q.ld % 4 == 0 && x.ld % 4 == 0 && aligned16(q.data) && aligned16(x.data);
  const std::size_t smem = detail::topk_smem_bytes(static_cast<int>(k));

  SideStream side(stream);  // waits for everything queued on `stream` so far
  std::int64_t t = 0;
  for (std::int64_t q0 = 0; q0 < nq; q0 += qb) {
    const std::int64_t rows = std::min(qb, nq - q0);
    SIMDEX_LAUNCH(elem_grid(rows * k), 256, 0, side.stream, init_best_kernel)(rows * k, best_s.data(), best_i.data());
    SIMDEX_CUDA_CHECK_LAUNCH();
    for (std::int64_t b0 = 0; b0 < nb; b0 += bb, ++t) {
      const int buf = static_cast<int>(t & 1);
      const std::int64_t cols = std::min(bb, nb - b0);
      const dim3 grid(static_cast<unsigned>((cols + detail::kGemmBN - 1) / detail::kGemmBN),
                      static_cast<unsigned>((rows + detail::kGemmBM - 1) / detail::kGemmBM));
      SIMDEX_CUDA_CHECK(cudaStreamWaitEvent(stream, side.topk_done[buf], 0));  // buffer free again
      if (params.precision == Precision::kFP32) {
        SIMDEX_LAUNCH(grid, detail::kGemmThreads, 0, stream, detail::gemm_scores_kernel)(
            q.data + q0 * q.ld, rows, q.ld, x.data + b0 * x.ld, cols, x.ld, d, tiles[buf].data(), ldc,
            metric_code, q_aux.data() + q0, x_aux != nullptr ? x_aux + b0 : nullptr, vec);
      } else {
        SIMDEX_LAUNCH(grid, detail::kTcThreads, 0, stream, detail::gemm_scores_tc_kernel)(
            q.data + q0 * q.ld, rows, q.ld, x.data + b0 * x.ld, cols, x.ld, d, tiles[buf].data(), ldc,
            metric_code, q_aux.data() + q0, x_aux != nullptr ? x_aux + b0 : nullptr, vec,
            params.precision == Precision::kTF32x3);
      }
      SIMDEX_CUDA_CHECK_LAUNCH();
      SIMDEX_CUDA_CHECK(cudaEventRecord(side.gemm_done[buf], stream));
      SIMDEX_CUDA_CHECK(cudaStreamWaitEvent(side.stream, side.gemm_done[buf], 0));
      SIMDEX_LAUNCH(static_cast<unsigned>(rows), detail::kTopkThreads, smem, side.stream, detail::topk_merge_kernel)(
          tiles[buf].data(), ldc, cols, b0, x_ids, static_cast<int>(k), best_s.data(), best_i.data());
      SIMDEX_CUDA_CHECK_LAUNCH();
      SIMDEX_CUDA_CHECK(cudaEventRecord(side.topk_done[buf], side.stream));
    }
    SIMDEX_LAUNCH(elem_grid(rows * k), 256, 0, side.stream, finalize_kernel)(rows, static_cast<int>(k), metric_code,
                                                                 q_aux.data() + q0, best_s.data(),
                                                                 best_i.data(), distances + q0 * k,
                                                                 labels + q0 * k);
    SIMDEX_CUDA_CHECK_LAUNCH();
  }
  side.join(stream);  // `stream` now waits for the side stream's work
  SIMDEX_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace simdex::cuda
