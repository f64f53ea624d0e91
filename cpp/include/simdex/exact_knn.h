// Exact (brute-force) batched k-nearest-neighbour search.
//
// The search is tiled: for each (query block x base block) one GEMM computes the
// inner products into a tile small enough to stay in L2, the tile is turned into
// scores (cosine / L2 adjustments fused into one pass) and a SIMD threshold filter
// feeds per-query heaps. Query blocks are spread over threads; when there are
// fewer query blocks than threads, the base is split too and the partial heaps are
// merged. Tiny problems skip BLAS, single queries use GEMV.
//
// Example:
// @code
//   std::vector<float> D(nq * k);
//   std::vector<simdex::idx_t> I(nq * k);
//   simdex::knn_exact(q, nq, x, nb, d, k, simdex::Metric::kCosine, nullptr, nullptr,
//                     D.data(), I.data());
// @endcode
#pragma once

#include <cstdint>

#include "simdex/common.h"

namespace simdex {

/// Tiling and threading knobs of knn_exact. Defaults suit d in [32, 1024] on CPUs with
/// >= 1 MiB of L2 per core.
struct KnnParams {
  std::int64_t query_block = 512;  ///< queries per GEMM tile
  std::int64_t base_block = 2048;  ///< base vectors per GEMM tile (4 MiB tile: L3-resident; larger M,N keep the GEMM near peak)
  int num_threads = 0;             ///< <= 0: simdex::default_num_threads()
  /// Below this many multiply-adds (nq * nb * d) the search runs on the calling
  /// thread without BLAS.
  std::int64_t tiny_work = 1 << 16;
  /// knn_exact_prefiltered: use the float16 pre-filter for calls with at most this
  /// many queries (more queries: the GEMM path, which is compute-bound, is faster)...
  std::int64_t prefilter_max_queries = 4;
  /// ... and at least this many base vectors.
  std::int64_t prefilter_min_rows = 4096;
};

/// Float16 shadow of a base set (see FlatIndex): unit directions rounded to float16
/// in the panel layout of fp16.h, and the float32 norm of every row.
struct HalfShadow {
  const std::uint16_t* panels = nullptr;  ///< fp16(x / |x|), ceil(nb / 16) * 16 * d values
  const float* norms = nullptr;           ///< |x| per row; +inf marks a row always re-ranked
};

/// Per-row auxiliary values the metric needs for the base vectors:
/// kCosine -> 1/|x| (0 for a zero row); kL2, kSquaredL2 -> |x|^2; kInnerProduct -> none.
/// @param[in]  x    n * d floats, row-major
/// @param[out] aux  n floats (untouched for kInnerProduct)
void compute_row_aux(const float* x, std::int64_t n, std::int64_t d, Metric metric, float* aux);

/// Exact k-NN of nq queries among nb base vectors.
///
/// @param[in]  q          nq * d floats, row-major (finite)
/// @param[in]  x          nb * d floats, row-major (finite)
/// @param[in]  k          neighbours per query, >= 1 (k > nb pads with id -1, distance +inf)
/// @param[in]  x_aux      nb floats from compute_row_aux, or nullptr to compute them here
/// @param[in]  x_ids      nb ids reported for the base rows (and used to break ties),
///                        or nullptr for row numbers
/// @param[out] distances  nq * k floats, ascending per query (see Metric)
/// @param[out] ids        nq * k ids, -1 where fewer than k base vectors exist
/// @throws std::invalid_argument on bad sizes; simdex::Interrupted on Ctrl-C.
void knn_exact(const float* q, std::int64_t nq, const float* x, std::int64_t nb, std::int64_t d,
               std::int64_t k, Metric metric, const float* x_aux, const idx_t* x_ids,
               float* distances, idx_t* ids, const KnnParams& params = KnnParams());

/// knn_exact with a float16 pre-filter, for calls with few queries (memory-bound).
///
/// Pass 1 reads the float16 shadow (half the bytes of the float32 vectors) and gets an
/// approximate score for every row together with a guaranteed error bound e_r (see
/// fp16::half_dot_error_bound). With tau the k-th largest lower bound (score - e_r),
/// every row whose float32 score can reach tau has approximate score + e_r >= tau;
/// pass 2 re-scores exactly those rows in float32 with the same tie rule, so the
/// result is the exact k-NN (up to float32 rounding, as for knn_exact), not an
/// approximation. Falls back to knn_exact when shadow.panels is null, the CPU lacks
/// the float16 instructions, or the call is outside the params.prefilter_* limits.
/// Arguments as knn_exact; x_aux is required for every metric but kInnerProduct.
/// @return the number of rows re-scored in float32 (summed over queries), or -1 when
///         the call fell back to knn_exact.
std::int64_t knn_exact_prefiltered(const float* q, std::int64_t nq, const float* x, std::int64_t nb,
                           std::int64_t d, std::int64_t k, Metric metric, const float* x_aux,
                           const idx_t* x_ids, const HalfShadow& shadow, float* distances,
                           idx_t* ids, const KnnParams& params = KnnParams());

/// Normalise n rows of x in place to unit L2 norm; zero rows stay zero.
void normalize_rows(float* x, std::int64_t n, std::int64_t d);

}  // namespace simdex
