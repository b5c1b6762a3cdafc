// troupe/sched/manual.hpp: a scheduler that runs nothing until told to, on
// the thread that tells it. For deterministic tests: with a seed, each step
// picks a random runnable item, so a test can explore many orders and replay
// any one of them from its seed.
//
// Invariants:
//   MN1. Work runs only inside run_one()/run_all(), on the calling thread.
//   MN2. With the same seed and the same sequence of calls, the same order.
//   MN3. schedule() may be called from any thread (a mutex guards the queue;
//       this scheduler is for tests, not for speed).
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <random>

#include "troupe/sched/scheduler.hpp"

namespace troupe::sched {

class ManualScheduler final : public Scheduler {
 public:
  // seed == 0: first in, first out. Otherwise random order from the seed.
  explicit ManualScheduler(std::uint64_t seed = 0) : seed_(seed), rng_(seed) {}
  ~ManualScheduler() override;  // runs what is left (SC1 of scheduler.hpp)

  void schedule(Work* w) override;
  void help_until(Waiter& w) override;  // runs items until w is ready
  void wait_idle() override { run_all(); }

  bool run_one();          // runs one item; false if none
  std::size_t run_all();   // runs until none is left; returns how many ran
  std::size_t pending() const;

 private:
  mutable std::mutex mu_;  // MN3
  std::deque<Work*> q_;    // guarded by mu_
  std::uint64_t seed_;
  std::mt19937_64 rng_;    // guarded by mu_
};

}  // namespace troupe::sched
