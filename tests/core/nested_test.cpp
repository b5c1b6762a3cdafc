// Tests of nested runs (troupe/detail/cown.hpp CW11): a multi-actor `when`
// whose actors are all free, sent by a behaviour's block on a pool worker,
// runs at once inside that block. One that must wait for an actor, a
// one-actor message and a send from outside the pool are not nested; a long
// nested run and a nested block that waits stop the nesting on that thread;
// a nested block that waits for a behaviour queued behind its caller's actor
// gets an error instead of a wait that never ends. A void `when` on actors
// named by lvalue handles runs inline, on the stack (CW13, WN10): it takes
// all its actors or none, and never writes under a reader.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <thread>
#include <vector>

#include "troupe/troupe.hpp"

using namespace troupe;
using namespace std::chrono_literals;

namespace {

// What a block saw of its sender's block: nested means it ran on the
// sender's thread while the sender's block was still running (the sender
// clears `running` before it waits for anything, so a run that helping does
// inside that wait does not count).
struct Sender {
  std::thread::id thread = std::this_thread::get_id();
  std::atomic<bool> running{true};
  bool nested_here() const {
    return running.load() && std::this_thread::get_id() == thread;
  }
};

// The default pool's count of nested runs (PL14).
std::uint64_t pool_nested() {
  auto* pool = dynamic_cast<sched::Pool*>(&sched::default_scheduler());
  return pool ? pool->stats().nested : 0;
}

}  // namespace

TEST(Nested, AMultiActorWhenOnFreeActorsRunsInTheSendersBlock) {
  const std::uint64_t nested_before = pool_nested();
  auto teller = make_actor<int>(0);
  auto a = make_actor<long>(1), b = make_actor<long>(2);
  auto r = when(teller, [a, b](int&) {
    detail::reset_nesting_guard();
    auto s = std::make_shared<Sender>();
    auto p = when(a, b, [s](long& x, long& y) {
      std::swap(x, y);
      return s->nested_here();
    });
    const bool done_at_return = p.ready();
    s->running.store(false);
    return done_at_return && p.get();
  });
  EXPECT_TRUE(r.get());
  EXPECT_EQ(when(a, b, [](long& x, long& y) { return x * 10 + y; }).get(), 21);
  EXPECT_GE(pool_nested(), nested_before + 1);
}

TEST(Nested, AOneActorMessageIsNotNested) {
  auto teller = make_actor<int>(0);
  auto a = make_actor<long>(0);
  auto r = when(teller, [a](int&) {
    detail::reset_nesting_guard();
    auto s = std::make_shared<Sender>();
    auto p = when(a, [s](long&) { return s->nested_here(); });
    s->running.store(false);
    return p.get();
  });
  EXPECT_FALSE(r.get());
}

TEST(Nested, AWhenOnAHeldActorWaitsItsTurn) {
  auto teller = make_actor<int>(0);
  auto a = make_actor<long>(0), b = make_actor<long>(0);
  auto r = when(teller, [a, b](int&) {
    detail::reset_nesting_guard();
    auto s = std::make_shared<Sender>();
    auto release = std::make_shared<std::atomic<bool>>(false);
    // Holds `a` from its grant on, until the sender lets it go.
    auto hold = when(a, [release](long& x) {
      while (!release->load()) std::this_thread::yield();
      x = 1;
    });
    auto p = when(a, b, [s](long& x, long&) { return x == 1 && !s->nested_here(); });
    release->store(true);
    s->running.store(false);
    hold.get();
    return p.get();
  });
  EXPECT_TRUE(r.get());
}

// What the Python package's blocks do: their waits are invisible to CW7.
TEST(Nested, NothingSentUnderNoNestedRunsIsNested) {
  auto teller = make_actor<int>(0);
  auto a = make_actor<long>(0), b = make_actor<long>(0);
  auto c = make_actor<long>(0), d = make_actor<long>(0);
  auto r = when(teller, [a, b, c, d](int&) {
    detail::reset_nesting_guard();
    auto s = std::make_shared<Sender>();
    Promise<bool> p;
    {
      detail::NoNestedRuns guard;
      p = when(a, b, [s](long&, long&) { return s->nested_here(); });
    }
    auto q = when(c, d, [s](long&, long&) { return s->nested_here(); });  // the guard is gone
    s->running.store(false);
    return !p.get() && q.get();
  });
  EXPECT_TRUE(r.get());
}

