// Shared helpers for the pybind11 module simdex._core.
//
// Arrays are checked and outputs allocated while the GIL is held; only pure C++
// work runs with the GIL released. The Python layer (simdex.index) has already
// converted user input to C-contiguous float32 and checked values, so failures of
// these checks indicate misuse of the private module.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>

#include "simdex/common.h"
#include "simdex/id_filter.h"

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

/// Bind the accessors every id-addressed store shares (FlatIndex, LshIndex): remove,
/// get_vectors, contains, export_all. Store must offer remove(ids, n),
/// get_vectors(ids, n, out), contains(ids, n, out), export_all(vectors, ids), size(), dim().
template <typename Store, typename... Extra>
void def_store_accessors(py::class_<Store, Extra...>& cls) {
  cls.def(
         "remove",
         [](Store& self, const IdArray& ids) {
           const std::int64_t n = check_ids(ids, "ids");
           py::gil_scoped_release nogil;
           self.remove(ids.data(), n);
         },
         py::arg("ids"))
      .def(
          "get_vectors",
          [](const Store& self, const IdArray& ids) {
            const std::int64_t n = check_ids(ids, "ids");
            py::array_t<float> out({n, self.dim()});
            py::gil_scoped_release nogil;
            self.get_vectors(ids.data(), n, out.mutable_data());
            return out;
          },
          py::arg("ids"))
      .def(
          "contains",
          [](const Store& self, const IdArray& ids) {
            const std::int64_t n = check_ids(ids, "ids");
            py::array_t<bool> out(n);
            self.contains(ids.data(), n, reinterpret_cast<std::uint8_t*>(out.mutable_data()));
            return out;
          },
          py::arg("ids"))
      .def("export_all", [](const Store& self) {
        // size() and export_all() lock separately; the Python layer serialises writers
        // around export, so the two agree.
        const std::int64_t n = self.size();
        py::array_t<float> v({n, self.dim()});
        py::array_t<std::int64_t> ids(n);
        self.export_all(v.mutable_data(), ids.mutable_data());
        return py::make_tuple(v, ids);
      });
}

/// The IdFilter of an optional (sorted, distinct) int64 id array; nullopt for None.
/// The filter points into ids, which must outlive it.
std::optional<IdFilter> make_filter(const std::optional<IdArray>& ids, bool deny);

/// (lims int64 (nq + 1,), distances float32 (m,), ids int64 (m,)) of a RangeResult.
py::tuple range_to_python(const RangeResult& r);

void register_exact(py::module_& m);
// Further feature modules add their register_* function here and call it from
// module.cpp.
void register_lsh(py::module_& m);

}  // namespace simdex::bindings
