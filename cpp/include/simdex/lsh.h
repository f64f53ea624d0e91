// Locality-sensitive hashing for angular (cosine) distance: sign random projections
// (hyperplane LSH), multi-table buckets, multi-probe and exact re-ranking.
//
// Hash family. A table t owns K hyperplanes planes[t*K + j], j in [0, K). The code of
// a vector x in table t is the K-bit integer whose bit j (LSB first) is
//     1  iff  <x, planes[t*K + j]> > 0   (computed in float32 by sgemm; 0 and -0 give 0).
// Two vectors at angle theta agree on one bit with probability 1 - theta / pi.
//
// Cost floor per query (L tables, K bits, P probes per table, C distinct candidates,
// d dimensions, float32, R = refine * k rows re-ranked exactly):
//   hashing   2*L*K*d flops (one GEMM row; the planes stay in cache across a query block)
//   probing   L*P bucket lookups: with direct-addressed tables one offsets read plus
//             the bucket's slot list, i.e. ~2 cache misses per probe
//   gather    the probed buckets' slot ids (4 bytes each, duplicates across tables
//             included) and a visited bitmap of n bits (50 KB for 400k: L1/L2-resident)
//   pre-rank  C rows of the int8 copy, one 64-byte line each for d <= 60 -> C * 64 bytes
//             of random reads and 2*C*d flops
//   re-rank   R float32 rows, R * 4*d bytes (160 * 200 B = 32 KB for k = 10, d = 50)
// The pre-rank term dominates: it is bound by memory latency (one random line per
// candidate), not by flops. On GloVe-50 (400k) recall@10 ~0.92 needs C ~ 9k-17k
// candidates, i.e. ~0.6-1.1 MB of random reads per query; at ~60-100 ns per
// uncovered miss and ~20-40 ns per prefetched one, that is the ~0.3-0.5 ms/query floor
// for this design on one core.
//
// Example:
// @code
//   std::vector<float> planes = ...;                 // L*K*d Gaussian floats
//   simdex::LshIndex index(d, L, K, planes.data(), simdex::Metric::kCosine);
//   index.add(x, n, ids, /*replace=*/false);
//   index.search(q, nq, 10, /*num_probes=*/8, D, I);  // D, I: nq*10 each
// @endcode
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstdint>
#include <shared_mutex>

#include "simdex/rwlock.h"
#include <unordered_map>
#include <vector>

#include "simdex/common.h"
#include "simdex/id_filter.h"

namespace simdex {

/// Largest number of bits per table (codes are uint64).
inline constexpr int kMaxHashBits = 64;

/// Pack the signs of projections into codes.
/// @param[in]  proj       n * (L*K) floats, row-major: proj[i*L*K + t*K + j] = <x_i, plane_{tK+j}>
/// @param[in]  n          rows
/// @param[in]  num_tables L >= 1
/// @param[in]  hash_bits  K in [1, 64]
/// @param[out] codes      n * L uint64: bit j of codes[i*L + t] = proj[i*L*K + t*K + j] > 0
void lsh_pack_signs(const float* proj, std::int64_t n, std::int64_t num_tables, int hash_bits,
                    std::uint64_t* codes);

/// Hash n vectors: one blocked sgemm (rows x L*K) followed by lsh_pack_signs.
/// Blocks of rows are fixed (independent of num_threads), so the codes do not
/// depend on the thread count.
/// @param[in]  x          n * d floats, row-major
/// @param[in]  planes     (L*K) * d floats, row-major (caller-owned)
/// @param[out] codes      n * L uint64, see lsh_pack_signs; with table_major the layout
///                        is codes[t*n + i] instead of codes[i*L + t]
/// @param[in]  num_threads <= 0: simdex::default_num_threads()
void lsh_hash(const float* x, std::int64_t n, std::int64_t d, const float* planes,
              std::int64_t num_tables, int hash_bits, std::uint64_t* codes, int num_threads = 0,
              bool table_major = false);

/// Multi-probe sequence of one table (hyperplane LSH, as in FALCONN / Lv et al.).
/// Flipping bit j moves the query across hyperplane j, at a "cost" of its margin
/// |<q, plane_j>|. The masks are the bit-flip sets in increasing order of summed
/// margin (ties: the order the generator meets them, a pure function of the margins).
/// The first mask is always 0 (the query's own bucket).
/// @param[in]  margins     K floats >= 0 (|projection| of each bit)
/// @param[in]  hash_bits   K in [1, 64]
/// @param[in]  num_probes  masks wanted, >= 1 (at most 2^K are produced)
/// @param[out] masks       num_probes uint64 flip masks (XOR with the query's code)
/// @return number of masks written (min(num_probes, 2^K))
std::int64_t lsh_probe_masks(const float* margins, int hash_bits, std::int64_t num_probes,
                             std::uint64_t* masks);

/// Incremental form of lsh_probe_masks for one table: yields the flip masks one at a
/// time in increasing order of summed margin (first mask 0 with score 0), e.g. to
/// rank the probes of several tables together. Reusable; no allocation once warm.
class ProbeGenerator {
 public:
  /// Start a new sequence. margins: K floats >= 0 (copied); K in [1, 64].
  void reset(const float* margins, int hash_bits);
  /// Score (summed margin) of the next mask; +inf when the sequence is exhausted.
  float peek() const;
  /// Write the next mask; returns false when all 2^K masks have been produced.
  bool next(std::uint64_t* mask);