TEST(Nested, ASendFromOutsideThePoolIsNotNested) {
  auto a = make_actor<long>(0), b = make_actor<long>(0);
  const auto main_thread = std::this_thread::get_id();
  auto p = when(a, b, [](long&, long&) { return std::this_thread::get_id(); });
  EXPECT_NE(p.get(), main_thread);
}

// The first nested run after the reset is timed; it takes 200 us, far past
// kNestedLongNs, so the thread refuses the next offers.
TEST(Nested, ALongNestedRunStopsTheNesting) {
  auto teller = make_actor<int>(0);
  auto r = when(teller, [](int&) {
    detail::reset_nesting_guard();
    auto s = std::make_shared<Sender>();
    auto nested = std::make_shared<std::atomic<int>>(0);
    std::vector<Promise<void>> ps;
    for (int i = 0; i < 8; ++i)
      ps.push_back(when(make_actor<long>(0), make_actor<long>(0), [s, nested](long&, long&) {
        if (s->nested_here()) nested->fetch_add(1);
        std::this_thread::sleep_for(200us);
      }));
    s->running.store(false);
    when_all(std::move(ps)).get();
    return nested->load();
  });
  EXPECT_EQ(r.get(), 1);
}

TEST(Nested, ANestedBlockThatWaitsStopsTheNesting) {
  auto teller = make_actor<int>(0);
  auto c = make_actor<long>(7);
  auto r = when(teller, [c](int&) {
    detail::reset_nesting_guard();
    auto s = std::make_shared<Sender>();
    auto first = when(make_actor<long>(0), make_actor<long>(0), [s, c](long&, long&) {
      const bool nested = s->nested_here();
      return nested && when(c, [](long& v) { return v; }).get() == 7;  // a wait, nested
    });
    auto second = when(make_actor<long>(0), make_actor<long>(0),
                       [s](long&, long&) { return s->nested_here(); });
    s->running.store(false);
    return first.get() && !second.get();
  });
  EXPECT_TRUE(r.get());
}

// CW11 with CW7: the nested block asks for a behaviour on the teller, queued
// behind the teller's running block, which cannot end before the nested
// block does.
TEST(Nested, AWaitOnABehaviourBehindTheCallerFailsInsteadOfHanging) {
  auto teller = make_actor<int>(5);
  auto a = make_actor<long>(0), b = make_actor<long>(0);
  auto r = when(teller, [teller, a, b](int&) {
    detail::reset_nesting_guard();
    return when(a, b, [teller](long&, long&) {
      return when(teller, [](int& t) { return t; }).get();
    });
  });
  try {
    r.get();
    FAIL() << "the wait returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("nested"), std::string::npos) << e.what();
  }
  // The teller is free again, and its queued behaviour ran.
  EXPECT_EQ(when(teller, [](int& t) { return t; }).get(), 5);
}

namespace {
// Counts its destructions.
struct Tracked {
  Tracked(std::atomic<int>* destroyed, long v) : destroyed(destroyed), v(v) {}
  Tracked(const Tracked&) = delete;
  ~Tracked() { destroyed->fetch_add(1); }
  std::atomic<int>* destroyed;
  long v;
};
}  // namespace

// CW12: a nested run owes its empty queues' references, its caller's handle
// keeping each actor alive. Its block drops that handle, the last one: the
// actor lives on until the run released it (the queue adopts the count,
// last_release), and is destroyed then, once.
TEST(Nested, ANestedBlockMayDropTheLastHandleOfItsActor) {
  std::atomic<int> destroyed{0};
  auto teller = make_actor<int>(0);
  auto holder = std::make_shared<std::optional<Actor<Tracked>>>(make_actor<Tracked>(&destroyed, 1));
  auto b = make_actor<long>(0);
  auto r = when(teller, [holder, b, &destroyed](int&) {
    detail::reset_nesting_guard();
    auto s = std::make_shared<Sender>();
    const Actor<Tracked>& a = **holder;  // the only handle
    auto p = when(a, b, [holder, s, &destroyed](Tracked& t, long& y) {
      holder->reset();  // the last handle of the actor this block holds
      t.v += 41;        // still alive
      y = t.v;
      return std::pair{s->nested_here(), destroyed.load()};
    });
    s->running.store(false);
    auto [nested, destroyed_in_block] = p.get();
    return std::tuple{nested, destroyed_in_block, destroyed.load()};
  });
  auto [nested, in_block, after_run] = r.get();
  EXPECT_TRUE(nested) << "not nested: the test shows nothing";
  EXPECT_EQ(in_block, 0) << "destroyed while its behaviour held it";
  EXPECT_EQ(after_run, 1) << "not destroyed when its behaviour released it";
  EXPECT_EQ(when(b, [](long& y) { return y; }).get(), 42);
  EXPECT_EQ(destroyed.load(), 1);
}

