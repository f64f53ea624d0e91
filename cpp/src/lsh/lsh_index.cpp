// LshIndex: multi-table sign-projection buckets, multi-probe, exact re-rank.
#include <sys/mman.h>

#include <algorithm>
#include <functional>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
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
constexpr std::int64_t kScanBlock = 256;  // queries per block of a sketch scan
constexpr std::size_t kMinDelta = 4096;   // delta size below which it is never merged
constexpr int kMaxPrefixBits = 20;
constexpr int kMaxDirectBits = 24;  // direct offsets: at most 64 MiB per table
constexpr int kMaxScanBits = 16;    // partitioned scan: per-block counting sort over 2^K codes
constexpr int kMaxScanBins = 512;   // scan thresholds: histogram bins per query (exact up to 512 bits)
constexpr int kPsBits = 10;         // partitioned scan: probes flip the kPsBits least certain bits

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
                   Metric metric, const LshOptions& options)
    : d_(d), L_(num_tables), K_(hash_bits), metric_(metric) {
  SIMDEX_CHECK_ARG(d >= 1, "dim must be >= 1, got ", d);
  code_stride_ = (d + 4 + 15) / 16 * 16;
  configure(num_tables, hash_bits, planes, options);
}

void LshIndex::configure(std::int64_t num_tables, int hash_bits, const float* planes,
                         const LshOptions& options) {
  SIMDEX_CHECK_ARG(num_tables >= 1 && num_tables <= 4096, "num_tables must be in [1, 4096], got ",
                   num_tables);
  SIMDEX_CHECK_ARG(hash_bits >= 1 && hash_bits <= kMaxHashBits, "hash_bits must be in [1, 64], got ",
                   hash_bits);
  SIMDEX_CHECK_ARG(planes != nullptr, "planes must not be null");
  SIMDEX_CHECK_ARG(options.sketch_words >= 0 && options.sketch_words <= 8,
                   "sketch_words must be in [0, 8] (0 to 512 sketch bits), got ", options.sketch_words);
  SIMDEX_CHECK_ARG(options.sketch_planes.size() == static_cast<std::size_t>(64 * options.sketch_words * d_),
                   "sketch_planes must hold 64 * sketch_words * dim = ", 64 * options.sketch_words * d_,
                   " floats, got ", options.sketch_planes.size());
  SIMDEX_CHECK_ARG(options.center.empty() || options.center.size() == static_cast<std::size_t>(d_),
                   "center must be empty or hold dim = ", d_, " floats, got ", options.center.size());
  for (float v : options.center) SIMDEX_CHECK_ARG(std::isfinite(v), "center must be finite");
  for (float v : options.sketch_planes) SIMDEX_CHECK_ARG(std::isfinite(v), "sketch_planes must be finite");
  SIMDEX_CHECK_ARG(!options.table_sketches || hash_bits <= kMaxScanBits,
                   "table sketches (partitioned scan) need hash_bits <= ", kMaxScanBits, ", got ", hash_bits);
  L_ = num_tables;
  K_ = hash_bits;
  W_ = options.sketch_words;
  table_sketches_ = options.table_sketches && W_ > 0;
  planes_.assign(planes, planes + num_tables * hash_bits * d_);
  all_planes_ = planes_;
  all_planes_.insert(all_planes_.end(), options.sketch_planes.begin(), options.sketch_planes.end());
  center_ = options.center;
  const std::int64_t rows = L_ * K_ + 64 * W_;
  offsets_.assign(static_cast<std::size_t>(rows), 0.0f);
  if (!center_.empty())
    for (std::int64_t r = 0; r < rows; ++r)
      offsets_[r] = simd::dot(center_.data(), all_planes_.data() + r * d_, d_);
  tables_.assign(static_cast<std::size_t>(L_), Table());
  for (auto& t : tables_) build_prefix(t);
}

void LshIndex::hash_rows(const float* x, std::int64_t n, const float* inv, std::uint64_t* codes,
                         std::uint64_t* sketches, int num_threads, bool interruptible) const {
  // One GEMM per fixed block of rows against the table and sketch planes together.
  // Without a centre the table bits are exactly lsh_hash's (<x, p> > 0); with one they
  // are <x/|x| - c, p> > 0, i.e. <x, p> * (1/|x|) - <c, p> > 0.
  constexpr std::int64_t kBlock = 256;
  const std::int64_t LK = L_ * K_, rows = LK + 64 * W_;
  const std::int64_t nblocks = (n + kBlock - 1) / kBlock;
  const bool centred = !center_.empty();
  int nt = num_threads > 0 ? num_threads : default_num_threads();
  nt = static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(nt, nblocks)));
  auto block = [&](std::int64_t b) {
    const std::int64_t r0 = b * kBlock, cnt = std::min(kBlock, n - r0);
    thread_local std::vector<float> buf;
    buf.resize(static_cast<std::size_t>(kBlock * rows));
    blas::gemm_abt(cnt, rows, d_, 1.0f, x + r0 * d_, all_planes_.data(), 0.0f, buf.data());
    for (std::int64_t i = 0; i < cnt; ++i) {
      float* pr = buf.data() + i * rows;
      if (centred) {
        const float s = inv[r0 + i];
        for (std::int64_t r = 0; r < rows; ++r) pr[r] = pr[r] * s - offsets_[r];
      }
      for (std::int64_t t = 0; t < L_; ++t) {
        std::uint64_t c = 0;
        for (int j = 0; j < K_; ++j) c |= static_cast<std::uint64_t>(pr[t * K_ + j] > 0.0f) << j;
        codes[t * n + r0 + i] = c;
      }
      for (int w = 0; w < W_; ++w) {
        std::uint64_t c = 0;
        const float* sp = pr + LK + 64 * w;
        for (int j = 0; j < 64; ++j) c |= static_cast<std::uint64_t>(sp[j] > 0.0f) << j;
        sketches[(r0 + i) * W_ + w] = c;
      }
    }
  };
  if (interruptible)
    parallel_for(nblocks, nt, [&](std::int64_t b, int) { block(b); });
  else
    run_uninterruptible(nblocks, nt, block);
}

