// troupe/detail/systematic.hpp: seeded yield points for systematic testing.
//
// With -DTROUPE_SYSTEMATIC=ON every TROUPE_YIELD() inside the concurrent
// algorithms (the behaviour queues, the deque, the pool) asks a per-thread
// generator, seeded from TROUPE_SEED (default 1) and the thread's creation
// index, whether to yield the CPU or spin for a while at that point. A failing
// interleaving is replayed by running again with the seed it printed. Without
// the option TROUPE_YIELD() compiles to nothing.
//
// Invariants:
//   SM1. A yield point never changes what the algorithm computes, only when.
#pragma once

#include <cstdint>

namespace troupe::detail::systematic {

// True when built with TROUPE_SYSTEMATIC.
bool enabled() noexcept;
// The seed in force (TROUPE_SEED, read once).
std::uint64_t seed() noexcept;
// One yield point: may yield, spin, or do nothing, as the seeded stream says.
void yield_point() noexcept;

}  // namespace troupe::detail::systematic

#if defined(TROUPE_SYSTEMATIC)
#define TROUPE_YIELD() ::troupe::detail::systematic::yield_point()
#else
#define TROUPE_YIELD() ((void)0)
#endif
