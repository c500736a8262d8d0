// The detrimental test and its ranking score (mft::detrimental_score, mft::detrimental_count).
//
// A parameter θ with gradient g is detrimental for learning rate lr when the step θ - lr·g moves it
// toward zero without crossing past -θ. Two arithmetics:
//  - algebraic (default): θ, g, lr (lr already rounded to fp32) widened exactly to double;
//    t = lr·|g| is exact in double (24-bit × 24-bit mantissas). Detrimental iff θ·g > 0 (same sign,
//    both nonzero; −0 counts as 0) and t < 2|θ|. Score "shrink" = min(t, 2|θ| − t) (one rounding),
//    "update" = t.
//  - literal: the original fp32 code: u = fl(lr·g), n = fl(θ − u); detrimental iff |n| < |θ|; score
//    "shrink" = fl(|θ| − |n|), "update" = |u|, widened to double.
// Non-detrimental elements score exactly 0.0; detrimental ones score > 0. NaN/Inf inputs are errors.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cpu_path.h"
#include "mft/kernel_types.h"

namespace mft {
namespace kernels {

enum class RankBy : int { Shrink = 0, Update = 1 };

struct ScoreSpec {
  float lr = 0.f;  // the learning rate rounded once to fp32; > 0
  RankBy rank_by = RankBy::Shrink;
  bool literal = false;
};

// Rounds lr to fp32 and checks it (finite, > 0 after rounding) and rank_by ("shrink" or "update");
// throws std::invalid_argument naming the bad argument.
ScoreSpec make_score_spec(double lr, const std::string& rank_by, bool literal);

// The score of one element: the definition every kernel path reproduces bit for bit. Non-detrimental
// elements are masked to +0.0 with an integer AND rather than `det ? s : 0`: with GCC's default
// -ftrapping-math a select can turn into a branch (no speculative FP ops), which stops vectorization.
// The literal score in fp32 (0.0f where not detrimental); score_one widens it to double.
template <RankBy R>
MFT_INLINE float literal_score32(float theta, float grad, float lr32) {
  const float u = lr32 * grad;
  const float n = theta - u;
  const float an = std::fabs(n), at = std::fabs(theta);
  const bool det = an < at;
  const float s = R == RankBy::Shrink ? at - an : std::fabs(u);
  return bits_to_float(float_to_bits(s) & (det ? ~0u : 0u));
}

template <RankBy R, bool Literal>
MFT_INLINE double score_one(float theta, float grad, float lr32) {
  if (!Literal) {
    const double td = theta, gd = grad;
    const double t = static_cast<double>(lr32) * std::fabs(gd);
    const double two = 2.0 * std::fabs(td);
    const bool det = (td * gd > 0.0) & (t < two);
    const double shrink_alt = two - t;
    const double s = R == RankBy::Shrink ? (shrink_alt < t ? shrink_alt : t) : t;
    return bits_to_double(double_to_bits(s) & (det ? ~uint64_t(0) : uint64_t(0)));
  } else {
    return static_cast<double>(literal_score32<R>(theta, grad, lr32));
  }
}

double score_one(float theta, float grad, const ScoreSpec& spec);

// ---- the fp32 prefilter -----------------------------------------------------------------------------------
// A cheap fp32 upper bound of the score (twice the lanes of the fp64 score), so that passes looking for
// the rare elements with score >= lo compute the exact score only where the bound reaches lo. For
// finite inputs and any score S >= kBoundMinLo: S <= bound * (1 + 2^-21). Proof sketch (round to
// nearest, no FMA): the detrimental test θ·g > 0 is the sign-bit and ≠ 0 test; T = lr·|g| < 2|θ|
// implies fl32(T) <= 2|θ| (monotone rounding, 2|θ| is a float or +inf), so no detrimental element is
// masked. t = fl32(T) is within 2^-24 of T (T >= 2^-100 is far from the subnormals, and the product is
// exact in fp64); 2|θ| − T <= fl32(2|θ| − t)·(1 + 2^-23) + 2^-23·t <= a·(1 + 2^-22) with
// a = fl32(fl32(2|θ| − t) + t·2^-22); the fp64 rounding of 2|θ| − T adds 2^-53. So "shrink"
// S = min(T, fl64(2|θ| − T)) <= min(t, a)·(1 + 2^-21), "update" S = T <= t·(1 + 2^-23). When both
// 2|θ| and t overflow, a is NaN and the bound is t = +inf. "literal" scores are fp32 values: the bound
// is the score itself. Non-detrimental elements bound to +0.0.
constexpr double kBoundMinLo = 0x1p-100, kBoundMaxLo = 0x1p100;

template <RankBy R, bool Literal>
MFT_INLINE float score_bound_one(float theta, float grad, float lr32) {
  if (!Literal) {
    const bool same_sign = ((float_to_bits(theta) ^ float_to_bits(grad)) & 0x80000000u) == 0;
    const bool nonzero = (theta != 0.f) & (grad != 0.f);
    const float t = lr32 * std::fabs(grad);
    const float two = 2.f * std::fabs(theta);
    const bool det = same_sign & nonzero & (t <= two);
    float u = t;
    if (R == RankBy::Shrink) {
      const float a = (two - t) + t * 0x1p-22f;
      u = a < t ? a : t;
    }
    return bits_to_float(float_to_bits(u) & (det ? ~0u : 0u));
  } else {
    return literal_score32<R>(theta, grad, lr32);
  }
}

float score_bound_one(float theta, float grad, const ScoreSpec& spec);

// The float `lo_f` for a double lo in [kBoundMinLo, kBoundMaxLo]: every element with score >= lo has
// bound >= lo_f (lo·(1 − 2^-20) rounded down to a float).
float bound_threshold(double lo);

// Whether a pass looking for score >= lo may use the prefilter.
inline bool bound_applies(double lo) { return lo >= kBoundMinLo && lo <= kBoundMaxLo; }

// ---- block scoring, shared with select_topk ------------------------------------------------------------
constexpr int kScoreBlock = 512;

struct BlockStats {
  int64_t n_detrimental = 0;
  bool nonfinite = false;
};

// out[i] = score(theta[i], grad[i]) for i < n; flags any Inf/NaN in theta or grad, and counts the
// detrimental elements when `count` is set (n_detrimental is 0 otherwise).
using ScoreBlockFn = BlockStats (*)(const float* theta, const float* grad, int64_t n, float lr32, bool count,
                                    double* out);

// Writes to pos[0..c) the positions i < n, ascending, whose score bound (score_bound_one) is >= lo_f,
// and returns c; pos needs room for n + 16. Sets *nonfinite when theta or grad holds an Inf/NaN (else
// leaves it). The vector paths compute the same bound with intrinsics; which positions they return
// may differ from the scalar path's only where the exact score decides anyway (both are conservative).
using FilterBlockFn = int (*)(const float* theta, const float* grad, int n, float lr32, float lo_f, int32_t* pos,
                              bool* nonfinite);

// The detrimental count of theta/grad[0..n) and the Inf/NaN flag, without scores. Decided in fp32
// (the literal test is fp32 by definition; the algebraic one differs from fp32 only where
// fl32(lr·|g|) == 2|θ|, and blocks with such an element are recounted in fp64).
using CountBlockFn = BlockStats (*)(const float* theta, const float* grad, int64_t n, float lr32);

// The per-path functions one op call uses, chosen once at its start.
struct ScoreKernels {
  ScoreBlockFn score = nullptr;
  FilterBlockFn filter = nullptr;
  CountBlockFn count = nullptr;
  FindGeFn find_ge = nullptr;
  CpuPath path = CpuPath::Scalar;
  float lr32 = 0.f;
  bool count_detrimental = true;  // fill BlockStats::n_detrimental (a second, cache-resident loop)
};
ScoreKernels score_kernels(const ScoreSpec& spec, CpuPath path);

// Calls fn(block_begin, theta, grad, n) for theta/grad elements [begin, end) (local indices) in blocks
// of kScoreBlock, in order, with both as floats (fp16/bf16 converted into internal buffers).
template <class F>
void float_blocks(const ScoreKernels& kern, const ConstSpan& theta, const ConstSpan& grad, int64_t begin,
                  int64_t end, const F& fn) {
  alignas(64) float tbuf[kScoreBlock];
  alignas(64) float gbuf[kScoreBlock];
  const ConvertFn tconv = theta.dtype == DType::F32 ? nullptr : convert_fn(kern.path, theta.dtype);
  const ConvertFn gconv = grad.dtype == DType::F32 ? nullptr : convert_fn(kern.path, grad.dtype);
  for (int64_t b = begin; b < end; b += kScoreBlock) {
    const int64_t n = std::min<int64_t>(kScoreBlock, end - b);
    const float* t;
    const float* g;
    if (tconv) {
      tconv(static_cast<const uint16_t*>(theta.data) + b, n, tbuf);
      t = tbuf;
    } else {
      t = static_cast<const float*>(theta.data) + b;
    }
    if (gconv) {
      gconv(static_cast<const uint16_t*>(grad.data) + b, n, gbuf);
      g = gbuf;
    } else {
      g = static_cast<const float*>(grad.data) + b;
    }
    fn(b, t, g, static_cast<int>(n));
  }
}

// Scores theta/grad elements [begin, end) (local indices) in blocks of kScoreBlock, calling
// fn(block_begin, scores, n, stats) for each block in order. With `direct_out`, scores are written at
// direct_out[block_begin...] (and `scores` points there); otherwise into an internal buffer.
template <class F>
void score_range(const ScoreKernels& kern, const ConstSpan& theta, const ConstSpan& grad, int64_t begin,
                 int64_t end, double* direct_out, const F& fn) {
  alignas(64) double sbuf[kScoreBlock];
  float_blocks(kern, theta, grad, begin, end, [&](int64_t b, const float* t, const float* g, int n) {
    double* out = direct_out ? direct_out + b : sbuf;
    const BlockStats st = kern.score(t, g, n, kern.lr32, kern.count_detrimental, out);
    fn(b, static_cast<const double*>(out), n, st);
  });
}

// Finds the first Inf/NaN in flat order (theta before grad at the same element) and throws
// NonFiniteError naming it; returns if there is none. With single = true the names are "theta"/"grad"
// and the tensor position is omitted.
void throw_first_nonfinite(const std::vector<ConstSpan>& thetas, const std::vector<ConstSpan>& grads,
                           bool single);

// ---- the ops --------------------------------------------------------------------------------------------

// out[i] = score(theta[i], grad[i]) for i < theta.numel (= grad.numel). One pass, no extra memory.
// Throws NonFiniteError ("theta"/"grad") on Inf/NaN.
void detrimental_score(const ConstSpan& theta, const ConstSpan& grad, const ScoreSpec& spec, double* out);

// counts[t] = number of detrimental elements of thetas[t]/grads[t]. One pass over all tensors.
// Throws NonFiniteError ("thetas[t]"/"grads[t]") on Inf/NaN.
void detrimental_count(const std::vector<ConstSpan>& thetas, const std::vector<ConstSpan>& grads,
                       const ScoreSpec& spec, int64_t* counts);

// Chunk size (elements) for parallel passes over `total` flat elements.
int64_t pass_chunk_size(int64_t total);

}  // namespace kernels
}  // namespace mft
