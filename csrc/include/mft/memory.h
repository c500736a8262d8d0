// Large buffers and the cost of first touch.
//
// Every page of a fresh allocation is faulted in (and zeroed by the kernel) on its first write, and on
// virtual machines that back guest memory lazily a fault costs far more than the write: writing a fresh
// 43 MB output (k = 5.4M int64 indices) cost ~20 ms in 4 KiB faults on the machine the kernels were
// tuned on, about as much as one whole pass over theta and grad. glibc serves allocations >= 32 MiB
// (and smaller ones, depending on its adaptive threshold) with a fresh mmap each time and unmaps them
// on free, so an op's large outputs and work buffers would be fresh on every call.
//
// So blocks >= kLargeBlock (256 KiB) go through a process-wide cache of freed blocks (cached_alloc /
// cached_free), reused by later calls while their pages are still mapped. It holds at most MFT_CACHE_MB
// MiB (default 1024; 0 disables it) in at most 32 blocks; release_cached_blocks() returns them to the
// system. (Transparent huge pages were tried for the first touch: on that machine they made it slower.)
#pragma once

#include <cstddef>
#include <cstdint>

namespace mft {

// Blocks smaller than this go straight to malloc (glibc keeps and reuses those itself).
constexpr std::size_t kLargeBlock = std::size_t(256) << 10;

// At least `bytes` bytes, 64-byte aligned (never nullptr: throws std::bad_alloc). Release with
// cached_free, from any thread.
void* cached_alloc(std::size_t bytes);
void cached_free(void* p);

// Frees every cached block; returns the bytes released.
std::size_t release_cached_blocks();
// Bytes held by the cache (not in use).
std::size_t cached_bytes();

}  // namespace mft
