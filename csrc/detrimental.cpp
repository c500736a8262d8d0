#include "detrimental.h"

#include <atomic>
#include <cfloat>
#include <cstdio>
#include <stdexcept>

#include "mft/parallel.h"

namespace mft {
namespace kernels {

namespace {
std::string format_double(double x) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}
}  // namespace

ScoreSpec make_score_spec(double lr, const std::string& rank_by, bool literal) {
  ScoreSpec spec;
  // Reject before the cast: double -> float of an out-of-range value is undefined behaviour.
  if (!(lr > 0.0) || !(lr <= static_cast<double>(FLT_MAX) * (1.0 + 0x1p-25))) {
    throw std::invalid_argument("lr=" + format_double(lr) + " must be a finite number > 0");
  }
  spec.lr = static_cast<float>(lr);
  if (!(spec.lr > 0.f) || float_nonfinite(spec.lr)) {
    throw std::invalid_argument("lr=" + format_double(lr) +
                                " must stay finite and > 0 when rounded to float32");
  }
  if (rank_by == "shrink") {
    spec.rank_by = RankBy::Shrink;
  } else if (rank_by == "update") {
    spec.rank_by = RankBy::Update;
  } else {
    throw std::invalid_argument("rank_by='" + rank_by + "' must be 'shrink' or 'update'");
  }
  spec.literal = literal;
  return spec;
}

double score_one(float theta, float grad, const ScoreSpec& spec) {
  if (spec.literal)
    return spec.rank_by == RankBy::Shrink ? score_one<RankBy::Shrink, true>(theta, grad, spec.lr)
                                          : score_one<RankBy::Update, true>(theta, grad, spec.lr);
  return spec.rank_by == RankBy::Shrink ? score_one<RankBy::Shrink, false>(theta, grad, spec.lr)
                                        : score_one<RankBy::Update, false>(theta, grad, spec.lr);
}

namespace {

// Plain loop, compiled once per path (the wrappers below); GCC vectorizes it for each target. The
// reductions are integer ones, so they do not depend on the vector width.
template <RankBy R, bool L>
MFT_INLINE BlockStats score_block_body(const float* __restrict theta, const float* __restrict grad, int64_t n,
                                       float lr32, bool count, double* __restrict out) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float t = theta[i], g = grad[i];
    out[i] = score_one<R, L>(t, g, lr32);
    bad |= ((float_to_bits(t) & 0x7f800000u) == 0x7f800000u) | ((float_to_bits(g) & 0x7f800000u) == 0x7f800000u);
  }
  // A second loop over the (cache-resident) scores: GCC 12 does not vectorize the count in the loop above.
  int64_t ndet = 0;
  if (count)
    for (int64_t i = 0; i < n; ++i) ndet += out[i] > 0.0 ? 1 : 0;
  BlockStats st;
  st.n_detrimental = ndet;
  st.nonfinite = bad != 0;
  return st;
}

template <RankBy R, bool L>
BlockStats score_block_scalar(const float* theta, const float* grad, int64_t n, float lr32, bool count, double* out) {
  return score_block_body<R, L>(theta, grad, n, lr32, count, out);
}
#if MFT_X86
template <RankBy R, bool L>
MFT_TARGET_AVX2 BlockStats score_block_avx2(const float* theta, const float* grad, int64_t n, float lr32,
                                            bool count, double* out) {
  return score_block_body<R, L>(theta, grad, n, lr32, count, out);
}
template <RankBy R, bool L>
MFT_TARGET_AVX512 BlockStats score_block_avx512(const float* theta, const float* grad, int64_t n, float lr32,
                                                bool count, double* out) {
  return score_block_body<R, L>(theta, grad, n, lr32, count, out);
}
#else
template <RankBy R, bool L>
BlockStats score_block_avx2(const float* theta, const float* grad, int64_t n, float lr32, bool count, double* out) {
  return score_block_body<R, L>(theta, grad, n, lr32, count, out);
}
template <RankBy R, bool L>
BlockStats score_block_avx512(const float* theta, const float* grad, int64_t n, float lr32, bool count, double* out) {
  return score_block_body<R, L>(theta, grad, n, lr32, count, out);
}
#endif

template <RankBy R, bool L>
ScoreBlockFn pick_score(CpuPath path) {
  return pick_for_path<ScoreBlockFn>(path, score_block_scalar<R, L>, score_block_avx2<R, L>,
                                     score_block_avx512<R, L>);
}

}  // namespace

