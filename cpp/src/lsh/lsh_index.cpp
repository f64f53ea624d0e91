// LshIndex: multi-table sign-projection buckets, multi-probe, exact re-rank.
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <thread>

#include "simdex/blas.h"
#include "simdex/exact_knn.h"
#include "simdex/flat_index.h"  // UnknownId
#include "simdex/lsh.h"
#include "simdex/threading.h"
#include "simdex/topk.h"
#include "../arch.h"
#include "../simd.h"

namespace simdex {

namespace {

constexpr std::int64_t kQueryBlock = 32;  // queries hashed by one GEMM in search
constexpr std::size_t kMinDelta = 4096;   // delta size below which it is never merged
constexpr int kMaxPrefixBits = 20;
constexpr int kMaxDirectBits = 24;  // direct offsets: at most 64 MiB per table

// ---- distance kernels. The float32 dot is shared with exact search (simd.h).
// <q, c> for a float query and an int8 row, both padded to a multiple of 16 (zeros).
float dot_i8_scalar(const float* q, const std::int8_t* c, std::int64_t n) {
  float s0 = 0, s1 = 0;
  for (std::int64_t j = 0; j < n; j += 2) {
    s0 += q[j] * c[j];
    s1 += q[j + 1] * c[j + 1];
  }
  return s0 + s1;
}

#if SIMDEX_X86
__attribute__((target("avx2,fma"))) float dot_i8_avx2(const float* q, const std::int8_t* c, std::int64_t n) {
  __m256 s = _mm256_setzero_ps();
  for (std::int64_t j = 0; j < n; j += 8) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(c + j));
    s = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), s);
  }
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  return _mm_cvtss_f32(h);
}

__attribute__((target("avx512f"))) float dot_i8_avx512(const float* q, const std::int8_t* c, std::int64_t n) {
  __m512 s = _mm512_setzero_ps();
  for (std::int64_t j = 0; j < n; j += 16) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + j));
    s = _mm512_fmadd_ps(_mm512_loadu_ps(q + j), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)), s);
  }
  return _mm512_reduce_add_ps(s);
}
#endif  // SIMDEX_X86

float sqdist_scalar(const float* a, const float* b, std::int64_t d) {
  float s = 0;
  for (std::int64_t j = 0; j < d; ++j) {
    const float t = a[j] - b[j];
    s += t * t;
  }
  return s;
}


using DotI8Fn = float (*)(const float*, const std::int8_t*, std::int64_t);
DotI8Fn pick_dot_i8() {
#if SIMDEX_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return dot_i8_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return dot_i8_avx2;
#endif
  return dot_i8_scalar;
}
const DotI8Fn g_dot_i8 = pick_dot_i8();

// Row layout of the int8 copy (stride bytes, a multiple of 16): d codes of the unit
// vector x*inv, zeros, and the float scale in the last 4 bytes, so one cache line holds
// everything the pre-filter needs for d <= 60. The query is zero-padded to the stride,
// so the scale bytes contribute 0 to the dot product.
void quantize_unit_row(const float* x, std::int64_t d, float inv, std::int64_t stride, std::int8_t* out) {
  float mx = 0;
  for (std::int64_t j = 0; j < d; ++j) mx = std::max(mx, std::fabs(x[j] * inv));
  std::memset(out, 0, static_cast<std::size_t>(stride));
  const float scale = mx / 127.0f;
  std::memcpy(out + stride - 4, &scale, sizeof(float));
  if (mx == 0) return;
  const float f = 127.0f / mx;
  for (std::int64_t j = 0; j < d; ++j)
    out[j] = static_cast<std::int8_t>(std::max(-127.0f, std::min(127.0f, std::nearbyint(x[j] * inv * f))));
}

inline float row_scale(const std::int8_t* row, std::int64_t stride) {
  float s;
  std::memcpy(&s, row + stride - 4, sizeof(float));
  return s;
}

// Per-OS-thread visited bitmap (one bit per slot: 50 KB for 400k vectors, so it
// stays in L1/L2). It is all zero between queries: a query clears the words it set.
// The caller's thread reuses its bitmap across calls.
thread_local std::vector<std::uint64_t> t_visited;