// CW12: a message queued (from an outside thread) behind a nested run's
// actor while the run holds it: the run's release takes the queue's
// reference before granting it, and the count stays exact.
TEST(Nested, ANestedRunTakesTheQueueReferenceForItsSuccessor) {
  std::atomic<int> destroyed{0};
  {
    auto a = make_actor<Tracked>(&destroyed, 0);
    auto b = make_actor<long>(0);
    auto teller = make_actor<int>(0);
    std::atomic<int> step{0};
    Promise<void> queued;
    std::thread outside([&] {
      while (step.load() != 1) std::this_thread::yield();
      queued = when(a, [](Tracked& t) { t.v += 1; });  // behind the nested run
      step.store(2);
    });
    auto r = when(teller, [&step, a, b](int&) {
      detail::reset_nesting_guard();
      auto s = std::make_shared<Sender>();
      auto p = when(a, b, [&step, s](Tracked& t, long&) {
        step.store(1);
        while (step.load() != 2) std::this_thread::yield();
        t.v += 10;
        return s->nested_here();
      });
      s->running.store(false);
      return p.get();
    });
    EXPECT_TRUE(r.get()) << "not nested: the test shows nothing";
    outside.join();
    queued.get();
    EXPECT_EQ(when(a, [](Tracked& t) { return t.v; }).get(), 11);
    EXPECT_EQ(destroyed.load(), 0);
  }
  EXPECT_EQ(destroyed.load(), 1);
}

// CW12 under load: transfers and reads over 8 actors, nested in a teller's
// block, while outside threads queue messages behind them (so nested runs
// find successors and take the queue's reference late, and readers pass
// their actor on to queued writers). Every actor is destroyed exactly once
// when its handles are dropped: no reference taken twice, none lost.
TEST(Nested, QueueReferencesStayExactUnderNestedRunsAndQueuedSends) {
  std::atomic<int> destroyed{0};
  constexpr int kActors = 8, kOps = 20000, kMessages = 4000;
  {
    std::vector<Actor<Tracked>> accounts;
    for (int i = 0; i < kActors; ++i) accounts.push_back(make_actor<Tracked>(&destroyed, 1000));
    auto teller = make_actor<int>(0);
    std::atomic<bool> outside_sends{false};
    auto ops = when(teller, [&accounts, &outside_sends](int&) {
      while (!outside_sends.load()) std::this_thread::yield();  // so that they overlap
      detail::reset_nesting_guard();
      std::vector<Promise<long>> sums;
      std::uint64_t x = 88172645463325252ull;
      for (int i = 0; i < kOps; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const auto src = static_cast<std::size_t>(x % kActors);
        const auto dst = static_cast<std::size_t>((src + 1 + (x >> 8) % (kActors - 1)) % kActors);
        if (i % 3 == 0)
          sums.push_back(when(read(accounts[src]), accounts[dst], [](const Tracked& a, Tracked& b) {
            return a.v + b.v;
          }));
        else
          when(accounts[src], accounts[dst], [](Tracked& a, Tracked& b) {
            --a.v;
            ++b.v;
          });
      }
      return when_all(std::move(sums));
    });
    std::vector<Promise<void>> sent;
    std::thread outside([&] {
      outside_sends.store(true);
      for (int i = 0; i < kMessages || !ops.ready(); ++i)
        sent.push_back(when(accounts[i % kActors], [](Tracked& t) { t.v += 0; }));
    });
    outside.join();
    ops.get();
    when_all(std::move(sent)).get();
    auto total = when(accounts, [](std::span<Tracked*> all) {
                   long t = 0;
                   for (Tracked* a : all) t += a->v;
                   return t;
                 }).get();
    EXPECT_EQ(total, 1000L * kActors);
    EXPECT_EQ(destroyed.load(), 0);
  }
  EXPECT_EQ(destroyed.load(), kActors);
}

