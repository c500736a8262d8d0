// The detrimental test and score: hand-worked cases, every path/dtype/mode against score_one bit for
// bit, counts, non-finite errors, argument errors.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "cpu_path.h"
#include "detrimental.h"
#include "mft/parallel.h"

using namespace mft;
using namespace mft::kernels;

namespace {

ScoreSpec spec(float lr, RankBy r, bool literal) {
  ScoreSpec s;
  s.lr = lr;
  s.rank_by = r;
  s.literal = literal;
  return s;
}

void hand_cases() {
  const ScoreSpec sh = spec(0.5f, RankBy::Shrink, false), up = spec(0.5f, RankBy::Update, false);
  CHECK(score_one(1.f, 1.f, sh) == 0.5);    // t = 0.5 < 2: shrink min(0.5, 1.5)
  CHECK(score_one(1.f, 3.f, sh) == 0.5);    // t = 1.5 < 2: min(1.5, 0.5)
  CHECK(score_one(1.f, 3.f, up) == 1.5);
  CHECK(score_one(1.f, 4.f, sh) == 0.0);    // t = 2 = 2|θ|: lands on -θ, not detrimental
  CHECK(score_one(1.f, 5.f, sh) == 0.0);    // overshoots
  CHECK(score_one(-1.f, -1.f, sh) == 0.5);  // negative side
  CHECK(score_one(1.f, -1.f, sh) == 0.0);   // grows
  CHECK(score_one(0.f, 1.f, sh) == 0.0);
  CHECK(score_one(-0.f, -1.f, sh) == 0.0);  // -0 is 0
  CHECK(score_one(1.f, 0.f, sh) == 0.0);
  CHECK(score_one(1.f, -0.f, up) == 0.0);
  const double s = score_one(1e-30f, 1e-30f, up);  // no underflow in double
  CHECK(s > 0.0 && s == 0.5 * static_cast<double>(1e-30f));
  CHECK(!std::signbit(score_one(-1.f, 1.f, sh)));  // zeros are +0.0
  // literal: fp32 arithmetic
  const ScoreSpec lsh = spec(0.5f, RankBy::Shrink, true), lup = spec(0.5f, RankBy::Update, true);
  CHECK(score_one(1.f, 1.f, lsh) == 0.5);
  CHECK(score_one(1.f, 3.f, lup) == 1.5);
  CHECK(score_one(1.f, 4.f, lsh) == 0.0);
  CHECK(score_one(1.f, 1e-8f, lsh) == 0.0);  // 1 - 5e-9 rounds to 1 in fp32: not detrimental
  CHECK(score_one(1.f, 1e-8f, sh) > 0.0);    // but it is algebraically
  CHECK(score_one(-0.f, -1.f, lsh) == 0.0);
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// Random fp32 values with zeros, signed zeros, subnormals and exact ties, stored as `d`.
std::vector<uint16_t> halves_of(const std::vector<float>& v, DType d) {
  std::vector<uint16_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (d == DType::BF16) {
      out[i] = static_cast<uint16_t>(float_to_bits(v[i]) >> 16);
    } else {  // crude fp16 encoding by search is too slow; take random finite halves instead
      uint16_t h = static_cast<uint16_t>((float_to_bits(v[i]) * 2654435761u) >> 16);
      if ((h & 0x7c00) == 0x7c00) h &= 0xbfff;
      out[i] = h;
    }
  }
  return out;
}

std::vector<float> random_values(std::size_t n, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = nd(rng);
    if (i % 29 == 0) v[i] = 0.f;
    if (i % 31 == 0) v[i] = -0.f;
    if (i % 37 == 0) v[i] = 1e-41f;
    if (i % 41 == 0) v[i] = 0.25f;
  }
  return v;
}