// Run fn(t) for t in [0, n) on up to nt plain threads, with no interrupt checks:
// used for table updates, which must not stop half way.
template <class F>
void run_uninterruptible(std::int64_t n, int nt, F&& fn) {
  nt = static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(nt, n)));
  std::atomic<std::int64_t> next{0};
  std::exception_ptr err;
  std::mutex err_mu;
  auto work = [&] {
    for (std::int64_t i; (i = next.fetch_add(1)) < n;) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> g(err_mu);
        if (!err) err = std::current_exception();
      }
    }
  };
  std::vector<std::thread> th;
  try {
    for (int t = 1; t < nt; ++t) th.emplace_back(work);
  } catch (...) {
  }
  work();
  for (auto& t : th) t.join();
  if (err) std::rethrow_exception(err);
}

}  // namespace

void* huge_alloc(std::size_t bytes) {
  constexpr std::size_t kHuge = std::size_t{2} << 20;
  void* p = nullptr;
  if (bytes >= 2 * kHuge) {
    p = std::aligned_alloc(kHuge, (bytes + kHuge - 1) / kHuge * kHuge);
    if (p) madvise(p, (bytes + kHuge - 1) / kHuge * kHuge, MADV_HUGEPAGE);  // a hint; failure is harmless
  } else {
    p = std::malloc(bytes ? bytes : 1);
  }
  if (!p) throw std::bad_alloc();
  return p;
}

LshIndex::LshIndex(std::int64_t d, std::int64_t num_tables, int hash_bits, const float* planes,
                   Metric metric)
    : d_(d), L_(num_tables), K_(hash_bits), metric_(metric) {
  SIMDEX_CHECK_ARG(d >= 1, "dim must be >= 1, got ", d);
  SIMDEX_CHECK_ARG(num_tables >= 1 && num_tables <= 4096, "num_tables must be in [1, 4096], got ",
                   num_tables);
  SIMDEX_CHECK_ARG(hash_bits >= 1 && hash_bits <= kMaxHashBits, "hash_bits must be in [1, 64], got ",
                   hash_bits);
  SIMDEX_CHECK_ARG(planes != nullptr, "planes must not be null");
  planes_.assign(planes, planes + num_tables * hash_bits * d);
  code_stride_ = (d + 4 + 15) / 16 * 16;
  tables_.resize(static_cast<std::size_t>(L_));
  for (auto& t : tables_) build_prefix(t);
}

std::int64_t LshIndex::size() const {
  std::shared_lock<RwLock> lock(mutex_);
  return static_cast<std::int64_t>(slot_of_.size());
}

void LshIndex::build_prefix(Table& t) const {
  t.prefix.clear();
  t.prefix_bits = 0;
  if (t.direct) return;
  const std::size_t nk = t.keys.size();
  int pb = 0;
  while (pb < kMaxPrefixBits && pb < K_ && (std::size_t{1} << (pb + 1)) <= nk) ++pb;
  t.prefix_bits = pb;
  const std::size_t np = std::size_t{1} << pb;
  t.prefix.assign(np + 1, 0);
  // prefix[p] = first key whose top pb bits are >= p.
  std::size_t i = 0;
  for (std::size_t p = 0; p <= np; ++p) {
    while (i < nk && (pb == 0 ? 0 : (t.keys[i] >> (K_ - pb))) < p) ++i;
    t.prefix[p] = static_cast<std::uint32_t>(p == np ? nk : i);
  }
}

template <class F>
void LshIndex::for_each_group(const Table& t, F&& f) const {
  if (t.direct) {
    const std::size_t nb = t.offs.size() - 1;
    for (std::size_t c = 0; c < nb; ++c)
      if (t.offs[c + 1] > t.offs[c]) f(static_cast<std::uint64_t>(c), t.offs[c], t.offs[c + 1]);
  } else {
    for (std::size_t i = 0; i < t.keys.size(); ++i) f(t.keys[i], t.offs[i], t.offs[i + 1]);
  }
}

void LshIndex::finalize(Table& t, std::vector<std::uint64_t>& keys, BigVector<std::uint32_t>& offs,
                        BigVector<std::uint32_t>& slots) const {
  // Direct addressing (offsets indexed by the code itself: one lookup, no search)
  // when the 2^K offsets cost at most ~4 entries' worth of memory.
  t.direct = direct_pays(slots.size());
  if (t.direct) {
    const std::size_t nb = std::size_t{1} << K_;
    t.offs.assign(nb + 1, 0);
    std::size_t i = 0;
    for (std::size_t c = 0; c < nb; ++c) {
      if (i < keys.size() && keys[i] == c) ++i;
      t.offs[c + 1] = offs[i];
    }
    t.keys.clear();
    t.keys.shrink_to_fit();
  } else {
    t.keys.swap(keys);
    t.offs.swap(offs);
  }
  t.slots.swap(slots);
  build_prefix(t);
}

