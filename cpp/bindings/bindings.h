// The feature files of the pybind11 module simdex._core (exact.cpp, lsh.cpp) and the
// module body (module.cpp) meet here.
//
// Every call of _core that may wait for an index lock releases the GIL first (NoGil),
// so a thread holding the GIL never waits for a lock held by a thread that needs it.
#pragma once

#include <pybind11/stl.h>

#include <optional>

#include "common.h"  // checks, metric names and store accessors shared with cuda/bindings
#include "simdex/id_filter.h"

namespace simdex::bindings {

/// The IdFilter of an optional (sorted, distinct) int64 id array; nullopt for None.
/// The filter points into ids, which must outlive it.
std::optional<IdFilter> make_filter(const std::optional<IdArray>& ids, bool deny);

/// (lims int64 (nq + 1,), distances float32 (m,), ids int64 (m,)) of a RangeResult.
py::tuple range_to_python(const RangeResult& r);

/// num_threads of a call: 0 (the default) or in [1, max_threads()]; else ValueError.
int check_threads(int num_threads);
/// k of a search over n vectors: k >= 1 and k <= max(n, kMaxPaddedK) (slots beyond n
/// are padded, so a huge k would only allocate padding); else ValueError.
void check_k(std::int64_t k, std::int64_t n);
inline constexpr std::int64_t kMaxPaddedK = 1 << 16;
/// Ids to store: each in [0, kMaxId] (kMaxId + 1 = INT64_MAX marks "no result").
void check_new_ids(const IdArray& ids);
inline constexpr std::int64_t kMaxId = INT64_MAX - 1;

/// Releases the GIL for native work; the destructor takes it back safely:
/// - the interpreter may be exiting (a daemon thread): once simdex's atexit hook has
///   run, a thread other than the main one parks here forever instead of taking the
///   GIL back (CPython would end it with pthread_exit, whose forced unwind through
///   C++ frames aborts the process);
/// - the calling thread is recorded, so the interrupt callback polls for Ctrl-C only
///   on the main thread (where Python delivers signals), every 50 ms at most.
class NoGil {
 public:
  NoGil();
  ~NoGil();
  NoGil(const NoGil&) = delete;
  NoGil& operator=(const NoGil&) = delete;

 private:
  PyThreadState* state_;
  bool main_;
};

/// Run f() with the GIL released (see NoGil) and return its result.
template <class F>
auto without_gil(F&& f) {
  NoGil nogil;
  return f();
}

/// The _core stores' accessors: those of common.h with the GIL released through NoGil,
/// plus __len__ and reset (they take the index lock too).
template <typename Store, typename... Extra>
void def_core_store_accessors(py::class_<Store, Extra...>& cls) {
  def_store_accessors<NoGil>(cls);
  cls.def("__len__", [](const Store& self) { return without_gil([&] { return self.size(); }); })
      .def("reset", [](Store& self) {
        NoGil nogil;
        self.reset();
      });
}

void register_exact(py::module_& m);
// Further feature modules add their register_* function here and call it from
// module.cpp.
void register_lsh(py::module_& m);

}  // namespace simdex::bindings
