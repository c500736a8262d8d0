// select_topk() against a brute-force definition (score all, sort by (score desc, index asc), take k),
// over every path, thread count and strategy (full scan, sampled bracket, forced bracket misses, radix).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "cpu_path.h"
#include "mft/parallel.h"
#include "select_topk.h"

using namespace mft;
using namespace mft::kernels;

namespace {

struct Data {
  std::vector<std::vector<float>> t32, g32;
  std::vector<std::vector<uint16_t>> t16, g16;
  DType dtype = DType::F32;
  std::vector<ConstSpan> thetas, grads;

  void finish() {
    thetas.clear();
    grads.clear();
    for (std::size_t i = 0; i < t32.size(); ++i) {
      if (dtype == DType::F32) {
        thetas.push_back(ConstSpan{t32[i].data(), dtype, static_cast<int64_t>(t32[i].size())});
        grads.push_back(ConstSpan{g32[i].data(), dtype, static_cast<int64_t>(g32[i].size())});
      } else {
        t16.emplace_back(t32[i].size());
        g16.emplace_back(g32[i].size());
        for (std::size_t j = 0; j < t32[i].size(); ++j) {
          t16.back()[j] = static_cast<uint16_t>(float_to_bits(t32[i][j]) >> 16);  // bf16 (truncated)
          g16.back()[j] = static_cast<uint16_t>(float_to_bits(g32[i][j]) >> 16);
        }
        thetas.push_back(ConstSpan{t16.back().data(), dtype, static_cast<int64_t>(t32[i].size())});
        grads.push_back(ConstSpan{g16.back().data(), dtype, static_cast<int64_t>(g32[i].size())});
      }
    }
  }
};

Data random_data(const std::vector<int64_t>& sizes, uint64_t seed, DType dtype, int distinct = 0) {
  Data d;
  d.dtype = dtype;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_int_distribution<int> pick(1, std::max(1, distinct));
  for (int64_t n : sizes) {
    d.t32.emplace_back(n);
    d.g32.emplace_back(n);
    for (int64_t j = 0; j < n; ++j) {
      if (distinct > 0) {  // few distinct values: heavy ties
        d.t32.back()[j] = static_cast<float>(pick(rng)) * (rng() & 1 ? 1.f : -1.f);
        d.g32.back()[j] = static_cast<float>(pick(rng)) * 0.25f * (rng() & 1 ? 1.f : -1.f);
      } else {
        d.t32.back()[j] = nd(rng) * 0.05f;
        d.g32.back()[j] = nd(rng) * 0.01f;
      }
    }
  }
  d.finish();
  return d;
}

struct Expected {
  std::vector<int64_t> indices;
  double threshold;
  int64_t n_tied;
  int64_t n_det;
};

// Every detrimental (score, flat index), sorted by score descending then index ascending.
using Ranking = std::vector<std::pair<double, int64_t>>;

Ranking rank_all(const Data& d, const ScoreSpec& sp) {
  Ranking all;
  int64_t base = 0;
  for (std::size_t t = 0; t < d.thetas.size(); ++t) {
    for (int64_t j = 0; j < d.thetas[t].numel; ++j) {
      const double s = score_one(load_float(d.thetas[t], j), load_float(d.grads[t], j), sp);
      if (s > 0.0) all.emplace_back(s, base + j);
    }
    base += d.thetas[t].numel;
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  return all;
}

Expected expected_from(const Ranking& all, int64_t k) {
  Expected e;
  e.n_det = static_cast<int64_t>(all.size());
  k = std::min<int64_t>(k, e.n_det);
  for (int64_t i = 0; i < k; ++i) e.indices.push_back(all[i].second);
  std::sort(e.indices.begin(), e.indices.end());
  e.threshold = k == 0 ? INFINITY : all[k - 1].first;
  e.n_tied = 0;
  for (const auto& p : all) e.n_tied += p.first == e.threshold;
  return e;
}

Expected brute_force(const Data& d, const ScoreSpec& sp, int64_t k) { return expected_from(rank_all(d, sp), k); }

ScoreSpec spec(float lr, RankBy r, bool literal) {
  ScoreSpec s;
  s.lr = lr;
  s.rank_by = r;
  s.literal = literal;
  return s;
}

int g_bracket_runs = 0, g_missed_runs = 0, g_radix_runs = 0, g_full_runs = 0;

void check_case(const Data& d, const ScoreSpec& sp, int64_t k, const SelectOptions& opt, const std::string& what,
                const Expected& e) {
  std::vector<int64_t> got(static_cast<std::size_t>(k) + 1, -7);
  const SelectResult r = select_topk(d.thetas, d.grads, sp, k, got.data(), opt);
  got.resize(static_cast<std::size_t>(k));
  const bool ok = got == e.indices && (r.threshold == e.threshold) && r.n_tied == e.n_tied;
  CHECK_MSG(ok, what + " k=" + std::to_string(k) + " thr " + std::to_string(r.threshold) + " vs " +
                    std::to_string(e.threshold) + " tied " + std::to_string(r.n_tied) + " vs " +
                    std::to_string(e.n_tied));
  switch (r.stats.used) {
    case SelectStats::Used::Bracket:
      ++g_bracket_runs;
      break;
    case SelectStats::Used::Radix:
      ++g_radix_runs;
      break;
    case SelectStats::Used::Full:
      ++g_full_runs;
      break;
    default:
      break;
  }
  g_missed_runs += r.stats.bracket_missed;
}

std::vector<int64_t> ks_for(int64_t n_det) {
  std::vector<int64_t> ks = {0, 1, n_det / 100, n_det / 7, n_det - 1, n_det};
  std::vector<int64_t> out;
  for (int64_t k : ks)
    if (k >= 0 && k <= n_det && std::find(out.begin(), out.end(), k) == out.end()) out.push_back(k);
  return out;
}

void matrix() {
  const std::vector<std::vector<int64_t>> layouts = {{1}, {5, 0, 3}, {3000, 0, 17, 20000, 1}, {40000, 9999}};
  using Strategy = SelectOptions::Strategy;
  int seed = 0;
  for (const auto& sizes : layouts) {
    for (DType dtype : {DType::F32, DType::BF16}) {
      for (int distinct : {0, 3}) {
        const Data d = random_data(sizes, ++seed, dtype, distinct);
        for (bool literal : {false, true}) {
          for (RankBy r : {RankBy::Shrink, RankBy::Update}) {
            const ScoreSpec sp = spec(distinct ? 1.0f : 3.0f, r, literal);
            const Ranking ranking = rank_all(d, sp);
            const int64_t n_det = static_cast<int64_t>(ranking.size());
            std::vector<std::pair<int64_t, Expected>> expected;
            for (int64_t k : ks_for(n_det)) expected.emplace_back(k, expected_from(ranking, k));
            for (const auto& path : supported_cpu_paths()) {
              set_cpu_path(path);
              // Thread counts change the chunk-to-thread assignment; 3 threads on 2 cores still runs.
              for (int threads : {1, 2}) {
                set_max_threads(threads);
                std::vector<SelectOptions> options(5);
                options[0].strategy = Strategy::Full;
                options[1].strategy = Strategy::Radix;
                options[2].full_scan_below = 0;  // sampled bracket
                options[2].sample_size = 512;
                options[2].seed = 5;
                options[3] = options[2];  // no margin: the bracket often misses, radix takes over
                options[3].z = 0.0;
                options[3].slack = 0.0;
                options[4] = options[2];  // candidate cap of 1: aborts, radix takes over
                options[4].candidate_cap = 1;
                for (std::size_t o = 0; o < options.size(); ++o) {
                  for (const auto& ke : expected) {
                    const std::string what = path + " t" + std::to_string(threads) + " " + dtype_name(dtype) +
                                             " distinct=" + std::to_string(distinct) + (literal ? " literal" : "") +
                                             (r == RankBy::Shrink ? " shrink" : " update") + " option " +
                                             std::to_string(o) + " sizes[0]=" + std::to_string(sizes[0]);
                    check_case(d, sp, ke.first, options[o], what, ke.second);
                  }
                }
              }
            }
          }
        }
      }
    }
  }
  std::printf("strategies used: bracket %d (missed %d), radix %d, full %d\n", g_bracket_runs, g_missed_runs,
              g_radix_runs, g_full_runs);
  CHECK(g_bracket_runs > 0 && g_missed_runs > 0 && g_radix_runs > 0 && g_full_runs > 0);
}

void all_tied_large() {
  // 600K identical scores: the candidates overflow the automatic cap only when it is small; both ways exact.
  Data d;
  d.t32 = {std::vector<float>(400000, 1.f), std::vector<float>(200000, -1.f)};
  d.g32 = {std::vector<float>(400000, 0.5f), std::vector<float>(200000, -0.5f)};
  d.finish();
  const ScoreSpec sp = spec(0.5f, RankBy::Shrink, false);
  for (const auto& path : supported_cpu_paths()) {
    set_cpu_path(path);
    set_max_threads(2);
    for (int64_t cap : {int64_t(0), int64_t(1000)}) {
      SelectOptions opt;
      opt.candidate_cap = cap;
      for (int64_t k : {int64_t(1), int64_t(123457), int64_t(599999), int64_t(600000)}) {
        std::vector<int64_t> got(k);
        const SelectResult r = select_topk(d.thetas, d.grads, sp, k, got.data(), opt);
        bool ok = r.threshold == 0.25 && r.n_tied == 600000;
        for (int64_t i = 0; ok && i < k; ++i) ok = got[i] == i;  // lowest indices win ties
        CHECK_MSG(ok, path + " all tied, k=" + std::to_string(k) + " cap=" + std::to_string(cap));
      }
    }
  }
}

void forced_brackets() {
  // Brackets placed exactly on, just above and just below the threshold, so that the certain elements
  // alone make k (the threshold is then rescored), or the bracket misses on either side.
  const Data d = random_data({5000, 0, 3001}, 41, DType::BF16, 0);  // bf16: many ties
  using Strategy = SelectOptions::Strategy;
  int exact_above = 0;
  for (RankBy r : {RankBy::Shrink, RankBy::Update}) {
    const ScoreSpec sp = spec(3.0f, r, false);
    const Ranking ranking = rank_all(d, sp);
    const int64_t n_det = static_cast<int64_t>(ranking.size());
    for (int64_t k : {int64_t(1), int64_t(37), n_det / 3, n_det - 1, n_det}) {
      const Expected e = expected_from(ranking, k);
      const double thr = e.threshold;
      // The largest score below the threshold (the (k+1)-th distinct value), if any.
      double below = 0.0;
      for (const auto& p : ranking)
        if (p.first < thr) {
          below = p.first;
          break;
        }
      const double above = std::nextafter(thr, INFINITY);
      std::vector<std::pair<double, double>> brackets = {{thr, thr}, {thr, above}, {above, above * 2}};
      if (below > 0.0) brackets.push_back({below, below});  // exactly the certain ones reach k when untied
      brackets.push_back({ranking.back().first, ranking.front().first});
      for (const auto& path : supported_cpu_paths()) {
        set_cpu_path(path);
        for (const auto& b : brackets) {
          SelectOptions opt;
          opt.strategy = Strategy::Bracket;
          opt.bracket_lo = b.first;
          opt.bracket_hi = b.second;
          std::vector<int64_t> got(k);
          const SelectResult res = select_topk(d.thetas, d.grads, sp, k, got.data(), opt);
          exact_above += !res.stats.bracket_missed && res.stats.n_above == k;
          CHECK_MSG(got == e.indices && res.threshold == e.threshold && res.n_tied == e.n_tied,
                    path + " forced bracket k=" + std::to_string(k));
        }
      }
    }
  }
  CHECK(exact_above > 0);  // the rescoring branch ran
}

void errors() {
  Data d = random_data({100, 50}, 99, DType::F32);
  const ScoreSpec sp = spec(3.0f, RankBy::Shrink, false);
  const int64_t n_det = brute_force(d, sp, 0).n_det;
  std::vector<int64_t> out(200);
  CHECK_THROWS(select_topk(d.thetas, d.grads, sp, n_det + 1, out.data()), std::invalid_argument,
               ("k=" + std::to_string(n_det + 1) + " exceeds the number of detrimental elements (" +
                std::to_string(n_det) + ")").c_str());
  CHECK_THROWS(select_topk(d.thetas, d.grads, sp, -1, out.data()), std::invalid_argument, "k=-1");
  SelectOptions radix;
  radix.strategy = SelectOptions::Strategy::Radix;
  CHECK_THROWS(select_topk(d.thetas, d.grads, sp, n_det + 1, out.data(), radix), std::invalid_argument, "exceeds");
  d.g32[1][7] = NAN;
  d.t32[1][30] = INFINITY;
  for (const auto& path : supported_cpu_paths()) {
    set_cpu_path(path);
    for (int64_t k : {int64_t(0), int64_t(1), n_det / 2}) {
      CHECK_THROWS(select_topk(d.thetas, d.grads, sp, k, out.data()), NonFiniteError,
                   "non-finite value in grads[1] at element 7");
      CHECK_THROWS(select_topk(d.thetas, d.grads, sp, k, out.data(), radix), NonFiniteError, "grads[1] at element 7");
    }
  }
  // An empty list: only k = 0.
  const SelectResult r = select_topk({}, {}, sp, 0, out.data());
  CHECK(std::isinf(r.threshold) && r.n_tied == 0);
  CHECK_THROWS(select_topk({}, {}, sp, 1, out.data()), std::invalid_argument, "(0)");
}

void larger_sampled() {
  // Large enough for the default sampled bracket (N > full_scan_below); check it rarely misses.
  const Data d = random_data({600000, 300001, 5}, 7, DType::F32);
  set_max_threads(2);
  for (const auto& path : supported_cpu_paths()) {
    set_cpu_path(path);
    for (RankBy r : {RankBy::Shrink, RankBy::Update}) {
      const ScoreSpec sp = spec(3.0f, r, false);
      const Ranking ranking = rank_all(d, sp);
      const int64_t n_det = static_cast<int64_t>(ranking.size());
      for (int64_t k : {int64_t(1), int64_t(1000), n_det / 3, n_det - 5}) {
        const Expected e = expected_from(ranking, k);
        for (uint64_t seed : {0u, 1u}) {
          SelectOptions opt;
          opt.seed = seed;
          const int missed_before = g_missed_runs;
          const int bracket_before = g_bracket_runs;
          check_case(d, sp, k, opt, path + " large k=" + std::to_string(k), e);
          CHECK(g_bracket_runs == bracket_before + 1);
          CHECK(g_missed_runs == missed_before);
        }
      }
    }
  }
}

}  // namespace

int main() {
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  auto lap = [&](const char* what) {
    const auto t1 = clock::now();
    std::printf("%s: %.2f s\n", what, std::chrono::duration<double>(t1 - t0).count());
    t0 = t1;
  };
  matrix();
  lap("matrix");
  all_tied_large();
  lap("all tied");
  forced_brackets();
  errors();
  larger_sampled();
  lap("errors + larger sampled");
  return mft_test::report("test_select_topk");
}
