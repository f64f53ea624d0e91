// simdex CUDA emulator: memory, streams, events and errors (see simdex_emu/runtime.h).
//
// Environment (read once):
//   SIMDEX_EMU_DEVICES    number of devices (default 1; 0 = "no device")
//   SIMDEX_EMU_MEMORY_MB  device memory per process (default 4096)
//   SIMDEX_EMU_CC         compute capability as major*10+minor (default 90)
//   SIMDEX_EMU_STREAM_ORDER  which legal order of the streams' work to run when the
//                         host waits for stream S:
//                         late  (default) S first; other streams only as far as S's
//                               event waits force them (exposes a missing wait whose
//                               absence lets S overwrite what another stream reads);
//                         early every other stream first, then S (exposes a missing
//                               wait whose absence lets another stream read what S
//                               has not written yet).
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "simdex_emu/prelude.h"

struct simdex_emu_stream {
  unsigned flags = 0;
  struct Op {
    std::uint64_t seq = 0;
    std::string what;
    std::function<cudaError_t()> fn;  // empty: a wait
    simdex_emu_stream* wait_stream = nullptr;
    std::uint64_t wait_seq = 0;
  };
  std::deque<Op> queue;
  std::uint64_t last = 0;  // seq of the last op queued
  std::uint64_t done = 0;  // seq of the last op run
};

struct simdex_emu_event {
  simdex_emu_stream* stream = nullptr;
  std::uint64_t seq = 0;
  bool recorded = false;
};

namespace simdex_emu {

namespace {

struct Allocation {
  unsigned char* map = nullptr;  // the mapping: data pages then one PROT_NONE page
  std::size_t map_bytes = 0;
  std::size_t bytes = 0;  // as requested
};

struct State {
  std::recursive_mutex mu;
  simdex_emu_stream default_stream;
  std::set<simdex_emu_stream*> streams;
  std::set<simdex_emu_event*> events;
  std::map<std::uintptr_t, Allocation> allocs;  // by user pointer
  std::uint64_t seq = 0;
  std::size_t in_use = 0;
  int devices = 1;
  std::size_t memory = std::size_t{4096} << 20;
  int cc = 90;
  int current_device = 0;
  bool early = false;

