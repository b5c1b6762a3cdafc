// Tests of actors and `when`: single and multi-actor blocks, the same actor
// named twice, run-time sets, send order, exceptions, read-only sharing,
// per-actor memory, and skynet's 1.11 M actors.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <random>
#include <span>
#include <thread>
#include <vector>

#include "troupe/troupe.hpp"

using namespace troupe;
using namespace std::chrono_literals;

namespace {
struct Account {
  long balance = 0;
};
}  // namespace

TEST(Actor, SingleWhenReturnsPromise) {
  auto a = make_actor<Account>(Account{10});
  auto p = when(a, [](Account& x) { return x.balance += 5; });
  EXPECT_EQ(p.get(), 15);
  when(a, [](Account& x) { x.balance = 0; }).get();  // void result
  EXPECT_EQ(when(a, [](Account& x) { return x.balance; }).get(), 0);
}

// when.hpp WN7: a handle the caller keeps is held without a count; one
// passed with std::move is moved into the behaviour, as a move promises.
TEST(Actor, AHandlePassedWithMoveIsMovedIn) {
  auto a = make_actor<Account>();
  auto kept = a;
  auto p = when(std::move(a), [](Account& x) { return ++x.balance; });
  EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): the point of the test
  EXPECT_EQ(p.get(), 1);
  EXPECT_EQ(when(kept, [](Account& x) { return ++x.balance; }).get(), 2);
  EXPECT_TRUE(kept);
}

TEST(Actor, EmptyHandleIsATypedError) {
  Actor<Account> empty;
  try {
    when(empty, [](Account&) {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument);
  }
  auto a = make_actor<Account>();
  EXPECT_THROW(when(a, read(empty), [](Account&, const Account&) {}), Error);
  EXPECT_EQ(when(a, [](Account& x) { return ++x.balance; }).get(), 1);  // a is untouched
}

TEST(Actor, ActivateExistingObject) {
  std::vector<int> v{1, 2, 3};
  auto a = activate(std::move(v));
  EXPECT_EQ(when(a, [](std::vector<int>& x) { return x.size(); }).get(), 3u);
}

TEST(Actor, MultiActorWhenIsAtomic) {
  auto a = make_actor<Account>(Account{100});
  auto b = make_actor<Account>(Account{100});
  std::vector<Promise<void>> ps;
  for (int i = 0; i < 1000; ++i) {
    ps.push_back(when(a, b, [](Account& x, Account& y) {
      x.balance -= 1;
      y.balance += 1;
    }));
    ps.push_back(when(b, a, [](Account& y, Account& x) {  // the other order too
      EXPECT_EQ(x.balance + y.balance, 200);
    }));
  }
  when_all(ps).get();
  EXPECT_EQ(when(a, b, [](Account& x, Account& y) { return x.balance * 1000 + y.balance; }).get(),
            -900 * 1000 + 1100);
}

TEST(Actor, SameActorNamedTwice) {
  auto a = make_actor<Account>(Account{1});
  auto r = when(a, a, [](Account& x, Account& y) {
    EXPECT_EQ(&x, &y);
    return x.balance + y.balance;
  });
  EXPECT_EQ(r.get(), 2);
  auto r2 = when(read(a), a, [](const Account& x, Account& y) { return x.balance + y.balance; });
  EXPECT_EQ(r2.get(), 2);
}

// cown.hpp: the two-request sort (a transfer's, branch-free) orders by cown
// address, keeps each request's access with its cown, and merges a cown
// named twice (a write wins).
TEST(Actor, TwoRequestsSortWithTheirAccess) {
  auto a = make_actor<Account>(), b = make_actor<Account>();
  detail::Cown* lo = std::min(a.cown(), b.cown());
  detail::Cown* hi = std::max(a.cown(), b.cown());
  for (detail::Cown* first : {lo, hi})
    for (bool r0 : {false, true})
      for (bool r1 : {false, true}) {
        detail::Cown* second = first == lo ? hi : lo;
        detail::Request rq[2];
        rq[0].cown = first;
        rq[0].read = r0;
        rq[1].cown = second;
        rq[1].read = r1;
        ASSERT_EQ(detail::sort_and_merge(rq, 2), 2u);
        EXPECT_EQ(rq[0].cown, lo);
        EXPECT_EQ(rq[1].cown, hi);
        EXPECT_EQ(rq[0].read, first == lo ? r0 : r1);
        EXPECT_EQ(rq[1].read, first == lo ? r1 : r0);
        detail::Request same[2];
        same[0].cown = same[1].cown = first;
        same[0].read = r0;
        same[1].read = r1;
        ASSERT_EQ(detail::sort_and_merge(same, 2), 1u);
        EXPECT_EQ(same[0].cown, first);
        EXPECT_EQ(same[0].read, r0 && r1);
      }
}

TEST(Actor, RunTimeSet) {
  std::vector<Actor<Account>> accounts;
  for (int i = 0; i < 50; ++i) accounts.push_back(make_actor<Account>(Account{i}));
  std::vector<Actor<Account>> pick{accounts[3], accounts[40], accounts[3], accounts[7]};
  auto total = when(pick, [](std::span<Account*> xs) {
    long s = 0;
    for (Account* x : xs) s += x->balance;
    return s;
  });
  EXPECT_EQ(total.get(), 3 + 40 + 3 + 7);
  // A set mixed with fixed actors.
  auto r = when(accounts[0], std::vector<Actor<Account>>{accounts[1], accounts[2]},
                [](Account& z, std::span<Account*> xs) {
                  return z.balance + xs[0]->balance + xs[1]->balance;
                });
  EXPECT_EQ(r.get(), 3);
}

TEST(Actor, SendOrderIsKeptPerSender) {
  auto log = make_actor<std::vector<int>>();
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i)
        when(log, [=](std::vector<int>& v) { v.push_back(t * 10000 + i); });
    });
  for (auto& t : ts) t.join();
  auto v = when(log, [](std::vector<int>& v) { return v; }).get();
  ASSERT_EQ(v.size(), 8000u);
  int last[4] = {-1, -1, -1, -1};
  for (int x : v) {
    ASSERT_EQ(x % 10000, last[x / 10000] + 1);
    last[x / 10000] = x % 10000;
  }
}