void kernels_match_definition() {
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    for (DType dg : {DType::F32, DType::BF16}) {
      const std::size_t n = 10007;
      const std::vector<float> t32 = random_values(n, 1, 0.05f), g32 = random_values(n, 2, 0.02f);
      const std::vector<uint16_t> t16 = halves_of(t32, dt), g16 = halves_of(g32, dg);
      const ConstSpan theta{dt == DType::F32 ? static_cast<const void*>(t32.data()) : t16.data(), dt,
                            static_cast<int64_t>(n)};
      const ConstSpan grad{dg == DType::F32 ? static_cast<const void*>(g32.data()) : g16.data(), dg,
                           static_cast<int64_t>(n)};
      for (bool literal : {false, true}) {
        for (RankBy r : {RankBy::Shrink, RankBy::Update}) {
          const ScoreSpec sp = spec(1.7f, r, literal);
          std::vector<double> expect(n);
          int64_t n_det = 0;
          for (std::size_t i = 0; i < n; ++i) {
            expect[i] = score_one(load_float(theta, i), load_float(grad, i), sp);
            n_det += expect[i] > 0.0;
          }
          CHECK(n_det > 100);
          for (const auto& name : supported_cpu_paths()) {
            set_cpu_path(name);
            for (int threads : {1, 2}) {
              set_max_threads(threads);
              std::vector<double> got(n, -1.0);
              detrimental_score(theta, grad, sp, got.data());
              const std::string what = name + " " + dtype_name(dt) + "/" + dtype_name(dg) +
                                       (literal ? " literal" : "") + (r == RankBy::Shrink ? " shrink" : " update");
              CHECK_MSG(same_bits(got, expect), what);
              // The same data split over a list, with an empty tensor in between.
              const ConstSpan t_a{theta.data, dt, 4000}, g_a{grad.data, dg, 4000};
              const ConstSpan t_b{static_cast<const char*>(theta.data) + 4000 * dtype_size(dt), dt, int64_t(n) - 4000};
              const ConstSpan g_b{static_cast<const char*>(grad.data) + 4000 * dtype_size(dg), dg, int64_t(n) - 4000};
              const ConstSpan empty{theta.data, dt, 0};
              int64_t counts[3] = {-1, -1, -1};
              detrimental_count({t_a, empty, t_b}, {g_a, empty, g_b}, sp, counts);
              int64_t ca = 0;
              for (int i = 0; i < 4000; ++i) ca += expect[i] > 0.0;
              CHECK_MSG(counts[0] == ca && counts[1] == 0 && counts[2] == n_det - ca, what + " counts");
            }
          }
        }
      }
    }
  }
}

// Pairs on and around the boundary lr·|g| = 2|θ| (where fp32 and fp64 disagree), with huge, tiny,
// subnormal and zero values: the fp32 prefilter bound never falls below what an element of score S
// needs (bound >= bound_threshold(S)), and the fp32 count equals the fp64 one, on every path.
void prefilter_bound_and_count() {
  std::mt19937_64 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  int violations = 0, filter_misses = 0, count_mismatches = 0, checked = 0, ambiguous_blocks = 0;
  for (float lr : {1.7f, 3e-5f, 0.5f, 0.1f, 3e30f}) {
    std::vector<float> t, g;
    for (int i = 0; i < 20000; ++i) {
      const int kind = static_cast<int>(rng() % 10);
      float th = kind == 0 ? 1e-41f : kind == 1 ? 3e38f : kind == 2 ? 1.f : kind == 3 ? 1e-30f
               : kind == 4 ? 0.f : nd(rng) * 0.05f;
      if (rng() & 1) th = -th;
      float gr;
      const int gk = static_cast<int>(rng() % 10);
      if (gk < 6) {  // near 2|θ|/lr: fp32 rounding of lr·|g| lands on, below or above 2|θ|
        gr = static_cast<float>(2.0 * std::fabs(static_cast<double>(th)) / lr);
        for (int s = static_cast<int>(rng() % 7) - 3; s != 0; s += s > 0 ? -1 : 1)
          gr = std::nextafter(gr, s > 0 ? INFINITY : 0.f);
        if (std::isinf(gr)) gr = 3e38f;
      } else if (gk < 9) {
        gr = nd(rng) * 0.02f;
      } else {
        gr = 3e38f;
      }
      if (gk < 8 && (rng() % 8) != 0) gr = std::copysign(gr, th);  // mostly same sign
      t.push_back(th);
      g.push_back(gr);
    }
    for (bool literal : {false, true}) {
      for (RankBy r : {RankBy::Shrink, RankBy::Update}) {
        const ScoreSpec sp = spec(lr, r, literal);
        std::vector<double> exact(t.size());
        std::vector<double> los;  // thresholds: scores of some elements, so that elements sit on them
        for (std::size_t i = 0; i < t.size(); ++i) {
          exact[i] = score_one(t[i], g[i], sp);
          if (bound_applies(exact[i])) {
            ++checked;
            violations += !(score_bound_one(t[i], g[i], sp) >= bound_threshold(exact[i]));
            if (i % 997 == 0) los.push_back(exact[i]);
          }
        }
        for (const auto& name : supported_cpu_paths()) {
          set_cpu_path(name);
          const ScoreKernels k = score_kernels(sp, active_path());
          std::vector<int32_t> pos(kScoreBlock + 16);
          for (std::size_t b = 0; b < t.size(); b += kScoreBlock) {
            const int n = static_cast<int>(std::min<std::size_t>(kScoreBlock, t.size() - b));
            // The filter keeps every element whose exact score reaches lo.
            for (double lo : los) {
              bool bad = false;
              const int c = k.filter(t.data() + b, g.data() + b, n, lr, bound_threshold(lo), pos.data(), &bad);
              std::vector<char> kept(n, 0);
              for (int j = 0; j < c; ++j) kept[pos[j]] = 1;
              for (int i = 0; i < n; ++i) filter_misses += exact[b + i] >= lo && !kept[i];
              filter_misses += bad;
            }
            int64_t exact_count = 0;
            bool ambiguous = false;
            for (int i = 0; i < n; ++i) {
              exact_count += exact[b + i] > 0.0;  // the detrimental set is the same for every ranking
              ambiguous |= lr * std::fabs(g[b + i]) == 2.f * std::fabs(t[b + i]);
            }
            ambiguous_blocks += ambiguous && !literal;
            count_mismatches += k.count(t.data() + b, g.data() + b, n, lr).n_detrimental != exact_count;
          }
        }
      }
    }
  }
  CHECK_MSG(violations == 0, std::to_string(violations) + " bound violations of " + std::to_string(checked));
  CHECK_MSG(filter_misses == 0, std::to_string(filter_misses) + " elements dropped by a path's filter");
  CHECK_MSG(count_mismatches == 0, std::to_string(count_mismatches) + " fp32 count mismatches");
  CHECK(checked > 10000 && ambiguous_blocks > 0);
}