  State() {
    if (const char* v = std::getenv("SIMDEX_EMU_DEVICES")) devices = std::atoi(v);
    if (const char* v = std::getenv("SIMDEX_EMU_MEMORY_MB")) memory = std::size_t(std::atoll(v)) << 20;
    if (const char* v = std::getenv("SIMDEX_EMU_CC")) cc = std::atoi(v);
    if (const char* v = std::getenv("SIMDEX_EMU_STREAM_ORDER")) {
      early = std::string(v) == "early";
      if (!early && std::string(v) != "late") {
        std::fprintf(stderr, "simdex-emu: SIMDEX_EMU_STREAM_ORDER must be late or early, got %s\n", v);
        std::abort();
      }
    }
  }
};

State& st() {
  static State* s = new State();
  return *s;
}

thread_local cudaError_t t_last_error = cudaSuccess;

cudaError_t fail(cudaError_t err, const std::string& why) {
  std::fprintf(stderr, "simdex-emu: %s\n", why.c_str());
  t_last_error = err;
  return err;
}

simdex_emu_stream* resolve(cudaStream_t s) {
  const auto v = reinterpret_cast<std::uintptr_t>(s);
  if (s == nullptr || v == 1 || v == 2) return &st().default_stream;  // legacy / per-thread default
  return s;
}

bool known_stream(simdex_emu_stream* s) { return s == &st().default_stream || st().streams.count(s) != 0; }

// The allocation that p points into or one past the end of (nullptr if none), and its base.
const Allocation* find_alloc(const void* p, std::uintptr_t* base = nullptr) {
  auto& a = st().allocs;
  const auto v = reinterpret_cast<std::uintptr_t>(p);
  auto it = a.upper_bound(v);
  if (it == a.begin()) return nullptr;
  --it;
  if (v > it->first + it->second.bytes) return nullptr;
  if (base != nullptr) *base = it->first;
  return &it->second;
}

// Run the queued work of s up to and including op `seq`; the first error is returned.
cudaError_t run_until(simdex_emu_stream* s, std::uint64_t seq) {
  cudaError_t first = cudaSuccess;
  while (s->done < seq && !s->queue.empty()) {
    simdex_emu_stream::Op op = std::move(s->queue.front());
    s->queue.pop_front();
    cudaError_t err = cudaSuccess;
    if (op.fn) {
      err = op.fn();
      if (err != cudaSuccess) std::fprintf(stderr, "simdex-emu: %s failed: %s\n", op.what.c_str(), cudaGetErrorName(err));
    } else if (op.wait_stream != nullptr) {
      err = run_until(op.wait_stream, op.wait_seq);
    }
    if (err != cudaSuccess && first == cudaSuccess) first = err;
    s->done = op.seq;
  }
  if (first != cudaSuccess) t_last_error = first;
  return first;
}

std::vector<simdex_emu_stream*> all_streams() {
  std::vector<simdex_emu_stream*> v{&st().default_stream};
  v.insert(v.end(), st().streams.begin(), st().streams.end());
  return v;
}

// Run everything queued on s, in the order SIMDEX_EMU_STREAM_ORDER selects.
cudaError_t flush(simdex_emu_stream* s) {
  cudaError_t first = cudaSuccess;
  if (st().early) {
    for (simdex_emu_stream* o : all_streams()) {
      if (o == s) continue;
      const cudaError_t err = run_until(o, o->last);
      if (first == cudaSuccess) first = err;
    }
  }
  const cudaError_t err = run_until(s, s->last);
  return first != cudaSuccess ? first : err;
}

cudaError_t flush_all() {
  cudaError_t first = cudaSuccess;
  for (simdex_emu_stream* s : all_streams()) {
    const cudaError_t err = run_until(s, s->last);
    if (first == cudaSuccess) first = err;
  }
  return first;
}

void push(simdex_emu_stream* s, simdex_emu_stream::Op op) {
  op.seq = ++st().seq;
  s->last = op.seq;
  s->queue.push_back(std::move(op));
}

const char* kind_name(cudaMemcpyKind k) {
  switch (k) {
    case cudaMemcpyHostToHost: return "cudaMemcpyHostToHost";
    case cudaMemcpyHostToDevice: return "cudaMemcpyHostToDevice";
    case cudaMemcpyDeviceToHost: return "cudaMemcpyDeviceToHost";
    case cudaMemcpyDeviceToDevice: return "cudaMemcpyDeviceToDevice";
    case cudaMemcpyDefault: return "cudaMemcpyDefault";
  }
  return "?";
}

// Check that [p, p+span) is (or is not) device memory as `want_device` says.
bool side_ok(const void* p, std::size_t span, bool want_device, const char* side, cudaMemcpyKind kind,
             std::string* why) {
  if (span == 0) return true;
  const bool dev = is_device_range(p, span);
  if (dev == want_device) return true;
  const bool partly = find_alloc(p) != nullptr;
  *why = std::string(kind_name(kind)) + ": the " + side + " (" + std::to_string(span) + " bytes) is " +
         (partly ? "device memory but overruns its allocation" : dev ? "device memory" : "not device memory");
  return false;
}

// Resolve the copy's kind and check both sides. dst_span / src_span: the bytes touched.
cudaError_t check_copy(void* dst, std::size_t dst_span, const void* src, std::size_t src_span,
                       cudaMemcpyKind* kind) {
  if (*kind == cudaMemcpyDefault) {
    const bool dd = find_alloc(dst) != nullptr, sd = find_alloc(src) != nullptr;
    *kind = dd ? (sd ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
               : (sd ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  }
  const bool dst_dev = *kind == cudaMemcpyHostToDevice || *kind == cudaMemcpyDeviceToDevice;
  const bool src_dev = *kind == cudaMemcpyDeviceToHost || *kind == cudaMemcpyDeviceToDevice;
  std::string why;
  if (!side_ok(dst, dst_span, dst_dev, "destination", *kind, &why) ||
      !side_ok(src, src_span, src_dev, "source", *kind, &why))
    return fail(cudaErrorInvalidValue, why);
  return cudaSuccess;
}

struct Copy2D {
  unsigned char* dst;
  std::size_t dpitch;
  const unsigned char* src;
  std::size_t spitch, width, height;
  void operator()() const {
    for (std::size_t r = 0; r < height; ++r) std::memcpy(dst + r * dpitch, src + r * spitch, width);
  }
};

// The common path of every copy: 1-D copies are 2-D copies of one row.
cudaError_t copy2d(void* dst, std::size_t dpitch, const void* src, std::size_t spitch, std::size_t width,
                   std::size_t height, cudaMemcpyKind kind, cudaStream_t stream, bool sync) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  if (width == 0 || height == 0) return cudaSuccess;
  if ((height > 1 && (dpitch < width || spitch < width)) || dst == nullptr || src == nullptr)
    return fail(cudaErrorInvalidValue, "memcpy: null pointer or pitch smaller than the width");
  const std::size_t dspan = (height - 1) * dpitch + width, sspan = (height - 1) * spitch + width;
  if (const cudaError_t err = check_copy(dst, dspan, src, sspan, &kind); err != cudaSuccess) return err;
  simdex_emu_stream* s = resolve(stream);
  if (!known_stream(s)) return fail(cudaErrorInvalidResourceHandle, "memcpy on an unknown stream");
  Copy2D c{static_cast<unsigned char*>(dst), dpitch, static_cast<const unsigned char*>(src), spitch, width, height};
  if (sync || kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyHostToHost) {
    // Synchronous copies, and asynchronous ones to pageable host memory, return when done.
    if (const cudaError_t err = sync ? flush_all() : flush(s); err != cudaSuccess) return err;
    c();
    return cudaSuccess;
  }
  if (kind == cudaMemcpyHostToDevice) {  // pageable source: staged at the call
    auto staged = std::make_shared<std::vector<unsigned char>>(height * width);
    for (std::size_t r = 0; r < height; ++r) std::memcpy(staged->data() + r * width, c.src + r * spitch, width);
    push(s, {0, "cudaMemcpyAsync(HostToDevice)", [c, staged]() {
               for (std::size_t r = 0; r < c.height; ++r)
                 std::memcpy(c.dst + r * c.dpitch, staged->data() + r * c.width, c.width);
               return cudaSuccess;
             }});
    return cudaSuccess;
  }
  push(s, {0, "cudaMemcpyAsync(DeviceToDevice)", [c]() {
             c();
             return cudaSuccess;
           }});
  return cudaSuccess;
}

const char* error_name(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

}  // namespace

std::int64_t device_bytes_in_use() {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  return static_cast<std::int64_t>(st().in_use);
}

bool is_device_range(const void* p, std::size_t bytes) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  std::uintptr_t base = 0;
  const Allocation* a = find_alloc(p, &base);
  return a != nullptr && reinterpret_cast<std::uintptr_t>(p) + bytes <= base + a->bytes;
}

void set_last_error(cudaError_t err, const std::string& detail) { fail(err, detail); }

void enqueue(cudaStream_t stream, std::string what, std::function<cudaError_t()> fn) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  simdex_emu_stream* s = resolve(stream);
  if (!known_stream(s)) {
    fail(cudaErrorInvalidResourceHandle, what + ": unknown stream");
    return;
  }
  push(s, {0, std::move(what), std::move(fn)});
}

void check_launch(const char* name, const LaunchConfig& cfg, bool* ok) {
  const dim3& g = cfg.grid;
  const dim3& b = cfg.block;
  const std::uint64_t threads = std::uint64_t{b.x} * b.y * b.z;
  std::string why;
  if (g.x == 0 || g.y == 0 || g.z == 0 || b.x == 0 || b.y == 0 || b.z == 0)
    why = "a grid or block dimension is 0";
  else if (g.x > 2147483647u || g.y > 65535u || g.z > 65535u)
    why = "grid dimensions over (2^31-1, 65535, 65535)";
  else if (b.x > 1024u || b.y > 1024u || b.z > 64u || threads > 1024u)
    why = "more than 1024 threads per block (or block dims over 1024, 1024, 64)";
  else if (cfg.smem > 48u * 1024u)
    why = "dynamic shared memory " + std::to_string(cfg.smem) + " bytes is over the default 48 KiB";
  if (!why.empty()) {
    *ok = false;
    fail(cudaErrorInvalidConfiguration, std::string("launch of ") + name + ": " + why);
  }
}

void check_pointer_argument(const char* name, int index, const void* p, bool* ok) {
  if (is_device_range(p, 0)) return;
  *ok = false;
  fail(cudaErrorInvalidValue,
       std::string("launch of ") + name + ": pointer argument " + std::to_string(index) + " is not device memory");
}

}  // namespace simdex_emu

