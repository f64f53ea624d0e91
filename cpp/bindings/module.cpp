// pybind11 module simdex._core: the native core of simdex.
#include <Python.h>

#include "bindings.h"
#include "simdex/blas.h"
#include "simdex/flat_index.h"
#include "simdex/threading.h"
#include "simdex/topk.h"

namespace simdex::bindings {

namespace {

// Polls for Ctrl-C between blocks: takes the GIL and runs the signal handlers. A
// KeyboardInterrupt raised by the handler is cleared here and re-raised by the
// Interrupted translator once the C++ computation has unwound.
class PythonInterrupt : public InterruptCallback {
 public:
  bool want_interrupt() override {
    if (!Py_IsInitialized()) return false;
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {
      PyErr_Clear();
      return true;
    }
    return false;
  }
};

}  // namespace

}  // namespace simdex::bindings

PYBIND11_MODULE(_core, m) {
  namespace py = pybind11;
  using namespace simdex;
  using namespace simdex::bindings;
  m.doc() = "simdex native core (C++): exact k-NN, LSH, threading, BLAS info";

  static PythonInterrupt interrupt;
  InterruptCallback::install(&interrupt);

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const UnknownId& e) {
      PyErr_SetObject(PyExc_KeyError, py::int_(e.id).ptr());
    } catch (const Interrupted&) {
      PyErr_SetNone(PyExc_KeyboardInterrupt);
    }
  });

  m.def("set_num_threads", &simdex::set_num_threads, py::arg("n"),
        "Set the default number of threads (n <= 0: all CPUs this process may use).");
  m.def("get_num_threads", &simdex::default_num_threads,
        "Number of threads used when a call does not say.");
  m.def("blas_info", &blas::info, "The linked BLAS, its build options and CPU kernel.");
  m.def("simd_level", &topk_simd_level, "SIMD variant of the top-k filter on this CPU.");

  register_exact(m);
  register_lsh(m);
}
