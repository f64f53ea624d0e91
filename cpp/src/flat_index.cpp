#include "simdex/flat_index.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <unordered_set>

#include "fp16.h"
#include "simdex/threading.h"
#include "simd.h"

namespace simdex {

FlatIndex::FlatIndex(std::int64_t d, Metric metric, bool fp16_prefilter)
    : d_(d), metric_(metric), half_on_(fp16_prefilter && fp16::supported()) {
  SIMDEX_CHECK_ARG(d >= 1, "dim must be >= 1, got ", d);
}

void FlatIndex::set_half_row(std::int64_t row, const float* x, float* scratch) {
  const std::size_t need = static_cast<std::size_t>(fp16::storage_size(row + 1, d_));
  if (half_.size() < need) half_.resize(need, 0);  // new panels start as zero rows
  if (norms_.size() <= static_cast<std::size_t>(row)) norms_.resize(row + 1);
  // The norm is computed as compute_row_aux does (float32 dot), so the bound of
  // knn_exact_prefiltered relates the shadow to the scores the exact path computes.
  const float nn = simd::dot(x, x, d_);
  bool zero = true;
  for (std::int64_t j = 0; j < d_ && zero; ++j) zero = x[j] == 0.0f;
  std::fill(scratch, scratch + d_, 0.0f);
  if (zero) {
    norms_[row] = 0.0f;  // every score of a zero row is exactly 0
  } else if (!(nn >= 1e-30f) || !std::isfinite(nn)) {
    // Squares underflow or overflow float32: no useful bound, so always re-rank it.
    norms_[row] = std::numeric_limits<float>::infinity();
  } else {
    const float norm = std::sqrt(nn), inv = 1.0f / norm;
    for (std::int64_t j = 0; j < d_; ++j) scratch[j] = x[j] * inv;
    norms_[row] = norm;
  }
  fp16::store_row(half_.data(), row, d_, scratch);
}

FlatIndex* FlatIndex::view(std::int64_t d, Metric metric, const float* x, const idx_t* ids,
                           std::int64_t n, int num_threads) {
  SIMDEX_CHECK_ARG(n >= 0, "n must be >= 0, got ", n);
  auto* index = new FlatIndex(d, metric, /*fp16_prefilter=*/false);
  index->view_ = true;
  index->ext_x_ = x;
  index->ext_ids_ = ids;
  index->ext_n_ = n;
  if (metric != Metric::kInnerProduct) {
    index->aux_.resize(static_cast<std::size_t>(n));
    constexpr std::int64_t kChunk = 16384;  // rows per task
    try {
      parallel_for((n + kChunk - 1) / kChunk, num_threads, [&](std::int64_t c, int) {
        const std::int64_t r0 = c * kChunk, m = std::min(kChunk, n - r0);
        compute_row_aux(x + r0 * d, m, d, metric, index->aux_.data() + r0);
      });
    } catch (...) {
      delete index;
      throw;
    }
  }
  return index;
}

void FlatIndex::ensure_map() const {
  if (!view_) return;
  std::call_once(map_once_, [this] {
    row_of_.reserve(static_cast<std::size_t>(ext_n_));
    for (std::int64_t r = 0; r < ext_n_; ++r) row_of_.emplace(ext_ids_[r], r);
  });
}

void FlatIndex::check_writable() const {
  SIMDEX_CHECK_ARG(!view_, "this index is a read-only view of a memory-mapped file; copy it "
                   "(copy.copy(index)) or load it without mmap=True to modify it");
}

std::int64_t FlatIndex::size() const {
  std::shared_lock<RwLock> lock(mutex_);
  return rows();
}

namespace {
template <class T>
void reserve_geometric(std::vector<T>& v, std::size_t need) {
  if (need > v.capacity()) v.reserve(std::max(need, 2 * v.capacity()));
}
}  // namespace

void FlatIndex::add(const float* x, std::int64_t n, const idx_t* ids, bool replace) {
  SIMDEX_CHECK_ARG(n >= 0, "n must be >= 0, got ", n);
  check_writable();
  std::unique_lock<RwLock> lock(mutex_);
  // Validate everything before changing anything.
  std::unordered_set<idx_t> seen;
  seen.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    SIMDEX_CHECK_ARG(ids[i] >= 0, "ids must be >= 0, got ", ids[i], " at position ", i);
    SIMDEX_CHECK_ARG(seen.insert(ids[i]).second, "id ", ids[i],
                     " appears more than once in this call");
    SIMDEX_CHECK_ARG(replace || row_of_.find(ids[i]) == row_of_.end(), "id ", ids[i],
                     " is already in the index; pass replace=True to overwrite it or "
                     "remove it first");
  }
  std::vector<float> aux(static_cast<std::size_t>(n), 0.0f);
  compute_row_aux(x, n, d_, metric_, aux.data());
  const std::int64_t old = static_cast<std::int64_t>(ids_.size());
  // Geometric growth: reserve(exact size) on every call reallocated, i.e. copied the
  // whole store, on every add, which made adding one vector O(size()).
  reserve_geometric(data_, static_cast<std::size_t>((old + n) * d_));
  std::vector<float> scratch(half_on_ ? static_cast<std::size_t>(d_) : 0);
  if (half_on_) reserve_geometric(half_, static_cast<std::size_t>(fp16::storage_size(old + n, d_)));
  for (std::int64_t i = 0; i < n; ++i) {
    auto it = row_of_.find(ids[i]);
    if (it != row_of_.end()) {
      std::memcpy(data_.data() + it->second * d_, x + i * d_, sizeof(float) * d_);
      aux_[it->second] = aux[i];
      if (half_on_) set_half_row(it->second, x + i * d_, scratch.data());
      continue;
    }
    row_of_.emplace(ids[i], static_cast<std::int64_t>(ids_.size()));
    data_.insert(data_.end(), x + i * d_, x + (i + 1) * d_);
    aux_.push_back(aux[i]);
    ids_.push_back(ids[i]);
    if (half_on_) set_half_row(static_cast<std::int64_t>(ids_.size()) - 1, x + i * d_, scratch.data());
  }
}

