// src/core/explore.cpp: troupe::test::explore (explore.hpp EP1-EP3).
#include "troupe/test/explore.hpp"

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "troupe/sched/manual.hpp"
#include "troupe/sched/scheduler.hpp"

namespace troupe::test {

namespace {

// EP2: the seed's scheduler is the default and the thread's current one
// while it lives; what it holds runs before the previous ones come back.
struct SeedScope {
  explicit SeedScope(std::uint64_t seed)
      : manual(seed), prev_current(sched::set_current(&manual)) {
    sched::set_default_scheduler(&manual);
  }
  ~SeedScope() {
    try {
      manual.run_all();
    } catch (...) {  // a behaviour's own exception lands in its promise; nothing escapes here
    }
    sched::set_default_scheduler(nullptr);
    sched::set_current(prev_current);
  }
  sched::ManualScheduler manual;
  sched::Scheduler* prev_current;
};

}  // namespace

ExploreReport explore(std::uint64_t seeds, const std::function<void()>& program,
                      std::uint64_t first) {
  ExploreReport r;
  if (first == 0) first = 1;  // seed 0 is first-in-first-out in ManualScheduler: not explored
  std::uint64_t last = first + seeds;
  if (const char* only = std::getenv("TROUPE_TEST_SEED")) {
    first = std::strtoull(only, nullptr, 10);
    if (first == 0) first = 1;
    last = first + 1;
  }
  for (std::uint64_t seed = first; seed < last; ++seed) {
    std::string failure;
    {
      SeedScope scope(seed);
      try {
        program();
        scope.manual.run_all();
      } catch (const std::exception& e) {
        failure = e.what();
      } catch (...) {
        failure = "an exception that is not a std::exception";
      }
    }
    ++r.seeds_run;
    if (!failure.empty()) {
      r.failing_seed = seed;
      r.failure = "seed " + std::to_string(seed) + ": " + failure;
      std::fprintf(stderr,
                   "troupe::test::explore: %s (replay this interleaving with "
                   "TROUPE_TEST_SEED=%llu)\n",
                   r.failure.c_str(), static_cast<unsigned long long>(seed));
      break;
    }
  }
  return r;
}

}  // namespace troupe::test