bool LshIndex::direct_pays(std::size_t entries) const {
  return K_ <= kMaxDirectBits && (std::size_t{1} << K_) <= 4 * std::max<std::size_t>(entries, 1);
}

void LshIndex::merge_delta_direct(Table& t, const std::uint64_t* new_codes, std::size_t n_new,
                                  std::uint32_t first_slot) const {
  // Counting sort by code: O(entries + 2^K), and the delta need not be sorted. Within
  // a code, main slots come first, then delta slots in delta order; both runs are
  // ascending and every delta slot is newer than every main slot.
  const std::size_t nb = std::size_t{1} << K_;
  BigVector<std::uint32_t> offs(nb + 1, 0);
  for_each_group(t, [&](std::uint64_t c, std::uint32_t lo, std::uint32_t hi) { offs[c + 1] += hi - lo; });
  for (const auto& e : t.delta) ++offs[e.first + 1];
  for (std::size_t i = 0; i < n_new; ++i) ++offs[new_codes[i] + 1];
  for (std::size_t c = 0; c < nb; ++c) offs[c + 1] += offs[c];
  BigVector<std::uint32_t> slots(offs[nb]);
  std::vector<std::uint32_t> pos(offs.begin(), offs.end() - 1);
  for_each_group(t, [&](std::uint64_t c, std::uint32_t lo, std::uint32_t hi) {
    std::copy(t.slots.begin() + lo, t.slots.begin() + hi, slots.begin() + pos[c]);
    pos[c] += hi - lo;
  });
  for (const auto& e : t.delta) slots[pos[e.first]++] = e.second;
  for (std::size_t i = 0; i < n_new; ++i) slots[pos[new_codes[i]]++] = first_slot + static_cast<std::uint32_t>(i);
  t.direct = true;
  t.keys.clear();
  t.keys.shrink_to_fit();
  t.offs.swap(offs);
  t.slots.swap(slots);
  t.delta.clear();
  t.delta.shrink_to_fit();
  build_prefix(t);
}

void LshIndex::merge_delta(Table& t) const {
  if (t.delta.empty()) return;
  std::vector<std::uint64_t> keys;
  BigVector<std::uint32_t> offs, slots;
  slots.reserve(t.slots.size() + t.delta.size());
  keys.reserve(t.slots.size() + t.delta.size());
  offs.reserve(t.slots.size() + t.delta.size() + 1);
  offs.push_back(0);
  std::size_t b = 0;
  const std::size_t nb = t.delta.size();
  auto flush_delta_below = [&](std::uint64_t key) {  // delta-only groups with code < key
    while (b < nb && t.delta[b].first < key) {
      const std::uint64_t k = t.delta[b].first;
      while (b < nb && t.delta[b].first == k) slots.push_back(t.delta[b++].second);
      keys.push_back(k);
      offs.push_back(static_cast<std::uint32_t>(slots.size()));
    }
  };
  for_each_group(t, [&](std::uint64_t key, std::uint32_t lo, std::uint32_t hi) {
    flush_delta_below(key);
    slots.insert(slots.end(), t.slots.begin() + lo, t.slots.begin() + hi);
    while (b < nb && t.delta[b].first == key) slots.push_back(t.delta[b++].second);
    keys.push_back(key);
    offs.push_back(static_cast<std::uint32_t>(slots.size()));
  });
  flush_delta_below(std::numeric_limits<std::uint64_t>::max());
  if (b < nb) {  // codes equal to 2^64 - 1 (K = 64)
    const std::uint64_t k = t.delta[b].first;
    while (b < nb) slots.push_back(t.delta[b++].second);
    keys.push_back(k);
    offs.push_back(static_cast<std::uint32_t>(slots.size()));
  }
  t.delta.clear();
  t.delta.shrink_to_fit();
  finalize(t, keys, offs, slots);
}

