// Native tests of the C++ core, run under AddressSanitizer + UBSan by `make check-native`.
// They exercise the code paths the Python tests reach (tiny path, GEMV, tiled GEMM,
// chunked merge, FlatIndex add/remove/replace) against a naive double-precision oracle.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <vector>

#include <atomic>
#include <chrono>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include <csignal>
#include <sys/wait.h>
#include <unistd.h>

#include "simdex/exact_knn.h"
#include "simdex/flat_index.h"
#include "simdex/rwlock.h"
#include "simdex/threading.h"
#include "simdex/topk.h"
#include "../src/fp16.h"

namespace {

int failures = 0;

#define EXPECT(cond)                                                   \
  do {                                                                 \
    if (!(cond)) {                                                     \
      std::fprintf(stderr, "FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                      \
    }                                                                  \
  } while (0)

std::vector<float> random_matrix(std::int64_t n, std::int64_t d, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist;
  std::vector<float> x(static_cast<std::size_t>(n * d));
  for (auto& v : x) v = dist(rng);
  return x;
}

double oracle(const float* q, const float* x, std::int64_t d, simdex::Metric m) {
  double ip = 0, qq = 0, xx = 0;
  for (std::int64_t i = 0; i < d; ++i) {
    ip += double(q[i]) * x[i];
    qq += double(q[i]) * q[i];
    xx += double(x[i]) * x[i];
  }
  switch (m) {
    case simdex::Metric::kInnerProduct: return -ip;
    case simdex::Metric::kCosine:
      return (qq == 0 || xx == 0) ? 1.0 : 1.0 - ip / std::sqrt(qq * xx);
    case simdex::Metric::kSquaredL2: return std::max(0.0, qq + xx - 2 * ip);
    case simdex::Metric::kL2: return std::sqrt(std::max(0.0, qq + xx - 2 * ip));
  }
  return 0;
}

void check_knn(std::int64_t nq, std::int64_t nb, std::int64_t d, std::int64_t k, simdex::Metric m,
               int threads) {
  auto q = random_matrix(nq, d, 1 + nq);
  auto x = random_matrix(nb, d, 2 + nb);
  std::vector<float> D(nq * k);
  std::vector<simdex::idx_t> I(nq * k);
  simdex::KnnParams p;
  p.num_threads = threads;
  p.query_block = 16;
  p.base_block = 64;
  simdex::knn_exact(q.data(), nq, x.data(), nb, d, k, m, nullptr, nullptr, D.data(), I.data(), p);
  for (std::int64_t i = 0; i < nq; ++i) {
    std::vector<double> all(nb);
    for (std::int64_t j = 0; j < nb; ++j) all[j] = oracle(&q[i * d], &x[j * d], d, m);
    std::vector<double> sorted = all;
    std::sort(sorted.begin(), sorted.end());
    for (std::int64_t r = 0; r < k; ++r) {
      if (r >= nb) {
        EXPECT(I[i * k + r] == -1);
        EXPECT(std::isinf(D[i * k + r]));
        continue;
      }
      double tol = 1e-3 * (1 + std::fabs(sorted[r]));
      EXPECT(std::fabs(D[i * k + r] - sorted[r]) < tol);
      EXPECT(I[i * k + r] >= 0 && I[i * k + r] < nb);
      if (I[i * k + r] >= 0 && I[i * k + r] < nb) EXPECT(std::fabs(all[I[i * k + r]] - sorted[r]) < tol);
    }
  }
}

void test_knn() {
  const simdex::Metric metrics[] = {simdex::Metric::kInnerProduct, simdex::Metric::kCosine,
                                    simdex::Metric::kL2, simdex::Metric::kSquaredL2};
  for (auto m : metrics) {
    check_knn(3, 5, 4, 8, m, 1);      // tiny path, k > nb
    check_knn(1, 1000, 17, 5, m, 2);  // GEMV, base split over threads
    check_knn(50, 700, 33, 10, m, 3); // tiled GEMM, several query blocks
    check_knn(2, 3000, 8, 20, m, 4);  // few queries: chunked base + merge
  }
}

void test_flat_index() {
  const std::int64_t d = 12, n = 400;
  auto x = random_matrix(n, d, 7);
  std::vector<simdex::idx_t> ids(n);
  for (std::int64_t i = 0; i < n; ++i) ids[i] = 1000 + 3 * i;
  simdex::FlatIndex index(d, simdex::Metric::kCosine);
  index.add(x.data(), n, ids.data(), false);
  EXPECT(index.size() == n);
  bool threw = false;
  try {
    index.add(x.data(), 1, ids.data(), false);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  EXPECT(threw);
  std::vector<simdex::idx_t> gone = {1000, 1000 + 3 * 399, 1000 + 3 * 200};
  index.remove(gone.data(), 3);
  EXPECT(index.size() == n - 3);
  threw = false;
  try {
    index.remove(gone.data(), 1);
  } catch (const simdex::UnknownId& e) {
    threw = e.id == 1000;
  }
  EXPECT(threw);
  std::vector<float> D(n * 5);
  std::vector<simdex::idx_t> I(n * 5);
  index.search(x.data(), n, 5, D.data(), I.data());
  for (std::int64_t i = 0; i < n * 5; ++i)
    EXPECT(I[i] != gone[0] && I[i] != gone[1] && I[i] != gone[2]);
  // query i finds itself first unless it was removed
  EXPECT(I[1 * 5] == ids[1]);
  std::vector<float> v(d);
  index.get_vectors(&ids[5], 1, v.data());
  for (std::int64_t j = 0; j < d; ++j) EXPECT(v[j] == x[5 * d + j]);
  index.add(x.data(), 1, &ids[5], true);  // replace id 5's vector by row 0's
  index.get_vectors(&ids[5], 1, v.data());
  for (std::int64_t j = 0; j < d; ++j) EXPECT(v[j] == x[j]);
  index.reset();
  EXPECT(index.size() == 0);
}

void test_heap_ties() {
  std::vector<float> vals(3);
  std::vector<simdex::idx_t> ids(3);
  simdex::heap_init(3, vals.data(), ids.data());
  const float scores[] = {1, 1, 1, 1, 2};
  const simdex::idx_t cand[] = {9, 4, 7, 5, 8};
  simdex::heap_push_block(scores, 5, cand, 0, 3, vals.data(), ids.data());
  simdex::heap_sort_best_first(3, vals.data(), ids.data());
  EXPECT(ids[0] == 8 && ids[1] == 4 && ids[2] == 5);
}

// The float16 pre-filter (FlatIndex default) against the float32-only FlatIndex, after
// removals that move rows between panels, for each metric and both kernel variants.
void test_prefilter() {
  const std::int64_t d = 13, n = 5000, k = 7, nq = 4;  // odd d: kernel tails
  auto x = random_matrix(n, d, 11);
  for (std::int64_t j = 0; j < d; ++j) x[20 * d + j] = 0.0f;  // a zero row
  auto q = random_matrix(nq, d, 12);
  std::vector<simdex::idx_t> ids(n);
  for (std::int64_t i = 0; i < n; ++i) ids[i] = i;
  std::vector<simdex::idx_t> gone;
  for (std::int64_t i = 0; i < n; i += 7) gone.push_back(i);
  const char* levels[] = {"auto", "avx2"};
  const simdex::Metric metrics[] = {simdex::Metric::kInnerProduct, simdex::Metric::kCosine,
                                    simdex::Metric::kL2, simdex::Metric::kSquaredL2};
  for (const char* level : levels) {
    if (!simdex::fp16::set_level(level)) continue;
    for (auto m : metrics) {
      simdex::FlatIndex fast(d, m, true), ref(d, m, false);
      EXPECT(fast.fp16_prefilter() == simdex::fp16::supported());
      for (auto* index : {&fast, &ref}) {
        index->add(x.data(), n, ids.data(), false);
        index->remove(gone.data(), static_cast<std::int64_t>(gone.size()));
        index->add(x.data(), 3, gone.data() + 10, false);  // re-add three removed ids
      }
      std::vector<float> Da(nq * k), Db(nq * k);
      std::vector<simdex::idx_t> Ia(nq * k), Ib(nq * k);
      fast.search(q.data(), nq, k, Da.data(), Ia.data());
      ref.search(q.data(), nq, k, Db.data(), Ib.data());
      for (std::int64_t i = 0; i < nq * k; ++i) {
        EXPECT(Ia[i] == Ib[i]);
        EXPECT(std::fabs(Da[i] - Db[i]) <= 1e-4f * (1.0f + std::fabs(Db[i])));
      }
      EXPECT(fast.prefilter_stats().queries == (fast.fp16_prefilter() ? nq : 0));
    }
  }
  simdex::fp16::set_level("auto");
}

}  // namespace

// RwLock: exclusion, a writer is not starved by a stream of readers, and a child
// forked while a reader holds the lock can take it for writing.
void test_rwlock() {
  simdex::RwLock mu;
  std::atomic<bool> stop{false};
  std::atomic<int> inside{0}, bad{0};
  std::int64_t value = 0;
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t)
    readers.emplace_back([&] {
      while (!stop.load()) {
        std::shared_lock<simdex::RwLock> r(mu);
        ++inside;
        if (value % 2 != 0) ++bad;  // a writer is half way
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        --inside;
      }
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  double worst_ms = 0;
  for (int i = 0; i < 50; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    {
      std::unique_lock<simdex::RwLock> w(mu);
      if (inside.load() != 0) ++bad;
      ++value;
      ++value;
    }
    worst_ms = std::max(worst_ms, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  stop.store(true);
  for (auto& t : readers) t.join();
  EXPECT(bad.load() == 0);
  EXPECT(value == 100);
  // Each write waits for the readers inside (200 us each), never for new ones; a
  // generous bound for loaded machines and sanitizers.
  EXPECT(worst_ms < 1000.0);

  // Fork while another thread holds a read lock: the child can write.
  std::atomic<bool> holding{false}, release{false};
  std::thread holder([&] {
    std::shared_lock<simdex::RwLock> r(mu);
    holding.store(true);
    while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  while (!holding.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const pid_t pid = fork();
  if (pid == 0) {
    std::unique_lock<simdex::RwLock> w(mu);  // would hang without the fork handlers
    _exit(0);
  }
  int status = -1;
  for (int i = 0; i < 5000; ++i) {  // 5 s
    if (waitpid(pid, &status, WNOHANG) == pid) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (waitpid(pid, &status, WNOHANG) == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    status = -1;
  }
  EXPECT(status == 0);
  release.store(true);
  holder.join();
}

// Thread counts are bounded with a clear error.
void test_thread_bounds() {
  bool threw = false;
  try {
    simdex::set_num_threads(1000000000);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  EXPECT(threw);
  EXPECT(simdex::resolve_num_threads(1000000000) == simdex::max_threads());
  EXPECT(simdex::max_threads() >= simdex::kMinMaxThreads);
}

// The tie rule holds whichever path runs: duplicated rows, every batch size.
void test_batch_ties() {
  const std::int64_t nb = 3000, d = 16, k = 7, nq = 16;
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> v(-2, 2);
  std::vector<float> x(static_cast<std::size_t>(nb * d)), q(static_cast<std::size_t>(nq * d));
  for (auto& e : x) e = static_cast<float>(v(rng));
  for (auto& e : q) e = static_cast<float>(v(rng));
  for (simdex::Metric m : {simdex::Metric::kCosine, simdex::Metric::kL2, simdex::Metric::kInnerProduct}) {
    std::vector<float> Db(nq * k), D1(k);
    std::vector<simdex::idx_t> Ib(nq * k), I1(k);
    simdex::knn_exact(q.data(), nq, x.data(), nb, d, k, m, nullptr, nullptr, Db.data(), Ib.data());
    for (std::int64_t i = 0; i < nq; ++i) {
      simdex::knn_exact(q.data() + i * d, 1, x.data(), nb, d, k, m, nullptr, nullptr, D1.data(), I1.data());
      for (std::int64_t r = 0; r < k; ++r) {
        EXPECT(I1[r] == Ib[i * k + r]);
        if (r > 0 && D1[r] == D1[r - 1]) EXPECT(I1[r] > I1[r - 1]);
      }
    }
  }
}

int main() {
  test_knn();
  test_flat_index();
  test_heap_ties();
  test_prefilter();
  test_rwlock();
  test_thread_bounds();
  test_batch_ties();
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("simdex native tests: 7 passed, 0 failed\n");
  return 0;
}
