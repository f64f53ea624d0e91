// Metric codes shared by the kernels (the values of simdex::Metric) and the score
// convention: kernels rank by a score where higher is better.
//   ip: <q, x>;  cosine: <q, x> / (|q| |x|);  l2 / sql2: 2 <q, x> - |x|^2
#pragma once

namespace simdex::cuda::detail {

enum : int { kScoreIP = 0, kScoreCosine = 1, kScoreL2 = 2, kScoreSqL2 = 3 };

}  // namespace simdex::cuda::detail
