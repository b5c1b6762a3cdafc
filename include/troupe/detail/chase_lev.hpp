// troupe/detail/chase_lev.hpp: a work-stealing deque of pointers.
//
// Algorithm: Chase & Lev, "Dynamic Circular Work-Stealing Deque" (SPAA 2005),
// with the C11 memory orders of Lê, Pop, Cohen & Zappa Nardelli, "Correct and
// Efficient Work-Stealing for Weak Memory Models" (PPoPP 2013). Where that
// paper uses a stand-alone fence we use an ordered operation on the variable
// instead, so ThreadSanitizer (which ignores fences) sees the same edges.
//
// Invariants:
//   CL1. Only the owner thread calls push() and take(); any thread calls steal().
//   CL2. Every pushed item is returned exactly once, by take() or by steal().
//   CL3. A buffer that was replaced by a larger one is kept until the deque is
//       destroyed, because a thief may still read from it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "troupe/detail/platform.hpp"
#include "troupe/detail/systematic.hpp"

namespace troupe::detail {

template <class T>
class ChaseLevDeque {
  static_assert(std::is_pointer_v<T>);

  struct Buffer {
    explicit Buffer(std::int64_t cap) : mask(cap - 1), slots(new std::atomic<T>[cap]) {}
    std::int64_t capacity() const { return mask + 1; }
    // Element accesses are relaxed: the release store / acquire load of bottom_
    // (push/steal) or the owner's program order (take) order them.
    T get(std::int64_t i) const { return slots[i & mask].load(std::memory_order_relaxed); }
    void put(std::int64_t i, T v) { slots[i & mask].store(v, std::memory_order_relaxed); }
    std::int64_t mask;
    std::unique_ptr<std::atomic<T>[]> slots;
  };

 public:
  explicit ChaseLevDeque(std::int64_t capacity = 256) {
    buffers_.push_back(std::make_unique<Buffer>(capacity));
    buffer_.store(buffers_.back().get(), std::memory_order_relaxed);
  }

  // Owner only (CL1).
  void push(T item) {
    std::int64_t b = bottom_.load(std::memory_order_relaxed);  // only the owner writes bottom_
    std::int64_t t = top_.load(std::memory_order_acquire);
    Buffer* buf = buffer_.load(std::memory_order_relaxed);      // only the owner writes buffer_
    if (b - t > buf->capacity() - 1) buf = grow(buf, t, b);
    buf->put(b, item);
    TROUPE_YIELD();
    // release: a thief that sees the new bottom_ also sees the item and
    // everything the owner wrote into *item before pushing it.
    bottom_.store(b + 1, std::memory_order_release);
  }

  // Owner only (CL1). Newest item first (LIFO), or nullptr.
  T take() {
    std::int64_t b = bottom_.load(std::memory_order_relaxed) - 1;
    Buffer* buf = buffer_.load(std::memory_order_relaxed);
    // seq_cst store then seq_cst load: the store-load order Lê et al. get from
    // a full fence, so a thief and the owner cannot both take the last item.
    bottom_.store(b, std::memory_order_seq_cst);
    TROUPE_YIELD();
    std::int64_t t = top_.load(std::memory_order_seq_cst);
    if (t > b) {  // empty
      bottom_.store(b + 1, std::memory_order_relaxed);
      return nullptr;
    }
    T item = buf->get(b);
    if (t == b) {  // last item: race the thieves for it through top_
      if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                        std::memory_order_relaxed))
        item = nullptr;
      bottom_.store(b + 1, std::memory_order_relaxed);
    }
    return item;
  }

  // Any thread. Oldest item first (FIFO), or nullptr if empty or lost a race.
  T steal() {
    std::int64_t t = top_.load(std::memory_order_seq_cst);
    TROUPE_YIELD();
    // acquire pairs with push's release store of bottom_ (CL2, item contents).
    std::int64_t b = bottom_.load(std::memory_order_seq_cst);
    if (t >= b) return nullptr;
    Buffer* buf = buffer_.load(std::memory_order_acquire);  // pairs with grow's release
    T item = buf->get(t);
    if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                      std::memory_order_relaxed))
      return nullptr;
    return item;
  }

  // Any thread; a hint only (may be stale by the time it returns).
  bool empty_hint() const {
    return bottom_.load(std::memory_order_seq_cst) <= top_.load(std::memory_order_seq_cst);
  }
  // Any thread; a hint only. Relaxed: statistics, no decision rests on it.
  std::size_t size_hint() const noexcept {
    std::int64_t n = bottom_.load(std::memory_order_relaxed) - top_.load(std::memory_order_relaxed);
    return n > 0 ? static_cast<std::size_t>(n) : 0;
  }

 private:
  Buffer* grow(Buffer* old, std::int64_t t, std::int64_t b) {
    auto bigger = std::make_unique<Buffer>(old->capacity() * 2);
    for (std::int64_t i = t; i < b; ++i) bigger->put(i, old->get(i));
    Buffer* raw = bigger.get();
    buffers_.push_back(std::move(bigger));  // CL3: old stays alive
    // release: a thief that loads the new buffer sees its copied contents.
    buffer_.store(raw, std::memory_order_release);
    return raw;
  }

  alignas(kCacheLine) std::atomic<std::int64_t> top_{0};     // written by thieves and owner (CAS)
  alignas(kCacheLine) std::atomic<std::int64_t> bottom_{0};  // written by the owner only
  std::atomic<Buffer*> buffer_{nullptr};                     // written by the owner only
  std::vector<std::unique_ptr<Buffer>> buffers_;             // owner only (CL3)
};

}  // namespace troupe::detail
