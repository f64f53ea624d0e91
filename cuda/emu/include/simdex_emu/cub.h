// simdex CUDA emulator: cub::DeviceRadixSort::SortPairs for unsigned integer keys.
// Same contract as CUB: a first call with d_temp_storage == nullptr sizes the
// scratch; the sort is stable and orders by key bits [begin_bit, end_bit) only.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#include "simdex_emu/runtime.h"

namespace cub {

struct DeviceRadixSort {
  template <typename K, typename V, typename N>
  static cudaError_t SortPairs(void* d_temp_storage, std::size_t& temp_storage_bytes, const K* keys_in, K* keys_out,
                               const V* values_in, V* values_out, N num_items, int begin_bit = 0,
                               int end_bit = static_cast<int>(sizeof(K) * 8), cudaStream_t stream = nullptr) {
    static_assert(std::is_integral_v<K> && std::is_unsigned_v<K>, "the emulated sort takes unsigned keys");
    const std::size_t n = num_items > 0 ? static_cast<std::size_t>(num_items) : 0;
    const std::size_t need = n * (sizeof(K) + sizeof(V)) + 256;
    if (d_temp_storage == nullptr) {
      temp_storage_bytes = need;
      return cudaSuccess;
    }
    if (temp_storage_bytes < need || begin_bit < 0 || end_bit > static_cast<int>(sizeof(K) * 8) ||
        begin_bit >= end_bit) {
      simdex_emu::set_last_error(cudaErrorInvalidValue, "cub::DeviceRadixSort::SortPairs: bad arguments");
      return cudaErrorInvalidValue;
    }
    if (!simdex_emu::is_device_range(d_temp_storage, temp_storage_bytes) ||
        !simdex_emu::is_device_range(keys_in, n * sizeof(K)) || !simdex_emu::is_device_range(keys_out, n * sizeof(K)) ||
        !simdex_emu::is_device_range(values_in, n * sizeof(V)) ||
        !simdex_emu::is_device_range(values_out, n * sizeof(V))) {
      simdex_emu::set_last_error(cudaErrorInvalidValue, "cub::DeviceRadixSort::SortPairs: a range is not device memory");
      return cudaErrorInvalidValue;
    }
    const int width = end_bit - begin_bit;
    const K mask = width >= static_cast<int>(sizeof(K) * 8) ? ~K{0} : static_cast<K>((K{1} << width) - 1);
    simdex_emu::enqueue(stream, "cub::DeviceRadixSort::SortPairs", [=]() {
      std::vector<K> k(keys_in, keys_in + n);
      std::vector<V> v(values_in, values_in + n);
      std::vector<std::size_t> order(n);
      std::iota(order.begin(), order.end(), std::size_t{0});
      std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        return ((k[a] >> begin_bit) & mask) < ((k[b] >> begin_bit) & mask);
      });
      for (std::size_t i = 0; i < n; ++i) {
        keys_out[i] = k[order[i]];
        values_out[i] = v[order[i]];
      }
      return cudaSuccess;
    });
    return cudaSuccess;
  }
};

}  // namespace cub
