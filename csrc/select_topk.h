// mft::select_topk: the k most detrimental elements over a list of (theta, grad) tensors, exactly,
// without materializing the scores or concatenating the tensors.
//
// Result: the same set as "score every element (detrimental.h), keep score > 0, sort by (score
// descending, flat index ascending), take the first k", returned as flat indices sorted ascending, plus
// the threshold (the k-th largest score, +inf when k == 0) and n_tied (detrimental elements whose score
// equals the threshold, selected or not).
//
// Algorithm (cost: about one pass over theta and grad):
//  1. Sample: one element drawn at a seeded pseudo-random position in each of S equal strata of the flat
//     index space (S ~ 131K), scored. The sample rank r = k*S/N of the k-th score gets a margin
//     d = z*sqrt(r(1 - r/S)) + slack (z = 6), giving a bracket [lo, hi] = [sample score at rank r+d,
//     sample score at rank r-d] that holds the true k-th score except with negligible probability.
//  2. One parallel streaming pass (dynamic chunks of <= 2^16 elements of the flat space, per-thread
//     buffers): scores are computed in blocks with the CPU path's kernels; a vector compare finds the
//     rare elements with score >= lo; those with score > hi are certain (a 16-bit offset in the chunk
//     is kept), the others are candidates (score, index). The pass aborts early when the certain ones
//     exceed k or the candidates their cap.
//  3. If certain <= k <= certain + candidates, the threshold is the (k - certain)-th largest candidate
//     score (a histogram on the score bits, then nth_element inside one bucket); ties at it are taken
//     lowest index first; per chunk, certain and chosen candidates (both already in index order) merge
//     straight into the output. Memory: 2 bytes per certain element + 16 per candidate.
//  Otherwise (bracket missed, or too many candidates from heavy ties) an exact radix select on the
//  score bits runs instead: 4 histogram passes (16 bits each) find the threshold, one pass counts per
//  chunk, one writes. Small inputs (N <= full_scan_below) skip the sample: every detrimental element is
//  a candidate. All branches give the same result; the seed changes only the speed.
#pragma once

#include <cstdint>
#include <vector>

#include "detrimental.h"
#include "mft/kernel_types.h"

namespace mft {
namespace kernels {

struct SelectOptions {
  uint64_t seed = 0;
  int64_t sample_size = int64_t(1) << 16;      // strata in the sample (capped at N)
  int64_t sample_run = 4;                      // consecutive elements drawn per stratum (one cache miss)
  int64_t full_scan_below = int64_t(1) << 18;  // N <= this: no sample, all detrimental are candidates
  double z = 6.0;                              // bracket margin in standard deviations ...
  double slack = 16.0;                         // ... plus this many sample ranks
  int64_t candidate_cap = 0;                   // 0: automatic (4x the expected candidates, >= 2^20)
  enum class Strategy { Auto, Full, Radix, Bracket };  // all but Auto force a strategy (tests)
  Strategy strategy = Strategy::Auto;
  double bracket_lo = 0.0, bracket_hi = 0.0;  // Strategy::Bracket: this bracket (0 < lo <= hi), no sample
};

struct SelectStats {
  enum class Used { Bracket, Full, Radix, Empty };
  Used used = Used::Empty;
  bool bracket_missed = false;  // the sampled bracket failed and radix select ran
  int passes = 0;               // full passes over theta/grad (aborted ones included)
  int64_t n_above = 0;          // elements certain from the bracket pass
  int64_t n_candidates = 0;     // candidates kept by the bracket pass
  int64_t n_detrimental = -1;   // total detrimental elements, when a complete pass counted them
  double seconds_sample = 0.0;  // wall time of the phases (for benchmarks)
  double seconds_pass = 0.0;
  double seconds_finish = 0.0;  // threshold, ties and output (or the whole radix select)
};

struct SelectResult {
  double threshold = 0.0;
  int64_t n_tied = 0;
  SelectStats stats;
};

// Writes the k selected flat indices, ascending, to out_indices[0..k). thetas[t] and grads[t] must have
// equal numel. Throws std::invalid_argument when k < 0 or k exceeds the number of detrimental elements,
// NonFiniteError ("thetas[t]"/"grads[t]") on Inf/NaN anywhere.
SelectResult select_topk(const std::vector<ConstSpan>& thetas, const std::vector<ConstSpan>& grads,
                         const ScoreSpec& spec, int64_t k, int64_t* out_indices,
                         const SelectOptions& options = SelectOptions());

// Where select_and_zero writes: data[t] is the storage thetas[t] reads from (writable), every theta of
// one dtype of elem_size (2 or 4) bytes; values receives k elements of that size.
struct ZeroTarget {
  std::vector<void*> data;
  std::size_t elem_size = 4;
  void* values = nullptr;
};

// select_topk, then element out_indices[i] is zeroed (all bits zero) after its bits are copied to
// values[i], in the same streaming pass: the elements certain from the bracket are zeroed as the pass
// reads them, the chosen candidates at the end. When it throws, every tensor is as it was. The caller
// ensures that no theta shares memory with another theta or a grad (zero_topk() checks it).
SelectResult select_and_zero(const std::vector<ConstSpan>& thetas, const std::vector<ConstSpan>& grads,
                             const ScoreSpec& spec, int64_t k, int64_t* out_indices, const ZeroTarget& zero,
                             const SelectOptions& options = SelectOptions());

}  // namespace kernels
}  // namespace mft
