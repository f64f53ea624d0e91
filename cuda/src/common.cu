// Error reporting and device queries.
#include <string>

#include "simdex/cuda/common.h"

namespace simdex::cuda {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  throw std::runtime_error(::simdex::detail::concat("CUDA error ", cudaGetErrorName(err), ": ",
                                          cudaGetErrorString(err), " (in ", call, " at ", file, ":",
                                          line, ")"));
}

int device_count(std::string* reason) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();  // do not leave the error for the next call to find
    if (reason != nullptr) {
      if (err == cudaErrorInsufficientDriver)
        *reason = "no usable NVIDIA driver (cudaErrorInsufficientDriver: the driver is missing "
                  "or older than the CUDA runtime simdex was built with)";
      else if (err == cudaErrorNoDevice)
        *reason = "no CUDA device is present (cudaErrorNoDevice)";
      else
        *reason = ::simdex::detail::concat("the CUDA runtime could not start: ", cudaGetErrorName(err), ": ",
                                 cudaGetErrorString(err));
    }
    return 0;
  }
  if (reason != nullptr) *reason = n > 0 ? "" : "no CUDA device is present";
  return n;
}

DeviceGuard::DeviceGuard(int dev) : dev_(dev) {
  SIMDEX_CUDA_CHECK(cudaGetDevice(&prev_));
  if (prev_ != dev_) SIMDEX_CUDA_CHECK(cudaSetDevice(dev_));
}

DeviceGuard::~DeviceGuard() {
  if (prev_ != dev_) cudaSetDevice(prev_);  // cannot throw from a destructor
}

std::string device_description(int dev) {
  cudaDeviceProp prop{};
  SIMDEX_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  return ::simdex::detail::concat(prop.name, " (compute capability ", prop.major, ".", prop.minor, ", ",
                        prop.totalGlobalMem >> 20, " MiB, ", prop.multiProcessorCount, " SMs)");
}

}  // namespace simdex::cuda
