// troupe/detail/cown.hpp: the behaviour queues under every actor.
//
// Algorithm: Behaviour-Oriented Concurrency (Cheeseman et al., OOPSLA 2023),
// as in verona-rt: each cown ("concurrent owner", the thing an actor wraps)
// has an MCS-style queue of requests, one request per behaviour that wants it; a
// behaviour runs when it is at the head of the queue of every cown it names.
// Readers: consecutive read-only requests share a cown; a writer after them
// waits for the last one to finish (Cown::rstate).
//
// Scheduling a behaviour (two-phase, deadlock-free):
//   phase 1: in one global order of cowns (address order), swap our request into
//            each cown's `last`; if there was a predecessor, wait until its
//            behaviour has finished its own phase 1, then link behind it.
//   phase 2: mark our requests linkable, then take the cowns that were free.
// A behaviour on several cowns is counted down once per cown it receives
// and once for the end of phase 1; the count reaching zero makes it
// runnable. A behaviour on one cown is made runnable by its one grant (CW9).
//
// Invariants:
//   CW1. Cowns are always enqueued in ascending address order, and a behaviour
//       never overtakes, on any later cown, a predecessor that is still in its
//       phase 1. Hence the order of any two behaviours is the same on every
//       cown they share, and no cycle of waits can form (no deadlock). A
//       behaviour on one cown has no later cown: it marks its request
//       linkable before its swap and counts no end of phase 1
//       (schedule_one). The flag lies in the request, beside the `next` the
//       successor writes, so linking touches one line of the predecessor.
//   CW2. A request's `next` is written once, by its successor, after the
//       successor's swap of `last`; a request leaving the queue waits for that
//       write if `last` no longer points at it.
//   CW3. A request stays in memory until it has passed its cown on, and a
//       behaviour's memory outlives all its requests: the successor's link and
//       its wait on `linkable` never touch freed memory.
//   CW4. Writer exclusion: a writer runs only when rstate's reader count is 0;
//       readers register (rstate += 2) before passing the cown on, so the
//       writer behind them sees them. A writer that finds readers parks itself
//       in waiting_writer and sets bit 0; the reader that brings the count to 0
//       with bit 0 set grants it.
//   CW5. Two behaviours scheduled by one thread on the same cown run in the
//       order they were scheduled (the swap on `last` is the queue order).
//   CW7. A behaviour whose block waits (get()) on the promise of a behaviour
//       linked behind one of its requests (on a cown it holds, not both
//       readers) would wait forever: that one runs only after this one
//       releases. PromiseBase::wait checks the successors linked so far
//       behind the cowns it holds as a writer and throws
//       Error(invalid_argument) instead (a successor's request lives until it
//       passes the cown on, CW3, which cannot happen while we hold it, so the
//       walk reads live memory). Not seen: one not yet linked (still in its
//       phase 1, or awaiting a promise), and any behind a cown held
//       read-only (a reader passes its cown on when it gets it, so its
//       successors may be gone).
//   CW8. A non-empty queue keeps its cown alive: the request whose swap of
//       `last` found null (the queue was empty) takes one reference (when
//       CW12 says), and the request that ends that stretch (pass_on's CAS of
//       `last` back to null) drops it: a reader at once (its ReadOnly
//       handle still counts), a writer after its release loop. So a
//       behaviour need not count a reference per cown it holds, and under a
//       stream of messages nobody writes the count (when.hpp WN7); its line
//       is still the one `last` is swapped on. The scheduling
//       thread holds a counted handle while it swaps (when() is synchronous,
//       or the behaviour keeps counted handles while it awaits).
//   CW6. While a writer holds a cown, rstate == 0: it ran only at count 0
//       (CW4), and a reader registers only once it holds the cown, which comes
//       after the writer passed it on. So a writer handed the cown by a
//       writer skips the rstate check.
//   CW9. A behaviour on one cown (schedule_one, `sole`) is resolved once,
//       by the grant of its only request: that grant schedules it without
//       the `pending` count, and the request says whether it runs on the
//       default pool, so the granting thread touches only the request's
//       line of it (it prefetches the first line, for the thread that runs
//       it). The order needs no count: the granter acquired the request
//       (it made it, or read the link), and the scheduler's hand-off is
//       release/acquire.
//   CW10. Phase 2 counts down at once what it received itself: the end of
//       phase 1 and each free cown granted to it then (a writer not parked
//       behind readers) are one fetch_sub, and none at all when that is
//       every request (`pending` then never reaches another thread: each of
//       its requests was granted here). Readers passed on by such a grant
//       are other behaviours' and are resolved one by one.
//   CW11. Nested runs. A behaviour on several cowns that received every one
//       of them in its own phase 2 (CW10), scheduled by a behaviour's block
//       (not by a promise's continuations) on a thread of the scheduler it
//       runs on, is offered to that scheduler to run at once, nested in the
//       calling block (Scheduler::run_nested, SC7; the pool: PL14). It
//       holds every cown it needs, so it runs as it would after a
//       hand-off, only sooner, and the caller's block goes on when it ends.
//       Order is kept: its cowns were free, so nothing scheduled before it
//       waits on them (CW5). Limits: one level (no run nests inside a
//       nested one); a behaviour on one cown (a message) is never nested, so
//       a block that sends to many idle actors still fans out over the pool;
//       the first of every kNestedSampleEvery nested runs on a thread is
//       timed, and one that took kNestedLongNs or more, or a nested block
//       that waits (get()), makes that thread refuse the next kNestedSkip
//       offers (long blocks, and blocks that wait, run in parallel as
//       before). The one new way to hang, a nested block waiting for a
//       behaviour queued behind a cown its caller holds, is refused as CW7
//       refuses a wait on one's own successor (Error(invalid_argument));
//       a block whose waits the runtime cannot see (Python code) sends
//       under NoNestedRuns, and nothing it sends is nested. Why: a teller
//       issuing transfers over two idle accounts each paid a hand-off (a
//       push and, in a 2-worker pool, a steal of nearly every one by the
//       other worker): 7-8 ms for 50 000 transfers, 8-9x a program with a
//       mutex per account; nested, 4.4 ms (bench/README).
//   CW12. CW8's reference is taken late, or never. A request that finds its
//       queue empty owes it; meanwhile the scheduling thread's counted
//       handle keeps the cown alive (CW8: it holds one while it schedules).
//       It is taken before anyone else could end the request's stretch:
//       for a writer, before its behaviour leaves the scheduling thread
//       (take_queue_refs: at the end of phase 1 when some queue was not
//       empty, else before make_runnable or resolve_one, and before a pause,
//       BP3); a reader granted in its own phase 2 takes it only if a
//       successor queued behind it (grant), and otherwise owes nothing (its
//       ReadOnly handle counts). A behaviour that runs nested (CW11) still
//       owes it when its block runs, on the scheduling thread inside
//       when(): its release takes it only for a queue that goes on (before
//       granting the successor) and drops none, so a transfer between two
//       idle accounts writes no reference count (4 of its locked RMWs).
//       The one way a cown could die meanwhile, the nested block dropping
//       the caller's last handle, is caught where a count reaches zero
//       (last_release): a cown that the nested behaviour owes a reference
//       for is adopted by its queue instead (count 1), the behaviour takes
//       its other references, and its release drops them as CW8 says.
//   CW13. Inline runs (run_inline; when.hpp WN10). A `when` that would run
//       nested (CW11) is first tried with no behaviour at all: its
//       requests live on the sending block's stack, and it takes each cown
//       (several, all writers, all unbounded, in address order) by a CAS of
//       `last` from null, not a swap, so it never queues behind anyone: on
//       a cown that is queued on, or whose last reader is still reading
//       (rstate != 0, CW4), it stops, marks what it took linkable and
//       passes it on as an empty run would (a successor that queued
//       meanwhile is granted as after any release, not as after a writer's:
//       readers may hold the last cown taken), and the caller sends the
//       behaviour as usual. Holding them all, it runs through the
//       scheduler's run_nested (counted as a nested run, PL14) and releases
//       like a nested run (CW12: no reference taken unless a queue goes on;
//       last_release adopts a count as for CW11). Never waiting while it
//       holds a cown, it adds no wait to any cycle (CW1), and a behaviour
//       queued behind it waits for its `linkable` only while it takes its
//       other cowns. What it saves: the behaviour's allocation, its promise
//       state, the pending count and phase 2: about 180 instructions of a
//       nested transfer's 650. Not tried while tracing (trace.hpp shows
//       behaviours); a scheduler that declines to nest (SC7: explore's)
//       gets what was taken passed on unused.
//       A block run inline that sends to an overloaded actor leaves the
//       mute target (BP3) to the behaviour it runs in, which pauses after
//       its own block.
//
// Backpressure (troupe/backpressure.hpp; src/core/backpressure.cpp):
//   BP1. A cown with limit != 0 counts: `enq` += 1 when a request joins its
//       queue (phase 1, the request marked `counted`), `done` += 1 when that
//       request leaves it (release_cowns). backlog = enq - done, read
//       without a lock (approximate). Unbounded cowns pay one load of
//       `limit` per request, nothing at release.
//   BP2. A send (when(), before anything is enqueued) to a cown over its
//       limit marks the running behaviour's thread-local mute target (the
//       first such cown), or blocks/fails an outside thread (a thread of no
//       scheduler), which therefore never enqueues a part of a behaviour.
//   BP3. After its block, a behaviour with a mute target tries to pause:
//       it keeps its cowns and hands the rest of its run (release, publish)
//       to whoever resumes it. The paused set lives in a registry under one
//       mutex; `flags` mirrors it on the cowns: kMutedOn (a paused behaviour
//       waits for this cown's backlog to fall to limit/2), kHeldPaused (a
//       paused, or pausing, behaviour holds it), kWanted (a behaviour on
//       several cowns joined this cown's queue while it was held paused),
//       kBlockedOn (an outside thread waits for it).
//   BP4. Wake-ups are never lost: a releaser increments `done` and then reads
//       `flags` (both seq_cst); a pauser sets kMutedOn and then reads the
//       backlog; a blocked thread sets kBlockedOn and then reads the backlog
//       under the mutex. One of each pair sees the other.
//   BP5. No deadlock. A pause is refused when the behaviour holds a cown
//       read-only, holds its target, holds a cown a paused behaviour waits
//       on, or targets a cown a paused behaviour holds (so no paused
//       behaviour waits, directly, on another), and when a behaviour on
//       several cowns is queued behind one of its requests. A behaviour on
//       several cowns that joins the queue of a held-paused cown later
//       (phase 1, after its seq_cst exchange of `last`) sets kWanted and
//       resumes the holder; the pauser, which set kHeldPaused by an RMW
//       before walking its successors, sees kWanted after registering, or
//       the joiner finds it registered. A behaviour that blocks in wait()
//       (a get() inside its block) resumes every paused behaviour, and no
//       pause is registered while one waits (what it waits for may be queued
//       behind a paused one: a counter and the paused count, a Dekker pair
//       like BP4's). So a target's queue only ever waits on running
//       behaviours that do not block, or on behaviours queued on one cown,
//       which do not wait on the target: every target drains, every pause
//       ends. Resumes found during phase 1 (wanted) or a release (drained)
//       run after it: after `linkable` is set, after every cown is passed
//       on (a resumed behaviour's continuations may schedule behaviours
//       that queue behind ours).
//   BP6. A paused behaviour is resumed exactly once (removed from the
//       registry under the mutex by the resumer), which then runs the rest
//       of its run outside the mutex.
//   BP7. A cown stays alive while it is a pause's target (the registry holds
//       a reference) and while it is held (its queue is not empty, CW8).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "troupe/detail/refcount.hpp"
#include "troupe/sched/scheduler.hpp"

