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

std::int64_t check_matrix(const FloatArray& a, std::int64_t d, const char* name) {
  if (a.ndim() != 2)
    throw std::invalid_argument(detail::concat(name, " must be 2-D, got ", a.ndim(), "-D"));
  if (d >= 0 && a.shape(1) != d)
    throw std::invalid_argument(
        detail::concat(name, " has dimension ", a.shape(1), ", expected ", d));
  return a.shape(0);
}

std::int64_t check_ids(const IdArray& a, const char* name) {
  if (a.ndim() != 1)
    throw std::invalid_argument(detail::concat(name, " must be 1-D, got ", a.ndim(), "-D"));
  return a.shape(0);
}

Metric parse_metric(const std::string& name) {
  if (name == "ip") return Metric::kInnerProduct;
  if (name == "cosine") return Metric::kCosine;
  if (name == "l2") return Metric::kL2;
  if (name == "sql2") return Metric::kSquaredL2;
  throw std::invalid_argument("unknown metric '" + name +
                              "'; expected one of 'cosine', 'ip', 'l2', 'sql2'");
}

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
