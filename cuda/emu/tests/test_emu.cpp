// Self-tests of the CUDA emulator (cuda/emu): each semantic the emulator promises in
// simdex_emu/prelude.h and runtime.h, including the failures it must report.
// Built with simdex_emu/prelude.h force-included, like the CUDA sources; run by
// `make check-cuda-emu`. Exit status 0 when every check passes.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <mma.h>
#include <cub/device/device_radix_sort.cuh>
#include <string>
#include <vector>

namespace {

int g_failures = 0;

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++g_failures;                                                              \
    }                                                                            \
  } while (0)

template <typename T>
T* dev_alloc(std::size_t n) {
  void* p = nullptr;
  if (cudaMalloc(&p, n * sizeof(T)) != cudaSuccess) std::abort();
  return static_cast<T*>(p);
}

template <typename T>
std::vector<T> to_host(const T* d, std::size_t n) {
  std::vector<T> h(n);
  if (cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost) != cudaSuccess) std::abort();
  return h;
}

// ---------------------------------------------------------------- kernels under test
__global__ void shuffles_kernel(int* out) {
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int base = static_cast<int>(threadIdx.x) * 6;
  out[base + 0] = __shfl_sync(0xffffffffu, lane * 10, 3);             // broadcast lane 3
  int s = lane;
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  out[base + 1] = s;                                                  // butterfly sum 0..31
  out[base + 2] = __shfl_sync(0xffffffffu, lane, lane + 1, 8);        // within 8-lane segments
  out[base + 3] = __shfl_xor_sync(0xffffffffu, lane, 4, 4);           // target outside the segment
  out[base + 4] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
  out[base + 5] = __syncthreads_or(threadIdx.x == 40) * 100 + __syncthreads_or(0) * 10;
}

// Thread t writes s[t]; after the barrier it reads its neighbour's slot.
__global__ void neighbour_kernel(int* out, bool barrier) {
  __shared__ int s[256];
  const int t = static_cast<int>(threadIdx.x);
  s[t] = t + 1;
  if (barrier) __syncthreads();
  out[t] = s[(t + 1) % static_cast<int>(blockDim.x)];
}

__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 16) __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void two_barriers_kernel(int* out) {
  if (threadIdx.x < 32)
    __syncthreads();
  else
    __syncthreads();
  out[threadIdx.x] = 1;
}

// Lane 0 of every warp counts its warp in; every thread then reads the count.
__global__ void warp_count_kernel(int* out, bool barrier) {
  __shared__ int count;
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  if ((threadIdx.x & 31) == 0) atomicAdd(&count, 1);
  __syncwarp();
  if (barrier) __syncthreads();
  out[threadIdx.x] = count;
}

__global__ void exited_lane_kernel(int* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
}

__global__ void write_kernel(int* out, int n, int value) {
  for (int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); i < n; i += static_cast<int>(gridDim.x * blockDim.x))
    out[i] = value;
}

__global__ void copy_kernel(const int* in, int* out, int n) {
  for (int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); i < n; i += static_cast<int>(gridDim.x * blockDim.x))
    out[i] = in[i];
}

__global__ void dynamic_smem_kernel(unsigned* out) {
  SIMDEX_DYNAMIC_SHARED(unsigned, s);
  if (threadIdx.x == 0) {
    out[blockIdx.x] = s[7];  // nothing wrote it in this block: the 0xFF fill
    s[7] = 0;                // must not leak into the next block
  }
}

__global__ void oob_kernel(float* p, int n) { p[n] = 1.0f; }  // one past the end

__global__ void wmma_kernel(const float* a, const float* b, float* c) {
  namespace wmma = nvcuda::wmma;
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
  wmma::fill_fragment(acc, 1.0f);
  wmma::load_matrix_sync(fa, a, 8);
  wmma::load_matrix_sync(fb, b, 8);
  for (int i = 0; i < fa.num_elements; ++i) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
  for (int i = 0; i < fb.num_elements; ++i) fb.x[i] = wmma::__float_to_tf32(fb.x[i]);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(c, acc, 16, wmma::mem_row_major);
}

