// troupe/detail/refcount.hpp: dropping one reference of an intrusive count,
// the rule cowns (cown.hpp CW8) follow and promise states too (promise.hpp
// PR7 writes it out beside its check for an immortal state, PR9).
//
// Invariant:
//   RC1. A count of 1 seen by a holder (an acquire load) is final: no other
//       reference exists to copy, so the holder is the last and drops it
//       without the locked decrement. Otherwise the decrement is acq_rel:
//       the last releaser sees every other holder's writes before freeing.
#pragma once

#include <atomic>
#include <cstdint>

namespace troupe::detail {

// Drops one reference; true if it was the last (the caller then frees).
inline bool drop_ref(std::atomic<std::uint32_t>& refs) noexcept {
  return refs.load(std::memory_order_acquire) == 1 ||
         refs.fetch_sub(1, std::memory_order_acq_rel) == 1;
}

}  // namespace troupe::detail
