// SIMD kernels shared by the exact and LSH searches, one variant per ISA, chosen once
// at load time (same CPU -> same kernel -> same results).
#include "simd.h"

#include <algorithm>
#include <cstddef>

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

// ---- Hamming distances of sketches (sign bits packed in 64-bit words).
namespace simdex::simd {

namespace {

inline unsigned row_popcount_soft(const std::uint64_t* c, const std::uint64_t* q, int W) {
  unsigned h = 0;
  for (int w = 0; w < W; ++w) h += static_cast<unsigned>(__builtin_popcountll(c[w] ^ q[w]));
  return h;
}

void hamming_scalar(const std::uint64_t* codes, std::int64_t n, int W, const std::uint64_t* q,
                    std::uint16_t* out) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<std::uint16_t>(row_popcount_soft(codes + i * W, q, W));
}

void hamming_gather_scalar(const std::uint64_t* codes, const std::uint32_t* rows, std::int64_t n, int W,
                           const std::uint64_t* q, std::uint16_t* out) {
  for (std::int64_t i = 0; i < n; ++i)
    out[i] = static_cast<std::uint16_t>(row_popcount_soft(codes + static_cast<std::size_t>(rows[i]) * W, q, W));
}

#if SIMDEX_X86
// Same source compiled with the POPCNT instruction (x86-64-v2 and later).
__attribute__((target("popcnt"))) void hamming_popcnt(const std::uint64_t* codes, std::int64_t n, int W,
                                                      const std::uint64_t* q, std::uint16_t* out) {
  if (W == 1) {
    const std::uint64_t q0 = q[0];
    for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<std::uint16_t>(__builtin_popcountll(codes[i] ^ q0));
    return;
  }
  for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<std::uint16_t>(row_popcount_soft(codes + i * W, q, W));
}

__attribute__((target("popcnt"))) void hamming_gather_popcnt(const std::uint64_t* codes,
                                                             const std::uint32_t* rows, std::int64_t n,
                                                             int W, const std::uint64_t* q,
                                                             std::uint16_t* out) {
  constexpr std::int64_t kAhead = 16;  // rows are read at random: overlap the misses
  for (std::int64_t i = 0; i < n; ++i) {
    if (i + kAhead < n) __builtin_prefetch(codes + static_cast<std::size_t>(rows[i + kAhead]) * W);
    const std::uint64_t* c = codes + static_cast<std::size_t>(rows[i]) * W;
    unsigned h = 0;
    for (int w = 0; w < W; ++w) h += static_cast<unsigned>(__builtin_popcountll(c[w] ^ q[w]));
    out[i] = static_cast<std::uint16_t>(h);
  }
}

// AVX-512 VPOPCNTDQ: eight words per instruction. W = 1: eight rows per step; W = 2, 4,
// 8: 8/W rows per step, the per-row sums reduced through a small buffer.
__attribute__((target("avx512f,avx512vpopcntdq,popcnt"))) void hamming_avx512(
    const std::uint64_t* codes, std::int64_t n, int W, const std::uint64_t* q, std::uint16_t* out) {
  if (W == 1) {
    const __m512i qv = _mm512_set1_epi64(static_cast<long long>(q[0]));
    std::int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m512i x = _mm512_xor_si512(_mm512_loadu_si512(codes + i), qv);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm512_cvtepi64_epi16(_mm512_popcnt_epi64(x)));
    }
    for (; i < n; ++i) out[i] = static_cast<std::uint16_t>(__builtin_popcountll(codes[i] ^ q[0]));
    return;
  }
  if (W == 2 || W == 4 || W == 8) {
    alignas(64) std::uint64_t qrep[8];
    for (int j = 0; j < 8; ++j) qrep[j] = q[j % W];
    const __m512i qv = _mm512_load_si512(qrep);
    const std::int64_t per = 8 / W;
    std::int64_t i = 0;
    alignas(64) std::uint64_t cnt[8];
    for (; i + per <= n; i += per) {
      const __m512i x = _mm512_xor_si512(_mm512_loadu_si512(codes + i * W), qv);
      const __m512i p = _mm512_popcnt_epi64(x);
      if (W == 8) {
        out[i] = static_cast<std::uint16_t>(_mm512_reduce_add_epi64(p));
        continue;
      }
      _mm512_store_si512(cnt, p);
      for (std::int64_t r = 0; r < per; ++r) {
        std::uint64_t h = 0;
        for (int w = 0; w < W; ++w) h += cnt[r * W + w];
        out[i + r] = static_cast<std::uint16_t>(h);
      }
    }
    for (; i < n; ++i) {
      unsigned h = 0;
      for (int w = 0; w < W; ++w) h += static_cast<unsigned>(__builtin_popcountll(codes[i * W + w] ^ q[w]));
      out[i] = static_cast<std::uint16_t>(h);
    }
    return;
  }
  hamming_popcnt(codes, n, W, q, out);
}

