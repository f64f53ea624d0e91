// Sign-random-projection hashing: blocked sgemm + SIMD sign packing, and the
// multi-probe sequence generator.
#include <algorithm>
#include <limits>
#include <vector>

#include "simdex/blas.h"
#include "simdex/lsh.h"
#include "simdex/threading.h"
#include "../arch.h"

namespace simdex {

namespace {

// Rows per GEMM block: the projection tile (rows x L*K floats) stays in L2 for
// typical L*K <= 1024, and the block grid does not depend on the thread count.
constexpr std::int64_t kHashBlock = 256;

void check_shape(std::int64_t num_tables, int hash_bits) {
  SIMDEX_CHECK_ARG(num_tables >= 1, "num_tables must be >= 1, got ", num_tables);
  SIMDEX_CHECK_ARG(hash_bits >= 1 && hash_bits <= kMaxHashBits, "hash_bits must be in [1, ",
                   kMaxHashBits, "], got ", hash_bits, " (codes are 64-bit integers)");
}

// One table's K signs, LSB first. The three versions compute the same predicate
// (p > 0, ordered compare: -0 and 0 give 0), so the codes do not depend on the CPU.
std::uint64_t pack_scalar(const float* p, int K) {
  std::uint64_t c = 0;
  for (int j = 0; j < K; ++j) c |= static_cast<std::uint64_t>(p[j] > 0.0f) << j;
  return c;
}

#if SIMDEX_X86
__attribute__((target("avx2"))) std::uint64_t pack_avx2(const float* p, int K) {
  std::uint64_t c = 0;
  const __m256 zero = _mm256_setzero_ps();
  int j = 0;
  for (; j + 8 <= K; j += 8) {
    const __m256 gt = _mm256_cmp_ps(_mm256_loadu_ps(p + j), zero, _CMP_GT_OQ);
    c |= static_cast<std::uint64_t>(static_cast<unsigned>(_mm256_movemask_ps(gt))) << j;
  }
  for (; j < K; ++j) c |= static_cast<std::uint64_t>(p[j] > 0.0f) << j;
  return c;
}

__attribute__((target("avx512f"))) std::uint64_t pack_avx512(const float* p, int K) {
  std::uint64_t c = 0;
  const __m512 zero = _mm512_setzero_ps();
  int j = 0;
  for (; j + 16 <= K; j += 16) {
    const __mmask16 gt = _mm512_cmp_ps_mask(_mm512_loadu_ps(p + j), zero, _CMP_GT_OQ);
    c |= static_cast<std::uint64_t>(gt) << j;
  }
  if (j < K) {  // masked tail load, no reads past the row
    const __mmask16 m = static_cast<__mmask16>((1u << (K - j)) - 1u);
    const __mmask16 gt = _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, p + j), zero, _CMP_GT_OQ);
    c |= static_cast<std::uint64_t>(gt) << j;
  }
  return c;
}
#endif  // SIMDEX_X86

using PackFn = std::uint64_t (*)(const float*, int);

PackFn pick_pack() {
#if SIMDEX_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return pack_avx512;
  if (__builtin_cpu_supports("avx2")) return pack_avx2;
#endif
  return pack_scalar;
}

const PackFn g_pack = pick_pack();

}  // namespace

void lsh_pack_signs(const float* proj, std::int64_t n, std::int64_t num_tables, int hash_bits,
                    std::uint64_t* codes) {
  check_shape(num_tables, hash_bits);
  const std::int64_t LK = num_tables * hash_bits;
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t t = 0; t < num_tables; ++t)
      codes[i * num_tables + t] = g_pack(proj + i * LK + t * hash_bits, hash_bits);
}

