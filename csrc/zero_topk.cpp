#include "zero_topk.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace mft {
namespace kernels {

namespace {

struct ByteRange {
  uintptr_t begin, end;
  bool is_theta;
  std::size_t position;
};

std::string range_name(const ByteRange& r) {
  return std::string(r.is_theta ? "thetas[" : "grads[") + std::to_string(r.position) + "]";
}

// Zeroing while scoring needs every theta to be the only view of its memory: a theta overlapping a grad
// or another theta would be read after it was written. Grads may overlap each other.
void check_no_theta_overlap(const std::vector<MutSpan>& thetas, DType theta_dtype,
                            const std::vector<ConstSpan>& grads) {
  std::vector<ByteRange> ranges;
  auto add = [&](const void* data, int64_t numel, DType dtype, bool is_theta, std::size_t i) {
    if (numel <= 0) return;
    const uintptr_t b = reinterpret_cast<uintptr_t>(data);
    ranges.push_back(ByteRange{b, b + static_cast<uintptr_t>(numel) * dtype_size(dtype), is_theta, i});
  };
  for (std::size_t i = 0; i < thetas.size(); ++i) add(thetas[i].data, thetas[i].numel, theta_dtype, true, i);
  for (std::size_t i = 0; i < grads.size(); ++i) add(grads[i].data, grads[i].numel, grads[i].dtype, false, i);
  std::sort(ranges.begin(), ranges.end(), [](const ByteRange& a, const ByteRange& b) { return a.begin < b.begin; });
  // Sweep: the open range reaching furthest, and the theta range reaching furthest.
  const ByteRange* reach_any = nullptr;
  const ByteRange* reach_theta = nullptr;
  for (const ByteRange& r : ranges) {
    const ByteRange* clash = nullptr;
    if (r.is_theta && reach_any && reach_any->end > r.begin) clash = reach_any;
    if (!r.is_theta && reach_theta && reach_theta->end > r.begin) clash = reach_theta;
    if (clash)
      throw std::invalid_argument(range_name(*clash) + " and " + range_name(r) +
                                  " share memory; each theta is written in place and must not overlap "
                                  "another theta or a grad");
    if (!reach_any || r.end > reach_any->end) reach_any = &r;
    if (r.is_theta && (!reach_theta || r.end > reach_theta->end)) reach_theta = &r;
  }
}

}  // namespace

SelectResult zero_topk(const std::vector<MutSpan>& thetas, DType theta_dtype, const std::vector<ConstSpan>& grads,
                       const ScoreSpec& spec, int64_t k, int64_t* out_indices, void* out_values,
                       const SelectOptions& options) {
  if (thetas.size() != grads.size()) throw std::invalid_argument("thetas and grads must have the same length");
  check_no_theta_overlap(thetas, theta_dtype, grads);
  std::vector<ConstSpan> reads(thetas.size());
  ZeroTarget zero;
  zero.data.resize(thetas.size());
  zero.elem_size = dtype_size(theta_dtype);
  zero.values = out_values;
  for (std::size_t t = 0; t < thetas.size(); ++t) {
    reads[t] = ConstSpan{thetas[t].data, theta_dtype, thetas[t].numel};
    zero.data[t] = thetas[t].data;
  }
  return select_and_zero(reads, grads, spec, k, out_indices, zero, options);
}

}  // namespace kernels
}  // namespace mft
