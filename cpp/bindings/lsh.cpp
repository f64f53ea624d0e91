// Bindings for LSH: the hashing functions and the LshIndex.
#include <algorithm>
#include <vector>

#include "bindings.h"
#include "simdex/blas.h"
#include "simdex/lsh.h"
#include "simdex/threading.h"
#include "../src/simd.h"

namespace simdex::bindings {

namespace {

using CodeArray = py::array_t<std::uint64_t, py::array::c_style>;

// Probes per table: more than 2^hash_bits is clamped by the index (there are no more
// buckets); kMaxProbes bounds the per-query work and memory whatever hash_bits is.
constexpr std::int64_t kMaxProbes = 1 << 16;

void check_probes(std::int64_t num_probes) {
  if (num_probes < 1 || num_probes > kMaxProbes)
    throw std::invalid_argument(detail::concat("num_probes must be in [1, ", kMaxProbes, "], got ",
                                               num_probes));
}

void check_planes(const FloatArray& planes, std::int64_t num_tables, int hash_bits, std::int64_t d) {
  const std::int64_t rows = check_matrix(planes, d, "planes");
  if (num_tables < 1 || hash_bits < 1 || hash_bits > kMaxHashBits)
    throw std::invalid_argument(detail::concat("need num_tables >= 1 and hash_bits in [1, 64], got ",
                                               num_tables, " and ", hash_bits));
  if (rows != num_tables * hash_bits)
    throw std::invalid_argument(detail::concat("planes has ", rows, " rows, expected num_tables * hash_bits = ",
                                               num_tables * hash_bits));
}

CodeArray hash(const FloatArray& x, const FloatArray& planes, std::int64_t num_tables, int hash_bits,
               int num_threads) {
  const std::int64_t n = check_matrix(x, -1, "x");
  const std::int64_t d = x.shape(1);
  check_planes(planes, num_tables, hash_bits, d);
  num_threads = check_threads(num_threads);
  CodeArray codes({n, num_tables});
  {
    NoGil nogil;
    lsh_hash(x.data(), n, d, planes.data(), num_tables, hash_bits, codes.mutable_data(), num_threads);
  }
  return codes;
}

py::array_t<std::uint64_t> probe_masks(const FloatArray& margins, std::int64_t num_probes) {
  if (margins.ndim() != 1) throw std::invalid_argument("margins must be 1-D");
  const int K = static_cast<int>(margins.shape(0));
  check_probes(num_probes);
  std::vector<std::uint64_t> out(static_cast<std::size_t>(num_probes));
  const std::int64_t w = lsh_probe_masks(margins.data(), K, num_probes, out.data());
  py::array_t<std::uint64_t> res(w);
  std::copy(out.begin(), out.begin() + w, res.mutable_data());
  return res;
}

// The sgemm of lsh_hash alone (same 256-row blocks, same threads, no sign packing):
// the benchmark's yardstick for hashing throughput.
void project_only(const FloatArray& x, const FloatArray& planes, int num_threads) {
  const std::int64_t n = check_matrix(x, -1, "x");
  const std::int64_t d = x.shape(1);
  const std::int64_t rows = check_matrix(planes, d, "planes");
  const int nt = resolve_num_threads(check_threads(num_threads));
  NoGil nogil;
  constexpr std::int64_t kBlock = 256;
  const std::int64_t nblocks = (n + kBlock - 1) / kBlock;
  std::vector<std::vector<float>> buf(static_cast<std::size_t>(nt));
  parallel_for(nblocks, nt, [&](std::int64_t b, int tid) {
    auto& out = buf[static_cast<std::size_t>(tid)];
    out.resize(static_cast<std::size_t>(kBlock * rows));
    const std::int64_t r0 = b * kBlock;
    blas::gemm_abt(std::min(kBlock, n - r0), rows, d, 1.0f, x.data() + r0 * d, planes.data(), 0.0f, out.data());
  });
}

// Hamming distances of sketch rows to q (the popcount kernel the index uses).
py::array_t<std::uint16_t> hamming(const py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>& codes,
                                   const py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>& q,
                                   const py::object& rows) {
  if (codes.ndim() != 2) throw std::invalid_argument("codes must be 2-D (n, words)");
  const std::int64_t n = codes.shape(0);
  const int W = static_cast<int>(codes.shape(1));
  if (W < 1 || W > 8) throw std::invalid_argument(detail::concat("codes must have 1 to 8 words per row, got ", W));
  if (q.ndim() != 1 || q.shape(0) != W)
    throw std::invalid_argument(detail::concat("q must have shape (", W, ",)"));
  if (rows.is_none()) {
    py::array_t<std::uint16_t> out(n);
    simd::hamming(codes.data(), n, W, q.data(), out.mutable_data());
    return out;
  }
  const auto r = rows.cast<py::array_t<std::uint32_t, py::array::c_style | py::array::forcecast>>();
  if (r.ndim() != 1) throw std::invalid_argument("rows must be 1-D");
  for (std::int64_t i = 0; i < r.shape(0); ++i)
    if (r.data()[i] >= static_cast<std::uint64_t>(n))
      throw std::out_of_range(detail::concat("rows[", i, "] = ", r.data()[i], " is out of range [0, ", n, ")"));
  py::array_t<std::uint16_t> out(r.shape(0));
  simd::hamming_gather(codes.data(), r.data(), r.shape(0), W, q.data(), out.mutable_data());
  return out;
}

LshOptions make_options(std::int64_t d, const py::object& center, int sketch_words, bool table_sketches,
                        const py::object& sketch_planes) {
  LshOptions o;
  o.sketch_words = sketch_words;
  o.table_sketches = table_sketches;
  if (sketch_words < 0 || sketch_words > 8)
    throw std::invalid_argument(detail::concat("sketch_words must be in [0, 8], got ", sketch_words));
  if (!center.is_none()) {
    const FloatArray c = center.cast<FloatArray>();
    if (c.ndim() != 1 || c.shape(0) != d)
      throw std::invalid_argument(detail::concat("center must have shape (", d, ",)"));
    o.center.assign(c.data(), c.data() + d);
  }
  if (sketch_words > 0) {
    if (sketch_planes.is_none())
      throw std::invalid_argument("sketch_words > 0 needs sketch_planes of shape (64 * sketch_words, dim)");
    const FloatArray sp = sketch_planes.cast<FloatArray>();
    if (check_matrix(sp, d, "sketch_planes") != 64 * sketch_words)
      throw std::invalid_argument(detail::concat("sketch_planes has ", sp.shape(0),
                                                 " rows, expected 64 * sketch_words = ", 64 * sketch_words));
    o.sketch_planes.assign(sp.data(), sp.data() + 64 * sketch_words * d);
  }
  return o;
}

}  // namespace

void register_lsh(py::module_& m) {
  m.def("lsh_hash", &hash, py::arg("x"), py::arg("planes"), py::arg("num_tables"), py::arg("hash_bits"),
        py::arg("num_threads") = 0,
        "Sign-projection codes: x (n, d) and planes (L*K, d) C-contiguous float32 -> uint64 (n, L); "
        "bit j of table t is 1 iff <x, planes[t*K+j]> > 0.");
  m.def("lsh_project_only", &project_only, py::arg("x"), py::arg("planes"), py::arg("num_threads") = 0,
        "Benchmark helper: the blocked sgemm of lsh_hash without the sign packing.");
  m.def("lsh_hamming", &hamming, py::arg("codes"), py::arg("q"), py::arg("rows") = py::none(),
        "Hamming distances of sketch rows codes (n, W) uint64 (or of codes[rows]) to q (W,).");
  m.def("popcount_kernel", &simd::popcount_kernel, "Name of the sketch popcount kernel in use.");
  m.def("lsh_probe_masks", &probe_masks, py::arg("margins"), py::arg("num_probes"),
        "Multi-probe flip masks of one table in increasing order of summed margin (first is 0).");

  py::class_<LshIndex> lsh(m, "LshIndex");
  def_core_store_accessors(lsh);
  lsh
      .def(py::init([](std::int64_t d, std::int64_t L, int K, const FloatArray& planes,
                       const std::string& metric, const py::object& center, int sketch_words,
                       const py::object& sketch_planes, bool table_sketches) {
             check_planes(planes, L, K, d);
             const LshOptions o = make_options(d, center, sketch_words, table_sketches, sketch_planes);
             return new LshIndex(d, L, K, planes.data(), parse_metric(metric), o);
           }),
           py::arg("dim"), py::arg("num_tables"), py::arg("hash_bits"), py::arg("planes"),
           py::arg("metric"), py::kw_only(), py::arg("center") = py::none(), py::arg("sketch_words") = 0,
           py::arg("sketch_planes") = py::none(), py::arg("table_sketches") = false)
      .def(
          "rebuild",
          [](LshIndex& self, std::int64_t L, int K, const FloatArray& planes, const py::object& center,
             int sketch_words, const py::object& sketch_planes, bool table_sketches, int num_threads) {
            check_planes(planes, L, K, self.dim());
            const LshOptions o = make_options(self.dim(), center, sketch_words, table_sketches, sketch_planes);
            num_threads = check_threads(num_threads);
            NoGil nogil;
            self.rebuild(L, K, planes.data(), o, num_threads);
          },
          py::arg("num_tables"), py::arg("hash_bits"), py::arg("planes"), py::kw_only(),
          py::arg("center") = py::none(), py::arg("sketch_words") = 0, py::arg("sketch_planes") = py::none(),
          py::arg("table_sketches") = false, py::arg("num_threads") = 0,
          "Re-hash every live vector with a new configuration (tables, centre, sketches).")
      .def_property_readonly("sketch_words", &LshIndex::sketch_words)
      .def_property_readonly("table_sketches", &LshIndex::table_sketches)
      .def_property_readonly("dim", &LshIndex::dim)
      .def_property_readonly("num_tables", &LshIndex::num_tables)
      .def_property_readonly("hash_bits", &LshIndex::hash_bits)
      .def(
          "add",
          [](LshIndex& self, const FloatArray& x, const IdArray& ids, bool replace, int num_threads) {
            const std::int64_t n = check_matrix(x, self.dim(), "vectors");
            check_same_count(n, ids);
            check_new_ids(ids);
            num_threads = check_threads(num_threads);
            NoGil nogil;
            self.add(x.data(), n, ids.data(), replace, num_threads);
          },
          py::arg("vectors"), py::arg("ids"), py::arg("replace") = false, py::arg("num_threads") = 0)
      .def(
          "search",
          [](const LshIndex& self, const FloatArray& q, std::int64_t k, std::int64_t num_probes,
             int num_threads, std::int64_t refine, std::int64_t rerank, bool scan,
             const std::optional<IdArray>& filter_ids, bool filter_deny, double scan_fraction) {
            const std::int64_t nq = check_matrix(q, self.dim(), "queries");
            check_k(k, without_gil([&] { return self.size(); }));
            check_probes(num_probes);
            num_threads = check_threads(num_threads);
            if (rerank < 0) throw std::invalid_argument(detail::concat("rerank must be >= 0, got ", rerank));
            const std::optional<IdFilter> filter = make_filter(filter_ids, filter_deny);
            LshSearchParams p;
            p.num_probes = num_probes;
            p.num_threads = num_threads;
            p.refine = refine;
            p.rerank = rerank;
            p.scan = scan;
            p.scan_fraction = scan_fraction;
            p.filter = filter ? &*filter : nullptr;
            py::array_t<float> D({nq, k});
            py::array_t<std::int64_t> I({nq, k});
            py::array_t<std::int64_t> C(nq);
            py::array_t<std::int64_t> S(nq);
            {
              NoGil nogil;
              self.search(q.data(), nq, k, p, D.mutable_data(), I.mutable_data(), C.mutable_data(),
                          S.mutable_data());
            }
            return py::make_tuple(D, I, C, S);
          },
          py::arg("queries"), py::arg("k"), py::arg("num_probes"), py::arg("num_threads") = 0,
          py::arg("refine") = 16, py::arg("rerank") = 0, py::arg("scan") = false,
          py::arg("filter_ids") = py::none(), py::arg("filter_deny") = false, py::arg("scan_fraction") = 1.0,
          "Returns (distances (nq, k), ids (nq, k), candidates per query (nq,), entries scanned (nq,)).")
      .def(
          "range_search",
          [](const LshIndex& self, const FloatArray& q, float radius, std::int64_t num_probes,
             int num_threads, std::int64_t rerank, bool scan, const std::optional<IdArray>& filter_ids,
             bool filter_deny, double scan_fraction) {
            const std::int64_t nq = check_matrix(q, self.dim(), "queries");
            check_probes(num_probes);
            if (rerank < 0) throw std::invalid_argument(detail::concat("rerank must be >= 0, got ", rerank));
            num_threads = check_threads(num_threads);
            const std::optional<IdFilter> filter = make_filter(filter_ids, filter_deny);
            LshSearchParams p;
            p.num_probes = num_probes;
            p.num_threads = num_threads;
            p.rerank = rerank;
            p.scan = scan;
            p.scan_fraction = scan_fraction;
            p.filter = filter ? &*filter : nullptr;
            RangeResult r;
            py::array_t<std::int64_t> C(nq);
            {
              NoGil nogil;
              self.range_search(q.data(), nq, radius, p, r, C.mutable_data());
            }
            py::tuple out = range_to_python(r);
            return py::make_tuple(out[0], out[1], out[2], C);
          },
          py::arg("queries"), py::arg("radius"), py::arg("num_probes"), py::arg("num_threads") = 0,
          py::arg("rerank") = 0, py::arg("scan") = false, py::arg("filter_ids") = py::none(),
          py::arg("filter_deny") = false, py::arg("scan_fraction") = 1.0,
          "Candidates within distance radius: (lims (nq+1,), distances, ids, candidates per query).")
      .def(
          "search_exact",
          [](const LshIndex& self, const FloatArray& q, std::int64_t k, int num_threads) {
            const std::int64_t nq = check_matrix(q, self.dim(), "queries");
            if (k < 1) throw std::invalid_argument(detail::concat("k must be >= 1, got ", k));
            py::array_t<float> D({nq, k});
            py::array_t<std::int64_t> I({nq, k});
            {
              NoGil nogil;
              self.search_exact(q.data(), nq, k, D.mutable_data(), I.mutable_data(), num_threads);
            }
            return py::make_tuple(D, I);
          },
          py::arg("queries"), py::arg("k"), py::arg("num_threads") = 0,
          "Exact k-NN over the stored vectors (ground truth for self-configuration).")
      .def("live_ids",
           [](const LshIndex& self) {
             // size() and live_ids() lock separately; the Python layer serialises writers.
             py::array_t<std::int64_t> out(self.size());
             self.live_ids(out.mutable_data());
             return out;
           })
      .def("mean_unit",
           [](const LshIndex& self) {
             py::array_t<float> out(self.dim());
             self.mean_unit(out.mutable_data());
             return out;
           })
      .def("table_stats",
           [](const LshIndex& self, std::int64_t t) {
             const LshTableStats s = without_gil([&] { return self.table_stats(t); });
             py::dict d;
             d["nonempty_buckets"] = s.nonempty_buckets;
             d["mean_bucket_size"] = s.mean_bucket_size;
             d["max_bucket_size"] = s.max_bucket_size;
             return d;
           },
           py::arg("table"))
      .def("memory_bytes", [](const LshIndex& self) { return without_gil([&] { return self.memory_bytes(); }); });
}

}  // namespace simdex::bindings