void lsh_hash(const float* x, std::int64_t n, std::int64_t d, const float* planes,
              std::int64_t num_tables, int hash_bits, std::uint64_t* codes, int num_threads,
              bool table_major) {
  check_shape(num_tables, hash_bits);
  SIMDEX_CHECK_ARG(d >= 1, "dimension must be >= 1, got ", d);
  SIMDEX_CHECK_ARG(n >= 0, "n must be >= 0, got ", n);
  const std::int64_t LK = num_tables * hash_bits;
  const std::int64_t nblocks = (n + kHashBlock - 1) / kHashBlock;
  int nt = num_threads > 0 ? num_threads : default_num_threads();
  if (nt > nblocks) nt = static_cast<int>(std::max<std::int64_t>(nblocks, 1));
  std::vector<std::vector<float>> proj(static_cast<std::size_t>(nt));
  parallel_for(nblocks, nt, [&](std::int64_t b, int tid) {
    const std::int64_t r0 = b * kHashBlock, rows = std::min(kHashBlock, n - r0);
    auto& buf = proj[static_cast<std::size_t>(tid)];
    buf.resize(static_cast<std::size_t>(kHashBlock * LK));
    blas::gemm_abt(rows, LK, d, 1.0f, x + r0 * d, planes, 0.0f, buf.data());
    if (!table_major) {
      lsh_pack_signs(buf.data(), rows, num_tables, hash_bits, codes + r0 * num_tables);
      return;
    }
    for (std::int64_t t = 0; t < num_tables; ++t)
      for (std::int64_t i = 0; i < rows; ++i)
        codes[t * n + r0 + i] = g_pack(buf.data() + i * LK + t * hash_bits, hash_bits);
  });
}

void ProbeGenerator::reset(const float* margins, int hash_bits) {
  SIMDEX_CHECK_ARG(hash_bits >= 1 && hash_bits <= kMaxHashBits, "hash_bits must be in [1, 64], got ",
                   hash_bits);
  K_ = hash_bits;
  // Bits sorted by margin, ties by bit index (insertion sort: K <= 64, no allocation).
  for (int j = 0; j < K_; ++j) {
    int p = j;
    while (p > 0 && margins[order_[p - 1]] > margins[j]) {
      order_[p] = order_[p - 1];
      --p;
    }
    order_[p] = j;
  }
  for (int p = 0; p < K_; ++p) z_[p] = margins[order_[p]];
  // Flip sets as bit masks over sorted positions. From a set whose largest position
  // is m, "shift" replaces m by m+1 and "expand" adds m+1; starting from {0}, this
  // generates every non-empty set exactly once, each after its parent, whose score
  // is never larger -- so popping a min-heap yields the sets in score order. Each
  // pop pushes at most two nodes.
  heap_.clear();
  heap_.push_back({z_[0], 0, 1});
  first_ = true;
}

float ProbeGenerator::peek() const {
  if (first_) return 0.0f;
  return heap_.empty() ? std::numeric_limits<float>::infinity() : heap_.front().score;
}

bool ProbeGenerator::next(std::uint64_t* mask) {
  if (first_) {
    first_ = false;
    *mask = 0;
    return true;
  }
  if (heap_.empty()) return false;
  std::pop_heap(heap_.begin(), heap_.end(), worse);
  const Node top = heap_.back();
  heap_.pop_back();
  std::uint64_t m = 0;
  for (std::uint64_t s = top.set; s; s &= s - 1) m |= std::uint64_t{1} << order_[__builtin_ctzll(s)];
  *mask = m;
  const int next = top.max_pos + 1;
  if (next < K_) {
    const std::uint64_t nb = std::uint64_t{1} << next;
    heap_.push_back({top.score - z_[top.max_pos] + z_[next], next,
                     (top.set & ~(std::uint64_t{1} << top.max_pos)) | nb});
    std::push_heap(heap_.begin(), heap_.end(), worse);
    heap_.push_back({top.score + z_[next], next, top.set | nb});
    std::push_heap(heap_.begin(), heap_.end(), worse);
  }
  return true;
}

std::int64_t lsh_probe_masks(const float* margins, int hash_bits, std::int64_t num_probes,
                             std::uint64_t* masks) {
  SIMDEX_CHECK_ARG(hash_bits >= 1 && hash_bits <= kMaxHashBits, "hash_bits must be in [1, 64], got ",
                   hash_bits);
  SIMDEX_CHECK_ARG(num_probes >= 1, "num_probes must be >= 1, got ", num_probes);
  thread_local ProbeGenerator gen;  // reused: no allocation per call
  gen.reset(margins, hash_bits);
  std::int64_t written = 0;
  while (written < num_probes && gen.next(masks + written)) ++written;
  return written;
}

}  // namespace simdex
