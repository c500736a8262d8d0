#include "detrimental.h"

#include <atomic>
#include <cfloat>
#include <cstdio>
#include <stdexcept>

#include "mft/parallel.h"

#if MFT_X86
#include <immintrin.h>
#endif

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

float score_bound_one(float theta, float grad, const ScoreSpec& spec) {
  if (spec.literal)
    return spec.rank_by == RankBy::Shrink ? score_bound_one<RankBy::Shrink, true>(theta, grad, spec.lr)
                                          : score_bound_one<RankBy::Update, true>(theta, grad, spec.lr);
  return spec.rank_by == RankBy::Shrink ? score_bound_one<RankBy::Shrink, false>(theta, grad, spec.lr)
                                        : score_bound_one<RankBy::Update, false>(theta, grad, spec.lr);
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

// The algebraic count of theta/grad[0..n) in fp64, for blocks the fp32 decision leaves ambiguous.
uint32_t recount_exact(const float* theta, const float* grad, int64_t n, float lr32) {
  uint32_t cnt = 0;
  for (int64_t i = 0; i < n; ++i) cnt += score_one<RankBy::Shrink, false>(theta[i], grad[i], lr32) > 0.0 ? 1u : 0u;
  return cnt;
}

MFT_INLINE bool nonfinite_pair(float t, float g) {
  return ((float_to_bits(t) & 0x7f800000u) == 0x7f800000u) | ((float_to_bits(g) & 0x7f800000u) == 0x7f800000u);
}

// The definitions the vector kernels below reproduce (also their tails).
template <RankBy R, bool L>
int filter_block_scalar(const float* theta, const float* grad, int n, float lr32, float lo_f, int32_t* pos,
                        bool* nonfinite) {
  // Bounds first (a loop the compiler vectorizes), then the compaction.
  alignas(64) float u[kScoreBlock];
  uint32_t bad = 0;
  int c = 0;
  for (int b = 0; b < n; b += kScoreBlock) {
    const int m = std::min(kScoreBlock, n - b);
    for (int i = 0; i < m; ++i) {
      u[i] = score_bound_one<R, L>(theta[b + i], grad[b + i], lr32);
      bad |= nonfinite_pair(theta[b + i], grad[b + i]);
    }
    for (int i = 0; i < m; ++i) {
      pos[c] = b + i;
      c += u[i] >= lo_f;
    }
  }
  if (bad) *nonfinite = true;
  return c;
}

template <bool L>
BlockStats count_block_scalar(const float* theta, const float* grad, int64_t n, float lr32) {
  uint32_t bad = 0, cnt = 0, ambiguous = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float t = theta[i], g = grad[i];
    if (L) {
      cnt += literal_score32<RankBy::Shrink>(t, g, lr32) > 0.f ? 1u : 0u;
    } else {
      // sign(θ) = sign(g), both nonzero: exactly the fp64 test θ·g > 0 (no product, so no underflow).
      const uint32_t same = (((float_to_bits(t) ^ float_to_bits(g)) >> 31) ^ 1u) & (t != 0.f) & (g != 0.f);
      const float u = lr32 * std::fabs(g);
      const float two = 2.f * std::fabs(t);
      // fl32 is monotone and 2|θ| is a float (or +inf): u < two ⇒ T < 2|θ|, u > two ⇒ T > 2|θ|.
      cnt += same & (u < two);
      ambiguous |= same & (u == two);
    }
    bad |= nonfinite_pair(t, g);
  }
  if (!L && ambiguous) cnt = recount_exact(theta, grad, n, lr32);
  BlockStats st;
  st.n_detrimental = cnt;
  st.nonfinite = bad != 0;
  return st;
}

#if MFT_X86
// GCC 12 reports its own _mm512_undefined_*() inside some intrinsics as maybe-uninitialized.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
MFT_TARGET_AVX512 inline __m512 abs512(__m512 x) {
  return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff)));
}
MFT_TARGET_AVX2 inline __m256 abs256(__m256 x) {
  return _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7fffffff)));
}

// The fp32 decisions of the prefilter and the count, 16 lanes (AVX-512) or 8 (AVX2) at a time, with the
// mask logic in mask registers / sign bits (GCC's vectorization of the plain loops above reloads the
// inputs and widens every bool). Integer forms: |x| is the bits AND 0x7fffffff; x != 0 is |x| bits != 0
// (subnormals are nonzero); same sign is (θ XOR g) >= 0 as int32; Inf/NaN is |x| bits >= 0x7f800000.
// Every float operation is the one score_bound_one / count_block_scalar performs, in the same order.

