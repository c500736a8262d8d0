#include "select_topk.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "mft/parallel.h"

namespace mft {
namespace kernels {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// Every detrimental score is > 0, so ">= kTiny" means "detrimental".
constexpr double kTiny = std::numeric_limits<double>::denorm_min();

double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A growable array of trivially copyable T whose hot loop writes through a raw pointer: room(n)
// guarantees n free slots, commit(end) records how many were used. (std::vector would value-initialize
// on resize or check capacity on every push_back.)
template <class T>
class PodBuffer {
  static_assert(std::is_trivially_copyable<T>::value, "PodBuffer holds plain data");

 public:
  PodBuffer() = default;
  PodBuffer(const PodBuffer&) = delete;
  PodBuffer& operator=(const PodBuffer&) = delete;
  PodBuffer(PodBuffer&& o) noexcept : data_(o.data_), size_(o.size_), cap_(o.cap_) {
    o.data_ = nullptr;
    o.size_ = o.cap_ = 0;
  }
  ~PodBuffer() { std::free(data_); }

  void reserve(std::size_t n) {
    if (n > cap_) grow_to(n);
  }
  T* room(std::size_t n) {
    if (size_ + n > cap_) grow_to(std::max(2 * cap_, size_ + n));
    return data_ + size_;
  }
  void commit(T* end) { size_ = static_cast<std::size_t>(end - data_); }
  std::size_t size() const { return size_; }
  const T* data() const { return data_; }
  const T& operator[](std::size_t i) const { return data_[i]; }

 private:
  void grow_to(std::size_t n) {
    T* p = static_cast<T*>(std::realloc(data_, n * sizeof(T)));
    if (!p) throw std::bad_alloc();
    data_ = p;
    cap_ = n;
  }
  T* data_ = nullptr;
  std::size_t size_ = 0, cap_ = 0;
};

struct Candidate {
  double score;
  int64_t index;
};

// Where one chunk's output went in its thread's buffers (a contiguous range of each).
struct ChunkRecord {
  int thread = 0;
  int64_t above_begin = 0, above_end = 0;
  int64_t cand_begin = 0, cand_end = 0;
};

struct ThreadBuffers {
  PodBuffer<uint16_t> above;   // score > hi: offset from the chunk start (chunks <= 2^16), ascending
  PodBuffer<Candidate> cands;  // lo <= score <= hi: (score, flat index), ascending index within a chunk
  bool nonfinite = false;
};

std::string count_message(int64_t k, int64_t n_det) {
  return "k=" + std::to_string(k) + " exceeds the number of detrimental elements (" + std::to_string(n_det) +
         "); k must be in [0, " + std::to_string(n_det) + "]";
}

class Selector {
 public:
  Selector(const std::vector<ConstSpan>& thetas, const std::vector<ConstSpan>& grads, const ScoreSpec& spec,
           int64_t k, int64_t* out, const SelectOptions& opt)
      : thetas_(thetas), grads_(grads), spec_(spec), k_(k), out_(out), opt_(opt) {
    if (thetas.size() != grads.size()) throw std::invalid_argument("thetas and grads must have the same length");
    std::vector<int64_t> numels(thetas.size());
    for (std::size_t t = 0; t < thetas.size(); ++t) {
      if (thetas[t].numel != grads[t].numel)
        throw std::invalid_argument("thetas[" + std::to_string(t) + "] and grads[" + std::to_string(t) +
                                    "] must have the same numel");
      numels[t] = thetas[t].numel;
    }
    if (k < 0) throw std::invalid_argument("k=" + std::to_string(k) + " must be >= 0");
    layout_ = FlatLayout(numels);
    total_ = layout_.total();
    chunk_ = pass_chunk_size(total_);
    if (chunk_ > 65536) throw std::logic_error("select_topk: chunks must fit 16-bit offsets");
    n_chunks_ = (total_ + chunk_ - 1) / chunk_;
    kern_ = score_kernels(spec, active_path());
  }

