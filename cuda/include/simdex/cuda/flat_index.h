// GpuFlatIndex: an id-addressed store of vectors in device memory with exact k-NN.
//
// The GPU twin of simdex::FlatIndex (same methods, same semantics, same errors):
// vectors live in one growable device buffer with their per-row aux value and id;
// the id -> row map lives on the host. Removal swaps the last row into the hole.
// Calls are serialised by a mutex (the device work of one call is not split).
//
// Example:
// @code
//   simdex::cuda::GpuFlatIndex index(128, simdex::Metric::kCosine);
//   index.add(x, n, ids, /*replace=*/false, /*x_on_device=*/false);
//   index.search(q, nq, 10, D, I, /*on_device=*/false);
// @endcode
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "simdex/common.h"
#include "simdex/cuda/common.h"
#include "simdex/cuda/knn.h"

namespace simdex::cuda {

class GpuFlatIndex {
 public:
  /// @param d       dimension, >= 1
  /// @param metric  distance used by search()
  /// @param device   CUDA device ordinal; all memory and work stays on it
  GpuFlatIndex(std::int64_t d, Metric metric, int device = 0);
  ~GpuFlatIndex();
  GpuFlatIndex(const GpuFlatIndex&) = delete;
  GpuFlatIndex& operator=(const GpuFlatIndex&) = delete;

  /// Add n vectors (all-or-nothing; see simdex::FlatIndex::add).
  /// @param[in] x           n * d floats, row-major; host memory, or device memory when
  ///                        x_on_device (then row stride ld floats)
  /// @param[in] ids         n ids (host), each >= 0 and distinct
  /// @param[in] replace     overwrite ids already present instead of failing
  void add(const float* x, std::int64_t n, std::int64_t ld, const idx_t* ids, bool replace,
           bool x_on_device);

  /// Remove n ids (host array; all-or-nothing). @throws simdex::UnknownId.
  void remove(const idx_t* ids, std::int64_t n);

  /// Remove everything (the device buffers are kept for reuse).
  void reset();

  /// Exact k-NN of nq queries (row stride ld floats). Queries and outputs are all in
  /// host memory, or all in device memory when on_device.
  /// @param[out] distances, ids  nq * k each, owned by the caller
  void search(const float* q, std::int64_t nq, std::int64_t ld, std::int64_t k, float* distances,
              idx_t* ids, bool on_device, const GpuKnnParams& params = GpuKnnParams());

  /// Copy the stored vectors of n ids (host) into out (host, n * d). @throws UnknownId.
  void get_vectors(const idx_t* ids, std::int64_t n, float* out);

  /// Whether each of n ids is present (out: n bytes, 1 = present).
  void contains(const idx_t* ids, std::int64_t n, std::uint8_t* out) const;

  /// Copy all vectors (size() * d floats) and ids (size()) to host, in storage order.
  void export_all(float* vectors, idx_t* ids);

  std::int64_t size() const;
  std::int64_t dim() const { return d_; }
  Metric metric() const { return metric_; }
  int device() const { return device_; }

 private:
  void reserve(std::int64_t rows);  // grow the device buffers, keeping the contents

  std::int64_t d_;
  Metric metric_;
  int device_;
  cudaStream_t stream_ = nullptr;
  std::int64_t capacity_ = 0;
  DeviceBuffer<float> data_;  // capacity_ * d_
  DeviceBuffer<float> aux_;   // capacity_
  DeviceBuffer<idx_t> dids_;  // capacity_: ids on the device (tie-breaking, output)
  std::vector<idx_t> ids_;    // size(): host copy of the ids in storage order
  std::unordered_map<idx_t, std::int64_t> row_of_;
  mutable std::mutex mutex_;
};

}  // namespace simdex::cuda
