#include "mft/memory.h"

#include <cstdlib>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>


namespace mft {

namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kMaxBlocks = 32;

std::size_t cache_limit() {
  static const std::size_t limit = [] {
    const char* env = std::getenv("MFT_CACHE_MB");
    if (!env || !*env) return std::size_t(1024) << 20;
    char* end = nullptr;
    const long long mb = std::strtoll(env, &end, 10);
    return (end && *end == '\0' && mb > 0) ? static_cast<std::size_t>(mb) << 20 : std::size_t(0);
  }();
  return limit;
}

class BlockCache {
 public:
  void* alloc(std::size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // Best fit among the free blocks.
      std::size_t best = free_.size();
      for (std::size_t i = 0; i < free_.size(); ++i)
        if (free_[i].capacity >= bytes && (best == free_.size() || free_[i].capacity < free_[best].capacity))
          best = i;
      if (best < free_.size()) {
        const Block b = free_[best];
        free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
        free_bytes_ -= b.capacity;
        live_[b.data] = b.capacity;
        return b.data;
      }
    }
    const std::size_t capacity = (bytes + kPage - 1) / kPage * kPage;
    void* p = std::aligned_alloc(kPage, capacity);
    if (!p) throw std::bad_alloc();
    std::lock_guard<std::mutex> lock(mutex_);
    live_[p] = capacity;
    return p;
  }

  void free(void* p) {
    if (!p) return;
    std::vector<void*> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto it = live_.find(p);
      if (it == live_.end()) {  // a small block, or one allocated while caching was off
        std::free(p);
        return;
      }
      const std::size_t capacity = it->second;
      live_.erase(it);
      free_.push_back(Block{p, capacity});
      free_bytes_ += capacity;
      // Over the limit: drop the oldest blocks first.
      while (!free_.empty() && (free_bytes_ > cache_limit() || free_.size() > kMaxBlocks)) {
        evicted.push_back(free_.front().data);
        free_bytes_ -= free_.front().capacity;
        free_.erase(free_.begin());
      }
    }
    for (void* q : evicted) std::free(q);
  }

  std::size_t release() {
    std::vector<Block> blocks;
    std::size_t bytes;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      bytes = free_bytes_;
      free_bytes_ = 0;
    }
    for (const Block& b : blocks) std::free(b.data);
    return bytes;
  }

  std::size_t bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return free_bytes_;
  }

 private:
  struct Block {
    void* data;
    std::size_t capacity;
  };
  std::mutex mutex_;
  std::vector<Block> free_;  // oldest first
  std::size_t free_bytes_ = 0;
  std::unordered_map<void*, std::size_t> live_;
};

// Never destroyed: blocks may come back from tensors freed during interpreter shutdown.
BlockCache& cache() {
  static BlockCache* c = new BlockCache();
  return *c;
}

}  // namespace

void* cached_alloc(std::size_t bytes) {
  if (bytes < kLargeBlock || cache_limit() == 0) {
    // Small, or caching off: still tracked, so that cached_free knows what to do.
    const std::size_t capacity = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, capacity == 0 ? 64 : capacity);
    if (!p) throw std::bad_alloc();
    return p;
  }
  return cache().alloc(bytes);
}

void cached_free(void* p) {
  if (!p) return;
  cache().free(p);
}

std::size_t release_cached_blocks() { return cache().release(); }

std::size_t cached_bytes() { return cache().bytes(); }

}  // namespace mft
