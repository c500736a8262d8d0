// Every mft op schema, declared once. Backends register implementations for these names elsewhere
// (cpu_impl.cpp here; Triton kernels from Python via torch.library.register_kernel).
#include <torch/library.h>

#include <vector>

// Ops that read a value back to the host to raise (NaN/Inf in θ or g, a bad k, bad indices) cannot be
// captured in a CUDA graph; the tag tells torch.compile's cudagraph trees to leave them out.
static const std::vector<at::Tag> kSyncsToRaise{at::Tag::cudagraph_unsafe};

TORCH_LIBRARY(mft, m) {
  m.def(
      "accumulate_(Tensor(a!) g_sum, Tensor(b!) sq_sum, Tensor(c!) pos_count, Tensor(d!) neg_count, "
      "Tensor grad) -> ()");
  m.def("detrimental_score(Tensor theta, Tensor grad, float lr, str rank_by, bool literal) -> Tensor", kSyncsToRaise);
  m.def("detrimental_count(Tensor[] thetas, Tensor[] grads, float lr, bool literal) -> Tensor", kSyncsToRaise);
  m.def(
      "select_topk(Tensor[] thetas, Tensor[] grads, float lr, int k, str rank_by, bool literal, int seed=0) "
      "-> (Tensor, Tensor, Tensor)",
      kSyncsToRaise);
  m.def(
      "zero_topk_(Tensor(a!)[] thetas, Tensor[] grads, float lr, int k, str rank_by, bool literal, int seed=0) "
      "-> (Tensor, Tensor, Tensor, Tensor)",
      kSyncsToRaise);
  m.def("zero_masked_(Tensor(a!)[] params, Tensor indices) -> Tensor", kSyncsToRaise);
  m.def("restore_(Tensor(a!)[] params, Tensor indices, Tensor values) -> ()", kSyncsToRaise);
}
