// Search-time filters over ids, and the result layout of range searches.
//
// A filter is a sorted list of distinct ids that are either the only ones a search
// may return (allow-list) or the ones it must not return (deny-list). It is applied
// where each candidate row is scored, never by fetching more results and dropping
// some afterwards.
//
// Example:
// @code
//   std::vector<simdex::idx_t> allowed = {3, 7, 42};      // sorted, distinct
//   simdex::IdFilter f{allowed.data(), 3, /*deny=*/false};
//   index.search(q, nq, 10, D, I, simdex::KnnParams(), &f);
// @endcode
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "simdex/common.h"

namespace simdex {

struct IdFilter {
  const idx_t* ids = nullptr;  ///< n ids, sorted ascending and distinct (caller-owned)
  std::int64_t n = 0;
  bool deny = false;  ///< false: only these ids may be returned; true: these ids may not

  /// Whether id passes the filter (O(log n)).
  bool allows(idx_t id) const { return std::binary_search(ids, ids + n, id) != deny; }
};

/// An IdFilter made fast to query many times: when its ids are dense enough (a
/// bitmap over [0, max id] costs at most 64 bits per listed id, plus 1 MiB), each check
/// reads one bit instead of binary-searching the list. Build one per search call.
class PreparedFilter {
 public:
  explicit PreparedFilter(const IdFilter& f) : f_(f) {
    if (f.n == 0 || f.ids[0] < 0) return;
    const idx_t hi = f.ids[f.n - 1];
    if (hi >= (idx_t{1} << 36) || hi / 64 > f.n + (idx_t{1} << 17)) return;  // too sparse
    bits_.assign(static_cast<std::size_t>(hi / 64 + 1), 0);
    for (std::int64_t i = 0; i < f.n; ++i) bits_[f.ids[i] >> 6] |= std::uint64_t{1} << (f.ids[i] & 63);
    hi_ = hi;
  }
  /// Whether id passes the filter.
  bool allows(idx_t id) const {
    if (bits_.empty()) return f_.allows(id);
    const bool in = id >= 0 && id <= hi_ && (bits_[static_cast<std::size_t>(id >> 6)] >> (id & 63) & 1);
    return in != f_.deny;
  }
  /// Whether allows() reads a bitmap (O(1)) rather than searching the list.
  bool dense() const { return !bits_.empty(); }
  const IdFilter& filter() const { return f_; }

 private:
  IdFilter f_;
  std::vector<std::uint64_t> bits_;
  idx_t hi_ = -1;
};

/// Result of a range search over nq queries, in the CSR layout of faiss'
/// RangeSearchResult: the hits of query i are distances / labels
/// [lims[i], lims[i + 1]), sorted by ascending distance, ties by ascending id.
struct RangeResult {
  std::vector<std::int64_t> lims;  ///< nq + 1 offsets, lims[0] = 0
  std::vector<float> distances;
  std::vector<idx_t> labels;

  /// Fill from per-query (distance, id) lists (sorted here).
  void assemble(std::vector<std::vector<std::pair<float, idx_t>>>& per_query) {
    lims.assign(per_query.size() + 1, 0);
    for (std::size_t i = 0; i < per_query.size(); ++i) {
      std::sort(per_query[i].begin(), per_query[i].end());
      lims[i + 1] = lims[i] + static_cast<std::int64_t>(per_query[i].size());
    }
    distances.resize(static_cast<std::size_t>(lims.back()));
    labels.resize(distances.size());
    for (std::size_t i = 0; i < per_query.size(); ++i) {
      std::int64_t w = lims[i];
      for (const auto& e : per_query[i]) {
        distances[w] = e.first;
        labels[w++] = e.second;
      }
      per_query[i] = {};
    }
  }
};

}  // namespace simdex
