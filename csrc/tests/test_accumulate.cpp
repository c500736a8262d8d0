// accumulate(): every path and dtype against the plain per-element definition, bit for bit.
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "accumulate.h"
#include "check.h"
#include "cpu_path.h"
#include "mft/parallel.h"

using namespace mft;
using namespace mft::kernels;

namespace {

uint16_t to_bf16_trunc(float f) { return static_cast<uint16_t>(float_to_bits(f) >> 16); }

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

void run(DType dtype, int64_t n, int threads) {
  std::mt19937_64 rng(static_cast<uint64_t>(n) * 7 + static_cast<int>(dtype));
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> g32(n);
  std::vector<uint16_t> g16(n);
  for (int64_t i = 0; i < n; ++i) {
    float v = nd(rng);
    if (i % 11 == 0) v = 0.f;
    if (i % 13 == 0) v = -0.f;
    if (i % 17 == 0) v = 1e-40f;  // subnormal
    if (i % 19 == 0) v = 3e19f;   // square overflows to inf
    if (dtype == DType::F16) {
      g16[i] = static_cast<uint16_t>(rng() & 0xffff);
      if ((g16[i] & 0x7c00) == 0x7c00) g16[i] &= 0x3fff;  // keep finite here; NaN is tested below
    } else if (dtype == DType::BF16) {
      g16[i] = to_bf16_trunc(v);
    }
    g32[i] = v;
  }
  ConstSpan grad;
  grad.dtype = dtype;
  grad.numel = n;
  grad.data = dtype == DType::F32 ? static_cast<const void*>(g32.data()) : static_cast<const void*>(g16.data());

  std::vector<float> s0(n), q0(n);
  std::vector<int32_t> p0(n), m0(n);
  for (int64_t i = 0; i < n; ++i) {
    s0[i] = static_cast<float>(i % 5) - 2.f;
    q0[i] = static_cast<float>(i % 3);
    p0[i] = static_cast<int32_t>(i % 4);
    m0[i] = static_cast<int32_t>(i % 6);
  }
  // The definition, element by element.
  std::vector<float> se = s0, qe = q0;
  std::vector<int32_t> pe = p0, me = m0;
  for (int64_t i = 0; i < n; ++i) {
    const float g = load_float(grad, i);
    const float sq = g * g;
    se[i] += g;
    qe[i] += sq;
    pe[i] += g > 0.f;
    me[i] += g < 0.f;
  }
  set_max_threads(threads);
  for (const auto& name : supported_cpu_paths()) {
    set_cpu_path(name);
    std::vector<float> s = s0, q = q0;
    std::vector<int32_t> p = p0, m = m0;
    accumulate(s.data(), q.data(), p.data(), m.data(), grad);
    const std::string what = name + " dtype=" + dtype_name(dtype) + " n=" + std::to_string(n);
    CHECK_MSG(same_bits(s, se) && same_bits(q, qe) && same_bits(p, pe) && same_bits(m, me), what);
  }
}

void nan_propagates() {
  for (const auto& name : supported_cpu_paths()) {
    set_cpu_path(name);
    std::vector<float> g = {NAN, 1.f, -INFINITY};
    std::vector<float> s(3, 0.f), q(3, 0.f);
    std::vector<int32_t> p(3, 0), m(3, 0);
    ConstSpan grad{g.data(), DType::F32, 3};
    accumulate(s.data(), q.data(), p.data(), m.data(), grad);
    CHECK(std::isnan(s[0]) && std::isnan(q[0]) && p[0] == 0 && m[0] == 0);
    CHECK(s[2] == -INFINITY && q[2] == INFINITY && m[2] == 1);
  }
}

}  // namespace

int main() {
  for (DType d : {DType::F32, DType::F16, DType::BF16})
    for (int64_t n : {0, 1, 31, 1000, 200003})
      for (int threads : {1, 2}) run(d, n, threads);
  nan_propagates();
  return mft_test::report("test_accumulate");
}