namespace troupe::detail {

struct Request;
struct BehaviourBase;

// BP1: the limit of cowns made from now on (set_backpressure).
std::uint32_t default_mailbox_limit() noexcept;

struct Cown {
  using Destroy = void (*)(Cown*);
  Cown(sched::Scheduler* s, Destroy d) noexcept
      : limit(default_mailbox_limit()), sched(s), destroy(d) {}

  std::atomic<Request*> last{
      nullptr};  // queue tail; swapped by enqueuers, CAS'd to null by leavers
  std::atomic<std::uint64_t> rstate{0};  // CW4: (readers << 1) | writer-waiting
  Request* waiting_writer = nullptr;     // CW4: written by the parked writer before it sets bit 0
  std::atomic<std::uint32_t> refs{1};    // handles + 1 while the queue is non-empty (CW8)
  std::atomic<std::uint32_t> limit;      // BP1: 0 none; relaxed (a setting)
  sched::Scheduler* sched;               // where its behaviours run (nullptr: default); immutable
  Destroy destroy;                       // immutable
  std::atomic<std::uint32_t> enq{0};     // BP1
  std::atomic<std::uint32_t> done{0};    // BP1
  std::atomic<std::uint32_t> flags{0};   // BP3
  static constexpr std::uint32_t kMutedOn = 1, kHeldPaused = 2, kWanted = 4, kBlockedOn = 8;