  SelectResult run() {
    using Strategy = SelectOptions::Strategy;
    if (k_ == 0) {
      // Nothing to select, but the inputs are still checked for Inf/NaN (one pass).
      bracket_pass(kInf, kInf, 0, 0, 0);
      if (any_nonfinite_) throw_first_nonfinite(thetas_, grads_, false);
      result_.threshold = kInf;
      result_.n_tied = 0;
      result_.stats.used = SelectStats::Used::Empty;
      return result_;
    }
    if (opt_.strategy == Strategy::Radix) {
      radix_select();
      return result_;
    }
    const bool full = opt_.strategy == Strategy::Full ||
                      (opt_.strategy == Strategy::Auto && total_ <= opt_.full_scan_below);
    double lo = kTiny, hi = kInf;
    int64_t cap = total_, expect_above = 0, expect_cands = 0;
    double t0 = seconds_now();
    if (opt_.strategy == Strategy::Bracket) {
      if (!(opt_.bracket_lo > 0.0 && opt_.bracket_lo <= opt_.bracket_hi))
        throw std::invalid_argument("select_topk: a forced bracket needs 0 < lo <= hi");
      lo = opt_.bracket_lo;
      hi = opt_.bracket_hi;
      cap = opt_.candidate_cap > 0 ? opt_.candidate_cap : total_;
    } else if (!full) {
      sampled_bracket(&lo, &hi, &cap, &expect_above, &expect_cands);
    }
    result_.stats.used = full ? SelectStats::Used::Full : SelectStats::Used::Bracket;
    double t1 = seconds_now();
    result_.stats.seconds_sample = t1 - t0;
    const bool complete = bracket_pass(lo, hi, cap, expect_above, expect_cands);
    t0 = t1;
    t1 = seconds_now();
    result_.stats.seconds_pass = t1 - t0;
    if (any_nonfinite_) throw_first_nonfinite(thetas_, grads_, false);
    if (full) {  // every detrimental element is a candidate
      result_.stats.n_detrimental = n_cands_;
      if (k_ > n_cands_) throw std::invalid_argument(count_message(k_, n_cands_));
    }
    if (complete && n_above_ <= k_ && k_ <= n_above_ + n_cands_) {
      finish_bracket();
      result_.stats.seconds_finish = seconds_now() - t1;
      return result_;
    }
    // The bracket missed (or k exceeds the detrimental count, which radix select reports exactly).
    result_.stats.bracket_missed = true;
    bufs_.clear();
    records_.clear();
    radix_select();
    result_.stats.seconds_finish = seconds_now() - t1;
    return result_;
  }

 private:
  // Calls fn(flat_index_of_first, scores, n, stats) for the blocks of chunk c, in order.
  template <class F>
  void score_chunk(int64_t c, const ScoreKernels& kern, const F& fn) const {
    for_each_piece(layout_, c * chunk_, std::min(total_, (c + 1) * chunk_),
                   [&](int64_t t, int64_t b, int64_t e, int64_t base) {
                     score_range(kern, thetas_[t], grads_[t], b, e, nullptr,
                                 [&](int64_t lb, const double* s, int n, const BlockStats& st) {
                                   fn(base + lb, s, n, st);
                                 });
                   });
  }

  double score_at(int64_t flat) const {
    const int64_t t = layout_.tensor_of(flat);
    const int64_t j = flat - layout_.offset(t);
    return score_one(load_float(thetas_[t], j), load_float(grads_[t], j), spec_);
  }

