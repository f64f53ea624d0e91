// GpuFlatIndex: host-side bookkeeping (id -> row map) plus device storage.
#include <algorithm>
#include <unordered_set>

#include "detail/rows.cuh"
#include "simdex/cuda/flat_index.h"
#include "simdex/flat_index.h"  // simdex::UnknownId (header-only)

namespace simdex::cuda {

namespace {

template <typename T>
void upload(DeviceBuffer<T>& buf, const T* host, std::size_t n, cudaStream_t stream) {
  if (buf.size() < n) buf.resize_discard(n);
  if (n > 0) SIMDEX_CUDA_CHECK(cudaMemcpyAsync(buf.data(), host, n * sizeof(T), cudaMemcpyHostToDevice, stream));
}

}  // namespace

GpuFlatIndex::GpuFlatIndex(std::int64_t d, Metric metric, int device) : d_(d), metric_(metric), device_(device) {
  SIMDEX_CHECK_ARG(d >= 1, "dim must be >= 1, got ", d);
  std::string why;
  const int count = device_count(&why);
  if (count == 0) throw std::runtime_error("cannot create a GPU index: " + why);
  SIMDEX_CHECK_ARG(device >= 0 && device < count, "CUDA device ", device, " does not exist (",
                   count, " present)");
  DeviceGuard guard(device_);
  SIMDEX_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

GpuFlatIndex::~GpuFlatIndex() {
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

std::int64_t GpuFlatIndex::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<std::int64_t>(ids_.size());
}

void GpuFlatIndex::reserve(std::int64_t rows) {
  if (rows <= capacity_) return;
  const std::int64_t cap = std::max<std::int64_t>(rows, std::max<std::int64_t>(1024, capacity_ * 2));
  const std::int64_t n = static_cast<std::int64_t>(ids_.size());
  DeviceBuffer<float> data(static_cast<std::size_t>(cap * d_));
  DeviceBuffer<float> aux(static_cast<std::size_t>(cap));
  DeviceBuffer<idx_t> dids(static_cast<std::size_t>(cap));
  if (n > 0) {
    SIMDEX_CUDA_CHECK(cudaMemcpyAsync(data.data(), data_.data(), n * d_ * sizeof(float),
                                      cudaMemcpyDeviceToDevice, stream_));
    SIMDEX_CUDA_CHECK(cudaMemcpyAsync(aux.data(), aux_.data(), n * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
    SIMDEX_CUDA_CHECK(cudaMemcpyAsync(dids.data(), dids_.data(), n * sizeof(idx_t), cudaMemcpyDeviceToDevice, stream_));
    SIMDEX_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  data_ = std::move(data);
  aux_ = std::move(aux);
  dids_ = std::move(dids);
  capacity_ = cap;
}

void GpuFlatIndex::add(const float* x, std::int64_t n, std::int64_t ld, const idx_t* ids, bool replace,
                       bool x_on_device) {
  SIMDEX_CHECK_ARG(n >= 0, "n must be >= 0, got ", n);
  SIMDEX_CHECK_ARG(ld >= d_, "row stride ", ld, " is smaller than the dimension ", d_);
  std::lock_guard<std::mutex> lock(mutex_);
  // Validate everything before changing anything (same rules and messages as the CPU).
  std::unordered_set<idx_t> seen;
  seen.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    SIMDEX_CHECK_ARG(ids[i] >= 0, "ids must be >= 0, got ", ids[i], " at position ", i);
    SIMDEX_CHECK_ARG(seen.insert(ids[i]).second, "id ", ids[i], " appears more than once in this call");
    SIMDEX_CHECK_ARG(replace || row_of_.find(ids[i]) == row_of_.end(), "id ", ids[i],
                     " is already in the index; pass replace=True to overwrite it or remove it first");
  }
  if (n == 0) return;
  DeviceGuard guard(device_);
  const std::int64_t old = static_cast<std::int64_t>(ids_.size());
  std::vector<std::int64_t> dest(static_cast<std::size_t>(n));
  std::int64_t next = old;
  for (std::int64_t i = 0; i < n; ++i) {
    auto it = row_of_.find(ids[i]);
    dest[i] = it != row_of_.end() ? it->second : next++;
  }
  reserve(next);  // may throw (out of memory): nothing has changed yet

  DeviceBuffer<float> staged;
  const float* src = x;
  std::int64_t src_ld = ld;
  if (!x_on_device) {
    staged.resize_discard(static_cast<std::size_t>(n * d_));
    SIMDEX_CUDA_CHECK(cudaMemcpy2DAsync(staged.data(), d_ * sizeof(float), x, ld * sizeof(float),
                                        d_ * sizeof(float), n, cudaMemcpyHostToDevice, stream_));
    src = staged.data();
    src_ld = d_;
  }
  DeviceBuffer<std::int64_t> ddest, dnew;
  upload(ddest, dest.data(), dest.size(), stream_);
  upload(dnew, ids, static_cast<std::size_t>(n), stream_);
  detail::launch_scatter_rows(src, n, d_, src_ld, ddest.data(), dnew.data(), static_cast<int>(metric_),
                              data_.data(), aux_.data(), dids_.data(), stream_);
  SIMDEX_CUDA_CHECK(cudaStreamSynchronize(stream_));
  // The device holds the rows now; commit the host bookkeeping.
  for (std::int64_t i = 0; i < n; ++i) {
    if (dest[i] < old) continue;
    row_of_.emplace(ids[i], dest[i]);
    ids_.push_back(ids[i]);
  }
}

void GpuFlatIndex::remove(const idx_t* ids, std::int64_t n) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (std::int64_t i = 0; i < n; ++i)
    if (row_of_.find(ids[i]) == row_of_.end()) throw UnknownId(ids[i]);
  // Plan the swaps on the host (same order as the CPU index), apply them on the device in order.
  std::vector<std::int64_t> dst, src;
  auto row_of = row_of_;
  auto host_ids = ids_;
  for (std::int64_t i = 0; i < n; ++i) {
    auto it = row_of.find(ids[i]);
    if (it == row_of.end()) continue;  // listed twice in this call
    const std::int64_t row = it->second, last = static_cast<std::int64_t>(host_ids.size()) - 1;
    if (row != last) {
      dst.push_back(row);
      src.push_back(last);
      host_ids[row] = host_ids[last];
      row_of[host_ids[row]] = row;
    }
    row_of.erase(it);
    host_ids.pop_back();
  }
  if (!dst.empty()) {
    DeviceGuard guard(device_);
    DeviceBuffer<std::int64_t> ddst, dsrc;
    upload(ddst, dst.data(), dst.size(), stream_);
    upload(dsrc, src.data(), src.size(), stream_);
    detail::launch_apply_moves(ddst.data(), dsrc.data(), static_cast<std::int64_t>(dst.size()), d_,
                               data_.data(), aux_.data(), dids_.data(), stream_);
    SIMDEX_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  row_of_ = std::move(row_of);
  ids_ = std::move(host_ids);
}

void GpuFlatIndex::reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  ids_.clear();
  row_of_.clear();
}

void GpuFlatIndex::search(const float* q, std::int64_t nq, std::int64_t ld, std::int64_t k, float* distances,
                          idx_t* labels, bool on_device, const GpuKnnParams& params) {
  SIMDEX_CHECK_ARG(nq >= 0, "nq must be >= 0, got ", nq);
  SIMDEX_CHECK_ARG(ld >= d_, "row stride ", ld, " is smaller than the dimension ", d_);
  SIMDEX_CHECK_ARG(k >= 1 && k <= kMaxK, "k must be in [1, ", kMaxK, "] on the GPU, got ", k,
                   "; use the CPU index (device='cpu') for larger k");
  std::lock_guard<std::mutex> lock(mutex_);
  if (nq == 0) return;
  DeviceGuard guard(device_);
  const std::int64_t nb = static_cast<std::int64_t>(ids_.size());
  DeviceMatrix xm{data_.data(), nb, d_, d_};
  if (on_device) {
    knn(DeviceMatrix{q, nq, d_, ld}, xm, k, metric_, aux_.data(), dids_.data(), distances, labels, stream_,
        params);
    return;
  }
  DeviceBuffer<float> dq(static_cast<std::size_t>(nq * d_));
  DeviceBuffer<float> dd(static_cast<std::size_t>(nq * k));
  DeviceBuffer<idx_t> di(static_cast<std::size_t>(nq * k));
  SIMDEX_CUDA_CHECK(cudaMemcpy2DAsync(dq.data(), d_ * sizeof(float), q, ld * sizeof(float), d_ * sizeof(float),
                                      nq, cudaMemcpyHostToDevice, stream_));
  knn(DeviceMatrix{dq.data(), nq, d_, d_}, xm, k, metric_, aux_.data(), dids_.data(), dd.data(), di.data(),
      stream_, params);
  SIMDEX_CUDA_CHECK(cudaMemcpyAsync(distances, dd.data(), nq * k * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  SIMDEX_CUDA_CHECK(cudaMemcpyAsync(labels, di.data(), nq * k * sizeof(idx_t), cudaMemcpyDeviceToHost, stream_));
  SIMDEX_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void GpuFlatIndex::get_vectors(const idx_t* ids, std::int64_t n, float* out) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::int64_t> rows(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    auto it = row_of_.find(ids[i]);
    if (it == row_of_.end()) throw UnknownId(ids[i]);
    rows[i] = it->second;
  }
  if (n == 0) return;
  DeviceGuard guard(device_);
  DeviceBuffer<std::int64_t> drows;
  upload(drows, rows.data(), rows.size(), stream_);
  DeviceBuffer<float> dout(static_cast<std::size_t>(n * d_));
  detail::launch_gather_rows(data_.data(), d_, drows.data(), n, dout.data(), stream_);
  SIMDEX_CUDA_CHECK(cudaMemcpyAsync(out, dout.data(), n * d_ * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  SIMDEX_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void GpuFlatIndex::contains(const idx_t* ids, std::int64_t n, std::uint8_t* out) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (std::int64_t i = 0; i < n; ++i) out[i] = row_of_.count(ids[i]) ? 1 : 0;
}

void GpuFlatIndex::export_all(float* vectors, idx_t* ids) {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::int64_t n = static_cast<std::int64_t>(ids_.size());
  std::copy(ids_.begin(), ids_.end(), ids);
  if (n == 0) return;
  DeviceGuard guard(device_);
  SIMDEX_CUDA_CHECK(cudaMemcpyAsync(vectors, data_.data(), n * d_ * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  SIMDEX_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace simdex::cuda
