// Tests of nested runs (troupe/detail/cown.hpp CW11): a multi-actor `when`
// whose actors are all free, sent by a behaviour's block on a pool worker,
// runs at once inside that block. One that must wait for an actor, a
// one-actor message and a send from outside the pool are not nested; a long
// nested run and a nested block that waits stop the nesting on that thread;
// a nested block that waits for a behaviour queued behind its caller's actor
// gets an error instead of a wait that never ends.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
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
