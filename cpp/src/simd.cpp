// SIMD kernels shared by the exact and LSH searches, one variant per ISA, chosen once
// at load time (same CPU -> same kernel -> same results).
#include "simd.h"

#include "arch.h"

namespace simdex::simd {

namespace {

float dot_scalar(const float* a, const float* b, std::int64_t d) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  std::int64_t j = 0;
  for (; j + 4 <= d; j += 4) {
    s0 += a[j] * b[j];
    s1 += a[j + 1] * b[j + 1];
    s2 += a[j + 2] * b[j + 2];
    s3 += a[j + 3] * b[j + 3];
  }
  for (; j < d; ++j) s0 += a[j] * b[j];
  return (s0 + s1) + (s2 + s3);
}

#if SIMDEX_X86
__attribute__((target("avx2,fma"))) float dot_avx2(const float* a, const float* b, std::int64_t d) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  std::int64_t j = 0;
  for (; j + 16 <= d; j += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 8), _mm256_loadu_ps(b + j + 8), s1);
  }
  for (; j + 8 <= d; j += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
  s0 = _mm256_add_ps(s0, s1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  float s = _mm_cvtss_f32(h);
  for (; j < d; ++j) s += a[j] * b[j];
  return s;
}

__attribute__((target("avx512f"))) float dot_avx512(const float* a, const float* b, std::int64_t d) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  std::int64_t j = 0;
  for (; j + 32 <= d; j += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j), _mm512_loadu_ps(b + j), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j + 16), _mm512_loadu_ps(b + j + 16), s1);
  }
  for (; j + 16 <= d; j += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j), _mm512_loadu_ps(b + j), s0);
  if (j < d) {  // masked tail: no reads past the row
    const __mmask16 m = static_cast<__mmask16>((1u << (d - j)) - 1u);
    s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + j), _mm512_maskz_loadu_ps(m, b + j), s1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}
#endif  // SIMDEX_X86

using DotFn = float (*)(const float*, const float*, std::int64_t);
DotFn pick_dot() {
#if SIMDEX_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return dot_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return dot_avx2;
#endif
  return dot_scalar;
}
const DotFn g_dot = pick_dot();

}  // namespace

float dot(const float* a, const float* b, std::int64_t d) { return g_dot(a, b, d); }

}  // namespace simdex::simd