  // ---- 1. the sampled bracket ------------------------------------------------------------------------
  void sampled_bracket(double* lo, double* hi, int64_t* cap, int64_t* expect_above, int64_t* expect_cands) {
    const int64_t n_strata = std::max<int64_t>(1, std::min({opt_.sample_size, total_, int64_t(1) << 24}));
    const int64_t n_tasks = std::min<int64_t>(n_strata, 64);
    std::vector<std::vector<double>> parts(n_tasks);
    const uint64_t key = splitmix64(opt_.seed ^ 0x6d66745f73656c65ull);
    // Stratum i is [start(i), start(i+1)) with start(i) = floor(i*N/S), computed without overflow.
    const int64_t per = total_ / n_strata, rem = total_ % n_strata;
    auto stratum_start = [&](int64_t i) { return i * per + (i * rem) / n_strata; };
    parallel_for_dynamic(n_tasks, [&](int64_t task, int) {
      const int64_t i0 = task * n_strata / n_tasks, i1 = (task + 1) * n_strata / n_tasks;
      // Positions first, then the reads with prefetches a few strata ahead: each read is a cache (and
      // TLB) miss, and issuing them early overlaps them.
      struct Where {
        int64_t tensor, local;
      };
      std::vector<Where> where(static_cast<std::size_t>(i1 - i0));
      int64_t t = layout_.tensor_of(stratum_start(i0));
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t start = stratum_start(i), size = stratum_start(i + 1) - start;
        const int64_t pos =
            start + static_cast<int64_t>(splitmix64(key + static_cast<uint64_t>(i)) % static_cast<uint64_t>(size));
        while (pos >= layout_.end(t)) ++t;
        where[i - i0] = Where{t, pos - layout_.offset(t)};
      }
      auto address = [&](const ConstSpan& s, int64_t j) {
        return static_cast<const char*>(s.data) + j * static_cast<int64_t>(dtype_size(s.dtype));
      };
      constexpr int64_t kAhead = 16;
      std::vector<double>& out = parts[task];
      out.reserve(where.size());
      const int64_t n = static_cast<int64_t>(where.size());
      for (int64_t j = 0; j < n; ++j) {
        if (j + kAhead < n) {
          const Where& w = where[j + kAhead];
          __builtin_prefetch(address(thetas_[w.tensor], w.local));
          __builtin_prefetch(address(grads_[w.tensor], w.local));
        }
        const Where& w = where[j];
        const float th = load_float(thetas_[w.tensor], w.local);
        const float g = load_float(grads_[w.tensor], w.local);
        if (float_nonfinite(th) || float_nonfinite(g)) continue;  // the pass reports it
        const double sc = score_one(th, g, spec_);
        if (sc > 0.0) out.push_back(sc);
      }
    });
    std::vector<double> sample;
    for (auto& p : parts) sample.insert(sample.end(), p.begin(), p.end());
    const int64_t m = static_cast<int64_t>(sample.size());

    // Rank of the k-th score in the sample (descending, 1-based) and a margin well past its spread.
    const double S = static_cast<double>(n_strata);
    const double r = static_cast<double>(k_) * S / static_cast<double>(total_);
    const double d = opt_.z * std::sqrt(std::max(0.0, r * (1.0 - r / S))) + opt_.slack;
    const int64_t r_hi = static_cast<int64_t>(std::floor(r - d));
    const int64_t r_lo = static_cast<int64_t>(std::ceil(r + d));
    auto desc = std::greater<double>();
    int64_t top = m;
    if (r_lo <= m) {
      std::nth_element(sample.begin(), sample.begin() + (r_lo - 1), sample.end(), desc);
      *lo = sample[r_lo - 1];
      top = r_lo - 1;
    }
    if (r_hi >= 1 && r_hi <= top) {
      std::nth_element(sample.begin(), sample.begin() + (r_hi - 1), sample.begin() + top, desc);
      *hi = sample[r_hi - 1];
    }
    const double per_sample = static_cast<double>(total_) / S;
    const double width = static_cast<double>(std::min(r_lo, m) - std::max<int64_t>(r_hi, 0) + 1);
    *expect_cands = static_cast<int64_t>(std::max(0.0, width) * per_sample);
    *expect_above = static_cast<int64_t>(static_cast<double>(std::max<int64_t>(r_hi - 1, 0)) * per_sample);
    *cap = opt_.candidate_cap > 0 ? opt_.candidate_cap
                                  : std::max<int64_t>(int64_t(1) << 20, 4 * (*expect_cands));
  }

