#include "zero_masked.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mft/kernel_types.h"
#include "mft/parallel.h"

namespace mft {
namespace kernels {

namespace {

constexpr int64_t kGrain = int64_t(1) << 14;

FlatLayout layout_of(const std::vector<MutSpan>& params) {
  std::vector<int64_t> numels(params.size());
  for (std::size_t t = 0; t < params.size(); ++t) numels[t] = params[t].numel;
  return FlatLayout(numels);
}

// Visits indices[b..e) with the tensor holding each: fn(i, tensor, local_index). Indices ascend, so the
// tensor only moves forward.
template <class F>
void walk(const FlatLayout& layout, const int64_t* indices, int64_t b, int64_t e, const F& fn) {
  if (b >= e) return;
  int64_t t = layout.tensor_of(indices[b]);
  for (int64_t i = b; i < e; ++i) {
    const int64_t flat = indices[i];
    while (flat >= layout.end(t)) ++t;
    fn(i, t, flat - layout.offset(t));
  }
}

[[noreturn]] void throw_bad_index(const int64_t* indices, int64_t i, int64_t total) {
  const std::string at = "indices[" + std::to_string(i) + "]=" + std::to_string(indices[i]);
  // An order violation before a range one at the same position is reported as order: both are the
  // caller's bug, the first is the more telling.
  if (i > 0 && indices[i] <= indices[i - 1])
    throw std::invalid_argument("indices must be strictly increasing (sorted ascending, no duplicates), but " +
                                at + " follows indices[" + std::to_string(i - 1) +
                                "]=" + std::to_string(indices[i - 1]));
  throw std::out_of_range(at + " is out of range for " + std::to_string(total) +
                          " elements (flat indices must be in [0, " + std::to_string(total) + "))");
}

// walk() that checks each index before using it (in range, above the previous one, which for b > 0 is
// indices[b - 1]) and stops at the first that fails; returns its position, or e when all pass.
template <class F>
int64_t walk_checked(const FlatLayout& layout, const int64_t* indices, int64_t b, int64_t e, const F& fn) {
  const int64_t total = layout.total();
  int64_t prev = b > 0 ? indices[b - 1] : -1;
  int64_t t = 0;
  for (int64_t i = b; i < e; ++i) {
    const int64_t flat = indices[i];
    if (__builtin_expect(flat <= prev || flat < 0 || flat >= total, 0)) return i;
    if (i == b) t = layout.tensor_of(flat);
    prev = flat;
    while (flat >= layout.end(t)) ++t;
    fn(i, t, flat - layout.offset(t));
  }
  return e;
}

// One pass: the index checks ride along with the zeroing (no separate pass over the indices). On a bad
// index every zero written so far is put back from `saved` before the error is thrown.
template <class W>
void zero_typed(const std::vector<MutSpan>& params, const FlatLayout& layout, const int64_t* indices, int64_t n,
                void* saved) {
  W* out = static_cast<W*>(saved);
  std::vector<std::pair<int64_t, int64_t>> done(static_cast<std::size_t>(max_threads()), {0, 0});
  std::atomic<int64_t> first_bad{n};
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    const int64_t stop = walk_checked(layout, indices, b, e, [&](int64_t i, int64_t t, int64_t j) {
      W* p = static_cast<W*>(params[t].data) + j;
      out[i] = *p;
      *p = 0;
    });
    done[static_cast<std::size_t>(thread_id())] = {b, stop};
    if (stop == e) return;
    int64_t cur = first_bad.load();
    while (stop < cur && !first_bad.compare_exchange_weak(cur, stop)) {
    }
  });
  const int64_t bad = first_bad.load();
  if (bad == n) return;
  for (const auto& piece : done)
    walk(layout, indices, piece.first, piece.second,
         [&](int64_t i, int64_t t, int64_t j) { static_cast<W*>(params[t].data)[j] = out[i]; });
  throw_bad_index(indices, bad, layout.total());
}

template <class W>
void restore_typed(const std::vector<MutSpan>& params, const FlatLayout& layout, const int64_t* indices,
                   int64_t n, const void* values) {
  const W* in = static_cast<const W*>(values);
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    walk(layout, indices, b, e, [&](int64_t i, int64_t t, int64_t j) { static_cast<W*>(params[t].data)[j] = in[i]; });
  });
}

}  // namespace

void check_flat_indices(const int64_t* indices, int64_t n, int64_t total) {
  // First offending position per piece; the smallest one is reported (same message on any thread count).
  std::atomic<int64_t> first_bad{n};
  parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const bool out_of_range = indices[i] < 0 || indices[i] >= total;
      const bool not_increasing = i > 0 && indices[i] <= indices[i - 1];
      if (out_of_range || not_increasing) {
        int64_t cur = first_bad.load();
        while (i < cur && !first_bad.compare_exchange_weak(cur, i)) {
        }
        return;
      }
    }
  });
  const int64_t i = first_bad.load();
  if (i == n) return;
  throw_bad_index(indices, i, total);
}

void zero_masked(const std::vector<MutSpan>& params, std::size_t elem_size, const int64_t* indices, int64_t n,
                 void* saved) {
  const FlatLayout layout = layout_of(params);
  if (elem_size == 4) {
    zero_typed<uint32_t>(params, layout, indices, n, saved);
  } else if (elem_size == 2) {
    zero_typed<uint16_t>(params, layout, indices, n, saved);
  } else {
    throw std::invalid_argument("zero_masked: element size must be 2 or 4 bytes");
  }
}

void restore(const std::vector<MutSpan>& params, std::size_t elem_size, const int64_t* indices, int64_t n,
             const void* values) {
  const FlatLayout layout = layout_of(params);
  check_flat_indices(indices, n, layout.total());
  if (elem_size == 4) {
    restore_typed<uint32_t>(params, layout, indices, n, values);
  } else if (elem_size == 2) {
    restore_typed<uint16_t>(params, layout, indices, n, values);
  } else {
    throw std::invalid_argument("restore: element size must be 2 or 4 bytes");
  }
}

}  // namespace kernels
}  // namespace mft
