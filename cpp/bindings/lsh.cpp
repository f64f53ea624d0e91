// Bindings for the LSH index (filled in by the LSH work).
#include "bindings.h"

namespace simdex::bindings {

void register_lsh(py::module_& /*m*/) {}

}  // namespace simdex::bindings
