// A tiny check macro set for the C++ unit tests (no test framework can be downloaded here).
#pragma once

#include <cstdio>
#include <exception>
#include <string>

namespace mft_test {
inline int& failures() {
  static int n = 0;
  return n;
}
inline int report(const char* name) {
  if (failures() == 0) {
    std::printf("%s: all checks passed\n", name);
    return 0;
  }
  std::printf("%s: %d check(s) FAILED\n", name, failures());
  return 1;
}
}  // namespace mft_test

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++mft_test::failures();                                                    \
    }                                                                            \
  } while (0)

#define CHECK_MSG(cond, msg)                                                                       \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s (%s)\n", __FILE__, __LINE__, #cond,             \
                   std::string(msg).c_str());                                                      \
      ++mft_test::failures();                                                                      \
    }                                                                                              \
  } while (0)

// Checks that `expr` throws ExType whose what() contains `needle`.
#define CHECK_THROWS(expr, ExType, needle)                                                         \
  do {                                                                                             \
    bool mft_thrown_ = false;                                                                      \
    try {                                                                                          \
      (void)(expr);                                                                                \
    } catch (const ExType& e) {                                                                    \
      mft_thrown_ = true;                                                                          \
      if (std::string(e.what()).find(needle) == std::string::npos) {                               \
        std::fprintf(stderr, "%s:%d: message '%s' lacks '%s'\n", __FILE__, __LINE__, e.what(), needle); \
        ++mft_test::failures();                                                                    \
      }                                                                                            \
    } catch (const std::exception& e) {                                                            \
      mft_thrown_ = true;                                                                          \
      std::fprintf(stderr, "%s:%d: %s threw another exception: %s\n", __FILE__, __LINE__, #expr, e.what()); \
      ++mft_test::failures();                                                                      \
    }                                                                                              \
    if (!mft_thrown_) {                                                                            \
      std::fprintf(stderr, "%s:%d: %s did not throw\n", __FILE__, __LINE__, #expr);                \
      ++mft_test::failures();                                                                      \
    }                                                                                              \
  } while (0)
