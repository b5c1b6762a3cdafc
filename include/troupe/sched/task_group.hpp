// troupe/sched/task_group.hpp: fork-join tasks without actors.
//
// TaskGroup g; g.run(f1); g.run(f2); g.wait();  runs f1, f2 on the current
// scheduler (the pool when called from outside any) and waits for both; the
// wait runs other work meanwhile (nested groups never park a worker while
// work is pending). The first exception thrown by a task is rethrown by wait().
//
// Invariants:
//   TG1. state_ = 2 * (tasks not yet finished) | kWaiting. A task's last act
//       on the group is one fetch_sub of 2; if it brings the count to zero
//       with kWaiting set it wakes the waiter, through the scheduler (a
//       worker) or a futex (another thread) — never by touching the group,
//       which the waiter may already have destroyed (platform.hpp PF1).
//   TG2. One allocation per task.
//   TG3. error_ is written by at most one task (the one that wins error_set_).
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <utility>

#include "troupe/detail/platform.hpp"
#include "troupe/detail/small_alloc.hpp"
#include "troupe/sched/scheduler.hpp"

namespace troupe {

class TaskGroup {
 public:
  TaskGroup() : sched_(sched::current() ? sched::current() : &sched::default_scheduler()) {}
  TaskGroup(const TaskGroup&) = delete;
  TaskGroup& operator=(const TaskGroup&) = delete;
  ~TaskGroup() { wait_quietly(); }

  template <class F>
  void run(F f) {
    // relaxed: the task is published to its runner by schedule() (release).
    state_.fetch_add(2, std::memory_order_relaxed);
    sched_->schedule(new Task<F>(this, std::move(f)));
  }

  void wait() {
    wait_quietly();
    if (error_set_.load(std::memory_order_acquire)) {
      std::exception_ptr e = std::exchange(error_, nullptr);
      error_set_.store(false, std::memory_order_relaxed);
      std::rethrow_exception(e);
    }
  }

 private:
  static constexpr std::uint32_t kWaiting = 1;

  template <class F>
  struct Task final : sched::Work, detail::SmallObject {
    Task(TaskGroup* g, F f) : sched::Work(&Task::run_fn), group(g), fn(std::move(f)) {}
    static void run_fn(sched::Work* w) {
      auto* t = static_cast<Task*>(w);
      TaskGroup* g = t->group;
      try {
        t->fn();
      } catch (...) {
        g->record(std::current_exception());
      }
      delete t;
      g->finish_one();
    }
    TaskGroup* group;
    F fn;
  };

  void record(std::exception_ptr e) noexcept {
    bool expected = false;
    // acq_rel: one winner writes error_ (TG3); wait() acquires error_set_.
    if (error_set_.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
      error_ = std::move(e);
    }
  }

  void finish_one() noexcept {
    sched::Scheduler* s = sched_;  // read before the decrement (TG1)
    // acq_rel: the waiter that sees zero sees the task's writes.
    std::uint32_t old = state_.fetch_sub(2, std::memory_order_acq_rel);
    if (old == (2 | kWaiting)) {
      s->wake_helpers();
      detail::futex_wake(&state_, 1);  // TG1: does not read the (maybe gone) word
    }
  }

  struct GroupWaiter final : sched::Waiter {
    explicit GroupWaiter(TaskGroup* g) : g(g) {}
    bool ready() const noexcept override {
      return (g->state_.load(std::memory_order_acquire) >> 1) == 0;
    }
    void arm(sched::Scheduler*) override {
      g->state_.fetch_or(kWaiting, std::memory_order_acq_rel);  // TG1
    }
    TaskGroup* g;
  };

  void wait_quietly() {
    GroupWaiter w(this);
    if (w.ready()) {
      state_.store(0, std::memory_order_relaxed);
      return;
    }
    if (sched::current()) {
      sched::current()->help_until(w);
    } else {
      std::uint32_t s = state_.fetch_or(kWaiting, std::memory_order_acq_rel);
      while ((s >> 1) != 0) {
        detail::futex_wait(&state_, s | kWaiting);
        s = state_.load(std::memory_order_acquire);
      }
    }
    state_.store(0, std::memory_order_relaxed);  // no task left: nobody else writes it
  }

  sched::Scheduler* sched_;                  // immutable
  std::atomic<std::uint32_t> state_{0};      // TG1
  std::atomic<bool> error_set_{false};       // TG3
  std::exception_ptr error_;                 // TG3
};

}  // namespace troupe