ScoreKernels score_kernels(const ScoreSpec& spec, CpuPath path) {
  ScoreKernels k;
  k.path = path;
  k.lr32 = spec.lr;
  k.find_ge = find_ge_fn(path);
  if (spec.literal)
    k.score = spec.rank_by == RankBy::Shrink ? pick_score<RankBy::Shrink, true>(path)
                                             : pick_score<RankBy::Update, true>(path);
  else
    k.score = spec.rank_by == RankBy::Shrink ? pick_score<RankBy::Shrink, false>(path)
                                             : pick_score<RankBy::Update, false>(path);
  return k;
}

void throw_first_nonfinite(const std::vector<ConstSpan>& thetas, const std::vector<ConstSpan>& grads,
                           bool single) {
  for (std::size_t t = 0; t < thetas.size(); ++t) {
    const int64_t n = thetas[t].numel;
    for (int64_t i = 0; i < n; ++i) {
      if (float_nonfinite(load_float(thetas[t], i)))
        throw NonFiniteError(single ? "theta" : "thetas", single ? -1 : static_cast<int64_t>(t), i);
      if (float_nonfinite(load_float(grads[t], i)))
        throw NonFiniteError(single ? "grad" : "grads", single ? -1 : static_cast<int64_t>(t), i);
    }
  }
}

int64_t pass_chunk_size(int64_t total) {
  // Large enough that per-chunk bookkeeping is noise, small enough to balance 2..64 threads.
  const int64_t per_thread = total / (8 * std::max(1, max_threads()));
  return std::max<int64_t>(4 * kScoreBlock, std::min<int64_t>(int64_t(1) << 16, per_thread));
}

void detrimental_score(const ConstSpan& theta, const ConstSpan& grad, const ScoreSpec& spec, double* out) {
  if (theta.numel != grad.numel) throw std::invalid_argument("theta and grad must have the same numel");
  ScoreKernels kern = score_kernels(spec, active_path());
  kern.count_detrimental = false;
  std::atomic<bool> bad{false};
  parallel_for(0, theta.numel, int64_t(1) << 15, [&](int64_t b, int64_t e) {
    bool local_bad = false;
    score_range(kern, theta, grad, b, e, out, [&](int64_t, const double*, int, const BlockStats& st) {
      local_bad |= st.nonfinite;
    });
    if (local_bad) bad.store(true, std::memory_order_relaxed);
  });
  if (bad.load()) throw_first_nonfinite({theta}, {grad}, /*single=*/true);
}

void detrimental_count(const std::vector<ConstSpan>& thetas, const std::vector<ConstSpan>& grads,
                       const ScoreSpec& spec, int64_t* counts) {
  if (thetas.size() != grads.size()) throw std::invalid_argument("thetas and grads must have the same length");
  std::vector<int64_t> numels(thetas.size());
  for (std::size_t t = 0; t < thetas.size(); ++t) {
    if (thetas[t].numel != grads[t].numel)
      throw std::invalid_argument("thetas[" + std::to_string(t) + "] and grads[" + std::to_string(t) +
                                  "] must have the same numel");
    numels[t] = thetas[t].numel;
    counts[t] = 0;
  }
  const FlatLayout layout(numels);
  const int64_t total = layout.total();
  if (total == 0) return;
  const ScoreKernels kern = score_kernels(spec, active_path());
  const int64_t chunk = pass_chunk_size(total);
  const int64_t n_chunks = (total + chunk - 1) / chunk;
  const int nt = parallel_threads(n_chunks);
  std::vector<std::vector<int64_t>> per_thread(nt, std::vector<int64_t>(thetas.size(), 0));
  std::atomic<bool> bad{false};
  parallel_for_dynamic(n_chunks, [&](int64_t c, int thread) {
    std::vector<int64_t>& local = per_thread[thread];
    bool local_bad = false;
    for_each_piece(layout, c * chunk, std::min(total, (c + 1) * chunk),
                   [&](int64_t t, int64_t b, int64_t e, int64_t) {
                     int64_t n = 0;
                     score_range(kern, thetas[t], grads[t], b, e, nullptr,
                                 [&](int64_t, const double*, int, const BlockStats& st) {
                                   n += st.n_detrimental;
                                   local_bad |= st.nonfinite;
                                 });
                     local[t] += n;
                   });
    if (local_bad) bad.store(true, std::memory_order_relaxed);
  });
  if (bad.load()) throw_first_nonfinite(thetas, grads, /*single=*/false);
  for (const auto& local : per_thread)
    for (std::size_t t = 0; t < thetas.size(); ++t) counts[t] += local[t];
}

}  // namespace kernels
}  // namespace mft