 private:
  struct Node {
    float score;
    int max_pos;
    std::uint64_t set;  // over sorted positions
  };
  static bool worse(const Node& a, const Node& b) {
    return a.score != b.score ? a.score > b.score : a.set > b.set;
  }
  int K_ = 0;
  bool first_ = false;
  int order_[kMaxHashBits];
  float z_[kMaxHashBits];
  std::vector<Node> heap_;
};

/// Memory from std::malloc, or 2 MiB-aligned + madvise(MADV_HUGEPAGE) for blocks of
/// >= 4 MiB. Throws std::bad_alloc on failure; release with std::free.
void* huge_alloc(std::size_t bytes);

/// std::allocator that asks the kernel for transparent huge pages (madvise) for large
/// blocks: the index's big arrays are read at random, and 2 MiB pages keep those reads
/// from missing the TLB as well as the cache. Small blocks use plain malloc.
template <class T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) {}  // NOLINT
  T* allocate(std::size_t n) { return static_cast<T*>(::simdex::huge_alloc(n * sizeof(T))); }
  void deallocate(T* p, std::size_t) { std::free(p); }
  template <class U>
  bool operator==(const HugePageAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const HugePageAllocator<U>&) const { return false; }
};
template <class T>
using BigVector = std::vector<T, HugePageAllocator<T>>;

/// Bucket occupancy of one table, counting live vectors only.
struct LshTableStats {
  std::int64_t nonempty_buckets = 0;
  double mean_bucket_size = 0;  ///< over non-empty buckets
  std::int64_t max_bucket_size = 0;
};

/// Options of an LshIndex beyond its hash tables. The defaults give classic
/// hyperplane LSH (codes as lsh_hash computes them, no sketches).
struct LshOptions {
  /// Centre for hashing: when not empty (d floats), tables and sketches hash the unit
  /// vector minus the centre, x/|x| - c, instead of x. Centring balances the bits of
  /// data that sits in one cone (e.g. word embeddings), so buckets are even in size.
  std::vector<float> center;
  /// Sketch words per vector W in [0, 8]: 64*W further sign bits per vector, stored
  /// contiguously per slot, plus a copy of word 0 beside every bucket entry so that
  /// bucket members are filtered by Hamming distance without touching their rows.
  int sketch_words = 0;
  /// 64*W*d floats, row-major: the sketch hyperplanes (bit j of word w from row 64w+j).
  std::vector<float> sketch_planes;
  /// With sketches: each table also keeps every word of the sketch of its entries in
  /// bucket order (blocked planar), so a partitioned scan (scan_fraction < 1) reads
  /// each probed bucket's sketches contiguously. Needs hash_bits <= 16.
  bool table_sketches = false;
};

