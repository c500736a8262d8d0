// Types shared by the torch-free kernels: element dtypes and their exact conversion to float, the flat
// index space over a list of tensors, and the non-finite error.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#define MFT_INLINE inline __attribute__((always_inline))

namespace mft {
namespace kernels {

// Element types the kernels read (the bindings map at::ScalarType Float/Half/BFloat16 onto these).
enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

inline std::size_t dtype_size(DType d) { return d == DType::F32 ? 4 : 2; }
inline const char* dtype_name(DType d) {
  return d == DType::F32 ? "float32" : d == DType::F16 ? "float16" : "bfloat16";
}

MFT_INLINE float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
MFT_INLINE uint32_t float_to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
MFT_INLINE uint64_t double_to_bits(double d) {
  uint64_t b;
  std::memcpy(&b, &d, 8);
  return b;
}
MFT_INLINE double bits_to_double(uint64_t b) {
  double d;
  std::memcpy(&d, &b, 8);
  return d;
}

// IEEE binary16 -> binary32, exact for every input (subnormals, ±0, ±Inf, NaN payloads). Branch-free
// so that loops over it vectorize: the exponent/mantissa bits shifted into a float are the value times
// 2^-112 (also for subnormal halves, which land on float subnormals), and 2^112 rescales exactly.
MFT_INLINE float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;
  const uint32_t scaled = float_to_bits(bits_to_float(em << 13) * 0x1p112f);
  const uint32_t special = 0x7f800000u | (em << 13);  // Inf / NaN keep their mantissa
  return bits_to_float((em >= 0x7c00u ? special : scaled) | sign);
}

// bfloat16 is the upper half of a binary32.
MFT_INLINE float bf16_to_float(uint16_t b) { return bits_to_float(static_cast<uint32_t>(b) << 16); }

// True when the float is Inf or NaN (exponent all ones).
MFT_INLINE bool float_nonfinite(float x) { return (float_to_bits(x) & 0x7f800000u) == 0x7f800000u; }

// One tensor as the kernels see it: contiguous, row-major, `numel` elements of `dtype` at `data`.
struct ConstSpan {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t numel = 0;
};

inline float load_float(const ConstSpan& s, int64_t i) {
  switch (s.dtype) {
    case DType::F32:
      return static_cast<const float*>(s.data)[i];
    case DType::F16:
      return half_to_float(static_cast<const uint16_t*>(s.data)[i]);
    default:
      return bf16_to_float(static_cast<const uint16_t*>(s.data)[i]);
  }
}

// The flat index space over a list of tensors: tensor t holds flat indices [offset[t], offset[t+1]).
class FlatLayout {
 public:
  FlatLayout() : offsets_(1, 0) {}
  explicit FlatLayout(const std::vector<int64_t>& numels) : offsets_(numels.size() + 1, 0) {
    for (std::size_t t = 0; t < numels.size(); ++t) offsets_[t + 1] = offsets_[t] + numels[t];
  }
  int64_t total() const { return offsets_.back(); }
  int64_t n_tensors() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t offset(int64_t t) const { return offsets_[t]; }
  int64_t end(int64_t t) const { return offsets_[t + 1]; }
  // The tensor holding flat index i (0 <= i < total()); empty tensors are skipped.
  int64_t tensor_of(int64_t i) const {
    return static_cast<int64_t>(std::upper_bound(offsets_.begin(), offsets_.end(), i) - offsets_.begin()) - 1;
  }

 private:
  std::vector<int64_t> offsets_;
};

// Calls fn(tensor, local_begin, local_end, flat_base) for the pieces of flat range [begin, end), in order;
// flat index of local element j of `tensor` is flat_base + j.
template <class F>
inline void for_each_piece(const FlatLayout& layout, int64_t begin, int64_t end, const F& fn) {
  if (begin >= end) return;
  int64_t t = layout.tensor_of(begin);
  int64_t pos = begin;
  while (pos < end) {
    const int64_t base = layout.offset(t);
    const int64_t stop = std::min(end, layout.end(t));
    if (stop > pos) fn(t, pos - base, stop - base, base);
    pos = std::max(pos, stop);
    ++t;
  }
}

// A NaN or Inf in an input that must be finite. `tensor` is the position in the input list, or -1 when
// the op takes a single tensor; `list_name` is "thetas"/"grads" (or "theta"/"grad" when tensor == -1).
class NonFiniteError : public std::runtime_error {
 public:
  NonFiniteError(const std::string& list_name, int64_t tensor, int64_t element)
      : std::runtime_error(make_message(list_name, tensor, element)),
        list_name_(list_name),
        tensor_(tensor),
        element_(element) {}
  const std::string& list_name() const { return list_name_; }
  int64_t tensor() const { return tensor_; }
  int64_t element() const { return element_; }

 private:
  static std::string make_message(const std::string& list_name, int64_t tensor, int64_t element) {
    std::string where = tensor < 0 ? list_name : list_name + "[" + std::to_string(tensor) + "]";
    return "non-finite value in " + where + " at element " + std::to_string(element) +
           " (NaN or Inf; parameters and gradients must be finite)";
  }
  std::string list_name_;
  int64_t tensor_;
  int64_t element_;
};

}  // namespace kernels
}  // namespace mft