  // ---- 2. the streaming pass ----------------------------------------------------------------------------
  // Returns false when aborted (more than k certain, or more than cap candidates).
  bool bracket_pass(double lo, double hi, int64_t cap, int64_t expect_above, int64_t expect_cands) {
    const int nt = parallel_threads(n_chunks_);
    bufs_.clear();
    bufs_.resize(nt);
    for (auto& b : bufs_) {
      b.above.reserve(static_cast<std::size_t>(std::min(k_, expect_above + expect_above / 8) / nt + 1024));
      b.cands.reserve(static_cast<std::size_t>(std::min(cap, expect_cands + expect_cands / 8) / nt + 1024));
    }
    records_.assign(n_chunks_, ChunkRecord());
    std::atomic<int64_t> total_above{0}, total_cands{0};
    std::atomic<bool> abort{false};
    ScoreKernels kern = kern_;
    kern.count_detrimental = false;  // not needed here: a too-large k shows up as a missed bracket
    ++result_.stats.passes;
    parallel_for_dynamic(n_chunks_, [&](int64_t c, int thread) {
      if (abort.load(std::memory_order_relaxed)) return;
      ThreadBuffers& B = bufs_[thread];
      ChunkRecord& R = records_[c];
      R.thread = thread;
      R.above_begin = static_cast<int64_t>(B.above.size());
      R.cand_begin = static_cast<int64_t>(B.cands.size());
      alignas(64) int32_t pos[kScoreBlock + 16];
      bool bad = false;
      const int64_t chunk_begin = c * chunk_;
      score_chunk(c, kern, [&](int64_t flat0, const double* s, int n, const BlockStats& st) {
        bad |= st.nonfinite;
        const int hits = kern.find_ge(s, n, lo, pos);
        if (hits == 0) return;
        // Branch-free split: write both, advance one (the above/candidate mix is unpredictable).
        uint16_t* ap = B.above.room(static_cast<std::size_t>(hits));
        Candidate* cp = B.cands.room(static_cast<std::size_t>(hits));
        const int64_t offset0 = flat0 - chunk_begin;
        for (int j = 0; j < hits; ++j) {
          const int p = pos[j];
          const double v = s[p];
          const bool up = v > hi;
          *ap = static_cast<uint16_t>(offset0 + p);
          ap += up;
          *cp = Candidate{v, flat0 + p};
          cp += !up;
        }
        B.above.commit(ap);
        B.cands.commit(cp);
      });
      R.above_end = static_cast<int64_t>(B.above.size());
      R.cand_end = static_cast<int64_t>(B.cands.size());
      B.nonfinite |= bad;
      const int64_t na = R.above_end - R.above_begin, nc = R.cand_end - R.cand_begin;
      const bool too_many_above = total_above.fetch_add(na) + na > k_;
      const bool too_many_cands = total_cands.fetch_add(nc) + nc > cap;
      if (too_many_above || too_many_cands) abort.store(true, std::memory_order_relaxed);
    });
    n_above_ = total_above.load();
    n_cands_ = total_cands.load();
    any_nonfinite_ = false;
    for (const auto& b : bufs_) any_nonfinite_ |= b.nonfinite;
    result_.stats.n_above = n_above_;
    result_.stats.n_candidates = n_cands_;
    return !abort.load();
  }