TEST(Actor, ExceptionReachesPromiseAndActorStaysUsable) {
  auto a = make_actor<Account>();
  auto bad = when(a, [](Account& x) -> long {
    x.balance = 7;
    throw std::runtime_error("overdrawn");
  });
  try {
    bad.get();
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "overdrawn");
  }
  EXPECT_EQ(when(a, [](Account& x) { return x.balance; }).get(), 7);
}

TEST(Actor, ReadersShareWritersExclude) {
  if (sched::default_scheduler().concurrency() < 2) GTEST_SKIP() << "needs 2 threads";
  auto a = make_actor<Account>(Account{5});
  // Two readers must be inside at the same time: each waits for the other.
  std::atomic<int> inside{0};
  auto reader = [&inside](const Account& x) {
    inside.fetch_add(1);
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (inside.load() < 2 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::yield();
    return inside.load() >= 2 ? x.balance : -1;
  };
  auto r1 = when(read(a), reader);
  auto r2 = when(read(a), reader);
  EXPECT_EQ(r1.get(), 5);
  EXPECT_EQ(r2.get(), 5);

  // A writer between readers sees no reader inside, and readers after it see its write.
  std::atomic<int> readers_in{0};
  std::vector<Promise<long>> ps;
  for (int round = 0; round < 200; ++round) {
    for (int i = 0; i < 3; ++i)
      ps.push_back(when(read(a), [&](const Account& x) {
        readers_in.fetch_add(1);
        long v = x.balance;
        readers_in.fetch_sub(1);
        return v;
      }));
    ps.push_back(when(a, [&](Account& x) {
      EXPECT_EQ(readers_in.load(), 0);
      return ++x.balance;
    }));
  }
  long last = 5;
  for (std::size_t i = 0; i < ps.size(); ++i) {
    long v = ps[i].get();
    if (i % 4 == 3) {
      EXPECT_EQ(v, last + 1);  // writers in order
      last = v;
    } else {
      EXPECT_EQ(v, last);  // readers see the writer before them, not the one after
    }
  }
}

TEST(Actor, BytesPerIdleActor) {
  struct Empty {};
  // One allocation of the cown (queue, reader state, refcount, scheduler,
  // destructor) plus the object: the goal is <= 128 bytes + sizeof(T).
  std::size_t overhead = sizeof(detail::CownBox<Account>) - sizeof(Account);
  std::printf("bytes per idle actor: %zu + sizeof(T) (handle: %zu bytes)\n", overhead,
              sizeof(Actor<Account>));
  EXPECT_LE(overhead, 128u);
  EXPECT_LE(sizeof(detail::CownBox<Empty>), 128u);
  EXPECT_EQ(sizeof(Actor<Account>), sizeof(void*));
#if !defined(__SANITIZE_ADDRESS__)  // small_alloc.hpp SA4: ASan's own blocks
  // AC3: the cown fills its own cache line; the T starts on the next.
  for (int i = 0; i < 100; ++i) {
    auto a = make_actor<Account>();
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a.cown()) % detail::kCacheLine, 0u);
  }
#endif
}