/// Search knobs of LshIndex::search.
struct LshSearchParams {
  std::int64_t num_probes = 1;  ///< buckets probed per table, >= 1
  /// Classic path (rerank == 0), kCosine: int8 pre-rank keeps refine*k candidates for
  /// the float32 pass (refine <= 0: every candidate in float32).
  std::int64_t refine = 16;
  /// > 0 (needs sketch_words > 0): only the rerank candidates nearest in sketch
  /// Hamming distance go on. Bucket entries are filtered on word 0 (kept beside the
  /// entry) with a running threshold that admits only entries that can still be among
  /// the best `rerank * (W > 1 ? 4 : 1)`; with W > 1 the survivors are ranked again on
  /// the full 64*W bits. Under kCosine with W == 1 or d <= 64 the index also keeps
  /// the int8 copy, and the rerank survivors pass through the int8 stage (refine) as
  /// above: one cache line per candidate for d <= 60 instead of ceil(d/16).
  std::int64_t rerank = 0;
  /// With rerank > 0: rank every stored vector's full sketch (a sequential popcount
  /// scan) instead of probing buckets. Pays for small and medium collections.
  bool scan = false;
  /// With scan: the share of the stored sketches compared per query, summed over the
  /// tables. 1 compares all of them; below 1 each table compares the sketches of its
  /// best buckets (least summed |margin| of the flipped bits first) until it has
  /// covered scan_fraction * size / num_tables entries (needs table_sketches).
  double scan_fraction = 1.0;
  int num_threads = 0;  ///< <= 0: simdex::default_num_threads()
  /// Ids that may (deny: may not) be returned, or nullptr (caller-owned). Checked per
  /// candidate where removed slots are dropped, so filtered-out vectors are neither
  /// counted nor re-ranked.
  const IdFilter* filter = nullptr;
};

/// Multi-table LSH index with exact re-ranking.
///
/// Storage: the vectors once, row-major, in "slots" (append order); per table a
/// sorted main part (distinct codes, offsets, slot lists, plus a direct-indexed
/// prefix table on the top code bits) and a small sorted delta that absorbs
/// incremental adds and is merged into the main part when it exceeds 1/8 of it.
/// remove() marks slots dead (they are skipped at once and never returned) and the
/// index compacts itself (no re-hashing) once more than half of the slots are dead.
///
/// Candidate pipeline of a query (search): probe buckets (or scan all sketches) ->
/// de-duplicate (visited bitmap, O(candidates) to clear) -> admit (one place: drops
/// removed slots; a per-candidate predicate such as an id filter belongs there) ->
/// [sketch filter] -> exact distance -> top-k with ties to the smaller id.
///
/// Cost floor with sketches (per query, L tables, P probes, E bucket entries read,
/// R re-ranked rows): L*P bucket look-ups (~1-2 cache misses each), E * 12 bytes read
/// sequentially (slot + word-0 sketch) with one popcount each, R random rows of 4*d
/// bytes and 2*R*d flops. Scan mode: n * 8W bytes read sequentially + R rows.
///
/// Concurrent search() calls are safe; add/remove/reset/rebuild take an exclusive lock.
class LshIndex {
 public:
  /// @param d          dimension >= 1
  /// @param num_tables L >= 1
  /// @param hash_bits  K in [1, 64]
  /// @param planes     L*K*d floats, copied
  /// @param metric     re-ranking distance (hashing is always angular)
  /// @param options    centring and sketches (see LshOptions), copied
  LshIndex(std::int64_t d, std::int64_t num_tables, int hash_bits, const float* planes,
           Metric metric, const LshOptions& options = LshOptions());

  /// Replace the hash configuration (tables, centring, sketches) and re-hash every live
  /// vector (removed slots are dropped). Ids and vectors are unchanged.
  void rebuild(std::int64_t num_tables, int hash_bits, const float* planes, const LshOptions& options,
               int num_threads = 0);

  /// Add n vectors (x: n*d floats, finite; ids: n distinct ids >= 0). With replace,
  /// an existing id is removed first; otherwise an existing id is an error.
  /// All-or-nothing on invalid input.
  void add(const float* x, std::int64_t n, const idx_t* ids, bool replace, int num_threads = 0);

  /// Remove n ids (all-or-nothing). @throws UnknownId (flat_index.h) for an absent id.
  void remove(const idx_t* ids, std::int64_t n);

  void reset();

  /// k-NN of nq queries: union of the candidates of num_probes buckets per table,
  /// de-duplicated, re-ranked by the exact distance; ties broken by the smaller id.
  /// @param[in]  q          nq*d floats
  /// @param[in]  num_probes buckets probed per table, >= 1 (1 = the query's bucket only)
  /// @param[out] distances  nq*k floats ascending (+inf where fewer than k candidates)
  /// @param[out] ids        nq*k ids (-1 where fewer than k candidates)
  /// @param[out] num_candidates  nq counts of distinct live candidates, or nullptr
  ///
  /// Under kCosine, when there are more than refine*k candidates, an int8 copy of the
  /// unit vectors (one cache line per vector for d <= 64) ranks them first and only
  /// the best refine*k are re-ranked with the float32 vectors (refine <= 0: re-rank
  /// every candidate exactly). The returned distances are always exact.
  ///
  /// @param[in]  filter     ids that may (deny: may not) be returned, or nullptr; checked
  ///                        per candidate where removed slots are dropped, so filtered-out
  ///                        vectors are neither counted nor re-ranked
  void search(const float* q, std::int64_t nq, std::int64_t k, std::int64_t num_probes,
              float* distances, idx_t* ids, std::int64_t* num_candidates = nullptr,
              int num_threads = 0, std::int64_t refine = 16, const IdFilter* filter = nullptr) const {
    LshSearchParams p;
    p.num_probes = num_probes;
    p.num_threads = num_threads;
    p.refine = refine;
    p.filter = filter;
    search(q, nq, k, p, distances, ids, num_candidates);
  }

