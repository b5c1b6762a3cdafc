// troupe/detail/platform.hpp: the few OS and CPU primitives the runtime's
// concurrent structures are built from: a spin-wait hint, Linux futexes, the
// cache-line size.
//
// Invariants:
//   I1. futex_wake never reads the word it wakes on, so it may be called on an
//       address whose owner has already returned (the kernel only hashes the
//       address); callers rely on this to wake a waiter that may have left.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace troupe::detail {

inline constexpr std::size_t kCacheLine = 64;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Waiting for another thread to finish a step it has started (a link in a
// queue): spin briefly, then yield, so that on an oversubscribed machine the
// thread we wait for gets the CPU instead of us burning its time slice.
struct SpinWait {
  unsigned n = 0;
  void once() noexcept {
    if (++n < 64)
      cpu_relax();
    else
      yield_thread();
  }
  static void yield_thread() noexcept;
};

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
// Wakes up to n waiters on word (I1: does not read *word).
void futex_wake(const std::atomic<std::uint32_t>* word, int n) noexcept;

}  // namespace troupe::detail
