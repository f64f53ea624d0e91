// Shared helpers for the pybind11 module simdex._core.
//
// Arrays are checked and outputs allocated while the GIL is held; only pure C++
// work runs with the GIL released. The Python layer (simdex.index) has already
// converted user input to C-contiguous float32 and checked values, so failures of
// these checks indicate misuse of the private module.
//
// Every call that may wait for an index lock releases the GIL first (NoGil), so a
// thread holding the GIL never waits for a lock held by a thread that needs the GIL.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "simdex/common.h"

namespace simdex::bindings {

namespace py = pybind11;

using FloatArray = py::array_t<float, py::array::c_style>;
using IdArray = py::array_t<std::int64_t, py::array::c_style>;

/// Check a C-contiguous float32 array of shape (n, d) (d == -1: any) and return n.
std::int64_t check_matrix(const FloatArray& a, std::int64_t d, const char* name);
/// Check a C-contiguous int64 array of shape (n,) and return n.
std::int64_t check_ids(const IdArray& a, const char* name);
/// Parse "ip" | "cosine" | "l2" | "sql2".
Metric parse_metric(const std::string& name);

/// num_threads of a call: 0 (the default) or in [1, max_threads()]; else ValueError.
int check_threads(int num_threads);
/// k of a search over n vectors: k >= 1 and k <= max(n, kMaxPaddedK) (slots beyond n
/// are padded, so a huge k would only allocate padding); else ValueError.
void check_k(std::int64_t k, std::int64_t n);
inline constexpr std::int64_t kMaxPaddedK = 1 << 16;
/// Ids to store: each in [0, kMaxId] (kMaxId + 1 = INT64_MAX marks "no result").
void check_new_ids(const IdArray& ids);
inline constexpr std::int64_t kMaxId = INT64_MAX - 1;

/// Releases the GIL for native work; the destructor takes it back safely:
/// - the interpreter may be exiting (a daemon thread): once simdex's atexit hook has
///   run, a thread other than the main one parks here forever instead of taking the
///   GIL back (CPython would end it with pthread_exit, whose forced unwind through
///   C++ frames aborts the process);
/// - the calling thread is recorded, so the interrupt callback polls for Ctrl-C only
///   on the main thread (where Python delivers signals), every 50 ms at most.
class NoGil {
 public:
  NoGil();
  ~NoGil();
  NoGil(const NoGil&) = delete;
  NoGil& operator=(const NoGil&) = delete;

 private:
  PyThreadState* state_;
  bool main_;
};

/// Run f() with the GIL released (see NoGil) and return its result.
template <class F>
auto without_gil(F&& f) {
  NoGil nogil;
  return f();
}

/// Bind the accessors every id-addressed store shares (FlatIndex, LshIndex): remove,
/// get_vectors, contains, export_all. Store must offer remove(ids, n),
/// get_vectors(ids, n, out), contains(ids, n, out), export_all(vectors, ids), size(), dim().
template <typename Store, typename... Extra>
void def_store_accessors(py::class_<Store, Extra...>& cls) {
  cls.def(
         "remove",
         [](Store& self, const IdArray& ids) {
           const std::int64_t n = check_ids(ids, "ids");
           NoGil nogil;
           self.remove(ids.data(), n);
         },
         py::arg("ids"))
      .def(
          "get_vectors",
          [](const Store& self, const IdArray& ids) {
            const std::int64_t n = check_ids(ids, "ids");
            py::array_t<float> out({n, self.dim()});
            NoGil nogil;
            self.get_vectors(ids.data(), n, out.mutable_data());
            return out;
          },
          py::arg("ids"))
      .def(
          "contains",
          [](const Store& self, const IdArray& ids) {
            const std::int64_t n = check_ids(ids, "ids");
            py::array_t<bool> out(n);
            NoGil nogil;
            self.contains(ids.data(), n, reinterpret_cast<std::uint8_t*>(out.mutable_data()));
            return out;
          },
          py::arg("ids"))
      .def("export_all", [](const Store& self) {
        // size() and export_all() lock separately; the Python layer serialises writers
        // around export, so the two agree.
        const std::int64_t n = without_gil([&] { return self.size(); });
        py::array_t<float> v({n, self.dim()});
        py::array_t<std::int64_t> ids(n);
        {
          NoGil nogil;
          self.export_all(v.mutable_data(), ids.mutable_data());
        }
        return py::make_tuple(v, ids);
      })
      .def("__len__", [](const Store& self) { return without_gil([&] { return self.size(); }); })
      .def("reset", [](Store& self) {
        NoGil nogil;
        self.reset();
      });
}

void register_exact(py::module_& m);
// Further feature modules add their register_* function here and call it from
// module.cpp.
void register_lsh(py::module_& m);

}  // namespace simdex::bindings