void LshIndex::update_planar(std::size_t first_slot) {
  const std::size_t n = slot_id_.size(), W = static_cast<std::size_t>(W_);
  if (W == 0 || table_sketches_) {  // with table sketches a full scan reads table 0's copy
    skp_ = {};
    return;
  }
  const std::size_t blocks = (n + 7) / 8, b0 = first_slot / 8;
  skp_.resize(blocks * 8 * W);
  for (std::size_t b = b0; b < blocks; ++b)
    for (std::size_t j = 0; j < 8; ++j) {
      const std::size_t s = b * 8 + j;
      for (std::size_t w = 0; w < W; ++w) skp_[b * 8 * W + w * 8 + j] = s < n ? sk_[s * W + w] : 0;
    }
}

void LshIndex::fill_table_sketch(Table& t) const {
  if (W_ == 0) {
    t.sk = {};
    t.skp = {};
    return;
  }
  const std::size_t n = t.slots.size(), W = static_cast<std::size_t>(W_);
  t.sk.resize(n);
  for (std::size_t i = 0; i < n; ++i) t.sk[i] = sk_[static_cast<std::size_t>(t.slots[i]) * W];
  if (!table_sketches_) {
    t.skp = {};
    return;
  }
  const std::size_t blocks = (n + 7) / 8;
  t.skp.assign(blocks * 8 * W, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t* src = sk_.data() + static_cast<std::size_t>(t.slots[i]) * W;
    std::uint64_t* dst = t.skp.data() + (i / 8) * 8 * W + (i % 8);
    for (std::size_t w = 0; w < W; ++w) dst[w * 8] = src[w];
  }
}

std::int64_t LshIndex::size() const {
  std::shared_lock<RwLock> lock(mutex_);
  return size_unlocked();
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
  fill_table_sketch(t);
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
  fill_table_sketch(t);
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
  // Hashing may be interrupted (Ctrl-C): nothing has changed yet.
  std::vector<std::uint64_t> codes(static_cast<std::size_t>(n * L_));  // table-major
  std::vector<std::uint64_t> sketches(static_cast<std::size_t>(n * W_));
  hash_rows(x, n, inv.data(), codes.data(), sketches.data(), num_threads);
  if (replace)
    for (std::int64_t i = 0; i < n; ++i)
      if (slot_of_.count(ids[i])) remove_locked(ids[i]);
  add_locked(x, n, ids, codes.data(), sketches.data(), inv.data(), num_threads);
}

void LshIndex::add_locked(const float* x, std::int64_t n, const idx_t* ids, const std::uint64_t* codes,
                          const std::uint64_t* sketches, const float* inv, int num_threads) {
  const std::int64_t first = static_cast<std::int64_t>(slot_id_.size());
  data_.insert(data_.end(), x, x + n * d_);
  inv_norm_.insert(inv_norm_.end(), inv, inv + n);
  sk_.insert(sk_.end(), sketches, sketches + n * W_);
  const int nt = num_threads > 0 ? num_threads : default_num_threads();
  if (wants_codes8()) build_codes8(x, inv, first, n, nt);
  slot_id_.insert(slot_id_.end(), ids, ids + n);
  dead_bits_.resize((slot_id_.size() + 63) / 64, 0);
  slot_of_.reserve(slot_of_.size() + static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) slot_of_.emplace(ids[i], static_cast<std::uint32_t>(first + i));

  update_planar(static_cast<std::size_t>(first));
  index_slots(codes, first, n, nt);
}

bool LshIndex::wants_codes8() const { return metric_ == Metric::kCosine && (W_ <= 1 || d_ <= 64); }

void LshIndex::build_codes8(const float* x, const float* inv, std::int64_t first, std::int64_t n, int nt) {
  // int8 stage: classic path, 64-bit sketches, and short rows (one cache line for d <= 60
  // against 4 for the float row), where it halves the random reads of the re-rank.
  codes8_.resize(static_cast<std::size_t>((first + n) * code_stride_));
  constexpr std::int64_t kRows = 4096;  // blocks of rows, so the threads share the work
  run_uninterruptible((n + kRows - 1) / kRows, nt, [&](std::int64_t b) {
    for (std::int64_t i = b * kRows; i < std::min(n, (b + 1) * kRows); ++i)
      quantize_unit_row(x + i * d_, d_, inv[i], code_stride_, codes8_.data() + (first + i) * code_stride_);
  });
}