  std::uint32_t backlog() const noexcept {
    // seq_cst: BP4. `done` first: each counted enq += 1 happens before its
    // done += 1, so the difference cannot wrap below 0.
    const std::uint32_t d = done.load();
    return enq.load() - d;
  }

  // relaxed: a new reference is taken from an existing one.
  void add_ref() noexcept { refs.fetch_add(1, std::memory_order_relaxed); }
  // refcount.hpp RC1: the last releaser sees all writes to the object
  // before freeing it; a count of 1 seen is ours alone (no RMW).
  void release() noexcept;
};

// The count of `c` reached zero: destroys it, unless a behaviour running
// nested on this thread still owes its queue's reference (CW12), which then
// adopts it.
void last_release(Cown* c) noexcept;
inline void Cown::release() noexcept {
  if (drop_ref(refs)) [[unlikely]]
    last_release(this);
}

struct Request {
  Cown* cown = nullptr;
  BehaviourBase* behaviour = nullptr;
  std::atomic<Request*> next{nullptr};  // CW2: written once by the successor
  // CW1: its behaviour's phase 1 is done, a successor may link behind it;
  // set once, by the scheduling thread.
  std::atomic<bool> linkable{false};
  bool read = false;                    // read-only access
  bool free_at_enqueue = false;         // owner only, during schedule() on several cowns: cown was free
  bool counted = false;                 // BP1: counted in cown->enq (owner only)
  bool held_paused = false;             // BP5: phase 1 met kHeldPaused here (owner only)
  bool emptied = false;                 // CW8: a writer's pass_on emptied the queue (owner only)
  // CW9, both written by the scheduling thread before the swap (which
  // publishes them), read by the thread that grants the request.
  bool sole = false;        // its behaviour's only request (schedule_one)
  bool on_default = false;  // with sole: its behaviour runs on the default pool
};
static_assert(sizeof(Request) == 32, "a one-actor message fits two cache lines (when.hpp)");

struct BehaviourBase {
  explicit BehaviourBase(sched::Work::Fn run) noexcept : work(run) {}
  // Packed into 48 bytes so that a one-actor behaviour with its request, promise
  // and an empty block fits two cache lines (troupe/when.hpp).
  sched::Work work;                       // what the scheduler runs once every cown is held
  std::atomic<std::uint32_t> pending{0};  // cowns to receive + 1 (phase 1); one cown: unused, CW9
  std::uint32_t nrequests = 0;            // written by the scheduling thread before phase 1
  Request* requests = nullptr;            // nrequests requests, sorted by cown, no duplicates
  sched::Scheduler* sched = nullptr;      // where to run
  // Where the behaviour's own promise lies, as a byte offset from this base
  // (in the padding: the struct stays 48 bytes). Set by the constructor,
  // immutable; lets a waiter recognise a behaviour's promise (CW7).
  std::int32_t promise_at = 0;
  // CW12: its writer requests found their queues empty and took no
  // reference yet. Set in schedule(), cleared by take_queue_refs (on the
  // scheduling thread, before the behaviour leaves it) or by the nested
  // run's release; so only the thread that runs it touches it.
  bool owes_refs = false;
  // Every request is a writer's and none is counted (BP1), so
  // release_cowns needs no sign-out and wakes nobody. Written by schedule()
  // before the behaviour can run (its end of phase 1 is counted after it),
  // read only by the thread that runs or resumes it.
  bool plain_writers = false;

