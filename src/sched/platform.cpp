// src/sched/platform.cpp: what troupe/detail/platform.hpp declares: the futex
// wrappers (private and shared) and Spin's yield.
#include "troupe/detail/platform.hpp"

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

namespace troupe::detail {

namespace {

timespec to_timespec(std::int64_t ns) noexcept {
  return timespec{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
}

long futex(const std::atomic<std::uint32_t>* word, int op, std::uint32_t val,
           const timespec* ts) noexcept {
  return syscall(SYS_futex, reinterpret_cast<const std::uint32_t*>(word), op, val, ts, nullptr, 0);
}

}  // namespace

void futex_wait(const std::atomic<std::uint32_t>* word, std::uint32_t expected) noexcept {
  futex(word, FUTEX_WAIT_PRIVATE, expected, nullptr);
}

bool futex_wait_for(const std::atomic<std::uint32_t>* word, std::uint32_t expected,
                    std::int64_t timeout_ns) noexcept {
  const timespec ts = to_timespec(timeout_ns);
  long r = futex(word, FUTEX_WAIT_PRIVATE, expected, &ts);
  return !(r == -1 && errno == ETIMEDOUT);
}

void futex_wake(const std::atomic<std::uint32_t>* word, int n) noexcept {
  futex(word, FUTEX_WAKE_PRIVATE, static_cast<std::uint32_t>(n), nullptr);
}

bool futex_wait_shared(const std::atomic<std::uint32_t>* word, std::uint32_t expected,
                       std::int64_t timeout_ns) noexcept {
  const timespec ts = to_timespec(timeout_ns);
  long r = futex(word, FUTEX_WAIT, expected, &ts);
  return !(r == -1 && errno == ETIMEDOUT);
}

void futex_wake_shared(const std::atomic<std::uint32_t>* word) noexcept {
  futex(word, FUTEX_WAKE, static_cast<std::uint32_t>(INT_MAX), nullptr);
}

void Spin::yield_thread() noexcept { sched_yield(); }

}  // namespace troupe::detail
