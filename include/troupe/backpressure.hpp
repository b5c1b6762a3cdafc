// troupe/backpressure.hpp: what happens when an actor is sent more than it
// can take (detail/cown.hpp BP1-BP7 for how it is done).
//
// An actor may have a mailbox limit: the number of behaviours queued on it
// (waiting or running) beyond which it is "overloaded". Sending to an
// overloaded actor never drops the message; it slows the sender down:
//   - a sender that is itself a behaviour is paused after its block returns:
//     its cowns stay held and its actors run nothing else until the
//     overloaded actor drained to half its limit (Pony's muting). No thread
//     waits meanwhile. A pause never deadlocks (BP5): it is skipped, or ended
//     early, when it could hold up the drain (the sender holds an actor read-
//     only, holds the overloaded actor itself, holds an actor another paused
//     sender waits on, or waits on an actor a paused behaviour holds; or a
//     behaviour on several actors, which may be queued on the overloaded one,
//     waits for one the sender holds). A block that returns a Promise is not
//     paused.
//   - a thread outside the runtime (not a pool thread, not in a behaviour)
//     either blocks in when() until the actor drained to half its limit
//     (Overload::block, at most `block_for`, then Error(Errc::overloaded)),
//     or gets Error(Errc::overloaded) at once (Overload::fail); either way
//     nothing was sent when it throws.
//   - a pool thread outside a behaviour (a task, a promise's continuation),
//     and the thread that alone runs the actor's scheduler (an event loop's
//     thread, sched/loop.hpp: Scheduler::runs_here), send without pausing
//     or blocking (they must not wait for work that needs them).
// Limits are approximate (counters read without a lock): a few behaviours
// beyond the limit may be queued before senders notice.
#pragma once

#include <chrono>
#include <cstdint>

namespace troupe {

enum class Overload {
  block,  // an outside thread waits until the actor drained (at most block_for)
  fail,   // an outside thread gets Error(Errc::overloaded) at once
};

struct Backpressure {
  // The limit of actors made from now on (0: none). An actor's own limit:
  // set_mailbox_limit() (troupe/actor.hpp).
  std::uint32_t mailbox_limit = 0;
  Overload outside = Overload::block;
  std::chrono::milliseconds block_for{30'000};
};

// Process-wide; takes effect for later sends (and, for mailbox_limit, for
// actors made later). Thread-safe.
void set_backpressure(const Backpressure& b);
Backpressure backpressure();

// Counters since the start (statistics): behaviours paused, ended early
// (BP5), outside sends that blocked, that failed.
struct BackpressureStats {
  std::uint64_t paused = 0;
  std::uint64_t resumed_early = 0;
  std::uint64_t skipped = 0;  // an overloaded send whose sender could not be paused
  std::uint64_t blocked = 0;
  std::uint64_t refused = 0;
};
BackpressureStats backpressure_stats();

}  // namespace troupe
