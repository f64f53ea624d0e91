// pybind11 module simdex._cuda: the CUDA kernels of simdex (see bindings.h for the two
// kinds of entry points). Importing this module never touches the driver: a machine
// without a GPU imports it fine and device_count() returns 0 with a reason.
#include "bindings.h"
#include "simdex/cuda/lsh.h"
#include "simdex/flat_index.h"  // simdex::UnknownId

// The CPU-emulator build (cuda/emu) names the module simdex_cuda_emu.
#ifndef SIMDEX_CUDA_MODULE_NAME
#define SIMDEX_CUDA_MODULE_NAME _cuda
#endif

PYBIND11_MODULE(SIMDEX_CUDA_MODULE_NAME, m) {
  namespace py = pybind11;
  using namespace simdex::bindings;
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

  register_exact(m);
  register_hashing(m);
  register_device_array(m);
  register_lsh(m);
}
