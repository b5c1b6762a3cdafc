// Stress tests with invariants: bank transfers with random multi-actor `when`
// on 2 and 8 threads, sent from the test's thread or by teller behaviours
// (money is conserved; audits inside the run see it conserved), 10^6 messages to one actor, many short-lived actors.
// Under sanitizers the sizes shrink; the invariants do not.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <vector>

#include "troupe/troupe.hpp"

using namespace troupe;

namespace {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int kScale = 20;
#else
constexpr int kScale = 1;
#endif

// `check` mirrors `balance`; writers change one, then the other. A reader
// that ran beside a writer (a broken read/write exclusion) could see them
// disagree.
struct Account {
  long balance = 0;
  long check = 1;
  Account() = default;
  explicit Account(long b) : balance(b), check(3 * b + 1) {}
  void add(long d) {
    balance += d;
    std::atomic_signal_fence(std::memory_order_seq_cst);  // keep the two stores apart
    check = 3 * balance + 1;
  }
  bool consistent() const { return check == 3 * balance + 1; }
};

struct Counts {
  std::atomic<int> audits_failed{0}, audits{0}, torn{0};
};
constexpr long kStart = 1000;

// Operation t of a run: every 50th an audit of all accounts, else a
// three-way payment, two readers, or a transfer, on accounts picked by rng.
Promise<void> bank_op(const std::vector<Actor<Account>>& acc, int t, std::mt19937& rng,
                      Counts& n) {
  const int accounts = static_cast<int>(acc.size());
  std::uniform_int_distribution<int> pick(0, accounts - 1);
  int kind = t % 50;
  if (kind == 0)  // audit: all accounts at once must sum to the total
    return when(acc, [&n, accounts](std::span<Account*> xs) {
      long s = 0;
      for (Account* x : xs) s += x->balance;
      n.audits++;
      if (s != kStart * accounts) n.audits_failed++;
    });
  auto a = acc[static_cast<std::size_t>(pick(rng))], b = acc[static_cast<std::size_t>(pick(rng))];
  if (kind % 3 == 0) {  // three-way: a pays b and c
    auto c = acc[static_cast<std::size_t>(pick(rng))];
    return when(a, b, c, [](Account& x, Account& y, Account& z) {
      long m = x.balance / 10;
      x.add(-2 * m);
      y.add(m);
      z.add(m);
    });
  }
  if (kind % 3 == 1)  // readers of two accounts: no torn view
    return when(read(a), read(b), [&n](const Account& x, const Account& y) {
      if (!x.consistent() || !y.consistent()) n.torn++;
    });
  int amount = pick(rng) % 100;
  return when(a, b, [amount](Account& x, Account& y) {
    x.add(-amount);
    y.add(amount);
  });
}

// `tellers` == 0: the test's thread sends every operation. Otherwise that
// many teller actors each send their share from their block (so the
// multi-actor ones that find their accounts free run nested, CW11).
void bank(std::size_t threads, int accounts, int transfers, int tellers = 0) {
  sched::Pool pool(threads);
  std::vector<Actor<Account>> acc;
  for (int i = 0; i < accounts; ++i) acc.push_back(make_actor_on<Account>(pool, Account(kStart)));
  Counts n;
  std::vector<Promise<void>> done;
  if (tellers == 0) {
    std::mt19937 rng(static_cast<unsigned>(threads * 7919 + accounts));
    for (int t = 0; t < transfers; ++t) done.push_back(bank_op(acc, t, rng, n));
  } else {
    for (int k = 0; k < tellers; ++k)
      done.push_back(when(make_actor_on<int>(pool, k), [&, k](int&) {
        std::mt19937 rng(static_cast<unsigned>(k * 7919 + accounts));
        std::vector<Promise<void>> mine;
        for (int t = k; t < transfers; t += tellers) mine.push_back(bank_op(acc, t, rng, n));
        return when_all(std::move(mine));
      }));
  }
  when_all(std::move(done)).get();
  long total = when(acc, [](std::span<Account*> xs) {
                 long s = 0;
                 for (Account* x : xs) s += x->balance;
                 return s;
               }).get();
  EXPECT_EQ(total, kStart * accounts);
  EXPECT_GT(n.audits.load(), 0);
  EXPECT_EQ(n.audits_failed.load(), 0);
  EXPECT_EQ(n.torn.load(), 0);
  if (tellers > 0) {
    EXPECT_GT(pool.stats().nested, 0u);
  }
}
}  // namespace

TEST(Stress, BankTransfersTwoThreads) { bank(2, 64, 200000 / kScale); }
// Sent by behaviours: transfers on free accounts run nested in their teller
// (CW11), beside ones queued behind the other tellers' and audits.
TEST(Stress, BankTransfersFromTellersTwoThreads) { bank(2, 64, 200000 / kScale, 2); }
TEST(Stress, BankTransfersFromTellersEightThreads) { bank(8, 1000, 200000 / kScale, 8); }
TEST(Stress, BankTransfersEightThreads) { bank(8, 1000, 200000 / kScale); }
TEST(Stress, BankTransfersFewAccountsHighContention) { bank(4, 4, 100000 / kScale); }

TEST(Stress, MillionMessages) {
  const long n = 1000000 / kScale;
  auto c = make_actor<long>(0L);
  for (long i = 0; i < n; ++i) when(c, [](long& x) { ++x; });
  EXPECT_EQ(when(c, [](long& x) { return x; }).get(), n);
}

TEST(Stress, MillionMessagesFromManyActors) {
  const int senders = 100;
  const long per = 10000 / kScale;
  auto sink = make_actor<long>(0L);
  std::vector<Promise<void>> ps;
  for (int s = 0; s < senders; ++s) {
    auto a = make_actor<int>(s);
    ps.push_back(when(a, [sink, per](int&) {
      for (long i = 0; i < per; ++i) when(sink, [](long& x) { ++x; });
    }));
  }
  when_all(std::move(ps)).get();
  troupe::wait_idle();
  EXPECT_EQ(when(sink, [](long& x) { return x; }).get(), senders * per);
}

namespace {
std::atomic<long> g_alive{0};
struct Ephemeral {
  Ephemeral() { g_alive++; }
  ~Ephemeral() { g_alive--; }
  long v = 0;
};
}  // namespace

TEST(Stress, ManyShortLivedActors) {
  const int n = 200000 / kScale;
  std::atomic<long> ran{0};
  for (int i = 0; i < n; ++i) {
    auto a = make_actor<Ephemeral>();
    when(a, [&ran](Ephemeral& e) {
      e.v++;
      ran++;
    });
  }  // handles dropped at once; the behaviour keeps each alive until it ran
  troupe::wait_idle();
  EXPECT_EQ(ran.load(), n);
  EXPECT_EQ(g_alive.load(), 0);
}
