// troupe/runtime.hpp: process-wide runtime settings and lifecycle.
//
// Invariants:
//   RT1. The default pool is created once, on first use, with the options of
//       the last init() before that use; init() after it has no effect on the
//       thread count (it returns false).
//   RT2. shutdown() drains all pending work, then joins every pool thread.
#pragma once

#include <cstddef>

namespace troupe {

struct Options {
  std::size_t threads = 0;  // 0: one per core
};

// Configures the runtime before first use (RT1). Returns true if applied.
bool init(const Options& options = {});

// Blocks until the default scheduler has no pending or running work.
void wait_idle();

// Drains and stops the default pool (RT2). Later use starts a fresh pool.
// Throws troupe::Error (invalid_argument) when called from a pool thread.
void shutdown();

}  // namespace troupe
