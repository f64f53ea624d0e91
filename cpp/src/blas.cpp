#include "simdex/blas.h"

#include <cblas.h>  // scipy-openblas32: symbols carry the scipy_ prefix

#include <limits>
#include <stdexcept>

#include "simdex/common.h"

namespace simdex::blas {

namespace {
blasint to_blasint(std::int64_t v, const char* what) {
  // scipy-openblas32 uses 32-bit integers; callers tile, so this only guards misuse.
  SIMDEX_CHECK_ARG(v >= 0 && v <= std::numeric_limits<blasint>::max(), "BLAS dimension ", what,
                   "=", v, " does not fit a 32-bit BLAS integer");
  return static_cast<blasint>(v);
}
}  // namespace

void gemm_abt(std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
              const float* b, float beta, float* c) {
  scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, to_blasint(m, "m"),
                    to_blasint(n, "n"), to_blasint(k, "k"), alpha, a, to_blasint(k, "lda"), b,
                    to_blasint(k, "ldb"), beta, c, to_blasint(n, "ldc"));
}

void gemv(std::int64_t m, std::int64_t k, const float* a, const float* x, float* y) {
  scipy_cblas_sgemv(CblasRowMajor, CblasNoTrans, to_blasint(m, "m"), to_blasint(k, "k"), 1.0f, a,
                    to_blasint(k, "lda"), x, 1, 0.0f, y, 1);
}

namespace {
// simdex parallelises over tiles itself and calls BLAS from its own workers, so its
// private OpenBLAS copy runs single-threaded: BLAS threads never nest inside ours.
// (This copy is not the one NumPy or SciPy use.)
struct SingleThreadedBlas {
  SingleThreadedBlas() { scipy_openblas_set_num_threads(1); }
} g_single_threaded_blas;
}  // namespace

std::string info() {
  std::string s = scipy_openblas_get_config();
  s += " core=";
  s += scipy_openblas_get_corename();
  return s;
}

}  // namespace simdex::blas
