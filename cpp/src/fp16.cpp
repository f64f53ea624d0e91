#include "fp16.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "arch.h"

namespace simdex::fp16 {

namespace {

enum class Level { kNone, kAvx2, kAvx512 };

// Without x86 (F16C) the shadow is never kept: FlatIndex searches in float32 only.
Level detect() {
#if !SIMDEX_X86
  return Level::kNone;
#else
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("f16c")) return Level::kNone;
  if (__builtin_cpu_supports("avx512f")) return Level::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c"))
    return Level::kAvx2;
  return Level::kNone;
#endif
}
const Level g_detected = detect();
Level g_level = g_detected;

#if SIMDEX_X86
// GCC 12 warns that _mm512_cvtph_ps's (unused) pass-through operand is uninitialised.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
__attribute__((target("avx512f"))) inline __m512 load16(const std::uint16_t* ptr) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ptr)));
}
#pragma GCC diagnostic pop

__attribute__((target("avx2,f16c"))) inline __m256 load8(const std::uint16_t* ptr) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ptr)));
}

// One panel at a time (a single sequential stream, which the hardware prefetchers
// follow; interleaving several panels measured 2x slower from DRAM), with eight
// accumulators over j to hide the FMA latency.
__attribute__((target("avx512f"))) void dots_avx512(const std::uint16_t* panels, std::int64_t p0,
                                                    std::int64_t p1, std::int64_t d,
                                                    const float* q, float* out) {
  const std::int64_t stride = kPanel * d;
  for (std::int64_t p = p0; p < p1; ++p) {
    const std::uint16_t* a = panels + p * stride;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    std::int64_t j = 0;
    for (; j + 8 <= d; j += 8) {
      const std::uint16_t* c = a + j * kPanel;
      s0 = _mm512_fmadd_ps(load16(c), _mm512_set1_ps(q[j]), s0);
      s1 = _mm512_fmadd_ps(load16(c + kPanel), _mm512_set1_ps(q[j + 1]), s1);
      s2 = _mm512_fmadd_ps(load16(c + 2 * kPanel), _mm512_set1_ps(q[j + 2]), s2);
      s3 = _mm512_fmadd_ps(load16(c + 3 * kPanel), _mm512_set1_ps(q[j + 3]), s3);
      s4 = _mm512_fmadd_ps(load16(c + 4 * kPanel), _mm512_set1_ps(q[j + 4]), s4);
      s5 = _mm512_fmadd_ps(load16(c + 5 * kPanel), _mm512_set1_ps(q[j + 5]), s5);
      s6 = _mm512_fmadd_ps(load16(c + 6 * kPanel), _mm512_set1_ps(q[j + 6]), s6);
      s7 = _mm512_fmadd_ps(load16(c + 7 * kPanel), _mm512_set1_ps(q[j + 7]), s7);
    }
    for (; j < d; ++j) s0 = _mm512_fmadd_ps(load16(a + j * kPanel), _mm512_set1_ps(q[j]), s0);
    const __m512 r = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)),
                                   _mm512_add_ps(_mm512_add_ps(s4, s5), _mm512_add_ps(s6, s7)));
    _mm512_storeu_ps(out + (p - p0) * kPanel, r);
  }
}

// AVX2 + F16C: a panel is two 8-lane halves; four accumulators over j for each.
__attribute__((target("avx2,fma,f16c"))) void dots_avx2(const std::uint16_t* panels,
                                                        std::int64_t p0, std::int64_t p1,
                                                        std::int64_t d, const float* q,
                                                        float* out) {
  const std::int64_t stride = kPanel * d;
  for (std::int64_t p = p0; p < p1; ++p) {
    const std::uint16_t* a = panels + p * stride;
    __m256 l0 = _mm256_setzero_ps(), l1 = l0, l2 = l0, l3 = l0, h0 = l0, h1 = l0, h2 = l0, h3 = l0;
    std::int64_t j = 0;
    for (; j + 4 <= d; j += 4) {
      const std::uint16_t* c = a + j * kPanel;
      const __m256 q0 = _mm256_set1_ps(q[j]), q1 = _mm256_set1_ps(q[j + 1]);
      const __m256 q2 = _mm256_set1_ps(q[j + 2]), q3 = _mm256_set1_ps(q[j + 3]);
      l0 = _mm256_fmadd_ps(load8(c), q0, l0);
      h0 = _mm256_fmadd_ps(load8(c + 8), q0, h0);
      l1 = _mm256_fmadd_ps(load8(c + kPanel), q1, l1);
      h1 = _mm256_fmadd_ps(load8(c + kPanel + 8), q1, h1);
      l2 = _mm256_fmadd_ps(load8(c + 2 * kPanel), q2, l2);
      h2 = _mm256_fmadd_ps(load8(c + 2 * kPanel + 8), q2, h2);
      l3 = _mm256_fmadd_ps(load8(c + 3 * kPanel), q3, l3);
      h3 = _mm256_fmadd_ps(load8(c + 3 * kPanel + 8), q3, h3);
    }
    for (; j < d; ++j) {
      const __m256 qj = _mm256_set1_ps(q[j]);
      l0 = _mm256_fmadd_ps(load8(a + j * kPanel), qj, l0);
      h0 = _mm256_fmadd_ps(load8(a + j * kPanel + 8), qj, h0);
    }
    float* o = out + (p - p0) * kPanel;
    _mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(l0, l1), _mm256_add_ps(l2, l3)));
    _mm256_storeu_ps(o + 8, _mm256_add_ps(_mm256_add_ps(h0, h1), _mm256_add_ps(h2, h3)));
  }
}

