// src/sched/small_alloc.cpp: per-thread size-classed heaps of bitmap chunks
// with remote frees, an owner's cache and a rotation before remote frees
// are reused (small_alloc.hpp, invariants SA1-SA13 there).
#include "troupe/detail/small_alloc.hpp"

#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

#include "troupe/detail/platform.hpp"

namespace troupe::detail {

#if defined(__SANITIZE_ADDRESS__)

void* small_alloc(std::size_t size) { return ::operator new(size); }  // SA4
void small_free(void* p, std::size_t) noexcept { ::operator delete(p); }

#else

namespace {

constexpr std::size_t kChunk = 64 * 1024;
// SA8: chunks are carved from 2 MiB regions the kernel may back with one
// huge page, so a heap of tens of MB costs a few TLB entries, not thousands.
constexpr std::size_t kRegion = 2 * 1024 * 1024;
static_assert(kRotationBytes % kChunk == 0);
constexpr std::size_t kGrain = 64;  // SA5: every class is a multiple of a cache line
constexpr std::array<std::uint32_t, 8> kClassSize = {64, 128, 192, 256, 384, 512, 768, 1024};
constexpr std::size_t kClasses = kClassSize.size();
constexpr std::size_t kMaxSmall = kClassSize[kClasses - 1];
constexpr std::size_t kWords = kChunk / kGrain / 64;  // bitmap words for the smallest class

constexpr auto kClassOf = [] {
  std::array<std::uint8_t, kMaxSmall / kGrain + 1> t{};
  std::size_t cls = 0;
  for (std::size_t g = 0; g < t.size(); ++g) {
    while (kClassSize[cls] < g * kGrain) ++cls;
    t[g] = static_cast<std::uint8_t>(cls);
  }
  return t;
}();

struct Heap;

// The first lines of a chunk; its blocks follow. Each group of fields has
// the cache lines of the threads that write it (SA9).
struct Chunk {
  // Immutable once carved (SA1): read by every free.
  alignas(kCacheLine) Heap* owner;
  std::uint32_t cls;
  std::uint32_t size;
  std::uint32_t words;  // bitmap words in use
  // The freers' line (SA9): `pending` is raised by a freer and lowered by the
  // owner; next_pending is written by the freer that raised it and read by
  // the owner after it took the chunk off its heap's pending stack (SA10).
  alignas(kCacheLine) std::atomic<bool> pending{false};
  Chunk* next_pending = nullptr;
  alignas(kCacheLine) std::atomic<std::uint64_t> remote[kWords] = {};
  // Owner only (SA2).
  alignas(kCacheLine) std::uint64_t local[kWords] = {};
  std::uint32_t cursor = 0;  // no local bit below this word
  bool listed = true;        // current for its class, or on its avail list
  Chunk* next_avail = nullptr;

  char* blocks() noexcept { return reinterpret_cast<char*>(this) + sizeof(Chunk); }
  std::size_t index(void* p) noexcept {
    return static_cast<std::size_t>(static_cast<char*>(p) - blocks()) / size;
  }

