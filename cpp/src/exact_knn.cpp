#include "simdex/exact_knn.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "simdex/blas.h"
#include "simdex/threading.h"
#include "simdex/topk.h"
#include "arch.h"
#include "fp16.h"
#include "simd.h"

namespace simdex {

namespace {

using simd::dot;

SIMDEX_CLONES void scale_cols(float* s, const float* a, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) s[j] *= a[j];
}

// Ranking by 2<q,x> - |x|^2 is ranking by -|q - x|^2 (|q|^2 is constant per query).
SIMDEX_CLONES void l2_cols(float* s, const float* sq, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) s[j] = 2.0f * s[j] - sq[j];
}

inline void to_scores(float* s, const float* aux, std::int64_t n, Metric m) {
  switch (m) {
    case Metric::kCosine: scale_cols(s, aux, n); break;
    case Metric::kL2:
    case Metric::kSquaredL2: l2_cols(s, aux, n); break;
    case Metric::kInnerProduct: break;
  }
}

inline float to_distance(float score, float qnorm2, Metric m) {
  switch (m) {
    case Metric::kInnerProduct: return -score;
    case Metric::kCosine: return std::min(2.0f, std::max(0.0f, 1.0f - score));
    case Metric::kSquaredL2: return std::max(0.0f, qnorm2 - score);
    case Metric::kL2: return std::sqrt(std::max(0.0f, qnorm2 - score));
  }
  return score;
}

// --- The tie rule ----------------------------------------------------------------------
// Results are ordered by (reported distance, id) on every path. Paths differ in how
// they find candidates (BLAS GEMM/GEMV tiles, the float16 pre-filter, direct dot
// products); BLAS rounds differently with the tile shape, so two rows whose scores tie
// could swap depending on the batch. Every path therefore ends in final_stage: the
// candidates are re-scored by one canonical function (exact_score: simd::dot plus the
// metric's adjustment), turned into distances, and sorted by (distance, id). Each path
// proves its candidate list holds every row that can be among the k results (error
// bounds below) or falls back to a canonical scan of all rows.
constexpr float kU = 5.9604645e-08f;  // 2^-24, float32 unit roundoff

// Score gap that guarantees distinct reported distances (1 - s, qnorm2 - s and its
// sqrt can merge scores closer than a few ulps).
inline float collapse_slack(float score, float qnorm2, Metric m) {
  switch (m) {
    case Metric::kInnerProduct: return 0.0f;  // -s is exact
    case Metric::kCosine: return 32.0f * kU;
    case Metric::kL2:
    case Metric::kSquaredL2: return 32.0f * kU * (std::fabs(qnorm2) + std::fabs(score));
  }
  return 0.0f;
}

struct Cand {
  float dist;
  idx_t id;
};

// cands: canonical (score, id) of candidate rows, in any order; they must include every
// row whose canonical score is >= (k-th best canonical score) - collapse_slack.
void final_stage(std::vector<Cand>& cands, std::int64_t k, float qnorm2, Metric m, float* out_d,
                 idx_t* out_i) {
  for (Cand& c : cands) c.dist = to_distance(c.dist, qnorm2, m);
  const auto less = [](const Cand& a, const Cand& b) {
    return a.dist < b.dist || (a.dist == b.dist && a.id < b.id);
  };
  const std::size_t kk = std::min<std::size_t>(static_cast<std::size_t>(k), cands.size());
  std::partial_sort(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(kk), cands.end(), less);
  for (std::int64_t r = 0; r < k; ++r) {
    if (static_cast<std::size_t>(r) < kk) {
      out_d[r] = cands[static_cast<std::size_t>(r)].dist;
      out_i[r] = cands[static_cast<std::size_t>(r)].id;
    } else {
      out_d[r] = std::numeric_limits<float>::infinity();
      out_i[r] = -1;
    }
  }
}

// heap_push_block over the columns of s whose row_mask byte is set (all when mask is
// null). cs / cid: scratch of n entries.
void push_masked(const float* s, std::int64_t n, const idx_t* ids, std::int64_t offset,
                 const std::uint8_t* mask, std::int64_t k, float* hv, idx_t* hi,
                 std::vector<float>& cs, std::vector<idx_t>& cid) {
  if (mask == nullptr) {
    heap_push_block(s, n, ids, offset, k, hv, hi);
    return;
  }
  if (cs.size() < static_cast<std::size_t>(n)) {
    cs.resize(static_cast<std::size_t>(n));
    cid.resize(static_cast<std::size_t>(n));
  }
  std::int64_t w = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    if (!mask[offset + j]) continue;
    cs[w] = s[j];
    cid[w++] = ids ? ids[j] : offset + j;
  }
  if (w) heap_push_block(cs.data(), w, cid.data(), 0, k, hv, hi);
}

