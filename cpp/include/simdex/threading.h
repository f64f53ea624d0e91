// Minimal parallel-for for the native core.
//
// Workers catch their exceptions; the first one is rethrown on the calling thread
// after all workers have stopped (as hnswlib's ParallelFor does). The calling thread
// takes part in the work and is the only one that polls the interrupt callback.
#pragma once

#include <cstdint>
#include <functional>

namespace simdex {

/// Number of threads used when a call passes num_threads <= 0: set_num_threads' value,
/// else OMP_NUM_THREADS (first entry, read at the first call) when it is set to an
/// integer in [1, 4096], else the CPUs this process may run on (sched_getaffinity).
int default_num_threads();
/// Set the default thread count; n <= 0 restores the automatic value.
/// @throws std::invalid_argument if n > max_threads().
void set_num_threads(int n);

/// Smallest value max_threads() takes, whatever the CPU count.
inline constexpr int kMinMaxThreads = 64;
/// Largest thread count simdex accepts: 4 x the CPUs this process may use (at start),
/// at least kMinMaxThreads. Per-thread buffers make memory grow with the count, so an
/// absurd request (10**8) is an error rather than gigabytes of buffers.
int max_threads();
/// The thread count a call with num_threads = requested uses: requested (clamped to
/// max_threads()) when > 0, else default_num_threads().
int resolve_num_threads(int requested);

/// Run fn(i, thread_id) for i in [0, n) on up to num_threads threads (<= 0: default).
/// Work is handed out dynamically one index at a time, so n should be a number of
/// blocks, not of elements. Thread 0 is the caller; between items it polls the
/// interrupt callback and, when it fires, the other workers stop at their next item
/// and simdex::Interrupted is thrown. Any worker exception is rethrown here.
///
/// Workers come from a persistent pool parked on a condition variable (created on
/// first use, recreated in a forked child); a call made while the pool is busy
/// (concurrent or nested) uses short-lived threads instead.
///
/// The BLAS simdex links runs single-threaded (see blas.cpp), so BLAS parallelism
/// never nests inside ours.
void parallel_for(std::int64_t n, int num_threads,
                  const std::function<void(std::int64_t i, int thread_id)>& fn);

}  // namespace simdex