  // Runs phase 1 and 2 (CW1). Requests must be filled (cown, read) by the caller;
  // sorting and de-duplication happen here.
  void schedule();
  void schedule_one();  // schedule() for one cown
  // CW13: if every cown (several, all writers, unbounded) is free and this
  // thread may nest (CW11), takes them all, runs the behaviour's work nested
  // at once and returns true; otherwise takes none and returns false (the
  // caller then schedules it). Requests must be filled and sorted.
  bool run_inline();
  // Called after the body ran: passes every cown on (writers) or signs out
  // (readers). The behaviour must not touch its requests afterwards. (Not
  // PromiseBase::release or Cown::release, which drop a reference.)
  void release_cowns();
  // CW12: takes the references its writer requests owe (if it owes them),
  // but none for `adopted`, whose count the caller set for the queue.
  void take_queue_refs(const struct Cown* adopted = nullptr) noexcept;
  // One cown (or the end of phase 1) arrived, or n of them together (CW10);
  // at zero the behaviour runs.
  void resolve_one(std::uint32_t n = 1);
  // A hint, before the body runs: start loading the successors already
  // linked behind our requests, which release_cowns() hands the cowns to.
  // Both of a successor's lines: its request, and its behaviour's first line
  // (work, requests), found by guessing that the successor has our layout,
  // so that the behaviour starts as far before its request as ours does. A
  // one-actor message's request lies in its second line, so without the
  // guess the first line's miss began only when the grant read the
  // request's `behaviour`, after the request's own miss: two misses in
  // series per message on the consuming core (bench/README.md, "Both lines
  // of the successor"). A wrong guess (another layout, another index) costs
  // one useless prefetch; the address is computed as an integer and never
  // dereferenced.
  void prefetch_successors() const noexcept {
    for (std::uint32_t i = 0; i < nrequests; ++i)
      // relaxed: the pointer is never dereferenced here; release_cowns() reloads it.
      if (Request* n = requests[i].next.load(std::memory_order_relaxed)) {
        __builtin_prefetch(n);
        const std::uintptr_t at = reinterpret_cast<std::uintptr_t>(&requests[i]) -
                                  reinterpret_cast<std::uintptr_t>(this);
        if (at < 256)  // requests held inline, not in a separate array
          __builtin_prefetch(
              reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(n) - at));
      }
  }
};