// Exact score of base row r for query qp (the canonical value every path ranks by).
inline float exact_score(const float* qp, const float* x, std::int64_t r, std::int64_t d,
                         const float* x_aux, Metric m) {
  float s = dot(qp, x + r * d, d);
  to_scores(&s, x_aux ? x_aux + r : nullptr, 1, m);  // the same adjustment as every other path
  return s;
}

// Canonical scan of every row for one query (tiny problems, and the fallback when a
// BLAS path cannot prove its candidates complete).
// mask: rows whose byte is 0 are skipped (null: every row).
void scan_query(const float* qp, const float* x, std::int64_t nb, std::int64_t d, std::int64_t k,
                Metric m, const float* x_aux, const idx_t* x_ids, float qnorm2, float* out_d,
                idx_t* out_i, const std::uint8_t* mask = nullptr) {
  thread_local std::vector<float> sc;
  thread_local std::vector<idx_t> sid;
  thread_local std::vector<Cand> cands;
  sc.resize(static_cast<std::size_t>(nb));
  sid.resize(static_cast<std::size_t>(nb));
  std::int64_t n = 0;
  for (std::int64_t r = 0; r < nb; ++r) {
    if (mask && !mask[r]) continue;
    sc[n] = exact_score(qp, x, r, d, x_aux, m);
    sid[n++] = x_ids ? x_ids[r] : r;
  }
  std::vector<float> hv(static_cast<std::size_t>(k));
  std::vector<idx_t> hi(static_cast<std::size_t>(k));
  heap_init(k, hv.data(), hi.data());
  heap_push_block(sc.data(), n, sid.data(), 0, k, hv.data(), hi.data());
  const float tau = hi[0] == kEmptyId ? -std::numeric_limits<float>::infinity()
                                      : hv[0] - collapse_slack(hv[0], qnorm2, m);
  cands.clear();
  for (std::int64_t r = 0; r < n; ++r)
    if (sc[r] >= tau) cands.push_back({sc[r], sid[r]});
  final_stage(cands, k, qnorm2, m, out_d, out_i);
}

// Largest |x_r|^2 over the base rows (for the GEMM error bound).
float max_sq_norm(const float* x, std::int64_t nb, std::int64_t d, const float* x_aux, Metric m) {
  float mx = 0.0f;
  if ((m == Metric::kL2 || m == Metric::kSquaredL2) && x_aux != nullptr) {
    for (std::int64_t r = 0; r < nb; ++r) mx = std::max(mx, x_aux[r]);
  } else {
    for (std::int64_t r = 0; r < nb; ++r) mx = std::max(mx, dot(x + r * d, x + r * d, d));
  }
  return mx;
}