// ---------------------------------------------------------------- tests
void test_warp_collectives_and_block_reductions() {
  int* d = dev_alloc<int>(64 * 6);
  SIMDEX_LAUNCH(1, 64, 0, nullptr, shuffles_kernel)(d);
  CHECK(cudaGetLastError() == cudaSuccess);
  auto h = to_host(d, 64 * 6);
  for (int t = 0; t < 64; ++t) {
    const int lane = t & 31;
    CHECK(h[t * 6 + 0] == 30);
    CHECK(h[t * 6 + 1] == 31 * 32 / 2);
    CHECK(h[t * 6 + 2] == (lane & ~7) + ((lane + 1) & 7));        // wraps inside its segment
    CHECK(h[t * 6 + 3] == lane);                                  // lane ^ 4 leaves a 4-lane segment
    CHECK(static_cast<unsigned>(h[t * 6 + 4]) == 0x49249249u);  // lanes 0, 3, 6, ...
    CHECK(h[t * 6 + 5] == 100);                                   // one thread says yes; none does
  }
  cudaFree(d);
}

void test_barrier_orders_shared_memory() {
  int* d = dev_alloc<int>(256);
  SIMDEX_LAUNCH(1, 256, 0, nullptr, neighbour_kernel)(d, true);
  auto ok = to_host(d, 256);
  bool all_ok = true;
  for (int t = 0; t < 256; ++t) all_ok &= ok[t] == (t + 1) % 256 + 1;
  CHECK(all_ok);
  // Without the barrier some thread reads a slot before its owner wrote it; the
  // fiber order and the 0xFF refill of shared memory make that visible.
  SIMDEX_LAUNCH(1, 256, 0, nullptr, neighbour_kernel)(d, false);
  auto racy = to_host(d, 256);
  int wrong = 0;
  for (int t = 0; t < 256; ++t) wrong += racy[t] != (t + 1) % 256 + 1;
  CHECK(wrong > 0);
  cudaFree(d);
}

void test_warps_progress_independently() {
  int* d = dev_alloc<int>(128);
  SIMDEX_LAUNCH(1, 128, 0, nullptr, warp_count_kernel)(d, true);
  auto h = to_host(d, 128);
  bool all4 = true;
  for (int v : h) all4 &= v == 4;
  CHECK(all4);
  // Without the block barrier the first warp to run reads the count before the other
  // warps added to it (lockstep warps would hide that).
  SIMDEX_LAUNCH(1, 128, 0, nullptr, warp_count_kernel)(d, false);
  h = to_host(d, 128);
  int short_reads = 0;
  for (int v : h) short_reads += v < 4;
  CHECK(short_reads >= 32);
  cudaFree(d);
}

void test_deadlock_and_bad_masks_are_reported() {
  int* d = dev_alloc<int>(64);
  SIMDEX_LAUNCH(1, 64, 0, nullptr, divergent_barrier_kernel)(d);
  CHECK(cudaGetLastError() == cudaSuccess);  // the launch itself is fine
  CHECK(cudaDeviceSynchronize() == cudaErrorLaunchFailure);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  SIMDEX_LAUNCH(1, 64, 0, nullptr, two_barriers_kernel)(d);
  CHECK(cudaDeviceSynchronize() == cudaErrorLaunchFailure);
  SIMDEX_LAUNCH(1, 32, 0, nullptr, exited_lane_kernel)(d);
  CHECK(cudaDeviceSynchronize() == cudaErrorLaunchFailure);
  cudaGetLastError();
  cudaFree(d);
}

void test_launch_checks() {
  int* d = dev_alloc<int>(8);
  SIMDEX_LAUNCH(1, 1025, 0, nullptr, write_kernel)(d, 8, 1);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  SIMDEX_LAUNCH(0, 32, 0, nullptr, write_kernel)(d, 8, 1);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  SIMDEX_LAUNCH(1, 32, 49 * 1024, nullptr, write_kernel)(d, 8, 1);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  std::vector<int> host(8);
  SIMDEX_LAUNCH(1, 32, 0, nullptr, write_kernel)(host.data(), 8, 1);  // a host pointer
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(cudaDeviceSynchronize() == cudaSuccess);
  CHECK(host[0] == 0);  // and nothing ran
  cudaFree(d);
}

