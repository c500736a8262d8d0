// mft::zero_masked_ / mft::restore_: set chosen elements of a list of tensors to zero in place, keeping
// their previous values so that restoring them is exact.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace mft {
namespace kernels {

// One contiguous tensor to write into: `numel` elements of `elem_size` bytes (2 or 4) at `data`.
struct MutSpan {
  void* data = nullptr;
  int64_t numel = 0;
};

// Checks that indices[0..n) are strictly increasing (sorted, unique) and in [0, total); throws
// std::invalid_argument (order) or std::out_of_range (range) naming the first offending position.
void check_flat_indices(const int64_t* indices, int64_t n, int64_t total);

// saved[i] = element indices[i] of the list (flat index over the tensors in list order, each
// row-major); then that element = 0 (all bits zero: +0.0). One pass over the indices, random access
// into the tensors, checking them on the way as check_flat_indices does (same errors); on a bad index
// the elements already zeroed are restored before it throws, so the tensors are left unchanged.
void zero_masked(const std::vector<MutSpan>& params, std::size_t elem_size, const int64_t* indices, int64_t n,
                 void* saved);

// Element indices[i] of the list = values[i], bit for bit. Checks the indices first.
void restore(const std::vector<MutSpan>& params, std::size_t elem_size, const int64_t* indices, int64_t n,
             const void* values);

}  // namespace kernels
}  // namespace mft
