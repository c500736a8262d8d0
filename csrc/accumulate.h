// mft::accumulate_: one fused pass that adds a gradient into the running statistics of a parameter.
#pragma once

#include <cstdint>

#include "mft/kernel_types.h"

namespace mft {
namespace kernels {

// For i < grad.numel, with g = float(grad[i]) (fp16/bf16 widened exactly):
//   g_sum[i] += g;  sq_sum[i] += fl(g * g);  pos_count[i] += (g > 0);  neg_count[i] += (g < 0)
// in fp32 (two roundings for the square, as `sq_sum += g * g` in PyTorch) and int32. One pass over the
// five arrays, no extra memory, bit-identical on every CPU path. NaN propagates (no check here).
void accumulate(float* g_sum, float* sq_sum, int32_t* pos_count, int32_t* neg_count, const ConstSpan& grad);

}  // namespace kernels
}  // namespace mft