using simdex_emu::fail;
using simdex_emu::st;

const char* cudaGetErrorName(cudaError_t err) { return simdex_emu::error_name(err); }

const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = simdex_emu::t_last_error;
  simdex_emu::t_last_error = cudaSuccess;
  return e;
}

cudaError_t cudaGetDeviceCount(int* count) {
  if (st().devices <= 0) {
    *count = 0;
    return fail(cudaErrorNoDevice, "no device (SIMDEX_EMU_DEVICES=0)");
  }
  *count = st().devices;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (st().devices <= 0) return fail(cudaErrorNoDevice, "no device");
  *device = st().current_device;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= st().devices) return fail(cudaErrorInvalidDevice, "cudaSetDevice: no such device");
  st().current_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device < 0 || device >= st().devices) return fail(cudaErrorInvalidDevice, "cudaGetDeviceProperties");
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof(prop->name), "simdex CPU emulator (sm_%d)", st().cc);
  prop->totalGlobalMem = st().memory;
  prop->sharedMemPerBlock = 48 * 1024;
  prop->maxThreadsPerBlock = 1024;
  prop->major = st().cc / 10;
  prop->minor = st().cc % 10;
  prop->multiProcessorCount = 1;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  cudaDeviceProp p;
  if (const cudaError_t err = cudaGetDeviceProperties(&p, device); err != cudaSuccess) return err;
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(p.sharedMemPerBlock); break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    default: return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute not emulated");
  }
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  return simdex_emu::flush_all();
}

