// pybind11 module simdex._cuda: the CUDA kernels of simdex.
//
// Two kinds of entry points:
//  - host functions take C-contiguous NumPy arrays, copy them to the device and
//    return NumPy arrays (outputs allocated while the GIL is held);
//  - *_device functions take raw device pointers (ints), shapes, row strides (in
//    elements) and a stream handle, so simdex.gpu can hand over CuPy / PyTorch /
//    __cuda_array_interface__ arrays without copies; the caller owns every buffer.
// Importing this module never touches the driver: a machine without a GPU imports
// it fine and device_count() returns 0 with a reason.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "simdex/cuda/common.h"
#include "simdex/cuda/flat_index.h"
#include "simdex/cuda/hashing.h"
#include "simdex/cuda/knn.h"
#include "simdex/cuda/lsh.h"
#include "simdex/flat_index.h"  // simdex::UnknownId

namespace py = pybind11;
using simdex::idx_t;
using simdex::Metric;
using simdex::cuda::DeviceBuffer;
using simdex::cuda::DeviceMatrix;
using simdex::cuda::GpuKnnParams;

namespace {

using FloatArray = py::array_t<float, py::array::c_style>;
using IdArray = py::array_t<std::int64_t, py::array::c_style>;

Metric parse_metric(const std::string& name) {
  if (name == "ip") return Metric::kInnerProduct;
  if (name == "cosine") return Metric::kCosine;
  if (name == "l2") return Metric::kL2;
  if (name == "sql2") return Metric::kSquaredL2;
  throw std::invalid_argument("unknown metric '" + name + "'; expected one of 'cosine', 'ip', 'l2', 'sql2'");
}

std::int64_t check_matrix(const FloatArray& a, std::int64_t d, const char* name) {
  if (a.ndim() != 2)
    throw std::invalid_argument(simdex::detail::concat(name, " must be 2-D, got ", a.ndim(), "-D"));
  if (d >= 0 && a.shape(1) != d)
    throw std::invalid_argument(simdex::detail::concat(name, " has dimension ", a.shape(1), ", expected ", d));
  return a.shape(0);
}

std::int64_t check_ids(const IdArray& a, const char* name) {
  if (a.ndim() != 1)
    throw std::invalid_argument(simdex::detail::concat(name, " must be 1-D, got ", a.ndim(), "-D"));
  return a.shape(0);
}

simdex::cuda::Precision parse_precision(const std::string& name) {
  if (name == "fp32") return simdex::cuda::Precision::kFP32;
  if (name == "tf32x3") return simdex::cuda::Precision::kTF32x3;
  if (name == "tf32") return simdex::cuda::Precision::kTF32;
  throw std::invalid_argument("unknown precision '" + name + "'; expected 'fp32', 'tf32x3' or 'tf32'");
}

GpuKnnParams make_params(std::int64_t query_block, std::int64_t base_block, const std::string& precision) {
  GpuKnnParams p;
  p.precision = parse_precision(precision);
  if (query_block > 0) p.query_block = query_block;
  if (base_block > 0) p.base_block = base_block;
  return p;
}

cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

template <typename T>
const T* as_cptr(std::uintptr_t p) {
  return reinterpret_cast<const T*>(p);
}
template <typename T>
T* as_ptr(std::uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

void require_device() {
  std::string why;
  if (simdex::cuda::device_count(&why) == 0) throw std::runtime_error("no usable CUDA device: " + why);
}

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

// A minimal owning device array exposing __cuda_array_interface__, so simdex.gpu
// can return device results (and benchmarks can keep data on the GPU) when
// neither CuPy nor PyTorch is installed.
class DeviceArray {
 public:
  DeviceArray(std::vector<std::int64_t> shape, const std::string& typestr) : shape_(std::move(shape)), typestr_(typestr) {
    if (typestr_ != "<f4" && typestr_ != "<i8" && typestr_ != "<u8")
      throw std::invalid_argument("DeviceArray supports '<f4', '<i8' and '<u8', got '" + typestr_ + "'");
    std::int64_t n = 1;
    for (std::int64_t s : shape_) {
      if (s < 0) throw std::invalid_argument("negative dimension in DeviceArray shape");
      n *= s;
    }
    require_device();
    SIMDEX_CUDA_CHECK(cudaGetDevice(&device_));
    buf_.resize_discard(static_cast<std::size_t>(n * itemsize()));
  }
  std::int64_t itemsize() const { return typestr_ == "<f4" ? 4 : 8; }
  std::size_t nbytes() const { return buf_.size(); }
  std::uintptr_t ptr() const { return reinterpret_cast<std::uintptr_t>(buf_.data()); }
  const std::vector<std::int64_t>& shape() const { return shape_; }
  const std::string& typestr() const { return typestr_; }
  int device() const { return device_; }
  void upload(const void* src, std::size_t nbytes) {
    if (nbytes != buf_.size()) throw std::invalid_argument("DeviceArray.upload: size mismatch");
    simdex::cuda::DeviceGuard guard(device_);
    if (nbytes > 0) SIMDEX_CUDA_CHECK(cudaMemcpy(buf_.data(), src, nbytes, cudaMemcpyHostToDevice));
  }
  void download(void* dst) const {
    simdex::cuda::DeviceGuard guard(device_);
    if (!buf_.size()) return;
    SIMDEX_CUDA_CHECK(cudaMemcpy(dst, buf_.data(), buf_.size(), cudaMemcpyDeviceToHost));
  }

 private:
  std::vector<std::int64_t> shape_;
  std::string typestr_;
  int device_ = 0;
  DeviceBuffer<unsigned char> buf_;
};

}  // namespace

// The CPU-emulator build (cuda/emu) names the module simdex_cuda_emu.
#ifndef SIMDEX_CUDA_MODULE_NAME
#define SIMDEX_CUDA_MODULE_NAME _cuda
#endif

PYBIND11_MODULE(SIMDEX_CUDA_MODULE_NAME, m) {
  using simdex::cuda::GpuFlatIndex;
  m.doc() = "simdex CUDA kernels: exact k-NN, random-projection hashing, GPU flat index";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const simdex::UnknownId& e) {
      PyErr_SetObject(PyExc_KeyError, py::int_(e.id).ptr());
    }
  });

  m.attr("MAX_K") = simdex::cuda::kMaxK;
  m.attr("CUDA_RUNTIME_VERSION") = CUDART_VERSION;

  m.def(
      "device_count", [] { return simdex::cuda::device_count(nullptr); },
      "Number of usable CUDA devices (0 without a driver or device; never raises).");
  m.def(
      "no_device_reason",
      [] {
        std::string why;
        simdex::cuda::device_count(&why);
        return why;
      },
      "Why there is no usable device ('' when there is one).");
  m.def(
      "pointer_device",
      [](std::uintptr_t p) {
        cudaPointerAttributes attr{};
        SIMDEX_CUDA_CHECK(cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(p)));
        if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
          throw std::invalid_argument("pointer is not device memory");
        return attr.device;
      },
      py::arg("ptr"), "Ordinal of the device that owns a device pointer.");
  m.def("device_description", &simdex::cuda::device_description, py::arg("device") = 0,
        "Name, compute capability, memory and SM count of a device.");

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

  m.def("hash_vectors", &hash_host, py::arg("vectors"), py::arg("planes"), py::arg("num_tables"),
        py::arg("bits"), py::arg("device") = 0,
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
      py::arg("p_ld"), py::arg("d"), py::arg("num_tables"), py::arg("bits"), py::arg("codes_ptr"),
      py::arg("stream") = 0, py::arg("device") = 0, "hash_vectors on device pointers (codes: n*num_tables uint64).");

  py::class_<DeviceArray>(m, "DeviceArray")
      .def(py::init<std::vector<std::int64_t>, const std::string&>(), py::arg("shape"), py::arg("typestr"),
           "Uninitialised C-contiguous device array on the current device ('<f4', '<i8' or '<u8').")
      .def_property_readonly("shape", [](const DeviceArray& a) { return py::tuple(py::cast(a.shape())); })
      .def_property_readonly("typestr", &DeviceArray::typestr)
      .def_property_readonly("device_id", &DeviceArray::device)
      .def_property_readonly("__cuda_array_interface__",
                             [](const DeviceArray& a) {
                               py::dict d;
                               d["shape"] = py::tuple(py::cast(a.shape()));
                               d["typestr"] = a.typestr();
                               d["data"] = py::make_tuple(a.ptr(), false);
                               d["strides"] = py::none();
                               d["version"] = 3;
                               return d;
                             })
      .def("upload",
           [](DeviceArray& a, const py::buffer& b) {
             py::buffer_info info = b.request();
             const std::size_t nbytes = static_cast<std::size_t>(info.size * info.itemsize);
             py::gil_scoped_release nogil;
             a.upload(info.ptr, nbytes);
           })
      .def("download", [](const DeviceArray& a, py::buffer b) {
        py::buffer_info info = b.request(true);
        if (static_cast<std::size_t>(info.size * info.itemsize) != a.nbytes())
          throw std::invalid_argument("DeviceArray.download: size mismatch");
        py::gil_scoped_release nogil;
        a.download(info.ptr);
      });

  m.attr("MAX_PROBES") = simdex::cuda::kMaxProbes;
  py::class_<simdex::cuda::GpuLSH>(m, "LSH")
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
           py::arg("p_ld"), py::arg("d"), py::arg("num_tables"), py::arg("bits"), py::arg("metric"),
           py::arg("stream") = 0, py::arg("device") = 0,
           "Build LSH tables from device arrays (the base and planes are copied).")
      .def("__len__", &simdex::cuda::GpuLSH::size)
      .def_property_readonly("dim", &simdex::cuda::GpuLSH::dim)
      .def_property_readonly("num_tables", &simdex::cuda::GpuLSH::num_tables)
      .def_property_readonly("bits", &simdex::cuda::GpuLSH::bits)
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

  py::class_<GpuFlatIndex>(m, "FlatIndex")
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
            if (check_ids(ids, "ids") != n)
              throw std::invalid_argument(simdex::detail::concat("got ", n, " vectors but ", ids.shape(0), " ids"));
            py::gil_scoped_release nogil;
            self.add(x.data(), n, self.dim(), ids.data(), replace, false);
          },
          py::arg("vectors"), py::arg("ids"), py::arg("replace") = false)
      .def(
          "add_device",
          [](GpuFlatIndex& self, std::uintptr_t x, std::int64_t n, std::int64_t ld, const IdArray& ids,
             bool replace, std::uintptr_t stream) {
            if (check_ids(ids, "ids") != n)
              throw std::invalid_argument(simdex::detail::concat("got ", n, " vectors but ", ids.shape(0), " ids"));
            py::gil_scoped_release nogil;
            // The index works on its own non-blocking stream: let the producer's work finish first.
            SIMDEX_CUDA_CHECK(cudaStreamSynchronize(as_stream(stream)));
            self.add(as_cptr<float>(x), n, ld, ids.data(), replace, true);
          },
          py::arg("x_ptr"), py::arg("n"), py::arg("ld"), py::arg("ids"), py::arg("replace") = false,
          py::arg("stream") = 0)
      .def(
          "remove",
          [](GpuFlatIndex& self, const IdArray& ids) {
            const std::int64_t n = check_ids(ids, "ids");
            py::gil_scoped_release nogil;
            self.remove(ids.data(), n);
          },
          py::arg("ids"))
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
          "the results are complete when this returns.")
      .def(
          "get_vectors",
          [](GpuFlatIndex& self, const IdArray& ids) {
            const std::int64_t n = check_ids(ids, "ids");
            py::array_t<float> out({n, self.dim()});
            float* po = out.mutable_data();
            {
              py::gil_scoped_release nogil;
              self.get_vectors(ids.data(), n, po);
            }
            return out;
          },
          py::arg("ids"))
      .def(
          "contains",
          [](const GpuFlatIndex& self, const IdArray& ids) {
            const std::int64_t n = check_ids(ids, "ids");
            py::array_t<bool> out(n);
            self.contains(ids.data(), n, reinterpret_cast<std::uint8_t*>(out.mutable_data()));
            return out;
          },
          py::arg("ids"))
      .def("export_all", [](GpuFlatIndex& self) {
        const std::int64_t n = self.size();
        py::array_t<float> v({n, self.dim()});
        py::array_t<std::int64_t> ids(n);
        float* pv = v.mutable_data();
        std::int64_t* pi = ids.mutable_data();
        {
          py::gil_scoped_release nogil;
          self.export_all(pv, pi);
        }
        return py::make_tuple(v, ids);
      });
}