  void* take() noexcept {
    for (std::uint32_t w = cursor; w < words; ++w) {
      if (std::uint64_t bits = local[w]) {
        local[w] = bits & (bits - 1);
        cursor = w;
        return blocks() + (w * 64 + static_cast<std::uint32_t>(__builtin_ctzll(bits))) * size;
      }
    }
    cursor = words;
    return nullptr;
  }
};
static_assert(sizeof(Chunk) % kGrain == 0, "blocks start 64-byte aligned (SA5)");

// SA8: every heap takes its chunks from the same regions, so a thread that
// allocates a few blocks costs a chunk per class it uses, not a region.
std::mutex g_region_mutex;
char* g_region = nullptr;  // the rest of the newest region, under g_region_mutex
std::size_t g_region_left = 0;

void* take_chunk() {
  std::lock_guard lock(g_region_mutex);
  if (g_region_left == 0) {
    // Map twice the size and keep the 2 MiB-aligned window inside it (SA1
    // needs the chunks aligned to kChunk; a region aligned to its size can
    // be a huge page).
    void* m =
        ::mmap(nullptr, 2 * kRegion, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    auto base = reinterpret_cast<std::uintptr_t>(m);
    auto aligned = (base + kRegion - 1) & ~(kRegion - 1);
    if (aligned > base) ::munmap(m, aligned - base);
    if (std::size_t tail = base + 2 * kRegion - (aligned + kRegion))
      ::munmap(reinterpret_cast<void*>(aligned + kRegion), tail);
    g_region = reinterpret_cast<char*>(aligned);
    ::madvise(g_region, kRegion, MADV_HUGEPAGE);  // a hint: no huge pages is fine
    g_region_left = kRegion / kChunk;
  }
  void* chunk = g_region;
  g_region += kChunk;
  --g_region_left;
  return chunk;
}

// SA12: per class, the blocks the owner freed last, handed out first (LIFO).
constexpr std::uint32_t kCached = 32;
// SA13: chunks a heap carves for a class before it takes back blocks that
// other threads freed.
constexpr std::uint32_t kRotation = kRotationBytes / kChunk;

struct alignas(kCacheLine) Heap {
  Chunk* current[kClasses] = {};  // owner only (SA2): where allocation goes on
  Chunk* avail[kClasses] = {};    // owner only: other chunks with local bits
  Heap* next_orphan = nullptr;    // under g_mutex
  std::uint32_t carved[kClasses] = {};  // owner only: chunks carved per class (SA13)
  // Any thread (SA2, SA10): chunks whose remote bits the owner has not taken.
  alignas(kCacheLine) std::atomic<Chunk*> pending[kClasses] = {};
  // Owner only (SA12): live in their chunks' bitmaps, free to the owner.
  alignas(kCacheLine) std::uint32_t cached[kClasses] = {};
  void* cache[kClasses][kCached];

  void list(std::size_t cls, Chunk* c) noexcept {
    c->listed = true;
    c->next_avail = avail[cls];
    avail[cls] = c;
  }

  // SA10: take each pending chunk's remote bits into its local ones.
  bool collect(std::size_t cls) noexcept {
    Chunk* c = pending[cls].exchange(nullptr, std::memory_order_acquire);
    bool got = false;
    while (c) {
      Chunk* next = c->next_pending;  // before the flag: a freer may push c again after it
      c->pending.store(false, std::memory_order_seq_cst);
      bool any = false;
      for (std::uint32_t w = 0; w < c->words; ++w) {
        if (c->remote[w].load(std::memory_order_seq_cst) == 0) continue;
        std::uint64_t bits = c->remote[w].exchange(0, std::memory_order_seq_cst);
        c->local[w] |= bits;
        if (w < c->cursor) c->cursor = w;
        any = true;
      }
      if (any && !c->listed) list(cls, c);
      got = got || any;
      c = next;
    }
    return got;
  }

  Chunk* carve(std::size_t cls) {
    auto* c = ::new (take_chunk()) Chunk();
    // Another thread reads the header only after it got one of these blocks,
    // through a release/acquire chain (a queue, a promise): plain writes do.
    c->owner = this;
    c->cls = static_cast<std::uint32_t>(cls);
    c->size = kClassSize[cls];
    std::size_t n = (kChunk - sizeof(Chunk)) / c->size;
    c->words = static_cast<std::uint32_t>((n + 63) / 64);
    for (std::size_t w = 0; w < c->words; ++w) {
      std::size_t in_word = std::min<std::size_t>(64, n - w * 64);
      c->local[w] = in_word == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << in_word) - 1;
    }
    return c;
  }

  // The current chunk of `cls` is exhausted: go on in the next chunk with a
  // free block, taking remote frees in before carving a new chunk.
  void* alloc_slow(std::size_t cls) {
    if (Chunk* c = current[cls]) c->listed = false;
    current[cls] = nullptr;
    for (;;) {
      if (Chunk* c = avail[cls]) {
        avail[cls] = c->next_avail;
        current[cls] = c;
        if (void* p = c->take()) return p;
        c->listed = false;
        current[cls] = nullptr;
        continue;
      }
      // SA13: remote frees are taken back only once the class has
      // kRotation chunks.
      if (carved[cls] >= kRotation && collect(cls)) continue;
      ++carved[cls];
      Chunk* c = carve(cls);
      current[cls] = c;
      return c->take();
    }
  }

  void free_local(Chunk* c, std::size_t i) noexcept {
    auto w = static_cast<std::uint32_t>(i / 64);
    c->local[w] |= std::uint64_t{1} << (i % 64);
    if (w < c->cursor) c->cursor = w;
    if (!c->listed) list(c->cls, c);
  }
};

// SA10: a freer sets the block's remote bit, then makes sure the chunk is on
// its owner's pending stack: the one freer that raises `pending` pushes it.
void free_remote(Chunk* c, std::size_t i) noexcept {
  c->remote[i / 64].fetch_or(std::uint64_t{1} << (i % 64), std::memory_order_seq_cst);
  if (c->pending.load(std::memory_order_seq_cst)) return;
  if (c->pending.exchange(true, std::memory_order_seq_cst)) return;
  std::atomic<Chunk*>& head = c->owner->pending[c->cls];
  Chunk* h = head.load(std::memory_order_relaxed);
  do {
    c->next_pending = h;
    // release: the owner that takes the stack sees next_pending.
  } while (!head.compare_exchange_weak(h, c, std::memory_order_release, std::memory_order_relaxed));
}

std::mutex g_mutex;                   // guards g_orphans and g_all
Heap* g_orphans = nullptr;            // heaps of exited threads (SA3)
std::vector<Heap*>* g_all = nullptr;  // every heap ever made, kept reachable (SA3)

// SA11: a fork() taken while another thread holds one of the allocator's
// mutexes would leave it locked in the child, whose next new chunk or
// thread would wait forever: fork takes both first and releases them on
// both sides (what glibc does for its arenas).
const bool g_fork_safe = [] {
  ::pthread_atfork(
      [] {
        g_mutex.lock();
        g_region_mutex.lock();
      },
      [] {
        g_region_mutex.unlock();
        g_mutex.unlock();
      },
      [] {
        g_region_mutex.unlock();
        g_mutex.unlock();
      });
  return true;
}();

Heap* new_heap_locked() {  // caller holds g_mutex
  if (!g_all) g_all = new std::vector<Heap*>();
  Heap* h = new Heap();
  g_all->push_back(h);
  return h;
}

Heap* adopt() {
  std::lock_guard lock(g_mutex);
  if (Heap* h = g_orphans) {
    g_orphans = h->next_orphan;
    return h;
  }
  return new_heap_locked();
}

// SA7: the thread's heap, in a trivially destructible thread_local that
// stays readable after ThreadHeap's destructor ran (objects destroyed later
// at the thread's exit, e.g. a static Actor at the main thread's, still
// free through it).
thread_local Heap* tl_heap = nullptr;
thread_local bool tl_heap_orphaned = false;

struct ThreadHeap {
  Heap* heap = adopt();
  ThreadHeap() { tl_heap = heap; }
  ~ThreadHeap() {
    tl_heap = nullptr;
    tl_heap_orphaned = true;
    std::lock_guard lock(g_mutex);
    heap->next_orphan = g_orphans;
    g_orphans = heap;  // SA3
  }
};

[[gnu::noinline]] Heap* my_heap_slow() {
  if (!tl_heap_orphaned) {
    thread_local ThreadHeap th;
    return th.heap;
  }
  // SA7: our heap is on the orphan list, where a new thread may adopt it:
  // from now on this thread frees to it as a remote thread does, and takes
  // new blocks from a heap of its own that is never orphaned.
  std::lock_guard lock(g_mutex);
  tl_heap = new_heap_locked();
  return tl_heap;
}

inline Heap* my_heap() {
  if (Heap* h = tl_heap) [[likely]]
    return h;
  return my_heap_slow();
}

// The paths past the owner's cache (SA12), out of line so that the fast
// paths stay a few instructions with no registers to save.
[[gnu::noinline]] void* alloc_from_chunks(Heap* heap, std::size_t cls) {
  if (Chunk* c = heap->current[cls])
    if (void* p = c->take()) return p;
  return heap->alloc_slow(cls);
}

[[gnu::noinline]] void free_to_bitmap(Heap* heap, Chunk* c, void* p) noexcept {
  heap->free_local(c, c->index(p));
}

[[gnu::noinline]] void free_elsewhere(Chunk* c, void* p) noexcept { free_remote(c, c->index(p)); }

}  // namespace

void* small_alloc(std::size_t size) {
  if (size > kMaxSmall) [[unlikely]]
    return ::operator new(size);  // SA1
  std::size_t cls = kClassOf[(size + kGrain - 1) / kGrain];
  Heap* heap = my_heap();
  if (std::uint32_t& n = heap->cached[cls]) return heap->cache[cls][--n];  // SA12
  return alloc_from_chunks(heap, cls);
}

void small_free(void* p, std::size_t size) noexcept {
  if (!p) return;
  if (size > kMaxSmall) [[unlikely]] {  // SA1
    ::operator delete(p);
    return;
  }
  auto* c = reinterpret_cast<Chunk*>(reinterpret_cast<std::uintptr_t>(p) & ~(kChunk - 1));
  Heap* heap = my_heap();
  if (c->owner != heap) return free_elsewhere(c, p);
  std::uint32_t& n = heap->cached[c->cls];
  if (n < kCached) {  // SA12
    heap->cache[c->cls][n++] = p;
    return;
  }
  free_to_bitmap(heap, c, p);
}

#endif

}  // namespace troupe::detail
