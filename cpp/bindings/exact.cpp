// Bindings for exact k-NN: the functional knn() and the FlatIndex store.
#include "bindings.h"
#include "simdex/exact_knn.h"
#include "simdex/flat_index.h"

namespace simdex::bindings {

namespace {

KnnParams make_params(int num_threads, std::int64_t query_block, std::int64_t base_block) {
  KnnParams p;
  p.num_threads = num_threads;
  if (query_block > 0) p.query_block = query_block;
  if (base_block > 0) p.base_block = base_block;
  return p;
}

py::tuple knn(const FloatArray& q, const FloatArray& x, std::int64_t k, const std::string& metric,
              int num_threads, std::int64_t query_block, std::int64_t base_block) {
  const std::int64_t nq = check_matrix(q, -1, "queries");
  const std::int64_t d = q.shape(1);
  const std::int64_t nb = check_matrix(x, d, "base");
  if (k < 1) throw std::invalid_argument(detail::concat("k must be >= 1, got ", k));
  const Metric m = parse_metric(metric);
  py::array_t<float> D({nq, k});
  py::array_t<std::int64_t> I({nq, k});
  const KnnParams p = make_params(num_threads, query_block, base_block);
  {
    py::gil_scoped_release nogil;
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

  py::class_<FlatIndex> flat(m, "FlatIndex");
  flat
      .def(py::init([](std::int64_t d, const std::string& metric) {
             return new FlatIndex(d, parse_metric(metric));
           }),
           py::arg("dim"), py::arg("metric"))
      .def_property_readonly("dim", &FlatIndex::dim)
      .def("__len__", &FlatIndex::size)
      .def(
          "add",
          [](FlatIndex& self, const FloatArray& x, const IdArray& ids, bool replace) {
            const std::int64_t n = check_matrix(x, self.dim(), "vectors");
            if (check_ids(ids, "ids") != n)
              throw std::invalid_argument(detail::concat("got ", n, " vectors but ",
                                                         ids.shape(0), " ids"));
            py::gil_scoped_release nogil;
            self.add(x.data(), n, ids.data(), replace);
          },
          py::arg("vectors"), py::arg("ids"), py::arg("replace") = false)
      .def("reset", &FlatIndex::reset)
      .def(
          "search",
          [](const FlatIndex& self, const FloatArray& q, std::int64_t k, int num_threads,
             std::int64_t query_block, std::int64_t base_block) {
            const std::int64_t nq = check_matrix(q, self.dim(), "queries");
            if (k < 1) throw std::invalid_argument(detail::concat("k must be >= 1, got ", k));
            py::array_t<float> D({nq, k});
            py::array_t<std::int64_t> I({nq, k});
            const KnnParams p = make_params(num_threads, query_block, base_block);
            {
              py::gil_scoped_release nogil;
              self.search(q.data(), nq, k, D.mutable_data(), I.mutable_data(), p);
            }
            return py::make_tuple(D, I);
          },
          py::arg("queries"), py::arg("k"), py::arg("num_threads") = 0,
          py::arg("query_block") = 0, py::arg("base_block") = 0);
  def_store_accessors(flat);
}

}  // namespace simdex::bindings