// Top kk base rows of each of nq queries by BLAS score (ties by row number): a GEMM per
// (query block x base block) tile (GEMV for one-row blocks), a top-kk filter per tile,
// partial heaps per base chunk merged at the end. vals / rows: nq * kk on return, one
// heap per query (empty slots: kEmptyId).
void blas_select(const float* qp, std::int64_t nq, const float* x, std::int64_t nb, std::int64_t d,
                 std::int64_t kk, Metric metric, const float* x_aux, const KnnParams& params, int nt,
                 std::vector<float>& vals, std::vector<idx_t>& rows) {
  const std::int64_t qb = std::min(params.query_block, nq);
  const std::int64_t bb = std::min(params.base_block, std::max<std::int64_t>(nb, 1));
  const std::int64_t nqb = (nq + qb - 1) / qb;
  const std::int64_t nbb = (nb + bb - 1) / bb;
  // With fewer query blocks than threads, split the base too and merge partial heaps.
  std::int64_t nchunks = 1;
  if (nqb < 2 * nt && nbb > 1) nchunks = std::min<std::int64_t>(nbb, (2 * nt + nqb - 1) / nqb);
  const std::int64_t blocks_per_chunk = (nbb + nchunks - 1) / std::max<std::int64_t>(nchunks, 1);
  const std::int64_t chunk = std::max<std::int64_t>(1, blocks_per_chunk) * bb;

  std::vector<float> heap_vals(static_cast<std::size_t>(nqb * nchunks * qb * kk));
  std::vector<idx_t> heap_ids(heap_vals.size());
  std::vector<std::vector<float>> tiles(static_cast<std::size_t>(nt));
  std::vector<std::vector<float>> mask_vals(static_cast<std::size_t>(nt));
  std::vector<std::vector<idx_t>> mask_ids(static_cast<std::size_t>(nt));

  parallel_for(nqb * nchunks, nt, [&](std::int64_t item, int tid) {
    const std::int64_t qbi = item / nchunks, c = item % nchunks;
    const std::int64_t q0 = qbi * qb, nrows = std::min(qb, nq - q0);
    const std::int64_t b_begin = c * chunk, b_end = std::min(nb, b_begin + chunk);
    float* hvals = heap_vals.data() + (qbi * nchunks + c) * qb * kk;
    idx_t* hids = heap_ids.data() + (qbi * nchunks + c) * qb * kk;
    for (std::int64_t r = 0; r < nrows; ++r) heap_init(kk, hvals + r * kk, hids + r * kk);
    std::vector<float>& tile = tiles[tid];
    if (tile.size() < static_cast<std::size_t>(nrows * bb)) tile.resize(nrows * bb);
    for (std::int64_t b0 = b_begin; b0 < b_end; b0 += bb) {
      const std::int64_t cols = std::min(bb, b_end - b0);
      if (nrows == 1)
        blas::gemv(cols, d, x + b0 * d, qp + q0 * d, tile.data());
      else
        blas::gemm_abt(nrows, cols, d, 1.0f, qp + q0 * d, x + b0 * d, 0.0f, tile.data());
      for (std::int64_t r = 0; r < nrows; ++r) {
        float* s = tile.data() + r * cols;
        to_scores(s, x_aux ? x_aux + b0 : nullptr, cols, metric);
        push_masked(s, cols, nullptr, b0, params.row_mask, kk, hvals + r * kk, hids + r * kk,
                    mask_vals[tid], mask_ids[tid]);
      }
    }
  });

  vals.resize(static_cast<std::size_t>(nq * kk));
  rows.resize(vals.size());
  parallel_for(nq, nt, [&](std::int64_t i, int /*tid*/) {
    const std::int64_t qbi = i / qb, r = i % qb;
    float* v0 = heap_vals.data() + (qbi * nchunks * qb + r) * kk;
    idx_t* i0 = heap_ids.data() + (qbi * nchunks * qb + r) * kk;
    for (std::int64_t c = 1; c < nchunks; ++c) {
      const float* vc = v0 + c * qb * kk;
      const idx_t* ic = i0 + c * qb * kk;
      for (std::int64_t s = 0; s < kk; ++s)
        if (ic[s] != kEmptyId) heap_push(vc[s], ic[s], kk, v0, i0);
    }
    std::copy(v0, v0 + kk, vals.data() + i * kk);
    std::copy(i0, i0 + kk, rows.data() + i * kk);
  });
}

}  // namespace

void normalize_rows(float* x, std::int64_t n, std::int64_t d) {
  for (std::int64_t i = 0; i < n; ++i) {
    float* row = x + i * d;
    float nn = dot(row, row, d);
    if (nn > 0) {
      float inv = 1.0f / std::sqrt(nn);
      for (std::int64_t j = 0; j < d; ++j) row[j] *= inv;
    }
  }
}

void compute_row_aux(const float* x, std::int64_t n, std::int64_t d, Metric metric, float* aux) {
  if (metric == Metric::kInnerProduct) return;
  for (std::int64_t i = 0; i < n; ++i) {
    float nn = dot(x + i * d, x + i * d, d);
    if (metric == Metric::kCosine)
      aux[i] = nn > 0 ? 1.0f / std::sqrt(nn) : 0.0f;
    else
      aux[i] = nn;
  }
}

