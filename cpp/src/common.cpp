#include "simdex/common.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <cstdlib>
#include <thread>
#include <vector>

#include <pthread.h>
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

// OMP_NUM_THREADS, read once: its first entry ("4" or "4,2") when it is an integer in
// [1, 4096], else 0. Worker pools (gunicorn, Ray, joblib) set it to stop
// oversubscription, so it is the default when set.
int env_threads() {
  static const int value = [] {
    const char* s = std::getenv("OMP_NUM_THREADS");
    if (s == nullptr) return 0;
    char* end = nullptr;
    const long v = std::strtol(s, &end, 10);
    if (end == s || (*end != '\0' && *end != ',') || v < 1 || v > 4096) return 0;
    return static_cast<int>(v);
  }();
  return value;
}

int default_num_threads() {
  int n = g_num_threads.load();
  if (n > 0) return n;
  const int env = env_threads();
  return std::min(env > 0 ? env : affinity_cpus(), max_threads());
}

int max_threads() {
  // Fixed at first use: a cap that moved with the affinity mask would make a count
  // accepted once rejected later.
  static const int cap = std::max(kMinMaxThreads, 4 * affinity_cpus());
  return cap;
}

void set_num_threads(int n) {
  SIMDEX_CHECK_ARG(n <= max_threads(), "num_threads must be <= ", max_threads(),
                   " (4 x the CPUs this process may use, at least ", kMinMaxThreads, "), got ", n,
                   "; pass n <= 0 for the default");
  g_num_threads.store(n > 0 ? n : 0);
}

int resolve_num_threads(int requested) {
  return requested > 0 ? std::min(requested, max_threads()) : default_num_threads();
}

namespace {

// Persistent worker threads for parallel_for. A single-query search takes a few
// hundred microseconds, of which creating and joining threads took a measurable
// share; parked workers wake on a condition variable instead (no spinning, so
// idle workers never compete with the caller's other threads, e.g. TensorFlow's).
//
// One parallel_for owns the pool at a time; a concurrent or nested call (another
// Python thread, a callback) falls back to short-lived threads. The pool object is
// never destroyed (threads blocked at process exit are fine, a destroyed condition
// variable under them is not), and a forked child starts a fresh one (the parent's
// workers do not exist there).
class Pool {
 public:
  // Run job(tid) for tid in [1, nt) on pool threads and job(0) on the caller.
  // Returns false, running nothing, when the pool is busy.
  bool run(int nt, const std::function<void(int)>& job) {
    std::unique_lock<std::mutex> owner(owner_, std::try_to_lock);
    if (!owner.owns_lock()) return false;
    try {
      while (static_cast<int>(workers_.size()) < nt - 1) {
        const int tid = static_cast<int>(workers_.size()) + 1;
        workers_.emplace_back([this, tid] { loop(tid); });
        workers_.back().detach();
      }
    } catch (...) {
      // Could not start a thread: use the ones that exist.
      if (workers_.empty()) return false;
      nt = static_cast<int>(workers_.size()) + 1;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = &job;
      active_ = nt;
      pending_ = nt - 1;
      ++generation_;
    }
    wake_.notify_all();
    job(0);  // the caller's share; job catches its own exceptions
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return pending_ == 0; });
    job_ = nullptr;
    return true;
  }

 private:
  void loop(int tid) {
    std::uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (tid >= active_) continue;  // not needed for this job
        job = job_;
      }
      (*job)(tid);
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex owner_;  // held by the parallel_for using the pool
  std::mutex mu_;
  std::condition_variable wake_, done_;
  std::uint64_t generation_ = 0;
  const std::function<void(int)>* job_ = nullptr;
  int active_ = 0, pending_ = 0;
  std::vector<std::thread> workers_;
};

std::atomic<Pool*> g_pool{nullptr};

void reset_pool_in_child() { g_pool.store(nullptr); }  // leak: its threads are gone

Pool& pool() {
  Pool* p = g_pool.load();
  if (p != nullptr) return *p;
  static std::once_flag atfork_once;
  std::call_once(atfork_once, [] { pthread_atfork(nullptr, nullptr, reset_pool_in_child); });
  auto* fresh = new Pool();
  if (g_pool.compare_exchange_strong(p, fresh)) return *fresh;
  delete fresh;
  return *p;
}

}  // namespace

void parallel_for(std::int64_t n, int num_threads,
                  const std::function<void(std::int64_t, int)>& fn) {
  if (n <= 0) return;
  int nt = resolve_num_threads(num_threads);
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

  if (nt <= 1) {
    worker(0);
  } else if (!pool().run(nt, worker)) {
    // The pool is busy (a concurrent or nested call): short-lived threads.
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
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace simdex
