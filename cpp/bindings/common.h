// What the two pybind11 modules share: simdex._core (cpp/bindings) and simdex._cuda
// (cuda/bindings) check arrays, parse metric names and bind the id-addressed store
// accessors with these, so both layers say the same thing for the same mistake.
//
// Arrays are checked and outputs allocated while the GIL is held; only pure C++ work
// runs with the GIL released. The Python layer (simdex._validate) has already converted
// user input to C-contiguous float32 and checked values, so failures of these checks
// indicate misuse of the private modules.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "simdex/common.h"

namespace simdex::bindings {

namespace py = pybind11;

using FloatArray = py::array_t<float, py::array::c_style>;
using IdArray = py::array_t<std::int64_t, py::array::c_style>;

/// Check a C-contiguous float32 array of shape (n, d) (d == -1: any) and return n.
inline std::int64_t check_matrix(const FloatArray& a, std::int64_t d, const char* name) {
  if (a.ndim() != 2)
    throw std::invalid_argument(detail::concat(name, " must be 2-D, got ", a.ndim(), "-D"));
  if (d >= 0 && a.shape(1) != d)
    throw std::invalid_argument(
        detail::concat(name, " has dimension ", a.shape(1), ", expected ", d));
  return a.shape(0);
}

/// Check a C-contiguous int64 array of shape (n,) and return n.
inline std::int64_t check_ids(const IdArray& a, const char* name) {
  if (a.ndim() != 1)
    throw std::invalid_argument(detail::concat(name, " must be 1-D, got ", a.ndim(), "-D"));
  return a.shape(0);
}

/// Check that n vectors came with n ids.
inline void check_same_count(std::int64_t n, const IdArray& ids) {
  if (check_ids(ids, "ids") != n)
    throw std::invalid_argument(detail::concat("got ", n, " vectors but ", ids.shape(0), " ids"));
}

/// Parse "ip" | "cosine" | "l2" | "sql2" (simdex._validate.canonical_metric resolves aliases).
inline Metric parse_metric(const std::string& name) {
  if (name == "ip") return Metric::kInnerProduct;
  if (name == "cosine") return Metric::kCosine;
  if (name == "l2") return Metric::kL2;
  if (name == "sql2") return Metric::kSquaredL2;
  throw std::invalid_argument("unknown metric '" + name +
                              "'; expected one of 'cosine', 'ip', 'l2', 'sql2'");
}

/// Bind the accessors every id-addressed store shares (FlatIndex, LshIndex, GpuFlatIndex):
/// remove, get_vectors, contains, export_all. Store must offer remove(ids, n),
/// get_vectors(ids, n, out), contains(ids, n, out), export_all(vectors, ids), size(), dim().
/// Release is the guard that drops the GIL around every call that takes the store's lock
/// (_core passes its exit-safe NoGil).
template <typename Release = py::gil_scoped_release, typename Store, typename... Extra>
void def_store_accessors(py::class_<Store, Extra...>& cls) {
  cls.def(
         "remove",
         [](Store& self, const IdArray& ids) {
           const std::int64_t n = check_ids(ids, "ids");
           Release nogil;
           self.remove(ids.data(), n);
         },
         py::arg("ids"))
      .def(
          "get_vectors",
          [](Store& self, const IdArray& ids) {
            const std::int64_t n = check_ids(ids, "ids");
            py::array_t<float> out({n, self.dim()});
            float* po = out.mutable_data();
            Release nogil;
            self.get_vectors(ids.data(), n, po);
            return out;
          },
          py::arg("ids"))
      .def(
          "contains",
          [](Store& self, const IdArray& ids) {
            const std::int64_t n = check_ids(ids, "ids");
            py::array_t<bool> out(n);
            Release nogil;
            self.contains(ids.data(), n, reinterpret_cast<std::uint8_t*>(out.mutable_data()));
            return out;
          },
          py::arg("ids"))
      .def("export_all", [](Store& self) {
        // size() and export_all() lock separately; the Python layer serialises writers
        // around export, so the two agree.
        const std::int64_t n = [&] {
          Release nogil;
          return self.size();
        }();
        py::array_t<float> v({n, self.dim()});
        py::array_t<std::int64_t> ids(n);
        float* pv = v.mutable_data();
        std::int64_t* pi = ids.mutable_data();
        {
          Release nogil;
          self.export_all(pv, pi);
        }
        return py::make_tuple(v, ids);
      });
}

}  // namespace simdex::bindings
