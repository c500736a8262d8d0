// zero_masked() / restore(): exact round trip over a list, index checks.
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "mft/parallel.h"
#include "zero_masked.h"

using namespace mft::kernels;

namespace {

template <class W>
void round_trip(int threads) {
  mft::set_max_threads(threads);
  std::mt19937_64 rng(3);
  std::vector<std::vector<W>> data = {std::vector<W>(1000), std::vector<W>(0), std::vector<W>(70000),
                                      std::vector<W>(3)};
  for (auto& v : data)
    for (auto& x : v) x = static_cast<W>(rng() | 1);  // nonzero bit patterns
  const auto original = data;
  std::vector<MutSpan> spans;
  for (auto& v : data) spans.push_back(MutSpan{v.data(), static_cast<int64_t>(v.size())});
  const int64_t total = 71003;
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < total; ++i)
    if (rng() % 3 == 0 || i == 0 || i == total - 1 || i == 999 || i == 1000) idx.push_back(i);
  std::vector<W> saved(idx.size());
  zero_masked(spans, sizeof(W), idx.data(), static_cast<int64_t>(idx.size()), saved.data());
  // Zeroed exactly where asked, untouched elsewhere, saved the originals.
  std::vector<int64_t> flat_to_tensor;
  bool ok = true;
  std::size_t next = 0;
  int64_t flat = 0;
  for (std::size_t t = 0; t < data.size(); ++t) {
    for (std::size_t j = 0; j < data[t].size(); ++j, ++flat) {
      const bool chosen = next < idx.size() && idx[next] == flat;
      if (chosen) {
        ok &= data[t][j] == 0 && saved[next] == original[t][j];
        ++next;
      } else {
        ok &= data[t][j] == original[t][j];
      }
    }
  }
  CHECK_MSG(ok && next == idx.size(), "zero_masked, element size " + std::to_string(sizeof(W)));
  restore(spans, sizeof(W), idx.data(), static_cast<int64_t>(idx.size()), saved.data());
  CHECK_MSG(data == original, "restore, element size " + std::to_string(sizeof(W)));
}

void errors() {
  std::vector<float> a(10), b(5);
  std::vector<MutSpan> spans = {MutSpan{a.data(), 10}, MutSpan{b.data(), 5}};
  float saved[8];
  const int64_t unsorted[] = {1, 5, 3};
  CHECK_THROWS(zero_masked(spans, 4, unsorted, 3, saved), std::invalid_argument, "indices[2]=3 follows indices[1]=5");
  const int64_t dup[] = {1, 5, 5};
  CHECK_THROWS(zero_masked(spans, 4, dup, 3, saved), std::invalid_argument, "strictly increasing");
  const int64_t high[] = {1, 15};
  CHECK_THROWS(zero_masked(spans, 4, high, 2, saved), std::out_of_range, "indices[1]=15 is out of range for 15");
  const int64_t neg[] = {-1, 2};
  CHECK_THROWS(restore(spans, 4, neg, 2, saved), std::out_of_range, "indices[0]=-1");
  const int64_t ok[] = {0, 14};
  a[0] = 3.f;
  b[4] = -2.f;
  zero_masked(spans, 4, ok, 2, saved);
  CHECK(a[0] == 0.f && b[4] == 0.f && saved[0] == 3.f && saved[1] == -2.f);
  zero_masked(spans, 4, ok, 0, saved);  // nothing to do
}

}  // namespace

int main() {
  for (int threads : {1, 2}) {
    round_trip<uint32_t>(threads);
    round_trip<uint16_t>(threads);
  }
  errors();
  return mft_test::report("test_zero_masked");
}
