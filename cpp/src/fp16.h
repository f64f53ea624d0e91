// Float16 shadow copy of stored vectors, used by FlatIndex to pre-filter searches
// with few queries (internal, not part of the public headers).
//
// Rows are kept in panels of kPanel rows, component-major inside a panel:
// element j of row r lives at panels[(r / kPanel) * kPanel * d + j * kPanel + r % kPanel].
// One SIMD load then brings component j of 16 rows, so a panel's 16 dot products
// are d broadcast-FMAs with no horizontal sums.
//
// The stored values are the unit directions x / |x| rounded to float16 (round to
// nearest), so every component is in [-1, 1] and the rounding error of a component
// is at most 2^-11 of its magnitude, or 2^-25 absolute in the subnormal range.
// half_dot_error_bound() turns that into a bound on |approximate - float32| dot.
#pragma once

#include <cstdint>
#include <vector>

namespace simdex::fp16 {

inline constexpr std::int64_t kPanel = 16;

/// Whether this CPU has the instructions the kernels need (F16C with AVX2+FMA, or
/// AVX-512F). When false, FlatIndex keeps no shadow and searches in float32 only.
bool supported();

/// Testing hook: use the "avx2" kernels on an AVX-512 CPU, or go back to "auto".
/// Returns false (and changes nothing) for a variant this CPU cannot run. Not
/// thread-safe: call it only while no search runs. (FlatIndex decides once, at
/// construction, whether it keeps a shadow.)
bool set_level(const char* name);

/// Name of the kernel variant in use ("avx512", "avx2", "none").
const char* simd_level();

/// Number of uint16 elements of storage for n rows of dimension d.
inline std::int64_t storage_size(std::int64_t n, std::int64_t d) {
  return (n + kPanel - 1) / kPanel * kPanel * d;
}

/// Round the d floats v to float16 and write them as row `row`.
void store_row(std::uint16_t* panels, std::int64_t row, std::int64_t d, const float* v);

/// Copy row src to row dst (both already allocated).
void copy_row(std::uint16_t* panels, std::int64_t dst, std::int64_t src, std::int64_t d);

/// Set row `row` to zeros.
void clear_row(std::uint16_t* panels, std::int64_t row, std::int64_t d);

/// out[r - p0 * kPanel] = sum_j q[j] * row_r[j] for all rows r of panels [p0, p1)
/// (float32 accumulation). out holds (p1 - p0) * kPanel floats; rows past the last
/// stored one read as zero rows.
void panel_dots(const std::uint16_t* panels, std::int64_t p0, std::int64_t p1, std::int64_t d,
                const float* q, float* out);

/// Append to out every r in [0, n) with !(v[r] < tau): v[r] >= tau or NaN (SIMD scan).
void rows_at_least(const float* v, std::int64_t n, float tau, std::vector<std::int64_t>& out);

/// Bound, relative to |q| * |x|, on |panel_dots(...)[r] * |x| - dot_f32(q, x)| for a
/// row stored as fp16(x / |x|), where dot_f32 is any float32 dot product of q and x
/// with a sequential or pairwise sum. Covers the float16 rounding, the float32
/// normalisation and both float32 summation errors, with a safety factor of 2.
double half_dot_error_bound(std::int64_t d);

}  // namespace simdex::fp16
