// Row-wise helpers shared by the exact search and the GPU flat index: host-side
// launchers (kernels live in rows.cu). All pointers are device pointers; every
// launcher queues work on `stream` and checks the launch.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace simdex::cuda::detail {

/// aux[i] for rows of x (n x d, row stride ld): metric 1 (cosine) -> 1/|x| (0 for
/// zero rows); 2, 3 (L2) -> |x|^2; 0 (ip) -> 0.
void launch_row_aux(const float* x, std::int64_t n, std::int64_t d, std::int64_t ld, int metric,
                    float* aux, cudaStream_t stream);

/// *count += number of non-finite entries of x (n x d, row stride ld).
void launch_count_nonfinite(const float* x, std::int64_t n, std::int64_t d, std::int64_t ld,
                            unsigned long long* count, cudaStream_t stream);

/// For i < n: data[dest[i]] = src[i] (rows of d floats; src row stride ld),
/// aux[dest[i]] = row aux of src[i], ids[dest[i]] = new_ids[i].
void launch_scatter_rows(const float* src, std::int64_t n, std::int64_t d, std::int64_t ld,
                         const std::int64_t* dest, const std::int64_t* new_ids, int metric,
                         float* data, float* aux, std::int64_t* ids, cudaStream_t stream);

/// Apply row moves in order: for i < nmoves, row dst[i] <- row src[i] (data, aux,
/// ids). Moves may depend on earlier ones, so one block applies them sequentially.
void launch_apply_moves(const std::int64_t* dst, const std::int64_t* src, std::int64_t nmoves,
                        std::int64_t d, float* data, float* aux, std::int64_t* ids,
                        cudaStream_t stream);

/// out[i] = data[rows[i]] (n rows of d floats, out contiguous).
void launch_gather_rows(const float* data, std::int64_t d, const std::int64_t* rows, std::int64_t n,
                        float* out, cudaStream_t stream);

}  // namespace simdex::cuda::detail
