#include "simdex/topk.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "arch.h"

namespace simdex {

namespace {

// a is worse than b: lower score, or equal score and larger id.
inline bool worse(float sa, idx_t ia, float sb, idx_t ib) {
  return sa < sb || (sa == sb && ia > ib);
}

// Restore the heap (root = worst) after replacing the root.
inline void sift_down(std::int64_t k, float* vals, idx_t* ids) {
  float v = vals[0];
  idx_t id = ids[0];
  std::int64_t i = 0;
  for (;;) {
    std::int64_t c = 2 * i + 1;
    if (c >= k) break;
    if (c + 1 < k && worse(vals[c + 1], ids[c + 1], vals[c], ids[c])) ++c;
    if (!worse(vals[c], ids[c], v, id)) break;
    vals[i] = vals[c];
    ids[i] = ids[c];
    i = c;
  }
  vals[i] = v;
  ids[i] = id;
}

inline void offer(float s, idx_t id, std::int64_t k, float* vals, idx_t* ids) {
  if (worse(vals[0], ids[0], s, id)) {
    vals[0] = s;
    ids[0] = id;
    sift_down(k, vals, ids);
  }
}

// The vector loops only find chunks holding some score >= the current k-th best;
// those few chunks are then offered element by element.
void push_block_scalar(const float* scores, std::int64_t n, const idx_t* cand, idx_t off,
                       std::int64_t k, float* vals, idx_t* ids) {
  for (std::int64_t j = 0; j < n; ++j) {
    if (scores[j] >= vals[0]) offer(scores[j], cand ? cand[j] : off + j, k, vals, ids);
  }
}

#if SIMDEX_X86
__attribute__((target("avx2"))) void push_block_avx2(const float* scores, std::int64_t n,
                                                     const idx_t* cand, idx_t off,
                                                     std::int64_t k, float* vals, idx_t* ids) {
  std::int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m256 thr = _mm256_set1_ps(vals[0]);
    __m256 a = _mm256_loadu_ps(scores + j);
    __m256 b = _mm256_loadu_ps(scores + j + 8);
    int m = _mm256_movemask_ps(_mm256_cmp_ps(a, thr, _CMP_GE_OQ)) |
            (_mm256_movemask_ps(_mm256_cmp_ps(b, thr, _CMP_GE_OQ)) << 8);
    while (m != 0) {
      int t = __builtin_ctz(static_cast<unsigned>(m));
      m &= m - 1;
      std::int64_t jj = j + t;
      if (scores[jj] >= vals[0]) offer(scores[jj], cand ? cand[jj] : off + jj, k, vals, ids);
    }
  }
  push_block_scalar(scores + j, n - j, cand ? cand + j : nullptr, off + j, k, vals, ids);
}

__attribute__((target("avx512f"))) void push_block_avx512(const float* scores, std::int64_t n,
                                                           const idx_t* cand, idx_t off,
                                                           std::int64_t k, float* vals,
                                                           idx_t* ids) {
  std::int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    __m512 thr = _mm512_set1_ps(vals[0]);
    __mmask16 ma = _mm512_cmp_ps_mask(_mm512_loadu_ps(scores + j), thr, _CMP_GE_OQ);
    __mmask16 mb = _mm512_cmp_ps_mask(_mm512_loadu_ps(scores + j + 16), thr, _CMP_GE_OQ);
    unsigned m = static_cast<unsigned>(ma) | (static_cast<unsigned>(mb) << 16);
    while (m != 0) {
      int t = __builtin_ctz(m);
      m &= m - 1;
      std::int64_t jj = j + t;
      if (scores[jj] >= vals[0]) offer(scores[jj], cand ? cand[jj] : off + jj, k, vals, ids);
    }
  }
  push_block_scalar(scores + j, n - j, cand ? cand + j : nullptr, off + j, k, vals, ids);
}
#endif  // SIMDEX_X86

using PushFn = void (*)(const float*, std::int64_t, const idx_t*, idx_t, std::int64_t, float*,
                        idx_t*);

struct Dispatch {
  PushFn fn;
  const char* name;
  Dispatch() {
    fn = push_block_scalar;
    name = "scalar";
#if SIMDEX_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
      fn = push_block_avx512;
      name = "avx512";
    } else if (__builtin_cpu_supports("avx2")) {
      fn = push_block_avx2;
      name = "avx2";
    }
#endif
  }
};

const Dispatch& dispatch() {
  static const Dispatch d;
  return d;
}

}  // namespace

void heap_init(std::int64_t k, float* vals, idx_t* ids) {
  std::fill(vals, vals + k, -std::numeric_limits<float>::infinity());
  std::fill(ids, ids + k, kEmptyId);
}

void heap_push(float score, idx_t id, std::int64_t k, float* vals, idx_t* ids) {
  offer(score, id, k, vals, ids);
}

void heap_push_block(const float* scores, std::int64_t n, const idx_t* ids, idx_t id_offset,
                     std::int64_t k, float* vals, idx_t* heap_ids) {
  dispatch().fn(scores, n, ids, id_offset, k, vals, heap_ids);
}

void heap_sort_best_first(std::int64_t k, float* vals, idx_t* ids) {
  // k is small (tens to hundreds): sort an index permutation.
  std::vector<std::int64_t> order(static_cast<std::size_t>(k));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
    return worse(vals[b], ids[b], vals[a], ids[a]);
  });
  std::vector<float> v(static_cast<std::size_t>(k));
  std::vector<idx_t> i(static_cast<std::size_t>(k));
  for (std::int64_t r = 0; r < k; ++r) {
    v[r] = vals[order[r]];
    i[r] = ids[order[r]];
  }
  std::copy(v.begin(), v.end(), vals);
  std::copy(i.begin(), i.end(), ids);
}

const char* topk_simd_level() { return dispatch().name; }

}  // namespace simdex