  /// search() with every knob (LshSearchParams). Results depend on the knobs, never on
  /// the thread count. num_scanned (nq counts or nullptr): bucket entries (or, with
  /// scan, sketches) examined per query; num_candidates: distinct live candidates found
  /// (classic path) or, with rerank > 0, those that passed the sketch threshold.
  void search(const float* q, std::int64_t nq, std::int64_t k, const LshSearchParams& params,
              float* distances, idx_t* ids, std::int64_t* num_candidates = nullptr,
              std::int64_t* num_scanned = nullptr) const;

  /// Range search over the same candidates as search() (params.filter applied where
  /// they are admitted): every candidate within exact distance radius (<=) of its
  /// query, into result (CSR, sorted by distance then id). Approximate: a vector in
  /// range that is not a candidate (no shared probed bucket; with rerank > 0, not among
  /// the rerank nearest in sketch distance) is missed. The int8 stage is not used.
  void range_search(const float* q, std::int64_t nq, float radius, const LshSearchParams& params,
                    RangeResult& result, std::int64_t* num_candidates = nullptr,
                    std::int64_t* num_scanned = nullptr) const;

  /// range_search() with the classic knobs only.
  void range_search(const float* q, std::int64_t nq, float radius, std::int64_t num_probes,
                    RangeResult& result, std::int64_t* num_candidates = nullptr,
                    int num_threads = 0, const IdFilter* filter = nullptr) const {
    LshSearchParams p;
    p.num_probes = num_probes;
    p.num_threads = num_threads;
    p.filter = filter;
    range_search(q, nq, radius, p, result, num_candidates);
  }

  /// Exact k-NN over the stored live vectors (ground truth for self-configuration).
  void search_exact(const float* q, std::int64_t nq, std::int64_t k, float* distances, idx_t* ids,
                    int num_threads = 0) const;

  /// Ids of the live vectors in slot order (size() of them).
  void live_ids(idx_t* out) const;
  /// Mean of the stored live unit vectors x/|x| (d floats, summed in double in slot order).
  void mean_unit(float* out) const;

  /// Copy n stored vectors into out (n*d floats). @throws UnknownId.
  void get_vectors(const idx_t* ids, std::int64_t n, float* out) const;
  /// out[i] = 1 if ids[i] is present.
  void contains(const idx_t* ids, std::int64_t n, std::uint8_t* out) const;
  /// Live vectors (size()*d) and ids (size()) in slot order.
  void export_all(float* vectors, idx_t* ids) const;

  std::int64_t size() const;
  std::int64_t dim() const { return d_; }
  std::int64_t num_tables() const { return L_; }
  int hash_bits() const { return K_; }
  int sketch_words() const { return W_; }
  bool table_sketches() const { return table_sketches_; }
  Metric metric() const { return metric_; }

  /// Occupancy of table t (0 <= t < L).
  LshTableStats table_stats(std::int64_t t) const;
  /// Approximate heap bytes held (vectors, ids, tables, id map).
  std::int64_t memory_bytes() const;

 private:
  struct Table {
    // Main part, keyed form: keys sorted ascending and distinct; slots of key i are
    // slots[offs[i] .. offs[i+1]), ascending. Direct form (direct == true): no keys,
    // offs has 2^K + 1 entries and the slots of code c are slots[offs[c] .. offs[c+1]).
    bool direct = false;
    std::vector<std::uint64_t> keys;
    BigVector<std::uint32_t> offs{0};
    BigVector<std::uint32_t> slots;
    int prefix_bits = 0;                 // top bits of a K-bit code indexed directly
    std::vector<std::uint32_t> prefix;   // 2^prefix_bits + 1 positions into keys
    // Delta: (code, slot) pairs sorted ascending.
    std::vector<std::pair<std::uint64_t, std::uint32_t>> delta;
    // With sketches: word 0 of the sketch of slots[i], beside it (same order).
    BigVector<std::uint64_t> sk;
    // With table_sketches: all W words of the sketch of slots[i], blocked planar
    // (simd::hamming_planar), padded with zero rows to a multiple of 8.
    BigVector<std::uint64_t> skp;
  };

