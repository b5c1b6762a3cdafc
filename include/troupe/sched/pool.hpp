// troupe/sched/pool.hpp: the default scheduler, a work-stealing thread pool.
//
// Each worker owns a Chase-Lev deque (newest first for its own work, oldest
// first for thieves); threads outside the pool submit through one injection
// queue (Vyukov MPSC, any worker may drain it). A worker with nothing to do
// spins briefly while trying to steal, then sleeps on an event count: an idle
// pool uses no CPU.
//
// Invariants:
//   PL1. A worker pushes only to its own deque; other threads use injection_.
//   PL2. Fairness: every kFairnessInterval items a worker takes the oldest
//       item of the injection queue (else of its own deque's far end), and
//       every kDequeFirstEvery-th such pick the deque's first, so a chain of
//       work that keeps re-spawning itself in `next` cannot starve older
//       work, inside or outside the pool, even while outside work never
//       runs dry (it is taken first most of the time: a worker's own oldest
//       items are cold, and outside senders wait on them).
//   PL3. A worker sleeps only after announcing itself in sleep_ and finding
//       every queue empty; every producer notifies sleep_ after publishing
//       (EventCount PL1), unless a worker is searching, so no work waits
//       while a worker sleeps. A producer that skipped its notify relies on
//       the searcher: the last searcher to stop, when it found an item, and
//       a worker whose search found nothing but whose re-check before
//       sleeping did, wake a sleeper once they took one item if more work is
//       visible.
//   PL4. idle_ counts workers asleep with nothing to do (not those sleeping in
//       help_until, which are still running a task). idle_ == threads and all
//       queues empty means quiescent.
//   PL5. The destructor drains: it waits for quiescence, then stops and joins
//       every worker. No thread outlives the pool.
//   PL6. Locality: work a worker schedules goes first to its `next` slot (the
//       one it runs right after the current item, like Go's runnext); the
//       item it displaces goes to the deque. A chain of messages (ping-pong,
//       a counter fed by one sender) therefore stays on one core. Thieves take
//       a `next` item only late in their search, so they get it only if the
//       owner is busy for a while, and a sleeper is woken for it as for any work.
//   PL7. Bounded helping: a wait that helps runs its own worker's items first
//       (newest, i.e. deeper than the waiter) and steals only while fewer than
//       kMaxHelpDepth helping frames are on the thread's stack, so nested
//       waits cannot grow the stack without bound (oneTBB bounds it likewise).
//   PL8. Wake-ups for new work are never swallowed by a thread that will not
//       take it: helpers too deep to steal (PL7) sleep on deep_sleep_, which
//       only wake_helpers() notifies; a helper woken on sleep_ that returns to
//       its task while work is visible passes the wake-up on.
//   PL9. Statistics cost no shared write: each worker counts what it runs,
//       steals and sleeps in counters only it writes; stats() sums them.
//   PL10. What a promise's continuations schedule (scheduler.hpp SC5) does
//       not displace an occupied `next` slot: it goes to the deque. In the
//       case this is for, the slot holds what the fulfilling behaviour's
//       release just granted: the next request queued on the same actor,
//       which holds that actor (a busy one: others queued on it) until it
//       runs. The continuations' work (say a client's behaviour on the
//       reply, holding that client's actor, on which in a closed loop
//       nothing else is queued) waits instead. Without this, each release
//       buried the busy actor's next request under the reply it had just
//       produced, and the actor stayed held, by a behaviour that was not
//       running, while other workers' requests queued behind it. The slot
//       may hold other work (an earlier message the block sent); the rule
//       is about placement only, and PL2 bounds how long the deque waits.
//   PL11. A worker with nothing of its own tries to steal work already
//       inside the pool (from one worker picked at random, so the look costs
//       the same at any pool size) before it takes new outside work from
//       injection_, which still gets PL2's fair pick and the search loop's.
//       Otherwise a worker whose chain of messages queued behind a busy
//       actor starts a new outside request at once, each such start adds to
//       what is in flight, and a closed loop of clients tipped into having
//       every client in flight and every actor deeply queued.
//   PL12. Interleaved backlogs: when the item in `next` and the deque's
//       newest item are both an actor's queued successor (SC6: each was
//       waiting in an actor's queue, so each is a link of a chain that goes
//       on), the owner takes them in turn: after an item from `next`, the
//       deque's newest first. Each chain's next request then waits one other
//       item's run instead of none, so the miss on it (a long backlog is
//       cold: the sender filled it long ago) overlaps with that run rather
//       than stalling the worker: two chains of cold requests are walked
//       side by side. An item that is a fresh message (to an idle actor) is
//       never put before a successor this way, so a bottleneck actor's next
//       behaviour (granted by its release) still runs right after it. Only
//       the order of the owner's own items changes: every item still runs
//       (PL2), and thieves see the same deque.
//   PL13. A search gives its CPU away while it lasts: from round
//       kYieldAfterRounds on (about 10 us in, Spin's kYieldAfter), each
//       round of find_work yields the thread (sched_yield) and pauses less,
//       so a round keeps its length (the rounds, not the clock, pace PL6's
//       late look at `next` slots and the sleep after kSpinRounds). With
//       more runnable threads than cores (an outside thread sending to a
//       busy pool: a benchmark's driver, a Python program's main thread),
//       the thread whose work the searcher waits for then runs instead of
//       the spin; with a core to spare the yield returns at once. Counted
//       as `yields` (PL9).
//   PL14. run_nested (SC7) runs an item on the calling thread only when that
//       thread is one of this pool's workers; it counts the item in `run`
//       and in `nested` (PL9). Which items are offered, and how deep, is the
//       caller's rule (cown.hpp CW11: one level, short runs).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "troupe/detail/chase_lev.hpp"
#include "troupe/detail/event_count.hpp"
#include "troupe/detail/mpsc_queue.hpp"
#include "troupe/sched/scheduler.hpp"