// The vector filters compute the bound with fewer operations than score_bound_one, each step keeping it
// an upper bound of the score (so the exact score still decides every kept element):
//  - a = 2|θ| − t·(1 − 2^-22) with one rounding (FMA): 2|θ| − T <= 2|θ| − t + 2^-23·t <= a·(1 + 2^-23).
//  - no θ != 0 / g != 0 tests: a zero θ or g gives bound 0, below every lo_f > 0.
//  - "shrink" drops the t <= 2|θ| test: for t > 2|θ| the bound a < 2^-22·t only admits a rare element
//    whose exact score (0) then drops it. "update" (bound t) keeps it.
template <RankBy R, bool L>
MFT_TARGET_AVX512 int filter_block_avx512(const float* theta, const float* grad, int n, float lr32, float lo_f,
                                          int32_t* pos, bool* nonfinite) {
  const __m512 vlr = _mm512_set1_ps(lr32), vlo = _mm512_set1_ps(lo_f), vc = _mm512_set1_ps(1.f - 0x1p-22f);
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), minus1 = _mm512_set1_epi32(-1);
  const __m512i sixteen = _mm512_set1_epi32(16);
  __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i maxbits = _mm512_setzero_si512();
  int c = 0, i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i tb = _mm512_loadu_si512(theta + i), gb = _mm512_loadu_si512(grad + i);
    const __m512i atb = _mm512_and_si512(tb, abs_mask), agb = _mm512_and_si512(gb, abs_mask);
    maxbits = _mm512_max_epu32(maxbits, _mm512_max_epu32(atb, agb));
    const __m512 at = _mm512_castsi512_ps(atb);
    __mmask16 k;
    if (!L) {
      const __m512 t = _mm512_mul_ps(vlr, _mm512_castsi512_ps(agb));
      k = _mm512_cmpgt_epi32_mask(_mm512_xor_si512(tb, gb), minus1);  // same sign
      __m512 u = t;
      if (R == RankBy::Shrink) {
        const __m512 a = _mm512_fnmadd_ps(t, vc, _mm512_add_ps(at, at));
        u = _mm512_min_ps(a, t);  // a < t ? a : t, also for NaN a
      } else {
        k = _mm512_mask_cmp_ps_mask(k, t, _mm512_add_ps(at, at), _CMP_LE_OQ);
      }
      k = _mm512_mask_cmp_ps_mask(k, u, vlo, _CMP_GE_OQ);
    } else {
      const __m512 u = _mm512_mul_ps(vlr, _mm512_castsi512_ps(gb));
      const __m512 an = abs512(_mm512_sub_ps(_mm512_castsi512_ps(tb), u));
      k = _mm512_cmp_ps_mask(an, at, _CMP_LT_OQ);
      const __m512 sc = R == RankBy::Shrink ? _mm512_sub_ps(at, an) : abs512(u);
      k = _mm512_mask_cmp_ps_mask(k, sc, vlo, _CMP_GE_OQ);
    }
    // Register-form compress then a plain store: compress-to-memory is slow on some cores (Zen 4).
    _mm512_storeu_si512(pos + c, _mm512_maskz_compress_epi32(k, idx));
    c += __builtin_popcount(static_cast<unsigned>(k));
    idx = _mm512_add_epi32(idx, sixteen);
  }
  if (_mm512_cmpge_epu32_mask(maxbits, _mm512_set1_epi32(0x7f800000))) *nonfinite = true;
  if (i < n) {
    const int tail = filter_block_scalar<R, L>(theta + i, grad + i, n - i, lr32, lo_f, pos + c, nonfinite);
    for (int j = 0; j < tail; ++j) pos[c + j] += i;
    c += tail;
  }
  return c;
}