static_assert(sizeof(BehaviourBase) == 48, "one-actor behaviours fit two cache lines (when.hpp)");
// The scheduler runs a behaviour through its Work, and Behaviour::run_fn
// (when.hpp) turns the Work* back into the BehaviourBase* with a
// reinterpret_cast: valid only while BehaviourBase is standard-layout with
// `work` its first member (so both share an address).
static_assert(std::is_standard_layout_v<BehaviourBase> && offsetof(BehaviourBase, work) == 0,
              "Behaviour::run_fn casts Work* to BehaviourBase*");

static_assert(sizeof(Cown) == 64, "an idle actor costs one cache line + sizeof(T) (actor.hpp AC3)");

// Sorts requests by cown address and merges duplicates (a write wins over a
// read). Returns the new count. Insertion sort up to kInsertionSortMax
// requests, std::sort beyond (a `when` over a vector of 10^5 actors took
// seconds in the insertion sort alone); may then throw std::bad_alloc.
inline constexpr std::uint32_t kInsertionSortMax = 32;
std::uint32_t sort_many(Request* requests, std::uint32_t n);
[[gnu::always_inline]] inline std::uint32_t sort_and_merge(Request* requests, std::uint32_t n) {
  if (n != 2) return sort_many(requests, n);
  // The common multi-actor `when` (a transfer), inline and without a
  // branch on the order: two random actors are in either order as often,
  // and a mispredicted swap cost more than the rest of the sort.
  Request& x = requests[0];
  Request& y = requests[1];
  const auto a = reinterpret_cast<std::uintptr_t>(x.cown);
  const auto b = reinterpret_cast<std::uintptr_t>(y.cown);
  if (a == b) [[unlikely]] {
    x.read = x.read && y.read;  // a write wins
    return 1;
  }
  const std::uintptr_t swap = std::uintptr_t{0} - static_cast<std::uintptr_t>(b < a);
  const std::uintptr_t d = (a ^ b) & swap;
  x.cown = reinterpret_cast<Cown*>(a ^ d);
  y.cown = reinterpret_cast<Cown*>(b ^ d);
  const bool rd = (x.read != y.read) & (swap != 0);
  x.read = x.read != rd;
  y.read = y.read != rd;
  return 2;
}

