// Run-time choice of the CPU code path (scalar baseline, AVX2+FMA, AVX-512), and the small per-path
// primitives the kernels share.
//
// The library is compiled for baseline x86-64; the wider paths are functions compiled with GCC target
// attributes (MFT_TARGET_AVX2 / MFT_TARGET_AVX512) and picked through function pointers, so one binary
// runs everywhere. Every path computes exactly the same IEEE operations in the same order per element
// (no reductions across elements in floating point, no FMA contraction), so results are bit-identical.
//
// The path is resolved once, on first use (the Python module resolves it at import): the environment
// variable MFT_CPU_PATH=scalar|avx2|avx512 forces one (an error if this CPU lacks it; "auto" or unset
// picks the widest supported). set_cpu_path() switches it at run time (tests run every path that way);
// each op call reads the path once at its start.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mft/kernel_types.h"

#if defined(__x86_64__) || defined(__i386__)
#define MFT_X86 1
#define MFT_TARGET_AVX2 __attribute__((target("avx2,fma,popcnt,bmi,bmi2")))
#define MFT_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,popcnt,bmi,bmi2")))
#else
#define MFT_X86 0
#endif

namespace mft {

enum class CpuPath : int { Scalar = 0, Avx2 = 1, Avx512 = 2 };

const char* cpu_path_name(CpuPath path);  // "scalar", "avx2", "avx512"
bool cpu_path_supported(CpuPath path);    // this CPU (and OS) can run the path
std::vector<std::string> supported_cpu_paths();  // narrowest first, always starts with "scalar"

// Resolves the path now (reads MFT_CPU_PATH); throws std::invalid_argument for a bad value.
void init_cpu_path();
CpuPath active_path();
const char* active_cpu_path();  // name of active_path()
// Switches the path for later op calls; "auto" picks the widest. Throws std::invalid_argument when the
// name is unknown or this CPU lacks the path.
void set_cpu_path(const std::string& name);

// Picks one of three implementations for `path` (scalar where a path is not compiled in).
template <class Fn>
Fn pick_for_path(CpuPath path, Fn scalar, Fn avx2, Fn avx512) {
#if MFT_X86
  switch (path) {
    case CpuPath::Avx512:
      return avx512;
    case CpuPath::Avx2:
      return avx2;
    default:
      return scalar;
  }
#else
  (void)path;
  (void)avx2;
  (void)avx512;
  return scalar;
#endif
}

namespace kernels {

// dst[i] = exact float value of src[i] (fp16 or bf16), i < n.
using ConvertFn = void (*)(const void* src, int64_t n, float* dst);
ConvertFn convert_fn(CpuPath path, DType dtype);  // dtype F16 or BF16

// Writes to pos[0..c) the positions i < n with s[i] >= lo, ascending, and returns c. pos must have room
// for n + 16 entries (vector paths store whole vectors past c).
using FindGeFn = int (*)(const double* s, int n, double lo, int32_t* pos);
FindGeFn find_ge_fn(CpuPath path);

// lut.idx[m] lists the set bits of the 8-bit mask m, lowest first: a vector compaction for AVX2.
struct CompactLut {
  alignas(32) int32_t idx[256][8];
};
constexpr CompactLut make_compact_lut() {
  CompactLut lut{};
  for (int m = 0; m < 256; ++m) {
    int c = 0;
    for (int j = 0; j < 8; ++j)
      if ((m >> j) & 1) lut.idx[m][c++] = j;
  }
  return lut;
}
inline constexpr CompactLut kCompactLut = make_compact_lut();

}  // namespace kernels
}  // namespace mft