namespace troupe::sched {

// What a pool has done since it started (Pool::stats; troupe::stats()).
struct PoolStats {
  std::size_t threads = 0;
  std::uint64_t run = 0;     // items run (behaviours and tasks), helping waits included
  std::uint64_t stolen = 0;  // items taken from another worker's deque or next slot
  std::uint64_t sleeps = 0;  // times a worker (or a helping wait) went to sleep
  std::uint64_t wakes = 0;   // ... and woke up again
  std::uint64_t yields = 0;  // search rounds that gave the CPU away (PL13)
  std::uint64_t nested = 0;  // of `run`, items run nested in another (PL14)
  std::size_t queued = 0;    // items waiting in the queues now (a snapshot)
};

class Pool final : public Scheduler {
 public:
  // threads == 0: one per core.
  explicit Pool(std::size_t threads = 0);
  ~Pool() override;  // PL5
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  void schedule(Work* w) override;
  bool run_nested(Work* w) override;  // PL14
  void help_until(Waiter& w) override;
  void wake_helpers() override;
  void wait_idle() override;
  std::size_t concurrency() const noexcept override { return workers_.size(); }
  // PL9: counters kept by each worker for itself; a snapshot, not a barrier.
  PoolStats stats() const noexcept;

  static constexpr unsigned kFairnessInterval = 61;  // PL2
  static constexpr unsigned kDequeFirstEvery = 4;    // PL2: fair picks per deque-first one
  static constexpr unsigned kSpinRounds = 64;        // steal rounds before sleeping
  static constexpr unsigned kStealNextAfter = 32;    // rounds before taking `next` slots (PL6)
  static constexpr unsigned kYieldAfterRounds = 12;  // PL13: rounds of 32 pauses (~0.8 us each) first
  static constexpr unsigned kPausesAfterYield = 12;  // PL13: a yield (~0.5 us) + these ~ 32 pauses
  static constexpr unsigned kMaxHelpDepth = 16;      // PL7

 private:
  struct Worker {
    detail::ChaseLevDeque<Work*> deque;  // owner pushes/takes, anyone steals (PL1)
    std::atomic<Work*> next{nullptr};    // PL6: owner exchanges in; owner or thief exchanges out
    std::thread thread;
    unsigned index = 0;
    unsigned tick = 0;      // owner only: items run since the last fair pick (PL2)
    unsigned fair_picks = 0;  // owner only: fair picks so far (PL2)
    // PL12, owner only: whether the item in `next`, and the deque's newest,
    // were granted as an actor's queued successor (SC6); whether the item
    // the owner took last came from `next`.
    bool next_is_successor = false;
    bool newest_is_successor = false;
    bool took_next = false;
    std::uint64_t rng = 0;  // owner only: victim selection
    // PL9: written by the owner only (a relaxed load and store, no RMW),
    // read by stats(); on a line of their own, away from what thieves touch.
    struct alignas(detail::kCacheLine) Counters {
      std::atomic<std::uint64_t> run{0}, stolen{0}, sleeps{0}, wakes{0}, yields{0}, nested{0};
      void bump(std::atomic<std::uint64_t>& c) noexcept {
        c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      }
    } counters;
  };

  void worker_main(Worker* self);
  Work* find_local(Worker* self);
  Work* steal_from(Worker* self, Worker* victim);  // its deque's oldest, counted (PL9)
  Work* steal_any(Worker* self, bool take_next);
  Work* find_work(Worker* self);
  bool any_work_visible() const;
  Worker* this_worker() const noexcept {  // inline: asked on every nested run
    return tl_pool_ == this ? static_cast<Worker*>(tl_worker_) : nullptr;
  }
  // The worker (of whichever pool) running on this thread, and its pool;
  // written only by the thread itself, at start and end of worker_main.
  static __thread void* tl_worker_;
  static __thread const Pool* tl_pool_;
  void note_idle_change();

  std::vector<std::unique_ptr<Worker>> workers_;
  detail::MpscQueue<Work> injection_;                             // outside producers (PL1)
  detail::EventCount sleep_;                                      // PL3
  detail::EventCount deep_sleep_;                                 // PL8: helpers that may not steal
  alignas(detail::kCacheLine) std::atomic<std::size_t> idle_{0};  // PL4
  std::atomic<std::uint32_t> idle_gen_{0};  // bumped when idle_ reaches threads
  std::atomic<std::size_t> searching_{0};   // workers spinning for work
  std::atomic<bool> stop_{false};           // set once by the destructor
};

}  // namespace troupe::sched