void LshIndex::index_slots(const std::uint64_t* codes, std::int64_t first, std::int64_t n, int nt) {
  // Table entries for slots [first, first + n); codes: table-major, n per table.
  run_uninterruptible(L_, nt, [&](std::int64_t ti) {
    Table& t = tables_[static_cast<std::size_t>(ti)];
    const std::uint64_t* tc = codes + static_cast<std::size_t>(ti * n);
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

void LshIndex::rebuild(std::int64_t num_tables, int hash_bits, const float* planes, const LshOptions& options,
                       int num_threads) {
  std::unique_lock<RwLock> lock(mutex_);
  // In place: removed slots are compacted away (live rows keep their order), then the
  // stored rows are hashed again with the new configuration. The vectors, ids, norms
  // and the int8 copy (which do not depend on the configuration) stay as they are.
  // Nothing below may stop half way: the hashing runs without interrupt checks.
  if (dead_ > 0) compact_locked();
  configure(num_tables, hash_bits, planes, options);  // validates first: on error nothing changed
  const std::int64_t n = static_cast<std::int64_t>(slot_id_.size());
  const int nt = num_threads > 0 ? num_threads : default_num_threads();
  std::vector<std::uint64_t> codes(static_cast<std::size_t>(n * L_));
  std::vector<std::uint64_t> sketches(static_cast<std::size_t>(n * W_));
  if (n > 0) hash_rows(data_.data(), n, inv_norm_.data(), codes.data(), sketches.data(), nt, false);
  sk_.assign(sketches.begin(), sketches.end());
  if (!wants_codes8())
    codes8_ = {};
  else if (codes8_.size() != static_cast<std::size_t>(n * code_stride_))
    build_codes8(data_.data(), inv_norm_.data(), 0, n, nt);
  skp_ = {};
  update_planar(0);
  if (n > 0) index_slots(codes.data(), 0, n, nt);
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
      for (int w = 0; w < W_; ++w) sk_[static_cast<std::size_t>(live) * W_ + w] = sk_[s * W_ + w];
    }
    remap[s] = live++;
  }
  data_.resize(static_cast<std::size_t>(live) * d_);
  inv_norm_.resize(live);
  slot_id_.resize(live);
  if (!codes8_.empty()) codes8_.resize(static_cast<std::size_t>(live) * code_stride_);
  sk_.resize(static_cast<std::size_t>(live) * W_);
  update_planar(0);
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
  sk_ = {};
  skp_ = {};
  slot_id_ = {};
  slot_of_ = {};
  dead_ = 0;
  dead_bits_ = {};
  for (auto& t : tables_) {
    t = Table();
    build_prefix(t);
  }
}

namespace {

// Keep the `keep` entries with the smallest h (ties: first come), compacting cand/h in
// place in their original order. hist: counts of h over the entries (size maxh + 1).
void select_smallest(std::vector<std::uint32_t>& cand, std::vector<std::uint16_t>& h,
                     std::vector<std::uint32_t>& hist, std::size_t keep) {
  if (cand.size() <= keep) return;
  std::size_t below = 0;
  std::size_t T = 0;
  while (below + hist[T] < keep) below += hist[T++];
  std::size_t at_T = keep - below, w = 0;  // entries with h == T still admitted
  for (std::size_t i = 0; i < cand.size(); ++i) {
    if (h[i] < T || (h[i] == T && at_T > 0)) {
      if (h[i] == T) --at_T;
      cand[w] = cand[i];
      h[w++] = h[i];
    }
  }
  cand.resize(w);
  h.resize(w);
}

}  // namespace

void LshIndex::search(const float* q, std::int64_t nq, std::int64_t k, const LshSearchParams& params,
                      float* distances, idx_t* ids, std::int64_t* num_candidates,
                      std::int64_t* num_scanned) const {
  search_impl(q, nq, k, params, distances, ids, num_candidates, num_scanned, 0.0f, nullptr);
}

void LshIndex::range_search(const float* q, std::int64_t nq, float radius, const LshSearchParams& params,
                            RangeResult& result, std::int64_t* num_candidates,
                            std::int64_t* num_scanned) const {
  std::vector<std::vector<std::pair<float, idx_t>>> hits(static_cast<std::size_t>(std::max<std::int64_t>(nq, 0)));
  search_impl(q, nq, 1, params, nullptr, nullptr, num_candidates, num_scanned, radius, &hits);
  result.assemble(hits);
}

void LshIndex::search_impl(const float* q, std::int64_t nq, std::int64_t k, const LshSearchParams& params,
                           float* distances, idx_t* ids, std::int64_t* num_candidates,
                           std::int64_t* num_scanned, float radius,
                           std::vector<std::vector<std::pair<float, idx_t>>>* range) const {
  SIMDEX_CHECK_ARG(k >= 1, "k must be >= 1, got ", k);
  SIMDEX_CHECK_ARG(params.num_probes >= 1, "num_probes must be >= 1, got ", params.num_probes);
  SIMDEX_CHECK_ARG(nq >= 0, "nq must be >= 0, got ", nq);
  SIMDEX_CHECK_ARG(params.rerank >= 0, "rerank must be >= 0, got ", params.rerank);
  std::shared_lock<RwLock> lock(mutex_);
  SIMDEX_CHECK_ARG(params.rerank == 0 || W_ > 0,
                   "rerank > 0 needs sketches; build the index with sketch_words >= 1");
  SIMDEX_CHECK_ARG(!params.scan || params.rerank > 0, "scan needs rerank > 0");
  const std::int64_t num_probes = params.num_probes, refine = params.refine;
  const bool sketch = params.rerank > 0;
  const std::int64_t LK = L_ * K_, rows_all = LK + 64 * W_;
  std::unique_ptr<PreparedFilter> pfilter;  // a bitmap over ids when dense enough
  if (params.filter) pfilter = std::make_unique<PreparedFilter>(*params.filter);
  const PreparedFilter* pf = pfilter.get();
  const std::int64_t P = K_ < 63 ? std::min<std::int64_t>(num_probes, std::int64_t{1} << K_) : num_probes;
  const std::size_t nslots = slot_id_.size();
  // A scan reads every chosen sketch once per block of queries: larger blocks there
  // (the per-query state is small), so the sketches come from memory fewer times.
  const std::int64_t qblock = sketch && params.scan ? kScanBlock : kQueryBlock;
  const std::int64_t nblocks = (nq + qblock - 1) / qblock;
  const bool centred = !center_.empty();
  // Budget of the word-0 filter: with more words the survivors are ranked again.
  const std::size_t R = static_cast<std::size_t>(std::max<std::int64_t>(params.rerank, k));
  const std::size_t budget0 = W_ > 1 ? 4 * R : R;
  SIMDEX_CHECK_ARG(params.scan_fraction > 0.0 && params.scan_fraction <= 1.0,
                   "scan_fraction must be in (0, 1], got ", params.scan_fraction);
  const bool pscan = sketch && params.scan && params.scan_fraction < 1.0;
  SIMDEX_CHECK_ARG(!pscan || table_sketches_,
                   "scan_fraction < 1 needs table sketches; build the index with table_sketches");

  parallel_for(nblocks, params.num_threads, [&](std::int64_t b, int /*tid*/) {
    const std::int64_t q0 = b * qblock, rows = std::min(qblock, nq - q0);
    std::vector<float> proj(static_cast<std::size_t>(rows * rows_all));
    blas::gemm_abt(rows, rows_all, d_, 1.0f, q + q0 * d_, all_planes_.data(), 0.0f, proj.data());
    std::vector<std::uint64_t> masks(static_cast<std::size_t>(P));
    std::vector<float> margins(static_cast<std::size_t>(K_)), qn(static_cast<std::size_t>(code_stride_), 0.0f);
    std::vector<std::uint32_t> cand;
    std::vector<std::uint16_t> hd, hbuf;
    std::vector<std::uint32_t> sel;
    std::vector<std::uint32_t> hist;
    std::vector<float> scores, hv(static_cast<std::size_t>(k));
    std::vector<idx_t> cid, hi(static_cast<std::size_t>(k));
    std::vector<float> fv;
    std::vector<idx_t> fi;
    std::vector<std::uint64_t>& vis = t_visited;
    if (vis.size() < (nslots + 63) / 64) vis.resize((nslots + 63) / 64, 0);
    std::vector<std::uint64_t> probe_code(static_cast<std::size_t>(L_ * P));
    std::vector<std::pair<std::uint32_t, std::uint32_t>> ranges(static_cast<std::size_t>(L_ * P));
    std::vector<std::int64_t> probe_count(static_cast<std::size_t>(L_));

    // Per query of the block: centred projections, table codes and sketch.
    std::vector<std::uint64_t> codes_all(static_cast<std::size_t>(rows * L_));
    std::vector<std::uint64_t> qsk_all(static_cast<std::size_t>(rows * std::max(W_, 1)), 0);
    std::vector<float> qnorm2_all(static_cast<std::size_t>(rows));
    for (std::int64_t r = 0; r < rows; ++r) {
      float* pr = proj.data() + r * rows_all;
      const float* qv = q + (q0 + r) * d_;
      const float qnorm2 = simd::dot(qv, qv, d_);
      qnorm2_all[r] = qnorm2;
      if (centred) {  // the query's projections of x/|x| - c, as for stored rows
        const float s = qnorm2 > 0 ? 1.0f / std::sqrt(qnorm2) : 0.0f;
        for (std::int64_t j = 0; j < rows_all; ++j) pr[j] = pr[j] * s - offsets_[j];
      }
      for (std::int64_t t = 0; t < L_; ++t) {
        std::uint64_t c = 0;
        for (int j = 0; j < K_; ++j) c |= static_cast<std::uint64_t>(pr[t * K_ + j] > 0.0f) << j;
        codes_all[r * L_ + t] = c;
      }
      for (int w = 0; w < W_; ++w) {
        std::uint64_t c = 0;
        for (int j = 0; j < 64; ++j) c |= static_cast<std::uint64_t>(pr[LK + 64 * w + j] > 0.0f) << j;
        qsk_all[r * W_ + w] = c;
      }
    }
    const std::uint64_t* dead = dead_bits_.data();
    const bool any_dead = dead_ > 0;
    // The one place a candidate slot is admitted (after de-duplication, before any
    // distance): removed slots and ids the filter refuses stop here, so that refused
    // ids use none of the budget (classic, sketch-bucket and scan paths alike).
    auto admit = [&](std::uint32_t s) {
      return (!any_dead || !(dead[s >> 6] >> (s & 63) & 1)) && (!pf || pf->allows(slot_id_[s]));
    };

    // Sketch scans (full or partitioned). Per query, a running threshold keeps what
    // can still be among the best R: a histogram of the admitted Hamming distances
    // (one bin per distance up to 512 bits); an entry above the threshold bin is not
    // admitted, and the threshold falls as soon as R entries lie below it. The exact
    // best R (ties: first come) are selected at the end. (Measured and not kept: a
    // first pass over each query's own buckets, which admits ~13% fewer entries but
    // costs as much as it saves; a fused popcount + compare + compress kernel per query.)
    struct ScanState {
      std::vector<std::uint32_t> cand;  // the first n entries are in use
      std::vector<std::uint16_t> hd;
      std::size_t n = 0;
      std::uint32_t* hist = nullptr;  // into hist_all
      int Tb = 0;                     // threshold bin
      std::size_t n_le = 0;           // admitted entries in bins <= Tb
      std::int64_t scanned = 0, admitted = 0;
      void reserve(std::size_t need) {
        if (cand.size() >= need) return;
        const std::size_t cap = std::max(need, 2 * cand.size());
        cand.resize(cap);
        hd.resize(cap);
      }
    };
    std::vector<ScanState> scan_state;
    std::vector<std::uint32_t> hist_all;
    int shift = 0;
    while ((64 * W_ >> shift) > kMaxScanBins) ++shift;
    const int nbins = (64 * W_ >> shift) + 1;
    constexpr std::size_t kChunk = 2048;  // rows compared per kernel call, a multiple of 8
    auto limit = [&](const ScanState& st) { return static_cast<std::uint16_t>(((st.Tb + 1) << shift) - 1); };
    auto count_in = [&](ScanState& st, std::uint16_t h) {  // h was admitted: lower the threshold
      const int bin = h >> shift;
      if (bin > st.Tb) return;
      ++st.hist[bin];
      ++st.n_le;
      while (st.Tb > 0 && st.n_le - st.hist[st.Tb] >= R) st.n_le -= st.hist[st.Tb--];
    };
    // One candidate at a time (delta entries; removed slots or an id filter).
    auto take = [&](ScanState& st, std::uint32_t s, std::uint16_t h) {
      if ((h >> shift) > st.Tb || !admit(s)) return;
      st.reserve(st.n + 1);
      st.cand[st.n] = s;
      st.hd[st.n++] = h;
      ++st.admitted;
      count_in(st, h);
    };
    // Rows [lo, hi) against the queries list[0 .. m) of the block (their state and
    // sketches), in chunks of kMultiRows rows: the multi-query kernel returns the
    // (query, row) pairs under each query's threshold, then each is offered in order.
    std::vector<std::uint64_t> mq_sk;
    std::vector<std::uint16_t> mq_t, hit_h;
    std::vector<std::uint32_t> hit_q, hit_row;
    constexpr std::size_t kMultiRows = 512;
    auto scan_multi = [&](const std::uint64_t* planar, std::size_t lo, std::size_t hi, const std::uint32_t* slots,
                          const std::uint32_t* list, int m) {
      const std::size_t W = static_cast<std::size_t>(W_);
      mq_sk.resize(static_cast<std::size_t>(m) * W);
      mq_t.resize(static_cast<std::size_t>(m));
      for (int j = 0; j < m; ++j) {
        const std::uint32_t r = list[j];
        std::copy_n(qsk_all.data() + r * W, W, mq_sk.data() + static_cast<std::size_t>(j) * W);
        scan_state[r].scanned += static_cast<std::int64_t>(hi - lo);
      }
      for (std::size_t a = lo; a < hi; a += kMultiRows) {
        const std::size_t b = std::min(hi, a + kMultiRows);
        for (int j = 0; j < m; ++j) mq_t[static_cast<std::size_t>(j)] = limit(scan_state[list[j]]);
        const std::size_t cap = static_cast<std::size_t>(m) * (b - a);
        if (hit_q.size() < cap) {
          hit_q.resize(cap);
          hit_row.resize(cap);
          hit_h.resize(cap);
        }
        const std::int64_t nh =
            simd::hamming_planar_multi(planar, static_cast<std::int64_t>(a), static_cast<std::int64_t>(b), W_,
                                       mq_sk.data(), mq_t.data(), m, hit_q.data(), hit_row.data(), hit_h.data());
        for (std::int64_t e = 0; e < nh; ++e) {
          const std::uint32_t row = hit_row[e];
          take(scan_state[list[hit_q[e]]], slots ? slots[row] : row, hit_h[e]);
        }
      }
    };
    // The recent adds of a table (its delta, not yet merged into the bucket order), each
    // offered to the queries r of the block with wants(r, code): one sketch at a time.
    auto take_delta = [&](const Table& tab, auto&& wants) {
      for (const auto& e : tab.delta) {
        const std::uint64_t* row = sk_.data() + static_cast<std::size_t>(e.second) * W_;
        for (std::int64_t r = 0; r < rows; ++r) {
          if (!wants(r, e.first)) continue;
          ScanState& st = scan_state[static_cast<std::size_t>(r)];
          ++st.scanned;
          const std::uint64_t* qs = qsk_all.data() + r * W_;
          std::uint16_t h = 0;
          for (int w = 0; w < W_; ++w) h += static_cast<std::uint16_t>(__builtin_popcountll(row[w] ^ qs[w]));
          take(st, e.second, h);
        }
      }
    };
    if (sketch && params.scan) {
      scan_state.resize(static_cast<std::size_t>(rows));
      hist_all.assign(static_cast<std::size_t>(rows * nbins), 0);
      for (std::int64_t r = 0; r < rows; ++r) {
        ScanState& st = scan_state[static_cast<std::size_t>(r)];
        st.hist = hist_all.data() + r * nbins;
        st.Tb = nbins - 1;
        st.reserve(4 * R);
      }
    }
    if (pscan) {
      // Partitioned scan. Per table and query, the probe order of multi-probe LSH over
      // the kPsBits bits of least |margin|: the 2^kPsBits flip masks scored by summed
      // |margin| (by doubling), a histogram of their buckets' entries by score, and the
      // lowest-score buckets that cover the table's share of the budget. The chosen
      // (bucket, query) pairs of the whole block are then sorted by bucket (counting
      // sort), so each bucket's sketches are read once for all the queries that chose
      // it (scan_multi).
      const int mbits = std::min(K_, kPsBits);
      const std::size_t nm = std::size_t{1} << mbits, nb = std::size_t{1} << K_;
      const double live = static_cast<double>(nslots) - static_cast<double>(dead_);
      const double share = std::max(1.0, params.scan_fraction * live / static_cast<double>(L_));
      constexpr int kBins = 256;
      std::vector<float> fs(nm);
      std::vector<std::uint64_t> fmask(nm);
      std::vector<std::uint32_t> bucket_size(nb);
      std::vector<double> binw(kBins);
      std::vector<std::pair<float, int>> order(static_cast<std::size_t>(K_));
      std::vector<std::uint32_t> pair_code, pair_query, by_code(nb + 1), sorted_query, chosen_codes;
      const std::size_t sw = (nb + 63) / 64;
      std::vector<std::uint64_t> chosen;  // per query bitmap over codes, only with a delta
      const std::size_t W = static_cast<std::size_t>(W_);
      for (std::int64_t t = 0; t < L_; ++t) {
        const Table& tab = tables_[static_cast<std::size_t>(t)];
        std::fill(bucket_size.begin(), bucket_size.end(), 0u);
        for_each_group(tab, [&](std::uint64_t c, std::uint32_t lo, std::uint32_t hi) { bucket_size[c] = hi - lo; });
        for (const auto& e : tab.delta) ++bucket_size[e.first];
        const bool with_delta = !tab.delta.empty();
        if (with_delta) chosen.assign(static_cast<std::size_t>(rows) * sw, 0);
        pair_code.clear();
        pair_query.clear();
        for (std::int64_t r = 0; r < rows; ++r) {
          const float* pr = proj.data() + r * rows_all + t * K_;
          const std::uint64_t qc = codes_all[r * L_ + t];
          for (int j = 0; j < K_; ++j) order[j] = {std::fabs(pr[j]), j};
          std::partial_sort(order.begin(), order.begin() + mbits, order.end());
          fs[0] = 0.0f;
          fmask[0] = 0;
          for (int j = 0; j < mbits; ++j) {
            const std::size_t span = std::size_t{1} << j;
            const float m = order[j].first;
            const std::uint64_t bit = std::uint64_t{1} << order[j].second;
            for (std::size_t f = 0; f < span; ++f) {
              fs[f | span] = fs[f] + m;
              fmask[f | span] = fmask[f] | bit;
            }
          }
          const float top = fs[nm - 1];
          const float scale = top > 0.0f ? static_cast<float>(kBins) / top : 0.0f;
          auto bin = [&](float v) { return std::min(kBins - 1, static_cast<int>(v * scale)); };
          std::fill(binw.begin(), binw.end(), 0.0);
          for (std::size_t f = 0; f < nm; ++f) binw[bin(fs[f])] += bucket_size[qc ^ fmask[f]];
          int last = kBins - 1;
          double cum = 0.0;
          for (int i = 0; i < kBins; ++i) {
            cum += binw[i];
            if (cum >= share) {
              last = i;
              break;
            }
          }
          for (std::size_t f = 0; f < nm; ++f) {
            const std::uint64_t c = qc ^ fmask[f];
            if (bin(fs[f]) > last || bucket_size[c] == 0) continue;
            pair_code.push_back(static_cast<std::uint32_t>(c));
            pair_query.push_back(static_cast<std::uint32_t>(r));
            if (with_delta) chosen[r * sw + (c >> 6)] |= std::uint64_t{1} << (c & 63);
          }
        }
        // Counting sort of the (bucket, query) pairs by bucket; queries stay ascending.
        std::fill(by_code.begin(), by_code.end(), 0u);
        for (std::uint32_t c : pair_code) ++by_code[c + 1];
        for (std::size_t c = 0; c < nb; ++c) by_code[c + 1] += by_code[c];
        sorted_query.resize(pair_code.size());
        for (std::size_t i = 0; i < pair_code.size(); ++i) sorted_query[by_code[pair_code[i]]++] = pair_query[i];
        // by_code[c] is now the end of bucket c's run; runs start at by_code[c - 1].
        // The chosen buckets in code order, each compared at once with all the queries
        // that chose it (one load of each sketch block for all of them); a few buckets
        // ahead of the walk, slot ids and first sketch lines are prefetched.
        chosen_codes.clear();
        for (std::size_t c = 0, prev = 0; c < nb; prev = by_code[c], ++c)
          if (by_code[c] != prev) chosen_codes.push_back(static_cast<std::uint32_t>(c));
        constexpr std::size_t kAheadBuckets = 4;
        auto prefetch_bucket = [&](std::uint32_t c) {
          const auto rg = main_range(tab, c);
          const char* sl = reinterpret_cast<const char*>(tab.slots.data() + rg.first);
          const char* sl_end = reinterpret_cast<const char*>(tab.slots.data() + rg.second);
          for (; sl < sl_end; sl += 64) SIMDEX_PREFETCH(sl);
          const char* sp = reinterpret_cast<const char*>(tab.skp.data() + rg.first / 8 * 8 * W);
          SIMDEX_PREFETCH(sp);
          SIMDEX_PREFETCH(sp + 64);
        };
        for (std::size_t i = 0; i < std::min(kAheadBuckets, chosen_codes.size()); ++i) prefetch_bucket(chosen_codes[i]);
        for (std::size_t i = 0; i < chosen_codes.size(); ++i) {
          const std::uint32_t c = chosen_codes[i];
          if (i + kAheadBuckets < chosen_codes.size()) prefetch_bucket(chosen_codes[i + kAheadBuckets]);
          const std::uint32_t begin = c == 0 ? 0 : by_code[c - 1], end = by_code[c];
          const auto rg = main_range(tab, c);
          if (rg.second > rg.first)
            scan_multi(tab.skp.data(), rg.first, rg.second, tab.slots.data(), sorted_query.data() + begin,
                       static_cast<int>(end - begin));
        }
        if (with_delta)
          take_delta(tab, [&](std::int64_t r, std::uint64_t c) { return chosen[r * sw + (c >> 6)] >> (c & 63) & 1; });
      }
    } else if (sketch && params.scan) {
      // Every stored sketch, compared with all the queries of the block per load: from
      // the slot-order copy, or (an index that keeps table sketches has no such copy)
      // from table 0's bucket-order copy plus its recent adds.
      std::vector<std::uint32_t> everyone(static_cast<std::size_t>(rows));
      for (std::int64_t r = 0; r < rows; ++r) everyone[r] = static_cast<std::uint32_t>(r);
      const Table* t0 = table_sketches_ ? &tables_[0] : nullptr;
      const std::size_t n_rows = t0 ? t0->slots.size() : nslots;
      for (std::size_t s0 = 0; s0 < n_rows; s0 += kChunk)
        scan_multi(t0 ? t0->skp.data() : skp_.data(), s0, std::min(n_rows, s0 + kChunk),
                   t0 ? t0->slots.data() : nullptr, everyone.data(), static_cast<int>(rows));
      if (t0) take_delta(*t0, [](std::int64_t, std::uint64_t) { return true; });
      for (auto& st : scan_state) st.scanned = static_cast<std::int64_t>(nslots);
    }

    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t qi = q0 + r;
      float* pr = proj.data() + r * rows_all;
      const float* qv = q + qi * d_;
      const float qnorm2 = qnorm2_all[r];
      const std::uint64_t* codes = codes_all.data() + r * L_;
      const std::uint64_t* qsk = qsk_all.data() + r * std::max(W_, 1);
      cand.clear();
      hd.clear();
      std::int64_t scanned = 0;
      std::uint64_t* vbits = vis.data();
      auto visit = [&](std::uint32_t s) {
        const std::uint64_t bit = std::uint64_t{1} << (s & 63);
        std::uint64_t& w = vbits[s >> 6];
        if (!(w & bit)) {
          w |= bit;
          cand.push_back(s);
        }
      };

      if (sketch && params.scan) {
        ScanState& st = scan_state[static_cast<std::size_t>(r)];
        cand.swap(st.cand);
        hd.swap(st.hd);
        cand.resize(st.n);
        hd.resize(st.n);
        scanned = st.scanned;
        if (pscan && L_ > 1) {  // a slot found in several tables counts once
          std::size_t w = 0;
          for (std::size_t i = 0; i < cand.size(); ++i) {
            const std::uint32_t s = cand[i];
            const std::uint64_t bit = std::uint64_t{1} << (s & 63);
            if (vbits[s >> 6] & bit) continue;
            vbits[s >> 6] |= bit;
            cand[w] = s;
            hd[w++] = hd[i];
          }
          cand.resize(w);
          hd.resize(w);
          for (std::uint32_t s : cand) vbits[s >> 6] = 0;
        }
        if (num_candidates) num_candidates[qi] = st.admitted;
        if (cand.size() > R) {
          hist.assign(static_cast<std::size_t>(64 * W_) + 1, 0);
          for (std::uint16_t h : hd) ++hist[h];
          select_smallest(cand, hd, hist, R);
        }
      } else {
        // Probe codes of every table (prefetching their offsets), then bucket ranges
        // (prefetching their first entries), then the entries, so latencies overlap.
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
            if (rg.second > rg.first) {
              SIMDEX_PREFETCH(reinterpret_cast<const char*>(tab.slots.data() + rg.first));
              if (sketch) SIMDEX_PREFETCH(reinterpret_cast<const char*>(tab.sk.data() + rg.first));
            }
          }
        }
        if (!sketch) {
          for (std::int64_t t = 0; t < L_; ++t) {
            const Table& tab = tables_[static_cast<std::size_t>(t)];
            const std::uint32_t* sl = tab.slots.data();
            for (std::int64_t p = 0; p < probe_count[t]; ++p) {
              const auto rg = ranges[t * P + p];
              scanned += rg.second - rg.first;
              for (std::uint32_t i = rg.first; i < rg.second; ++i) visit(sl[i]);
              for_each_in_delta(tab, probe_code[t * P + p], visit);
            }
          }
          for (std::uint32_t s : cand) vbits[s >> 6] = 0;  // clear only the words we set
          std::size_t w = 0;
          for (std::uint32_t s : cand)
            if (admit(s)) cand[w++] = s;
          cand.resize(w);
          if (num_candidates) num_candidates[qi] = static_cast<std::int64_t>(cand.size());
        } else {
          // Word-0 filter beside the entries: h > T cannot be among the best budget0
          // (T only falls), so such entries are skipped without touching the slot.
          hist.assign(65, 0);
          std::size_t T = 64, n_le = 0;
          auto offer = [&](std::uint32_t s, std::uint16_t h) {
            const std::uint64_t bit = std::uint64_t{1} << (s & 63);
            std::uint64_t& wd = vbits[s >> 6];
            if (wd & bit) return;
            wd |= bit;
            cand.push_back(s);  // kept for clearing; admitted entries also get h
            if (!admit(s)) {
              hd.push_back(0xFFFF);
              return;
            }
            hd.push_back(h);
            ++hist[h];
            ++n_le;
            while (T > 0 && n_le - hist[T] >= budget0) n_le -= hist[T--];
          };
          for (std::int64_t t = 0; t < L_; ++t) {
            const Table& tab = tables_[static_cast<std::size_t>(t)];
            const std::uint32_t* sl = tab.slots.data();
            for (std::int64_t p = 0; p < probe_count[t]; ++p) {
              const auto rg = ranges[t * P + p];
              const std::size_t cnt = rg.second - rg.first;
              scanned += static_cast<std::int64_t>(cnt);
              if (cnt) {
                if (hbuf.size() < cnt) hbuf.resize(cnt);
                simd::hamming(tab.sk.data() + rg.first, static_cast<std::int64_t>(cnt), 1, qsk, hbuf.data());
                for (std::size_t i = 0; i < cnt; ++i)
                  if (hbuf[i] <= T) offer(sl[rg.first + i], hbuf[i]);
              }
              for_each_in_delta(tab, probe_code[t * P + p], [&](std::uint32_t s) {
                ++scanned;
                const std::uint16_t h = static_cast<std::uint16_t>(
                    __builtin_popcountll(sk_[static_cast<std::size_t>(s) * W_] ^ qsk[0]));
                if (h <= T) offer(s, h);
              });
            }
          }
          for (std::uint32_t s : cand) vbits[s >> 6] = 0;
          std::size_t w = 0;  // drop the refused and those above the final threshold
          for (std::size_t i = 0; i < cand.size(); ++i)
            if (hd[i] <= T) {
              cand[w] = cand[i];
              hd[w++] = hd[i];
            }
          cand.resize(w);
          hd.resize(w);
          if (num_candidates) num_candidates[qi] = static_cast<std::int64_t>(cand.size());
          select_smallest(cand, hd, hist, budget0);
          if (W_ > 1 && cand.size() > R) {  // rank the survivors on all 64*W bits
            simd::hamming_gather(sk_.data(), cand.data(), static_cast<std::int64_t>(cand.size()), W_, qsk,
                                 hd.data());
            hist.assign(static_cast<std::size_t>(64 * W_) + 1, 0);
            for (std::uint16_t h : hd) ++hist[h];
            select_smallest(cand, hd, hist, R);
          }
        }
      }
      if (num_scanned) num_scanned[qi] = scanned;

      // Exact re-rank: scores (higher is better), then the SIMD top-k filter.
      if (metric_ == Metric::kCosine) {
        const float inv = qnorm2 > 0 ? 1.0f / std::sqrt(qnorm2) : 0.0f;
        for (std::int64_t j = 0; j < d_; ++j) qn[j] = qv[j] * inv;
        qv = qn.data();
      }
      std::size_t nc = cand.size();
      if (range) {  // range search: the exact distance of every verified candidate
        auto& out = (*range)[static_cast<std::size_t>(qi)];
        for (std::uint32_t s : cand) {
          const float* xv = data_.data() + static_cast<std::size_t>(s) * d_;
          float dist;
          switch (metric_) {
            case Metric::kCosine: dist = std::min(2.0f, std::max(0.0f, 1.0f - simd::dot(qv, xv, d_) * inv_norm_[s])); break;
            case Metric::kInnerProduct: dist = -simd::dot(qv, xv, d_); break;
            case Metric::kSquaredL2: dist = sqdist_scalar(qv, xv, d_); break;
            default: dist = std::sqrt(sqdist_scalar(qv, xv, d_)); break;
          }
          if (dist <= radius) out.emplace_back(dist, slot_id_[s]);
        }
        continue;
      }
      const std::int64_t keep = refine > 0 ? refine * k : 0;
      if (!codes8_.empty() && keep > 0 && static_cast<std::int64_t>(nc) > keep) {
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
        // The best `keep` by (score, then position): the keep-th best score by selection,
        // then one ordered pass, so candidate order (and the exact pass) is deterministic.
        fv.assign(scores.begin(), scores.end());
        std::nth_element(fv.begin(), fv.begin() + (keep - 1), fv.end(), std::greater<float>());
        const float cut = fv[static_cast<std::size_t>(keep - 1)];
        std::size_t above = 0;
        for (std::size_t c = 0; c < nc; ++c) above += scores[c] > cut;
        std::size_t ties = static_cast<std::size_t>(keep) - above, w = 0;
        for (std::size_t c = 0; c < nc; ++c) {
          if (scores[c] > cut || (scores[c] == cut && ties > 0 && ties--)) cand[w++] = cand[c];
        }
        nc = w;
      }
      scores.resize(nc);
      cid.resize(nc);
      constexpr std::size_t kAhead = 12;
      const std::size_t row_bytes = static_cast<std::size_t>(d_) * 4;
      for (std::size_t c = 0; c < nc; ++c) {
        if (c + kAhead < nc) {
          const std::uint32_t s2 = cand[c + kAhead];
          const char* pf = reinterpret_cast<const char*>(data_.data() + static_cast<std::size_t>(s2) * d_);
          for (std::size_t off = 0; off < row_bytes; off += 64) SIMDEX_PREFETCH(pf + off);
          SIMDEX_PREFETCH(reinterpret_cast<const char*>(inv_norm_.data() + s2));
          SIMDEX_PREFETCH(reinterpret_cast<const char*>(slot_id_.data() + s2));
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
      idx_t* oi = ids + qi * k;
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

void LshIndex::search_exact(const float* q, std::int64_t nq, std::int64_t k, float* distances, idx_t* ids,
                            int num_threads) const {
  SIMDEX_CHECK_ARG(k >= 1, "k must be >= 1, got ", k);
  std::shared_lock<RwLock> lock(mutex_);
  const std::int64_t nslots = static_cast<std::int64_t>(slot_id_.size());
  // Removed slots still hold their rows: ask for k + dead and drop them.
  const std::int64_t kk = std::min<std::int64_t>(std::max<std::int64_t>(nslots, 1), k + dead_);
  std::vector<float> D(static_cast<std::size_t>(nq * kk));
  std::vector<idx_t> I(static_cast<std::size_t>(nq * kk));
  std::vector<float> aux(static_cast<std::size_t>(nslots));
  compute_row_aux(data_.data(), nslots, d_, metric_, aux.data());
  KnnParams kp;
  kp.num_threads = num_threads;
  knn_exact(q, nq, data_.data(), nslots, d_, kk, metric_, aux.data(), slot_id_.data(), D.data(), I.data(), kp);
  for (std::int64_t i = 0; i < nq; ++i) {
    std::int64_t w = 0;
    for (std::int64_t j = 0; j < kk && w < k; ++j) {
      const idx_t id = I[i * kk + j];
      if (id < 0) continue;  // a removed slot (id -1) or padding
      distances[i * k + w] = D[i * kk + j];
      ids[i * k + w++] = id;
    }
    for (; w < k; ++w) {
      distances[i * k + w] = std::numeric_limits<float>::infinity();
      ids[i * k + w] = -1;
    }
  }
}

void LshIndex::live_ids(idx_t* out) const {
  std::shared_lock<RwLock> lock(mutex_);
  std::int64_t w = 0;
  for (idx_t id : slot_id_)
    if (id >= 0) out[w++] = id;
}

void LshIndex::mean_unit(float* out) const {
  std::shared_lock<RwLock> lock(mutex_);
  std::vector<double> acc(static_cast<std::size_t>(d_), 0.0);
  std::int64_t n = 0;
  for (std::size_t s = 0; s < slot_id_.size(); ++s) {
    if (slot_id_[s] < 0) continue;
    const float* x = data_.data() + s * d_;
    for (std::int64_t j = 0; j < d_; ++j) acc[j] += static_cast<double>(x[j]) * inv_norm_[s];
    ++n;
  }
  for (std::int64_t j = 0; j < d_; ++j) out[j] = n ? static_cast<float>(acc[j] / n) : 0.0f;
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
                                             codes8_.capacity() + sk_.capacity() * 8 +
                                             all_planes_.capacity() * sizeof(float) + skp_.capacity() * 8 +
                                             slot_id_.capacity() * sizeof(idx_t) +
                                             planes_.capacity() * sizeof(float));
  // unordered_map: a node (key, value, next pointer, cached hash) plus a bucket pointer.
  b += static_cast<std::int64_t>(slot_of_.size() * 32 + slot_of_.bucket_count() * 8);
  for (const auto& t : tables_)
    b += static_cast<std::int64_t>(t.keys.capacity() * 8 + t.offs.capacity() * 4 +
                                   t.slots.capacity() * 4 + t.prefix.capacity() * 4 +
                                   t.delta.capacity() * 16 + t.sk.capacity() * 8 + t.skp.capacity() * 8);
  return b;
}

}  // namespace simdex