void knn_exact(const float* q, std::int64_t nq, const float* x, std::int64_t nb, std::int64_t d,
               std::int64_t k, Metric metric, const float* x_aux, const idx_t* x_ids,
               float* distances, idx_t* labels, const KnnParams& params) {
  SIMDEX_CHECK_ARG(d >= 1, "dimension must be >= 1, got ", d);
  SIMDEX_CHECK_ARG(k >= 1, "k must be >= 1, got ", k);
  SIMDEX_CHECK_ARG(nq >= 0 && nb >= 0, "sizes must be >= 0, got nq=", nq, " nb=", nb);
  SIMDEX_CHECK_ARG(params.query_block >= 1 && params.base_block >= 1,
                   "block sizes must be >= 1, got query_block=", params.query_block,
                   " base_block=", params.base_block);
  if (nq == 0) return;

  // Queries: unit-normalised copy for cosine; squared norms for L2 distances.
  std::vector<float> qbuf;
  const float* qp = q;
  if (metric == Metric::kCosine) {
    qbuf.assign(q, q + nq * d);
    normalize_rows(qbuf.data(), nq, d);
    qp = qbuf.data();
  }
  std::vector<float> qnorm2(static_cast<std::size_t>(nq), 0.0f);
  if (metric == Metric::kL2 || metric == Metric::kSquaredL2)
    for (std::int64_t i = 0; i < nq; ++i) qnorm2[i] = dot(q + i * d, q + i * d, d);

  std::vector<float> auxbuf;
  if (x_aux == nullptr && metric != Metric::kInnerProduct) {
    auxbuf.resize(static_cast<std::size_t>(nb));
    compute_row_aux(x, nb, d, metric, auxbuf.data());
    x_aux = auxbuf.data();
  }

  // Tiny problems: the canonical scan on the calling thread.
  if (static_cast<double>(nq) * static_cast<double>(nb) * static_cast<double>(d) <=
      static_cast<double>(params.tiny_work)) {
    for (std::int64_t i = 0; i < nq; ++i)
      scan_query(qp + i * d, x, nb, d, k, metric, x_aux, x_ids, qnorm2[i], distances + i * k,
                 labels + i * k, params.row_mask);
    return;
  }

  const int nt = resolve_num_threads(params.num_threads);
  // BLAS scores differ from the canonical ones by at most err (|q| |x| gamma_d per dot
  // product, for either summation order, plus the metric's rounding). The heaps keep
  // kk > k rows by BLAS score; when rows were left out (nb > kk) and the kk-th kept
  // score is not below the k-th by more than 2 err + the collapse slack, a left-out
  // row might still belong to the canonical top k: such queries (many near-ties at the
  // k-th place, e.g. duplicated data) run again with kk four times larger, until the
  // proof holds or every row is kept (or, past a memory budget, by a canonical scan).
  const double gam = double(d) * kU / (1.0 - double(d) * kU);
  const float tiny = static_cast<float>((2.0 * double(d) + 4.0) * std::ldexp(1.0, -149) * 4.0);
  const float max_norm =
      metric == Metric::kCosine ? 1.0f : std::sqrt(max_sq_norm(x, nb, d, x_aux, metric));
  const float max_sq = max_norm * max_norm;
  constexpr double kHeapBudget = 256.0 * (1 << 20);  // bytes of heaps per round

  std::vector<std::int64_t> todo(static_cast<std::size_t>(nq));
  for (std::int64_t i = 0; i < nq; ++i) todo[static_cast<std::size_t>(i)] = i;
  std::int64_t kk = std::min(nb, k + std::max<std::int64_t>(4, std::min<std::int64_t>(k, 32)));
  kk = std::max<std::int64_t>(kk, 1);
  std::vector<float> qsel, vals;
  std::vector<idx_t> rows;
  std::vector<char> failed;
  while (!todo.empty()) {
    const std::int64_t ns = static_cast<std::int64_t>(todo.size());
    if (double(ns) * double(kk) * 12.0 * 2.0 > kHeapBudget) {
      parallel_for(ns, nt, [&](std::int64_t j, int /*tid*/) {
        const std::int64_t i = todo[static_cast<std::size_t>(j)];
        scan_query(qp + i * d, x, nb, d, k, metric, x_aux, x_ids, qnorm2[i], distances + i * k,
                   labels + i * k, params.row_mask);
      });
      break;
    }
    const float* qs = qp;
    if (ns < nq) {
      qsel.resize(static_cast<std::size_t>(ns * d));
      for (std::int64_t j = 0; j < ns; ++j)
        std::copy(qp + todo[j] * d, qp + (todo[j] + 1) * d, qsel.data() + j * d);
      qs = qsel.data();
    }
    blas_select(qs, ns, x, nb, d, kk, metric, x_aux, params, nt, vals, rows);
    failed.assign(static_cast<std::size_t>(ns), 0);
    parallel_for(ns, nt, [&](std::int64_t j, int /*tid*/) {
      const std::int64_t i = todo[static_cast<std::size_t>(j)];
      float* v0 = vals.data() + j * kk;
      idx_t* i0 = rows.data() + j * kk;
      heap_sort_best_first(kk, v0, i0);
      const float* qi = qp + i * d;
      if (nb > kk && i0[kk - 1] != kEmptyId) {  // rows were left out (a full heap)
        const float qn = std::sqrt(dot(qi, qi, d));
        const float na = metric == Metric::kCosine ? 1.0f + 4.0f * kU : max_norm;
        float err = static_cast<float>(2.0 * gam * qn * na) + 4.0f * kU * qn * na + tiny;
        if (metric == Metric::kL2 || metric == Metric::kSquaredL2) err = 2.0f * err + 4.0f * kU * max_sq;
        const float gk = v0[k - 1];
        if (!(v0[kk - 1] < gk - 2.0f * err - collapse_slack(gk, qnorm2[i], metric) - 2.0f * err * kU)) {
          failed[static_cast<std::size_t>(j)] = 1;
          return;
        }
      }
      thread_local std::vector<Cand> cands;
      cands.clear();
      for (std::int64_t s = 0; s < kk && i0[s] != kEmptyId; ++s) {
        const idx_t row = i0[s];
        cands.push_back({exact_score(qi, x, row, d, x_aux, metric), x_ids ? x_ids[row] : row});
      }
      final_stage(cands, k, qnorm2[i], metric, distances + i * k, labels + i * k);
    });
    std::size_t w = 0;
    for (std::size_t j = 0; j < todo.size(); ++j)
      if (failed[j]) todo[w++] = todo[j];
    todo.resize(w);
    kk = std::min(nb, kk * 4);
  }
}

