// simdex CUDA emulator: nvcuda::wmma for FP32 accumulators and TF32 inputs (m16n16k8).
//
// Every lane holds the whole tile (the element order inside a fragment is
// unspecified in CUDA, so element-wise code that works here works there), but owns
// only a share of an accumulator (8-element runs, round robin over the lanes):
// mma_sync computes and store_matrix_sync writes only that share, so reading a
// stored tile without a __syncwarp reads elements other lanes have not written
// yet. The *_sync functions are warp collectives and begin with __syncwarp. As on the tensor cores, mma_sync
// ignores the low 13 mantissa bits of TF32 inputs.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "simdex_emu/prelude.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

namespace emu {
template <int R, int C>
struct Tile {
  static constexpr int rows = R;
  static constexpr int cols = C;
  static constexpr int num_elements = R * C;
  float x[R * C];
};
// The lane of the calling thread, and whether accumulator element e is in its share.
inline int lane_id() {
  return static_cast<int>(threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y) & 31;
}
inline bool owns(int e, int lane) { return ((e >> 3) & 31) == lane; }
inline float tf32_bits(float v) {  // what the tensor core reads of a TF32 operand
  std::uint32_t b;
  std::memcpy(&b, &v, 4);
  b &= ~std::uint32_t{0x1FFF};
  std::memcpy(&v, &b, 4);
  return v;
}
}  // namespace emu

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment;

// Element (r, c) of a fragment is x[r * cols + c] in every case; the layout only
// matters when loading from or storing to memory.
template <int M, int N, int K, typename L>
struct fragment<matrix_a, M, N, K, precision::tf32, L> : emu::Tile<M, K> {
  using layout = L;
};
template <int M, int N, int K, typename L>
struct fragment<matrix_b, M, N, K, precision::tf32, L> : emu::Tile<K, N> {
  using layout = L;
};
template <int M, int N, int K>
struct fragment<accumulator, M, N, K, float, void> : emu::Tile<M, N> {};

inline float __float_to_tf32(float v) {  // cvt.rna.tf32.f32: nearest, ties away from zero
  std::uint32_t b;
  std::memcpy(&b, &v, 4);
  if ((b & 0x7F800000u) != 0x7F800000u) {  // finite: round the magnitude; inf / NaN unchanged
    b += 0x1000u;
    b &= ~std::uint32_t{0x1FFF};
  }
  std::memcpy(&v, &b, 4);
  return v;
}

template <typename F>
inline void fill_fragment(F& f, float v) {
  for (int i = 0; i < F::num_elements; ++i) f.x[i] = v;
}

template <typename Use, int M, int N, int K, typename T, typename L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const float* p, unsigned ldm) {
  __syncwarp();
  using F = fragment<Use, M, N, K, T, L>;
  constexpr bool row = std::is_same_v<L, row_major>;
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c) f.x[r * F::cols + c] = row ? p[r * ldm + c] : p[c * ldm + r];
}

template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm, layout_t l) {
  __syncwarp();
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) f.x[r * N + c] = l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}

template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t l) {
  __syncwarp();
  const int lane = emu::lane_id();
  for (int e = 0; e < M * N; ++e) {
    if (!emu::owns(e, lane)) continue;
    const int r = e / N, c = e % N;
    (l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[e];
  }
}

template <int M, int N, int K, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, precision::tf32, LA>& a,
                     const fragment<matrix_b, M, N, K, precision::tf32, LB>& b,
                     const fragment<accumulator, M, N, K, float>& c) {
  __syncwarp();
  // As on the hardware, a lane computes only its share of the accumulator; the other
  // elements keep c's values (element-wise code never sees the difference, and store
  // writes only the share).
  const int lane = emu::lane_id();
  for (int e = 0; e < M * N; ++e) {
    if (!emu::owns(e, lane)) {
      d.x[e] = c.x[e];
      continue;
    }
    const int i = e / N, j = e % N;
    float acc = c.x[e];
    for (int k = 0; k < K; ++k) acc = fmaf(emu::tf32_bits(a.x[i * K + k]), emu::tf32_bits(b.x[k * N + j]), acc);
    d.x[e] = acc;
  }
}

}  // namespace nvcuda::wmma
