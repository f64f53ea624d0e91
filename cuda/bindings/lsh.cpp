// simdex._cuda: multi-table LSH built and searched on the GPU (GpuLSHIndex).
#include "bindings.h"
#include "simdex/cuda/lsh.h"

namespace simdex::bindings {

void register_lsh(py::module_& m) {
  m.attr("MAX_PROBES") = simdex::cuda::kMaxProbes;
  py::class_<simdex::cuda::GpuLSH>(m, "GpuLSHIndex")
      .def(py::init([](std::uintptr_t x, std::int64_t n, std::int64_t x_ld, std::uintptr_t planes, std::int64_t np_,
                       std::int64_t p_ld, std::int64_t d, std::int64_t num_tables, std::int64_t bits,
                       const std::string& metric, std::uintptr_t stream, int device) {
             const Metric mt = parse_metric(metric);
             py::gil_scoped_release nogil;
             require_device();
             simdex::cuda::DeviceGuard guard(device);
             return new simdex::cuda::GpuLSH(DeviceMatrix{as_cptr<float>(x), n, d, x_ld},
                                             DeviceMatrix{as_cptr<float>(planes), np_, d, p_ld}, num_tables, bits, mt,
                                             as_stream(stream));
           }),
           py::arg("x_ptr"), py::arg("n"), py::arg("x_ld"), py::arg("planes_ptr"), py::arg("num_planes"),
           py::arg("p_ld"), py::arg("d"), py::arg("num_tables"), py::arg("hash_bits"), py::arg("metric"),
           py::arg("stream") = 0, py::arg("device") = 0,
           "Build LSH tables from device arrays (the base and planes are copied).")
      .def("__len__", &simdex::cuda::GpuLSH::size)
      .def_property_readonly("dim", &simdex::cuda::GpuLSH::dim)
      .def_property_readonly("num_tables", &simdex::cuda::GpuLSH::num_tables)
      .def_property_readonly("hash_bits", &simdex::cuda::GpuLSH::bits)
      .def_property_readonly("bits", &simdex::cuda::GpuLSH::bits)  // the name before 0.2
      .def(
          "search_device",
          [](const simdex::cuda::GpuLSH& self, std::uintptr_t q, std::int64_t nq, std::int64_t ld, std::int64_t k,
             int num_probes, std::uintptr_t out_d, std::uintptr_t out_i, std::uintptr_t stream, int device,
             std::uintptr_t ids) {
            py::gil_scoped_release nogil;
            simdex::cuda::DeviceGuard guard(device);
            self.search(DeviceMatrix{as_cptr<float>(q), nq, self.dim(), ld}, k, num_probes,
                        ids != 0 ? as_cptr<idx_t>(ids) : nullptr, as_ptr<float>(out_d), as_ptr<idx_t>(out_i),
                        as_stream(stream));
          },
          py::arg("q_ptr"), py::arg("nq"), py::arg("ld"), py::arg("k"), py::arg("num_probes"), py::arg("out_d_ptr"),
          py::arg("out_i_ptr"), py::arg("stream") = 0, py::arg("device") = 0, py::arg("ids_ptr") = 0,
          "Search with device queries and outputs. ids_ptr (optional): device int64 id of each base row; "
          "results then hold those ids (ties by smaller id) instead of row numbers.")
      .def(
          "table",
          [](const simdex::cuda::GpuLSH& self, std::int64_t t, int device) {
            if (t < 0 || t >= self.num_tables()) throw std::out_of_range("table index out of range");
            const std::int64_t n = self.size();
            py::array_t<std::uint64_t> codes(n);
            py::array_t<std::int32_t> rows(n);
            std::uint64_t* pc = codes.mutable_data();
            std::int32_t* pr = rows.mutable_data();
            if (n > 0) {
              py::gil_scoped_release nogil;  // re-acquired before the tuple below is built
              simdex::cuda::DeviceGuard guard(device);
              SIMDEX_CUDA_CHECK(cudaMemcpy(pc, self.sorted_codes(t), n * 8, cudaMemcpyDeviceToHost));
              SIMDEX_CUDA_CHECK(cudaMemcpy(pr, self.sorted_rows(t), n * 4, cudaMemcpyDeviceToHost));
            }
            return py::make_tuple(codes, rows);
          },
          py::arg("t"), py::arg("device") = 0, "Sorted codes (uint64) and their base rows (int32) of table t.");

  m.attr("LSH") = m.attr("GpuLSHIndex");  // the name before 0.2
}

}  // namespace simdex::bindings