__attribute__((target("avx512f,avx512vpopcntdq,popcnt"))) void hamming_gather_avx512(
    const std::uint64_t* codes, const std::uint32_t* rows, std::int64_t n, int W, const std::uint64_t* q,
    std::uint16_t* out) {
  if (W != 8) {
    hamming_gather_popcnt(codes, rows, n, W, q, out);
    return;
  }
  const __m512i qv = _mm512_loadu_si512(q);
  for (std::int64_t i = 0; i < n; ++i) {
    if (i + 16 < n) __builtin_prefetch(codes + static_cast<std::size_t>(rows[i + 16]) * 8);
    const __m512i x = _mm512_xor_si512(_mm512_loadu_si512(codes + static_cast<std::size_t>(rows[i]) * 8), qv);
    out[i] = static_cast<std::uint16_t>(_mm512_reduce_add_epi64(_mm512_popcnt_epi64(x)));
  }
}

#endif  // SIMDEX_X86
using HammingFn = void (*)(const std::uint64_t*, std::int64_t, int, const std::uint64_t*, std::uint16_t*);
using GatherFn = void (*)(const std::uint64_t*, const std::uint32_t*, std::int64_t, int, const std::uint64_t*,
                          std::uint16_t*);
struct PopcountKernels {
  HammingFn contiguous;
  GatherFn gather;
  const char* name;
};

PopcountKernels pick_popcount() {
#if SIMDEX_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq"))
    return {hamming_avx512, hamming_gather_avx512, "avx512-vpopcntdq"};
  if (__builtin_cpu_supports("popcnt")) return {hamming_popcnt, hamming_gather_popcnt, "popcnt"};
#endif
  return {hamming_scalar, hamming_gather_scalar, "scalar"};
}
const PopcountKernels g_popcount = pick_popcount();

}  // namespace

void hamming(const std::uint64_t* codes, std::int64_t n, int W, const std::uint64_t* q, std::uint16_t* out) {
  g_popcount.contiguous(codes, n, W, q, out);
}

void hamming_gather(const std::uint64_t* codes, const std::uint32_t* rows, std::int64_t n, int W,
                    const std::uint64_t* q, std::uint16_t* out) {
  g_popcount.gather(codes, rows, n, W, q, out);
}

const char* popcount_kernel() { return g_popcount.name; }

}  // namespace simdex::simd

namespace simdex::simd {

namespace {

void hamming_planar_scalar(const std::uint64_t* planar, std::int64_t n, int W, const std::uint64_t* q,
                           std::uint16_t* out) {
  for (std::int64_t b = 0; b < n / 8; ++b) {
    const std::uint64_t* blk = planar + b * 8 * W;
    for (int j = 0; j < 8; ++j) {
      unsigned h = 0;
      for (int w = 0; w < W; ++w) h += static_cast<unsigned>(__builtin_popcountll(blk[w * 8 + j] ^ q[w]));
      out[b * 8 + j] = static_cast<std::uint16_t>(h);
    }
  }
}

#if SIMDEX_X86
__attribute__((target("popcnt"))) void hamming_planar_popcnt(const std::uint64_t* planar, std::int64_t n, int W,
                                                             const std::uint64_t* q, std::uint16_t* out) {
  for (std::int64_t b = 0; b < n / 8; ++b) {
    const std::uint64_t* blk = planar + b * 8 * W;
    unsigned h[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int w = 0; w < W; ++w)
      for (int j = 0; j < 8; ++j) h[j] += static_cast<unsigned>(__builtin_popcountll(blk[w * 8 + j] ^ q[w]));
    for (int j = 0; j < 8; ++j) out[b * 8 + j] = static_cast<std::uint16_t>(h[j]);
  }
}

__attribute__((target("avx512f,avx512vpopcntdq"))) void hamming_planar_avx512(const std::uint64_t* planar,
                                                                              std::int64_t n, int W,
                                                                              const std::uint64_t* q,
                                                                              std::uint16_t* out) {
  __m512i qv[8];
  for (int w = 0; w < W; ++w) qv[w] = _mm512_set1_epi64(static_cast<long long>(q[w]));
  for (std::int64_t b = 0; b < n / 8; ++b) {
    const std::uint64_t* blk = planar + b * 8 * W;
    __m512i acc = _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(blk), qv[0]));
    for (int w = 1; w < W; ++w)
      acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(_mm512_loadu_si512(blk + w * 8), qv[w])));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + b * 8), _mm512_cvtepi64_epi16(acc));
  }
}