TEST(Actor, OneActorMessageFitsTwoCacheLines) {
  // A fire-and-forget `when(a, f)` with an empty block is one allocation of
  // two cache lines (the allocator adds no header): what a sender and the
  // worker that runs it move between their caches per message.
  auto f = [](Account&) {};
  // What when(a, f) builds: the actor held without a reference (when.hpp WN7).
  using B = detail::Behaviour<1, void, decltype(f), detail::HeldActor<Account>>;
  std::printf("bytes per one-actor message: %zu\n", sizeof(B));
  EXPECT_LE(sizeof(B), 2 * detail::kCacheLine);
  // A message with 8 bytes of captures still fits.
  auto g = [p = static_cast<long*>(nullptr)](Account&) { (void)p; };
  EXPECT_LE(sizeof(detail::Behaviour<1, void, decltype(g), detail::HeldActor<Account>>),
            2 * detail::kCacheLine);
  // Blocks are cache-line aligned (small_alloc.hpp SA5).
  auto a = make_actor<Account>();
  for (int i = 0; i < 100; ++i) {
    void* p = detail::small_alloc(sizeof(B));
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % alignof(std::max_align_t), 0u);
    detail::small_free(p, sizeof(B));
  }
  when(a, f).get();
}

namespace {
// Counts its messages; when destroyed, records how many it had seen.
struct Tracked {
  std::atomic<int>* destroyed;
  std::atomic<long>* seen_at_death;
  long seen = 0;
  Tracked(std::atomic<int>* d, std::atomic<long>* s) : destroyed(d), seen_at_death(s) {}
  ~Tracked() {
    seen_at_death->store(seen);
    destroyed->fetch_add(1);
  }
};
}  // namespace

// cown.hpp CW8, actor.hpp AC1: behaviours hold no reference to an actor
// they name (when.hpp WN7), so the queue keeps it alive. With every handle
// dropped while messages are queued, from several threads at once, the
// object lives until the last message ran and is destroyed exactly once,
// after it (ASan sees a use after free otherwise).
TEST(Actor, LivesUntilItsQueuedBehavioursRanWithNoHandleLeft) {
  struct Sender {};
  constexpr int kRounds = 200, kSenders = 4, kPer = 50;
  std::vector<Actor<Sender>> senders;
  for (int i = 0; i < kSenders; ++i) senders.push_back(make_actor<Sender>());
  for (int round = 0; round < kRounds; ++round) {
    std::atomic<int> destroyed{0};
    std::atomic<long> seen_at_death{-1};
    std::atomic<long> read_seen{0};
    {
      auto a = make_actor<Tracked>(&destroyed, &seen_at_death);
      // Senders on pool threads send and drop their copies as they go.
      for (auto& s : senders)
        when(s, [a, &read_seen](Sender&) mutable {
          for (int i = 0; i < kPer; ++i) when(a, [](Tracked& t) { ++t.seen; });
          when(read(a), [&read_seen](const Tracked& t) { read_seen.fetch_add(t.seen >= 0); });
          when(a, make_actor<Account>(), [](Tracked& t, Account&) { ++t.seen; });
          a = Actor<Tracked>();
        });
      // A temporary named by a multi-actor when.
      when(make_actor<Account>(), make_actor<Account>(),
           [](Account& x, Account& y) { x.balance = 1, y.balance = 2; });
    }  // this thread's handle goes while messages are queued
    wait_idle();
    ASSERT_EQ(destroyed.load(), 1) << "round " << round;
    EXPECT_EQ(seen_at_death.load(), kSenders * (kPer + 1)) << "round " << round;
    EXPECT_EQ(read_seen.load(), kSenders);
  }
}

namespace {
// skynet: a 10-ary tree of actors, 6 levels, 1 111 111 actors; leaves return
// their number, every actor sums its children.
struct Node {};
void skynet(long num, long size, Resolver<long> out) {
  auto a = make_actor<Node>();
  when(a, [num, size, out = std::move(out)](Node&) mutable {
    if (size == 1) return out.set_value(num);
    std::vector<Promise<long>> kids;
    kids.reserve(10);
    long sub = size / 10;
    for (long i = 0; i < 10; ++i) {
      auto [p, r] = make_promise<long>();
      kids.push_back(std::move(p));
      skynet(num + i * sub, sub, std::move(r));
    }
    when_all(std::move(kids)).then([out = std::move(out)](const std::vector<long>& v) mutable {
      long s = 0;
      for (long x : v) s += x;
      out.set_value(s);
    });
  });
}
}  // namespace

TEST(Actor, SkynetMillionActors) {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr long kSize = 100000, kSum = 4999950000;  // 111 111 actors under sanitizers
#else
  constexpr long kSize = 1000000, kSum = 499999500000;
#endif
  auto [p, r] = make_promise<long>();
  skynet(0, kSize, std::move(r));
  EXPECT_EQ(p.get(), kSum);
}