// CW12 with BP3: a nested run whose block sends to an overloaded actor is
// paused after its block, holding its actors, and its caller's when()
// returns meanwhile. The run takes its queues' references before it
// pauses, so the caller may drop every handle: the actors live until the
// resumed run releases them, and are destroyed then, once.
TEST(Nested, ANestedRunThatPausesTakesItsQueueReferencesFirst) {
  struct Restore {  // the process's setting, also after a failed assertion
    Backpressure before = backpressure();
    ~Restore() { set_backpressure(before); }
  } restore;
  Backpressure fail = restore.before;
  fail.outside = Overload::fail;  // our sends below stop at the limit
  set_backpressure(fail);
  std::atomic<int> destroyed{0};
  std::atomic<bool> drain{false};
  auto slow = make_actor<long>(0);
  slow.set_mailbox_limit(2);
  when(slow, [&drain](long&) {
    while (!drain.load()) std::this_thread::yield();
  });
  int queued = 1;
  for (; queued < 10; ++queued) {
    try {
      when(slow, [](long&) {});
    } catch (const Error& e) {
      ASSERT_EQ(e.code(), Errc::overloaded);
      break;
    }
  }
  ASSERT_LT(queued, 10) << "the actor never became overloaded";
  auto holder = std::make_shared<std::optional<std::pair<Actor<Tracked>, Actor<Tracked>>>>(
      std::pair{make_actor<Tracked>(&destroyed, 0), make_actor<Tracked>(&destroyed, 0)});
  auto teller = make_actor<int>(0);
  auto r = when(teller, [holder, slow](int&) {
    detail::reset_nesting_guard();
    auto s = std::make_shared<Sender>();
    auto p = when((*holder)->first, (*holder)->second, [slow, s](Tracked& x, Tracked& y) {
      x.v += 1;
      y.v += 1;
      when(slow, [](long&) {});  // overloaded: this run pauses after its block
      return s->nested_here();
    });
    s->running.store(false);
    const bool ready_at_return = p.ready();
    holder->reset();  // the last handles, while the paused run holds the actors
    return std::pair{ready_at_return, p};
  });
  auto [ready_at_return, p] = r.get();
  EXPECT_FALSE(ready_at_return) << "not paused: the test shows nothing";
  EXPECT_EQ(destroyed.load(), 0) << "destroyed while a paused run held them";
  drain.store(true);
  EXPECT_TRUE(p.get()) << "not nested: the test shows nothing";
  EXPECT_EQ(destroyed.load(), 2);
}