#endif  // SIMDEX_X86
std::int64_t planar_multi_portable(const std::uint64_t* planar, std::int64_t lo, std::int64_t hi, int W,
                                   const std::uint64_t* qs, const std::uint16_t* t, int nq,
                                   std::uint32_t* out_q, std::uint32_t* out_row, std::uint16_t* out_h) {
  std::int64_t c = 0;
  for (std::int64_t b = lo / 8; b * 8 < hi; ++b) {
    const std::uint64_t* blk = planar + b * 8 * W;
    for (int j = 0; j < nq; ++j) {
      const std::uint64_t* q = qs + static_cast<std::ptrdiff_t>(j) * W;
      for (std::int64_t i = std::max(lo, b * 8); i < std::min(hi, b * 8 + 8); ++i) {
        unsigned h = 0;
        for (int w = 0; w < W; ++w) h += static_cast<unsigned>(__builtin_popcountll(blk[w * 8 + (i - b * 8)] ^ q[w]));
        if (h <= t[j]) {
          out_q[c] = static_cast<std::uint32_t>(j);
          out_row[c] = static_cast<std::uint32_t>(i);
          out_h[c++] = static_cast<std::uint16_t>(h);
        }
      }
    }
  }
  return c;
}

#if SIMDEX_X86
// One 8-row block in registers (W loads), then per query W xor+popcount+add against
// the query's words broadcast from memory and one compare: the sketch data leaves L1
// once per block instead of once per query.
template <int W>
__attribute__((target("avx512f,avx512vpopcntdq"))) std::int64_t planar_multi_avx512_w(
    const std::uint64_t* planar, std::int64_t lo, std::int64_t hi, const std::uint64_t* qs, const std::uint16_t* t,
    int nq, std::uint32_t* out_q, std::uint32_t* out_row, std::uint16_t* out_h) {
  std::int64_t c = 0;
  alignas(64) std::uint64_t hv[8];
  for (std::int64_t b = lo / 8; b * 8 < hi; ++b) {
    const std::uint64_t* blk = planar + b * 8 * W;
    __m512i x[W];
    for (int w = 0; w < W; ++w) x[w] = _mm512_loadu_si512(blk + w * 8);
    const std::int64_t r0 = b * 8;
    __mmask8 range = 0xFF;
    if (r0 < lo) range &= static_cast<__mmask8>(0xFFu << (lo - r0));
    if (r0 + 8 > hi) range &= static_cast<__mmask8>(0xFFu >> (r0 + 8 - hi));
    for (int j = 0; j < nq; ++j) {
      const std::uint64_t* q = qs + static_cast<std::ptrdiff_t>(j) * W;
      __m512i acc = _mm512_popcnt_epi64(_mm512_xor_si512(x[0], _mm512_set1_epi64(static_cast<long long>(q[0]))));
      for (int w = 1; w < W; ++w)
        acc = _mm512_add_epi64(
            acc, _mm512_popcnt_epi64(_mm512_xor_si512(x[w], _mm512_set1_epi64(static_cast<long long>(q[w])))));
      unsigned m = _mm512_mask_cmple_epu64_mask(range, acc, _mm512_set1_epi64(t[j]));
      if (!m) continue;
      _mm512_store_si512(hv, acc);
      do {
        const int i = __builtin_ctz(m);
        out_q[c] = static_cast<std::uint32_t>(j);
        out_row[c] = static_cast<std::uint32_t>(r0 + i);
        out_h[c++] = static_cast<std::uint16_t>(hv[i]);
        m &= m - 1;
      } while (m);
    }
  }
  return c;
}

