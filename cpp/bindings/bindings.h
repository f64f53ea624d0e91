// The feature files of the pybind11 module simdex._core (exact.cpp, lsh.cpp) and the
// module body (module.cpp) meet here.
#pragma once

#include <pybind11/stl.h>

#include <optional>

#include "common.h"  // checks, metric names and store accessors shared with cuda/bindings
#include "simdex/id_filter.h"

namespace simdex::bindings {

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
