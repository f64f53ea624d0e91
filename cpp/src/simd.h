// Internal SIMD kernels of the native core (not part of the public headers).
#pragma once

#include <cstdint>

namespace simdex::simd {

/// <a, b> over d floats, AVX-512 / AVX2+FMA / scalar chosen at load time.
float dot(const float* a, const float* b, std::int64_t d);

}  // namespace simdex::simd

namespace simdex::simd {

/// Hamming distances of n sketches of W 64-bit words (row i: codes[i*W .. i*W+W)) to
/// the query sketch q (W words): out[i] = popcount(codes_i XOR q). W in [1, 8].
/// AVX-512 VPOPCNTDQ / POPCNT / portable versions, chosen at load time (same result).
void hamming(const std::uint64_t* codes, std::int64_t n, int W, const std::uint64_t* q,
             std::uint16_t* out);

/// As hamming, for the rows rows[0..n) of codes (random access).
void hamming_gather(const std::uint64_t* codes, const std::uint32_t* rows, std::int64_t n, int W,
                    const std::uint64_t* q, std::uint16_t* out);

/// Name of the popcount kernel in use ("avx512-vpopcntdq", "popcnt", "scalar").
const char* popcount_kernel();

}  // namespace simdex::simd

namespace simdex::simd {

/// Hamming distances for sketches in the blocked planar layout: rows come in blocks of
/// 8, and word w of row 8b+j is planar[b*8W + w*8 + j], so eight rows are compared
/// with one vertical popcount per word. n: rows, a multiple of 8.
void hamming_planar(const std::uint64_t* planar, std::int64_t n, int W, const std::uint64_t* q,
                    std::uint16_t* out);

/// Several queries against one run of blocked planar rows [lo, hi) (planar points at
/// row 0): each sketch block is loaded once and compared with every query (query j's W
/// words at qs[j*W ..]). For each (query j, row) with Hamming distance <= t[j], in row
/// order and queries ascending within a row block, appends j to out_q, the row to
/// out_row and the distance to out_h; returns the count. The out arrays need room for
/// nq * (hi - lo) entries.
std::int64_t hamming_planar_multi(const std::uint64_t* planar, std::int64_t lo, std::int64_t hi, int W,
                                  const std::uint64_t* qs, const std::uint16_t* t, int nq,
                                  std::uint32_t* out_q, std::uint32_t* out_row, std::uint16_t* out_h);
/// Positions i in [0, n) with h[i] <= t, ascending, into idx; returns their count.
std::int64_t select_le(const std::uint16_t* h, std::int64_t n, std::uint16_t t, std::uint32_t* idx);

}  // namespace simdex::simd