cudaError_t cudaMalloc(void** ptr, std::size_t bytes) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  *ptr = nullptr;
  if (st().devices <= 0) return fail(cudaErrorNoDevice, "cudaMalloc: no device");
  if (bytes == 0) return cudaSuccess;
  if (bytes > st().memory - std::min(st().memory, st().in_use))
    return fail(cudaErrorMemoryAllocation, "cudaMalloc(" + std::to_string(bytes) + "): over SIMDEX_EMU_MEMORY_MB");
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  const std::size_t rounded = (bytes + 15) / 16 * 16;  // keeps 16-byte alignment
  const std::size_t data_pages = (rounded + page - 1) / page;
  const std::size_t map_bytes = (data_pages + 1) * page;
  void* m = mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return fail(cudaErrorMemoryAllocation, "cudaMalloc: mmap failed");
  auto* map = static_cast<unsigned char*>(m);
  mprotect(map + data_pages * page, page, PROT_NONE);
  unsigned char* user = map + data_pages * page - rounded;
  std::memset(user, 0xFF, rounded);  // cudaMalloc memory holds garbage: make it NaN / -1
  st().allocs[reinterpret_cast<std::uintptr_t>(user)] = simdex_emu::Allocation{map, map_bytes, bytes};
  st().in_use += bytes;
  *ptr = user;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  if (ptr == nullptr) return cudaSuccess;
  auto it = st().allocs.find(reinterpret_cast<std::uintptr_t>(ptr));
  if (it == st().allocs.end()) return fail(cudaErrorInvalidValue, "cudaFree: not a pointer cudaMalloc returned");
  const cudaError_t err = simdex_emu::flush_all();  // cudaFree waits for the device
  munmap(it->second.map, it->second.map_bytes);
  st().in_use -= it->second.bytes;
  st().allocs.erase(it);
  return err;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* ptr) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  *attr = cudaPointerAttributes{};
  if (simdex_emu::find_alloc(ptr) != nullptr) {
    attr->type = cudaMemoryTypeDevice;
    attr->device = 0;
    attr->devicePointer = const_cast<void*>(ptr);
  }
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  return simdex_emu::copy2d(dst, bytes, src, bytes, bytes, 1, kind, nullptr, true);
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  return simdex_emu::copy2d(dst, bytes, src, bytes, bytes, 1, kind, stream, false);
}

