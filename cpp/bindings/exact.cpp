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
             std::int64_t query_block, std::int64_t base_block) {
            const std::int64_t nq = check_matrix(q, self.dim(), "queries");
            check_k(k, without_gil([&] { return self.size(); }));
            const KnnParams p = make_params(num_threads, query_block, base_block);
            py::array_t<float> D({nq, k});
            py::array_t<std::int64_t> I({nq, k});
            {
              NoGil nogil;
              self.search(q.data(), nq, k, D.mutable_data(), I.mutable_data(), p);
            }
            return py::make_tuple(D, I);
          },
          py::arg("queries"), py::arg("k"), py::arg("num_threads") = 0,
          py::arg("query_block") = 0, py::arg("base_block") = 0);
  def_core_store_accessors(flat);
}

}  // namespace simdex::bindings