  // ---- 3. finishing from the candidates -------------------------------------------------------------------
  // The need-th largest candidate score (need >= 1), and how many candidates are > and == it. A
  // histogram on the score bits (monotone for positive doubles) narrows it to one bucket, then
  // nth_element inside that bucket: cheaper than nth_element over all candidates.
  void kth_candidate(int64_t need, double* v, int64_t* n_gt, int64_t* n_eq) {
    const int nt = static_cast<int>(bufs_.size());
    std::vector<uint64_t> bmin(nt, ~uint64_t(0)), bmax(nt, 0);
    parallel_for_dynamic(nt, [&](int64_t t, int) {
      const auto& c = bufs_[t].cands;
      uint64_t mn = ~uint64_t(0), mx = 0;
      for (std::size_t i = 0; i < c.size(); ++i) {
        const uint64_t b = double_to_bits(c[i].score);
        mn = std::min(mn, b);
        mx = std::max(mx, b);
      }
      bmin[t] = mn;
      bmax[t] = mx;
    });
    const uint64_t base = *std::min_element(bmin.begin(), bmin.end());
    const uint64_t span = *std::max_element(bmax.begin(), bmax.end()) - base;
    constexpr int kBits = 16;
    int shift = 0;
    while ((span >> shift) >= (uint64_t(1) << kBits)) ++shift;
    const std::size_t n_buckets = static_cast<std::size_t>(span >> shift) + 1;
    std::vector<std::vector<uint32_t>> hist(nt, std::vector<uint32_t>(n_buckets, 0));
    parallel_for_dynamic(nt, [&](int64_t t, int) {
      const auto& c = bufs_[t].cands;
      uint32_t* h = hist[t].data();
      for (std::size_t i = 0; i < c.size(); ++i) ++h[(double_to_bits(c[i].score) - base) >> shift];
    });
    // Walk down from the top bucket to the one holding the need-th score.
    int64_t above_bucket = 0;
    std::size_t bucket = n_buckets;
    while (bucket > 0) {
      --bucket;
      int64_t cnt = 0;
      for (int t = 0; t < nt; ++t) cnt += hist[t][bucket];
      if (above_bucket + cnt >= need) break;
      above_bucket += cnt;
    }
    std::vector<double> in_bucket;
    for (int t = 0; t < nt; ++t) {
      const auto& c = bufs_[t].cands;
      for (std::size_t i = 0; i < c.size(); ++i)
        if (((double_to_bits(c[i].score) - base) >> shift) == bucket) in_bucket.push_back(c[i].score);
    }
    const int64_t rank = need - above_bucket;  // 1-based, within the bucket, from the top
    std::nth_element(in_bucket.begin(), in_bucket.begin() + (rank - 1), in_bucket.end(), std::greater<double>());
    *v = in_bucket[rank - 1];
    *n_gt = above_bucket;
    *n_eq = 0;
    for (double s : in_bucket) {
      *n_gt += s > *v;
      *n_eq += s == *v;
    }
  }

  // Rare: exactly k elements lie above hi, so the threshold is the smallest of them (their scores were
  // not kept); rescore them.
  void min_of_above(double* v, int64_t* n_eq) {
    std::vector<double> mins(n_chunks_, kInf);
    std::vector<int64_t> counts(n_chunks_, 0);
    parallel_for_dynamic(n_chunks_, [&](int64_t c, int) {
      const ChunkRecord& R = records_[c];
      const ThreadBuffers& B = bufs_[R.thread];
      double m = kInf;
      int64_t n = 0;
      for (int64_t i = R.above_begin; i < R.above_end; ++i) {
        const double s = score_at(c * chunk_ + B.above[i]);
        if (s < m) {
          m = s;
          n = 1;
        } else if (s == m) {
          ++n;
        }
      }
      mins[c] = m;
      counts[c] = n;
    });
    *v = *std::min_element(mins.begin(), mins.end());
    *n_eq = 0;
    for (int64_t c = 0; c < n_chunks_; ++c)
      if (mins[c] == *v) *n_eq += counts[c];
  }

