// troupe/sched/loop.hpp: a scheduler driven by an event loop the user owns.
//
// Actors made with make_actor_on(loop, ...) run their behaviours on the thread
// that calls run_pending(). fd() is an eventfd that is readable whenever work
// is pending, so an epoll, asio, libuv or asyncio loop can watch it and call
// run_pending() when it fires.
//
// Invariants:
//   LP1. The eventfd is readable iff work was scheduled since the last drain:
//       schedule() writes it after queueing; run_pending() reads (resets) it
//       before draining, so work added during a drain re-arms it.
//   LP2. Work runs only inside run_pending(), on the calling thread, which is
//       current() == this meanwhile (a get() there runs loop work).
#pragma once

#include <atomic>
#include <cstddef>
#include <thread>

#include "troupe/detail/mpsc_queue.hpp"
#include "troupe/sched/scheduler.hpp"

namespace troupe::sched {

class LoopScheduler final : public Scheduler {
 public:
  LoopScheduler();
  ~LoopScheduler() override;  // runs what is left, closes the fd

  int fd() const noexcept { return fd_; }
  // Runs up to max pending items (those present now and any they add).
  std::size_t run_pending(std::size_t max = static_cast<std::size_t>(-1));

  void schedule(Work* w) override;
  void help_until(Waiter& w) override;
  void wake_helpers() override;
  void wait_idle() override;  // drains on the calling thread
  // The thread that last called run_pending() (the loop's).
  bool runs_here() const noexcept override {
    return loop_thread_.load(std::memory_order_relaxed) == std::this_thread::get_id();
  }

 private:
  detail::MpscQueue<Work> q_;
  int fd_ = -1;
  std::atomic<std::thread::id> loop_thread_{};  // a hint (relaxed)
};

}  // namespace troupe::sched
