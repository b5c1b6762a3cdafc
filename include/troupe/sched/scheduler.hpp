// troupe/sched/scheduler.hpp: the Scheduler interface, the unit of work it
// runs, and the process-wide default scheduler.
//
// A Scheduler decides where and when Work runs. The runtime hands it work that
// is ready (a behaviour whose actors are all acquired, a task, a continuation)
// and never asks for it back. Users may implement Scheduler: an actor created
// with make_actor_on(s, ...) runs its behaviours on s.
//
// Invariants:
//   SC1. schedule(w) runs w exactly once, on some thread, unless the scheduler
//       is destroyed first (then its destructor runs or fails all of it).
//   SC2. Work::next is owned by whichever queue holds the work; nobody else
//       touches it.
//   SC3. A thread "belongs" to at most one scheduler at a time (current()); a
//       wait on that thread helps that scheduler instead of blocking it.
//   SC4. A wait on a thread that belongs to no scheduler polls through the
//       blocking poller (if any) before it sleeps; the poller only makes
//       progress that some other thread would otherwise make, so a waiter
//       never depends on it (that other thread may wait for the poller to
//       return, which it does within its budget).
//   SC5. tl_in_continuations is true while this thread runs the
//       continuations of a promise it fulfilled (PromiseBase::publish;
//       nested publishes restore it, an exception too), including what they
//       run inline (a paused behaviour a continuation resumes, say).
//       Schedulers may read it as a placement hint (Pool: PL10); none may
//       depend on it for correctness.
//   SC6. tl_granting_successor is true while this thread's release of an
//       actor grants it to the behaviour queued next on it (a backlog: that
//       behaviour was waiting in the actor's queue). A placement hint too
//       (Pool: PL12), never needed for correctness.
//   SC7. run_nested(w) runs w at once, on the calling thread, nested in
//       what that thread is running, or returns false and leaves w to the
//       caller (who then schedules it): SC1 holds either way. A scheduler
//       runs nested only on its own threads (Pool: PL14); the default never
//       does. The caller decides when to offer (troupe/detail/cown.hpp CW11).
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>

namespace troupe::sched {

// One unit of runnable work. Intrusive: the owner embeds it (one allocation
// per behaviour or task) and supplies the function that runs it.
struct Work {
  using Fn = void (*)(Work*);
  Work() noexcept = default;  // only for queue stubs
  explicit Work(Fn f) noexcept : fn(f) {}
  std::atomic<Work*> next{nullptr};  // SC2
  Fn fn = nullptr;
  void run() { fn(this); }
};

// A wait that a scheduler's thread can help with (see Scheduler::help_until).
struct Waiter {
  // True once the awaited event happened. Must be cheap and thread-safe.
  virtual bool ready() const noexcept = 0;
  // Arrange that s->wake_helpers() is called once ready() becomes true.
  // Called at most once per wait, before the helper thread sleeps.
  virtual void arm(class Scheduler* s) = 0;

 protected:
  ~Waiter() = default;
};

class Scheduler;
// SC3: the scheduler this thread belongs to; written only by the thread
// itself (set_current). __thread, so current() is one load, inline.
extern __thread Scheduler* tl_current;
inline Scheduler* current() noexcept { return tl_current; }

// SC5. __thread, not thread_local: a constant-initialised bool read on
// every schedule(), with no TLS wrapper call.
extern __thread bool tl_in_continuations;
// SC6, as SC5.
extern __thread bool tl_granting_successor;

class Scheduler {
 public:
  virtual ~Scheduler() = default;

  // Makes w runnable (SC1). Callable from any thread.
  virtual void schedule(Work* w) = 0;

  // Called on a thread that belongs to this scheduler (SC3) while it waits:
  // runs other work until w.ready(). The default spins and yields.
  virtual void help_until(Waiter& w);
  // Wakes threads sleeping in help_until (their Waiter became ready).
  virtual void wake_helpers() {}

  // Blocks until no work is pending or running here (quiescence). Must not be
  // called from one of this scheduler's own threads.
  virtual void wait_idle() = 0;

  // SC7: runs w now, nested on the calling thread, if this scheduler runs
  // its work on that thread; false otherwise (w untouched).
  virtual bool run_nested(Work* w) {
    (void)w;
    return false;
  }

  // How many threads run this scheduler's work (a hint for partitioning).
  virtual std::size_t concurrency() const noexcept { return 1; }

  // True when this scheduler's work runs only on the calling thread (an
  // event loop's, a manual scheduler's driver): waiting here for that work
  // would never end (backpressure.hpp: such a thread is never blocked).
  virtual bool runs_here() const noexcept { return current() == this; }
};

// Marks the calling thread as belonging to s (nullptr: to none). Returns the
// previous value. Scheduler implementations call this around running work.
Scheduler* set_current(Scheduler* s) noexcept;

// A thread that belongs to no scheduler (SC3) and blocks on a promise first
// offers the wait to the blocking poller, if one is installed (SC4): a layer
// whose results arrive by polling (the worker processes' shared-memory rings)
// then receives them on the waiting thread itself, with no hand-off to
// another thread and no wake-up system call. It returns true once w.ready(),
// false to let the thread sleep (it must not wait long: a budget of tens of
// microseconds). w.arm() is not called. Install once, before threads wait.
using BlockingPoller = bool (*)(Waiter& w);
void set_blocking_poller(BlockingPoller p) noexcept;
BlockingPoller blocking_poller() noexcept;

// The process-wide default scheduler: the work-stealing pool, created on first
// use with threads = cores (troupe::init changes that), unless replaced.
// Inline: two loads once the pool exists (every message's grant asks).
namespace detail_default {
// Each written with a release store (set_default_scheduler; the pool's
// creation and shutdown, under the runtime's mutex, RU1), read with acquire.
extern std::atomic<Scheduler*> g_override;  // set_default_scheduler
extern std::atomic<Scheduler*> g_pool;      // the pool, once made (src/sched/runtime.cpp)
Scheduler& make_pool();                     // creates it, under the runtime's mutex
}  // namespace detail_default
inline Scheduler& default_scheduler() {
  // acquire: pairs with the release stores that publish them.
  if (Scheduler* s = detail_default::g_override.load(std::memory_order_acquire)) return *s;
  if (Scheduler* p = detail_default::g_pool.load(std::memory_order_acquire)) return *p;
  return detail_default::make_pool();
}
// Replaces the default scheduler (nullptr: back to the pool). The caller keeps
// ownership and must keep s alive while work may still reach it.
void set_default_scheduler(Scheduler* s) noexcept;

}  // namespace troupe::sched