// CW11, for tests: this thread refuses no offer now, and times its next
// nested run (what a thread starts with).
void reset_nesting_guard() noexcept;
// CW11: while one lives on a thread, what that thread sends is not run
// nested. For blocks whose code may wait on what the runtime cannot see
// (the Python package's: a future's result()), which CW7 cannot check.
class NoNestedRuns {
 public:
  NoNestedRuns() noexcept;
  ~NoNestedRuns();
  NoNestedRuns(const NoNestedRuns&) = delete;
  NoNestedRuns& operator=(const NoNestedRuns&) = delete;

 private:
  bool prev_;
};

// ---- backpressure (BP1-BP7; src/core/backpressure.cpp) ----

// BP2: called by when() for a new behaviour before it is started. Throws
// Error(overloaded) (an outside thread, nothing enqueued) or returns.
void admit(const BehaviourBase& b);
inline void admit_if_bounded(const BehaviourBase& b) {
  for (std::uint32_t i = 0; i < b.nrequests; ++i)
    // relaxed: a setting; BP1 says limits are approximate.
    if (b.requests[i].cown->limit.load(std::memory_order_relaxed) != 0) [[unlikely]] {
      admit(b);
      return;
    }
}
// BP3: the running behaviour's mute target (a counted reference); Behaviour::run
// saves an outer run's around its own.
inline thread_local Cown* tl_mute_target = nullptr;
// BP2: a thread that must never wait in when() (an event loop's, a thread
// that delivers results): sends from it go out as a pool thread's do.
inline thread_local bool tl_never_block = false;
// BP3: a block that may wait on anything the runtime cannot see (Python
// code) drops its mute target instead of pausing its behaviour (a pause
// could close a cycle with such a wait); counted as skipped.
void drop_mute_target() noexcept;
// The rest of a paused behaviour's run: release its cowns, publish its
// result (`how`), drop the runtime's reference.
using Finish = void (*)(BehaviourBase*, std::uint32_t how);
// BP3/BP5: pauses `b` on `target` (taking over its reference) and returns
// true, or returns false (the caller finishes the run itself).
bool try_pause(BehaviourBase* b, Cown* target, std::uint32_t how, Finish finish);
// BP5: a behaviour on several cowns joined `c`'s queue while it is held
// paused: resume its holder.
void wanted(Cown* c);
// BP4: `c`'s backlog fell and someone waits on it.
void drained(Cown* c);

}  // namespace troupe::detail