// when.hpp WN8, promise.hpp PR9/PR10: a void `when` that ran nested is done
// when when() returns; its promise is then the one immortal fulfilled state
// (its behaviour freed there). Handles on it are copied and dropped on many
// threads (never counted), joined, chained and waited on like any other.
// A nested block that sends (not nested: one level) leaves the outer one's
// promise unseen until it ends. A value and an error reach their promises
// at return too.
TEST(Nested, AVoidWhenDoneAtReturnHandsBackTheImmortalReadyState) {
  auto* ready = detail::ready_void_state();
  auto teller = make_actor<int>(0);
  auto a = make_actor<long>(0), b = make_actor<long>(0), c = make_actor<long>(0),
       d = make_actor<long>(0);
  constexpr int kN = 1000;
  auto nested = std::make_shared<std::vector<char>>(kN + 2, 0);  // + the value's, the error's
  auto r = when(teller, [a, b, c, d, nested](int&) {
    detail::reset_nesting_guard();
    auto s = std::make_shared<Sender>();
    std::vector<Promise<void>> ps;
    std::vector<char> immortal;
    for (int i = 0; i < kN; ++i) {
      ps.push_back(when(a, b, [c, d, i, s, nested](long& x, long& y) {
        x -= i;
        y += i;
        (*nested)[i] = s->nested_here() ? 1 : 0;
        if (i % 100 == 0) when(c, d, [](long&, long& z) { ++z; });  // not nested (one level)
      }));
      immortal.push_back(detail::state_of(ps.back()) == detail::ready_void_state() ? 1 : 0);
    }
    auto value = when(a, b, [s, nested](long& x, long& y) {
      (*nested)[kN] = s->nested_here() ? 1 : 0;
      return x + y;
    });
    auto error = when(a, b, [s, nested](long&, long&) -> long {
      (*nested)[kN + 1] = s->nested_here() ? 1 : 0;
      throw std::runtime_error("nested");
    });
    const bool value_ready = value.ready(), error_ready = error.ready();
    s->running.store(false);
    return std::tuple{ps, immortal, value_ready, value, error_ready, error};
  });
  auto [ps, immortal, value_ready, value, error_ready, error] = r.get();
  when_all(ps).get();
  // Every run that was nested ended with the immortal state (the nesting
  // guard may refuse offers after a long sampled run, under a sanitizer).
  int n_nested = 0;
  for (int i = 0; i < kN; ++i)
    if ((*nested)[i]) {
      ++n_nested;
      EXPECT_TRUE(immortal[i]) << "transfer " << i
                               << " ran nested, its promise is not the ready state";
    }
  ASSERT_GE(n_nested, 1) << "nothing nested: the test shows nothing";
  // The flags are read after the runs that wrote them (on another thread
  // when not nested) are known to be done.
  EXPECT_EQ(value.get(), 0);
  EXPECT_THROW(error.get(), std::runtime_error);
  EXPECT_TRUE(value_ready || !(*nested)[kN]) << "a nested run's value was not there at return";
  EXPECT_TRUE(error_ready || !(*nested)[kN + 1]) << "a nested run's error was not there at return";
  // Handles on the immortal state, copied and dropped by four threads.
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&ps] {
      for (int k = 0; k < 50; ++k) {
        std::vector<Promise<void>> copy = ps;
        for (auto& p : copy) p.get();
      }
    });
  for (auto& t : ts) t.join();
  when_all(ps).get();
  EXPECT_EQ(ps.front().then([] { return 7; }).get(), 7);
  ps.clear();
  EXPECT_TRUE(ready->ready());
  EXPECT_FALSE(ready->failed());
  EXPECT_EQ(when(a, b, d, [](long& x, long& y, long& z) { return std::tuple{x + y, z}; }).get(),
            std::tuple(0L, static_cast<long>(kN / 100)));
}

// when.hpp WN10, cown.hpp CW13: a void `when` on actors the caller names by
// lvalue handles runs on the stack when they are all free, with no
// behaviour: it is done at return (the immortal state), an error reaches
// its promise, the last handle may be dropped inside it, and a message
// queued behind it while it runs gets the actor with the queue's reference.
TEST(Nested, AVoidWhenOnFreeActorsRunsInlineWithoutABehaviour) {
  std::atomic<int> destroyed{0};
  {
    auto teller = make_actor<int>(0);
    auto holder = std::make_shared<std::optional<Actor<Tracked>>>(make_actor<Tracked>(&destroyed, 1));
    auto b = make_actor<Tracked>(&destroyed, 0);
    std::atomic<int> step{0};
    Promise<void> queued;
    std::thread outside([&] {
      while (step.load() != 1) std::this_thread::yield();
      queued = when(b, [](Tracked& t) { t.v += 100; });  // behind the inline run
      step.store(2);
    });
    const std::uint64_t nested_before = pool_nested();
    auto c = make_actor<long>(0), d = make_actor<long>(0);
    auto r = when(teller, [holder, b, c, d, &step, &destroyed](int&) {
      detail::reset_nesting_guard();
      auto s = std::make_shared<Sender>();
      bool nested = false;
      int destroyed_in_block = -1;
      const Actor<Tracked>& a = **holder;  // the only handle
      auto p = when(a, b, [&](Tracked& t, Tracked& y) {
        holder->reset();  // the last handle of an actor this block holds
        t.v += 41;        // still alive
        y.v = t.v;
        nested = s->nested_here();
        destroyed_in_block = destroyed.load();
        step.store(1);
        while (step.load() != 2) std::this_thread::yield();
      });
      const bool immortal = detail::state_of(p) == detail::ready_void_state();
      detail::reset_nesting_guard();  // the run above was long (CW11)
      auto failed = when(c, d, [](long&, long&) { throw std::runtime_error("inline"); });
      const bool failed_at_return = failed.ready();
      s->running.store(false);
      return std::tuple{nested, immortal, destroyed_in_block, destroyed.load(), failed,
                        failed_at_return};
    });
    auto [nested, immortal, in_block, after_run, failed, failed_at_return] = r.get();
    outside.join();
    queued.get();
    EXPECT_TRUE(nested) << "not nested: the test shows nothing";
    EXPECT_TRUE(immortal) << "a void when that ran inline is done at return";
    EXPECT_GE(pool_nested(), nested_before + 1);
    EXPECT_EQ(in_block, 0) << "destroyed while the inline run held it";
    EXPECT_EQ(after_run, 1) << "not destroyed when the inline run released it";
    EXPECT_TRUE(failed_at_return);
    EXPECT_THROW(failed.get(), std::runtime_error);
    EXPECT_EQ(when(b, [](Tracked& t) { return t.v; }).get(), 142);
    EXPECT_EQ(destroyed.load(), 1);
  }
  EXPECT_EQ(destroyed.load(), 2);
}

