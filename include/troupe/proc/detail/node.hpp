// troupe/proc/detail/node.hpp: this process's end of the worker network.
//
// In the root process (the program itself) the node supervises workers:
// spawns them on demand within the machine-wide budget, dispatches calls,
// routes calls that workers make (nested work goes through the root, so the
// budget holds for it too), notices deaths and retires idle workers. In a
// worker the node serves calls from the parent and forwards the worker's own
// calls to it, but for method calls to an actor in another worker, which go
// over a direct channel between the two that the root sets up (no process is
// added; src/proc/node_private.hpp N11).
//
// Invariants:
//   ND1. Every submitted call completes exactly once: by its reply, or by
//       fail() (worker died, timeout, cancel, send error, its message or its
//       reply rejected, no worker could be started). The pending table entry
//       is erased by whoever completes it, under the node's mutex.
//   ND2. Descriptors passed in a call are borrowed until submit_call returns
//       (sendmsg dups them into the receiver).
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "troupe/proc/detail/wire.hpp"

namespace troupe::proc::detail {

struct PendingBase {
  virtual ~PendingBase() { trace_end(); }
  virtual void complete(Message& m) = 0;        // the reply arrived (ND1)
  virtual void fail(std::exception_ptr e) = 0;  // it never will (ND1)
  std::string name;                             // what was called, for messages
  // trace.hpp: when the call was submitted (0: not tracing), how it ended
  // and the pid of the worker that answered (0: not known here). Written by
  // the submitting thread before the entry is published, then only by the
  // thread that took the entry out of the table (ND1: one does), so never
  // by two threads at once.
  std::uint64_t trace_t0 = 0;
  const char* trace_outcome = "failed";
  std::int64_t trace_pid = 0;
  // While tracing, records the call from trace_t0 to now, once: called just
  // before the promise is completed or failed (so the event exists when a
  // caller's get() returns), and by the destructor for any other path.
  void trace_end() noexcept;
};

// Where a spawned actor goes (proc::Placement; the root applies it).
struct PlacementRule {
  enum Kind : std::uint8_t { spread, fresh, in_group } kind = spread;
  std::string group;  // kind == in_group
};

struct OutCall {
  std::uint32_t worker = 0;  // 0: any worker (for a spawn: by `placement`)
  PlacementRule placement;
  std::string name;      // registered name
  std::string body;      // packed [worker, object, name, args]
  std::vector<int> fds;  // borrowed (ND2)
  std::chrono::milliseconds timeout{0};
};

std::uint64_t submit_call(OutCall&& call, std::unique_ptr<PendingBase> p);
void cancel_call(std::uint64_t id);
void send_reply(std::uint64_t id, std::string_view body, std::span<const int> fds = {});
// A worker calls this as call `id` starts (or is skipped): true if it was
// cancelled before it started. Every invoker calls it exactly once.
bool take_cancelled(std::uint64_t id);
std::uint32_t self_worker_id() noexcept;

std::uint64_t add_object(std::string_view type, std::shared_ptr<void> actor);
std::shared_ptr<void> find_object(std::uint64_t id, std::string_view type);
void release_object(std::uint32_t worker, std::uint64_t object);

// Sizes of this node's tables, for tests that check they stay bounded.
struct TableSizes {
  std::size_t pending = 0;    // calls awaiting a reply
  std::size_t waiting = 0;    // root: calls waiting for a worker
  std::size_t dead = 0;       // root: dead workers remembered for their handles
  std::size_t unstarted = 0;  // worker: calls received, not started
};
TableSizes table_sizes();

}  // namespace troupe::proc::detail
