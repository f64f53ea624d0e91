// Native tests of the C++ core, run under AddressSanitizer + UBSan by `make check-native`.
// They exercise the code paths the Python tests reach (tiny path, GEMV, tiled GEMM,
// chunked merge, FlatIndex add/remove/replace) against a naive double-precision oracle.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
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
#include "simdex/id_filter.h"
#include "simdex/lsh.h"
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

// Filters (sparse gather and masked scan), range search and a read-only view, on
// the tiny, GEMV and tiled paths, against the unfiltered search / a brute-force scan.
void test_filters_range_view() {
  const std::int64_t d = 16, n = 3000, nq = 6;
  auto x = random_matrix(n, d, 11);
  auto q = random_matrix(nq, d, 12);
  std::vector<simdex::idx_t> ids(n);
  for (std::int64_t i = 0; i < n; ++i) ids[i] = 7 * i + 1;
  for (auto metric : {simdex::Metric::kCosine, simdex::Metric::kL2, simdex::Metric::kInnerProduct}) {
    simdex::FlatIndex index(d, metric);
    index.add(x.data(), n, ids.data(), false);
    std::unique_ptr<simdex::FlatIndex> view(simdex::FlatIndex::view(d, metric, x.data(), ids.data(), n));
    for (std::int64_t keep_every : {10, 2}) {  // 10%: gather path; 50%+: masked scan
      std::vector<simdex::idx_t> allow;
      for (std::int64_t i = 0; i < n; i += keep_every) allow.push_back(ids[i]);
      if (keep_every == 2) allow.push_back(ids[1]);
      std::sort(allow.begin(), allow.end());
      simdex::IdFilter f{allow.data(), static_cast<std::int64_t>(allow.size()), false};
      for (std::int64_t k : {1, 7, 400}) {
        std::vector<float> D(nq * k), Dv(nq * k), Dr(nq * k);
        std::vector<simdex::idx_t> I(nq * k), Iv(nq * k), Ir(nq * k);
        for (std::int64_t rows : {std::int64_t{1}, nq}) {
          index.search(q.data(), rows, k, D.data(), I.data(), simdex::KnnParams(), &f);
          view->search(q.data(), rows, k, Dv.data(), Iv.data(), simdex::KnnParams(), &f);
          // reference: the filtered rows alone, searched without a filter
          std::vector<float> xs;
          std::vector<simdex::idx_t> is;
          for (std::int64_t i = 0; i < n; ++i)
            if (f.allows(ids[i])) {
              xs.insert(xs.end(), x.begin() + i * d, x.begin() + (i + 1) * d);
              is.push_back(ids[i]);
            }
          simdex::knn_exact(q.data(), rows, xs.data(), static_cast<std::int64_t>(is.size()), d, k, metric,
                            nullptr, is.data(), Dr.data(), Ir.data());
          for (std::int64_t j = 0; j < rows * k; ++j) {
            // ids may differ only between (near-)equal distances; every id must pass
            EXPECT((I[j] < 0) == (Ir[j] < 0) && (Iv[j] < 0) == (Ir[j] < 0));
            EXPECT(I[j] < 0 || (f.allows(I[j]) && f.allows(Iv[j])));
            EXPECT(Ir[j] < 0 || std::fabs(D[j] - Dr[j]) <= 1e-4f * (1 + std::fabs(Dr[j])));
            EXPECT(Ir[j] < 0 || std::fabs(Dv[j] - Dr[j]) <= 1e-4f * (1 + std::fabs(Dr[j])));
          }
        }
      }
      simdex::IdFilter deny{allow.data(), static_cast<std::int64_t>(allow.size()), true};
      std::vector<float> D(nq * 5);
      std::vector<simdex::idx_t> I(nq * 5);
      index.search(q.data(), nq, 5, D.data(), I.data(), simdex::KnnParams(), &deny);
      for (auto id : I) EXPECT(id >= 0 && !std::binary_search(allow.begin(), allow.end(), id));
    }
    // range search: compare with every row's distance from a k = n search
    std::vector<float> Dall(nq * n);
    std::vector<simdex::idx_t> Iall(nq * n);
    index.search(q.data(), nq, n, Dall.data(), Iall.data());
    const float radius = 0.5f * (Dall[n / 20] + Dall[n / 20 + 1]);  // ~5% of query 0's rows
    simdex::RangeResult r, rv;
    index.range_search(q.data(), nq, radius, r);
    view->range_search(q.data(), nq, radius, rv);
    EXPECT(r.lims == rv.lims && r.labels == rv.labels);
    for (std::int64_t i = 0; i < nq; ++i) {
      std::int64_t expect = 0;
      for (std::int64_t j = 0; j < n; ++j) expect += Dall[i * n + j] <= radius;
      EXPECT(r.lims[i + 1] - r.lims[i] == expect);
      for (std::int64_t j = r.lims[i]; j < r.lims[i + 1]; ++j) EXPECT(r.distances[j] <= radius);
    }
    bool threw = false;
    try {
      view->add(x.data(), 1, ids.data(), true);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    EXPECT(threw && view->size() == n);
    std::vector<float> v(d);
    view->get_vectors(&ids[17], 1, v.data());
    for (std::int64_t j = 0; j < d; ++j) EXPECT(v[j] == x[17 * d + j]);
  }
}

// LshIndex: the id filter is applied where candidates are admitted on all three paths
// (classic buckets, sketch-filtered buckets, sketch scan), and range search keeps only
// admitted candidates within the radius.
void test_lsh_filter_range() {
  const std::int64_t n = 500, d = 16, nq = 6, L = 2, K = 3, k = 10;
  std::mt19937 rng(11);
  std::normal_distribution<float> g;
  std::vector<float> x(n * d), q(nq * d), planes(L * K * d);
  for (auto& v : x) v = g(rng);
  for (auto& v : q) v = g(rng);
  for (auto& v : planes) v = g(rng);
  std::vector<simdex::idx_t> ids(n);
  for (std::int64_t i = 0; i < n; ++i) ids[i] = 3 * i + 1;
  std::vector<simdex::idx_t> allow;
  for (std::int64_t i = 0; i < n; i += 7) allow.push_back(ids[i]);
  simdex::IdFilter f{allow.data(), static_cast<std::int64_t>(allow.size()), false};
  simdex::LshOptions opt;
  opt.sketch_words = 2;
  opt.sketch_planes.resize(static_cast<std::size_t>(64 * opt.sketch_words * d));
  for (auto& v : opt.sketch_planes) v = g(rng);
  simdex::LshIndex index(d, L, K, planes.data(), simdex::Metric::kL2, opt);
  index.add(x.data(), n, ids.data(), false);
  for (int mode = 0; mode < 3; ++mode) {  // classic, sketch buckets, scan
    simdex::LshSearchParams p;
    p.num_probes = 8;  // every bucket of K = 3
    p.refine = 0;
    p.rerank = mode == 0 ? 0 : 4 * n;
    p.scan = mode == 2;
    p.filter = &f;
    std::vector<float> D(nq * k);
    std::vector<simdex::idx_t> I(nq * k);
    std::vector<std::int64_t> C(nq);
    index.search(q.data(), nq, k, p, D.data(), I.data(), C.data());
    for (std::int64_t i = 0; i < nq; ++i) EXPECT(C[i] == static_cast<std::int64_t>(allow.size()));
    for (auto id : I) EXPECT(id >= 0 && std::binary_search(allow.begin(), allow.end(), id));
    simdex::RangeResult r;
    const float radius = D[k / 2];  // query 0: at least k/2 + 1 hits
    index.range_search(q.data(), nq, radius, p, r);
    EXPECT(static_cast<std::int64_t>(r.lims.size()) == nq + 1);
    EXPECT(r.lims[1] - r.lims[0] >= k / 2 + 1);
    for (std::size_t j = 0; j < r.labels.size(); ++j) {
      EXPECT(r.distances[j] <= radius);
      EXPECT(std::binary_search(allow.begin(), allow.end(), r.labels[j]));
    }
    // The same candidates as the k-NN search: its best k/2 + 1 of query 0 are all in range.
    for (std::int64_t j = 0; j <= k / 2; ++j)
      EXPECT(std::find(r.labels.begin() + r.lims[0], r.labels.begin() + r.lims[1], I[j]) !=
             r.labels.begin() + r.lims[1]);
  }
}

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
  test_filters_range_view();
  test_lsh_filter_range();
  test_rwlock();
  test_thread_bounds();
  test_batch_ties();
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("simdex native tests: 9 passed, 0 failed\n");
  return 0;
}
