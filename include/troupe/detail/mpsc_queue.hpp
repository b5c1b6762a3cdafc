// troupe/detail/mpsc_queue.hpp: an intrusive multi-producer queue.
//
// Algorithm: Dmitry Vyukov's intrusive MPSC node-based queue (producers swap
// the head, the single consumer walks from the tail, a stub node keeps the
// queue non-empty). Consumers are made exclusive by a try-lock flag, so any
// thread may try to pop but only one pops at a time.
//
// Invariants:
//   MQ1. push() is wait-free for producers: one exchange and one store.
//   MQ2. Only the holder of consumer_ touches tail_ (try_pop takes it).
//   MQ3. size_ counts items pushed and not yet popped; it is raised after the
//       item is linked, so size_ > 0 means an item is or will shortly be
//       poppable (a producer may be between its exchange and its link).
//   Node must have `std::atomic<Node*> next`.
#pragma once

#include <atomic>
#include <cstdint>

#include "troupe/detail/platform.hpp"

namespace troupe::detail {

template <class Node>
class MpscQueue {
 public:
  MpscQueue() {
    stub_.next.store(nullptr, std::memory_order_relaxed);
    head_.store(&stub_, std::memory_order_relaxed);
    tail_ = &stub_;
  }
  MpscQueue(const MpscQueue&) = delete;
  MpscQueue& operator=(const MpscQueue&) = delete;

  void push(Node* n) noexcept {
    link(n);
    // seq_cst: pairs with the sleep protocol of whoever consumes (a consumer
    // that announced it sleeps and then reads size_ cannot miss this item).
    size_.fetch_add(1, std::memory_order_seq_cst);
  }

  // Any thread; returns nullptr if empty, or if another consumer holds the
  // queue, or if a producer is half way through push (MQ3: try again later).
  Node* try_pop() noexcept {
    if (size_.load(std::memory_order_relaxed) <= 0) return nullptr;
    if (consumer_.exchange(true, std::memory_order_acquire)) return nullptr;  // MQ2
    Node* n = pop_locked();
    consumer_.store(false, std::memory_order_release);  // hands tail_ to the next consumer
    if (n) size_.fetch_sub(1, std::memory_order_relaxed);
    return n;
  }

  std::int64_t size_hint() const noexcept { return size_.load(std::memory_order_seq_cst); }

 private:
  void link(Node* n) noexcept {
    n->next.store(nullptr, std::memory_order_relaxed);
    // acq_rel: release publishes n's contents to the consumer; acquire orders
    // our store into prev->next after prev was published by its producer.
    Node* prev = head_.exchange(n, std::memory_order_acq_rel);
    prev->next.store(n, std::memory_order_release);
  }

  Node* pop_locked() noexcept {
    Node* tail = tail_;
    Node* next = tail->next.load(std::memory_order_acquire);
    if (tail == &stub_) {
      if (next == nullptr) return nullptr;
      tail_ = next;
      tail = next;
      next = next->next.load(std::memory_order_acquire);
    }
    if (next) {
      tail_ = next;
      return tail;
    }
    if (tail != head_.load(std::memory_order_acquire)) return nullptr;  // producer mid-push
    link(&stub_);
    next = tail->next.load(std::memory_order_acquire);
    if (next) {
      tail_ = next;
      return tail;
    }
    return nullptr;
  }

  alignas(kCacheLine) std::atomic<Node*> head_;  // producers exchange it
  alignas(kCacheLine) Node* tail_;               // consumer only (MQ2)
  Node stub_;
  std::atomic<bool> consumer_{false};            // consumer try-lock (MQ2)
  alignas(kCacheLine) std::atomic<std::int64_t> size_{0};  // MQ3
};

}  // namespace troupe::detail
