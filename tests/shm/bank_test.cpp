// tests/shm/bank_test.cpp: the bank invariant (B1 of bank_util.hpp)
// under transfers from many threads and processes, kill -9 at the named fault
// points of the transaction layer and at random moments. After the run:
// 0 violations, 0 stuck locks, no busy slot record, a sound heap and no leaked
// bytes (published bytes besides the layer's own are what the bank had).
// Built twice: shm_bank_test (the fast set) and, with BANK_STRESS,
// shm_bank_stress_test (>= 1000 kills).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "bank_util.hpp"
#include "../sanitizers.hpp"

using namespace troupe::shm;
using namespace bank;

namespace {

using troupe_tests::kSanitized;

CreateOptions bank_heap() {
  CreateOptions o;
  o.initial_size = 4 << 20;
  o.max_size = 256 << 20;
  o.slots = 64;
  return o;
}

constexpr std::string_view kTxFaults[] = {"tx.after_some_locks", "tx.before_commit",
                                          "tx.mid_apply"};
// Reached by churn's commits that free blocks (X5, X6), not by the bank's.
constexpr std::string_view kFreeFault = "tx.entry.unpublished";
// Reached once or twice by a worker thread: at its slot's first log, and at
// churn's first transaction over every key (X9 of tx_layout.hpp).
constexpr std::string_view kLogFaults[] = {"tx.log.published", "tx.log.swapped"};

std::size_t user_bytes(Heap& h) {
  h.flush_thread_cache();
  return h.stats().published - TxHeap::attach(h).tx_heap_bytes();
}

// At quiescence, after recovery.
void expect_sound(Heap& h, std::uint64_t accounts, std::size_t bytes_before) {
  TxHeap& l = TxHeap::attach(h);
  h.recover();
  std::size_t orphans = l.recover_orphans();
  if (orphans) std::printf("  %zu records finished after a recovery without the hook\n", orphans);
  EXPECT_EQ(total(h), kAccountStart * static_cast<std::int64_t>(accounts));
  EXPECT_EQ(ctl(h).violations.load(), 0u);
  EXPECT_EQ(l.stuck_locks(), 0u);
  EXPECT_EQ(l.busy_records(), 0u);
  for (auto& p : h.verify()) ADD_FAILURE() << p;
  EXPECT_EQ(user_bytes(h), bytes_before) << "leaked bytes";
  h.flush_thread_cache();
  EXPECT_EQ(h.stats().unpublished, 0u);
}

#ifndef BANK_STRESS
void threads_run(std::uint64_t accounts, unsigned threads, std::uint64_t ops) {
  Heap h = Heap::create(bank_heap());
  init_bank(h, accounts);
  std::size_t before = user_bytes(h);
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < threads; ++t) ts.emplace_back([&, t] { run_bank(h, 7 + t, ops); });
  for (auto& t : ts) t.join();
  EXPECT_GT(ctl(h).transfers.load(), 0u);
  expect_sound(h, accounts, before);
  auto st = TxHeap::attach(h).stats();
  std::printf(
      "  %llu accounts: %llu commits, %llu aborts, %llu irrevocable\n",
      static_cast<unsigned long long>(accounts), static_cast<unsigned long long>(st.commits),
      static_cast<unsigned long long>(st.aborts), static_cast<unsigned long long>(st.irrevocable));
  TxHeap::detach(h);
}

TEST(ShmBank, ThreadsKeepTheInvariant8) { threads_run(8, 4, kSanitized ? 1500 : 6000); }
TEST(ShmBank, ThreadsKeepTheInvariant4096) { threads_run(4096, 4, kSanitized ? 1500 : 6000); }

// Each named fault point, several times: the process dies there, the parent's
// recovery leaves every transfer whole or absent.

TEST(ShmBank, EveryFaultPointIsAllOrNothing) {
  Heap h = Heap::create(bank_heap());
  init_bank(h, 8);
  TxHeap::attach(h);
  std::size_t before = user_bytes(h);
  std::mt19937 rng(5);
  for (auto point : kTxFaults)
    for (int round = 0; round < 4; ++round) {
      SCOPED_TRACE(std::string(point));
      pid_t pid = spawn({h.name(), "2", std::to_string(round), "100000"},
                        std::string(point) + "@" + std::to_string(1 + rng() % 200));
      ASSERT_GT(pid, 0);
      int st = wait_status(pid);
      EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << "status " << st;
      h.recover();
      EXPECT_EQ(total(h), kAccountStart * 8);
      EXPECT_EQ(TxHeap::attach(h).stuck_locks(), 0u);
    }
  expect_sound(h, 8, before);
  TxHeap::detach(h);
}

#endif

