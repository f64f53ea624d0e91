// Thin wrapper around the BLAS that simdex links (scipy-openblas32).
//
// Only the three calls the core needs are exposed, so the rest of the code does not
// depend on the BLAS vendor's symbol prefixes.
#pragma once

#include <cstdint>
#include <string>

namespace simdex::blas {

/// C (m x n, row-major, ldc = n) = alpha * A (m x k, row-major) * B^T + beta * C,
/// where B is n x k row-major. All buffers are owned by the caller.
void gemm_abt(std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
              const float* b, float beta, float* c);

/// y (m) = A (m x k, row-major) * x (k). Buffers owned by the caller.
void gemv(std::int64_t m, std::int64_t k, const float* a, const float* x, float* y);


/// BLAS name, version and the CPU kernel it selected (e.g. "OpenBLAS 0.3.x ... SkylakeX").
std::string info();

}  // namespace simdex::blas
