// CPU implementations of the mft ops: argument checks, .contiguous() views, and calls into the
// torch-free kernels of csrc/.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

#include "accumulate.h"
#include "checks.h"
#include "detrimental.h"
#include "mft/memory.h"
#include "select_topk.h"
#include "zero_masked.h"
#include "zero_topk.h"

namespace mft {
namespace bindings {
namespace {

using kernels::ConstSpan;

// A new output tensor. Large ones come from the kernels' block cache (mft/memory.h) and go back to it
// when the tensor is freed: the kernels write a large output once, and the first-touch page faults of
// fresh memory would otherwise cost about as much as the kernel itself.
at::Tensor empty_output(at::IntArrayRef sizes, at::ScalarType dtype) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  const std::size_t bytes = static_cast<std::size_t>(n) * at::elementSize(dtype);
  if (bytes < kLargeBlock) return at::empty(sizes, at::TensorOptions().dtype(dtype));
  void* data = cached_alloc(bytes);
  return at::from_blob(data, sizes, [](void* p) { cached_free(p); }, at::TensorOptions().dtype(dtype));
}

// Contiguous copies (or the tensors themselves) of a theta/grad list, kept alive with their spans.
struct ScoredList {
  std::vector<at::Tensor> keep;
  std::vector<ConstSpan> thetas, grads;
};

ScoredList scored_list(at::TensorList thetas, at::TensorList grads) {
  TORCH_CHECK_VALUE(thetas.size() == grads.size(), "thetas and grads must have the same length, got ",
                    thetas.size(), " and ", grads.size());
  ScoredList out;
  out.keep.reserve(2 * thetas.size());
  for (std::size_t i = 0; i < thetas.size(); ++i) {
    const std::string tn = item_name("thetas", i), gn = item_name("grads", i);
    check_cpu(thetas[i], tn);
    check_cpu(grads[i], gn);
    const kernels::DType td = float_dtype(thetas[i], tn), gd = float_dtype(grads[i], gn);
    check_same_shape(thetas[i], tn, grads[i], gn);
    out.keep.push_back(thetas[i].contiguous());
    out.thetas.push_back(const_span(out.keep.back(), td));
    out.keep.push_back(grads[i].contiguous());
    out.grads.push_back(const_span(out.keep.back(), gd));
  }
  return out;
}

void accumulate_(const at::Tensor& g_sum, const at::Tensor& sq_sum, const at::Tensor& pos_count,
                 const at::Tensor& neg_count, const at::Tensor& grad) {
  check_cpu(g_sum, "g_sum");
  check_cpu(sq_sum, "sq_sum");
  check_cpu(pos_count, "pos_count");
  check_cpu(neg_count, "neg_count");
  check_cpu(grad, "grad");
  check_dtype(g_sum, at::kFloat, "g_sum");
  check_dtype(sq_sum, at::kFloat, "sq_sum");
  check_dtype(pos_count, at::kInt, "pos_count");
  check_dtype(neg_count, at::kInt, "neg_count");
  const kernels::DType gd = float_dtype(grad, "grad");
  check_same_shape(g_sum, "g_sum", sq_sum, "sq_sum");
  check_same_shape(g_sum, "g_sum", pos_count, "pos_count");
  check_same_shape(g_sum, "g_sum", neg_count, "neg_count");
  check_same_shape(g_sum, "g_sum", grad, "grad");
  check_contiguous(g_sum, "g_sum");
  check_contiguous(sq_sum, "sq_sum");
  check_contiguous(pos_count, "pos_count");
  check_contiguous(neg_count, "neg_count");
  const at::Tensor g = grad.contiguous();
  run_kernel([&] {
    kernels::accumulate(g_sum.data_ptr<float>(), sq_sum.data_ptr<float>(), pos_count.data_ptr<int32_t>(),
                        neg_count.data_ptr<int32_t>(), const_span(g, gd));
  });
}

at::Tensor detrimental_score(const at::Tensor& theta, const at::Tensor& grad, double lr,
                             c10::string_view rank_by, bool literal) {
  const kernels::ScoreSpec spec =
      run_kernel([&] { return kernels::make_score_spec(lr, std::string(rank_by), literal); });
  check_cpu(theta, "theta");
  check_cpu(grad, "grad");
  const kernels::DType td = float_dtype(theta, "theta"), gd = float_dtype(grad, "grad");
  check_same_shape(theta, "theta", grad, "grad");
  const at::Tensor t = theta.contiguous(), g = grad.contiguous();
  at::Tensor out = empty_output(theta.sizes(), at::kDouble);
  run_kernel([&] { kernels::detrimental_score(const_span(t, td), const_span(g, gd), spec, out.data_ptr<double>()); });
  return out;
}

at::Tensor detrimental_count(at::TensorList thetas, at::TensorList grads, double lr, bool literal) {
  const kernels::ScoreSpec spec = run_kernel([&] { return kernels::make_score_spec(lr, "shrink", literal); });
  const ScoredList list = scored_list(thetas, grads);
  at::Tensor counts = at::empty({static_cast<int64_t>(thetas.size())}, at::TensorOptions().dtype(at::kLong));
  run_kernel([&] { kernels::detrimental_count(list.thetas, list.grads, spec, counts.data_ptr<int64_t>()); });
  return counts;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> select_topk(at::TensorList thetas, at::TensorList grads, double lr,
                                                           int64_t k, c10::string_view rank_by, bool literal,
                                                           int64_t seed) {
  const kernels::ScoreSpec spec =
      run_kernel([&] { return kernels::make_score_spec(lr, std::string(rank_by), literal); });
  TORCH_CHECK_VALUE(k >= 0, "k=", k, " must be >= 0");
  const ScoredList list = scored_list(thetas, grads);
  at::Tensor indices = empty_output({k}, at::kLong);
  kernels::SelectOptions options;
  options.seed = static_cast<uint64_t>(seed);
  const kernels::SelectResult r = run_kernel(
      [&] { return kernels::select_topk(list.thetas, list.grads, spec, k, indices.data_ptr<int64_t>(), options); });
  return {indices, at::scalar_tensor(r.threshold, at::TensorOptions().dtype(at::kDouble)),
          at::scalar_tensor(r.n_tied, at::TensorOptions().dtype(at::kLong))};
}

// Checks a parameter list for in-place writes: CPU, contiguous, one float dtype. Returns the dtype
// (float32 for an empty list). `list` names the argument ("params", "thetas").
at::ScalarType check_params(at::TensorList params, std::vector<kernels::MutSpan>* spans,
                            const char* list = "params") {
  at::ScalarType dtype = at::kFloat;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const std::string name = item_name(list, i);
    check_cpu(params[i], name);
    (void)float_dtype(params[i], name);
    if (i == 0) dtype = params[i].scalar_type();
    TORCH_CHECK_TYPE(params[i].scalar_type() == dtype, name, " has dtype ", params[i].scalar_type(), " but ", list,
                     "[0] has ", dtype, "; all ", list, " must share one dtype");
    check_contiguous(params[i], name);
    kernels::MutSpan s;
    s.data = params[i].data_ptr();
    s.numel = params[i].numel();
    spans->push_back(s);
  }
  return dtype;
}

at::Tensor zero_masked_(at::TensorList params, const at::Tensor& indices) {
  check_flat_indices_tensor(indices);
  std::vector<kernels::MutSpan> spans;
  const at::ScalarType dtype = check_params(params, &spans);
  const at::Tensor idx = indices.contiguous();
  at::Tensor saved = empty_output({idx.numel()}, dtype);
  run_kernel([&] {
    kernels::zero_masked(spans, at::elementSize(dtype), idx.data_ptr<int64_t>(), idx.numel(), saved.data_ptr());
  });
  return saved;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> zero_topk_(at::TensorList thetas, at::TensorList grads,
                                                                       double lr, int64_t k, c10::string_view rank_by,
                                                                       bool literal, int64_t seed) {
  const kernels::ScoreSpec spec =
      run_kernel([&] { return kernels::make_score_spec(lr, std::string(rank_by), literal); });
  TORCH_CHECK_VALUE(k >= 0, "k=", k, " must be >= 0");
  TORCH_CHECK_VALUE(thetas.size() == grads.size(), "thetas and grads must have the same length, got ",
                    thetas.size(), " and ", grads.size());
  std::vector<kernels::MutSpan> spans;
  const at::ScalarType dtype = check_params(thetas, &spans, "thetas");
  std::vector<at::Tensor> keep;
  std::vector<ConstSpan> gspans;
  keep.reserve(grads.size());
  for (std::size_t i = 0; i < grads.size(); ++i) {
    const std::string gn = item_name("grads", i);
    check_cpu(grads[i], gn);
    const kernels::DType gd = float_dtype(grads[i], gn);
    check_same_shape(thetas[i], item_name("thetas", i), grads[i], gn);
    keep.push_back(grads[i].contiguous());
    gspans.push_back(const_span(keep.back(), gd));
  }
  const kernels::DType td = thetas.empty() ? kernels::DType::F32 : float_dtype(thetas[0], "thetas[0]");
  at::Tensor indices = empty_output({k}, at::kLong);
  at::Tensor values = empty_output({k}, dtype);
  kernels::SelectOptions options;
  options.seed = static_cast<uint64_t>(seed);
  const kernels::SelectResult r = run_kernel([&] {
    return kernels::zero_topk(spans, td, gspans, spec, k, indices.data_ptr<int64_t>(), values.data_ptr(), options);
  });
  return {indices, values, at::scalar_tensor(r.threshold, at::TensorOptions().dtype(at::kDouble)),
          at::scalar_tensor(r.n_tied, at::TensorOptions().dtype(at::kLong))};
}

void restore_(at::TensorList params, const at::Tensor& indices, const at::Tensor& values) {
  check_flat_indices_tensor(indices);
  std::vector<kernels::MutSpan> spans;
  const at::ScalarType dtype = check_params(params, &spans);
  check_cpu(values, "values");
  check_dtype(values, dtype, "values");
  TORCH_CHECK_VALUE(values.dim() == 1 && values.numel() == indices.numel(), "values must be 1-D with ",
                    indices.numel(), " elements (one per index), got shape ", values.sizes());
  const at::Tensor idx = indices.contiguous(), vals = values.contiguous();
  run_kernel([&] {
    kernels::restore(spans, at::elementSize(dtype), idx.data_ptr<int64_t>(), idx.numel(), vals.data_ptr());
  });
}

}  // namespace
}  // namespace bindings
}  // namespace mft

TORCH_LIBRARY_IMPL(mft, CPU, m) {
  m.impl("accumulate_", &mft::bindings::accumulate_);
  m.impl("detrimental_score", &mft::bindings::detrimental_score);
  m.impl("detrimental_count", &mft::bindings::detrimental_count);
  m.impl("select_topk", &mft::bindings::select_topk);
  m.impl("zero_topk_", &mft::bindings::zero_topk_);
  m.impl("zero_masked_", &mft::bindings::zero_masked_);
  m.impl("restore_", &mft::bindings::restore_);
}
