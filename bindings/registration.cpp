// Every mft op schema, declared once. Backends register implementations for these names elsewhere
// (cpu_impl.cpp here; Triton kernels from Python via torch.library.register_kernel).
#include <torch/library.h>

TORCH_LIBRARY(mft, m) {
  m.def(
      "accumulate_(Tensor(a!) g_sum, Tensor(b!) sq_sum, Tensor(c!) pos_count, Tensor(d!) neg_count, "
      "Tensor grad) -> ()");
  m.def("detrimental_score(Tensor theta, Tensor grad, float lr, str rank_by, bool literal) -> Tensor");
  m.def("detrimental_count(Tensor[] thetas, Tensor[] grads, float lr, bool literal) -> Tensor");
  m.def(
      "select_topk(Tensor[] thetas, Tensor[] grads, float lr, int k, str rank_by, bool literal, int seed=0) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "zero_topk_(Tensor(a!)[] thetas, Tensor[] grads, float lr, int k, str rank_by, bool literal, int seed=0) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("zero_masked_(Tensor(a!)[] params, Tensor indices) -> Tensor");
  m.def("restore_(Tensor(a!)[] params, Tensor indices, Tensor values) -> ()");
}