cudaError_t cudaMemcpy2DAsync(void* dst, std::size_t dpitch, const void* src, std::size_t spitch,
                              std::size_t width, std::size_t height, cudaMemcpyKind kind, cudaStream_t stream) {
  return simdex_emu::copy2d(dst, dpitch, src, spitch, width, height, kind, stream, false);
}

cudaError_t cudaMemsetAsync(void* dst, int value, std::size_t bytes, cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  if (bytes == 0) return cudaSuccess;
  if (!simdex_emu::is_device_range(dst, bytes))
    return fail(cudaErrorInvalidValue, "cudaMemset: the range is not inside one device allocation");
  simdex_emu::enqueue(stream, "cudaMemsetAsync", [dst, value, bytes]() {
    std::memset(dst, value, bytes);
    return cudaSuccess;
  });
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  auto* s = new simdex_emu_stream();
  s->flags = flags;
  st().streams.insert(s);
  *stream = s;
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  if (stream == nullptr || st().streams.count(stream) == 0)
    return fail(cudaErrorInvalidResourceHandle, "cudaStreamDestroy: unknown stream");
  // Work already queued still completes (as on a GPU); waits that name it stay valid.
  const cudaError_t err = simdex_emu::flush(stream);
  for (simdex_emu_event* e : st().events)
    if (e->stream == stream) e->stream = nullptr;
  for (simdex_emu_stream* other : st().streams)  // its work is done: waits on it are satisfied
    for (auto& op : other->queue)
      if (op.wait_stream == stream) op.wait_stream = nullptr;
  for (auto& op : st().default_stream.queue)
    if (op.wait_stream == stream) op.wait_stream = nullptr;
  st().streams.erase(stream);
  delete stream;
  return err;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  simdex_emu_stream* s = simdex_emu::resolve(stream);
  if (!simdex_emu::known_stream(s)) return fail(cudaErrorInvalidResourceHandle, "cudaStreamSynchronize");
  return simdex_emu::flush(s);
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  simdex_emu_stream* s = simdex_emu::resolve(stream);
  if (!simdex_emu::known_stream(s) || st().events.count(event) == 0)
    return fail(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent: unknown stream or event");
  if (!event->recorded || event->stream == nullptr) return cudaSuccess;  // nothing to wait for
  simdex_emu::push(s, {0, "cudaStreamWaitEvent", {}, event->stream, event->seq});
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  auto* e = new simdex_emu_event();
  st().events.insert(e);
  *event = e;
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  if (st().events.erase(event) == 0) return fail(cudaErrorInvalidResourceHandle, "cudaEventDestroy");
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(st().mu);
  simdex_emu_stream* s = simdex_emu::resolve(stream);
  if (!simdex_emu::known_stream(s) || st().events.count(event) == 0)
    return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord: unknown stream or event");
  event->stream = s;
  event->seq = s->last;
  event->recorded = true;
  return cudaSuccess;
}