void test_streams_run_lazily_in_event_order() {
  const int n = 1000;
  int* a = dev_alloc<int>(n);
  int* b = dev_alloc<int>(n);
  cudaStream_t s1, s2;
  cudaEvent_t e;
  CHECK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking) == cudaSuccess);
  CHECK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking) == cudaSuccess);
  CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming) == cudaSuccess);
  // Ordered: s2 copies a -> b after waiting for s1's write.
  SIMDEX_LAUNCH(4, 128, 0, s1, write_kernel)(a, n, 7);
  cudaEventRecord(e, s1);
  cudaStreamWaitEvent(s2, e, 0);
  SIMDEX_LAUNCH(4, 128, 0, s2, copy_kernel)(a, b, n);
  std::vector<int> hb(n);
  CHECK(cudaMemcpyAsync(hb.data(), b, n * sizeof(int), cudaMemcpyDeviceToHost, s2) == cudaSuccess);
  CHECK(hb[0] == 7 && hb[n - 1] == 7);
  // Unordered: nothing orders s2's copy against s1's write. Waiting for s2 runs s2
  // alone under the "late" order (the copy sees the old 7) and s1 first under
  // "early" (the copy sees 9): each order exposes one direction of a missing wait.
  const char* order = std::getenv("SIMDEX_EMU_STREAM_ORDER");
  const bool early = order != nullptr && std::string(order) == "early";
  SIMDEX_LAUNCH(4, 128, 0, s1, write_kernel)(a, n, 9);
  SIMDEX_LAUNCH(4, 128, 0, s2, copy_kernel)(a, b, n);
  CHECK(cudaMemcpyAsync(hb.data(), b, n * sizeof(int), cudaMemcpyDeviceToHost, s2) == cudaSuccess);
  CHECK(hb[0] == (early ? 9 : 7));
  CHECK(cudaStreamSynchronize(s1) == cudaSuccess);
  std::vector<int> ha = to_host(a, n);
  CHECK(ha[0] == 9);
  // A host-to-device copy stages its source at the call.
  std::vector<int> src(n, 3);
  CHECK(cudaMemcpyAsync(a, src.data(), n * sizeof(int), cudaMemcpyHostToDevice, s1) == cudaSuccess);
  src.assign(n, 4);
  CHECK(to_host(a, n)[5] == 3);
  cudaEventDestroy(e);
  cudaStreamDestroy(s1);
  cudaStreamDestroy(s2);
  cudaFree(a);
  cudaFree(b);
}

