// simdex CUDA emulator: the device-side language, force-included (-include) before
// every CUDA source compiled for the emulator (cuda/emu/units/*.cpp).
//
// Execution model (cuda/emu/src/scheduler.cpp): the blocks of a grid run one after
// another; the threads of a block run as fibers on the calling thread, each one
// until it reaches a barrier (__syncthreads*, a warp collective) or ends, in an
// order that alternates between ascending and descending thread index. A barrier
// releases when every live thread of the block (or every lane of the warp mask)
// has reached it, so a missing __syncthreads / __syncwarp makes one thread read
// shared memory before another wrote it, and a barrier some threads never reach
// is reported as a deadlock instead of hanging. __shared__ variables are function
// statics (one block runs at a time) kept in their own linker section, which is
// refilled with 0xFF before each block, as is dynamic shared memory: what a block
// reads before writing is NaN / -1, never a value left by the previous block.
#pragma once

#include <math.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "simdex_emu/runtime.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static __attribute__((section("simdex_emu_shared")))

namespace simdex_emu {

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

struct LaunchConfig {
  dim3 grid;
  dim3 block;
  std::size_t smem = 0;
};

/// Run `body` once per thread of every block of `cfg` with the semantics above.
/// Returns cudaSuccess, or cudaErrorLaunchFailure after printing why (deadlock,
/// a bad warp collective, ...).
cudaError_t run_kernel(const char* name, const LaunchConfig& cfg, const std::function<void()>& body);

/// The current block's dynamic shared memory (cfg.smem bytes, 256-byte aligned).
unsigned char* dynamic_shared_base();

enum WarpOp : int { kSyncWarp = 0, kShflIdx, kShflXor, kBallot };
enum BlockOp : int { kSyncOnly = 0, kSyncOr };

/// __syncthreads* at source line file:line (the barrier's identity: every thread of the
/// block must wait at the same one).
int block_barrier_op(BlockOp op, int predicate, const char* file, int line);
std::uint64_t warp_collective(WarpOp op, unsigned mask, std::uint64_t value, int arg, int width);

template <typename T>
std::uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp shuffles move at most 8 bytes");
  std::uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}

template <typename T>
T from_bits(std::uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

void check_launch(const char* name, const LaunchConfig& cfg, bool* ok);
void check_pointer_argument(const char* name, int index, const void* p, bool* ok);

template <typename... P>
struct Launcher {
  void (*kernel)(P...);
  LaunchConfig cfg;
  cudaStream_t stream;
  const char* name;

  template <typename... A>
  void operator()(A&&... a) const {
    static_assert(sizeof...(A) == sizeof...(P), "wrong number of kernel arguments");
    std::tuple<std::decay_t<P>...> args(std::forward<A>(a)...);
    bool ok = true;
    check_launch(name, cfg, &ok);
    check_pointers(args, &ok, std::index_sequence_for<P...>{});
    if (!ok) return;
    auto k = kernel;
    const LaunchConfig c = cfg;
    const char* n = name;
    enqueue(stream, n, [k, c, n, args]() {
      return run_kernel(n, c, [&]() { std::apply(k, args); });
    });
  }

 private:
  template <typename Tuple, std::size_t... I>
  void check_pointers(const Tuple& t, bool* ok, std::index_sequence<I...>) const {
    (check_one(static_cast<int>(I), std::get<I>(t), ok), ...);
  }
  template <typename T>
  void check_one(int i, const T& v, bool* ok) const {
    if constexpr (std::is_pointer_v<T>) {
      if (v != nullptr) check_pointer_argument(name, i, static_cast<const void*>(v), ok);
    }
  }
};

template <typename... P>
Launcher<P...> launch(dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream, void (*kernel)(P...),
                      const char* name) {
  return Launcher<P...>{kernel, LaunchConfig{grid, block, smem}, stream, name};
}

}  // namespace simdex_emu

using simdex_emu::dim3;
using simdex_emu::uint3;

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

#define SIMDEX_LAUNCH(grid, block, smem, stream, ...) \
  ::simdex_emu::launch(grid, block, smem, stream, __VA_ARGS__, #__VA_ARGS__)
#define SIMDEX_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::simdex_emu::dynamic_shared_base())

// ---- vector types --------------------------------------------------------------------
struct alignas(16) float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

// ---- math and bit intrinsics -----------------------------------------------------------
inline float __int_as_float(int v) {
  float f;
  std::memcpy(&f, &v, 4);
  return f;
}
inline int __float_as_int(float f) {
  int v;
  std::memcpy(&v, &f, 4);
  return v;
}
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }

template <typename T>
inline T min(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
inline T max(T a, T b) {
  return a < b ? b : a;
}

// ---- atomics (fibers of one block never run at the same time) -----------------------------
template <typename T>
inline T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}

// ---- barriers and warp collectives -------------------------------------------------------
// Macros, so that each barrier is known by its source line: optimisers may duplicate
// the code around one barrier, so its machine address would not identify it.
#define __syncthreads() (void)::simdex_emu::block_barrier_op(::simdex_emu::kSyncOnly, 0, __FILE__, __LINE__)
#define __syncthreads_or(p) ::simdex_emu::block_barrier_op(::simdex_emu::kSyncOr, (p), __FILE__, __LINE__)
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  simdex_emu::warp_collective(simdex_emu::kSyncWarp, mask, 0, 0, 32);
}
inline unsigned __ballot_sync(unsigned mask, int p) {
  return static_cast<unsigned>(simdex_emu::warp_collective(simdex_emu::kBallot, mask, p != 0, 0, 32));
}
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return simdex_emu::from_bits<T>(
      simdex_emu::warp_collective(simdex_emu::kShflIdx, mask, simdex_emu::to_bits(v), src, width));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return simdex_emu::from_bits<T>(
      simdex_emu::warp_collective(simdex_emu::kShflXor, mask, simdex_emu::to_bits(v), lane_mask, width));
}
