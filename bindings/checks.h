// Argument checks for the Tensor-facing layer. Every message names the argument (and its position in
// a list) and says what is expected. Kernel exceptions are translated by run_kernel().
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "mft/kernel_types.h"

namespace mft {
namespace bindings {

inline std::string item_name(const char* list, std::size_t i) { return std::string(list) + "[" + std::to_string(i) + "]"; }

inline void check_cpu(const at::Tensor& t, const std::string& name) {
  TORCH_CHECK(t.defined(), name, " is an undefined tensor");
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor for the CPU kernel, got device ", t.device());
}

// The kernels read float32, float16 and bfloat16.
inline kernels::DType float_dtype(const at::Tensor& t, const std::string& name) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return kernels::DType::F32;
    case at::kHalf:
      return kernels::DType::F16;
    case at::kBFloat16:
      return kernels::DType::BF16;
    default:
      break;
  }
  TORCH_CHECK_TYPE(false, name, " must be float32, float16 or bfloat16, got ", t.scalar_type());
  return kernels::DType::F32;  // unreachable
}

inline void check_dtype(const at::Tensor& t, at::ScalarType expected, const std::string& name) {
  TORCH_CHECK_TYPE(t.scalar_type() == expected, name, " must be ", expected, ", got ", t.scalar_type());
}

inline void check_same_shape(const at::Tensor& a, const std::string& a_name, const at::Tensor& b,
                             const std::string& b_name) {
  TORCH_CHECK_VALUE(a.sizes() == b.sizes(), b_name, " must have the shape of ", a_name, " ", a.sizes(), ", got ",
                    b.sizes());
}

inline void check_contiguous(const at::Tensor& t, const std::string& name) {
  TORCH_CHECK_VALUE(t.is_contiguous(), name, " must be contiguous (it is written in place)");
}

inline void check_flat_indices_tensor(const at::Tensor& indices) {
  check_cpu(indices, "indices");
  check_dtype(indices, at::kLong, "indices");
  TORCH_CHECK_VALUE(indices.dim() == 1, "indices must be 1-D, got ", indices.dim(), " dimensions");
}

// A read-only view of a tensor for the kernels (the tensor must be contiguous and stay alive).
inline kernels::ConstSpan const_span(const at::Tensor& contiguous, kernels::DType dtype) {
  kernels::ConstSpan s;
  s.data = contiguous.data_ptr();
  s.dtype = dtype;
  s.numel = contiguous.numel();
  return s;
}

// Runs a kernel call, turning its exceptions into c10 errors (RuntimeError / ValueError / IndexError in
// Python) with the kernel's message, which already names the argument.
template <class F>
auto run_kernel(const F& f) -> decltype(f()) {
  try {
    return f();
  } catch (const kernels::NonFiniteError& e) {
    TORCH_CHECK(false, e.what());
  } catch (const std::out_of_range& e) {
    TORCH_CHECK_INDEX(false, e.what());
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, e.what());
  }
  throw std::logic_error("unreachable");
}

}  // namespace bindings
}  // namespace mft
