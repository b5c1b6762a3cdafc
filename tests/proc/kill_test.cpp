// Fault injection for worker processes: 200+ kill -9 of busy workers in a
// loop. Every pending call fails with worker_lost naming signal 9 and the
// function; no hang, no leaked process, no leaked descriptor.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "troupe/proc/process.hpp"
#include "util/proc_fs.hpp"

using namespace troupe;
using namespace std::chrono_literals;
using troupe::test::children;
using troupe::test::open_fds;

namespace {
int busy(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}
int quick(int x) { return x + 1; }
struct Counter {
  explicit Counter(long start) : n(start) {}
  long add(long d) { return n += d; }
  long n;
};
}  // namespace

TEST(Kill, TwoHundredKillsNoHangNoLeak) {
  EXPECT_EQ(proc::call<&quick>(1).get(), 2);  // warm up: the IO thread exists
  proc::retire_idle_workers();
  for (int t = 0; t < 300 && proc::stats().alive > 0; ++t) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(proc::stats().alive, 0u);
  int fds_before = open_fds();  // no worker sockets open now
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr int kKills = 60;
#else
  constexpr int kKills = 220;
#endif
  int lost = 0;
  for (int i = 0; i < kKills; ++i) {
    auto p = proc::call<&busy>(10000);
    // Wait until it runs somewhere, then kill that worker.
    std::vector<pid_t> pids;
    for (int t = 0; t < 2000 && (pids = proc::worker_pids()).empty(); ++t)
      std::this_thread::sleep_for(1ms);
    ASSERT_FALSE(pids.empty());
    std::this_thread::sleep_for(std::chrono::milliseconds(i % 3));  // also before it started
    for (pid_t pid : pids) kill(pid, SIGKILL);
    try {
      p.get();
      FAIL() << "a killed call returned";
    } catch (const Error& e) {
      ASSERT_EQ(e.code(), Errc::worker_lost) << e.what();
      std::string w = e.what();
      ASSERT_NE(w.find("signal 9"), std::string::npos) << w;
      ASSERT_NE(w.find("busy"), std::string::npos) << w;
      ++lost;
    }
  }
  EXPECT_EQ(lost, kKills);
  EXPECT_EQ(proc::call<&quick>(41).get(), 42);  // still serving
  proc::retire_idle_workers();
  for (int t = 0; t < 300 && proc::stats().alive > 0; ++t) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(proc::stats().alive, 0u);
  EXPECT_EQ(children(), 0) << "leaked worker processes";
  EXPECT_EQ(open_fds(), fds_before) << "leaked descriptors";
  // Workers that hosted no actor are not remembered: no handle names them.
  EXPECT_EQ(proc::detail::table_sizes().dead, 0u);
  EXPECT_EQ(proc::detail::table_sizes().pending, 0u);
}

// Workers that hosted actors are remembered, for the handles' errors, but
// only the latest few hundred of them.
TEST(Kill, KilledActorsAreRememberedBoundedly) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr int kKills = 80;
#else
  constexpr int kKills = 300;
#endif
  for (int i = 0; i < kKills; ++i) {
    auto c = proc::spawn<Counter>(1L).get();
    for (pid_t pid : proc::worker_pids()) kill(pid, SIGKILL);
    try {
      c.call<&Counter::add>(1L).get();
      // The call may have raced ahead of the kill.
    } catch (const Error& e) {
      ASSERT_EQ(e.code(), Errc::worker_lost) << e.what();
    }
    for (int t = 0; t < 2000 && proc::stats().alive > 0; ++t) std::this_thread::sleep_for(1ms);
    try {
      c.call<&Counter::add>(1L).get();
      FAIL() << "an actor outlived its worker";
    } catch (const Error& e) {
      ASSERT_EQ(e.code(), Errc::worker_lost) << e.what();
      ASSERT_NE(std::string(e.what()).find("signal 9"), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(proc::detail::table_sizes().dead, 0u);
  EXPECT_LE(proc::detail::table_sizes().dead, 256u);
}