// cown.hpp CW7: a block that waits for a behaviour queued behind it on an
// actor it holds gets an error instead of a wait that never ends.
TEST(Actor, GetOnABehaviourThatNeedsAHeldActorFailsInsteadOfHanging) {
  auto a = troupe::make_actor<int>(1);
  auto b = troupe::make_actor<int>(2);
  auto outer = troupe::when(a, [&](int&) {
    auto inner = troupe::when(a, b, [](int& x, int& y) { return x + y; });
    return inner.get();  // `inner` needs `a`, which this block holds
  });
  try {
    outer.get();
    FAIL() << "the wait returned";
  } catch (const troupe::Error& e) {
    EXPECT_EQ(e.code(), troupe::Errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("holds"), std::string::npos) << e.what();
  }
  // Waiting on a behaviour of another actor is fine, and `a` is free again.
  auto ok =
      troupe::when(a, [&](int& x) { return x + troupe::when(b, [](int& y) { return y; }).get(); });
  EXPECT_EQ(ok.get(), 3);
  // Readers of one actor share it: a reader may wait for another reader.
  auto r = troupe::when(troupe::read(a), [&](const int& x) {
    return x + troupe::when(troupe::read(a), [](const int& y) { return y; }).get();
  });
  EXPECT_EQ(r.get(), 2);
}

// A run-time set past kInsertionSortMax goes through std::sort: shuffled,
// with duplicates, and beside a read-only set that overlaps it (the write
// wins). A duplicate left unmerged would queue the behaviour behind itself
// on that actor and it would never run.
TEST(Actor, ALargeRunTimeSetWithDuplicatesIsSortedAndMerged) {
  constexpr long kActors = 3000;
  std::vector<Actor<Account>> all;
  for (long i = 0; i < kActors; ++i) all.push_back(make_actor<Account>(Account{i}));
  std::vector<Actor<Account>> pick = all;
  for (long i = 0; i < kActors; i += 3) pick.push_back(all[static_cast<std::size_t>(i)]);
  std::mt19937 rng(7);
  std::shuffle(pick.begin(), pick.end(), rng);
  auto total = when(pick, [](std::span<Account*> xs) {
    long s = 0;
    for (Account* x : xs) s += x->balance;
    return s;
  });
  long expect = kActors * (kActors - 1) / 2;
  for (long i = 0; i < kActors; i += 3) expect += i;
  EXPECT_EQ(total.get(), expect);
  // Read the first half, write the second half and a third of the first.
  std::vector<Actor<Account>> first(all.begin(), all.begin() + kActors / 2);
  std::vector<Actor<Account>> written(all.begin() + kActors / 2, all.end());
  for (long i = 0; i < kActors / 2; i += 3) written.push_back(all[static_cast<std::size_t>(i)]);
  std::shuffle(written.begin(), written.end(), rng);
  auto moved = when(read(first), written, [](std::span<const Account*>, std::span<Account*> ws) {
    for (Account* w : ws) w->balance += 1;
    return static_cast<long>(ws.size());
  });
  EXPECT_EQ(moved.get(), kActors - kActors / 2 + (kActors / 2 + 2) / 3);
  auto after = when(read(all), [](std::span<const Account*> xs) {
    long s = 0;
    for (const Account* x : xs) s += x->balance;
    return s;
  });
  EXPECT_EQ(after.get(),
            kActors * (kActors - 1) / 2 + kActors - kActors / 2 + (kActors / 2 + 2) / 3);
}

// when(read(vector), f): read-only over a set chosen at run time; readers of
// the same actors overlap, a writer waits for them.
TEST(Actor, ReadOnlyOverARunTimeSet) {
  std::vector<troupe::Actor<long>> accounts;
  for (long i = 0; i < 8; ++i) accounts.push_back(troupe::make_actor<long>(i));
  auto sum = troupe::when(troupe::read(accounts), [](std::span<const long*> xs) {
    long s = 0;
    for (const long* x : xs) s += *x;
    return s;
  });
  EXPECT_EQ(sum.get(), 28);
  // Two readers over the same set run at the same time: each waits until it
  // sees the other inside.
  std::atomic<int> inside{0};
  auto reader = [&](std::span<const long*>) {
    inside.fetch_add(1);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (inside.load() < 2 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::yield();
    return inside.load();
  };
  auto r1 = troupe::when(troupe::read(accounts), reader);
  auto r2 = troupe::when(troupe::read(accounts), reader);
  if (troupe::sched::default_scheduler().concurrency() >= 2) {
    EXPECT_EQ(r1.get(), 2);
    EXPECT_EQ(r2.get(), 2);
  } else {
    r1.get();
    r2.get();
  }
  auto w = troupe::when(accounts, [](std::span<long*> xs) { *xs[0] += 100; });
  w.get();
  EXPECT_EQ(
      troupe::when(troupe::read(accounts), [](std::span<const long*> xs) { return *xs[0]; }).get(),
      100);
}
