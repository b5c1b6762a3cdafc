// tests/core/explore_test.cpp: troupe::test::explore (explore.hpp EP1-EP3) on
// a user-level bug: a withdrawal that checks the balance in one behaviour and
// debits it in a later one, while another client's withdrawal can only start
// after a behaviour on a second actor. On the pool that interleaving needs
// the second client's check to run between the first client's check and its
// debit, which real threads rarely do; explore finds a seed that does within
// 1000 seeds, replays it exactly, and passes every seed once the withdrawal
// is one behaviour.
#include "troupe/test/explore.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "troupe/troupe.hpp"

using namespace troupe;

namespace {

struct Account {
  long balance = 0;
  std::vector<std::string> log;  // what ran, in order: the interleaving
};
struct Desk {
  long opened = 0;
};
// What ran, across actors, in order: only explore's one thread writes it.
std::vector<std::string> g_events;

// The bug: check, then debit in another behaviour.
void withdraw_racy(Actor<Account> a, long amount, std::string who) {
  when(read(a), [a, amount, who](const Account& acc) {
    if (acc.balance >= amount)
      when(a, [amount, who](Account& w) {
        w.balance -= amount;
        w.log.push_back(who + " debits");
        g_events.push_back(who + " debits");
      });
  });
}
// The fix: check and debit in one behaviour.
void withdraw_atomic(Actor<Account> a, long amount, std::string who) {
  when(a, [amount, who](Account& w) {
    if (w.balance >= amount) {
      w.balance -= amount;
      w.log.push_back(who + " debits");
      g_events.push_back(who + " debits");
    }
  });
}

// Client 1 withdraws at once; client 2 first opens a desk (another actor),
// then withdraws. Throws when the account ends overdrawn.
std::vector<std::string> run_bank(bool racy) {
  auto account = make_actor<Account>(Account{100, {}});
  auto desk = make_actor<Desk>();
  auto withdraw = racy ? withdraw_racy : withdraw_atomic;
  withdraw(account, 80, "client 1");
  when(desk, [account, withdraw](Desk& d) {
    d.opened++;
    g_events.push_back("desk opens");
    withdraw(account, 80, "client 2");
  });
  wait_idle();
  auto [balance, log] =
      when(read(account), [](const Account& a) { return std::make_pair(a.balance, a.log); }).get();
  if (balance < 0) throw std::logic_error("overdrawn: balance " + std::to_string(balance));
  return log;
}

TEST(Explore, FindsTheRaceAndReplaysItFromItsSeed) {
  unsetenv("TROUPE_TEST_SEED");
  auto report = test::explore(1000, [] { run_bank(true); });
  ASSERT_FALSE(report) << "no seed of 1000 found the overdraft";
  EXPECT_LE(report.seeds_run, 1000u);
  EXPECT_NE(report.failure.find("overdrawn: balance -60"), std::string::npos) << report.failure;

  // The same seed is the same interleaving: it fails again, the same way.
  for (int i = 0; i < 3; ++i) {
    auto again = test::explore(1, [] { run_bank(true); }, report.failing_seed);
    EXPECT_EQ(again.failing_seed, report.failing_seed);
    EXPECT_EQ(again.failure, report.failure);
  }
  // ... and TROUPE_TEST_SEED replays it alone.
  setenv("TROUPE_TEST_SEED", std::to_string(report.failing_seed).c_str(), 1);
  auto replay = test::explore(1000, [] { run_bank(true); });
  unsetenv("TROUPE_TEST_SEED");
  EXPECT_EQ(replay.seeds_run, 1u);
  EXPECT_EQ(replay.failing_seed, report.failing_seed);
}

TEST(Explore, EverySeedPassesOnceTheWithdrawalIsOneBehaviour) {
  unsetenv("TROUPE_TEST_SEED");
  std::vector<std::vector<std::string>> orders;  // the interleavings seen
  auto report = test::explore(1000, [&] {
    g_events.clear();
    auto log = run_bank(false);
    EXPECT_EQ(log, std::vector<std::string>{"client 1 debits"});  // per actor: send order (CW5)
    if (std::find(orders.begin(), orders.end(), g_events) == orders.end())
      orders.push_back(g_events);
  });
  EXPECT_TRUE(report) << report.failure;
  EXPECT_EQ(report.seeds_run, 1000u);
  EXPECT_GE(orders.size(), 2u) << "the seeds explored a single order";
  // Outside explore the runtime is the pool again.
  auto a = make_actor<Account>(Account{5, {}});
  EXPECT_EQ(when(read(a), [](const Account& x) { return x.balance; }).get(), 5);
}

}  // namespace