namespace {


// From raw float16 direction dots a (in place) to upper bounds of the score, and the
// lower bounds into lb. NaN / inf bounds (overflow, rows marked +inf) make the row a
// candidate: ub = +inf, lb = -FLT_MAX. One branch-free loop per metric, so the
// compiler vectorises it.
constexpr float kLow = -std::numeric_limits<float>::max();
constexpr float kInf = std::numeric_limits<float>::infinity();

inline void store_bounds(float s, float e, float* hi, float* lo) {
  const float h = s + e, l = s - e;
  *hi = h == h ? h : kInf;
  *lo = l == l && l > kLow ? l : kLow;
}

SIMDEX_CLONES void bounds_cosine(float* a, float* lb, std::int64_t n, const float* norms,
                                 float e) {
  for (std::int64_t r = 0; r < n; ++r) store_bounds(a[r], norms[r] == kInf ? kInf : e, a + r, lb + r);
}

SIMDEX_CLONES void bounds_ip(float* a, float* lb, std::int64_t n, const float* norms, float qerr,
                             float tiny) {
  for (std::int64_t r = 0; r < n; ++r) store_bounds(norms[r] * a[r], qerr * norms[r] + tiny, a + r, lb + r);
}

// L2 scores are 2 <q, x> - |x|^2; sq holds the same |x|^2 the exact path uses.
SIMDEX_CLONES void bounds_l2(float* a, float* lb, std::int64_t n, const float* norms,
                             const float* sq, float qerr, float tiny) {
  for (std::int64_t r = 0; r < n; ++r)
    store_bounds(2.0f * norms[r] * a[r] - sq[r], 2.0f * qerr * norms[r] + 4.0f * kU * sq[r] + tiny,
                 a + r, lb + r);
}

}  // namespace

