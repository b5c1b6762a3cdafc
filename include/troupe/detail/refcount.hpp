// troupe/detail/refcount.hpp: dropping one reference of an intrusive count,
// the rule promise states (promise.hpp PR3, PR7) and cowns (cown.hpp CW8)
// share.
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

// Drops one reference, `seen` being the count the caller just loaded
// (acquire); true if it was the last (the caller then frees).
inline bool drop_seen_ref(std::atomic<std::uint32_t>& refs, std::uint32_t seen) noexcept {
  return seen == 1 || refs.fetch_sub(1, std::memory_order_acq_rel) == 1;
}
// Drops one reference; true if it was the last (the caller then frees).
inline bool drop_ref(std::atomic<std::uint32_t>& refs) noexcept {
  return drop_seen_ref(refs, refs.load(std::memory_order_acquire));
}

}  // namespace troupe::detail
