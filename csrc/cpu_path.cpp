#include "cpu_path.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#if MFT_X86
#include <immintrin.h>
#endif

namespace mft {

namespace {

bool detect(CpuPath path) {
  if (path == CpuPath::Scalar) return true;
#if MFT_X86
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("bmi") &&
                    __builtin_cpu_supports("bmi2");
  if (path == CpuPath::Avx2) return avx2;
  // __builtin_cpu_supports also checks that the OS saves the AVX-512 state (XCR0).
  return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

CpuPath widest() {
  if (cpu_path_supported(CpuPath::Avx512)) return CpuPath::Avx512;
  if (cpu_path_supported(CpuPath::Avx2)) return CpuPath::Avx2;
  return CpuPath::Scalar;
}

std::string supported_list() {
  std::string s;
  for (const auto& name : supported_cpu_paths()) s += (s.empty() ? "" : ", ") + name;
  return s;
}

CpuPath parse(const std::string& name, const char* what) {
  if (name.empty() || name == "auto") return widest();
  CpuPath path;
  if (name == "scalar") {
    path = CpuPath::Scalar;
  } else if (name == "avx2") {
    path = CpuPath::Avx2;
  } else if (name == "avx512") {
    path = CpuPath::Avx512;
  } else {
    throw std::invalid_argument(std::string(what) + "='" + name +
                                "' is not a CPU path; expected one of scalar, avx2, avx512, auto");
  }
  if (!cpu_path_supported(path)) {
    throw std::invalid_argument(std::string(what) + "='" + name + "' but this CPU lacks it (supported: " +
                                supported_list() + ")");
  }
  return path;
}

CpuPath from_environment() {
  const char* env = std::getenv("MFT_CPU_PATH");
  return parse(env ? std::string(env) : std::string(), "MFT_CPU_PATH");
}

std::atomic<int>& current() {
  // A throwing initializer leaves the static uninitialized, so a bad MFT_CPU_PATH fails every call.
  static std::atomic<int> path{static_cast<int>(from_environment())};
  return path;
}

}  // namespace

const char* cpu_path_name(CpuPath path) {
  switch (path) {
    case CpuPath::Avx512:
      return "avx512";
    case CpuPath::Avx2:
      return "avx2";
    default:
      return "scalar";
  }
}

bool cpu_path_supported(CpuPath path) {
  static const bool supported[3] = {true, detect(CpuPath::Avx2), detect(CpuPath::Avx512)};
  return supported[static_cast<int>(path)];
}

std::vector<std::string> supported_cpu_paths() {
  std::vector<std::string> out;
  for (CpuPath p : {CpuPath::Scalar, CpuPath::Avx2, CpuPath::Avx512})
    if (cpu_path_supported(p)) out.emplace_back(cpu_path_name(p));
  return out;
}

void init_cpu_path() { (void)current(); }

CpuPath active_path() { return static_cast<CpuPath>(current().load(std::memory_order_relaxed)); }

const char* active_cpu_path() { return cpu_path_name(active_path()); }

void set_cpu_path(const std::string& name) {
  const CpuPath path = parse(name, "cpu path");
  current().store(static_cast<int>(path), std::memory_order_relaxed);
}

namespace kernels {

namespace {

// ---- fp16 / bf16 -> fp32 -------------------------------------------------------------------------
template <DType D>
MFT_INLINE void convert_body(const void* src, int64_t n, float* __restrict dst) {
  const uint16_t* __restrict s = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = D == DType::F16 ? half_to_float(s[i]) : bf16_to_float(s[i]);
}

template <DType D>
void convert_scalar(const void* src, int64_t n, float* dst) {
  convert_body<D>(src, n, dst);
}

// ---- positions with s[i] >= lo -----------------------------------------------------------------------
int find_ge_scalar(const double* s, int n, double lo, int32_t* pos) {
  int c = 0;
  for (int i = 0; i < n; ++i) {
    pos[c] = i;
    c += s[i] >= lo;
  }
  return c;
}

#if MFT_X86
template <DType D>
MFT_TARGET_AVX2 void convert_avx2(const void* src, int64_t n, float* dst) {
  convert_body<D>(src, n, dst);
}
template <DType D>
MFT_TARGET_AVX512 void convert_avx512(const void* src, int64_t n, float* dst) {
  convert_body<D>(src, n, dst);
}

MFT_TARGET_AVX2 int find_ge_avx2(const double* s, int n, double lo, int32_t* pos) {
  const __m256d vlo = _mm256_set1_pd(lo);
  int c = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256d a = _mm256_loadu_pd(s + i);
    const __m256d b = _mm256_loadu_pd(s + i + 4);
    const int m = _mm256_movemask_pd(_mm256_cmp_pd(a, vlo, _CMP_GE_OQ)) |
                  (_mm256_movemask_pd(_mm256_cmp_pd(b, vlo, _CMP_GE_OQ)) << 4);
    const __m256i p = _mm256_add_epi32(
        _mm256_load_si256(reinterpret_cast<const __m256i*>(kCompactLut.idx[m])), _mm256_set1_epi32(i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(pos + c), p);
    c += __builtin_popcount(static_cast<unsigned>(m));
  }
  for (; i < n; ++i) {
    pos[c] = i;
    c += s[i] >= lo;
  }
  return c;
}

MFT_TARGET_AVX512 int find_ge_avx512(const double* s, int n, double lo, int32_t* pos) {
  const __m512d vlo = _mm512_set1_pd(lo);
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int c = 0, i = 0;
  for (; i + 16 <= n; i += 16) {
    const __mmask8 ma = _mm512_cmp_pd_mask(_mm512_loadu_pd(s + i), vlo, _CMP_GE_OQ);
    const __mmask8 mb = _mm512_cmp_pd_mask(_mm512_loadu_pd(s + i + 8), vlo, _CMP_GE_OQ);
    const unsigned m = static_cast<unsigned>(ma) | (static_cast<unsigned>(mb) << 8);
    // Register-form compress then a plain store: compress-to-memory is slow on some cores (Zen 4).
    const __m512i p =
        _mm512_maskz_compress_epi32(static_cast<__mmask16>(m), _mm512_add_epi32(lanes, _mm512_set1_epi32(i)));
    _mm512_storeu_si512(pos + c, p);
    c += __builtin_popcount(m);
  }
  for (; i < n; ++i) {
    pos[c] = i;
    c += s[i] >= lo;
  }
  return c;
}
#else
template <DType D>
void convert_avx2(const void* src, int64_t n, float* dst) {
  convert_body<D>(src, n, dst);
}
template <DType D>
void convert_avx512(const void* src, int64_t n, float* dst) {
  convert_body<D>(src, n, dst);
}
int find_ge_avx2(const double* s, int n, double lo, int32_t* pos) { return find_ge_scalar(s, n, lo, pos); }
int find_ge_avx512(const double* s, int n, double lo, int32_t* pos) { return find_ge_scalar(s, n, lo, pos); }
#endif

}  // namespace

ConvertFn convert_fn(CpuPath path, DType dtype) {
  if (dtype == DType::F16)
    return pick_for_path<ConvertFn>(path, convert_scalar<DType::F16>, convert_avx2<DType::F16>,
                                    convert_avx512<DType::F16>);
  if (dtype == DType::BF16)
    return pick_for_path<ConvertFn>(path, convert_scalar<DType::BF16>, convert_avx2<DType::BF16>,
                                    convert_avx512<DType::BF16>);
  throw std::invalid_argument("convert_fn: only float16 and bfloat16 need converting");
}

FindGeFn find_ge_fn(CpuPath path) {
  return pick_for_path<FindGeFn>(path, find_ge_scalar, find_ge_avx2, find_ge_avx512);
}

}  // namespace kernels
}  // namespace mft
