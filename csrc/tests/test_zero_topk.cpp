// zero_topk() against a brute-force definition (select by sorting every score, then zero): indices,
// saved values, the zeroed tensors, threshold and ties, over every path, thread count and strategy
// (full scan, sampled bracket, bracket misses and aborts that undo the pass's zeros, radix, forced
// brackets); errors leave the tensors unchanged.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "cpu_path.h"
#include "mft/parallel.h"
#include "zero_topk.h"

using namespace mft;
using namespace mft::kernels;

namespace {

// Thetas stored as F32 or BF16 (one dtype), grads as F32.
struct Data {
  DType dtype = DType::F32;
  std::vector<std::vector<uint32_t>> t32;  // F32 bits
  std::vector<std::vector<uint16_t>> t16;  // BF16 bits
  std::vector<std::vector<float>> g;

  std::vector<MutSpan> mut() {
    std::vector<MutSpan> out;
    for (std::size_t i = 0; i < g.size(); ++i)
      out.push_back(dtype == DType::F32 ? MutSpan{t32[i].data(), static_cast<int64_t>(t32[i].size())}
                                        : MutSpan{t16[i].data(), static_cast<int64_t>(t16[i].size())});
    return out;
  }
  std::vector<ConstSpan> thetas() {
    std::vector<ConstSpan> out;
    for (const MutSpan& m : mut()) out.push_back(ConstSpan{m.data, dtype, m.numel});
    return out;
  }
  std::vector<ConstSpan> grads() const {
    std::vector<ConstSpan> out;
    for (const auto& v : g) out.push_back(ConstSpan{v.data(), DType::F32, static_cast<int64_t>(v.size())});
    return out;
  }
  // Bits of flat element i.
  uint32_t bits(int64_t flat) const {
    for (std::size_t t = 0; t < g.size(); ++t) {
      const int64_t n = static_cast<int64_t>(g[t].size());
      if (flat < n) return dtype == DType::F32 ? t32[t][flat] : t16[t][flat];
      flat -= n;
    }
    return 0xdeadbeef;
  }
  bool same_thetas(const Data& o) const { return t32 == o.t32 && t16 == o.t16; }
};

Data random_data(const std::vector<int64_t>& sizes, uint64_t seed, DType dtype, int distinct) {
  Data d;
  d.dtype = dtype;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_int_distribution<int> pick(1, std::max(1, distinct));
  for (int64_t n : sizes) {
    std::vector<float> t(n);
    d.g.emplace_back(n);
    for (int64_t j = 0; j < n; ++j) {
      if (distinct > 0) {
        t[j] = static_cast<float>(pick(rng)) * (rng() & 1 ? 1.f : -1.f);
        d.g.back()[j] = static_cast<float>(pick(rng)) * 0.25f * (rng() & 1 ? 1.f : -1.f);
      } else {
        t[j] = nd(rng) * 0.05f;
        d.g.back()[j] = nd(rng) * 0.01f;
      }
    }
    d.t32.emplace_back(n);
    d.t16.emplace_back(dtype == DType::BF16 ? n : 0);
    for (int64_t j = 0; j < n; ++j) {
      if (dtype == DType::F32)
        d.t32.back()[j] = float_to_bits(t[j]);
      else
        d.t16.back()[j] = static_cast<uint16_t>(float_to_bits(t[j]) >> 16);
    }
    if (dtype == DType::BF16) d.t32.back().clear();
  }
  return d;
}

ScoreSpec spec(float lr, RankBy r, bool literal) {
  ScoreSpec s;
  s.lr = lr;
  s.rank_by = r;
  s.literal = literal;
  return s;
}

using Ranking = std::vector<std::pair<double, int64_t>>;

Ranking rank_all(Data& d, const ScoreSpec& sp) {
  Ranking all;
  const auto th = d.thetas();
  const auto gr = d.grads();
  int64_t base = 0;
  for (std::size_t t = 0; t < th.size(); ++t) {
    for (int64_t j = 0; j < th[t].numel; ++j) {
      const double s = score_one(load_float(th[t], j), load_float(gr[t], j), sp);
      if (s > 0.0) all.emplace_back(s, base + j);
    }
    base += th[t].numel;
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  return all;
}

struct Expected {
  std::vector<int64_t> indices;
  double threshold = INFINITY;
  int64_t n_tied = 0;
};

Expected expected_from(const Ranking& all, int64_t k) {
  Expected e;
  for (int64_t i = 0; i < k; ++i) e.indices.push_back(all[i].second);
  std::sort(e.indices.begin(), e.indices.end());
  e.threshold = k == 0 ? INFINITY : all[k - 1].first;
  for (const auto& p : all) e.n_tied += p.first == e.threshold;
  return e;
}

int g_missed = 0, g_exact_above = 0;

// Runs zero_topk on a copy of `pristine` and checks everything against `e`.
void check_case(const Data& pristine, const ScoreSpec& sp, int64_t k, const SelectOptions& opt, const Expected& e,
                const std::string& what) {
  Data d = pristine;
  std::vector<int64_t> idx(static_cast<std::size_t>(k) + 1, -7);
  std::vector<uint32_t> vals32(static_cast<std::size_t>(k) + 1);
  std::vector<uint16_t> vals16(static_cast<std::size_t>(k) + 1);
  void* vals = d.dtype == DType::F32 ? static_cast<void*>(vals32.data()) : static_cast<void*>(vals16.data());
  const SelectResult r = zero_topk(d.mut(), d.dtype, d.grads(), sp, k, idx.data(), vals, opt);
  idx.resize(static_cast<std::size_t>(k));
  bool ok = idx == e.indices && r.threshold == e.threshold && r.n_tied == e.n_tied;
  CHECK_MSG(ok, what + " selection k=" + std::to_string(k));
  if (!ok) return;
  // Values: the pristine bits; tensors: pristine except zeros at the indices.
  Data expect = pristine;
  for (int64_t i = 0; i < k; ++i) {
    const uint32_t v = d.dtype == DType::F32 ? vals32[i] : vals16[i];
    ok &= v == pristine.bits(idx[i]);
    int64_t flat = idx[i];
    for (std::size_t t = 0; t < expect.g.size(); ++t) {
      const int64_t n = static_cast<int64_t>(expect.g[t].size());
      if (flat < n) {
        if (d.dtype == DType::F32)
          expect.t32[t][flat] = 0;
        else
          expect.t16[t][flat] = 0;
        break;
      }
      flat -= n;
    }
  }
  CHECK_MSG(ok, what + " saved values k=" + std::to_string(k));
  CHECK_MSG(d.same_thetas(expect), what + " zeroed tensors k=" + std::to_string(k));
  g_missed += r.stats.bracket_missed;
  g_exact_above += !r.stats.bracket_missed && r.stats.used == SelectStats::Used::Bracket && r.stats.n_above == k &&
                   k > 0;
}

void matrix() {
  using Strategy = SelectOptions::Strategy;
  const std::vector<std::vector<int64_t>> layouts = {{5, 0, 3}, {3000, 0, 17, 20000, 1}, {40000, 9999}};
  int seed = 0;
  for (const auto& sizes : layouts) {
    for (DType dtype : {DType::F32, DType::BF16}) {
      for (int distinct : {0, 3}) {
        Data d = random_data(sizes, ++seed, dtype, distinct);
        for (bool literal : {false, true}) {
          for (RankBy rb : {RankBy::Shrink, RankBy::Update}) {
            const ScoreSpec sp = spec(distinct ? 1.0f : 3.0f, rb, literal);
            const Ranking ranking = rank_all(d, sp);
            const int64_t n_det = static_cast<int64_t>(ranking.size());
            std::vector<int64_t> ks = {0, 1, n_det / 100, n_det / 7, n_det - 1, n_det};
            ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
            for (const auto& path : supported_cpu_paths()) {
              set_cpu_path(path);
              for (int threads : {1, 2}) {
                set_max_threads(threads);
                std::vector<SelectOptions> options(5);
                options[0].strategy = Strategy::Full;
                options[1].strategy = Strategy::Radix;
                options[2].full_scan_below = 0;
                options[2].sample_size = 512;
                options[2].seed = 5;
                options[3] = options[2];  // no margin: misses, the pass's zeros are undone
                options[3].z = 0.0;
                options[3].slack = 0.0;
                options[4] = options[2];  // candidate cap 1: aborts
                options[4].candidate_cap = 1;
                for (std::size_t o = 0; o < options.size(); ++o)
                  for (int64_t k : ks) {
                    if (k < 0) continue;
                    check_case(d, sp, k, options[o], expected_from(ranking, k),
                               path + " t" + std::to_string(threads) + " " + dtype_name(dtype) +
                                   " distinct=" + std::to_string(distinct) + (literal ? " literal" : "") +
                                   (rb == RankBy::Shrink ? " shrink" : " update") + " option " +
                                   std::to_string(o) + " sizes[0]=" + std::to_string(sizes[0]));
                  }
              }
            }
          }
        }
      }
    }
  }
  CHECK(g_missed > 0);
}

void forced_brackets() {
  // Brackets on, just above and below the threshold: certain elements alone make k (the threshold is
  // rescored from the saved values), or the bracket misses on either side after zeroing.
  Data d = random_data({5000, 0, 3001}, 41, DType::BF16, 0);
  for (RankBy rb : {RankBy::Shrink, RankBy::Update}) {
    const ScoreSpec sp = spec(3.0f, rb, false);
    const Ranking ranking = rank_all(d, sp);
    const int64_t n_det = static_cast<int64_t>(ranking.size());
    for (int64_t k : {int64_t(1), int64_t(37), n_det / 3, n_det - 1, n_det}) {
      const Expected e = expected_from(ranking, k);
      double below = 0.0;
      for (const auto& p : ranking)
        if (p.first < e.threshold) {
          below = p.first;
          break;
        }
      const double above = std::nextafter(e.threshold, INFINITY);
      std::vector<std::pair<double, double>> brackets = {{e.threshold, e.threshold}, {e.threshold, above},
                                                         {above, above * 2}};
      if (below > 0.0) brackets.push_back({below, below});
      brackets.push_back({ranking.back().first, ranking.front().first});
      for (const auto& path : supported_cpu_paths()) {
        set_cpu_path(path);
        for (const auto& b : brackets) {
          SelectOptions opt;
          opt.strategy = SelectOptions::Strategy::Bracket;
          opt.bracket_lo = b.first;
          opt.bracket_hi = b.second;
          check_case(d, sp, k, opt, e, path + " forced bracket");
        }
      }
    }
  }
  CHECK(g_exact_above > 0);
}

void errors() {
  set_max_threads(2);
  Data d = random_data({100, 50}, 99, DType::F32, 0);
  const ScoreSpec sp = spec(3.0f, RankBy::Shrink, false);
  const int64_t n_det = static_cast<int64_t>(rank_all(d, sp).size());
  std::vector<int64_t> idx(200);
  std::vector<float> vals(200);
  {
    Data c = d;
    CHECK_THROWS(zero_topk(c.mut(), c.dtype, c.grads(), sp, n_det + 1, idx.data(), vals.data()),
                 std::invalid_argument, "exceeds the number of detrimental elements");
    CHECK(c.same_thetas(d));
  }
  // A NaN late in the flat order, found after other elements were zeroed (forced bracket: all certain).
  Data bad = random_data({300000, 50}, 98, DType::F32, 0);
  bad.g[1][7] = NAN;
  const Data bad_pristine = bad;
  for (const auto& path : supported_cpu_paths()) {
    set_cpu_path(path);
    SelectOptions all_certain;
    all_certain.strategy = SelectOptions::Strategy::Bracket;
    all_certain.bracket_lo = all_certain.bracket_hi = 1e-12;
    std::vector<int64_t> big_idx(1000);
    std::vector<float> big_vals(1000);
    for (const SelectOptions& opt : {SelectOptions(), all_certain}) {
      for (int64_t k : {int64_t(0), int64_t(1), int64_t(1000)}) {
        CHECK_THROWS(zero_topk(bad.mut(), bad.dtype, bad.grads(), sp, k, big_idx.data(), big_vals.data(), opt),
                     NonFiniteError, "non-finite value in grads[1] at element 7");
        CHECK_MSG(bad.same_thetas(bad_pristine), path + " unchanged after the error, k=" + std::to_string(k));
      }
    }
  }
  // Overlaps: a theta with a grad, two thetas.
  std::vector<float> buf(20, 1.f);
  std::vector<MutSpan> ts = {MutSpan{buf.data(), 10}};
  std::vector<ConstSpan> gs = {ConstSpan{buf.data() + 5, DType::F32, 10}};
  CHECK_THROWS(zero_topk(ts, DType::F32, gs, sp, 1, idx.data(), vals.data()), std::invalid_argument,
               "thetas[0] and grads[0] share memory");
  std::vector<float> other(10, 1.f);
  ts = {MutSpan{buf.data(), 10}, MutSpan{buf.data() + 9, 10}};
  gs = {ConstSpan{other.data(), DType::F32, 10}, ConstSpan{other.data(), DType::F32, 10}};  // grads may overlap
  CHECK_THROWS(zero_topk(ts, DType::F32, gs, sp, 1, idx.data(), vals.data()), std::invalid_argument,
               "thetas[0] and thetas[1] share memory");
  ts = {MutSpan{buf.data(), 10}, MutSpan{buf.data() + 10, 10}};
  const SelectResult r = zero_topk(ts, DType::F32, gs, sp, 0, idx.data(), vals.data());  // adjacent is fine
  CHECK(std::isinf(r.threshold));
  CHECK_THROWS(zero_topk({}, DType::F32, {}, sp, 1, idx.data(), vals.data()), std::invalid_argument, "(0)");
}

}  // namespace

int main() {
  matrix();
  forced_brackets();
  errors();
  return mft_test::report("test_zero_topk");
}
