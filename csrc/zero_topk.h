// mft::zero_topk_: select the k most detrimental elements (exactly select_topk's set) and zero them in
// place, keeping their previous values, in one streaming pass over theta and grad.
//
// Same result as select_topk followed by zero_masked_ on its indices, at about the cost of select_topk
// alone: the elements certain from the sampled bracket are zeroed while their cache lines are in cache
// for scoring, instead of a second walk over theta. Memory: select_topk's, plus 4 bytes per certain
// element for the saved bits until they are merged into the output.
#pragma once

#include <cstdint>
#include <vector>

#include "detrimental.h"
#include "mft/kernel_types.h"
#include "select_topk.h"
#include "zero_masked.h"

namespace mft {
namespace kernels {

// thetas[t] (numel elements of theta_dtype at data, written in place) and grads[t] (any float dtype,
// same numel). Writes the k selected flat indices, ascending, to out_indices[0..k) and the previous
// values (theta_dtype) to out_values[0..k); those elements become +0.0. Throws std::invalid_argument
// when k < 0, k exceeds the detrimental count, or a theta shares memory with another theta or with a
// grad; NonFiniteError on Inf/NaN. On any error the thetas are left unchanged.
SelectResult zero_topk(const std::vector<MutSpan>& thetas, DType theta_dtype, const std::vector<ConstSpan>& grads,
                       const ScoreSpec& spec, int64_t k, int64_t* out_indices, void* out_values,
                       const SelectOptions& options = SelectOptions());

}  // namespace kernels
}  // namespace mft
