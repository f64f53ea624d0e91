// FlatIndex: an id-addressed store of vectors with exact k-NN search.
//
// Vectors are stored as given (float32, row-major) with a per-row auxiliary value
// (see compute_row_aux), so the user's vectors can be read back unchanged. Ids are
// user-chosen non-negative 64-bit integers; removal swaps the last row into the hole
// (O(d)). Concurrent search() calls are safe; add/remove take an exclusive lock.
//
// With fp16_prefilter (the default), the index also keeps each row's unit direction
// in float16 (2 bytes per component, +50% memory) and its norm; searches with few
// queries, which are bound by memory bandwidth, read that copy first and re-score
// only the rows that can still be among the k best (knn_exact_prefiltered), so they
// return the same exact neighbours reading about half the bytes.
//
// Example:
// @code
//   simdex::FlatIndex index(128, simdex::Metric::kCosine);
//   index.add(x, n, ids, /*replace=*/false);
//   index.search(q, nq, 10, D, I);
// @endcode
#pragma once

#include <atomic>
#include <mutex>
#include <cstdint>
#include <shared_mutex>

#include "simdex/rwlock.h"
#include <stdexcept>
#include <unordered_map>
#include <vector>

#include "simdex/common.h"
#include "simdex/exact_knn.h"

namespace simdex {

/// Thrown for ids that are not in an index (Python KeyError).
struct UnknownId : std::runtime_error {
  explicit UnknownId(idx_t id)
      : std::runtime_error(detail::concat("id ", id, " is not in the index")), id(id) {}
  idx_t id;
};

class FlatIndex {
 public:
  /// @param d       dimension, >= 1
  /// @param metric  distance used by search()
  /// @param fp16_prefilter  keep the float16 shadow (ignored on CPUs without F16C)
  FlatIndex(std::int64_t d, Metric metric, bool fp16_prefilter = true);

  /// Add n vectors with the given ids.
  /// @param[in] x        n * d floats, row-major, finite
  /// @param[in] ids      n ids, each >= 0 and distinct
  /// @param[in] replace  when true, an id that is already present has its vector
  ///                     overwritten; when false it is an error
  /// The call is all-or-nothing: on error nothing is added.
  void add(const float* x, std::int64_t n, const idx_t* ids, bool replace);

  /// Remove n ids (all-or-nothing). @throws UnknownId for the first id not present.
  void remove(const idx_t* ids, std::int64_t n);

  /// Remove everything.
  void reset();

  /// Exact k-NN, see knn_exact. distances/ids: nq * k each, owned by the caller.
  /// @param[in] filter  ids the search may (or, with deny, may not) return, or nullptr.
  ///                    Few passing rows are scored in place (few queries) or gathered
  ///                    (many); otherwise a row mask skips rows in the usual scan.
  void search(const float* q, std::int64_t nq, std::int64_t k, float* distances, idx_t* ids,
              const KnnParams& params = KnnParams(), const IdFilter* filter = nullptr) const;

  /// Every stored vector within distance radius (<=) of each query; see range_exact.
  void range_search(const float* q, std::int64_t nq, float radius, RangeResult& result,
                    const KnnParams& params = KnnParams(), const IdFilter* filter = nullptr) const;

  /// Copy the stored vectors of n ids into out (n * d floats). @throws UnknownId.
  void get_vectors(const idx_t* ids, std::int64_t n, float* out) const;

  /// Whether each of n ids is present (out: n bytes, 1 = present).
  void contains(const idx_t* ids, std::int64_t n, std::uint8_t* out) const;

  /// Copy all vectors (size() * d floats) and ids (size()) in storage order.
  void export_all(float* vectors, idx_t* ids) const;

  /// A read-only index over caller-owned memory (a memory-mapped file): the vectors
  /// and ids are used in place, never copied; only the per-row values of
  /// compute_row_aux (4 bytes a row) are computed and owned by the index.
  /// @param[in] x    n * d floats, row-major, finite
  /// @param[in] ids  n distinct ids >= 0
  /// Both buffers must outlive the index. add/remove/reset throw
  /// std::invalid_argument; there is no float16 shadow. The id -> row map that
  /// get_vectors/contains/filters need is built on first use.
  /// @return a new index owned by the caller.
  static FlatIndex* view(std::int64_t d, Metric metric, const float* x, const idx_t* ids,
                         std::int64_t n, int num_threads = 0);
  bool is_view() const { return view_; }

  std::int64_t size() const;
  std::int64_t dim() const { return d_; }
  Metric metric() const { return metric_; }
  /// Whether the float16 shadow is kept (requested and supported by this CPU).
  bool fp16_prefilter() const { return half_on_; }

  /// Counters since construction: queries answered through the float16 pre-filter,
  /// and rows they re-scored in float32 (the filter's selectivity).
  struct PrefilterStats {
    std::int64_t queries = 0;
    std::int64_t rescored = 0;
  };
  PrefilterStats prefilter_stats() const;

 private:
  std::int64_t d_;
  Metric metric_;
  std::vector<float> data_;  // size() * d_
  std::vector<float> aux_;   // size(), see compute_row_aux
  std::vector<idx_t> ids_;   // size()
  bool half_on_;
  std::vector<std::uint16_t> half_;  // fp16 directions, panel layout (fp16.h)
  std::vector<float> norms_;         // |x| per row (+inf: always re-ranked)

  mutable std::atomic<std::int64_t> pf_queries_{0}, pf_rescored_{0};

  /// Row mask of filter (1 = may be returned) and the number of rows it keeps.
  std::int64_t filter_rows(const IdFilter& filter, std::vector<std::uint8_t>& mask) const;
  void set_half_row(std::int64_t row, const float* x, float* scratch);
  mutable std::unordered_map<idx_t, std::int64_t> row_of_;  // built lazily for a view
  mutable RwLock mutex_;
  // View mode (see view()): external buffers instead of data_ / aux_ / ids_.
  bool view_ = false;
  const float* ext_x_ = nullptr;
  const idx_t* ext_ids_ = nullptr;
  std::int64_t ext_n_ = 0;
  mutable std::once_flag map_once_;
  std::int64_t rows() const { return view_ ? ext_n_ : static_cast<std::int64_t>(ids_.size()); }
  const float* xp() const { return view_ ? ext_x_ : data_.data(); }
  const float* auxp() const { return aux_.data(); }
  const idx_t* idp() const { return view_ ? ext_ids_ : ids_.data(); }
  void ensure_map() const;  // a view's row_of_, built once
  void check_writable() const;
};

}  // namespace simdex
