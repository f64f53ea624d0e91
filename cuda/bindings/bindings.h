// The feature files of the pybind11 module simdex._cuda (exact.cpp, hashing.cpp, lsh.cpp,
// device_array.cpp) and the module body (module.cpp) meet here.
//
// Two kinds of entry points:
//  - host functions take C-contiguous NumPy arrays, copy them to the device and
//    return NumPy arrays (outputs allocated while the GIL is held);
//  - *_device functions take raw device pointers (ints), shapes, row strides (in
//    elements) and a stream handle, so simdex.index.gpu can hand over CuPy / PyTorch /
//    __cuda_array_interface__ arrays without copies; the caller owns every buffer.
#pragma once

#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "../../cpp/bindings/common.h"  // checks, metric names and store accessors shared with _core
#include "simdex/cuda/common.h"
#include "simdex/cuda/knn.h"

namespace simdex::bindings {

using simdex::cuda::DeviceBuffer;
using simdex::cuda::DeviceMatrix;
using simdex::cuda::GpuKnnParams;

inline simdex::cuda::Precision parse_precision(const std::string& name) {
  if (name == "fp32") return simdex::cuda::Precision::kFP32;
  if (name == "tf32x3") return simdex::cuda::Precision::kTF32x3;
  if (name == "tf32") return simdex::cuda::Precision::kTF32;
  throw std::invalid_argument("unknown precision '" + name + "'; expected 'fp32', 'tf32x3' or 'tf32'");
}

inline GpuKnnParams make_params(std::int64_t query_block, std::int64_t base_block, const std::string& precision) {
  GpuKnnParams p;
  p.precision = parse_precision(precision);
  if (query_block > 0) p.query_block = query_block;
  if (base_block > 0) p.base_block = base_block;
  return p;
}

inline cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

template <typename T>
const T* as_cptr(std::uintptr_t p) {
  return reinterpret_cast<const T*>(p);
}
template <typename T>
T* as_ptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

/// Throw std::runtime_error naming the reason when no CUDA device can be used.
inline void require_device() {
  std::string why;
  if (simdex::cuda::device_count(&why) == 0) throw std::runtime_error("no usable CUDA device: " + why);
}

void register_exact(py::module_& m);
void register_hashing(py::module_& m);
void register_lsh(py::module_& m);
void register_device_array(py::module_& m);

}  // namespace simdex::bindings
