// src/sched/small_alloc.cpp: per-thread size-classed heaps with remote frees
// (small_alloc.hpp, invariants SA1-SA5 there).
#include "troupe/detail/small_alloc.hpp"

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
constexpr std::size_t kGrain = 64;  // SA5: every class is a multiple of a cache line
constexpr std::array<std::uint32_t, 8> kClassSize = {64, 128, 192, 256, 384, 512, 768, 1024};
constexpr std::size_t kClasses = kClassSize.size();
constexpr std::size_t kMaxSmall = kClassSize[kClasses - 1];

// kClassOf[(size + kGrain - 1) / kGrain]: the smallest class that holds size.
constexpr auto kClassOf = [] {
  std::array<std::uint8_t, kMaxSmall / kGrain + 1> t{};
  std::size_t cls = 0;
  for (std::size_t g = 0; g < t.size(); ++g) {
    while (kClassSize[cls] < g * kGrain) ++cls;
    t[g] = static_cast<std::uint8_t>(cls);
  }
  return t;
}();

struct Block {
  Block* next;
};

struct Heap;
struct alignas(kCacheLine) ChunkHeader {  // SA1: written once, before any block is handed out
  Heap* owner;
  std::uint32_t cls;
};
static_assert(sizeof(ChunkHeader) == kCacheLine);

struct alignas(kCacheLine) Heap {
  Block* local[kClasses] = {};                                    // owner only (SA2)
  alignas(kCacheLine) std::atomic<Block*> remote[kClasses] = {};  // any thread (SA2)
  std::vector<void*> chunks;                                      // owner only
  Heap* next_orphan = nullptr;                                    // under g_mutex

  Block* refill(std::size_t cls) {
    // acquire: see the contents freeing threads wrote before their release push.
    if (Block* b = remote[cls].exchange(nullptr, std::memory_order_acquire)) return b;
    std::size_t size = kClassSize[cls];
    char* chunk = static_cast<char*>(std::aligned_alloc(kChunk, kChunk));  // SA1
    if (!chunk) throw std::bad_alloc();
    chunks.push_back(chunk);
    // Another thread reads the header only after it got one of these blocks,
    // through a release/acquire chain (a queue, a promise): plain writes do.
    ::new (chunk) ChunkHeader{this, static_cast<std::uint32_t>(cls)};
    Block* head = nullptr;
    std::size_t n = (kChunk - sizeof(ChunkHeader)) / size;
    for (std::size_t i = n; i-- > 0;) {  // first block at the head: sequential use
      auto* b = reinterpret_cast<Block*>(chunk + sizeof(ChunkHeader) + i * size);
      b->next = head;
      head = b;
    }
    return head;
  }
};

std::mutex g_mutex;                   // guards g_orphans and g_all
Heap* g_orphans = nullptr;            // heaps of exited threads (SA3)
std::vector<Heap*>* g_all = nullptr;  // every heap ever made, kept reachable (SA3)

Heap* adopt() {
  std::lock_guard lock(g_mutex);
  if (Heap* h = g_orphans) {
    g_orphans = h->next_orphan;
    return h;
  }
  if (!g_all) g_all = new std::vector<Heap*>();
  Heap* h = new Heap();
  g_all->push_back(h);
  return h;
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

Heap* my_heap() {
  if (Heap* h = tl_heap) return h;
  if (!tl_heap_orphaned) {
    thread_local ThreadHeap th;
    return th.heap;
  }
  // SA7: our heap is on the orphan list, where a new thread may adopt it:
  // from now on this thread frees to it as a remote thread does, and takes
  // new blocks from a heap of its own that is never orphaned.
  std::lock_guard lock(g_mutex);
  if (!g_all) g_all = new std::vector<Heap*>();
  tl_heap = new Heap();
  g_all->push_back(tl_heap);
  return tl_heap;
}

}  // namespace

void* small_alloc(std::size_t size) {
  if (size > kMaxSmall) return ::operator new(size);  // SA1
  std::size_t cls = kClassOf[(size + kGrain - 1) / kGrain];
  Heap* heap = my_heap();
  Block* b = heap->local[cls];
  if (!b) b = heap->refill(cls);
  heap->local[cls] = b->next;
  return b;
}

void small_free(void* p, std::size_t size) noexcept {
  if (!p) return;
  if (size > kMaxSmall) {  // SA1
    ::operator delete(p);
    return;
  }
  auto* chunk = reinterpret_cast<ChunkHeader*>(reinterpret_cast<std::uintptr_t>(p) & ~(kChunk - 1));
  Heap* owner = chunk->owner;
  std::uint32_t cls = chunk->cls;
  auto* b = static_cast<Block*>(p);
  if (owner == my_heap()) {
    b->next = owner->local[cls];
    owner->local[cls] = b;
    return;
  }
  Block* head = owner->remote[cls].load(std::memory_order_relaxed);
  do {
    b->next = head;
    // release: the owner that takes the list sees b->next and the block.
  } while (!owner->remote[cls].compare_exchange_weak(head, b, std::memory_order_release,
                                                     std::memory_order_relaxed));
}

#endif

}  // namespace troupe::detail