// CW13 under contention: an inline run takes every actor or none. The
// teller's transfers name a pair (lo, hi) in address order, so the run
// takes lo first; outside threads keep hi busy with messages and with
// readers (a reader leaves the queue before it reads, so hi can look free
// while it is read), and queue messages on lo. A run that took lo and then
// finds hi taken or read passes lo on, to whoever queued behind it
// meanwhile, and is sent as a behaviour instead. Money is conserved, every
// transfer and message runs once, no read sees a transfer half done, and
// every actor is destroyed exactly once when its handles go.
TEST(Nested, AnInlineRunTakesAllItsActorsOrNone) {
  std::atomic<int> destroyed{0};
  constexpr int kPairs = 3, kOps = 60000;
  struct Acct {
    Acct(std::atomic<int>* d, long v) : t(d, v) {}
    Tracked t;
    long moves = 0;     // transfers that touched it
    long messages = 0;  // outside messages it ran
  };
  {
    std::vector<Actor<Acct>> lo, hi;
    for (int i = 0; i < kPairs; ++i) {
      auto x = make_actor<Acct>(&destroyed, 1000), y = make_actor<Acct>(&destroyed, 1000);
      if (y.cown() < x.cown()) std::swap(x, y);
      lo.push_back(x);
      hi.push_back(y);
    }
    auto teller = make_actor<int>(0);
    std::atomic<bool> stop{false};
    std::atomic<int> started{0};
    std::atomic<long> bad_reads{0};
    std::vector<Promise<void>> sent_lo, sent_hi;
    std::vector<Promise<long>> reads;
    std::thread busy_hi([&] {
      started.fetch_add(1);
      for (int i = 0; !stop.load(); ++i) {
        const auto k = static_cast<std::size_t>(i % kPairs);
        if (i % 2 == 0) {
          sent_hi.push_back(when(hi[k], [](Acct& a) { ++a.messages; }));
        } else {
          reads.push_back(when(read(hi[k]), [&bad_reads](const Acct& a) {
            const long before = a.t.v;
            for (int s = 0; s < 200; ++s) std::atomic_signal_fence(std::memory_order_seq_cst);
            if (a.t.v != before) bad_reads.fetch_add(1);  // a writer ran meanwhile
            return before;
          }));
        }
        if (i % 64 == 0) std::this_thread::yield();
      }
    });
    std::thread busy_lo([&] {
      started.fetch_add(1);
      for (int i = 0; !stop.load(); ++i) {  // now and then: lo is mostly free
        sent_lo.push_back(when(lo[static_cast<std::size_t>(i % kPairs)], [](Acct& a) { ++a.messages; }));
        for (int s = 0; s < 20; ++s) std::this_thread::yield();
      }
    });
    auto ops = when(teller, [&lo, &hi, &bad_reads, &started](int&) {
      while (started.load() != 2) std::this_thread::yield();  // so that they overlap
      std::vector<Promise<void>> checks;
      for (int i = 0; i < kOps; ++i) {
        if (i % 512 == 0) detail::reset_nesting_guard();  // keep offering
        const auto k = static_cast<std::size_t>(i % kPairs);
        when(lo[k], hi[k], [](Acct& a, Acct& b) {
          a.t.v -= 7;
          ++a.moves;
          b.t.v += 7;
          ++b.moves;
        });
        if (i % 100 == 0)  // a pair's sum never shows a transfer half done
          checks.push_back(when(read(lo[k]), read(hi[k]), [&bad_reads](const Acct& a, const Acct& b) {
            if (a.t.v + b.t.v != 2000) bad_reads.fetch_add(1);
          }));
      }
      return when_all(std::move(checks));
    });
    ops.get();
    stop.store(true);
    busy_hi.join();
    busy_lo.join();
    const auto n_sent = static_cast<long>(sent_lo.size() + sent_hi.size());
    when_all(std::move(sent_lo)).get();
    when_all(std::move(sent_hi)).get();
    when_all(std::move(reads)).get();
    EXPECT_EQ(bad_reads.load(), 0);
    long moves = 0, messages = 0;
    for (int k = 0; k < kPairs; ++k) {
      auto [sum, m, msgs] = when(lo[static_cast<std::size_t>(k)], hi[static_cast<std::size_t>(k)],
                                 [](Acct& a, Acct& b) {
                                   return std::tuple{a.t.v + b.t.v, a.moves, a.messages + b.messages};
                                 }).get();
      EXPECT_EQ(sum, 2000);
      moves += m;
      messages += msgs;
    }
    EXPECT_EQ(moves, kOps);
    EXPECT_EQ(messages, n_sent);
    EXPECT_EQ(destroyed.load(), 0);
  }
  EXPECT_EQ(destroyed.load(), 2 * kPairs);
}

