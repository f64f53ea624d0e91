// Common definitions of the simdex CUDA module: the error-check macro, a device
// query that never throws on a machine without a driver, and an owning device
// buffer.
//
// Host-only: compiles with the ordinary C++ compiler (it needs the CUDA runtime
// headers, not nvcc). Every CUDA runtime call in simdex goes through
// SIMDEX_CUDA_CHECK, which throws std::runtime_error carrying the CUDA error name
// and message, the call and its location; the bindings turn it into a Python
// RuntimeError, so a CUDA failure is never a crash.
//
// Example:
// @code
//   simdex::cuda::DeviceBuffer<float> buf(1024);          // cudaMalloc, freed by ~DeviceBuffer
//   SIMDEX_CUDA_CHECK(cudaMemsetAsync(buf.data(), 0, buf.bytes(), stream));
// @endcode
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "simdex/common.h"

namespace simdex::cuda {

/// Throw std::runtime_error describing `err` (which must not be cudaSuccess).
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);

/// Number of usable CUDA devices; 0 when there is no driver or no device (never
/// throws). `reason` (optional) receives why there is none ("" when count > 0).
int device_count(std::string* reason = nullptr);

/// Name, compute capability and memory of device `dev` (throws on error).
std::string device_description(int dev);

/// Makes device `dev` current for the guard's lifetime, then restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int dev);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
  int dev_ = 0;
};

/// Owning, move-only buffer of `n` elements of T in device memory (cudaMalloc).
/// The contents are uninitialised. The destructor frees it and never throws.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t n) { resize_discard(n); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  /// Make room for n elements; the old contents are lost.
  void resize_discard(std::size_t n);
  T* data() { return p_; }
  const T* data() const { return p_; }
  std::size_t size() const { return n_; }
  std::size_t bytes() const { return n_ * sizeof(T); }

 private:
  void release() noexcept {
    if (p_ != nullptr) cudaFree(p_);  // errors here cannot be reported from a destructor
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

template <typename T>
void DeviceBuffer<T>::resize_discard(std::size_t n) {
  release();
  if (n == 0) return;
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, n * sizeof(T));
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free allocation error
    throw std::runtime_error(::simdex::detail::concat("CUDA out of memory: could not allocate ", n * sizeof(T),
                                            " bytes (", cudaGetErrorString(err),
                                            "); use smaller query_block/base_block or fewer vectors"));
  }
  p_ = static_cast<T*>(p);
  n_ = n;
}

}  // namespace simdex::cuda

/// Run a CUDA runtime call; throw std::runtime_error (Python RuntimeError) if it fails.
#define SIMDEX_CUDA_CHECK(call)                                                        \
  do {                                                                                 \
    const cudaError_t simdex_cuda_err_ = (call);                                       \
    if (simdex_cuda_err_ != cudaSuccess)                                               \
      ::simdex::cuda::throw_cuda_error(simdex_cuda_err_, #call, __FILE__, __LINE__);   \
  } while (0)

/// Check the launch of the kernel just issued (configuration errors show up here;
/// faults inside the kernel show up at the next synchronising call).
#define SIMDEX_CUDA_CHECK_LAUNCH() SIMDEX_CUDA_CHECK(cudaGetLastError())
