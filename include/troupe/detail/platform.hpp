// troupe/detail/platform.hpp: the few OS and CPU primitives the runtime's
// concurrent structures are built from: a spin-wait hint and the one spin
// pacing (Spin), Linux futexes (private to a process, or shared through
// memory that several processes map), the cache-line size.
//
// Invariants:
//   PF1. futex_wake never reads the word it wakes on, so it may be called on an
//       address whose owner has already returned (the kernel only hashes the
//       address); callers rely on this to wake a waiter that may have left.
//   PF2. Every wait or retry loop of the runtime paces itself with Spin (or
//       Spin::backoff): a pause on x86 and ARM, a yield once the wait is long,
//       so no loop burns the time slice of the thread it waits for.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace troupe::detail {

inline constexpr std::size_t kCacheLine = 64;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("pause" ::: "memory");
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// The runtime's one pacing for wait loops (PF2): a pause per round; every 64
// rounds a look at the clock (so a short wait, a link being written or a
// round trip of a few microseconds, reads no clock and makes no system call),
// and once the spin has lasted kYieldAfter, a sched_yield there, so that on
// an oversubscribed machine the threads whose work we wait for get the CPU.
class Spin {
 public:
  static constexpr std::chrono::microseconds kYieldAfter{10};
  // A spin with no deadline: step() never returns false.
  Spin() noexcept = default;
  // step() returns false once `d` has passed (measured from the first look
  // at the clock, 64 rounds in).
  explicit Spin(std::chrono::nanoseconds d) noexcept : d_(d) {}
  // ... and yields from `yield_after` on instead of kYieldAfter (a waiter
  // whose peer may share its CPU yields early: the peer then runs at once).
  Spin(std::chrono::nanoseconds d, std::chrono::nanoseconds yield_after) noexcept
      : d_(d), yield_after_(yield_after) {}
  // One round; false once the deadline has passed.
  bool step() noexcept {
    cpu_relax();
    if (++i_ % 64 != 0) return true;
    const auto now = std::chrono::steady_clock::now();
    if (i_ == 64) start_ = now;
    if (now - start_ >= d_) return false;
    if (now - start_ >= yield_after_) yield_thread();
    return true;
  }
  // Contention back-off before retry `n`: 2^min(n, 8) pauses, and from the
  // ninth retry on a yield instead.
  static void backoff(unsigned n) noexcept {
    if (n >= 8) {
      yield_thread();
      return;
    }
    for (unsigned i = 0; i < (1u << n); ++i) cpu_relax();
  }
  static void yield_thread() noexcept;

 private:
  std::chrono::steady_clock::time_point start_{};
  std::chrono::nanoseconds d_ = std::chrono::nanoseconds::max();
  std::chrono::nanoseconds yield_after_ = kYieldAfter;
  unsigned i_ = 0;
};

// Spins (`spin`'s pacing) until pred() or the spin's deadline has passed;
// returns pred()'s last value.
template <class Pred>
bool spin_until(Spin spin, Pred&& pred) {
  while (!pred())
    if (!spin.step()) return pred();
  return true;
}
template <class Pred>
bool spin_until(std::chrono::nanoseconds d, Pred&& pred) {
  return spin_until(Spin(d), pred);
}

// A full store-load barrier: a store before it is visible to other threads
// before any load after it is performed. ThreadSanitizer does not model
// stand-alone fences, so under it we use a locked RMW (a full barrier on the
// CPUs we run on) and keep the build warning-free.
inline void store_load_fence() noexcept {
#if defined(__SANITIZE_THREAD__)
  static std::atomic<int> dummy{0};
  dummy.fetch_add(0, std::memory_order_seq_cst);
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

// Blocks while *word == expected (or until a spurious wake). Private futex.
void futex_wait(const std::atomic<std::uint32_t>* word, std::uint32_t expected) noexcept;
// As futex_wait, but gives up after timeout_ns; returns false on timeout.
bool futex_wait_for(const std::atomic<std::uint32_t>* word, std::uint32_t expected,
                    std::int64_t timeout_ns) noexcept;
// Wakes up to n waiters on word (PF1: does not read *word).
void futex_wake(const std::atomic<std::uint32_t>* word, int n) noexcept;
// The same on a word in memory that several processes map (a shared futex):
// waits at most timeout_ns (returns false on timeout), wakes every waiter.
bool futex_wait_shared(const std::atomic<std::uint32_t>* word, std::uint32_t expected,
                       std::int64_t timeout_ns) noexcept;
void futex_wake_shared(const std::atomic<std::uint32_t>* word) noexcept;

}  // namespace troupe::detail
