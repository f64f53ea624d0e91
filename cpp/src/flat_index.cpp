#include "simdex/flat_index.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <unordered_set>

#include "fp16.h"
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

std::int64_t FlatIndex::size() const {
  std::shared_lock<RwLock> lock(mutex_);
  return static_cast<std::int64_t>(ids_.size());
}

namespace {
template <class T>
void reserve_geometric(std::vector<T>& v, std::size_t need) {
  if (need > v.capacity()) v.reserve(std::max(need, 2 * v.capacity()));
}
}  // namespace

void FlatIndex::add(const float* x, std::int64_t n, const idx_t* ids, bool replace) {
  SIMDEX_CHECK_ARG(n >= 0, "n must be >= 0, got ", n);
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

void FlatIndex::search(const float* q, std::int64_t nq, std::int64_t k, float* distances,
                       idx_t* labels, const KnnParams& params) const {
  std::shared_lock<RwLock> lock(mutex_);
  HalfShadow shadow;
  if (half_on_) {
    shadow.panels = half_.data();
    shadow.norms = norms_.data();
  }
  const std::int64_t rescored = knn_exact_prefiltered(
      q, nq, data_.data(), static_cast<std::int64_t>(ids_.size()), d_, k, metric_,
      metric_ == Metric::kInnerProduct ? nullptr : aux_.data(), ids_.data(), shadow, distances,
      labels, params);
  if (rescored >= 0) {
    pf_queries_ += nq;
    pf_rescored_ += rescored;
  }
}

FlatIndex::PrefilterStats FlatIndex::prefilter_stats() const {
  PrefilterStats s;
  s.queries = pf_queries_.load();
  s.rescored = pf_rescored_.load();
  return s;
}

void FlatIndex::get_vectors(const idx_t* ids, std::int64_t n, float* out) const {
  std::shared_lock<RwLock> lock(mutex_);
  for (std::int64_t i = 0; i < n; ++i) {
    auto it = row_of_.find(ids[i]);
    if (it == row_of_.end()) throw UnknownId(ids[i]);
    std::memcpy(out + i * d_, data_.data() + it->second * d_, sizeof(float) * d_);
  }
}

void FlatIndex::contains(const idx_t* ids, std::int64_t n, std::uint8_t* out) const {
  std::shared_lock<RwLock> lock(mutex_);
  for (std::int64_t i = 0; i < n; ++i) out[i] = row_of_.count(ids[i]) ? 1 : 0;
}

void FlatIndex::export_all(float* vectors, idx_t* ids) const {
  std::shared_lock<RwLock> lock(mutex_);
  std::copy(data_.begin(), data_.end(), vectors);
  std::copy(ids_.begin(), ids_.end(), ids);
}

}  // namespace simdex