  void finish_bracket() {
    const int64_t need = k_ - n_above_;  // 0 <= need <= n_cands_
    double v = kInf;                     // candidates with score > v are all taken, == v partly
    int64_t ties_to_take = 0;
    if (need == 0) {
      double m;
      int64_t n;
      min_of_above(&m, &n);
      result_.threshold = m;
      result_.n_tied = n;
    } else {
      int64_t n_gt, n_eq;
      kth_candidate(need, &v, &n_gt, &n_eq);
      ties_to_take = need - n_gt;  // >= 1
      result_.threshold = v;
      result_.n_tied = n_eq;
    }
    // Per chunk: candidates above v and tied with v; then in flat order, which ties are taken and where
    // each chunk's output starts.
    std::vector<int64_t> gt(n_chunks_, 0), eq(n_chunks_, 0);
    if (need > 0) {
      parallel_for_dynamic(n_chunks_, [&](int64_t c, int) {
        const ChunkRecord& R = records_[c];
        const PodBuffer<Candidate>& cands = bufs_[R.thread].cands;
        int64_t g = 0, e = 0;
        for (int64_t i = R.cand_begin; i < R.cand_end; ++i) {
          g += cands[i].score > v;
          e += cands[i].score == v;
        }
        gt[c] = g;
        eq[c] = e;
      });
    }
    std::vector<int64_t> eq_take(n_chunks_, 0), offset(n_chunks_ + 1, 0);
    int64_t ties_left = ties_to_take;
    for (int64_t c = 0; c < n_chunks_; ++c) {
      const ChunkRecord& R = records_[c];
      eq_take[c] = std::min(eq[c], ties_left);
      ties_left -= eq_take[c];
      offset[c + 1] = offset[c] + (R.above_end - R.above_begin) + gt[c] + eq_take[c];
    }
    if (offset[n_chunks_] != k_) throw std::logic_error("select_topk: internal count mismatch");
    // Merge each chunk's certain indices and chosen candidates (both ascending) into the output.
    parallel_for_dynamic(n_chunks_, [&](int64_t c, int) {
      const ChunkRecord& R = records_[c];
      const ThreadBuffers& B = bufs_[R.thread];
      const uint16_t* a = B.above.data() + R.above_begin;
      const uint16_t* a_end = B.above.data() + R.above_end;
      const int64_t chunk_begin = c * chunk_;
      int64_t* o = out_ + offset[c];
      int64_t eq_left = eq_take[c];
      for (int64_t i = R.cand_begin; i < R.cand_end; ++i) {
        const Candidate& cd = B.cands[i];
        bool take = cd.score > v;
        if (!take && cd.score == v && eq_left > 0) {
          take = true;
          --eq_left;
        }
        if (!take) continue;
        while (a < a_end && chunk_begin + *a < cd.index) *o++ = chunk_begin + *a++;
        *o++ = cd.index;
      }
      while (a < a_end) *o++ = chunk_begin + *a++;
    });
  }