void FlatIndex::remove(const idx_t* ids, std::int64_t n) {
  check_writable();
  std::unique_lock<RwLock> lock(mutex_);
  for (std::int64_t i = 0; i < n; ++i)
    if (row_of_.find(ids[i]) == row_of_.end()) throw UnknownId(ids[i]);
  for (std::int64_t i = 0; i < n; ++i) {
    auto it = row_of_.find(ids[i]);
    if (it == row_of_.end()) continue;  // listed twice in this call
    const std::int64_t row = it->second, last = static_cast<std::int64_t>(ids_.size()) - 1;
    if (row != last) {
      std::memcpy(data_.data() + row * d_, data_.data() + last * d_, sizeof(float) * d_);
      aux_[row] = aux_[last];
      ids_[row] = ids_[last];
      row_of_[ids_[row]] = row;
      if (half_on_) {
        fp16::copy_row(half_.data(), row, last, d_);
        norms_[row] = norms_[last];
      }
    }
    if (half_on_) {
      fp16::clear_row(half_.data(), last, d_);
      half_.resize(static_cast<std::size_t>(fp16::storage_size(last, d_)));
      norms_.pop_back();
    }
    row_of_.erase(it);
    data_.resize(static_cast<std::size_t>(last * d_));
    aux_.pop_back();
    ids_.pop_back();
  }
}

void FlatIndex::reset() {
  check_writable();
  std::unique_lock<RwLock> lock(mutex_);
  data_.clear();
  data_.shrink_to_fit();
  aux_.clear();
  ids_.clear();
  row_of_.clear();
  half_.clear();
  half_.shrink_to_fit();
  norms_.clear();
}

std::int64_t FlatIndex::filter_rows(const IdFilter& filter, std::vector<std::uint8_t>& mask) const {
  const std::int64_t nb = rows();
  const PreparedFilter pf(filter);
  // A list much shorter than the index: one hash lookup per listed id (~100 ns each)
  // beats a pass over every row's id (~5 ns each).
  if ((pf.dense() && 32 * filter.n >= nb) || filter.n > nb / 4) {
    // One sequential pass over the ids (a bit read each, or a binary search when the
    // ids are too sparse for a bitmap but the list is long): no random hash lookups.
    mask.resize(static_cast<std::size_t>(nb));
    const idx_t* rid = idp();
    std::int64_t kept = 0;
    for (std::int64_t r = 0; r < nb; ++r) kept += mask[static_cast<std::size_t>(r)] = pf.allows(rid[r]) ? 1 : 0;
    return kept;
  }
  // A short list of sparse ids: one hash lookup per listed id.
  ensure_map();
  mask.assign(static_cast<std::size_t>(nb), filter.deny ? 1 : 0);
  std::int64_t kept = filter.deny ? nb : 0;
  for (std::int64_t i = 0; i < filter.n; ++i) {
    auto it = row_of_.find(filter.ids[i]);
    if (it == row_of_.end()) continue;
    std::uint8_t& m = mask[static_cast<std::size_t>(it->second)];
    const std::uint8_t want = filter.deny ? 0 : 1;
    if (m != want) {
      m = want;
      kept += filter.deny ? -1 : 1;
    }
  }
  return kept;
}

