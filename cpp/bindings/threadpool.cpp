// C entry points for threadpoolctl: simdex._threadpool's controller finds the
// extension by these symbols and calls them through ctypes, as threadpoolctl does
// for BLAS and OpenMP libraries.
#include "simdex/threading.h"

extern "C" {

/// Default thread count of simdex's native pool (see simdex::default_num_threads).
__attribute__((visibility("default"))) int simdex_get_num_threads() {
  return simdex::default_num_threads();
}

/// Set the default thread count (n <= 0: back to OMP_NUM_THREADS or the CPU count).
__attribute__((visibility("default"))) void simdex_set_num_threads(int n) { simdex::set_num_threads(n); }

}  // extern "C"