// Sanitized workers take 0.1-0.4 s to start on a loaded machine, longer than
// one lives between random kills: the first ones get going before the first
// kill, or the run would check nothing.
void await_progress(Heap& h) {
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (ctl(h).transfers.load() == 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

// Workers x threads transfer while the parent kills them at random, `kills`
// times (a quarter of them also carry a fault point, and their self-kills come
// on top); each dead one is recovered and replaced.
void kill_run(std::uint64_t accounts, int kills, unsigned workers, unsigned threads) {
  Heap h = Heap::create(bank_heap());
  init_bank(h, accounts);
  TxHeap::attach(h);
  std::size_t before = user_bytes(h);
  std::mt19937 rng(static_cast<unsigned>(accounts) + 17);
  unsigned seed = 0;
  auto start = [&]() {
    std::string fault;
    if (rng() % 4 == 0)
      fault = std::string(rng() % 4 ? kTxFaults[rng() % 3] : kFreeFault) + "@" +
              std::to_string(1 + rng() % 400);
    else if (rng() % 4 == 0)
      fault = std::string(kLogFaults[rng() % 2]) + "@" + std::to_string(1 + rng() % 2);
    return spawn({h.name(), std::to_string(threads), std::to_string(++seed)}, fault);
  };
  std::vector<pid_t> pids(workers);
  for (auto& p : pids) p = start();
  await_progress(h);
  int deaths = 0, self = 0;
  auto t0 = std::chrono::steady_clock::now();
  while (deaths - self < kills) {
    std::this_thread::sleep_for(std::chrono::microseconds(500 + rng() % 6000));
    for (auto& p : pids) {  // those that killed themselves at a fault point
      int st = 0;
      if (waitpid(p, &st, WNOHANG) == p) {
        h.recover();
        p = start();
        ++deaths;
        ++self;
      }
    }
    pid_t& victim = pids[rng() % workers];
    ::kill(victim, SIGKILL);
    wait_status(victim);
    h.recover();  // before anyone opens the heap (tx.hpp)
    victim = start();
    ++deaths;
  }
  ctl(h).stop.store(1);
  for (auto p : pids) wait_status(p);
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  std::printf(
      "  %llu accounts: %d deaths (%d at fault points) in %lld ms, %llu transfers, "
      "%llu audits\n",
      static_cast<unsigned long long>(accounts), deaths, self, static_cast<long long>(ms),
      static_cast<unsigned long long>(ctl(h).transfers.load()),
      static_cast<unsigned long long>(ctl(h).audits.load()));
  EXPECT_GT(ctl(h).transfers.load(), 0u);
  expect_sound(h, accounts, before);
  TxHeap::detach(h);
}

// At quiescence, after the workers of a churn run: every count exact, every
// published byte reachable from the churn roots or the layer's own.
void expect_churn_sound(Heap& h) {
  TxHeap& l = TxHeap::attach(h);
  h.recover();
  l.recover_orphans();
  EXPECT_EQ(ctl(h).violations.load(), 0u);
  EXPECT_EQ(l.stuck_locks(), 0u);
  EXPECT_EQ(l.busy_records(), 0u);
  EXPECT_EQ(atomically(l,
                       [&](Tx& tx) {
                         return churn_audit(tx, get_root(tx, "churn").as_dict(),
                                            get_root(tx, "churn.pool").as_dict());
                       }),
            0u);
  for (auto& p : h.verify()) ADD_FAILURE() << p;
  // A block can leak only where a recovery without the hook met an entry it
  // could not settle (X6); the layer counts those.
  if (l.unsettled() == 0)
    EXPECT_EQ(user_bytes(h), churn_bytes(h)) << "published bytes not reachable (leak)";
  else
    std::printf("  %llu unsettled log entries: %zu bytes unreachable\n",
                static_cast<unsigned long long>(l.unsettled()), user_bytes(h) - churn_bytes(h));
  h.flush_thread_cache();
  EXPECT_EQ(h.stats().unpublished, 0u);
  TxHeap::detach(h);
}

// Allocation and reclamation under kills: workers replace, erase and insert
// long strings (blocks allocated before the commit point, freed right after
// it, X5) and share, drop and replace records (reference counts,
// objects.hpp V2) while the parent kills them; afterwards every count is
// exact and every published byte is reachable from the churn roots or the
// layer's own (no leak, no double free).
void churn_run(int kills) {
  Heap h = Heap::create(bank_heap());
  init_churn(h);
  std::mt19937 rng(99);
  unsigned seed = 0;
  auto start = [&]() {
    std::string fault;
    if (rng() % 4 == 0)
      fault = std::string(rng() % 4 ? kTxFaults[rng() % 3] : kFreeFault) + "@" +
              std::to_string(1 + rng() % 400);
    else if (rng() % 4 == 0)
      fault = std::string(kLogFaults[rng() % 2]) + "@" + std::to_string(1 + rng() % 2);
    return spawn({h.name(), "2", std::to_string(++seed), "100000000", "churn"}, fault);
  };
  std::vector<pid_t> pids(3);
  for (auto& p : pids) p = start();
  int deaths = 0;
  await_progress(h);
  if (kills == 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  while (deaths < kills) {
    std::this_thread::sleep_for(std::chrono::microseconds(500 + rng() % 6000));
    for (auto& p : pids) {
      int st = 0;
      if (waitpid(p, &st, WNOHANG) == p) {
        h.recover();
        p = start();
        ++deaths;
      }
    }
    pid_t& victim = pids[rng() % pids.size()];
    ::kill(victim, SIGKILL);
    wait_status(victim);
    h.recover();
    victim = start();
    ++deaths;
  }
  ctl(h).stop.store(1);
  for (auto p : pids) wait_status(p);
  std::printf("  churn: %d deaths, %llu writes, %llu audits\n", deaths,
              static_cast<unsigned long long>(ctl(h).transfers.load()),
              static_cast<unsigned long long>(ctl(h).audits.load()));
  EXPECT_GT(ctl(h).transfers.load(), 0u);
  expect_churn_sound(h);
}

#ifndef BANK_STRESS
// X9: a worker dies at a step of a log swap (its slot's first log, @1, or
// the growth past 64 entries, @2), is recovered with the hook, and a worker
// without faults then churns on: nothing leaks, nothing is left unsettled.
void log_swap_death(const std::string& fault) {
  Heap h = Heap::create(bank_heap());
  init_churn(h);
  TxHeap& l = TxHeap::attach(h);
  int st = wait_status(spawn({h.name(), "1", "7", "300", "churn"}, fault));
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << fault << " was not reached";
  h.recover();
  st = wait_status(spawn({h.name(), "2", "8", "300", "churn"}));
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st;
  EXPECT_EQ(l.unsettled(), 0u);
  expect_churn_sound(h);
}

// Dead slots (live or dead, from a second Heap object of this process: its
// own lock description, no hook on it).
int dead_slots(const Heap& h) {
  int n = 0;
  for (const SlotInfo& s : h.slots()) n += s.attached && !s.alive;
  return n;
}

// slots.cpp S2: a process without the hook (here a second Heap object, no
// TxHeap on it) opens the heap while a worker lies dead in a log swap, its
// first log published and not yet linked. It leaves the dead slot alone (a
// recovery now could not tell that block from one the heap frees: it leaked,
// 3 KiB); the recovery with the hook then settles it.
TEST(ShmChurnKill, OpenWithoutTheHookLeavesADeadSlot) {
  Heap h = Heap::create(bank_heap());
  init_churn(h);
  TxHeap& l = TxHeap::attach(h);
  int st = wait_status(spawn({h.name(), "1", "7", "300", "churn"}, "tx.log.published@1"));
  ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << "status " << st;
  {
    Heap other = Heap::open(h.name());
    EXPECT_EQ(dead_slots(other), 1) << "Heap::open without the hook recovered the dead slot";
    EXPECT_TRUE(other.recover().slots.empty());
    std::uint64_t block = other.allocate(64);  // claims a free slot, not the dead one
    EXPECT_EQ(dead_slots(other), 1);
    other.free(block);
  }
  h.recover();
  EXPECT_EQ(dead_slots(h), 0);
  EXPECT_EQ(l.unsettled(), 0u);
  expect_churn_sound(h);
}

// S2's exception: without the hook, a process that finds no other slot takes
// the dead one (recovering it as it can) instead of failing.
TEST(ShmChurnKill, WithoutTheHookADeadSlotIsTakenWhenNoOtherIsFree) {
  CreateOptions o = bank_heap();
  o.slots = 2;  // ours and the worker's
  Heap h = Heap::create(o);
  init_churn(h);
  TxHeap& l = TxHeap::attach(h);
  int st = wait_status(spawn({h.name(), "1", "7", "300", "churn"}, "tx.log.published@1"));
  ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << "status " << st;
  {
    Heap other = Heap::open(h.name());
    ASSERT_EQ(dead_slots(other), 1);
    std::uint64_t block = 0;
    EXPECT_NO_THROW(block = other.allocate(64));
    EXPECT_EQ(dead_slots(other), 0);
    if (block) other.free(block);
  }
  h.recover();
  l.recover_orphans();
  // The log it was publishing cannot be told apart now: counted (X6, X9).
  EXPECT_EQ(l.unsettled(), 1u);
  expect_churn_sound(h);
}

TEST(ShmChurnKill, Fast) { churn_run(kSanitized ? 10 : 25); }
TEST(ShmChurnKill, NoKills) { churn_run(0); }
TEST(ShmChurnKill, DeathsInALogSwap) {
  for (const char* f :
       {"tx.log.published@1", "tx.log.swapped@1", "tx.log.published@2", "tx.log.swapped@2"}) {
    SCOPED_TRACE(f);
    log_swap_death(f);
  }
}
#else
TEST(ShmChurnStress, Kills) { churn_run(kSanitized ? 60 : 300); }
#endif

#ifndef BANK_STRESS
// The fast set: 50 kills over both banks (20 under sanitizers).
TEST(ShmBankKill, Fast8) { kill_run(8, kSanitized ? 10 : 25, 3, 2); }
TEST(ShmBankKill, Fast4096) { kill_run(4096, kSanitized ? 10 : 25, 3, 2); }
#else
// The stress run: 1100 SIGKILLs from the parent over both banks (240 under
// sanitizers), plus the workers' self-kills at named fault points.
TEST(ShmBankStress, Kills8) { kill_run(8, kSanitized ? 120 : 600, 4, 2); }
TEST(ShmBankStress, Kills4096) { kill_run(4096, kSanitized ? 120 : 500, 4, 2); }
#endif

}  // namespace
