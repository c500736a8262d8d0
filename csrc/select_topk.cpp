#include "select_topk.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <functional>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "mft/memory.h"
#include "mft/parallel.h"
#include "zero_masked.h"

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
  ~PodBuffer() { cached_free(data_); }

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
  // From the block cache (mft/memory.h): the buffers of one call are reused by the next, with no page
  // faults.
  void grow_to(std::size_t n) {
    T* p = static_cast<T*>(cached_alloc(n * sizeof(T)));
    if (size_ > 0) std::memcpy(p, data_, size_ * sizeof(T));
    cached_free(data_);
    data_ = p;
    cap_ = n;
  }
  T* data_ = nullptr;
  std::size_t size_ = 0, cap_ = 0;
};

// A candidate (lo <= score <= hi) of the streaming pass. When zeroing, `bits` holds the element's bits
// from before the pass (it was zeroed when score > the zeroing threshold).
struct Candidate {
  double score;
  uint32_t bits;
  uint16_t offset;        // from the chunk start (chunks <= 2^16 elements)
  uint16_t above_before;  // certain elements of the chunk at lower offsets (< the chunk size)
};
static_assert(sizeof(Candidate) == 16, "candidates are 16 bytes");

// Where one chunk's output went in its thread's buffers (a contiguous range of each).
struct ChunkRecord {
  int thread = 0;
  int64_t above_begin = 0, above_end = 0;
  int64_t cand_begin = 0, cand_end = 0;
};

struct ThreadBuffers {
  PodBuffer<uint16_t> above;       // score > hi: offset from the chunk start (chunks <= 2^16), ascending
  PodBuffer<uint32_t> above_vals;  // when zeroing: the bits each `above` element held before it was zeroed
  PodBuffer<Candidate> cands;      // lo <= score <= hi, ascending offset within a chunk
  bool nonfinite = false;
};

// Scratch of one block of the streaming pass: hit positions and their exact scores.
struct BlockScratch {
  alignas(64) int32_t pos[kScoreBlock + 16];
  alignas(64) double score[kScoreBlock];
  alignas(64) float theta[kScoreBlock];
  alignas(64) float grad[kScoreBlock];
};

// No zeroing: the element type parameter of the hit handling when nothing is written.
struct NoZero {};

float float_of_bits(uint32_t bits, DType dtype) {
  switch (dtype) {
    case DType::F32:
      return bits_to_float(bits);
    case DType::F16:
      return half_to_float(static_cast<uint16_t>(bits));
    default:
      return bf16_to_float(static_cast<uint16_t>(bits));
  }
}

std::string count_message(int64_t k, int64_t n_det) {
  return "k=" + std::to_string(k) + " exceeds the number of detrimental elements (" + std::to_string(n_det) +
         "); k must be in [0, " + std::to_string(n_det) + "]";
}

// Drops elements of v[0..n) below its need-th largest, moving the rest to the front and returning how
// many remain, so that later order statistics of rank <= need see a shorter array (the same values at
// those ranks): a threshold q from every 8th element, used only when at least `need` elements are >= q.
// Linear time; nth_element over the whole sample was the sample's largest cost.
int64_t keep_top(double* v, int64_t n, int64_t need) {
  if (need < 1 || n < 4096 || need > n / 8) return n;
  PodBuffer<double> sub;
  double* w = sub.room(static_cast<std::size_t>(n / 8 + 1));
  int64_t ns = 0;
  for (int64_t i = 0; i < n; i += 8) w[ns++] = v[i];
  const int64_t r = std::min<int64_t>(ns, 2 * (need / 8) + 64);
  std::nth_element(w, w + (r - 1), w + ns, std::greater<double>());
  const double q = w[r - 1];
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) kept += v[i] >= q;
  if (kept < need) return n;
  int64_t out = 0;
  for (int64_t i = 0; i < n; ++i)
    if (v[i] >= q) v[out++] = v[i];
  return out;
}

