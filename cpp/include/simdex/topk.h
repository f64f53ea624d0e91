// Top-k selection over blocks of scores.
//
// A "heap" here is k (score, id) slots kept as a binary heap whose root is the
// worst kept element. Higher scores are better; equal scores are ordered by the
// smaller id, so the selected set is a pure function of the inputs (independent of
// block sizes, thread counts and storage order). Empty slots hold
// (-inf, kEmptyId) and sort after every real candidate.
#pragma once

#include <cstdint>
#include <limits>

#include "simdex/common.h"

namespace simdex {

/// Id stored in empty heap slots (reported as -1 to users).
inline constexpr idx_t kEmptyId = std::numeric_limits<idx_t>::max();

/// Fill a heap of k slots with empty entries.
/// @param[in]  k     number of slots
/// @param[out] vals  k floats
/// @param[out] ids   k ids
void heap_init(std::int64_t k, float* vals, idx_t* ids);

/// Offer n scores to a heap. Candidate j has id ids[j], or id_offset + j when ids is
/// null. Uses an AVX-512 / AVX2 / scalar threshold filter chosen at run time, so
/// the cost is close to one streaming read when few candidates beat the k-th best.
/// @param[in]     scores  n floats (finite)
/// @param[in]     ids     n ids or nullptr
/// @param[in,out] vals, heap_ids  a heap of k slots
void heap_push_block(const float* scores, std::int64_t n, const idx_t* ids, idx_t id_offset,
                     std::int64_t k, float* vals, idx_t* heap_ids);

/// Offer one candidate.
void heap_push(float score, idx_t id, std::int64_t k, float* vals, idx_t* ids);

/// Sort a heap in place from best to worst (the heap property is destroyed).
void heap_sort_best_first(std::int64_t k, float* vals, idx_t* ids);

/// Name of the SIMD variant heap_push_block uses on this CPU ("avx512", "avx2", "scalar").
const char* topk_simd_level();

}  // namespace simdex