void nonfinite_errors() {
  std::vector<float> t(100, 1.f), g(100, 0.5f);
  ScoreSpec sp = spec(0.1f, RankBy::Shrink, false);
  std::vector<double> out(100);
  for (const auto& name : supported_cpu_paths()) {
    set_cpu_path(name);
    g[17] = NAN;
    CHECK_THROWS(detrimental_score(ConstSpan{t.data(), DType::F32, 100}, ConstSpan{g.data(), DType::F32, 100}, sp,
                                   out.data()),
                 NonFiniteError, "non-finite value in grad at element 17");
    t[17] = INFINITY;  // theta is reported before grad at the same element
    CHECK_THROWS(detrimental_score(ConstSpan{t.data(), DType::F32, 100}, ConstSpan{g.data(), DType::F32, 100}, sp,
                                   out.data()),
                 NonFiniteError, "non-finite value in theta at element 17");
    t[17] = 1.f;
    g[17] = 0.5f;
    g[90] = -INFINITY;
    int64_t counts[2];
    CHECK_THROWS(detrimental_count({ConstSpan{t.data(), DType::F32, 50}, ConstSpan{t.data() + 50, DType::F32, 50}},
                                   {ConstSpan{g.data(), DType::F32, 50}, ConstSpan{g.data() + 50, DType::F32, 50}},
                                   sp, counts),
                 NonFiniteError, "non-finite value in grads[1] at element 40");
    g[90] = 0.5f;
    const uint16_t nan16[2] = {0x3c00, 0x7e00};  // 1.0, NaN in fp16
    CHECK_THROWS(detrimental_score(ConstSpan{nan16, DType::F16, 2}, ConstSpan{t.data(), DType::F32, 2}, sp,
                                   out.data()),
                 NonFiniteError, "theta at element 1");
  }
}

void spec_errors() {
  CHECK_THROWS(make_score_spec(0.0, "shrink", false), std::invalid_argument, "lr=0");
  CHECK_THROWS(make_score_spec(-1.0, "shrink", false), std::invalid_argument, "lr=-1");
  CHECK_THROWS(make_score_spec(NAN, "shrink", false), std::invalid_argument, "lr=nan");
  CHECK_THROWS(make_score_spec(1e-50, "shrink", false), std::invalid_argument, "float32");
  CHECK_THROWS(make_score_spec(1e39, "shrink", false), std::invalid_argument, "lr=");
  CHECK_THROWS(make_score_spec(0.1, "size", false), std::invalid_argument, "rank_by='size'");
  CHECK(make_score_spec(0.1, "update", true).lr == 0.1f);
}

}  // namespace

int main() {
  hand_cases();
  kernels_match_definition();
  prefilter_bound_and_count();
  nonfinite_errors();
  spec_errors();
  return mft_test::report("test_detrimental");
}
