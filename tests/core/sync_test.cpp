// Tests of sync objects: only_if, notify, after, composition, and a sync
// object a user writes in about ten lines.
#include <gtest/gtest.h>

#include <atomic>

#include "troupe/troupe.hpp"

using namespace troupe;

namespace {
struct Account {
  long balance = 0;
};
}  // namespace

TEST(Sync, OnlyIfDecidesAtRunTime) {
  auto a = make_actor<Account>(Account{10});
  auto positive = [](const Account& x) { return x.balance > 0; };
  when(a, [](Account& x) { x.balance = -1; });  // queued before: the check sees -1
  auto skipped = when(only_if(a, positive), [](Account& x) { return ++x.balance; });
  try {
    skipped.get();
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::condition_false);
  }
  when(a, [](Account& x) { x.balance = 5; });
  EXPECT_EQ(when(only_if(a, positive), [](Account& x) { return ++x.balance; }).get(), 6);
}

TEST(Sync, NotifyCallbackAndPromise) {
  auto a = make_actor<Account>();
  std::atomic<int> notified{0};
  for (int i = 0; i < 100; ++i) when(notify(a, [&] { notified++; }), [](Account& x) { x.balance++; });
  auto [done, res] = make_promise<void>();
  when(notify(a, std::move(res)), [](Account& x) { x.balance++; });
  done.get();
  EXPECT_EQ(notified.load(), 100);
  // Composed: notified only when the block actually ran.
  std::atomic<int> ran{0};
  auto never = [](const Account&) { return false; };
  auto p = when(only_if(notify(a, [&] { ran++; }), never), [](Account&) {});
  EXPECT_THROW(p.get(), Error);
  EXPECT_EQ(ran.load(), 0);
}

TEST(Sync, AfterWaitsForPromiseThenTakesActor) {
  auto a = make_actor<Account>();
  auto [gate, open] = make_promise<int>();
  auto p = when(after(gate, a), [](Account& x) { return x.balance; });
  when(a, [](Account& x) { x.balance = 9; }).get();
  EXPECT_FALSE(p.ready());
  open.set_value(0);
  EXPECT_EQ(p.get(), 9);  // enqueued only after the gate: sees the write
}

namespace {
// A user-written sync object: counts how often blocks ran on the wrapped actor.
template <class Inner>
struct Counted : SyncObject<Inner> {
  Counted(Inner in, std::atomic<int>* n) : SyncObject<Inner>(std::move(in)), n(n) {}
  void when_exit(const WhenKey& k) {
    this->inner.when_exit(k);
    n->fetch_add(1, std::memory_order_relaxed);
  }
  std::atomic<int>* n;
};
template <class W>
Counted<detail::whenable_t<W>> counted(W&& w, std::atomic<int>* n) {
  return {detail::as_whenable(std::forward<W>(w)), n};
}
}  // namespace

TEST(Sync, UserWrittenSyncObject) {
  static_assert(Whenable<Counted<Actor<Account>>>);
  auto a = make_actor<Account>();
  auto b = make_actor<Account>();
  std::atomic<int> n{0};
  for (int i = 0; i < 50; ++i)
    when(counted(a, &n), b, [](Account& x, Account& y) { x.balance++, y.balance--; });
  EXPECT_EQ(when(a, b, [](Account& x, Account& y) { return x.balance + y.balance; }).get(), 0);
  EXPECT_EQ(n.load(), 50);
}
