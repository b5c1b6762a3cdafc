// tests/proc/placement_test.cpp: where proc::spawn_with puts actors
// (process.hpp Placement; node_private.hpp N9): spread over the budget, a
// named group in one worker, next to a given actor, a fresh worker, and a
// fresh placement that could only wait for ever failing at once. Killing the
// worker of one of three spread actors leaves the other two serving.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "proc/test_main.hpp"
#include "troupe/proc/process.hpp"

using namespace troupe;
using namespace std::chrono_literals;

namespace {

struct Stage {
  explicit Stage(long start) : n(start) {}
  long add(long d) { return n += d; }
  long pid() const { return static_cast<long>(::getpid()); }
  long n;
};

// Waits until the program holds no worker (so each test starts alike).
void no_workers() {
  proc::retire_idle_workers();
  for (int i = 0; i < 300 && proc::stats().alive > 0; ++i) {
    std::this_thread::sleep_for(10ms);
    proc::retire_idle_workers();
  }
}

TEST(Placement, SpreadActorsShareNoProcessAndOneKillLeavesTheOthersServing) {
  no_workers();
  std::vector<proc::RemoteActor<Stage>> stages;
  for (long i = 0; i < 3; ++i) stages.push_back(proc::spawn<Stage>(i * 100).get());
  std::set<pid_t> pids;
  for (auto& s : stages) {
    EXPECT_EQ(s.call<&Stage::pid>().get(), static_cast<long>(s.pid()));  // the handle says where
    pids.insert(s.pid());
  }
  EXPECT_EQ(pids.size(), 3u) << "three actors, budget 3: three processes";

  ASSERT_EQ(::kill(stages[1].pid(), SIGKILL), 0);
  try {
    stages[1].call<&Stage::add>(1L).get();
    FAIL() << "a call to the killed actor succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::worker_lost) << e.what();
  }
  for (int round = 0; round < 50; ++round) {  // the other two keep serving
    EXPECT_EQ(stages[0].call<&Stage::add>(1L).get(), round + 1);
    EXPECT_EQ(stages[2].call<&Stage::add>(1L).get(), 200 + round + 1);
  }
}

TEST(Placement, AGroupSharesAWorkerAndNextToJoinsAnActor) {
  no_workers();
  auto a = proc::spawn_with<Stage>(proc::Placement::group("pipeline"), 1L).get();
  auto b = proc::spawn_with<Stage>(proc::Placement::group("pipeline"), 2L).get();
  auto other = proc::spawn_with<Stage>(proc::Placement::group("elsewhere"), 3L).get();
  EXPECT_EQ(a.pid(), b.pid());
  EXPECT_NE(a.pid(), other.pid()) << "a new group is spread, like any spawn";
  auto near = proc::spawn_with<Stage>(proc::Placement::next_to(other), 4L).get();
  EXPECT_EQ(near.pid(), other.pid());
  EXPECT_EQ(near.call<&Stage::add>(1L).get(), 5);
  EXPECT_THROW(proc::Placement::group(""), Error);
  EXPECT_THROW(proc::Placement::next_to(proc::RemoteActor<Stage>()), Error);

  // A group whose worker died starts anew elsewhere.
  ASSERT_EQ(::kill(a.pid(), SIGKILL), 0);
  EXPECT_THROW(a.call<&Stage::add>(1L).get(), Error);
  auto c = proc::spawn_with<Stage>(proc::Placement::group("pipeline"), 5L).get();
  EXPECT_NE(c.pid(), a.pid());
  EXPECT_EQ(c.call<&Stage::add>(1L).get(), 6);
  // Next to an actor whose worker is gone: worker_lost, at once.
  try {
    proc::spawn_with<Stage>(proc::Placement::next_to(a), 6L).get();
    FAIL() << "spawned next to a dead actor";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::worker_lost) << e.what();
  }
}

TEST(Placement, FreshWorkersUntilTheBudgetThenATypedErrorNotAHang) {
  no_workers();
  std::vector<proc::RemoteActor<Stage>> alone;
  for (long i = 0; i < 3; ++i)
    alone.push_back(proc::spawn_with<Stage>(proc::Placement::fresh(), i).get());
  std::set<pid_t> pids;
  for (auto& s : alone) pids.insert(s.pid());
  EXPECT_EQ(pids.size(), 3u);
  auto t0 = std::chrono::steady_clock::now();
  try {
    proc::spawn_with<Stage>(proc::Placement::fresh(), 9L).get();
    FAIL() << "a fourth fresh worker within a budget of 3";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument) << e.what();
    EXPECT_NE(std::string(e.what()).find("Placement::fresh"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  // Dropping the last handle of an actor frees its worker for fresh spawns.
  // (The spawn's own promise state may hold a copy of the handle a moment
  // longer, until the runtime lets go of it: retry briefly.)
  alone.pop_back();
  std::optional<proc::RemoteActor<Stage>> again;
  for (int i = 0; i < 200 && !again; ++i) {
    try {
      again = proc::spawn_with<Stage>(proc::Placement::fresh(), 7L).get();
    } catch (const Error& e) {
      ASSERT_EQ(e.code(), Errc::invalid_argument) << e.what();
      std::this_thread::sleep_for(10ms);
    }
  }
  ASSERT_TRUE(again);
  EXPECT_EQ(again->call<&Stage::add>(1L).get(), 8);
}

}  // namespace

int main(int argc, char** argv) {
  proc::Options o;
  o.budget = 3;
  o.idle_timeout = std::chrono::milliseconds(1500);
  o.budget_file = proc_test::budget_file("placement");
  return proc_test::run_tests(argc, argv, o);
}
