// src/sched/manual.cpp: the deterministic manual scheduler (manual.hpp).
#include "troupe/sched/manual.hpp"

#include <stdexcept>
#include <utility>

namespace troupe::sched {

ManualScheduler::~ManualScheduler() { run_all(); }

void ManualScheduler::schedule(Work* w) {
  std::lock_guard lock(mu_);
  q_.push_back(w);
}

bool ManualScheduler::run_one() {
  Work* w;
  {
    std::lock_guard lock(mu_);
    if (q_.empty()) return false;
    std::size_t i = seed_ == 0 ? 0 : rng_() % q_.size();  // MN2
    w = q_[i];
    q_.erase(q_.begin() + static_cast<std::ptrdiff_t>(i));
  }
  Scheduler* prev = set_current(this);
  w->run();
  set_current(prev);
  return true;
}

std::size_t ManualScheduler::run_all() {
  std::size_t n = 0;
  while (run_one()) ++n;
  return n;
}

std::size_t ManualScheduler::pending() const {
  std::lock_guard lock(mu_);
  return q_.size();
}

void ManualScheduler::help_until(Waiter& w) {
  while (!w.ready()) {
    if (!run_one())
      throw std::logic_error(
          "ManualScheduler: waiting on a result that no pending work can produce");
  }
}

}  // namespace troupe::sched