template <RankBy R, bool L>
MFT_TARGET_AVX2 int filter_block_avx2(const float* theta, const float* grad, int n, float lr32, float lo_f,
                                      int32_t* pos, bool* nonfinite) {
  const __m256 vlr = _mm256_set1_ps(lr32), vlo = _mm256_set1_ps(lo_f), vc = _mm256_set1_ps(1.f - 0x1p-22f);
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  __m256i maxbits = _mm256_setzero_si256();
  int c = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i tb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(theta + i));
    const __m256i gb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(grad + i));
    const __m256i atb = _mm256_and_si256(tb, abs_mask), agb = _mm256_and_si256(gb, abs_mask);
    maxbits = _mm256_max_epu32(maxbits, _mm256_max_epu32(atb, agb));
    const __m256 at = _mm256_castsi256_ps(atb);
    __m256 keep;  // lanes kept have the sign bit set
    if (!L) {
      const __m256 t = _mm256_mul_ps(vlr, _mm256_castsi256_ps(agb));
      const __m256 two = _mm256_add_ps(at, at);
      if (R == RankBy::Shrink) {
        const __m256 u = _mm256_min_ps(_mm256_fnmadd_ps(t, vc, two), t);  // a < t ? a : t, also for NaN a
        keep = _mm256_cmp_ps(u, vlo, _CMP_GE_OQ);
      } else {
        keep = _mm256_and_ps(_mm256_cmp_ps(t, two, _CMP_LE_OQ), _mm256_cmp_ps(t, vlo, _CMP_GE_OQ));
      }
      keep = _mm256_andnot_ps(_mm256_castsi256_ps(_mm256_xor_si256(tb, gb)), keep);  // same sign
    } else {
      const __m256 u = _mm256_mul_ps(vlr, _mm256_castsi256_ps(gb));
      const __m256 an = abs256(_mm256_sub_ps(_mm256_castsi256_ps(tb), u));
      const __m256 sc = R == RankBy::Shrink ? _mm256_sub_ps(at, an) : abs256(u);
      keep = _mm256_and_ps(_mm256_cmp_ps(an, at, _CMP_LT_OQ), _mm256_cmp_ps(sc, vlo, _CMP_GE_OQ));
    }
    const int m = _mm256_movemask_ps(keep);
    const __m256i p = _mm256_add_epi32(
        _mm256_load_si256(reinterpret_cast<const __m256i*>(kCompactLut.idx[m])), _mm256_set1_epi32(i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(pos + c), p);
    c += __builtin_popcount(static_cast<unsigned>(m));
  }
  if (!_mm256_testz_si256(_mm256_cmpgt_epi32(maxbits, _mm256_set1_epi32(0x7f7fffff)),
                          _mm256_set1_epi32(-1)))
    *nonfinite = true;
  if (i < n) {
    const int tail = filter_block_scalar<R, L>(theta + i, grad + i, n - i, lr32, lo_f, pos + c, nonfinite);
    for (int j = 0; j < tail; ++j) pos[c + j] += i;
    c += tail;
  }
  return c;
}

template <bool L>
MFT_TARGET_AVX512 BlockStats count_block_avx512(const float* theta, const float* grad, int64_t n, float lr32) {
  const __m512 vlr = _mm512_set1_ps(lr32), vtwo = _mm512_set1_ps(2.f);
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), exp_mask = _mm512_set1_epi32(0x7f800000);
  const __m512i minus1 = _mm512_set1_epi32(-1);
  __mmask16 bad = 0, ambiguous = 0;
  uint32_t cnt = 0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i tb = _mm512_loadu_si512(theta + i), gb = _mm512_loadu_si512(grad + i);
    const __m512i atb = _mm512_and_si512(tb, abs_mask), agb = _mm512_and_si512(gb, abs_mask);
    bad |= _mm512_cmpge_epu32_mask(_mm512_max_epu32(atb, agb), exp_mask);
    const __m512 at = _mm512_castsi512_ps(atb);
    if (!L) {
      const __m512 t = _mm512_mul_ps(vlr, _mm512_castsi512_ps(agb));
      const __m512 two = _mm512_mul_ps(vtwo, at);
      __mmask16 k = _mm512_test_epi32_mask(atb, atb);
      k = _mm512_mask_test_epi32_mask(k, agb, agb);
      k = _mm512_mask_cmpgt_epi32_mask(k, _mm512_xor_si512(tb, gb), minus1);
      cnt += __builtin_popcount(static_cast<unsigned>(_mm512_mask_cmp_ps_mask(k, t, two, _CMP_LT_OQ)));
      ambiguous |= _mm512_mask_cmp_ps_mask(k, t, two, _CMP_EQ_OQ);
    } else {
      const __m512 u = _mm512_mul_ps(vlr, _mm512_castsi512_ps(gb));
      const __m512 an = abs512(_mm512_sub_ps(_mm512_castsi512_ps(tb), u));
      cnt += __builtin_popcount(static_cast<unsigned>(_mm512_cmp_ps_mask(an, at, _CMP_LT_OQ)));
    }
  }
  if (ambiguous) cnt = recount_exact(theta, grad, i, lr32);
  BlockStats st = count_block_scalar<L>(theta + i, grad + i, n - i, lr32);
  st.n_detrimental += cnt;
  st.nonfinite |= bad != 0;
  return st;
}

