// tests/proc/budget_test.cpp: the machine-wide budget shared fairly by two
// troupe programs (node_private.hpp N10; process.hpp Options). This test
// binary is also the second program ("contender", started with posix_spawn
// and the same budget file). The first program holds both slots of a budget
// of 2 with idle workers that would not retire for a minute; the contender's
// call gets a slot within seconds because they are given back. With both
// workers busy instead, the contender's call is visible as waiting in
// proc::stats() and fails at Options::call_timeout, not never.
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "proc/test_main.hpp"
#include "troupe/proc/process.hpp"

extern char** environ;

using namespace troupe;
using namespace std::chrono_literals;

namespace {

int add(int a, int b) { return a + b; }
int nap(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

std::string g_budget_file;

// Runs this binary as the contender in `mode`; its exit status (-1: it ran
// past 60 s and was killed).
int run_contender(const char* mode) {
  std::vector<std::string> args = {"/proc/self/exe", "--contender", mode, g_budget_file};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), environ) != 0) return -2;
  auto deadline = std::chrono::steady_clock::now() + 60s;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(10ms);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

// The contender: one call, under the budget file the first program fills.
int contender(int argc, char** argv) {
  proc::Options o;
  o.budget = 2;
  o.budget_file = argv[3];
  const bool expect_timeout = std::strcmp(argv[2], "timeout") == 0;
  if (expect_timeout) o.call_timeout = 400ms;
  proc::init(argc, argv, o);  // a worker of the contender serves from here
  auto t0 = std::chrono::steady_clock::now();
  auto p = proc::call<&add>(2, 3);
  if (expect_timeout) {
    std::this_thread::sleep_for(150ms);
    proc::Stats s = proc::stats();
    if (s.waiting != 1 || s.longest_wait < 100ms) {
      std::fprintf(stderr, "contender: waiting %zu, longest %lld ms\n", s.waiting,
                   static_cast<long long>(s.longest_wait.count()));
      return 3;
    }
    try {
      p.get();
      return 4;  // it should have found no slot
    } catch (const Error& e) {
      auto waited = std::chrono::steady_clock::now() - t0;
      std::fprintf(stderr, "contender: %s after %lld ms\n", e.what(),
                   static_cast<long long>(waited / 1ms));
      return e.code() == Errc::timeout && waited < 5s ? 0 : 5;
    }
  }
  int r = p.get();
  auto waited = std::chrono::steady_clock::now() - t0;
  std::fprintf(stderr, "contender: a slot after %lld ms\n", static_cast<long long>(waited / 1ms));
  return r == 5 && waited < 10s ? 0 : 6;
}

// Both workers of the budget started, then left idle.
void fill_budget_with_idle_workers() {
  auto a = proc::call<&nap>(200);
  auto b = proc::call<&nap>(200);
  ASSERT_EQ(a.get() + b.get(), 400);
  ASSERT_EQ(proc::stats().alive, 2u);
}

TEST(Budget, IdleWorkersGiveTheirSlotsToAnotherProgramThatWaits) {
  fill_budget_with_idle_workers();
  std::size_t before = proc::stats().given_back;
  EXPECT_EQ(run_contender("call"), 0);  // a minute of idle_timeout would make it -1
  EXPECT_GE(proc::stats().given_back, before + 1);
  EXPECT_EQ(proc::call<&add>(1, 1).get(), 2);  // and this program goes on
}

TEST(Budget, AWaitingCallIsVisibleAndEndsAtTheDefaultTimeout) {
  fill_budget_with_idle_workers();
  auto busy1 = proc::call<&nap>(3000);  // no slot is idle: nothing to give back
  auto busy2 = proc::call<&nap>(3000);
  EXPECT_EQ(run_contender("timeout"), 0);
  EXPECT_EQ(busy1.get() + busy2.get(), 6000);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 4 && std::strcmp(argv[1], "--contender") == 0) return contender(argc, argv);
  proc::Options o;
  o.budget = 2;
  o.idle_timeout = std::chrono::minutes(1);  // only giving back frees a slot in time
  o.give_back_after = 100ms;
  o.budget_file = g_budget_file = proc_test::budget_file("fair-budget");
  return proc_test::run_tests(argc, argv, o);
}