inline std::pair<std::uint32_t, std::uint32_t> LshIndex::main_range(const Table& t, std::uint64_t code) const {
  if (t.direct) return {t.offs[code], t.offs[code + 1]};
  if (t.keys.empty()) return {0, 0};
  const std::uint64_t p = t.prefix_bits == 0 ? 0 : code >> (K_ - t.prefix_bits);
  const std::uint64_t* lo = t.keys.data() + t.prefix[p];
  const std::uint64_t* hi = t.keys.data() + t.prefix[p + 1];
  const std::uint64_t* it = std::lower_bound(lo, hi, code);
  if (it == hi || *it != code) return {0, 0};
  const std::size_t i = static_cast<std::size_t>(it - t.keys.data());
  return {t.offs[i], t.offs[i + 1]};
}

template <class F>
void LshIndex::for_each_in_delta(const Table& t, std::uint64_t code, F&& f) const {
  if (t.delta.empty()) return;
  auto it = std::lower_bound(t.delta.begin(), t.delta.end(), code,
                             [](const std::pair<std::uint64_t, std::uint32_t>& e, std::uint64_t c) {
                               return e.first < c;
                             });
  for (; it != t.delta.end() && it->first == code; ++it) f(it->second);
}

void LshIndex::add(const float* x, std::int64_t n, const idx_t* ids, bool replace,
                   int num_threads) {
  SIMDEX_CHECK_ARG(n >= 0, "n must be >= 0, got ", n);
  if (n == 0) return;
  // Hash outside the lock (planes never change); this is the expensive part.
  std::vector<std::uint64_t> codes(static_cast<std::size_t>(n * L_));  // table-major
  lsh_hash(x, n, d_, planes_.data(), L_, K_, codes.data(), num_threads, /*table_major=*/true);
  std::vector<float> inv(static_cast<std::size_t>(n), 0.0f);
  compute_row_aux(x, n, d_, Metric::kCosine, inv.data());

  std::unique_lock<RwLock> lock(mutex_);
  {
    std::vector<idx_t> sorted(ids, ids + n);  // duplicates: a sort beats a hash set here
    std::sort(sorted.begin(), sorted.end());
    for (std::int64_t i = 0; i < n; ++i) {
      SIMDEX_CHECK_ARG(sorted[i] >= 0, "ids must be >= 0, got ", sorted[i]);
      SIMDEX_CHECK_ARG(i == 0 || sorted[i] != sorted[i - 1], "id ", sorted[i], " appears more than once in this call");
    }
    if (!replace && !slot_of_.empty())
      for (std::int64_t i = 0; i < n; ++i)
        SIMDEX_CHECK_ARG(slot_of_.find(ids[i]) == slot_of_.end(), "id ", ids[i],
                         " is already in the index; pass replace=True to overwrite it or remove it first");
  }
  const std::int64_t first = static_cast<std::int64_t>(slot_id_.size());
  SIMDEX_CHECK_ARG(first + n < std::int64_t{std::numeric_limits<std::uint32_t>::max()},
                   "an LSH index holds at most 2^32 - 2 vector slots; got ", first, " + ", n);
  if (replace)
    for (std::int64_t i = 0; i < n; ++i)
      if (slot_of_.count(ids[i])) remove_locked(ids[i]);

  data_.insert(data_.end(), x, x + n * d_);
  inv_norm_.insert(inv_norm_.end(), inv.begin(), inv.end());
  if (metric_ == Metric::kCosine) {
    codes8_.resize(static_cast<std::size_t>((first + n) * code_stride_));
    for (std::int64_t i = 0; i < n; ++i)
      quantize_unit_row(x + i * d_, d_, inv[i], code_stride_, codes8_.data() + (first + i) * code_stride_);
  }
  slot_id_.insert(slot_id_.end(), ids, ids + n);
  dead_bits_.resize((slot_id_.size() + 63) / 64, 0);
  slot_of_.reserve(slot_of_.size() + static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) slot_of_.emplace(ids[i], static_cast<std::uint32_t>(first + i));

  const int nt = num_threads > 0 ? num_threads : default_num_threads();
  run_uninterruptible(L_, nt, [&](std::int64_t ti) {
    Table& t = tables_[static_cast<std::size_t>(ti)];
    const std::uint64_t* tc = codes.data() + static_cast<std::size_t>(ti * n);
    const std::size_t total_delta = t.delta.size() + static_cast<std::size_t>(n);
    const bool merge = total_delta > std::max(kMinDelta, t.slots.size() / 8);
    if (merge && direct_pays(t.slots.size() + total_delta)) {
      // Counting sort straight from the new codes: no (code, slot) pairs, no sorting.
      merge_delta_direct(t, tc, static_cast<std::size_t>(n), static_cast<std::uint32_t>(first));
      return;
    }
    const std::size_t old = t.delta.size();
    t.delta.resize(old + static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) t.delta[old + i] = {tc[i], static_cast<std::uint32_t>(first + i)};
    // New slots are larger than old ones, so sorting the new run and merging keeps
    // (code, slot) order.
    std::sort(t.delta.begin() + static_cast<std::ptrdiff_t>(old), t.delta.end());
    std::inplace_merge(t.delta.begin(), t.delta.begin() + static_cast<std::ptrdiff_t>(old), t.delta.end());
    if (merge) merge_delta(t);
  });
}

