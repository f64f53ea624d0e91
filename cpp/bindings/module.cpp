// pybind11 module simdex._core: the native core of simdex.
#include <Python.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <mutex>
#include <new>
#include <thread>

#include "bindings.h"
#include "simdex/blas.h"
#include "simdex/flat_index.h"
#include "simdex/threading.h"
#include "simdex/topk.h"

namespace simdex::bindings {

namespace {

// --- Exit and Ctrl-C state ------------------------------------------------------------
// g_exiting is set by an atexit hook, which CPython runs after the non-daemon threads
// have ended and before it marks the interpreter as finalizing. From then on a daemon
// thread that finishes (or abandons, see want_interrupt) a native call parks in
// ~NoGil instead of taking the GIL back: in CPython <= 3.13 taking it during
// finalization calls pthread_exit, and the forced unwind through C++ frames (noexcept
// destructors, catch (...)) ends in std::terminate. g_restoring counts threads that
// saw g_exiting false and are taking the GIL back; the hook waits for them (with the
// GIL released) so that none is still on its way when finalization starts.
std::mutex g_exit_mu;
bool g_exiting = false;
int g_restoring = 0;
std::atomic<bool> g_exiting_fast{false};  // g_exiting, for the lock-free interrupt poll

unsigned long g_main_ident = 0;   // threading.main_thread().ident
std::atomic<long> g_polls{0};      // GIL acquisitions made to poll for Ctrl-C (a test hook)

// The thread's current native call (NoGil sets them; only that thread reads them).
thread_local bool t_in_call = false;
thread_local bool t_main = false;
thread_local std::chrono::steady_clock::time_point t_next_poll;
constexpr std::chrono::milliseconds kPollInterval{50};

[[noreturn]] void park_forever() {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(24));
}

void on_python_exit() {  // atexit hook; runs with the GIL
  {
    std::lock_guard<std::mutex> g(g_exit_mu);
    g_exiting = true;
  }
  g_exiting_fast.store(true);
  for (;;) {
    {
      std::lock_guard<std::mutex> g(g_exit_mu);
      if (g_restoring == 0) return;
    }
    py::gil_scoped_release nogil;  // let them take it; the main thread is not finalizing yet
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void exit_state_in_child() {  // only the forking thread exists in a child
  new (&g_exit_mu) std::mutex();
  g_restoring = 0;
  t_in_call = false;
}

// Polls for Ctrl-C between blocks. Only the main thread polls (CPython runs signal
// handlers there and nowhere else), at most every kPollInterval, so a native call never
// queues for the GIL block after block behind busy Python threads (the "GIL convoy").
// A KeyboardInterrupt raised by the handler is cleared here and re-raised by the
// Interrupted translator once the C++ computation has unwound.
class PythonInterrupt : public InterruptCallback {
 public:
  bool want_interrupt() override {
    if (!t_in_call) return false;
    if (!t_main) return g_exiting_fast.load(std::memory_order_relaxed);  // give up: exiting
    const auto now = std::chrono::steady_clock::now();
    if (now < t_next_poll) return false;
    t_next_poll = now + kPollInterval;
    g_polls.fetch_add(1, std::memory_order_relaxed);
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {
      PyErr_Clear();
      return true;
    }
    return false;
  }
};

}  // namespace

NoGil::NoGil() : main_(PyThread_get_thread_ident() == g_main_ident) {
  t_in_call = true;
  t_main = main_;
  t_next_poll = std::chrono::steady_clock::now() + kPollInterval;
  state_ = PyEval_SaveThread();
}

NoGil::~NoGil() {
  t_in_call = false;
  if (!main_) {
    std::unique_lock<std::mutex> g(g_exit_mu);
    if (g_exiting) {
      g.unlock();
      park_forever();  // the process is exiting; the OS ends this thread
    }
    ++g_restoring;
  }
  PyEval_RestoreThread(state_);
  if (!main_) {
    std::lock_guard<std::mutex> g(g_exit_mu);
    --g_restoring;
  }
}

int check_threads(int num_threads) {
  if (num_threads < 0 || num_threads > max_threads())
    throw std::invalid_argument(detail::concat(
        "num_threads must be in [1, ", max_threads(), "] (4 x the CPUs this process may use, at least ",
        kMinMaxThreads, "), got ", num_threads));
  return num_threads;
}

void check_k(std::int64_t k, std::int64_t n) {
  if (k < 1) throw std::invalid_argument(detail::concat("k must be >= 1, got ", k));
  if (k > n && k > kMaxPaddedK)
    throw std::invalid_argument(detail::concat(
        "k=", k, " is larger than the ", n, " vectors searched and than ", kMaxPaddedK,
        " (the most slots padded with id -1); pass k <= max(n, ", kMaxPaddedK, ")"));
}

// Per-row magnitude check of an (n, d) float32 matrix (the Python magnitude rule):
// returns (row, code, zero_rows) with code 0 = fine, 1 = a finite |value| > hi,
// 2 = NaN or infinity, 3 = a nonzero row whose largest |value| is < lo; row is the
// first offending row. One pass, no temporaries; the GIL is released for big inputs.
py::tuple check_rows(const FloatArray& x, float hi, float lo) {
  const std::int64_t n = check_matrix(x, -1, "x"), d = x.shape(1);
  std::int64_t row = -1, zero = 0;
  int code = 0;
  auto scan = [&] {
    const float* p = x.data();
    for (std::int64_t i = 0; i < n; ++i) {
      float m = 0.0f;
      bool finite = true;
      for (std::int64_t j = 0; j < d; ++j) {
        const float a = std::fabs(p[i * d + j]);
        finite &= a <= std::numeric_limits<float>::max();  // false for NaN and inf
        m = a > m ? a : m;
      }
      const int c = !finite ? 2 : m > hi ? 1 : (m > 0.0f && m < lo) ? 3 : 0;
      zero += m == 0.0f && finite;
      if (c != 0) {
        row = i;
        code = c;
        return;
      }
    }
  };
  if (n * d > (1 << 16)) {
    NoGil nogil;
    scan();
  } else {
    scan();
  }
  return py::make_tuple(row, code, zero);
}

void check_new_ids(const IdArray& ids) {
  const std::int64_t* p = ids.data();
  for (py::ssize_t i = 0; i < ids.shape(0); ++i)
    if (p[i] < 0 || p[i] > kMaxId)
      throw std::invalid_argument(detail::concat("ids must be in [0, 2**63 - 2] (int64; 2**63 - 1 is reserved), got ",
                                                 p[i], " at position ", i));
}

}  // namespace simdex::bindings

PYBIND11_MODULE(_core, m) {
  namespace py = pybind11;
  using namespace simdex;
  using namespace simdex::bindings;
  m.doc() = "simdex native core (C++): exact k-NN, LSH, threading, BLAS info";

  static PythonInterrupt interrupt;
  InterruptCallback::install(&interrupt);
  g_main_ident = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
  py::module_::import("atexit").attr("register")(py::cpp_function(&on_python_exit));
  pthread_atfork(nullptr, nullptr, &exit_state_in_child);

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const UnknownId& e) {
      PyErr_SetObject(PyExc_KeyError, py::int_(e.id).ptr());
    } catch (const Interrupted&) {
      PyErr_SetNone(PyExc_KeyboardInterrupt);
    }
  });

  m.def("set_num_threads", &simdex::set_num_threads, py::arg("n"),
        "Set the default number of threads (n <= 0: all CPUs this process may use; at most "
        "max_threads()).");
  m.def("max_threads", &simdex::max_threads,
        "Largest num_threads accepted: 4 x the CPUs this process may use, at least 64.");
  m.def("_check_rows", &check_rows, py::arg("x"), py::arg("hi"), py::arg("lo"),
        "Magnitude rule of simdex.index.as_matrix: (first bad row or -1, code, zero rows).");
  m.def("_interrupt_polls", [] { return g_polls.load(); },
        "Testing hook: how many times native code has taken the GIL to poll for Ctrl-C.");
  m.def("get_num_threads", &simdex::default_num_threads,
        "Number of threads used when a call does not say.");
  m.def("blas_info", &blas::info, "The linked BLAS, its build options and CPU kernel.");
  m.def("simd_level", &topk_simd_level, "SIMD variant of the top-k filter on this CPU.");

  register_exact(m);
  register_lsh(m);
}
