// simdex._cuda: sign-random-projection hashing (hash_vectors, hash_vectors_device).
#include "bindings.h"
#include "simdex/cuda/hashing.h"

namespace simdex::bindings {

namespace {

py::array_t<std::uint64_t> hash_host(const FloatArray& x, const FloatArray& planes, std::int64_t num_tables,
                                     std::int64_t bits, int device) {
  const std::int64_t n = check_matrix(x, -1, "vectors");
  const std::int64_t d = x.shape(1);
  const std::int64_t np_ = check_matrix(planes, d, "planes");
  py::array_t<std::uint64_t> codes({n, num_tables > 0 ? num_tables : 0});
  std::uint64_t* pcodes = codes.mutable_data();
  {
    py::gil_scoped_release nogil;
    require_device();
    simdex::cuda::DeviceGuard guard(device);
    DeviceBuffer<float> dx(static_cast<std::size_t>(n * d)), dp(static_cast<std::size_t>(np_ * d));
    DeviceBuffer<std::uint64_t> dc(static_cast<std::size_t>(n * std::max<std::int64_t>(num_tables, 0)));
    cudaStream_t s = nullptr;
    if (n > 0) SIMDEX_CUDA_CHECK(cudaMemcpyAsync(dx.data(), x.data(), dx.bytes(), cudaMemcpyHostToDevice, s));
    if (np_ > 0) SIMDEX_CUDA_CHECK(cudaMemcpyAsync(dp.data(), planes.data(), dp.bytes(), cudaMemcpyHostToDevice, s));
    simdex::cuda::hash_vectors(DeviceMatrix{dx.data(), n, d, d}, DeviceMatrix{dp.data(), np_, d, d}, num_tables,
                               bits, dc.data(), s);
    if (dc.size() > 0)
      SIMDEX_CUDA_CHECK(cudaMemcpyAsync(pcodes, dc.data(), dc.bytes(), cudaMemcpyDeviceToHost, s));
    SIMDEX_CUDA_CHECK(cudaStreamSynchronize(s));
  }
  return codes;
}

}  // namespace

void register_hashing(py::module_& m) {
  m.def("hash_vectors", &hash_host, py::arg("vectors"), py::arg("planes"), py::arg("num_tables"),
        py::arg("hash_bits"), py::arg("device") = 0,
        "Sign-random-projection codes of host arrays on the GPU: uint64 (n, num_tables); see "
        "simdex/cuda/hashing.h for the bit order and the float64 accumulation rule.");
  m.def(
      "hash_vectors_device",
      [](std::uintptr_t x, std::int64_t n, std::int64_t x_ld, std::uintptr_t planes, std::int64_t np_,
         std::int64_t p_ld, std::int64_t d, std::int64_t num_tables, std::int64_t bits, std::uintptr_t codes,
         std::uintptr_t stream, int device) {
        py::gil_scoped_release nogil;
        require_device();
        simdex::cuda::DeviceGuard guard(device);
        simdex::cuda::hash_vectors(DeviceMatrix{as_cptr<float>(x), n, d, x_ld},
                                   DeviceMatrix{as_cptr<float>(planes), np_, d, p_ld}, num_tables, bits,
                                   as_ptr<std::uint64_t>(codes), as_stream(stream));
      },
      py::arg("x_ptr"), py::arg("n"), py::arg("x_ld"), py::arg("planes_ptr"), py::arg("num_planes"),
      py::arg("p_ld"), py::arg("d"), py::arg("num_tables"), py::arg("hash_bits"), py::arg("codes_ptr"),
      py::arg("stream") = 0, py::arg("device") = 0, "hash_vectors on device pointers (codes: n*num_tables uint64).");

}

}  // namespace simdex::bindings