void LshIndex::remove_locked(idx_t id) {
  auto it = slot_of_.find(id);
  if (it == slot_of_.end()) return;
  slot_id_[it->second] = -1;  // skipped by search at once; table entries go at compaction
  dead_bits_[it->second >> 6] |= std::uint64_t{1} << (it->second & 63);
  slot_of_.erase(it);
  ++dead_;
}

void LshIndex::remove(const idx_t* ids, std::int64_t n) {
  std::unique_lock<RwLock> lock(mutex_);
  for (std::int64_t i = 0; i < n; ++i)
    if (slot_of_.find(ids[i]) == slot_of_.end()) throw UnknownId(ids[i]);
  for (std::int64_t i = 0; i < n; ++i) remove_locked(ids[i]);
  const std::int64_t nslots = static_cast<std::int64_t>(slot_id_.size());
  if (dead_ > 1024 && 2 * dead_ > nslots) compact_locked();
}

void LshIndex::compact_locked() {
  // Monotone renumbering of the live slots, so bucket lists stay sorted.
  const std::size_t nslots = slot_id_.size();
  constexpr std::uint32_t kGone = std::numeric_limits<std::uint32_t>::max();
  std::vector<std::uint32_t> remap(nslots, kGone);
  std::uint32_t live = 0;
  for (std::size_t s = 0; s < nslots; ++s) {
    if (slot_id_[s] < 0) continue;
    if (live != s) {
      std::memcpy(data_.data() + live * d_, data_.data() + s * d_, sizeof(float) * d_);
      inv_norm_[live] = inv_norm_[s];
      slot_id_[live] = slot_id_[s];
      if (!codes8_.empty())
        std::memcpy(codes8_.data() + live * code_stride_, codes8_.data() + s * code_stride_,
                    static_cast<std::size_t>(code_stride_));
    }
    remap[s] = live++;
  }
  data_.resize(static_cast<std::size_t>(live) * d_);
  inv_norm_.resize(live);
  slot_id_.resize(live);
  if (!codes8_.empty()) codes8_.resize(static_cast<std::size_t>(live) * code_stride_);
  for (auto& kv : slot_of_) kv.second = remap[kv.second];
  dead_ = 0;
  dead_bits_.assign((static_cast<std::size_t>(live) + 63) / 64, 0);
  for (auto& t : tables_) {
    std::vector<std::uint64_t> keys;
    BigVector<std::uint32_t> offs{0}, slots;
    for_each_group(t, [&](std::uint64_t key, std::uint32_t lo, std::uint32_t hi) {
      for (std::uint32_t s = lo; s < hi; ++s)
        if (remap[t.slots[s]] != kGone) slots.push_back(remap[t.slots[s]]);
      if (slots.size() != offs.back()) {
        keys.push_back(key);
        offs.push_back(static_cast<std::uint32_t>(slots.size()));
      }
    });
    std::size_t w = 0;
    for (auto& e : t.delta)
      if (remap[e.second] != kGone) t.delta[w++] = {e.first, remap[e.second]};
    t.delta.resize(w);
    finalize(t, keys, offs, slots);
  }
}

void LshIndex::reset() {
  std::unique_lock<RwLock> lock(mutex_);
  data_ = {};
  inv_norm_ = {};
  codes8_ = {};
  slot_id_ = {};
  slot_of_ = {};
  dead_ = 0;
  dead_bits_ = {};
  for (auto& t : tables_) {
    t = Table();
    build_prefix(t);
  }
}

