#include "accumulate.h"

#include "cpu_path.h"
#include "mft/parallel.h"

namespace mft {
namespace kernels {

namespace {

template <DType D>
MFT_INLINE void accumulate_body(float* __restrict g_sum, float* __restrict sq_sum, int32_t* __restrict pos,
                                int32_t* __restrict neg, const void* grad, int64_t n) {
  const float* __restrict g32 = static_cast<const float*>(grad);
  const uint16_t* __restrict g16 = static_cast<const uint16_t*>(grad);
  for (int64_t i = 0; i < n; ++i) {
    const float g = D == DType::F32 ? g32[i] : D == DType::F16 ? half_to_float(g16[i]) : bf16_to_float(g16[i]);
    const float sq = g * g;
    g_sum[i] += g;
    sq_sum[i] += sq;
    pos[i] += g > 0.f ? 1 : 0;
    neg[i] += g < 0.f ? 1 : 0;
  }
}

using AccumulateFn = void (*)(float*, float*, int32_t*, int32_t*, const void*, int64_t);

template <DType D>
void accumulate_scalar(float* a, float* b, int32_t* c, int32_t* d, const void* g, int64_t n) {
  accumulate_body<D>(a, b, c, d, g, n);
}
#if MFT_X86
template <DType D>
MFT_TARGET_AVX2 void accumulate_avx2(float* a, float* b, int32_t* c, int32_t* d, const void* g, int64_t n) {
  accumulate_body<D>(a, b, c, d, g, n);
}
template <DType D>
MFT_TARGET_AVX512 void accumulate_avx512(float* a, float* b, int32_t* c, int32_t* d, const void* g, int64_t n) {
  accumulate_body<D>(a, b, c, d, g, n);
}
#else
template <DType D>
void accumulate_avx2(float* a, float* b, int32_t* c, int32_t* d, const void* g, int64_t n) {
  accumulate_body<D>(a, b, c, d, g, n);
}
template <DType D>
void accumulate_avx512(float* a, float* b, int32_t* c, int32_t* d, const void* g, int64_t n) {
  accumulate_body<D>(a, b, c, d, g, n);
}
#endif

template <DType D>
AccumulateFn pick(CpuPath path) {
  return pick_for_path<AccumulateFn>(path, accumulate_scalar<D>, accumulate_avx2<D>, accumulate_avx512<D>);
}

}  // namespace

void accumulate(float* g_sum, float* sq_sum, int32_t* pos_count, int32_t* neg_count, const ConstSpan& grad) {
  const CpuPath path = active_path();
  const AccumulateFn fn = grad.dtype == DType::F32   ? pick<DType::F32>(path)
                          : grad.dtype == DType::F16 ? pick<DType::F16>(path)
                                                     : pick<DType::BF16>(path);
  const std::size_t esize = dtype_size(grad.dtype);
  const char* gbytes = static_cast<const char*>(grad.data);
  parallel_for(0, grad.numel, int64_t(1) << 15, [&](int64_t b, int64_t e) {
    fn(g_sum + b, sq_sum + b, pos_count + b, neg_count + b, gbytes + b * esize, e - b);
  });
}

}  // namespace kernels
}  // namespace mft
