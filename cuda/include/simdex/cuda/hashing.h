// Random-projection (sign) hashing on a CUDA device.
//
// Code layout (the same as the CPU simdex.hash_vectors): for L tables of K bits,
// planes is (L*K) x d; bit j (LSB first) of the uint64 code of vector i in table t
// is 1 iff <x_i, planes[t*K + j]> > 0. Codes are n x L, row-major.
//
// Bit-exactness rule: each projection is the float64 sum of the exact products
// double(x[c]) * double(p[c]) accumulated in order c = 0, 1, ..., d-1 (the product
// of two float32 values is exact in float64, so FMA or not gives the same result).
// Any implementation following this rule (simdex.gpu._hash_reference does, in
// NumPy) produces identical codes bit for bit. An implementation using float32
// BLAS differs only on bits whose projection is within its rounding error of 0.
//
// Example:
// @code
//   simdex::cuda::hash_vectors(x, planes, /*num_tables=*/16, /*bits=*/16, d_codes, stream);
// @endcode
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "simdex/cuda/knn.h"

namespace simdex::cuda {

/// Hash the rows of x with L = num_tables tables of K = bits planes each.
/// @param[in]  x       n x d vectors (device)
/// @param[in]  planes  (L*K) x d hyperplane normals (device), planes.cols == x.cols
/// @param[in]  num_tables  L >= 1
/// @param[in]  bits    K in [1, 64]
/// @param[out] codes   n * L uint64 (device, row-major), owned by the caller
/// @param[in]  stream  work is queued on it and the call synchronises it
void hash_vectors(const DeviceMatrix& x, const DeviceMatrix& planes, std::int64_t num_tables,
                  std::int64_t bits, std::uint64_t* codes, cudaStream_t stream);

}  // namespace simdex::cuda