void LshIndex::search(const float* q, std::int64_t nq, std::int64_t k, std::int64_t num_probes,
                      float* distances, idx_t* labels, std::int64_t* num_candidates,
                      int num_threads, std::int64_t refine) const {
  SIMDEX_CHECK_ARG(k >= 1, "k must be >= 1, got ", k);
  SIMDEX_CHECK_ARG(num_probes >= 1, "num_probes must be >= 1, got ", num_probes);
  SIMDEX_CHECK_ARG(nq >= 0, "nq must be >= 0, got ", nq);
  std::shared_lock<RwLock> lock(mutex_);
  const std::int64_t LK = L_ * K_;
  const std::int64_t P = K_ < 63 ? std::min<std::int64_t>(num_probes, std::int64_t{1} << K_) : num_probes;
  const std::size_t nslots = slot_id_.size();
  const std::int64_t nblocks = (nq + kQueryBlock - 1) / kQueryBlock;

  parallel_for(nblocks, num_threads, [&](std::int64_t b, int /*tid*/) {
    const std::int64_t q0 = b * kQueryBlock, rows = std::min(kQueryBlock, nq - q0);
    std::vector<float> proj(static_cast<std::size_t>(rows * LK));
    blas::gemm_abt(rows, LK, d_, 1.0f, q + q0 * d_, planes_.data(), 0.0f, proj.data());
    std::vector<std::uint64_t> codes(static_cast<std::size_t>(L_));
    std::vector<std::uint64_t> masks(static_cast<std::size_t>(P));
    std::vector<float> margins(static_cast<std::size_t>(K_)), qn(static_cast<std::size_t>(code_stride_), 0.0f);
    std::vector<std::uint32_t> cand;
    std::vector<float> scores, hv(static_cast<std::size_t>(k));
    std::vector<idx_t> cid, hi(static_cast<std::size_t>(k));
    std::vector<float> fv;
    std::vector<idx_t> fi;
    std::vector<std::uint64_t>& vis = t_visited;
    if (vis.size() < (nslots + 63) / 64) vis.resize((nslots + 63) / 64, 0);
    const std::uint64_t* dead = dead_bits_.data();
    const bool any_dead = dead_ > 0;
    std::vector<std::uint64_t> probe_code(static_cast<std::size_t>(L_ * P));
    std::vector<std::pair<std::uint32_t, std::uint32_t>> ranges(static_cast<std::size_t>(L_ * P));
    std::vector<std::int64_t> probe_count(static_cast<std::size_t>(L_));


    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t qi = q0 + r;
      const float* pr = proj.data() + r * LK;
      lsh_pack_signs(pr, 1, L_, K_, codes.data());
      cand.clear();
      std::uint64_t* vbits = vis.data();
      auto visit = [&](std::uint32_t s) {
        const std::uint64_t bit = std::uint64_t{1} << (s & 63);
        std::uint64_t& w = vbits[s >> 6];
        if (!(w & bit)) {
          w |= bit;
          cand.push_back(s);
        }
      };
      // Three passes so that memory latency overlaps: (1) probe codes of every table,
      // prefetching their offsets; (2) bucket ranges, prefetching their first slots;
      // (3) the slots themselves.
      for (std::int64_t t = 0; t < L_; ++t) {
        for (int j = 0; j < K_; ++j) margins[j] = std::fabs(pr[t * K_ + j]);
        const std::int64_t np = lsh_probe_masks(margins.data(), K_, P, masks.data());
        probe_count[t] = np;
        for (std::int64_t p = 0; p < np; ++p) probe_code[t * P + p] = codes[t] ^ masks[p];
      }
      for (std::int64_t t = 0; t < L_; ++t) {
        const Table& tab = tables_[static_cast<std::size_t>(t)];
        if (tab.direct)
          for (std::int64_t p = 0; p < probe_count[t]; ++p)
            SIMDEX_PREFETCH(reinterpret_cast<const char*>(tab.offs.data() + probe_code[t * P + p]));
      }
      for (std::int64_t t = 0; t < L_; ++t) {
        const Table& tab = tables_[static_cast<std::size_t>(t)];
        for (std::int64_t p = 0; p < probe_count[t]; ++p) {
          const auto rg = main_range(tab, probe_code[t * P + p]);
          ranges[t * P + p] = rg;
          if (rg.second > rg.first)
            SIMDEX_PREFETCH(reinterpret_cast<const char*>(tab.slots.data() + rg.first));
        }
      }
      for (std::int64_t t = 0; t < L_; ++t) {
        const Table& tab = tables_[static_cast<std::size_t>(t)];
        const std::uint32_t* sl = tab.slots.data();
        for (std::int64_t p = 0; p < probe_count[t]; ++p) {
          const auto rg = ranges[t * P + p];
          for (std::uint32_t i = rg.first; i < rg.second; ++i) visit(sl[i]);
          for_each_in_delta(tab, probe_code[t * P + p], visit);
        }
      }

      // Clear the visited words, then drop removed slots.
      for (std::uint32_t s : cand) vbits[s >> 6] = 0;
      if (any_dead) {
        std::size_t w = 0;
        for (std::uint32_t s : cand)
          if (!(dead[s >> 6] >> (s & 63) & 1)) cand[w++] = s;
        cand.resize(w);
      }
      if (num_candidates) num_candidates[qi] = static_cast<std::int64_t>(cand.size());

      // Exact re-rank: scores (higher is better), then the SIMD top-k filter.
      const float* qv = q + qi * d_;
      float qnorm2 = simd::dot(qv, qv, d_);
      if (metric_ == Metric::kCosine) {
        const float inv = qnorm2 > 0 ? 1.0f / std::sqrt(qnorm2) : 0.0f;
        for (std::int64_t j = 0; j < d_; ++j) qn[j] = qv[j] * inv;
        qv = qn.data();
      }
      std::size_t nc = cand.size();
      const std::int64_t keep = refine > 0 ? refine * k : 0;
      if (metric_ == Metric::kCosine && keep > 0 && static_cast<std::int64_t>(nc) > keep) {
        // Pre-filter: int8 scores (one cache line per candidate), keep the best refine*k.
        scores.resize(nc);
        constexpr std::size_t kAhead8 = 24;
        for (std::size_t c = 0; c < nc; ++c) {
          if (c + kAhead8 < nc)
            SIMDEX_PREFETCH(reinterpret_cast<const char*>(codes8_.data() + cand[c + kAhead8] * code_stride_));
          const std::uint32_t s = cand[c];
          const std::int8_t* row = codes8_.data() + static_cast<std::size_t>(s) * code_stride_;
          scores[c] = row_scale(row, code_stride_) * g_dot_i8(qv, row, code_stride_);
        }
        fv.resize(static_cast<std::size_t>(keep));
        fi.resize(static_cast<std::size_t>(keep));
        heap_init(keep, fv.data(), fi.data());
        heap_push_block(scores.data(), static_cast<std::int64_t>(nc), nullptr, 0, keep, fv.data(), fi.data());
        // Keep candidate order (ascending position) so the exact pass is deterministic.
        std::sort(fi.begin(), fi.end());
        std::size_t w = 0;
        for (idx_t pos : fi)
          if (pos != kEmptyId) cand[w++] = cand[static_cast<std::size_t>(pos)];
        nc = w;
      }
      scores.resize(nc);
      cid.resize(nc);
      constexpr std::size_t kAhead = 12;
      for (std::size_t c = 0; c < nc; ++c) {
        if (c + kAhead < nc) {
          const char* pf = reinterpret_cast<const char*>(data_.data() + cand[c + kAhead] * d_);
          for (std::int64_t off = 0; off < d_ * 4; off += 64) SIMDEX_PREFETCH(pf + off);
        }
        const std::uint32_t s = cand[c];
        const float* xv = data_.data() + static_cast<std::size_t>(s) * d_;
        float sc;
        switch (metric_) {
          case Metric::kCosine: sc = simd::dot(qv, xv, d_) * inv_norm_[s]; break;
          case Metric::kInnerProduct: sc = simd::dot(qv, xv, d_); break;
          default: sc = -sqdist_scalar(qv, xv, d_); break;
        }
        scores[c] = sc;
        cid[c] = slot_id_[s];
      }
      heap_init(k, hv.data(), hi.data());
      if (nc) heap_push_block(scores.data(), static_cast<std::int64_t>(nc), cid.data(), 0, k, hv.data(), hi.data());
      heap_sort_best_first(k, hv.data(), hi.data());
      float* od = distances + qi * k;
      idx_t* oi = labels + qi * k;
      for (std::int64_t r2 = 0; r2 < k; ++r2) {
        if (hi[r2] == kEmptyId) {
          od[r2] = std::numeric_limits<float>::infinity();
          oi[r2] = -1;
          continue;
        }
        const float s = hv[r2];
        switch (metric_) {
          case Metric::kCosine: od[r2] = std::min(2.0f, std::max(0.0f, 1.0f - s)); break;
          case Metric::kInnerProduct: od[r2] = -s; break;
          case Metric::kSquaredL2: od[r2] = -s; break;
          case Metric::kL2: od[r2] = std::sqrt(-s); break;
        }
        oi[r2] = hi[r2];
      }
      // The tie rule is on reported distances: scores a few ulps apart can map to the
      // same distance, so order equal distances by id (k is small: insertion sort).
      for (std::int64_t a = 1; a < k && oi[a] != -1; ++a)
        for (std::int64_t b = a; b > 0 && od[b] == od[b - 1] && oi[b] < oi[b - 1]; --b) {
          std::swap(od[b], od[b - 1]);
          std::swap(oi[b], oi[b - 1]);
        }
    }
  });
}

