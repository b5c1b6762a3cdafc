// bench/core/savina_tbb_lock.cpp: the non-actor peers of bench_savina.
//   fib:     oneTBB tbb::task_group, one task per call, no cutoff, written as
//            the oneTBB documentation writes it (run, run, wait).
//   banking: plain std::threads, one std::mutex per account, each transfer
//            under std::scoped_lock over both accounts (deadlock-free by
//            std::lock's algorithm).
#include <tbb/global_control.h>
#include <tbb/task_group.h>

#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "savina.hpp"

namespace savina {

namespace tbb_side {
namespace {
std::unique_ptr<tbb::global_control> g_limit;  // main thread only

std::int64_t fib(int n) {
  if (n < 2) return n;
  std::int64_t x = 0, y = 0;
  tbb::task_group g;
  g.run([&] { x = fib(n - 1); });
  g.run([&] { y = fib(n - 2); });
  g.wait();
  return x + y;
}
}  // namespace

void start(std::size_t threads) {
  g_limit = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism,
                                                  threads);
}
void stop() { g_limit.reset(); }

double fib(const Sizes& s) {
  static const std::int64_t expected = fib_serial(s.fib_n);
  Stopwatch sw;
  std::int64_t got = fib(s.fib_n);
  double ms = sw.ms();
  SAVINA_CHECK(got == expected, "tbb fib({}) = {}, expected {}", s.fib_n, got, expected);
  return ms;
}
}  // namespace tbb_side

namespace lock_side {
namespace {
struct alignas(64) LockedAccount {  // one per cache line: no false sharing
  std::mutex m;
  std::int64_t balance = 0;
  std::int64_t transfers = 0;
};
}  // namespace

double banking(const Sizes& s, const std::vector<Transfer>& transfers) {
  const auto n = static_cast<std::size_t>(s.bank_accounts);
  Stopwatch sw;
  std::vector<LockedAccount> accounts(n);
  for (auto& a : accounts) a.balance = s.bank_initial_balance;
  std::vector<std::thread> threads;
  const std::size_t t = s.threads;
  for (std::size_t k = 0; k < t; ++k) {
    threads.emplace_back([&, k] {
      for (std::size_t i = k; i < transfers.size(); i += t) {
        const Transfer& tr = transfers[i];
        LockedAccount& a = accounts[tr.src];
        LockedAccount& b = accounts[tr.dst];
        std::scoped_lock lock(a.m, b.m);
        a.balance -= tr.amount;
        b.balance += tr.amount;
        ++a.transfers;
        ++b.transfers;
      }
    });
  }
  for (auto& th : threads) th.join();
  double ms = sw.ms();
  std::int64_t total = 0, count = 0;
  for (auto& a : accounts) {
    total += a.balance;
    count += a.transfers;
  }
  SAVINA_CHECK(total == s.bank_initial_balance * s.bank_accounts,
               "std::lock banking: total {} not conserved", total);
  SAVINA_CHECK(count == 2 * s.bank_transfers, "std::lock banking: {} account updates, expected {}",
               count, 2 * s.bank_transfers);
  return ms;
}
}  // namespace lock_side

}  // namespace savina
