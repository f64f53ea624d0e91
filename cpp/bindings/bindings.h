// Shared helpers for the pybind11 module simdex._core.
//
// Arrays are checked and outputs allocated while the GIL is held; only pure C++
// work runs with the GIL released. The Python layer (simdex.index) has already
// converted user input to C-contiguous float32 and checked values, so failures of
// these checks indicate misuse of the private module.
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

void register_exact(py::module_& m);
// Further feature modules add their register_* function here and call it from
// module.cpp.
void register_lsh(py::module_& m);

}  // namespace simdex::bindings
