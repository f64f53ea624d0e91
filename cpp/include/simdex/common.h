// Common definitions for the simdex native core: id type, metrics, input checks,
// interrupt hooks.
//
// Nothing here knows about Python. Errors are standard exceptions whose messages
// carry the actual values and say how to fix the call; the bindings map
// std::invalid_argument -> ValueError, std::out_of_range -> IndexError and
// simdex::Interrupted -> KeyboardInterrupt.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace simdex {

/// Identifier of a stored vector. -1 marks "no result" in outputs.
using idx_t = std::int64_t;

/// Distance / similarity function. Distances are always "smaller is closer":
///  - kInnerProduct: distance = -<q, x>
///  - kCosine:       distance = 1 - <q, x> / (|q| |x|); a zero vector has cosine 0 to
///                   everything (distance 1), never NaN
///  - kL2:           distance = |q - x| (Euclidean)
///  - kSquaredL2:    distance = |q - x|^2
enum class Metric : int { kInnerProduct = 0, kCosine = 1, kL2 = 2, kSquaredL2 = 3 };

/// Thrown between blocks of a long computation when the interrupt callback asks
/// to stop (Ctrl-C in Python).
struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("computation interrupted") {}
};

/// Long loops call InterruptCallback::check() between blocks. The Python bindings
/// install a callback that takes the GIL and runs PyErr_CheckSignals().
class InterruptCallback {
 public:
  virtual ~InterruptCallback() = default;
  /// Returns true when the computation should stop.
  virtual bool want_interrupt() = 0;

  /// Install a callback (nullptr to remove). Not thread-safe; call at start-up.
  static void install(InterruptCallback* cb);
  /// Throws Interrupted if the installed callback asks to stop. Call only from the
  /// thread that started the computation (the callback may need the GIL).
  static void check();
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace simdex

/// Throw std::invalid_argument (Python ValueError) when `cond` is false.
#define SIMDEX_CHECK_ARG(cond, ...)                                                 \
  do {                                                                              \
    if (!(cond)) throw std::invalid_argument(::simdex::detail::concat(__VA_ARGS__)); \
  } while (0)

/// Throw std::out_of_range (Python IndexError) when `cond` is false.
#define SIMDEX_CHECK_RANGE(cond, ...)                                             \
  do {                                                                            \
    if (!(cond)) throw std::out_of_range(::simdex::detail::concat(__VA_ARGS__)); \
  } while (0)