  /// search() and range_search(): k-NN into distances/ids, or, with range set, the
  /// admitted candidates within radius into (*range)[query].
  void search_impl(const float* q, std::int64_t nq, std::int64_t k, const LshSearchParams& params,
                   float* distances, idx_t* ids, std::int64_t* num_candidates, std::int64_t* num_scanned,
                   float radius, std::vector<std::vector<std::pair<float, idx_t>>>* range) const;
  void configure(std::int64_t num_tables, int hash_bits, const float* planes, const LshOptions& options);
  /// Codes (table-major, n per table) and sketches (n*W words) of n rows; inv: 1/|x|.
  void hash_rows(const float* x, std::int64_t n, const float* inv, std::uint64_t* codes,
                 std::uint64_t* sketches, int num_threads, bool interruptible = true) const;
  bool wants_codes8() const;
  void build_codes8(const float* x, const float* inv, std::int64_t first, std::int64_t n, int nt);
  void index_slots(const std::uint64_t* codes, std::int64_t first, std::int64_t n, int nt);
  void add_locked(const float* x, std::int64_t n, const idx_t* ids, const std::uint64_t* codes,
                  const std::uint64_t* sketches, const float* inv, int num_threads);
  void fill_table_sketch(Table& t) const;
  void update_planar(std::size_t first_slot);  // skp_ from sk_ for slots >= first_slot
  std::int64_t size_unlocked() const { return static_cast<std::int64_t>(slot_of_.size()); }

  void build_prefix(Table& t) const;
  void merge_delta(Table& t) const;
  /// Counting-sort merge of main + delta + n_new codes (slots first_slot + i).
  void merge_delta_direct(Table& t, const std::uint64_t* new_codes = nullptr, std::size_t n_new = 0,
                          std::uint32_t first_slot = 0) const;
  bool direct_pays(std::size_t entries) const;
  /// Install a main part given in keyed form, choosing the direct form when it pays.
  void finalize(Table& t, std::vector<std::uint64_t>& keys, BigVector<std::uint32_t>& offs,
                BigVector<std::uint32_t>& slots) const;
  template <class F>
  void for_each_group(const Table& t, F&& f) const;  // f(code, begin, end) per non-empty bucket
  std::pair<std::uint32_t, std::uint32_t> main_range(const Table& t, std::uint64_t code) const;
  template <class F>
  void for_each_in_delta(const Table& t, std::uint64_t code, F&& f) const;
  void remove_locked(idx_t id);
  void compact_locked();

  std::int64_t d_, L_;
  int K_;
  Metric metric_;
  std::vector<float> planes_;
  int W_ = 0;                       // sketch words per vector
  bool table_sketches_ = false;     // Table::skp kept (partitioned scan)
  std::vector<float> all_planes_;   // (L*K + 64W) * d: table planes, then sketch planes
  std::vector<float> center_;       // d floats or empty
  std::vector<float> offsets_;      // L*K + 64W: <center, plane> (centred hashing)
  BigVector<std::uint64_t> sk_;     // slots * W sketch words
  BigVector<std::uint64_t> skp_;    // the same, blocked planar (simd::hamming_planar) for the scan
  BigVector<float> data_;        // slots * d
  std::vector<float> inv_norm_;  // slots: 1/|x| (0 for a zero row), used by kCosine
  // kCosine pre-filter: int8 copy of each unit row plus its float scale in the row's
  // last 4 bytes (code_stride_ bytes: one cache line for d <= 60), so
  // approx_cos(q, x) = scale * <q/|q|, codes>.
  std::int64_t code_stride_ = 0;
  BigVector<std::int8_t> codes8_;
  std::vector<idx_t> slot_id_;   // slots: id, or -1 when the slot is dead
  std::int64_t dead_ = 0;
  std::vector<std::uint64_t> dead_bits_;  // one bit per slot, 1 = removed
  std::unordered_map<idx_t, std::uint32_t> slot_of_;
  std::vector<Table> tables_;
  mutable RwLock mutex_;
};

}  // namespace simdex