std::int64_t planar_multi_avx512(const std::uint64_t* planar, std::int64_t lo, std::int64_t hi, int W,
                                 const std::uint64_t* qs, const std::uint16_t* t, int nq, std::uint32_t* out_q,
                                 std::uint32_t* out_row, std::uint16_t* out_h) {
  switch (W) {
    case 1: return planar_multi_avx512_w<1>(planar, lo, hi, qs, t, nq, out_q, out_row, out_h);
    case 2: return planar_multi_avx512_w<2>(planar, lo, hi, qs, t, nq, out_q, out_row, out_h);
    case 3: return planar_multi_avx512_w<3>(planar, lo, hi, qs, t, nq, out_q, out_row, out_h);
    case 4: return planar_multi_avx512_w<4>(planar, lo, hi, qs, t, nq, out_q, out_row, out_h);
    case 5: return planar_multi_avx512_w<5>(planar, lo, hi, qs, t, nq, out_q, out_row, out_h);
    case 6: return planar_multi_avx512_w<6>(planar, lo, hi, qs, t, nq, out_q, out_row, out_h);
    case 7: return planar_multi_avx512_w<7>(planar, lo, hi, qs, t, nq, out_q, out_row, out_h);
    default: return planar_multi_avx512_w<8>(planar, lo, hi, qs, t, nq, out_q, out_row, out_h);
  }
}

#endif  // SIMDEX_X86
std::int64_t select_le_scalar(const std::uint16_t* h, std::int64_t n, std::uint16_t t, std::uint32_t* idx) {
  std::int64_t c = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    idx[c] = static_cast<std::uint32_t>(i);
    c += h[i] <= t;
  }
  return c;
}

#if SIMDEX_X86
__attribute__((target("avx512f,avx512bw,bmi"))) std::int64_t select_le_avx512(const std::uint16_t* h,
                                                                              std::int64_t n, std::uint16_t t,
                                                                              std::uint32_t* idx) {
  const __m512i tv = _mm512_set1_epi16(static_cast<short>(t));
  std::int64_t c = 0, i = 0;
  for (; i + 32 <= n; i += 32) {
    std::uint32_t m = _mm512_cmple_epu16_mask(_mm512_loadu_si512(h + i), tv);
    while (m) {
      idx[c++] = static_cast<std::uint32_t>(i + __builtin_ctz(m));
      m &= m - 1;
    }
  }
  for (; i < n; ++i)
    if (h[i] <= t) idx[c++] = static_cast<std::uint32_t>(i);
  return c;
}

#endif  // SIMDEX_X86
using PlanarFn = void (*)(const std::uint64_t*, std::int64_t, int, const std::uint64_t*, std::uint16_t*);
using SelectFn = std::int64_t (*)(const std::uint16_t*, std::int64_t, std::uint16_t, std::uint32_t*);

PlanarFn pick_planar() {
#if SIMDEX_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq")) return hamming_planar_avx512;
  if (__builtin_cpu_supports("popcnt")) return hamming_planar_popcnt;
#endif
  return hamming_planar_scalar;
}
SelectFn pick_select() {
#if SIMDEX_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return select_le_avx512;
#endif
  return select_le_scalar;
}
using PlanarMultiFn = std::int64_t (*)(const std::uint64_t*, std::int64_t, std::int64_t, int, const std::uint64_t*,
                                       const std::uint16_t*, int, std::uint32_t*, std::uint32_t*, std::uint16_t*);
PlanarMultiFn pick_planar_multi() {
#if SIMDEX_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq")) return planar_multi_avx512;
#endif
  return planar_multi_portable;
}
const PlanarFn g_planar = pick_planar();
const PlanarMultiFn g_planar_multi = pick_planar_multi();
const SelectFn g_select = pick_select();

}  // namespace

void hamming_planar(const std::uint64_t* planar, std::int64_t n, int W, const std::uint64_t* q,
                    std::uint16_t* out) {
  g_planar(planar, n, W, q, out);
}

std::int64_t select_le(const std::uint16_t* h, std::int64_t n, std::uint16_t t, std::uint32_t* idx) {
  return g_select(h, n, t, idx);
}

std::int64_t hamming_planar_multi(const std::uint64_t* planar, std::int64_t lo, std::int64_t hi, int W,
                                  const std::uint64_t* qs, const std::uint16_t* t, int nq,
                                  std::uint32_t* out_q, std::uint32_t* out_row, std::uint16_t* out_h) {
  return g_planar_multi(planar, lo, hi, W, qs, t, nq, out_q, out_row, out_h);
}

}  // namespace simdex::simd
