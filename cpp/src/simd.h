// Internal SIMD kernels of the native core (not part of the public headers).
#pragma once

#include <cstdint>

namespace simdex::simd {

/// <a, b> over d floats, AVX-512 / AVX2+FMA / scalar chosen at load time.
float dot(const float* a, const float* b, std::int64_t d);

}  // namespace simdex::simd
