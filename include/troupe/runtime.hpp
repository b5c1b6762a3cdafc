// troupe/runtime.hpp: process-wide runtime settings and lifecycle.
//
// Invariants:
//   RT1. The default pool is created once, on first use, with the options of
//       the last init() before that use; init() after it has no effect on the
//       thread count (it returns false).
//   RT2. shutdown() drains all pending work, then joins every pool thread.
#pragma once

#include <cstddef>
#include <cstdint>

namespace troupe {

struct Options {
  std::size_t threads = 0;  // 0: one per core
};

// Configures the runtime before first use (RT1). Returns true if applied.
bool init(const Options& options = {});

// Blocks until the default scheduler has no pending or running work.
void wait_idle();

// What the runtime has done so far: the default pool's counters (all zero
// while the default scheduler is not the pool, or before its first use).
// Worker processes: troupe::proc::stats().
struct Stats {
  std::size_t threads = 0;
  std::uint64_t run = 0;     // behaviours and tasks run
  std::uint64_t stolen = 0;  // of them, taken from another thread's queue
  std::uint64_t sleeps = 0;  // times a thread went to sleep for want of work
  std::uint64_t wakes = 0;   // ... and was woken
  std::size_t queued = 0;    // waiting to run now
};
Stats stats();

// Drains and stops the default pool (RT2). Later use starts a fresh pool.
// Throws troupe::Error (invalid_argument) when called from a pool thread.
void shutdown();

}  // namespace troupe