void test_memory_rules() {
  int* d = dev_alloc<int>(100);
  CHECK(to_host(d, 100)[99] == -1);  // fresh device memory is 0xFF-filled
  std::vector<int> h(200);
  CHECK(cudaMemcpy(h.data(), d, 100 * sizeof(int), cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
  CHECK(cudaMemcpy(h.data(), d, 101 * sizeof(int), cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
  CHECK(cudaMemcpy(d, h.data(), 100 * sizeof(int), cudaMemcpyDeviceToDevice) == cudaErrorInvalidValue);
  CHECK(cudaMemcpy(d, h.data(), 100 * sizeof(int), cudaMemcpyDefault) == cudaSuccess);
  cudaPointerAttributes attr;
  CHECK(cudaPointerGetAttributes(&attr, d + 50) == cudaSuccess && attr.type == cudaMemoryTypeDevice);
  CHECK(cudaPointerGetAttributes(&attr, h.data()) == cudaSuccess && attr.type == cudaMemoryTypeUnregistered);
  void* huge = nullptr;
  CHECK(cudaMalloc(&huge, std::size_t{1} << 50) == cudaErrorMemoryAllocation);
  CHECK(cudaGetLastError() == cudaErrorMemoryAllocation);
  CHECK(cudaFree(h.data()) == cudaErrorInvalidValue);
  cudaGetLastError();
  cudaFree(d);
}

void test_dynamic_shared_memory_is_refilled_per_block() {
  unsigned* d = dev_alloc<unsigned>(3);
  SIMDEX_LAUNCH(3, 32, 64, nullptr, dynamic_smem_kernel)(d);
  auto h = to_host(d, 3);
  CHECK(h[0] == 0xFFFFFFFFu && h[1] == 0xFFFFFFFFu && h[2] == 0xFFFFFFFFu);
  cudaFree(d);
}

void test_out_of_bounds_write_faults() {
  const pid_t pid = fork();
  if (pid == 0) {
    float* d = dev_alloc<float>(1000);
    SIMDEX_LAUNCH(1, 1, 0, nullptr, oob_kernel)(d, 1000);
    cudaDeviceSynchronize();
    _exit(0);  // not reached: the write hits the guard page
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
}

void test_radix_sort_is_stable_on_the_bit_range() {
  const int n = 6;
  const std::uint64_t keys[n] = {0x13, 0x02, 0x23, 0x01, 0x12, 0x03};
  const std::int32_t vals[n] = {0, 1, 2, 3, 4, 5};
  auto* kin = dev_alloc<std::uint64_t>(n);
  auto* kout = dev_alloc<std::uint64_t>(n);
  auto* vin = dev_alloc<std::int32_t>(n);
  auto* vout = dev_alloc<std::int32_t>(n);
  cudaMemcpy(kin, keys, sizeof(keys), cudaMemcpyHostToDevice);
  cudaMemcpy(vin, vals, sizeof(vals), cudaMemcpyHostToDevice);
  std::size_t bytes = 0;
  CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, kin, kout, vin, vout, n, 0, 4) == cudaSuccess);
  auto* tmp = dev_alloc<unsigned char>(bytes);
  CHECK(cub::DeviceRadixSort::SortPairs(tmp, bytes, kin, kout, vin, vout, n, 0, 4) == cudaSuccess);
  auto v = to_host(vout, n);  // low nibble only: 1 (3), 2 (1, 4), 3 (0, 2, 5) in input order
  const std::int32_t want[n] = {3, 1, 4, 0, 2, 5};
  for (int i = 0; i < n; ++i) CHECK(v[i] == want[i]);
  for (void* p : {static_cast<void*>(kin), static_cast<void*>(kout), static_cast<void*>(vin),
                  static_cast<void*>(vout), static_cast<void*>(tmp)})
    cudaFree(p);
}

void test_wmma_tf32() {
  CHECK(nvcuda::wmma::__float_to_tf32(1.0f + 0x1000 * 0x1p-23f) == 1.0f + 0x2000 * 0x1p-23f);  // tie: away
  CHECK(nvcuda::wmma::__float_to_tf32(-(1.0f + 0xFFF * 0x1p-23f)) == -1.0f);
  std::vector<float> a(16 * 8), b(16 * 8);
  for (int i = 0; i < 16 * 8; ++i) {
    a[i] = static_cast<float>((i * 7) % 11) - 5.0f;
    b[i] = static_cast<float>((i * 5) % 13) - 6.0f;
  }
  float* da = dev_alloc<float>(a.size());
  float* db = dev_alloc<float>(b.size());
  float* dc = dev_alloc<float>(256);
  cudaMemcpy(da, a.data(), a.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(db, b.data(), b.size() * 4, cudaMemcpyHostToDevice);
  SIMDEX_LAUNCH(1, 32, 0, nullptr, wmma_kernel)(da, db, dc);
  auto c = to_host(dc, 256);
  bool ok = true;
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      float ref = 1.0f;  // a row-major 16 x 8 (ld 8); b col-major 8 x 16: column j at b[j * 8]
      for (int k = 0; k < 8; ++k) ref += a[i * 8 + k] * b[j * 8 + k];
      ok &= c[i * 16 + j] == ref;
    }
  CHECK(ok);
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
}

}  // namespace

int main() {
  test_warp_collectives_and_block_reductions();
  test_barrier_orders_shared_memory();
  test_warps_progress_independently();
  test_deadlock_and_bad_masks_are_reported();
  test_launch_checks();
  test_streams_run_lazily_in_event_order();
  test_memory_rules();
  test_dynamic_shared_memory_is_refilled_per_block();
  test_out_of_bounds_write_faults();
  test_radix_sort_is_stable_on_the_bit_range();
  test_wmma_tf32();
  const auto s = simdex_emu::stats();
  std::printf("simdex-emu self-tests: %s (%lld kernels, %lld blocks, %lld threads emulated)\n",
              g_failures == 0 ? "all passed" : "FAILED", static_cast<long long>(s.launches),
              static_cast<long long>(s.blocks), static_cast<long long>(s.threads));
  return g_failures == 0 ? 0 : 1;
}