std::int64_t knn_exact_prefiltered(const float* q, std::int64_t nq, const float* x, std::int64_t nb,
                           std::int64_t d, std::int64_t k, Metric metric, const float* x_aux,
                           const idx_t* x_ids, const HalfShadow& shadow, float* distances,
                           idx_t* labels, const KnnParams& params) {
  if (shadow.panels == nullptr || shadow.norms == nullptr || !fp16::supported() || nq < 1 ||
      nq > params.prefilter_max_queries || nb < params.prefilter_min_rows || k < 1 || d < 1 ||
      (x_aux == nullptr && metric != Metric::kInnerProduct)) {
    knn_exact(q, nq, x, nb, d, k, metric, x_aux, x_ids, distances, labels, params);
    return -1;
  }
  std::int64_t rescored = 0;
  const int nt = resolve_num_threads(params.num_threads);
  const std::int64_t npanels = (nb + fp16::kPanel - 1) / fp16::kPanel;
  constexpr std::int64_t kChunkPanels = 256;  // 4096 rows: bounds buffers stay in L1/L2
  const std::int64_t nchunks = (npanels + kChunkPanels - 1) / kChunkPanels;
  const double bound = fp16::half_dot_error_bound(d);
  // Products that underflow lose up to 2^-149 each, in either float32 dot product.
  const float tiny = static_cast<float>((2.0 * double(d) + 4.0) * std::ldexp(1.0, -149) * 4.0);
  const float* sq = metric == Metric::kL2 || metric == Metric::kSquaredL2 ? x_aux : nullptr;

  // Reused across calls: a fresh 4 * nb-byte buffer per query would be mmap'ed and
  // page-faulted in on every call, a large share of a single-query search.
  thread_local std::vector<float> ub_buf;
  if (ub_buf.size() < static_cast<std::size_t>(npanels * fp16::kPanel))
    ub_buf.resize(static_cast<std::size_t>(npanels * fp16::kPanel));
  float* const ub = ub_buf.data();
  std::vector<float> chunk_vals(static_cast<std::size_t>(nchunks * k));
  std::vector<idx_t> chunk_ids(chunk_vals.size());
  std::vector<std::vector<float>> lb_bufs(static_cast<std::size_t>(nt));
  std::vector<float> qv(static_cast<std::size_t>(d));
  std::vector<float> hv(static_cast<std::size_t>(k));
  std::vector<idx_t> hi(static_cast<std::size_t>(k));
  std::vector<std::int64_t> cand;

  for (std::int64_t i = 0; i < nq; ++i) {
    const float* qi = q + i * d;
    qv.assign(qi, qi + d);
    if (metric == Metric::kCosine) normalize_rows(qv.data(), 1, d);
    const float qnorm2 = dot(qi, qi, d);
    const float qerr = static_cast<float>(bound * std::sqrt(double(dot(qv.data(), qv.data(), d))));

    // Pass 1: float16 scores and bounds, a top-k of lower bounds per chunk.
    parallel_for(nchunks, nt, [&](std::int64_t c, int tid) {
      const std::int64_t p0 = c * kChunkPanels, p1 = std::min(npanels, p0 + kChunkPanels);
      const std::int64_t r0 = p0 * fp16::kPanel, rows = std::min(nb, p1 * fp16::kPanel) - r0;
      float* a = ub + r0;
      fp16::panel_dots(shadow.panels, p0, p1, d, qv.data(), a);
      std::vector<float>& lb = lb_bufs[tid];
      if (lb.size() < static_cast<std::size_t>(kChunkPanels * fp16::kPanel))
        lb.resize(kChunkPanels * fp16::kPanel);
      const float* nr = shadow.norms + r0;
      if (metric == Metric::kCosine)
        bounds_cosine(a, lb.data(), rows, nr, qerr + tiny);
      else if (metric == Metric::kInnerProduct)
        bounds_ip(a, lb.data(), rows, nr, qerr, tiny);
      else
        bounds_l2(a, lb.data(), rows, nr, sq + r0, qerr, tiny);
      if (params.row_mask) {  // filtered-out rows: never a candidate, no say in tau
        const std::uint8_t* mk = params.row_mask + r0;
        for (std::int64_t r = 0; r < rows; ++r)
          if (!mk[r]) {
            a[r] = -kInf;
            lb[r] = kLow;
          }
      }
      heap_init(k, chunk_vals.data() + c * k, chunk_ids.data() + c * k);
      heap_push_block(lb.data(), rows, nullptr, r0, k, chunk_vals.data() + c * k,
                      chunk_ids.data() + c * k);
    });
    // tau: the k-th largest lower bound (-inf when fewer than k rows).
    heap_init(k, hv.data(), hi.data());
    for (std::int64_t j = 0; j < nchunks * k; ++j)
      if (chunk_ids[j] != kEmptyId) heap_push(chunk_vals[j], chunk_ids[j], k, hv.data(), hi.data());
    const float tau = hv[0];

    // Pass 2: canonical float32 scores of the rows that can reach tau (less the
    // collapse slack, so rows whose distances could tie with the k-th are all there).
    cand.clear();
    const float slack = std::isfinite(tau) ? collapse_slack(tau, qnorm2, metric) : 0.0f;
    fp16::rows_at_least(ub, nb, tau - slack, cand);
    rescored += static_cast<std::int64_t>(cand.size());
    thread_local std::vector<Cand> cands;
    cands.clear();
    for (std::int64_t r : cand)
      if (!params.row_mask || params.row_mask[r])
        cands.push_back({exact_score(qv.data(), x, r, d, x_aux, metric), x_ids ? x_ids[r] : r});
    final_stage(cands, k, qnorm2, metric, distances + i * k, labels + i * k);
  }
  return rescored;
}