// CW13, CW4: an actor whose last reader passed it on is free in its queue
// but still being read. An inline run that finds it so passes on what it
// took and is sent as a behaviour, which waits for the reader: it never
// writes while the reader reads.
TEST(Nested, AnInlineRunNeverWritesUnderAReader) {
  if (sched::default_scheduler().concurrency() < 2) GTEST_SKIP() << "needs two workers";
  auto x = make_actor<long>(0), y = make_actor<long>(0);
  auto teller = make_actor<int>(0);
  std::atomic<bool> reading{false}, release{false};
  auto r = when(read(y), [&](const long&) {
    reading.store(true);
    while (!release.load()) std::this_thread::yield();
    reading.store(false);
  });
  auto t = when(teller, [&, x, y](int&) {
    while (!reading.load()) std::this_thread::yield();
    detail::reset_nesting_guard();
    auto q = when(x, y, [&](long& a, long& b) {  // void: tried inline (WN10)
      a -= 1;
      b += 1;
      if (reading.load()) throw std::logic_error("wrote while y was being read");
    });
    const bool q_ready_at_return = q.ready();
    auto p = when(x, y, [&](long& a, long& b) {  // not void: a behaviour, queued behind q
      a -= 1;
      b += 1;
      return reading.load();
    });
    release.store(true);
    return std::tuple{p, q, q_ready_at_return};
  });
  auto [p, q, q_ready_at_return] = t.get();
  r.get();
  EXPECT_FALSE(p.get());
  EXPECT_NO_THROW(q.get());
  EXPECT_FALSE(q_ready_at_return) << "ran at once, under the reader";
  EXPECT_EQ(when(x, y, [](long& a, long& b) { return std::pair{a, b}; }).get(),
            (std::pair<long, long>{-2, 2}));
}

// when.hpp WN8 for a behaviour that ran nested (not inline, WN10: it reads
// an actor): its void promise is the immortal ready state too.
TEST(Nested, ANestedVoidBehaviourWithAReaderIsDoneAtReturn) {
  auto teller = make_actor<int>(0);
  auto a = make_actor<long>(5), b = make_actor<long>(0);
  auto r = when(teller, [a, b](int&) {
    detail::reset_nesting_guard();
    auto s = std::make_shared<Sender>();
    bool nested = false;
    auto p = when(read(a), b, [&](const long& x, long& y) {
      y += x;
      nested = s->nested_here();
    });
    s->running.store(false);
    return std::pair{nested, detail::state_of(p) == detail::ready_void_state()};
  });
  auto [nested, immortal] = r.get();
  EXPECT_TRUE(nested) << "not nested: the test shows nothing";
  EXPECT_TRUE(immortal);
  EXPECT_EQ(when(b, [](long& y) { return y; }).get(), 5);
}
