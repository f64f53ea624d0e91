// Launcher of the sign-projection hash kernel (hashing.cu), shared by hash_vectors
// and the GPU LSH tables.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace simdex::cuda::detail {

/// codes: n x L uint64. proj (optional, nullptr to skip): n x (L*K) floats receiving
/// |projection| (the confidence of each bit, used to choose probes). Asynchronous.
void launch_hash(const float* x, std::int64_t n, std::int64_t ldx, const float* planes, std::int64_t ldp,
                 std::int64_t d, int L, int K, std::uint64_t* codes, float* proj, cudaStream_t stream);

}  // namespace simdex::cuda::detail