void LshIndex::get_vectors(const idx_t* ids, std::int64_t n, float* out) const {
  std::shared_lock<RwLock> lock(mutex_);
  for (std::int64_t i = 0; i < n; ++i) {
    auto it = slot_of_.find(ids[i]);
    if (it == slot_of_.end()) throw UnknownId(ids[i]);
    std::memcpy(out + i * d_, data_.data() + static_cast<std::size_t>(it->second) * d_, sizeof(float) * d_);
  }
}

void LshIndex::contains(const idx_t* ids, std::int64_t n, std::uint8_t* out) const {
  std::shared_lock<RwLock> lock(mutex_);
  for (std::int64_t i = 0; i < n; ++i) out[i] = slot_of_.count(ids[i]) ? 1 : 0;
}

void LshIndex::export_all(float* vectors, idx_t* ids) const {
  std::shared_lock<RwLock> lock(mutex_);
  std::int64_t w = 0;
  for (std::size_t s = 0; s < slot_id_.size(); ++s) {
    if (slot_id_[s] < 0) continue;
    std::memcpy(vectors + w * d_, data_.data() + s * d_, sizeof(float) * d_);
    ids[w++] = slot_id_[s];
  }
}

LshTableStats LshIndex::table_stats(std::int64_t ti) const {
  SIMDEX_CHECK_RANGE(ti >= 0 && ti < L_, "table ", ti, " out of range [0, ", L_, ")");
  std::shared_lock<RwLock> lock(mutex_);
  const Table& t = tables_[static_cast<std::size_t>(ti)];
  // Live bucket sizes from both parts, merged by key.
  std::vector<std::pair<std::uint64_t, std::int64_t>> sizes;
  for_each_group(t, [&](std::uint64_t key, std::uint32_t lo, std::uint32_t hi) {
    std::int64_t c = 0;
    for (std::uint32_t s = lo; s < hi; ++s) c += slot_id_[t.slots[s]] >= 0;
    sizes.push_back({key, c});
  });
  for (const auto& e : t.delta) sizes.push_back({e.first, slot_id_[e.second] >= 0 ? 1 : 0});
  std::sort(sizes.begin(), sizes.end());
  LshTableStats st;
  std::int64_t total = 0;
  for (std::size_t i = 0; i < sizes.size();) {
    std::int64_t c = 0;
    std::size_t j = i;
    for (; j < sizes.size() && sizes[j].first == sizes[i].first; ++j) c += sizes[j].second;
    if (c > 0) {
      ++st.nonempty_buckets;
      total += c;
      st.max_bucket_size = std::max(st.max_bucket_size, c);
    }
    i = j;
  }
  st.mean_bucket_size = st.nonempty_buckets ? static_cast<double>(total) / st.nonempty_buckets : 0.0;
  return st;
}

std::int64_t LshIndex::memory_bytes() const {
  std::shared_lock<RwLock> lock(mutex_);
  std::int64_t b = static_cast<std::int64_t>(data_.capacity() * sizeof(float) +
                                             inv_norm_.capacity() * sizeof(float) +
                                             codes8_.capacity() +
                                             slot_id_.capacity() * sizeof(idx_t) +
                                             planes_.capacity() * sizeof(float));
  // unordered_map: a node (key, value, next pointer, cached hash) plus a bucket pointer.
  b += static_cast<std::int64_t>(slot_of_.size() * 32 + slot_of_.bucket_count() * 8);
  for (const auto& t : tables_)
    b += static_cast<std::int64_t>(t.keys.capacity() * 8 + t.offs.capacity() * 4 +
                                   t.slots.capacity() * 4 + t.prefix.capacity() * 4 +
                                   t.delta.capacity() * 16);
  return b;
}

}  // namespace simdex
