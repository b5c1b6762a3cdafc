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
// Blocks carry no header: as in mimalloc's segments, a chunk is aligned to its
// size and opens with the owner heap and the size class of all its blocks, so
// a one-actor behaviour of 120 bytes takes two cache lines, not three. The
// caller passes the size back to small_free (class-specific sized delete),
// which tells a small block from a large one.
//
// Invariants:
//   SA1. A block of a size class lies in a kChunk-aligned chunk whose first
//       cache line names its owner heap and class, both immutable. A request
//       larger than the largest class comes from ::operator new and is given
//       back to ::operator delete; small_free tells them apart by the size,
//       which must be the size passed to small_alloc.
//   SA2. local[] is touched only by the owner thread; remote[] by any thread
//       through atomics only.
//   SA3. Heaps are never destroyed: a thread that exits leaves its heap on an
//       orphan list for the next new thread, so frees that arrive later (from
//       blocks still in flight) always find it, and the chunks stay reachable.
//   SA4. Under AddressSanitizer blocks come straight from ::operator new, so
//       ASan still sees every use-after-free and overflow.
//   SA5. Blocks are aligned to 64 bytes (a multiple of max_align_t).
//   SA7. A thread whose heap was orphaned at its exit (SA3) but which still
//       frees or allocates (a static object destroyed after the main
//       thread's thread_locals) frees to that heap remotely and allocates
//       from a fresh heap: it never touches the orphan's local lists, which
//       the thread that adopts it owns.
#pragma once

#include <cstddef>
#include <new>

namespace troupe::detail {

void* small_alloc(std::size_t size);
// `size` must be the size given to small_alloc for p (SA1).
void small_free(void* p, std::size_t size) noexcept;

// Mix-in: class-specific operator new/delete through small_alloc. The sized
// delete receives sizeof the most derived type, so a SmallObject must be
// deleted through its own type (all users are `final` and delete themselves).
// Over-aligned types (alignas > 16) bypass it and use the global aligned new.
struct SmallObject {
  static void* operator new(std::size_t n) { return small_alloc(n); }
  static void operator delete(void* p, std::size_t n) noexcept { small_free(p, n); }
  static void* operator new(std::size_t n, std::align_val_t a) { return ::operator new(n, a); }
  static void operator delete(void* p, std::align_val_t a) noexcept { ::operator delete(p, a); }
};

}  // namespace troupe::detail