void knn_exact_rows(const float* q, std::int64_t nq, const float* x, std::int64_t d,
                    const std::int64_t* rows, std::int64_t nrows, std::int64_t k, Metric metric,
                    const float* x_aux, const idx_t* x_ids, float* distances, idx_t* labels,
                    const KnnParams& params) {
  SIMDEX_CHECK_ARG(d >= 1 && k >= 1 && nq >= 0 && nrows >= 0, "bad sizes: d=", d, " k=", k,
                   " nq=", nq, " nrows=", nrows);
  SIMDEX_CHECK_ARG(metric == Metric::kInnerProduct || x_aux != nullptr, "x_aux is required");
  if (nq == 0) return;
  std::vector<float> qbuf(q, q + nq * d);
  if (metric == Metric::kCosine) normalize_rows(qbuf.data(), nq, d);
  std::vector<float> qnorm2(static_cast<std::size_t>(nq), 0.0f);
  if (metric == Metric::kL2 || metric == Metric::kSquaredL2)
    for (std::int64_t i = 0; i < nq; ++i) qnorm2[i] = dot(q + i * d, q + i * d, d);
  const int nt = resolve_num_threads(params.num_threads);
  // Scores of the selected rows (few queries, few rows: nq * nrows floats), then per
  // query the canonical final stage (every row within the collapse slack of the k-th).
  std::vector<float> sc(static_cast<std::size_t>(nq * nrows));
  std::vector<idx_t> sid(static_cast<std::size_t>(nrows));
  constexpr std::int64_t kMinChunk = 4096;  // rows per task
  const std::int64_t nchunks =
      std::max<std::int64_t>(1, std::min<std::int64_t>(4 * nt, (nrows + kMinChunk - 1) / kMinChunk));
  const std::int64_t per = (nrows + nchunks - 1) / nchunks;
  parallel_for(nchunks, nt, [&](std::int64_t c, int) {
    const std::int64_t j0 = c * per, j1 = std::min(nrows, j0 + per);
    for (std::int64_t j = j0; j < j1; ++j) {
      if (j + 8 < j1) {  // selected rows are scattered: fetch whole rows ahead
        const char* pf = reinterpret_cast<const char*>(x + rows[j + 8] * d);
        for (std::int64_t off = 0; off < d * 4; off += 64) SIMDEX_PREFETCH(pf + off);
      }
      const std::int64_t r = rows[j];
      sid[j] = x_ids[r];
      for (std::int64_t i = 0; i < nq; ++i) sc[i * nrows + j] = exact_score(qbuf.data() + i * d, x, r, d, x_aux, metric);
    }
  });
  parallel_for(nq, nt, [&](std::int64_t i, int) {
    const float* si = sc.data() + i * nrows;
    std::vector<float> hv(static_cast<std::size_t>(k));
    std::vector<idx_t> hi(static_cast<std::size_t>(k));
    heap_init(k, hv.data(), hi.data());
    heap_push_block(si, nrows, sid.data(), 0, k, hv.data(), hi.data());
    const float tau = hi[0] == kEmptyId ? -std::numeric_limits<float>::infinity()
                                        : hv[0] - collapse_slack(hv[0], qnorm2[i], metric);
    std::vector<Cand> cands;
    for (std::int64_t j = 0; j < nrows; ++j)
      if (si[j] >= tau) cands.push_back({si[j], sid[j]});
    final_stage(cands, k, qnorm2[i], metric, distances + i * k, labels + i * k);
  });
}

