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
    const float u = lr32 * grad;
    const float n = theta - u;
    const float an = std::fabs(n), at = std::fabs(theta);
    const bool det = an < at;
    const float s = R == RankBy::Shrink ? at - an : std::fabs(u);
    return static_cast<double>(bits_to_float(float_to_bits(s) & (det ? ~0u : 0u)));
  }
}

double score_one(float theta, float grad, const ScoreSpec& spec);

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

// The per-path functions one op call uses, chosen once at its start.
struct ScoreKernels {
  ScoreBlockFn score = nullptr;
  FindGeFn find_ge = nullptr;
  CpuPath path = CpuPath::Scalar;
  float lr32 = 0.f;
  bool count_detrimental = true;  // fill BlockStats::n_detrimental (a second, cache-resident loop)
};
ScoreKernels score_kernels(const ScoreSpec& spec, CpuPath path);

// Scores theta/grad elements [begin, end) (local indices) in blocks of kScoreBlock, calling
// fn(block_begin, scores, n, stats) for each block in order. With `direct_out`, scores are written at
// direct_out[block_begin...] (and `scores` points there); otherwise into an internal buffer.
template <class F>
void score_range(const ScoreKernels& kern, const ConstSpan& theta, const ConstSpan& grad, int64_t begin,
                 int64_t end, double* direct_out, const F& fn) {
  alignas(64) float tbuf[kScoreBlock];
  alignas(64) float gbuf[kScoreBlock];
  alignas(64) double sbuf[kScoreBlock];
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
    double* out = direct_out ? direct_out + b : sbuf;
    const BlockStats st = kern.score(t, g, n, kern.lr32, kern.count_detrimental, out);
    fn(b, static_cast<const double*>(out), static_cast<int>(n), st);
  }
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
