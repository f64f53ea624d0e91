// simdex._cuda: exact k-NN (knn, knn_device, count_nonfinite_device) and GpuExactIndex.
#include "bindings.h"
#include "simdex/cuda/flat_index.h"
#include "simdex/flat_index.h"  // simdex::UnknownId

namespace simdex::bindings {

namespace {

py::tuple knn_host(const FloatArray& q, const FloatArray& x, std::int64_t k, const std::string& metric,
                   std::int64_t query_block, std::int64_t base_block, int device, const std::string& precision) {
  const std::int64_t nq = check_matrix(q, -1, "queries");
  const std::int64_t d = q.shape(1);
  const std::int64_t nb = check_matrix(x, d, "base");
  if (k < 1 || k > simdex::cuda::kMaxK)
    throw std::invalid_argument(simdex::detail::concat("k must be in [1, ", simdex::cuda::kMaxK,
                                                       "] on the GPU, got ", k));
  const Metric m = parse_metric(metric);
  py::array_t<float> D({nq, k});
  py::array_t<std::int64_t> I({nq, k});
  float* pd = D.mutable_data();
  std::int64_t* pi = I.mutable_data();
  {
    py::gil_scoped_release nogil;
    require_device();
    simdex::cuda::DeviceGuard guard(device);
    DeviceBuffer<float> dq(static_cast<std::size_t>(nq * d)), dx(static_cast<std::size_t>(nb * d));
    DeviceBuffer<float> dd(static_cast<std::size_t>(nq * k));
    DeviceBuffer<idx_t> di(static_cast<std::size_t>(nq * k));
    cudaStream_t s = nullptr;
    if (nq > 0) SIMDEX_CUDA_CHECK(cudaMemcpyAsync(dq.data(), q.data(), dq.bytes(), cudaMemcpyHostToDevice, s));
    if (nb > 0) SIMDEX_CUDA_CHECK(cudaMemcpyAsync(dx.data(), x.data(), dx.bytes(), cudaMemcpyHostToDevice, s));
    simdex::cuda::knn(DeviceMatrix{dq.data(), nq, d, d}, DeviceMatrix{dx.data(), nb, d, d}, k, m, nullptr,
                      nullptr, dd.data(), di.data(), s, make_params(query_block, base_block, precision));
    if (nq > 0) {
      SIMDEX_CUDA_CHECK(cudaMemcpyAsync(pd, dd.data(), dd.bytes(), cudaMemcpyDeviceToHost, s));
      SIMDEX_CUDA_CHECK(cudaMemcpyAsync(pi, di.data(), di.bytes(), cudaMemcpyDeviceToHost, s));
    }
    SIMDEX_CUDA_CHECK(cudaStreamSynchronize(s));
  }
  return py::make_tuple(D, I);
}

}  // namespace

void register_exact(py::module_& m) {
  using simdex::cuda::GpuFlatIndex;
  m.def("knn", &knn_host, py::arg("queries"), py::arg("base"), py::arg("k"), py::arg("metric"),
        py::arg("query_block") = 0, py::arg("base_block") = 0, py::arg("device") = 0, py::arg("precision") = "fp32",
        "Exact k-NN of host arrays on the GPU. queries (nq, d), base (nb, d) C-contiguous float32. "
        "Returns (distances float32 (nq, k) ascending, ids int64 (nq, k)).");
  m.def(
      "knn_device",
      [](std::uintptr_t q, std::int64_t nq, std::int64_t q_ld, std::uintptr_t x, std::int64_t nb,
         std::int64_t x_ld, std::int64_t d, std::int64_t k, const std::string& metric, std::uintptr_t out_d,
         std::uintptr_t out_i, std::uintptr_t stream, std::int64_t query_block, std::int64_t base_block,
         int device, const std::string& precision) {
        const Metric mt = parse_metric(metric);
        py::gil_scoped_release nogil;
        require_device();
        simdex::cuda::DeviceGuard guard(device);
        simdex::cuda::knn(DeviceMatrix{as_cptr<float>(q), nq, d, q_ld}, DeviceMatrix{as_cptr<float>(x), nb, d, x_ld},
                          k, mt, nullptr, nullptr, as_ptr<float>(out_d), as_ptr<idx_t>(out_i), as_stream(stream),
                          make_params(query_block, base_block, precision));
      },
      py::arg("q_ptr"), py::arg("nq"), py::arg("q_ld"), py::arg("x_ptr"), py::arg("nb"), py::arg("x_ld"),
      py::arg("d"), py::arg("k"), py::arg("metric"), py::arg("out_d_ptr"), py::arg("out_i_ptr"),
      py::arg("stream") = 0, py::arg("query_block") = 0, py::arg("base_block") = 0, py::arg("device") = 0,
      py::arg("precision") = "fp32",
      "Exact k-NN on device pointers (float32 rows with strides q_ld / x_ld elements); writes "
      "nq*k float32 distances and int64 ids to out_d_ptr / out_i_ptr. Synchronises `stream`.");
  m.def(
      "count_nonfinite_device",
      [](std::uintptr_t x, std::int64_t rows, std::int64_t cols, std::int64_t ld, std::uintptr_t stream,
         int device) {
        py::gil_scoped_release nogil;
        require_device();
        simdex::cuda::DeviceGuard guard(device);
        return simdex::cuda::count_nonfinite(DeviceMatrix{as_cptr<float>(x), rows, cols, ld}, as_stream(stream));
      },
      py::arg("x_ptr"), py::arg("rows"), py::arg("cols"), py::arg("ld"), py::arg("stream") = 0,
      py::arg("device") = 0, "Number of NaN / infinite entries of a float32 device matrix.");

  py::class_<GpuFlatIndex> flat(m, "GpuExactIndex");
  flat
      .def(py::init([](std::int64_t d, const std::string& metric, int device) {
             return new GpuFlatIndex(d, parse_metric(metric), device);
           }),
           py::arg("dim"), py::arg("metric"), py::arg("device") = 0)
      .def_property_readonly("dim", &GpuFlatIndex::dim)
      .def_property_readonly("device", &GpuFlatIndex::device)
      .def("__len__", &GpuFlatIndex::size)
      .def(
          "add",
          [](GpuFlatIndex& self, const FloatArray& x, const IdArray& ids, bool replace) {
            const std::int64_t n = check_matrix(x, self.dim(), "vectors");
            check_same_count(n, ids);
            py::gil_scoped_release nogil;
            self.add(x.data(), n, self.dim(), ids.data(), replace, false);
          },
          py::arg("vectors"), py::arg("ids"), py::arg("replace") = false)
      .def(
          "add_device",
          [](GpuFlatIndex& self, std::uintptr_t x, std::int64_t n, std::int64_t ld, const IdArray& ids,
             bool replace, std::uintptr_t stream) {
            check_same_count(n, ids);
            py::gil_scoped_release nogil;
            // The index works on its own non-blocking stream: let the producer's work finish first.
            SIMDEX_CUDA_CHECK(cudaStreamSynchronize(as_stream(stream)));
            self.add(as_cptr<float>(x), n, ld, ids.data(), replace, true);
          },
          py::arg("x_ptr"), py::arg("n"), py::arg("ld"), py::arg("ids"), py::arg("replace") = false,
          py::arg("stream") = 0)
      .def("reset", &GpuFlatIndex::reset)
      .def(
          "search",
          [](GpuFlatIndex& self, const FloatArray& q, std::int64_t k, int /*num_threads*/, std::int64_t query_block,
             std::int64_t base_block, const std::string& precision) {
            const std::int64_t nq = check_matrix(q, self.dim(), "queries");
            if (k < 1) throw std::invalid_argument(simdex::detail::concat("k must be >= 1, got ", k));
            py::array_t<float> D({nq, k});
            py::array_t<std::int64_t> I({nq, k});
            float* pd = D.mutable_data();
            std::int64_t* pi = I.mutable_data();
            {
              py::gil_scoped_release nogil;
              self.search(q.data(), nq, self.dim(), k, pd, pi, false, make_params(query_block, base_block, precision));
            }
            return py::make_tuple(D, I);
          },
          py::arg("queries"), py::arg("k"), py::arg("num_threads") = 0, py::arg("query_block") = 0,
          py::arg("base_block") = 0, py::arg("precision") = "fp32", "num_threads is accepted for parity with the CPU index and ignored.")
      .def(
          "search_device",
          [](GpuFlatIndex& self, std::uintptr_t q, std::int64_t nq, std::int64_t ld, std::int64_t k,
             std::uintptr_t out_d, std::uintptr_t out_i, std::int64_t query_block, std::int64_t base_block,
             std::uintptr_t stream, const std::string& precision) {
            py::gil_scoped_release nogil;
            SIMDEX_CUDA_CHECK(cudaStreamSynchronize(as_stream(stream)));  // see add_device
            self.search(as_cptr<float>(q), nq, ld, k, as_ptr<float>(out_d), as_ptr<idx_t>(out_i), true,
                        make_params(query_block, base_block, precision));
          },
          py::arg("q_ptr"), py::arg("nq"), py::arg("ld"), py::arg("k"), py::arg("out_d_ptr"), py::arg("out_i_ptr"),
          py::arg("query_block") = 0, py::arg("base_block") = 0, py::arg("stream") = 0,
          py::arg("precision") = "fp32", "Search with device queries and outputs; the producer's `stream` is synchronised first and "
          "the results are complete when this returns.");
  def_store_accessors(flat);

  m.attr("FlatIndex") = m.attr("GpuExactIndex");  // the name before 0.2
}

}  // namespace simdex::bindings
