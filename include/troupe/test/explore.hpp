// troupe/test/explore.hpp: deterministic testing of a user's actor program.
//
//   auto report = troupe::test::explore(1000, [] {
//     auto a = troupe::make_actor<Account>(100);
//     withdraw(a, 80);                      // the code under test sends its behaviours
//     withdraw(a, 80);
//     troupe::wait_idle();                  // runs everything sent so far
//     long b = troupe::when(troupe::read(a), [](const Account& x) { return x.balance; }).get();
//     if (b < 0) throw std::logic_error("overdrawn");
//   });
//   EXPECT_TRUE(report) << report.failure;  // "seed 17: overdrawn" (replay: TROUPE_TEST_SEED=17)
//
// Each seed runs the program on the calling thread alone: every behaviour
// and task sent to the default scheduler goes to a ManualScheduler seeded
// with it (sched/manual.hpp), which picks the next runnable item at random.
// So each seed is one interleaving of the program's behaviours, and the same
// seed is the same interleaving again. A run fails when the program throws
// (a failed get(), or a check of its own); explore stops at the first
// failing seed and says which one, and TROUPE_TEST_SEED=n runs only seed n.
// Anchors: Coyote (.NET), Shuttle and loom (Rust); verona-rt keeps its
// systematic testing internal.
//
// Invariants:
//   EP1. Same seed, same program (no other threads, no time or randomness of
//        its own), same order of behaviours, so the same outcome (MN2 of
//        manual.hpp).
//   EP2. While a seed runs, the default scheduler and the calling thread's
//        current scheduler are its ManualScheduler; both are restored before
//        explore returns or throws, and everything the seed sent has run
//        (a blocked get() runs items until its value is there, MN1).
//   EP3. explore must not run concurrently with other work on the default
//        scheduler (it replaces the process-wide default while it runs).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace troupe::test {

struct ExploreReport {
  std::uint64_t seeds_run = 0;
  std::uint64_t failing_seed = 0;  // 0: every seed passed
  std::string failure;             // "seed N: what()" of the first failure
  std::uint64_t behaviours_run = 0;  // items the seeds ran, all together
  explicit operator bool() const noexcept { return failing_seed == 0; }
};

// Runs `program` under seeds first, first + 1, ..., first + seeds - 1 (or
// only TROUPE_TEST_SEED when set), stopping at the first that fails.
ExploreReport explore(std::uint64_t seeds, const std::function<void()>& program,
                      std::uint64_t first = 1);

}  // namespace troupe::test