template <bool L>
MFT_TARGET_AVX2 BlockStats count_block_avx2(const float* theta, const float* grad, int64_t n, float lr32) {
  const __m256 vlr = _mm256_set1_ps(lr32), vtwo = _mm256_set1_ps(2.f), zero = _mm256_setzero_ps();
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), max_finite = _mm256_set1_epi32(0x7f7fffff);
  __m256i bad = _mm256_setzero_si256();
  __m256 ambiguous = _mm256_setzero_ps();
  uint32_t cnt = 0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i tb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(theta + i));
    const __m256i gb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(grad + i));
    const __m256i atb = _mm256_and_si256(tb, abs_mask), agb = _mm256_and_si256(gb, abs_mask);
    bad = _mm256_or_si256(bad, _mm256_cmpgt_epi32(_mm256_max_epu32(atb, agb), max_finite));
    const __m256 at = _mm256_castsi256_ps(atb);
    if (!L) {
      const __m256 ag = _mm256_castsi256_ps(agb);
      const __m256 t = _mm256_mul_ps(vlr, ag);
      const __m256 two = _mm256_mul_ps(vtwo, at);
      __m256 same = _mm256_and_ps(_mm256_cmp_ps(at, zero, _CMP_NEQ_OQ), _mm256_cmp_ps(ag, zero, _CMP_NEQ_OQ));
      same = _mm256_andnot_ps(_mm256_castsi256_ps(_mm256_xor_si256(tb, gb)), same);  // sign bit: same sign
      cnt += __builtin_popcount(static_cast<unsigned>(_mm256_movemask_ps(_mm256_and_ps(same, _mm256_cmp_ps(t, two, _CMP_LT_OQ)))));
      ambiguous = _mm256_or_ps(ambiguous, _mm256_and_ps(same, _mm256_cmp_ps(t, two, _CMP_EQ_OQ)));
    } else {
      const __m256 u = _mm256_mul_ps(vlr, _mm256_castsi256_ps(gb));
      const __m256 an = abs256(_mm256_sub_ps(_mm256_castsi256_ps(tb), u));
      cnt += __builtin_popcount(static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(an, at, _CMP_LT_OQ))));
    }
  }
  if (_mm256_movemask_ps(ambiguous)) cnt = recount_exact(theta, grad, i, lr32);
  BlockStats st = count_block_scalar<L>(theta + i, grad + i, n - i, lr32);
  st.n_detrimental += cnt;
  st.nonfinite |= !_mm256_testz_si256(bad, bad);
  return st;
}
#pragma GCC diagnostic pop
#else
template <RankBy R, bool L>
int filter_block_avx2(const float* theta, const float* grad, int n, float lr32, float lo_f, int32_t* pos,
                      bool* nonfinite) {
  return filter_block_scalar<R, L>(theta, grad, n, lr32, lo_f, pos, nonfinite);
}
template <RankBy R, bool L>
int filter_block_avx512(const float* theta, const float* grad, int n, float lr32, float lo_f, int32_t* pos,
                        bool* nonfinite) {
  return filter_block_scalar<R, L>(theta, grad, n, lr32, lo_f, pos, nonfinite);
}
template <bool L>
BlockStats count_block_avx2(const float* theta, const float* grad, int64_t n, float lr32) {
  return count_block_scalar<L>(theta, grad, n, lr32);
}
template <bool L>
BlockStats count_block_avx512(const float* theta, const float* grad, int64_t n, float lr32) {
  return count_block_scalar<L>(theta, grad, n, lr32);
}
#endif

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

template <RankBy R, bool L>
FilterBlockFn pick_filter(CpuPath path) {
  return pick_for_path<FilterBlockFn>(path, filter_block_scalar<R, L>, filter_block_avx2<R, L>,
                                      filter_block_avx512<R, L>);
}

template <bool L>
CountBlockFn pick_count(CpuPath path) {
  return pick_for_path<CountBlockFn>(path, count_block_scalar<L>, count_block_avx2<L>, count_block_avx512<L>);
}

}  // namespace

float bound_threshold(double lo) {
  const double x = lo * (1.0 - 0x1p-20);
  float f = static_cast<float>(x);
  if (static_cast<double>(f) > x) f = std::nextafter(f, 0.f);
  return f;
}

ScoreKernels score_kernels(const ScoreSpec& spec, CpuPath path) {
  ScoreKernels k;
  k.path = path;
  k.lr32 = spec.lr;
  k.find_ge = find_ge_fn(path);
  if (spec.literal) {
    k.score = spec.rank_by == RankBy::Shrink ? pick_score<RankBy::Shrink, true>(path)
                                             : pick_score<RankBy::Update, true>(path);
    k.filter = spec.rank_by == RankBy::Shrink ? pick_filter<RankBy::Shrink, true>(path)
                                              : pick_filter<RankBy::Update, true>(path);
  } else {
    k.score = spec.rank_by == RankBy::Shrink ? pick_score<RankBy::Shrink, false>(path)
                                             : pick_score<RankBy::Update, false>(path);
    k.filter = spec.rank_by == RankBy::Shrink ? pick_filter<RankBy::Shrink, false>(path)
                                              : pick_filter<RankBy::Update, false>(path);
  }
  k.count = spec.literal ? pick_count<true>(path) : pick_count<false>(path);
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
                     float_blocks(kern, thetas[t], grads[t], b, e,
                                  [&](int64_t, const float* th, const float* g, int nb) {
                                    const BlockStats st = kern.count(th, g, nb, kern.lr32);
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
