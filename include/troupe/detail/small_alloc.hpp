// troupe/detail/small_alloc.hpp: the allocator behind behaviours and tasks.
//
// Each thread owns a heap of size-classed free lists (64 B to 1 KiB blocks,
// carved from 64 KiB chunks). A block freed by its owner goes back to the
// owner's list with no atomic operation; a block freed by another thread is
// pushed onto the owner's lock-free remote list (Treiber push; the owner takes
// the whole list with one exchange, so there is no ABA), the scheme of
// mimalloc's thread-free lists and snmalloc's message passing. This replaces
// glibc's arena lock, which a sender allocating and a worker freeing contend
// on in every message-heavy program.
//
// Invariants:
//   I1. Every block has a 16-byte header naming its owner heap and class; a
//       block larger than the largest class has owner == nullptr and comes
//       from ::operator new.
//   I2. local[] is touched only by the owner thread; remote[] by any thread
//       through atomics only.
//   I3. Heaps are never destroyed: a thread that exits leaves its heap on an
//       orphan list for the next new thread, so frees that arrive later (from
//       blocks still in flight) always find it, and the chunks stay reachable.
//   I4. Under AddressSanitizer blocks come straight from ::operator new, so
//       ASan still sees every use-after-free and overflow.
#pragma once

#include <cstddef>
#include <new>

namespace troupe::detail {

void* small_alloc(std::size_t size);
void small_free(void* p) noexcept;

// Mix-in: class-specific operator new/delete through small_alloc.
// Over-aligned types (alignas > 16) bypass it and use the global aligned new.
struct SmallObject {
  static void* operator new(std::size_t n) { return small_alloc(n); }
  static void operator delete(void* p) noexcept { small_free(p); }
  static void* operator new(std::size_t n, std::align_val_t a) { return ::operator new(n, a); }
  static void operator delete(void* p, std::align_val_t a) noexcept { ::operator delete(p, a); }
};

}  // namespace troupe::detail
