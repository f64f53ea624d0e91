// Multi-table LSH buckets on a CUDA device: build by radix sort, query by
// multi-probe lookup and exact re-ranking, for large query batches.
//
// Build: the base is hashed with hash_vectors() (the float64 rule of hashing.h);
// for each table the (code, row) pairs are sorted by code with CUB's radix sort, so
// a bucket is a contiguous range of the sorted codes.
// Query: each query is hashed the same way, keeping the projections; probe p of a
// table is the query's code with its p least confident bits (smallest |projection|)
// flipped one at a time (probe 0 = the code itself). A binary search per (query,
// table, probe) finds the bucket; one thread block per query then scores every
// candidate exactly (one warp per candidate), removes duplicates across tables and
// keeps the k best with the block top-k of the exact search (ties by smaller id).
//
// Example:
// @code
//   simdex::cuda::GpuLSH lsh(x, planes, /*num_tables=*/16, /*bits=*/16, Metric::kCosine, stream);
//   lsh.search(q, /*k=*/10, /*num_probes=*/4, nullptr, d_dist, d_ids, stream);
// @endcode
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "simdex/common.h"
#include "simdex/cuda/common.h"
#include "simdex/cuda/knn.h"

namespace simdex::cuda {

/// Most probes per table (probe 0 plus up to 16 single-bit flips).
inline constexpr int kMaxProbes = 17;

class GpuLSH {
 public:
  /// Copy the base and planes to owned device memory, hash the base and build the tables.
  /// @param[in] x        n x d base vectors (device), n < 2^31
  /// @param[in] planes   (num_tables * bits) x d hyperplanes (device)
  /// @param[in] bits     K in [1, 64]
  GpuLSH(const DeviceMatrix& x, const DeviceMatrix& planes, std::int64_t num_tables, std::int64_t bits,
         Metric metric, cudaStream_t stream);

  /// k best candidates of each query found in its probed buckets (distances as knn()).
  /// @param[in]  q           nq x d queries (device)
  /// @param[in]  k           1 <= k <= kMaxK
  /// @param[in]  num_probes  buckets probed per table, 1 <= num_probes <= min(kMaxProbes, bits + 1)
  /// @param[in]  x_ids       n ids (device) reported instead of row numbers, or nullptr
  /// @param[out] distances, ids  nq * k each (device); missing slots: +inf / -1
  void search(const DeviceMatrix& q, std::int64_t k, int num_probes, const idx_t* x_ids, float* distances,
              idx_t* ids, cudaStream_t stream) const;

  std::int64_t size() const { return n_; }
  std::int64_t dim() const { return d_; }
  std::int64_t num_tables() const { return L_; }
  std::int64_t bits() const { return K_; }

  /// Sorted codes of table t (n uint64, device) and the base row of each (n int32).
  const std::uint64_t* sorted_codes(std::int64_t t) const { return codes_.data() + t * n_; }
  const std::int32_t* sorted_rows(std::int64_t t) const { return rows_.data() + t * n_; }

 private:
  std::int64_t n_, d_, L_, K_;
  Metric metric_;
  DeviceBuffer<float> x_;        // n x d
  DeviceBuffer<float> x_aux_;    // n (row_aux)
  DeviceBuffer<float> planes_;   // L*K x d
  DeviceBuffer<std::uint64_t> codes_;  // L x n, sorted per table
  DeviceBuffer<std::int32_t> rows_;    // L x n
};

}  // namespace simdex::cuda
