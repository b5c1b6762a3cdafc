// src/core/small_alloc.cpp: per-thread size-classed heaps with remote frees
// (small_alloc.hpp, invariants I1-I4 there).
#include "troupe/detail/small_alloc.hpp"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

#include "troupe/detail/platform.hpp"

namespace troupe::detail {

#if defined(__SANITIZE_ADDRESS__)

void* small_alloc(std::size_t size) { return ::operator new(size); }  // I4
void small_free(void* p) noexcept { ::operator delete(p); }

#else

namespace {

constexpr std::size_t kHeader = 16;
constexpr std::size_t kClasses = 5;  // 64, 128, 256, 512, 1024
constexpr std::size_t kMinShift = 6;
constexpr std::size_t kChunk = 64 * 1024;

struct Block {
  Block* next;
};

struct Heap;
struct Header {  // I1
  Heap* owner;
  std::uint32_t cls;
  std::uint32_t unused;
};
static_assert(sizeof(Header) == kHeader);

struct alignas(kCacheLine) Heap {
  Block* local[kClasses] = {};                           // owner only (I2)
  alignas(kCacheLine) std::atomic<Block*> remote[kClasses] = {};  // any thread (I2)
  std::vector<void*> chunks;                             // owner only
  Heap* next_orphan = nullptr;                           // under g_mutex

  Block* refill(std::size_t cls) {
    // acquire: see the contents freeing threads wrote before their release push.
    if (Block* b = remote[cls].exchange(nullptr, std::memory_order_acquire)) return b;
    std::size_t size = std::size_t{1} << (cls + kMinShift);
    char* chunk = static_cast<char*>(std::malloc(kChunk));
    if (!chunk) throw std::bad_alloc();
    chunks.push_back(chunk);
    Block* head = nullptr;
    for (std::size_t off = kChunk; off >= size; off -= size) {
      auto* b = reinterpret_cast<Block*>(chunk + off - size);
      b->next = head;
      head = b;
    }
    return head;
  }
};

std::mutex g_mutex;              // guards g_orphans and g_all
Heap* g_orphans = nullptr;       // heaps of exited threads (I3)
std::vector<Heap*>* g_all = nullptr;  // every heap ever made, kept reachable (I3)

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

struct ThreadHeap {
  Heap* heap = adopt();
  ~ThreadHeap() {
    std::lock_guard lock(g_mutex);
    heap->next_orphan = g_orphans;
    g_orphans = heap;  // I3
  }
};

Heap* my_heap() {
  thread_local ThreadHeap th;
  return th.heap;
}

inline std::size_t class_of(std::size_t total) {
  std::size_t cls = 0;
  while ((std::size_t{1} << (cls + kMinShift)) < total) ++cls;
  return cls;
}

}  // namespace

void* small_alloc(std::size_t size) {
  std::size_t total = size + kHeader;
  if (total > (std::size_t{1} << (kClasses - 1 + kMinShift))) {
    auto* h = static_cast<Header*>(::operator new(total));
    h->owner = nullptr;
    h->cls = 0;
    return reinterpret_cast<char*>(h) + kHeader;
  }
  std::size_t cls = class_of(total);
  Heap* heap = my_heap();
  Block* b = heap->local[cls];
  if (!b) b = heap->refill(cls);
  heap->local[cls] = b->next;
  auto* h = reinterpret_cast<Header*>(b);
  h->owner = heap;
  h->cls = static_cast<std::uint32_t>(cls);
  return reinterpret_cast<char*>(h) + kHeader;
}

void small_free(void* p) noexcept {
  if (!p) return;
  auto* h = reinterpret_cast<Header*>(static_cast<char*>(p) - kHeader);
  Heap* owner = h->owner;
  if (!owner) {
    ::operator delete(h);
    return;
  }
  std::uint32_t cls = h->cls;
  auto* b = reinterpret_cast<Block*>(h);
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
