// simdex CUDA emulator: the subset of the CUDA runtime API that simdex uses,
// implemented on the CPU (cuda/emu/src/runtime.cpp).
//
// What it is for: running the CUDA module's unchanged kernels and host code on a
// machine without a GPU, so that their results can be checked against the CPU
// index. It is a test tool, never part of the installed package. It is strict
// where a GPU is lenient, so that bugs show up here rather than pass silently:
//  - device memory is mmap'ed with a PROT_NONE guard page right after each
//    allocation (reading or writing past the end crashes), filled with 0xFF
//    (NaN / -1) so that reads of memory nothing wrote are visible;
//  - every pointer argument of a kernel must point into a device allocation;
//  - streams run lazily: work runs only when the host waits for it, and a stream
//    runs only as far as some event wait forces, so a missing event dependency
//    between streams reorders the work instead of hiding;
//  - copies check that each side is the kind of memory the copy kind names.
// Semantics follow the CUDA runtime documentation: pageable device-to-host copies
// return when done, host-to-device copies stage the host data at the call,
// cudaFree waits for the device, a wait on a never-recorded event is a no-op.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#define CUDART_VERSION 13000  // the toolkit the emulator stands in for

struct simdex_emu_stream;
struct simdex_emu_event;
typedef simdex_emu_stream* cudaStream_t;
typedef simdex_emu_event* cudaEvent_t;

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
};
typedef cudaError_t cudaError;

enum cudaMemcpyKind : int {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

enum cudaDeviceAttr : int {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
};

enum cudaMemoryType : int {
  cudaMemoryTypeUnregistered = 0,
  cudaMemoryTypeHost = 1,
  cudaMemoryTypeDevice = 2,
  cudaMemoryTypeManaged = 3,
};

struct cudaPointerAttributes {
  cudaMemoryType type = cudaMemoryTypeUnregistered;
  int device = 0;
  void* devicePointer = nullptr;
  void* hostPointer = nullptr;
};

struct cudaDeviceProp {
  char name[256] = {};
  std::size_t totalGlobalMem = 0;
  std::size_t sharedMemPerBlock = 0;
  int maxThreadsPerBlock = 0;
  int major = 0;
  int minor = 0;
  int multiProcessorCount = 0;
  int warpSize = 32;
};

#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01
#define cudaEventDefault 0x00
#define cudaEventDisableTiming 0x02

const char* cudaGetErrorName(cudaError_t err);
const char* cudaGetErrorString(cudaError_t err);
cudaError_t cudaGetLastError();

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize();

cudaError_t cudaMalloc(void** ptr, std::size_t bytes);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr);

cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemcpy2DAsync(void* dst, std::size_t dpitch, const void* src, std::size_t spitch,
                              std::size_t width, std::size_t height, cudaMemcpyKind kind,
                              cudaStream_t stream = nullptr);
cudaError_t cudaMemsetAsync(void* dst, int value, std::size_t bytes, cudaStream_t stream = nullptr);

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags = 0);

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);

namespace simdex_emu {

/// Queue `fn` on `stream` (run in stream order, lazily). Used by the launcher and
/// the CUB stand-in. `what` names the work in error messages.
void enqueue(cudaStream_t stream, std::string what, std::function<cudaError_t()> fn);

/// Record `err` as the calling thread's last error (what cudaGetLastError returns).
void set_last_error(cudaError_t err, const std::string& detail);

/// True if [p, p + bytes) lies inside one device allocation (bytes may be 0: then
/// p may also be one past its end).
bool is_device_range(const void* p, std::size_t bytes);

/// Statistics for tests: kernels launched and completed, device bytes in use.
struct Stats {
  std::int64_t launches = 0;
  std::int64_t blocks = 0;
  std::int64_t threads = 0;
  std::int64_t bytes_in_use = 0;
};
Stats stats();

}  // namespace simdex_emu
