// The one threading facade of mft_engine's C++ kernels: OpenMP when compiled with it, serial otherwise.
//
// No other file uses `#pragma omp`. Work functions may throw: the first exception (in the order the
// workers hit them) is caught inside the parallel region, the remaining work is skipped, and it is
// rethrown on the calling thread after the region ends (an exception escaping an OpenMP region would
// call std::terminate). Called from inside a parallel region, every function here runs serially.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mft {

// Threads a parallel call started from the current thread would use (1 inside a parallel region).
inline int max_threads() {
#ifdef _OPENMP
  return omp_in_parallel() ? 1 : std::max(1, omp_get_max_threads());
#else
  return 1;
#endif
}

// Sets the threads later parallel calls from this thread use (n >= 1); no-op without OpenMP.
inline void set_max_threads(int n) {
#ifdef _OPENMP
  omp_set_num_threads(std::max(1, n));
#else
  (void)n;
#endif
}

// Index of the calling thread within the current parallel call, in [0, max_threads()).
inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

namespace detail {
class FirstException {
 public:
  void capture() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = std::current_exception();
    failed_.store(true, std::memory_order_relaxed);
  }
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::mutex mutex_;
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};
};
}  // namespace detail

// Calls fn(sub_begin, sub_end) over disjoint contiguous pieces covering [begin, end), one piece per
// thread (static partition), each at least `grain` long except possibly the last. Serial when the
// range is shorter than 2 * grain.
template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& fn) {
  if (end <= begin) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t n = end - begin;
  const int64_t want = std::min<int64_t>(max_threads(), (n + grain - 1) / grain);
  if (want <= 1) {
    fn(begin, end);
    return;
  }
#ifdef _OPENMP
  detail::FirstException error;
#pragma omp parallel num_threads(static_cast<int>(want))
  {
    const int64_t nt = omp_get_num_threads();
    const int64_t t = omp_get_thread_num();
    const int64_t per = (n + nt - 1) / nt;
    const int64_t b = begin + std::min(n, t * per);
    const int64_t e = begin + std::min(n, (t + 1) * per);
    if (b < e) {
      try {
        fn(b, e);
      } catch (...) {
        error.capture();
      }
    }
  }
  error.rethrow();
#else
  fn(begin, end);
#endif
}

// Calls fn(i, thread) for every i in [0, n_tasks) with dynamic scheduling (tasks handed out one at a
// time, in increasing order), thread in [0, n_threads). n_threads = min(max_threads(), n_tasks) unless
// the caller asks for fewer; the caller sizes per-thread state with parallel_threads(n_tasks).
inline int parallel_threads(int64_t n_tasks) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(max_threads(), n_tasks)));
}

template <class F>
void parallel_for_dynamic(int64_t n_tasks, const F& fn) {
  if (n_tasks <= 0) return;
  const int nt = parallel_threads(n_tasks);
  if (nt <= 1) {
    for (int64_t i = 0; i < n_tasks; ++i) fn(i, 0);
    return;
  }
#ifdef _OPENMP
  detail::FirstException error;
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < n_tasks; ++i) {
      if (error.failed()) continue;
      try {
        fn(i, t);
      } catch (...) {
        error.capture();
      }
    }
  }
  error.rethrow();
#else
  for (int64_t i = 0; i < n_tasks; ++i) fn(i, 0);
#endif
}

}  // namespace mft