class Selector {
 public:
  // With `zero`, the selected elements are also zeroed in place and their previous bits written to
  // zero->values (see select_and_zero).
  Selector(const std::vector<ConstSpan>& thetas, const std::vector<ConstSpan>& grads, const ScoreSpec& spec,
           int64_t k, int64_t* out, const SelectOptions& opt, const ZeroTarget* zero = nullptr)
      : thetas_(thetas), grads_(grads), spec_(spec), k_(k), out_(out), opt_(opt), zero_(zero) {
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
    if (!zero_) return run_selection();
    // Zeroing: any error leaves the tensors as they were (the pass's zeros are undone before rethrowing;
    // nothing after the finish or the fallback's zero_masked can throw).
    try {
      return run_selection();
    } catch (...) {
      undo_zeroing();
      throw;
    }
  }

 private:
  SelectResult run_selection() {
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
      zero_selected();
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
      sampled_bracket(&lo, &hi, &zthr_, &cap, &expect_above, &expect_cands);
    }
    if (!(zthr_ >= lo && zthr_ <= hi)) zthr_ = hi;
    result_.stats.used = full ? SelectStats::Used::Full : SelectStats::Used::Bracket;
    double t1 = seconds_now();
    result_.stats.seconds_sample = t1 - t0;
    const bool complete = bracket_pass(lo, hi, cap, expect_above, expect_cands);
    t0 = t1;
    t1 = seconds_now();
    result_.stats.seconds_pass = t1 - t0;
    if (any_nonfinite_) {
      undo_zeroing();
      throw_first_nonfinite(thetas_, grads_, false);
    }
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
    undo_zeroing();
    bufs_.clear();
    records_.clear();
    radix_select();
    zero_selected();
    result_.stats.seconds_finish = seconds_now() - t1;
    return result_;
  }

  // ---- zeroing ------------------------------------------------------------------------------------------------
  // After radix select: zero out_[0..k) the plain way (the rare path).
  void zero_selected() {
    if (!zero_) return;
    std::vector<MutSpan> spans(thetas_.size());
    for (std::size_t t = 0; t < thetas_.size(); ++t) spans[t] = MutSpan{zero_->data[t], thetas_[t].numel};
    zero_masked(spans, zero_->elem_size, out_, k_, zero_->values);
  }

  // Writes back what the streaming pass zeroed (its records and buffers must still be there).
  void undo_zeroing() {
    if (!pass_zeroed_) return;
    pass_zeroed_ = false;
    parallel_for_dynamic(static_cast<int64_t>(records_.size()), [&](int64_t c, int) {
      const ChunkRecord& R = records_[c];
      const ThreadBuffers& B = bufs_[R.thread];
      const int64_t chunk_begin = c * chunk_;
      auto put = [&](int64_t flat, uint32_t bits) {
        const int64_t t = layout_.tensor_of(flat);
        const int64_t j = flat - layout_.offset(t);
        if (zero_->elem_size == 4)
          static_cast<uint32_t*>(zero_->data[t])[j] = bits;
        else
          static_cast<uint16_t*>(zero_->data[t])[j] = static_cast<uint16_t>(bits);
      };
      for (int64_t i = R.above_begin; i < R.above_end; ++i) put(chunk_begin + B.above[i], B.above_vals[i]);
      for (int64_t i = R.cand_begin; i < R.cand_end; ++i)
        if (B.cands[i].score > zthr_) put(chunk_begin + B.cands[i].offset, B.cands[i].bits);
    });
  }

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
  double score_at(int64_t flat, float theta) const {
    const int64_t t = layout_.tensor_of(flat);
    return score_one(theta, load_float(grads_[t], flat - layout_.offset(t)), spec_);
  }

  // ---- 1. the sampled bracket ------------------------------------------------------------------------
  void sampled_bracket(double* lo, double* hi, double* zthr, int64_t* cap, int64_t* expect_above,
                       int64_t* expect_cands) {
    const int64_t n_strata = std::max<int64_t>(1, std::min({opt_.sample_size, total_, int64_t(1) << 24}));
    const int64_t n_tasks = std::min<int64_t>(n_strata, 64);
    const uint64_t key = splitmix64(opt_.seed ^ 0x6d66745f73656c65ull);
    const int64_t run = std::max<int64_t>(1, opt_.sample_run);
    // Stratum i is [start(i), start(i+1)) with start(i) = floor(i*N/S), computed without overflow; its run
    // of `length` elements starts at a uniform draw in [0, size - length] (multiply-high, no division).
    const int64_t per = total_ / n_strata, rem = total_ % n_strata;
    auto stratum_start = [&](int64_t i) { return i * per + (i * rem) / n_strata; };
    auto run_of = [&](int64_t i, int64_t* length) {
      const int64_t start = stratum_start(i), size = stratum_start(i + 1) - start;
      *length = std::min(run, size);
      const uint64_t draw = static_cast<uint64_t>(
          (static_cast<unsigned __int128>(splitmix64(key + static_cast<uint64_t>(i))) *
           static_cast<uint64_t>(size - *length + 1)) >> 64);
      return start + static_cast<int64_t>(draw);
    };
    auto address = [&](const ConstSpan& sp, int64_t j) {
      return static_cast<const char*>(sp.data) + j * static_cast<int64_t>(dtype_size(sp.dtype));
    };
    // Task t writes the detrimental scores of its strata [i0, i1) to its slice of `sample` (from the block
    // cache: fresh memory costs page faults), compacted afterwards.
    PodBuffer<double> sample;
    double* const slots = sample.room(static_cast<std::size_t>(n_strata * run));
    std::vector<int64_t> found(n_tasks, 0), drawn(n_tasks, 0);
    parallel_for_dynamic(n_tasks, [&](int64_t task, int) {
      const int64_t i0 = task * n_strata / n_tasks, i1 = (task + 1) * n_strata / n_tasks;
      double* out = slots + i0 * run;
      // Each run is a cache (and TLB) miss: prefetch a few strata ahead to overlap them. Values are
      // collected into blocks and scored with the path's block kernel; an Inf/NaN may give a garbage
      // sample score, which only affects speed (the pass reports the error).
      constexpr int64_t kAhead = 16;
      alignas(64) float tv[kScoreBlock], gv[kScoreBlock];
      alignas(64) double sv[kScoreBlock];
      int filled = 0;
      int64_t count = 0, kept = 0;
      auto flush = [&] {
        kern_.score(tv, gv, filled, kern_.lr32, false, sv);
        for (int q = 0; q < filled; ++q) {
          out[kept] = sv[q];
          kept += sv[q] > 0.0;
        }
        count += filled;
        filled = 0;
      };
      int64_t t = layout_.tensor_of(stratum_start(i0)), t_ahead = t;
      for (int64_t i = i0; i < i1; ++i) {
        if (i + kAhead < i1) {
          int64_t unused;
          const int64_t f = run_of(i + kAhead, &unused);
          while (f >= layout_.end(t_ahead)) ++t_ahead;
          __builtin_prefetch(address(thetas_[t_ahead], f - layout_.offset(t_ahead)));
          __builtin_prefetch(address(grads_[t_ahead], f - layout_.offset(t_ahead)));
        }
        int64_t length;
        const int64_t first = run_of(i, &length);
        if (filled + length > kScoreBlock) flush();
        for (int64_t f = first; f < first + length; ++f) {
          while (f >= layout_.end(t)) ++t;
          tv[filled] = load_float(thetas_[t], f - layout_.offset(t));
          gv[filled] = load_float(grads_[t], f - layout_.offset(t));
          ++filled;
        }
      }
      if (filled > 0) flush();
      found[task] = kept;
      drawn[task] = count;
    });
    int64_t m = 0;
    for (int64_t task = 0; task < n_tasks; ++task) {
      const int64_t i0 = task * n_strata / n_tasks;
      std::memmove(slots + m, slots + i0 * run, static_cast<std::size_t>(found[task]) * sizeof(double));
      m += found[task];
    }

    // Rank of the k-th score in the sample (descending, 1-based) and a margin well past its spread. The
    // elements of a run may be correlated (neighbours in a weight matrix): the variance is taken twice
    // the independent one (a run of 4 perfectly correlated elements still leaves z/sqrt(2) deviations).
    int64_t n_drawn = 0;
    for (int64_t c : drawn) n_drawn += c;
    const double S = static_cast<double>(std::max<int64_t>(n_drawn, 1));
    const double deff = run > 1 ? 2.0 : 1.0;
    const double r = static_cast<double>(k_) * S / static_cast<double>(total_);
    const double d = opt_.z * std::sqrt(std::max(0.0, deff * r * (1.0 - r / S))) + opt_.slack;
    const int64_t r_hi = static_cast<int64_t>(std::floor(r - d));
    const int64_t r_lo = static_cast<int64_t>(std::ceil(r + d));
    auto desc = std::greater<double>();
    double* const x = slots;
    m = keep_top(x, m, std::min(r_lo, m));
    int64_t top = m;
    if (r_lo <= m) {
      std::nth_element(x, x + (r_lo - 1), x + m, desc);
      *lo = x[r_lo - 1];
      top = r_lo - 1;
    }
    if (r_hi >= 1 && r_hi <= top) {
      std::nth_element(x, x + (r_hi - 1), x + top, desc);
      *hi = x[r_hi - 1];
    }
    // The point estimate of the threshold (sample rank r), inside the bracket: when zeroing, the pass
    // zeroes candidates above it, so that only those between it and the true threshold need a fix-up.
    const int64_t mid_begin = std::max<int64_t>(r_hi, 0);
    const int64_t r_mid = std::min<int64_t>(top, std::max<int64_t>(mid_begin + 1, std::llround(r)));
    *zthr = *hi;
    if (r_mid > mid_begin) {
      std::nth_element(x + mid_begin, x + (r_mid - 1), x + top, desc);
      *zthr = std::min(*hi, x[r_mid - 1]);
    }
    const double per_sample = static_cast<double>(total_) / S;
    const double width = static_cast<double>(std::min(r_lo, m) - std::max<int64_t>(r_hi, 0) + 1);
    *expect_cands = static_cast<int64_t>(std::max(0.0, width) * per_sample);
    *expect_above = static_cast<int64_t>(static_cast<double>(std::max<int64_t>(r_hi - 1, 0)) * per_sample);
    *cap = opt_.candidate_cap > 0 ? opt_.candidate_cap
                                  : std::max<int64_t>(int64_t(1) << 20, 4 * (*expect_cands));
  }

  // ---- 2. the streaming pass ----------------------------------------------------------------------------
  // Returns false when aborted (more than k certain, or more than cap candidates). When zeroing, the
  // certain elements (score > hi) are zeroed as the pass goes, their bits kept in above_vals.
  bool bracket_pass(double lo, double hi, int64_t cap, int64_t expect_above, int64_t expect_cands) {
    const int nt = parallel_threads(n_chunks_);
    bufs_.clear();
    bufs_.resize(nt);
    for (auto& b : bufs_) {
      // Room for an uneven split between threads: growing a buffer later takes a new (maybe fresh) block.
      const std::size_t above = static_cast<std::size_t>(std::min(k_, expect_above + expect_above / 4) / nt + 1024);
      b.above.reserve(above);
      if (zero_) b.above_vals.reserve(above);
      b.cands.reserve(static_cast<std::size_t>(std::min(cap, expect_cands + expect_cands / 4) / nt + 1024));
    }
    records_.assign(n_chunks_, ChunkRecord());
    std::atomic<int64_t> total_above{0}, total_cands{0};
    std::atomic<bool> abort{false};
    ++result_.stats.passes;
    pass_lo_ = lo;
    pass_hi_ = hi;
    // The fp32 prefilter needs lo > 0 in its range; the exact scores decide in any case.
    const bool use_bound = bound_applies(lo);
    if (zero_) pass_zeroed_ = true;
    parallel_for_dynamic(n_chunks_, [&](int64_t c, int thread) {
      if (abort.load(std::memory_order_relaxed)) return;
      ThreadBuffers& B = bufs_[thread];
      ChunkRecord& R = records_[c];
      R.thread = thread;
      R.above_begin = R.above_end = static_cast<int64_t>(B.above.size());
      R.cand_begin = R.cand_end = static_cast<int64_t>(B.cands.size());
      // The record is completed when the chunk ends, also by an exception, so that undo_zeroing sees
      // every zero (not per block: records of chunks running at the same time share cache lines).
      struct CloseRecord {
        ChunkRecord& R;
        const ThreadBuffers& B;
        ~CloseRecord() {
          R.above_end = static_cast<int64_t>(B.above.size());
          R.cand_end = static_cast<int64_t>(B.cands.size());
        }
      };
      {
        const CloseRecord close{R, B};
        B.nonfinite |= pass_chunk(c, lo, hi, use_bound ? bound_threshold(lo) : 0.f, use_bound, B);
      }
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

  // Chunk c of the streaming pass into B; returns whether it met an Inf/NaN. With use_bound, the fp32
  // prefilter (bound >= lo_f) picks the elements whose exact score is computed; otherwise every score is.
  bool pass_chunk(int64_t c, double lo, double hi, float lo_f, bool use_bound, ThreadBuffers& B) const {
    const ScoreKernels& kern = kern_;
    const int64_t above_base = static_cast<int64_t>(B.above.size());
    BlockScratch S;
    bool bad = false;
    const int64_t chunk_begin = c * chunk_;
    for_each_piece(layout_, chunk_begin, std::min(total_, chunk_begin + chunk_),
                   [&](int64_t t, int64_t b, int64_t e, int64_t base) {
      float_blocks(kern, thetas_[t], grads_[t], b, e, [&](int64_t lb, const float* th, const float* g, int n) {
        // S.pos[0..hits): block positions worth an exact look; S.score: their exact scores.
        int hits;
        if (use_bound) {
          hits = kern.filter(th, g, n, kern.lr32, lo_f, S.pos, &bad);
          if (hits == 0) return;
          for (int j = 0; j < hits; ++j) {
            S.theta[j] = th[S.pos[j]];
            S.grad[j] = g[S.pos[j]];
          }
          kern.score(S.theta, S.grad, hits, kern.lr32, false, S.score);
        } else {
          alignas(64) double all[kScoreBlock];
          bad |= kern.score(th, g, n, kern.lr32, false, all).nonfinite;
          hits = kern.find_ge(all, n, lo, S.pos);
          if (hits == 0) return;
          for (int j = 0; j < hits; ++j) S.score[j] = all[S.pos[j]];
        }
        const int64_t offset0 = base + lb - chunk_begin;
        if (!zero_)
          emit_hits<NoZero>(B, S, hits, lo, hi, zthr_, offset0, above_base, nullptr);
        else if (zero_->elem_size == 4)
          emit_hits(B, S, hits, lo, hi, zthr_, offset0, above_base, static_cast<uint32_t*>(zero_->data[t]) + lb);
        else
          emit_hits(B, S, hits, lo, hi, zthr_, offset0, above_base, static_cast<uint16_t*>(zero_->data[t]) + lb);
      });
    });
    return bad;
  }

  // Sorts the hits of one block: score > hi is certain, lo <= score <= hi is a candidate, below lo (a
  // prefilter false positive) is dropped. When zeroing (W an element type), every element with score >
  // zthr (certain ones, and candidates above the sample's estimate of the threshold) is zeroed at once,
  // its bits kept. Branch-free: write to every list, advance the one that applies (the mix is
  // unpredictable), and store to theta either way (the element's own value when it stays).
  template <class W>
  static MFT_INLINE void emit_hits(ThreadBuffers& B, const BlockScratch& S, int hits, double lo, double hi,
                                   double zthr, int64_t offset0, int64_t above_base, W* theta) {
    constexpr bool kZero = !std::is_same<W, NoZero>::value;
    uint16_t* ap = B.above.room(static_cast<std::size_t>(hits));
    const uint16_t* const chunk_above = B.above.data() + above_base;
    Candidate* cp = B.cands.room(static_cast<std::size_t>(hits));
    uint32_t* vp = kZero ? B.above_vals.room(static_cast<std::size_t>(hits)) : nullptr;
    for (int j = 0; j < hits; ++j) {
      const int p = S.pos[j];
      const double v = S.score[j];
      const bool up = v > hi;
      const bool in = (v >= lo) & !up;
      const uint16_t offset = static_cast<uint16_t>(offset0 + p);
      *ap = offset;
      ap += up;
      uint32_t bits = 0;
      if constexpr (kZero) {
        const W old = theta[p];
        bits = old;
        *vp = old;
        vp += up;
        theta[p] = v > zthr ? W(0) : old;
      }
      *cp = Candidate{v, bits, offset, static_cast<uint16_t>(ap - chunk_above)};
      cp += in;
    }
    B.above.commit(ap);
    B.cands.commit(cp);
    if constexpr (kZero) B.above_vals.commit(vp);
  }

  // ---- 3. finishing from the candidates -------------------------------------------------------------------
  // The need-th largest candidate score (need >= 1), and how many candidates are > and == it. A
  // histogram on the score bits (monotone for positive doubles) narrows it to one bucket, then
  // nth_element inside that bucket: cheaper than nth_element over all candidates.
  void kth_candidate(int64_t need, double* v, int64_t* n_gt, int64_t* n_eq) {
    const int nt = static_cast<int>(bufs_.size());
    // The candidates' range of score bits: the bracket when it is finite, else a pass finds it.
    uint64_t base = double_to_bits(pass_lo_), top = double_to_bits(pass_hi_);
    if (!(pass_hi_ < kInf)) {
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
      base = *std::min_element(bmin.begin(), bmin.end());
      top = *std::max_element(bmax.begin(), bmax.end());
    }
    const uint64_t span = top - base;
    constexpr int kBits = 16;
    int shift = 0;
    while ((span >> shift) >= (uint64_t(1) << kBits)) ++shift;
    const std::size_t n_buckets = static_cast<std::size_t>(span >> shift) + 1;
    PodBuffer<uint32_t> hist_buf;  // nt histograms (block cache: no page faults on repeated calls)
    uint32_t* const hist = hist_buf.room(static_cast<std::size_t>(nt) * n_buckets);
    std::memset(hist, 0, static_cast<std::size_t>(nt) * n_buckets * sizeof(uint32_t));
    parallel_for_dynamic(nt, [&](int64_t t, int) {
      const auto& c = bufs_[t].cands;
      uint32_t* h = hist + static_cast<std::size_t>(t) * n_buckets;
      for (std::size_t i = 0; i < c.size(); ++i) ++h[(double_to_bits(c[i].score) - base) >> shift];
    });
    // Walk down from the top bucket to the one holding the need-th score.
    int64_t above_bucket = 0;
    std::size_t bucket = n_buckets;
    while (bucket > 0) {
      --bucket;
      int64_t cnt = 0;
      for (int t = 0; t < nt; ++t) cnt += hist[static_cast<std::size_t>(t) * n_buckets + bucket];
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
        const int64_t flat = c * chunk_ + B.above[i];
        // When zeroing, the element is already 0: score its saved value.
        const double s = zero_ ? score_at(flat, float_of_bits(B.above_vals[i], thetas_[0].dtype)) : score_at(flat);
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
    if (!zero_)
      merge_chunks<NoZero>(v, offset, eq_take);
    else if (zero_->elem_size == 4)
      merge_chunks<uint32_t>(v, offset, eq_take);
    else
      merge_chunks<uint16_t>(v, offset, eq_take);
    pass_zeroed_ = false;  // complete: the zeros are the result now
  }

  // Merges each chunk's certain indices and chosen candidates (both ascending) into the output. When
  // zeroing (W an element type), also writes the saved values, and fixes up the candidates between the
  // pass's zeroing threshold and the true one: chosen but not zeroed (zeroed now), or zeroed but not
  // chosen (restored). Those are scattered over theta (cache and TLB misses), so they are collected
  // and done in a loop that prefetches ahead.
  template <class W>
  void merge_chunks(double v, const std::vector<int64_t>& offset, const std::vector<int64_t>& eq_take) {
    constexpr bool kZero = !std::is_same<W, NoZero>::value;
    struct FixUp {
      W* element;
      W* value_out;  // chosen: the output slot for the value; nullptr: restore `bits`
      uint32_t bits;
    };
    std::vector<std::vector<FixUp>> fixups(kZero ? parallel_threads(n_chunks_) : 0);
    parallel_for_dynamic(n_chunks_, [&](int64_t c, int thread) {
      const ChunkRecord& R = records_[c];
      const ThreadBuffers& B = bufs_[R.thread];
      const uint16_t* a = B.above.data() + R.above_begin;
      const uint32_t* av = kZero ? B.above_vals.data() + R.above_begin : nullptr;
      const int64_t chunk_begin = c * chunk_;
      int64_t* o = out_ + offset[c];
      W* ov = nullptr;
      int64_t t = 0;
      std::vector<FixUp>* todo = nullptr;
      if constexpr (kZero) {
        ov = static_cast<W*>(zero_->values) + offset[c];
        t = layout_.tensor_of(chunk_begin);
        todo = &fixups[thread];
        todo->clear();
      }
      auto element = [&](int64_t flat) {
        while (flat >= layout_.end(t)) ++t;
        return static_cast<W*>(zero_->data[t]) + (flat - layout_.offset(t));
      };
      // Certain elements [done, end) of the chunk go out as one run (plain loops that vectorize).
      int64_t done = 0;
      auto copy_above = [&](int64_t end) {
        const int64_t n = end - done;
        for (int64_t j = 0; j < n; ++j) o[j] = chunk_begin + a[done + j];
        o += n;
        if constexpr (kZero) {
          for (int64_t j = 0; j < n; ++j) ov[j] = static_cast<W>(av[done + j]);
          ov += n;
        }
        done = end;
      };
      int64_t eq_left = eq_take[c];
      for (int64_t i = R.cand_begin; i < R.cand_end; ++i) {
        const Candidate& cd = B.cands[i];
        const int64_t flat = chunk_begin + cd.offset;
        bool take = cd.score > v;
        if (!take && cd.score == v && eq_left > 0) {
          take = true;
          --eq_left;
        }
        if (!take) {
          if constexpr (kZero)
            if (cd.score > zthr_) todo->push_back(FixUp{element(flat), nullptr, cd.bits});
          continue;
        }
        copy_above(cd.above_before);
        *o++ = flat;
        if constexpr (kZero) {
          if (cd.score > zthr_)
            *ov = static_cast<W>(cd.bits);
          else
            todo->push_back(FixUp{element(flat), ov, 0});
          ++ov;
        }
      }
      copy_above(R.above_end - R.above_begin);
      if constexpr (kZero) {
        constexpr std::size_t kAhead = 16;
        const std::size_t n = todo->size();
        const FixUp* q = todo->data();
        for (std::size_t i = 0; i < std::min(n, kAhead); ++i) __builtin_prefetch(q[i].element, 1);
        for (std::size_t i = 0; i < n; ++i) {
          if (i + kAhead < n) __builtin_prefetch(q[i + kAhead].element, 1);
          if (q[i].value_out) {
            *q[i].value_out = *q[i].element;
            *q[i].element = 0;
          } else {
            *q[i].element = static_cast<W>(q[i].bits);
          }
        }
      }
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
  const ZeroTarget* const zero_;
  bool pass_zeroed_ = false;  // the streaming pass zeroed elements that undo_zeroing() can put back
  double zthr_ = kInf;        // when zeroing, the pass zeroes every element with score > zthr_ (>= lo)
  double pass_lo_ = 0.0, pass_hi_ = kInf;  // the last pass's bracket: candidates have lo <= score <= hi
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

SelectResult select_and_zero(const std::vector<ConstSpan>& thetas, const std::vector<ConstSpan>& grads,
                             const ScoreSpec& spec, int64_t k, int64_t* out_indices, const ZeroTarget& zero,
                             const SelectOptions& options) {
  if (zero.data.size() != thetas.size()) throw std::invalid_argument("select_and_zero: one data pointer per theta");
  if (zero.elem_size != 2 && zero.elem_size != 4)
    throw std::invalid_argument("select_and_zero: element size must be 2 or 4 bytes");
  for (const ConstSpan& t : thetas)
    if (dtype_size(t.dtype) != zero.elem_size || t.dtype != thetas[0].dtype)
      throw std::invalid_argument("select_and_zero: thetas must share one dtype of elem_size bytes");
  Selector selector(thetas, grads, spec, k, out_indices, options, &zero);
  return selector.run();
}

}  // namespace kernels
}  // namespace mft