void FlatIndex::search(const float* q, std::int64_t nq, std::int64_t k, float* distances,
                       idx_t* labels, const KnnParams& params, const IdFilter* filter) const {
  std::shared_lock<RwLock> lock(mutex_);
  const std::int64_t nb = rows();
  const float* aux = metric_ == Metric::kInnerProduct ? nullptr : auxp();
  const float* data = xp();
  const idx_t* rid = idp();
  if (filter != nullptr) {
    // Per-thread mask and row list (1 and <= 8 bytes a row) reused across calls: fresh
    // ones would be page-faulted in on every search, a large share of a selective
    // single-query search.
    thread_local std::vector<std::uint8_t> mask;
    const std::int64_t kept = filter_rows(*filter, mask);
    const bool few_queries = nq <= params.prefilter_max_queries;
    if (few_queries && 8 * kept < nb) {
      // Few rows pass and few queries (bound by memory): score the rows in place.
      thread_local std::vector<std::int64_t> sel;
      sel.clear();
      for (std::int64_t r = 0; r < nb; ++r)
        if (mask[static_cast<std::size_t>(r)]) sel.push_back(r);
      knn_exact_rows(q, nq, data, d_, sel.data(), kept, k, metric_, aux, rid, distances, labels, params);
      return;
    }
    if (!few_queries && 2 * kept < nb) {
      // Few rows pass: copy them out and search only those (a GEMM over the subset
      // costs kept/nb of the full one, plus one gather).
      std::vector<float> xs(static_cast<std::size_t>(kept * d_)), as(static_cast<std::size_t>(kept));
      std::vector<idx_t> is(static_cast<std::size_t>(kept));
      std::int64_t w = 0;
      for (std::int64_t r = 0; r < nb; ++r) {
        if (!mask[static_cast<std::size_t>(r)]) continue;
        std::memcpy(xs.data() + w * d_, data + r * d_, sizeof(float) * d_);
        if (aux) as[w] = aux[r];
        is[w++] = rid[r];
      }
      knn_exact(q, nq, xs.data(), kept, d_, k, metric_, aux ? as.data() : nullptr, is.data(),
                distances, labels, params);
      return;
    }
    KnnParams p = params;
    p.row_mask = mask.data();
    HalfShadow shadow;  // most rows pass: the usual scan (float16 pass included), masked
    if (half_on_) {
      shadow.panels = half_.data();
      shadow.norms = norms_.data();
    }
    knn_exact_prefiltered(q, nq, data, nb, d_, k, metric_, aux, rid, shadow, distances, labels, p);
    return;
  }
  HalfShadow shadow;
  if (half_on_) {
    shadow.panels = half_.data();
    shadow.norms = norms_.data();
  }
  const std::int64_t rescored = knn_exact_prefiltered(q, nq, data, nb, d_, k, metric_, aux, rid,
                                                      shadow, distances, labels, params);
  if (rescored >= 0) {
    pf_queries_ += nq;
    pf_rescored_ += rescored;
  }
}

void FlatIndex::range_search(const float* q, std::int64_t nq, float radius, RangeResult& result,
                             const KnnParams& params, const IdFilter* filter) const {
  std::shared_lock<RwLock> lock(mutex_);
  thread_local std::vector<std::uint8_t> mask;
  KnnParams p = params;
  if (filter != nullptr) {
    filter_rows(*filter, mask);
    p.row_mask = mask.data();
  }
  range_exact(q, nq, xp(), rows(), d_, radius, metric_,
              metric_ == Metric::kInnerProduct ? nullptr : auxp(), idp(), result, p);
}

FlatIndex::PrefilterStats FlatIndex::prefilter_stats() const {
  PrefilterStats s;
  s.queries = pf_queries_.load();
  s.rescored = pf_rescored_.load();
  return s;
}

void FlatIndex::get_vectors(const idx_t* ids, std::int64_t n, float* out) const {
  std::shared_lock<RwLock> lock(mutex_);
  ensure_map();
  const float* data = xp();
  for (std::int64_t i = 0; i < n; ++i) {
    auto it = row_of_.find(ids[i]);
    if (it == row_of_.end()) throw UnknownId(ids[i]);
    std::memcpy(out + i * d_, data + it->second * d_, sizeof(float) * d_);
  }
}

void FlatIndex::contains(const idx_t* ids, std::int64_t n, std::uint8_t* out) const {
  std::shared_lock<RwLock> lock(mutex_);
  ensure_map();
  for (std::int64_t i = 0; i < n; ++i) out[i] = row_of_.count(ids[i]) ? 1 : 0;
}

void FlatIndex::export_all(float* vectors, idx_t* ids) const {
  std::shared_lock<RwLock> lock(mutex_);
  const std::int64_t n = rows();
  std::copy(xp(), xp() + n * d_, vectors);
  std::copy(idp(), idp() + n, ids);
}

}  // namespace simdex
