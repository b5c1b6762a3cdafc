// troupe/detail/small_alloc.hpp: the allocator behind behaviours and tasks.
//
// Each thread owns a heap of size classes (64 B to 1 KiB blocks, carved from
// 64 KiB chunks, carved from 2 MiB regions). A chunk keeps its free blocks as
// bitmaps, not as lists threaded through the blocks: a block freed by its
// owner sets a bit in the chunk's local bitmap, with no atomic operation; a
// block freed by another thread sets a bit in the chunk's remote bitmap (one
// atomic OR), and the first such free since the owner last looked pushes the
// chunk onto the owner's pending stack, where the owner takes the bits back
// when its chunks run dry (the scheme of mimalloc's per-page thread-free
// lists, with bitmaps as in snmalloc's and Go's span allocators). This
// replaces glibc's arena lock, which a sender allocating and a worker freeing
// contend on in every message-heavy program.
//
// Why bitmaps: a sender that allocates one behaviour per message takes
// blocks that the workers freed. A free list threaded through the blocks
// makes each allocation read the link the freeing core just wrote (a cache
// miss on the critical path, 55 % of such a sender's time), and hands blocks
// out in the scrambled order they were freed in, so a heap of tens of MB
// costs a TLB miss per message and slows down the longer it runs. With
// bitmaps an allocation reads only its own chunk's header and hands blocks
// out in address order, one chunk at a time. What a thread frees itself
// (a behaviour that ran where it was made) goes first to a small LIFO cache
// per class, an array in the heap (SA12): reused at once, still hot, in a
// few instructions. What other threads freed is reused only after the heap
// has cycled through 2 MiB of the class (SA13), once it has left their
// cores' caches.
//
// Blocks carry no header: a chunk is aligned to its size and opens with the
// owner heap and the size class of all its blocks, so a one-actor behaviour
// of 120 bytes takes two cache lines, not three. The caller passes the size
// back to small_free (class-specific sized delete), which tells a small
// block from a large one.
//
// Invariants:
//   SA1. A block of a size class lies in a kChunk-aligned chunk whose first
//       cache line names its owner heap and class, both immutable. A request
//       larger than the largest class comes from ::operator new and is given
//       back to ::operator delete; small_free tells them apart by the size,
//       which must be the size passed to small_alloc.
//   SA2. A heap's current/avail lists and a chunk's local bitmap, cursor and
//       avail link are touched only by the owner thread; a chunk's remote
//       bitmap, pending flag and the heap's pending stacks by any thread,
//       through atomics; a chunk's next_pending only as SA10 says.
//   SA3. Heaps are never destroyed: a thread that exits leaves its heap on an
//       orphan list for the next new thread, so frees that arrive later (from
//       blocks still in flight) always find it, and the chunks stay reachable.
//   SA4. Under AddressSanitizer blocks come straight from ::operator new, so
//       ASan still sees every use-after-free and overflow.
//   SA5. Blocks are aligned to 64 bytes (a multiple of max_align_t).
//   SA6. A block is free iff its bit is set in exactly one of its chunk's
//       bitmaps (local: the owner may hand it out; remote: freed elsewhere,
//       not yet taken back), or it sits in its owner heap's cache (SA12,
//       neither bit set); a live block has neither bit set and is in no
//       cache.
//   SA7. A thread whose heap was orphaned at its exit (SA3) but which still
//       frees or allocates (a static object destroyed after the main
//       thread's thread_locals) frees to that heap remotely and allocates
//       from a fresh heap: it never touches the orphan's local state, which
//       the thread that adopts it owns.
//   SA8. Regions are 2 MiB aligned and advised as huge pages (a hint).
//       Every heap carves its chunks from the same region (a lock taken
//       once per 64 KiB chunk), so a thread that allocates little costs a
//       chunk per size class it uses, not a region.
//   SA9. A chunk's header keeps apart the cache lines each side writes: the
//       immutable line every free reads, the freers' flag and remote
//       bitmap, and the owner's local bitmap.
//   SA10. No remote free is lost: a freer ORs its bit (seq_cst), then reads
//       `pending`; the owner clears `pending` (seq_cst), then exchanges the
//       remote words. Either the owner's exchange sees the bit, or the
//       freer sees `pending` false, raises it and pushes the chunk again.
//       A chunk is on its heap's pending stack at most once: only the freer
//       that raises `pending` pushes it, and only the owner, after taking
//       the stack, lowers it.
//   SA11. fork() is safe: the allocator's two mutexes (regions; orphaned
//       heaps) are taken before a fork and released on both sides after.
//   SA12. A heap keeps, per class, a cache of up to 32 blocks its owner
//       freed (owner only, LIFO): the owner's next allocation of that class
//       takes the newest, a line likely still in its cache, with no bitmap
//       scan. A free by the owner goes to the cache while it has room, else
//       to the bitmap; remote frees never touch it (SA10 as before). The
//       cache belongs to the heap: an orphaned heap's cache passes to the
//       thread that adopts it (SA3), and SA7's thread never touches it.
//   SA13. A heap takes back the blocks other threads freed (SA10) only once
//       it has carved kRotationBytes of chunks for their class; until then
//       a class whose chunks are all in use gets a new chunk. So a sender
//       whose blocks a worker frees cycles through at least that much
//       memory before it writes a block again, and by then the block's
//       lines have left the freeing core's private caches: its writes no
//       longer wait, line by line, for that core to give them up. Without
//       it, a producer whose consumer kept up reused blocks the consumer
//       had touched a few hundred messages before, and each allocation
//       stalled on two such lines (counting: 50-55 ms for 10^6 messages
//       against 17-19 ms; bench/README.md). The cost is up to
//       kRotationBytes per class per heap that sends this way; the memory
//       stays bounded, as SA10 keeps it, beyond that.
#pragma once

#include <cstddef>
#include <new>

namespace troupe::detail {

// SA13: how much memory of a class a heap cycles through before it reuses
// a block another thread freed (one region).
inline constexpr std::size_t kRotationBytes = std::size_t{2} << 20;

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