  // ---- the exact fallback: radix select on the score bits ----------------------------------------------------
  void radix_select() {
    result_.stats.used = SelectStats::Used::Radix;
    const int nt = parallel_threads(n_chunks_);
    constexpr int kBuckets = 1 << 16;
    std::vector<std::vector<int64_t>> hist(nt, std::vector<int64_t>(kBuckets));
    uint64_t prefix = 0;  // the score bits fixed so far
    int64_t rank = k_;    // rank (1-based, from the top) of the k-th score within the current bucket
    int64_t bucket_count = 0;
    for (int level = 0; level < 4; ++level) {
      const int shift = 48 - 16 * level;
      for (auto& h : hist) std::fill(h.begin(), h.end(), 0);
      std::vector<int64_t> n_det(nt, 0);
      std::vector<char> bad(nt, 0);
      ++result_.stats.passes;
      parallel_for_dynamic(n_chunks_, [&](int64_t c, int thread) {
        int64_t* h = hist[thread].data();
        int64_t nd = 0;
        bool bd = false;
        score_chunk(c, kern_, [&](int64_t, const double* s, int n, const BlockStats& st) {
          nd += st.n_detrimental;
          bd |= st.nonfinite;
          if (st.n_detrimental == 0) return;
          for (int i = 0; i < n; ++i) {
            if (!(s[i] > 0.0)) continue;
            const uint64_t u = double_to_bits(s[i]);
            if (level == 0 || (u >> (shift + 16)) == prefix) ++h[(u >> shift) & 0xffffu];
          }
        });
        n_det[thread] += nd;
        bad[thread] |= bd;
      });
      if (level == 0) {
        if (std::any_of(bad.begin(), bad.end(), [](char b) { return b != 0; }))
          throw_first_nonfinite(thetas_, grads_, false);
        int64_t d = 0;
        for (int64_t x : n_det) d += x;
        result_.stats.n_detrimental = d;
        if (k_ > d) throw std::invalid_argument(count_message(k_, d));
      }
      int64_t cum = 0;
      for (int b = kBuckets - 1; b >= 0; --b) {
        int64_t cnt = 0;
        for (const auto& h : hist) cnt += h[b];
        if (cum + cnt >= rank) {
          rank -= cum;
          prefix = (prefix << 16) | static_cast<uint64_t>(b);
          bucket_count = cnt;
          break;
        }
        cum += cnt;
      }
    }
    const double v = bits_to_double(prefix);
    result_.threshold = v;
    result_.n_tied = bucket_count;
    const int64_t ties_to_take = rank;  // 1 <= rank <= bucket_count

    // Count per chunk, then write per chunk at its offset.
    std::vector<int64_t> gt(n_chunks_, 0), eq(n_chunks_, 0);
    ++result_.stats.passes;
    parallel_for_dynamic(n_chunks_, [&](int64_t c, int) {
      int64_t g = 0, e = 0;
      score_chunk(c, kern_, [&](int64_t, const double* s, int n, const BlockStats& st) {
        if (st.n_detrimental == 0) return;
        for (int i = 0; i < n; ++i) {
          g += s[i] > v;
          e += s[i] == v;
        }
      });
      gt[c] = g;
      eq[c] = e;
    });
    std::vector<int64_t> eq_take(n_chunks_), offset(n_chunks_ + 1, 0);
    int64_t ties_left = ties_to_take;
    for (int64_t c = 0; c < n_chunks_; ++c) {
      eq_take[c] = std::min(eq[c], ties_left);
      ties_left -= eq_take[c];
      offset[c + 1] = offset[c] + gt[c] + eq_take[c];
    }
    if (offset[n_chunks_] != k_) throw std::logic_error("select_topk: internal count mismatch (radix)");
    ++result_.stats.passes;
    parallel_for_dynamic(n_chunks_, [&](int64_t c, int) {
      if (gt[c] + eq_take[c] == 0) return;
      int64_t* o = out_ + offset[c];
      int64_t eq_left = eq_take[c];
      score_chunk(c, kern_, [&](int64_t flat0, const double* s, int n, const BlockStats& st) {
        if (st.n_detrimental == 0) return;
        for (int i = 0; i < n; ++i) {
          if (s[i] > v || (s[i] == v && eq_left > 0)) {
            if (s[i] == v) --eq_left;
            *o++ = flat0 + i;
          }
        }
      });
    });
  }

  const std::vector<ConstSpan>& thetas_;
  const std::vector<ConstSpan>& grads_;
  const ScoreSpec spec_;
  const int64_t k_;
  int64_t* const out_;
  const SelectOptions opt_;
  FlatLayout layout_;
  int64_t total_ = 0, chunk_ = 1, n_chunks_ = 0;
  ScoreKernels kern_;

  std::vector<ThreadBuffers> bufs_;
  std::vector<ChunkRecord> records_;
  int64_t n_above_ = 0, n_cands_ = 0;
  bool any_nonfinite_ = false;
  SelectResult result_;
};

}  // namespace

SelectResult select_topk(const std::vector<ConstSpan>& thetas, const std::vector<ConstSpan>& grads,
                         const ScoreSpec& spec, int64_t k, int64_t* out_indices, const SelectOptions& options) {
  Selector selector(thetas, grads, spec, k, out_indices, options);
  return selector.run();
}

}  // namespace kernels
}  // namespace mft