void range_exact(const float* q, std::int64_t nq, const float* x, std::int64_t nb, std::int64_t d,
                 float radius, Metric metric, const float* x_aux, const idx_t* x_ids,
                 RangeResult& result, const KnnParams& params) {
  SIMDEX_CHECK_ARG(d >= 1, "dimension must be >= 1, got ", d);
  SIMDEX_CHECK_ARG(nq >= 0 && nb >= 0, "sizes must be >= 0, got nq=", nq, " nb=", nb);
  SIMDEX_CHECK_ARG(params.query_block >= 1 && params.base_block >= 1,
                   "block sizes must be >= 1, got query_block=", params.query_block,
                   " base_block=", params.base_block);
  std::vector<std::vector<std::pair<float, idx_t>>> hits(static_cast<std::size_t>(nq));
  if (nq == 0 || nb == 0) {
    result.assemble(hits);
    return;
  }
  std::vector<float> qbuf;
  const float* qp = q;
  if (metric == Metric::kCosine) {
    qbuf.assign(q, q + nq * d);
    normalize_rows(qbuf.data(), nq, d);
    qp = qbuf.data();
  }
  std::vector<float> qnorm2(static_cast<std::size_t>(nq), 0.0f);
  if (metric == Metric::kL2 || metric == Metric::kSquaredL2)
    for (std::int64_t i = 0; i < nq; ++i) qnorm2[i] = dot(q + i * d, q + i * d, d);
  std::vector<float> auxbuf;
  if (x_aux == nullptr && metric != Metric::kInnerProduct) {
    auxbuf.resize(static_cast<std::size_t>(nb));
    compute_row_aux(x, nb, d, metric, auxbuf.data());
    x_aux = auxbuf.data();
  }
  const int nt = params.num_threads > 0 ? params.num_threads : default_num_threads();
  const std::int64_t qb = std::min(params.query_block, nq);
  const std::int64_t bb = std::min(params.base_block, nb);
  const std::int64_t nqb = (nq + qb - 1) / qb;
  // One work item per (query block, base block): single queries use every thread too.
  const std::int64_t nbb = (nb + bb - 1) / bb;
  std::vector<std::vector<std::vector<std::pair<float, idx_t>>>> part(
      static_cast<std::size_t>(nt), std::vector<std::vector<std::pair<float, idx_t>>>(static_cast<std::size_t>(nq)));
  std::vector<std::vector<float>> tiles(static_cast<std::size_t>(nt));
  parallel_for(nqb * nbb, nt, [&](std::int64_t item, int tid) {
    const std::int64_t qbi = item / nbb, b0 = (item % nbb) * bb;
    const std::int64_t q0 = qbi * qb, rows = std::min(qb, nq - q0), cols = std::min(bb, nb - b0);
    std::vector<float>& tile = tiles[static_cast<std::size_t>(tid)];
    if (tile.size() < static_cast<std::size_t>(rows * cols)) tile.resize(static_cast<std::size_t>(rows * cols));
    if (rows == 1)
      blas::gemv(cols, d, x + b0 * d, qp + q0 * d, tile.data());
    else
      blas::gemm_abt(rows, cols, d, 1.0f, qp + q0 * d, x + b0 * d, 0.0f, tile.data());
    for (std::int64_t r = 0; r < rows; ++r) {
      float* s = tile.data() + r * cols;
      to_scores(s, x_aux ? x_aux + b0 : nullptr, cols, metric);
      auto& out = part[static_cast<std::size_t>(tid)][static_cast<std::size_t>(q0 + r)];
      for (std::int64_t j = 0; j < cols; ++j) {
        if (params.row_mask && !params.row_mask[b0 + j]) continue;
        const float dist = to_distance(s[j], qnorm2[q0 + r], metric);
        if (dist <= radius) out.emplace_back(dist, x_ids ? x_ids[b0 + j] : b0 + j);
      }
    }
  });
  for (std::int64_t i = 0; i < nq; ++i)
    for (auto& p : part) {
      auto& src = p[static_cast<std::size_t>(i)];
      hits[static_cast<std::size_t>(i)].insert(hits[static_cast<std::size_t>(i)].end(), src.begin(), src.end());
      src = {};
    }
  result.assemble(hits);
}

}  // namespace simdex
