// simdex._cuda: DeviceArray, a minimal owning device array.
#include <utility>
#include <vector>

#include "bindings.h"

namespace simdex::bindings {

namespace {

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

void register_device_array(py::module_& m) {
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

}

}  // namespace simdex::bindings
