// Bindings for exact k-NN: the functional knn() and the FlatIndex store.
#include "bindings.h"
#include "simdex/exact_knn.h"
#include "simdex/flat_index.h"
#include "../src/fp16.h"

namespace simdex::bindings {

namespace {

KnnParams make_params(int num_threads, std::int64_t query_block, std::int64_t base_block) {
  KnnParams p;
  p.num_threads = check_threads(num_threads);
  if (query_block > 0) p.query_block = query_block;
  if (base_block > 0) p.base_block = base_block;
  return p;
}

py::tuple knn(const FloatArray& q, const FloatArray& x, std::int64_t k, const std::string& metric,
              int num_threads, std::int64_t query_block, std::int64_t base_block) {
  const std::int64_t nq = check_matrix(q, -1, "queries");
  const std::int64_t d = q.shape(1);
  const std::int64_t nb = check_matrix(x, d, "base");
  check_k(k, nb);
  const Metric m = parse_metric(metric);
  const KnnParams p = make_params(num_threads, query_block, base_block);
  py::array_t<float> D({nq, k});
  py::array_t<std::int64_t> I({nq, k});
  {
    NoGil nogil;
    knn_exact(q.data(), nq, x.data(), nb, d, k, m, nullptr, nullptr, D.mutable_data(),
              I.mutable_data(), p);
  }
  return py::make_tuple(D, I);
}

}  // namespace

std::optional<IdFilter> make_filter(const std::optional<IdArray>& ids, bool deny) {
  if (!ids) return std::nullopt;
  const std::int64_t n = check_ids(*ids, "filter ids");
  const idx_t* p = ids->data();
  for (std::int64_t i = 1; i < n; ++i)
    if (p[i] <= p[i - 1])
      throw std::invalid_argument("filter ids must be sorted ascending and distinct (np.unique gives that)");
  return IdFilter{p, n, deny};
}

py::tuple range_to_python(const RangeResult& r) {
  py::array_t<std::int64_t> lims(static_cast<py::ssize_t>(r.lims.size()));
  py::array_t<float> D(static_cast<py::ssize_t>(r.distances.size()));
  py::array_t<std::int64_t> I(static_cast<py::ssize_t>(r.labels.size()));
  std::copy(r.lims.begin(), r.lims.end(), lims.mutable_data());
  std::copy(r.distances.begin(), r.distances.end(), D.mutable_data());
  std::copy(r.labels.begin(), r.labels.end(), I.mutable_data());
  return py::make_tuple(lims, D, I);
}

void register_exact(py::module_& m) {
  m.def("knn", &knn, py::arg("queries"), py::arg("base"), py::arg("k"), py::arg("metric"),
        py::arg("num_threads") = 0, py::arg("query_block") = 0, py::arg("base_block") = 0,
        "Exact k-NN. queries (nq, d) and base (nb, d) C-contiguous float32. Returns "
        "(distances float32 (nq, k) ascending, ids int64 (nq, k); -1 / inf where nb < k).");

  m.def("fp16_simd_level", &fp16::simd_level,
        "Kernel variant of the float16 pre-filter on this CPU ('avx512', 'avx2', 'none').");
  m.def(
      "_set_fp16_kernel", [](const std::string& name) { return fp16::set_level(name.c_str()); },
      py::arg("name"),
      "Testing hook: force the 'avx2' float16 kernels or restore 'auto'. Returns False for a "
      "variant this CPU cannot run. Not thread-safe.");

  py::class_<FlatIndex> flat(m, "FlatIndex");
  flat
      .def(py::init([](std::int64_t d, const std::string& metric, bool fp16_prefilter) {
             return new FlatIndex(d, parse_metric(metric), fp16_prefilter);
           }),
           py::arg("dim"), py::arg("metric"), py::arg("fp16_prefilter") = true)
      .def_static(
          "view",
          [](std::int64_t d, const std::string& metric, const FloatArray& x, const IdArray& ids,
             int num_threads) {
            const std::int64_t n = check_matrix(x, d, "vectors");
            if (check_ids(ids, "ids") != n)
              throw std::invalid_argument(detail::concat("got ", n, " vectors but ", ids.shape(0), " ids"));
            const Metric m = parse_metric(metric);
            NoGil nogil;
            return FlatIndex::view(d, m, x.data(), ids.data(), n, num_threads);
          },
          py::arg("dim"), py::arg("metric"), py::arg("vectors"), py::arg("ids"),
          py::arg("num_threads") = 0, py::keep_alive<0, 3>(), py::keep_alive<0, 4>(),
          py::return_value_policy::take_ownership,
          "Read-only index over vectors (n, dim) float32 and ids (n,) int64 used in place "
          "(e.g. views of a memory map); both stay alive as long as the index.")
      .def_property_readonly("is_view", &FlatIndex::is_view)
      .def_property_readonly("dim", &FlatIndex::dim)
      .def_property_readonly("fp16_prefilter", &FlatIndex::fp16_prefilter)
      .def(
          "prefilter_stats",
          [](const FlatIndex& self) {
            const auto s = self.prefilter_stats();
            py::dict out;
            out["queries"] = s.queries;
            out["rescored"] = s.rescored;
            return out;
          },
          "Queries answered through the float16 pre-filter since construction, and the rows "
          "they re-scored in float32.")
      .def(
          "add",
          [](FlatIndex& self, const FloatArray& x, const IdArray& ids, bool replace) {
            const std::int64_t n = check_matrix(x, self.dim(), "vectors");
            check_same_count(n, ids);
            check_new_ids(ids);
            NoGil nogil;
            self.add(x.data(), n, ids.data(), replace);
          },
          py::arg("vectors"), py::arg("ids"), py::arg("replace") = false)
      .def(
          "search",
          [](const FlatIndex& self, const FloatArray& q, std::int64_t k, int num_threads,
             std::int64_t query_block, std::int64_t base_block,
             const std::optional<IdArray>& filter_ids, bool filter_deny) {
            const std::int64_t nq = check_matrix(q, self.dim(), "queries");
            check_k(k, without_gil([&] { return self.size(); }));
            const KnnParams p = make_params(num_threads, query_block, base_block);
            const std::optional<IdFilter> filter = make_filter(filter_ids, filter_deny);
            py::array_t<float> D({nq, k});
            py::array_t<std::int64_t> I({nq, k});
            {
              NoGil nogil;
              self.search(q.data(), nq, k, D.mutable_data(), I.mutable_data(), p,
                          filter ? &*filter : nullptr);
            }
            return py::make_tuple(D, I);
          },
          py::arg("queries"), py::arg("k"), py::arg("num_threads") = 0,
          py::arg("query_block") = 0, py::arg("base_block") = 0, py::arg("filter_ids") = py::none(),
          py::arg("filter_deny") = false,
          "k-NN; filter_ids (sorted distinct int64): the only ids returned, or with filter_deny "
          "the ids never returned.")
      .def(
          "range_search",
          [](const FlatIndex& self, const FloatArray& q, float radius, int num_threads,
             const std::optional<IdArray>& filter_ids, bool filter_deny) {
            const std::int64_t nq = check_matrix(q, self.dim(), "queries");
            const std::optional<IdFilter> filter = make_filter(filter_ids, filter_deny);
            RangeResult r;
            {
              NoGil nogil;
              self.range_search(q.data(), nq, radius, r, make_params(num_threads, 0, 0),
                                filter ? &*filter : nullptr);
            }
            return range_to_python(r);
          },
          py::arg("queries"), py::arg("radius"), py::arg("num_threads") = 0,
          py::arg("filter_ids") = py::none(), py::arg("filter_deny") = false,
          "Every stored vector within distance radius: (lims (nq+1,), distances, ids), CSR.");
  def_core_store_accessors(flat);
}

}  // namespace simdex::bindings
