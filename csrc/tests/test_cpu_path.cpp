// CPU path selection, the per-path primitives (fp16/bf16 conversion, find_ge), MFT_CPU_PATH handling.
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "cpu_path.h"

using namespace mft;
using namespace mft::kernels;

namespace {

// An independent fp16 decoder (ldexp arithmetic) to check the bit-twiddling one against.
float half_reference(uint16_t h) {
  const int sign = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  float v;
  if (e == 0) {
    v = std::ldexp(static_cast<float>(m), -24);
  } else if (e == 31) {
    v = m ? std::nanf("") : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(m + 1024), e - 25);
  }
  return sign ? -v : v;
}

void test_paths() {
  const auto names = supported_cpu_paths();
  CHECK(!names.empty() && names.front() == "scalar");
  for (const auto& name : names) {
    set_cpu_path(name);
    CHECK(std::string(active_cpu_path()) == name);
  }
  set_cpu_path("auto");
  CHECK(std::string(active_cpu_path()) == names.back());
  CHECK_THROWS(set_cpu_path("sse9"), std::invalid_argument, "not a CPU path");
  for (CpuPath p : {CpuPath::Avx2, CpuPath::Avx512})
    if (!cpu_path_supported(p)) CHECK_THROWS(set_cpu_path(cpu_path_name(p)), std::invalid_argument, "lacks");
  std::printf("supported paths:");
  for (const auto& n : names) std::printf(" %s", n.c_str());
  std::printf("\n");
}

void test_conversions() {
  for (const auto& name : supported_cpu_paths()) {
    set_cpu_path(name);
    const ConvertFn to_f16 = convert_fn(active_path(), DType::F16);
    const ConvertFn to_bf16 = convert_fn(active_path(), DType::BF16);
    std::vector<uint16_t> all(65536);
    for (int i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
    std::vector<float> out(65536);
    to_f16(all.data(), 65536, out.data());
    int bad = 0;
    for (int i = 0; i < 65536; ++i) {
      const float ref = half_reference(static_cast<uint16_t>(i));
      const bool same = std::isnan(ref) ? std::isnan(out[i]) : std::memcmp(&ref, &out[i], 4) == 0;
      bad += !same;
      bad += half_to_float(static_cast<uint16_t>(i)) != out[i] && !std::isnan(ref);
    }
    CHECK_MSG(bad == 0, name + ": fp16 conversion mismatches: " + std::to_string(bad));
    to_bf16(all.data(), 65536, out.data());
    bad = 0;
    for (int i = 0; i < 65536; ++i) {
      const uint32_t bits = static_cast<uint32_t>(i) << 16;
      bad += std::memcmp(&bits, &out[i], 4) != 0;
    }
    CHECK_MSG(bad == 0, name + ": bf16 conversion mismatches");
  }
}

void test_find_ge() {
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (const auto& name : supported_cpu_paths()) {
    set_cpu_path(name);
    const FindGeFn fn = find_ge_fn(active_path());
    for (int n : {0, 1, 7, 8, 15, 16, 17, 100, 512}) {
      for (double lo : {0.0, 0.5, 0.97, 2.0}) {
        std::vector<double> s(n);
        for (auto& x : s) x = u(rng) < 0.2 ? 0.0 : u(rng);
        if (n > 3) s[3] = lo;  // equality counts
        std::vector<int32_t> pos(n + 16, -1), expect;
        for (int i = 0; i < n; ++i)
          if (s[i] >= lo) expect.push_back(i);
        const int c = fn(s.data(), n, lo, pos.data());
        CHECK_MSG(c == static_cast<int>(expect.size()), name + " n=" + std::to_string(n));
        bool same = c == static_cast<int>(expect.size());
        for (int i = 0; same && i < c; ++i) same = pos[i] == expect[i];
        CHECK_MSG(same, name + " positions, n=" + std::to_string(n));
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "--expect-env-error") {
    CHECK_THROWS(init_cpu_path(), std::invalid_argument, "MFT_CPU_PATH");
    CHECK_THROWS(active_path(), std::invalid_argument, "MFT_CPU_PATH");
    return mft_test::report("test_cpu_path --expect-env-error");
  }
  if (mode == "--expect-active" && argc > 2) {
    init_cpu_path();
    CHECK(std::string(active_cpu_path()) == argv[2]);
    return mft_test::report("test_cpu_path --expect-active");
  }
  test_paths();
  test_conversions();
  test_find_ge();
  return mft_test::report("test_cpu_path");
}
