// Exact batched k-NN on a CUDA device.
//
// The search is tiled like the CPU one (simdex/exact_knn.h): for each block of
// queries, the base is streamed in blocks; a tiled FP32 GEMM kernel computes the
// block of inner products and turns them into scores in its epilogue (cosine and
// L2 adjustments fused), and a top-k kernel (one thread block per query, threshold
// filter + bitonic merge in shared memory) merges the block into a running,
// sorted top-k list per query. The top-k of one tile runs on a side stream while
// the GEMM of the next tile runs on the caller's stream. Device memory is O(query_block * base_block +
// nq * k), never O(nq * nb), so tens of millions of base vectors work.
//
// Precision: full FP32 by default (SIMT kernel, no TF32), so distances agree with the
// CPU path to ~1e-6 relative; GpuKnnParams::precision selects a tensor-core TF32
// kernel instead (3xTF32 split for ~FP32 accuracy, or plain TF32). Ties are broken
// by the smaller id, as on the CPU.
//
// Example (all pointers are device pointers; queries and base may be strided):
// @code
//   simdex::cuda::DeviceMatrix q{d_q, nq, d, d}, x{d_x, nb, d, d};
//   simdex::cuda::knn(q, x, 10, simdex::Metric::kCosine, nullptr, nullptr, d_dist, d_ids, stream);
//   cudaStreamSynchronize(stream);
// @endcode
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "simdex/common.h"
#include "simdex/cuda/common.h"

namespace simdex::cuda {

/// Largest k the GPU top-k supports.
inline constexpr std::int64_t kMaxK = 1024;

/// Read-only view of a row-major float32 matrix in device memory.
struct DeviceMatrix {
  const float* data = nullptr;  ///< device pointer to element (0, 0)
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t ld = 0;  ///< elements between the starts of consecutive rows (>= cols)
};

/// Arithmetic of the inner products.
enum class Precision : int {
  kFP32 = 0,    ///< SIMT FP32 FMA (default): matches the CPU to ~1e-6 relative
  kTF32x3 = 1,  ///< tensor cores, 3xTF32 split: about FP32 accuracy (sm_80+)
  kTF32 = 2,    ///< tensor cores, plain TF32: ~1e-3 relative error, fastest (sm_80+)
};

/// Tiling knobs of knn(). Two score tiles of query_block * base_block floats each are
/// allocated (the GEMM of one tile overlaps the top-k of the other).
struct GpuKnnParams {
  std::int64_t query_block = 4096;  ///< queries per tile (rounded up to a multiple of 128)
  std::int64_t base_block = 4096;   ///< base vectors per tile (rounded up to a multiple of 128)
  Precision precision = Precision::kFP32;
};

/// Per-row auxiliary values the metric needs (as compute_row_aux on the CPU):
/// kCosine -> 1/|x| (0 for a zero row); kL2, kSquaredL2 -> |x|^2; kInnerProduct -> 0.
/// @param[in]  x    device matrix
/// @param[out] aux  x.rows floats, device memory owned by the caller
void row_aux(const DeviceMatrix& x, Metric metric, float* aux, cudaStream_t stream);

/// Number of NaN / infinite entries of a device matrix (synchronises `stream`).
std::int64_t count_nonfinite(const DeviceMatrix& x, cudaStream_t stream);

/// Exact k-NN of the rows of q among the rows of x.
///
/// @param[in]  q          nq x d queries (device, finite)
/// @param[in]  x          nb x d base vectors (device, finite), x.cols == q.cols
/// @param[in]  k          1 <= k <= kMaxK; slots beyond nb get id -1 and distance +inf
/// @param[in]  x_aux      nb floats from row_aux (device), or nullptr to compute them here
/// @param[in]  x_ids      nb ids (device) reported for the base rows and used to break
///                        ties, or nullptr for row numbers
/// @param[out] distances  nq * k floats (device, row-major), ascending per query
/// @param[out] ids        nq * k ids (device, row-major)
/// @param[in]  stream     all work is queued on this stream; the call returns after
///                        synchronising it, so errors surface here
/// @throws std::invalid_argument on bad sizes or k; std::runtime_error on CUDA errors.
void knn(const DeviceMatrix& q, const DeviceMatrix& x, std::int64_t k, Metric metric,
         const float* x_aux, const idx_t* x_ids, float* distances, idx_t* ids,
         cudaStream_t stream, const GpuKnnParams& params = GpuKnnParams());

}  // namespace simdex::cuda
