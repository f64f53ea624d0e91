#include "simdex/common.h"

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include <sched.h>

#include "simdex/threading.h"

namespace simdex {

namespace {
InterruptCallback* g_interrupt = nullptr;
std::atomic<int> g_num_threads{0};

int affinity_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc > 0 ? static_cast<int>(hc) : 1;
}
}  // namespace

void InterruptCallback::install(InterruptCallback* cb) { g_interrupt = cb; }

void InterruptCallback::check() {
  if (g_interrupt != nullptr && g_interrupt->want_interrupt()) throw Interrupted();
}

int default_num_threads() {
  int n = g_num_threads.load();
  return n > 0 ? n : affinity_cpus();
}

void set_num_threads(int n) { g_num_threads.store(n > 0 ? n : 0); }

void parallel_for(std::int64_t n, int num_threads,
                  const std::function<void(std::int64_t, int)>& fn) {
  if (n <= 0) return;
  int nt = num_threads > 0 ? num_threads : default_num_threads();
  if (static_cast<std::int64_t>(nt) > n) nt = static_cast<int>(n);

  std::atomic<std::int64_t> next{0};
  std::atomic<bool> stop{false};
  std::exception_ptr error;
  std::mutex error_mutex;

  auto worker = [&](int tid) {
    try {
      while (!stop.load(std::memory_order_relaxed)) {
        if (tid == 0) InterruptCallback::check();
        std::int64_t i = next.fetch_add(1);
        if (i >= n) break;
        fn(i, tid);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      stop.store(true);
    }
  };

  std::vector<std::thread> threads;
  threads.reserve(nt - 1);
  try {
    for (int t = 1; t < nt; ++t) threads.emplace_back(worker, t);
  } catch (...) {
    // Could not start a thread (resource limits): the started ones and the caller
    // still finish all the work.
  }
  worker(0);
  for (auto& th : threads) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace simdex