// Round to nearest even (F16C; every CPU with AVX-512F has it too).
__attribute__((target("avx2,f16c"))) std::uint16_t to_half_f16c(float v) {
  return static_cast<std::uint16_t>(
      _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(v), _MM_FROUND_TO_NEAREST_INT), 0));
}

// Append to out the rows r in [0, n) with !(ub[r] < tau) (NaN counts as a candidate).
__attribute__((target("avx512f"))) void candidates_avx512(const float* ub, std::int64_t n, float tau,
                                                          std::vector<std::int64_t>& out) {
  const __m512 t = _mm512_set1_ps(tau);
  std::int64_t r = 0;
  for (; r + 16 <= n; r += 16) {
    unsigned m = _mm512_cmp_ps_mask(_mm512_loadu_ps(ub + r), t, _CMP_NLT_UQ);
    while (m) {
      out.push_back(r + __builtin_ctz(m));
      m &= m - 1;
    }
  }
  for (; r < n; ++r)
    if (!(ub[r] < tau)) out.push_back(r);
}

__attribute__((target("avx2"))) void candidates_avx2(const float* ub, std::int64_t n, float tau,
                                                     std::vector<std::int64_t>& out) {
  const __m256 t = _mm256_set1_ps(tau);
  std::int64_t r = 0;
  for (; r + 8 <= n; r += 8) {
    unsigned m = static_cast<unsigned>(
        _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(ub + r), t, _CMP_NLT_UQ)));
    while (m) {
      out.push_back(r + __builtin_ctz(m));
      m &= m - 1;
    }
  }
  for (; r < n; ++r)
    if (!(ub[r] < tau)) out.push_back(r);
}
#endif  // SIMDEX_X86

}  // namespace

bool supported() { return g_level != Level::kNone; }

bool set_level(const char* name) {
  const std::string n(name);
  Level want;
  if (n == "auto")
    want = g_detected;
  else if (n == "avx2" && g_detected != Level::kNone)
    want = Level::kAvx2;
  else if (n == "avx512" && g_detected == Level::kAvx512)
    want = Level::kAvx512;
  else
    return false;
  g_level = want;
  return true;
}

const char* simd_level() {
  switch (g_level) {
    case Level::kAvx512: return "avx512";
    case Level::kAvx2: return "avx2";
    case Level::kNone: break;
  }
  return "none";
}

void store_row(std::uint16_t* panels, std::int64_t row, std::int64_t d, const float* v) {
  std::uint16_t* base = panels + (row / kPanel) * kPanel * d + row % kPanel;
#if SIMDEX_X86
  if (g_level != Level::kNone)
    for (std::int64_t j = 0; j < d; ++j) base[j * kPanel] = to_half_f16c(v[j]);
#else
  (void)base, (void)v;
#endif
}

void copy_row(std::uint16_t* panels, std::int64_t dst, std::int64_t src, std::int64_t d) {
  std::uint16_t* to = panels + (dst / kPanel) * kPanel * d + dst % kPanel;
  const std::uint16_t* from = panels + (src / kPanel) * kPanel * d + src % kPanel;
  for (std::int64_t j = 0; j < d; ++j) to[j * kPanel] = from[j * kPanel];
}

void clear_row(std::uint16_t* panels, std::int64_t row, std::int64_t d) {
  std::uint16_t* base = panels + (row / kPanel) * kPanel * d + row % kPanel;
  for (std::int64_t j = 0; j < d; ++j) base[j * kPanel] = 0;
}

void panel_dots(const std::uint16_t* panels, std::int64_t p0, std::int64_t p1, std::int64_t d,
                const float* q, float* out) {
#if SIMDEX_X86
  if (g_level == Level::kAvx512)
    dots_avx512(panels, p0, p1, d, q, out);
  else if (g_level == Level::kAvx2)
    dots_avx2(panels, p0, p1, d, q, out);
  else
    std::memset(out, 0, sizeof(float) * static_cast<std::size_t>((p1 - p0) * kPanel));
#else
  (void)panels, (void)d, (void)q;
  std::memset(out, 0, sizeof(float) * static_cast<std::size_t>((p1 - p0) * kPanel));
#endif
}

double half_dot_error_bound(std::int64_t d) {
  // |q . (h - x/|x|)| <= 2^-11 |q| + 2^-25 |q|_1 (<= 2^-25 sqrt(d) |q|) for the float16
  // rounding; the float32 normalisation adds ~3u and each float32 dot product at most
  // d u |q||x| (u = 2^-24), plus the rounding of the final scalings.
  const double u = std::ldexp(1.0, -24);
  const double bound = std::ldexp(1.0, -11) + std::ldexp(1.0, -25) * std::sqrt(double(d)) +
                       (2.0 * double(d) + 10.0) * u;
  return 2.0 * bound;
}

void rows_at_least(const float* v, std::int64_t n, float tau, std::vector<std::int64_t>& out) {
#if SIMDEX_X86
  if (g_level == Level::kAvx512) {
    candidates_avx512(v, n, tau, out);
    return;
  }
  if (g_level == Level::kAvx2) {
    candidates_avx2(v, n, tau, out);
    return;
  }
#endif
  for (std::int64_t r = 0; r < n; ++r)
    if (!(v[r] < tau)) out.push_back(r);
}

}  // namespace simdex::fp16
