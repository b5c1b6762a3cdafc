// troupe/detail/event_count.hpp: sleep until "something changed", without a
// lost wake-up (an event count, as in Dekker-style futex sleep protocols).
//
// Use: key = prepare(); re-check the condition; if it holds, cancel();
// otherwise wait(key). A notifier first makes the condition true, then calls
// notify_*().
//
// Invariants:
//   EC1. If a waiter's re-check misses the notifier's change, the notifier sees
//       the waiter counted in waiters_ and bumps epoch_, so wait(key) returns:
//       both sides order their write before their read with seq_cst.
//   EC2. notify with no waiter costs one fence and one load (no syscall).
#pragma once

#include <atomic>
#include <climits>
#include <cstdint>

#include "troupe/detail/platform.hpp"

namespace troupe::detail {

class EventCount {
 public:
  std::uint32_t prepare() noexcept {
    waiters_.fetch_add(1, std::memory_order_seq_cst);  // EC1: before the re-check
    return epoch_.load(std::memory_order_seq_cst);
  }
  void cancel() noexcept { waiters_.fetch_sub(1, std::memory_order_relaxed); }
  void wait(std::uint32_t key) noexcept {
    while (epoch_.load(std::memory_order_acquire) == key) futex_wait(&epoch_, key);
    waiters_.fetch_sub(1, std::memory_order_relaxed);  // only notify's heuristic reads it
  }
  // `fenced`: the caller already ran store_load_fence() after publishing.
  void notify_one(bool fenced = false) noexcept { notify(1, fenced); }
  void notify_all() noexcept { notify(INT_MAX, false); }
  bool has_waiters() const noexcept { return waiters_.load(std::memory_order_seq_cst) != 0; }

 private:
  void notify(int n, bool fenced) noexcept {
    // EC1: the fence orders the caller's publication (often a plain release
    // store, e.g. a deque push) before this load of waiters_.
    if (!fenced) store_load_fence();
    if (waiters_.load(std::memory_order_seq_cst) == 0) return;
    epoch_.fetch_add(1, std::memory_order_acq_rel);
    futex_wake(&epoch_, n);
  }
  alignas(kCacheLine) std::atomic<std::uint32_t> epoch_{0};
  std::atomic<std::uint32_t> waiters_{0};
};

}  // namespace troupe::detail
