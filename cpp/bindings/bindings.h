// The feature files of the pybind11 module simdex._core (exact.cpp, lsh.cpp) and the
// module body (module.cpp) meet here.
#pragma once

#include "common.h"  // checks, metric names and store accessors shared with cuda/bindings

namespace simdex::bindings {

void register_exact(py::module_& m);
// Further feature modules add their register_* function here and call it from
// module.cpp.
void register_lsh(py::module_& m);

}  // namespace simdex::bindings
