// Tests of promises: values and errors, broken promises, then, use in `when`,
// when_all / when_any, waiting from outside and inside the pool.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "troupe/troupe.hpp"

using namespace troupe;

TEST(Promise, ValueAndErrorFromResolver) {
  auto [p, r] = make_promise<int>();
  EXPECT_FALSE(p.ready());
  std::thread t([r = std::move(r)]() mutable { r.set_value(42); });
  EXPECT_EQ(p.get(), 42);  // blocks on a futex outside the pool
  t.join();

  auto [q, s] = make_promise<int>();
  s.set_exception(std::make_exception_ptr(std::logic_error("no")));
  EXPECT_TRUE(q.failed());
  EXPECT_THROW(q.get(), std::logic_error);
}

TEST(Promise, BrokenWhenResolverDropped) {
  Promise<int> p;
  {
    auto [q, r] = make_promise<int>();
    p = q;
  }
  try {
    p.get();
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::broken_promise);
  }
}

TEST(Promise, ResolverUsedTwiceIsAnError) {
  auto [p, r] = make_promise<int>();
  r.set_value(1);
  EXPECT_THROW(r.set_value(2), Error);
  EXPECT_EQ(p.get(), 1);
}

TEST(Promise, ThenChainsAndPassesErrors) {
  auto [p, r] = make_promise<int>();
  auto q = p.then([](const int& v) { return v * 2; }).then([](const int& v) {
    return std::to_string(v);
  });
  r.set_value(21);
  EXPECT_EQ(q.get(), "42");

  auto [e, er] = make_promise<int>();
  bool ran = false;
  auto f = e.then([&](const int&) {
    ran = true;
    return 0;
  });
  er.set_exception(std::make_exception_ptr(std::runtime_error("x")));
  EXPECT_THROW(f.get(), std::runtime_error);
  EXPECT_FALSE(ran);

  auto v = ready_promise().then([] { return 5; });
  EXPECT_EQ(v.get(), 5);
}

TEST(Promise, UsableInWhenWithAndWithoutActors) {
  auto [p, r] = make_promise<int>();
  auto acc = make_actor<long>(100L);
  auto both = when(p, acc, [](const int& v, long& a) { return a += v; });
  auto alone = when(p, [](const int& v) { return v + 1; });
  EXPECT_FALSE(both.ready());
  r.set_value(5);
  EXPECT_EQ(both.get(), 105);
  EXPECT_EQ(alone.get(), 6);

  auto [vp, vr] = make_promise<void>();
  auto after_void = when(vp, acc, [](long& a) { return a; });
  vr.set_value();
  EXPECT_EQ(after_void.get(), 105);

  auto [ep, er] = make_promise<int>();
  auto failed = when(ep, acc, [](const int&, long& a) { return ++a; });
  er.set_exception(std::make_exception_ptr(std::runtime_error("upstream")));
  EXPECT_THROW(failed.get(), std::runtime_error);
  EXPECT_EQ(when(acc, [](long& a) { return a; }).get(), 105);  // the block never ran
}

// when.hpp WN9: a behaviour awaits its promises one after another through
// one node embedded in it. Three promises per behaviour, fulfilled by three
// threads in a random order (some before when() is called), two behaviours
// awaiting the first one at the same time, and an error in the middle.
TEST(Promise, ABehaviourAwaitsSeveralPromisesInTurn) {
  auto acc = make_actor<long>(0L);
  std::mt19937 rng(7);
  constexpr int kRounds = 500;
  std::vector<Promise<long>> sums, firsts;
  std::vector<Promise<void>> failed;
  for (int i = 0; i < kRounds; ++i) {
    auto [a, ra] = make_promise<int>();
    auto [b, rb] = make_promise<void>();
    auto [c, rc] = make_promise<std::string>();
    auto [e, re] = make_promise<int>();
    auto fulfil_one = [&, i](int which) {
      switch (which) {
        case 0: ra.set_value(i); break;
        case 1: rb.set_value(); break;
        case 2: rc.set_value(std::to_string(i)); break;
        default: re.set_exception(std::make_exception_ptr(std::runtime_error("upstream")));
      }
    };
    std::vector<int> fulfil = {0, 1, 2, 3};
    std::shuffle(fulfil.begin(), fulfil.end(), rng);
    const std::size_t before = rng() % 3;  // fulfilled before when() is called
    for (std::size_t k = 0; k < before; ++k) fulfil_one(fulfil[k]);
    sums.push_back(when(a, b, c, acc, [i](const int& x, const std::string& s, long& total) {
      EXPECT_EQ(x, i);
      EXPECT_EQ(s, std::to_string(i));
      return total += x;
    }));
    firsts.push_back(when(a, [](const int& x) { return static_cast<long>(x); }));
    failed.push_back(when(a, e, c, acc, [](const int&, const int&, const std::string&, long&) {
      ADD_FAILURE() << "ran despite an upstream error";
    }));
    std::vector<std::thread> ts;
    for (std::size_t k = before; k < fulfil.size(); ++k) ts.emplace_back(fulfil_one, fulfil[k]);
    for (auto& t : ts) t.join();
  }
  long expect = 0;
  for (int i = 0; i < kRounds; ++i) {
    expect += i;
    EXPECT_EQ(firsts[i].get(), i);
    EXPECT_THROW(failed[i].get(), std::runtime_error);
  }
  // Each block ran once (the sums add up), in some order on the actor.
  long last = 0;
  for (auto& p : sums) last = std::max(last, p.get());
  EXPECT_EQ(last, expect);
  EXPECT_EQ(when(acc, [](long& t) { return t; }).get(), expect);
}

TEST(Promise, WhenAllAndWhenAny) {
  std::vector<Promise<int>> ps;
  std::vector<Resolver<int>> rs;
  for (int i = 0; i < 5; ++i) {
    auto [p, r] = make_promise<int>();
    ps.push_back(p);
    rs.push_back(std::move(r));
  }
  auto all = when_all(ps);
  auto any = when_any(ps);
  rs[3].set_value(3);
  EXPECT_EQ(any.get(), (std::pair<std::size_t, int>{3, 3}));
  EXPECT_FALSE(all.ready());
  for (int i : {0, 1, 2, 4}) rs[static_cast<std::size_t>(i)].set_value(i);
  EXPECT_EQ(all.get(), (std::vector<int>{0, 1, 2, 3, 4}));

  auto a = make_actor<int>(1);
  auto t = when_all(when(a, [](int& x) { return x; }),
                    when(a, [](int& x) { return std::to_string(x); }));
  EXPECT_EQ(t.get(), std::make_tuple(1, std::string("1")));

  auto [e, er] = make_promise<int>();
  auto all_err = when_all(std::vector<Promise<int>>{e, ready_promise(1)});
  er.set_exception(std::make_exception_ptr(std::runtime_error("one failed")));
  EXPECT_THROW(all_err.get(), std::runtime_error);
  EXPECT_TRUE(when_all(std::vector<Promise<int>>{}).get().empty());
  // An empty handle among them is refused up front, with a typed error.
  EXPECT_THROW(when_all(std::vector<Promise<int>>{ready_promise(1), Promise<int>{}}), Error);
}

// PR6: when_all over promises fulfilled by several threads in a scrambled
// order, some before the join is made, some while it walks them: the
// values arrive in the promises' order, the join fulfils only after the last
// one, and an error anywhere wins over the values (the first by index).
TEST(Promise, WhenAllOverPromisesFulfilledByManyThreadsInAnyOrder) {
  constexpr int kN = 20000, kThreads = 3;
  for (int round = 0; round < 6; ++round) {
    std::vector<Promise<int>> ps;
    std::vector<Resolver<int>> rs;
    for (int i = 0; i < kN; ++i) {
      auto [p, r] = make_promise<int>();
      ps.push_back(p);
      rs.push_back(std::move(r));
    }
    std::vector<int> order(kN);
    for (int i = 0; i < kN; ++i) order[static_cast<std::size_t>(i)] = i;
    std::mt19937 rng(static_cast<unsigned>(round));
    std::shuffle(order.begin(), order.end(), rng);
    const bool with_errors = round % 2 == 1;
    auto fulfil = [&](int i) {
      auto& r = rs[static_cast<std::size_t>(i)];
      if (with_errors && i % 5000 == 1234)
        r.set_exception(std::make_exception_ptr(std::runtime_error(std::to_string(i))));
      else
        r.set_value(i * 3);
    };
    // A tenth before the join exists.
    for (int k = 0; k < kN / 10; ++k) fulfil(order[static_cast<std::size_t>(k)]);
    auto all = when_all(ps);
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t)
      ts.emplace_back([&, t] {
        for (int k = kN / 10 + t; k < kN - 1; k += kThreads)
          fulfil(order[static_cast<std::size_t>(k)]);
      });
    for (auto& t : ts) t.join();
    EXPECT_FALSE(all.ready());  // one promise is still open
    fulfil(order[kN - 1]);
    if (with_errors) {
      try {
        all.get();
        ADD_FAILURE() << "no error";
      } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "1234");  // the first failed promise by index
      }
    } else {
      std::vector<int> got = all.get();
      ASSERT_EQ(got.size(), static_cast<std::size_t>(kN));
      for (int i = 0; i < kN; ++i) ASSERT_EQ(got[static_cast<std::size_t>(i)], i * 3);
    }
  }
  // Void promises from behaviours on many actors, joined inside a behaviour.
  std::vector<Actor<long>> actors;
  for (int i = 0; i < 50; ++i) actors.push_back(make_actor<long>(0));
  auto driver = make_actor<int>(0);
  auto joined = when(driver, [&actors](int&) {
    std::vector<Promise<void>> ps;
    for (int k = 0; k < 10000; ++k)
      ps.push_back(when(actors[static_cast<std::size_t>(k % 50)], [](long& x) { ++x; }));
    return when_all(std::move(ps));
  });
  joined.get();
  for (auto& a : actors) EXPECT_EQ(when(a, [](long& x) { return x; }).get(), 200);
}

TEST(Promise, GetInsideWorkerHelps) {
  sched::Pool pool(1);  // one thread: a blocking get would deadlock
  auto a = make_actor_on<int>(pool, 0);
  auto b = make_actor_on<int>(pool, 0);
  auto r = when(a, [b](int&) { return when(b, [](int& y) { return ++y; }).get() + 10; });
  EXPECT_EQ(r.get(), 11);
}

// Pool PL10: a behaviour's release grants its actor's next behaviour, which
// holds the actor until it runs; the work its promise's continuations then
// schedule (a reply to a client) runs after it, not before.
TEST(Promise, TheActorsNextBehaviourRunsBeforeTheReplysContinuation) {
  sched::Pool pool(1);  // one thread: the order is the pool's choice alone
  auto server = make_actor_on<int>(pool, 0);
  auto client = make_actor_on<int>(pool, 0);
  auto driver = make_actor_on<int>(pool, 0);
  std::vector<char> log;  // only the pool's one thread writes it
  auto done = when(driver, [&](int&) {
    // X runs after this behaviour (the pool has one thread) and queues Y
    // behind itself on the server; Z awaits X's reply on the client.
    auto reply = when(server, [&](int& s) {
      log.push_back('X');
      when(server, [&](int& t) {
        log.push_back('Y');
        ++t;
      });
      return ++s;
    });
    return when(reply, client, [&](const int& r, int& c) {
      log.push_back('Z');
      c += r;
    });
  });
  done.get();
  when(server, [](int&) {}).get();  // after Y
  EXPECT_EQ(std::string(log.begin(), log.end()), "XYZ");
}

TEST(Promise, ManyWaitersOneValue) {
  auto [p, r] = make_promise<int>();
  std::vector<std::thread> ts;
  std::atomic<int> sum{0};
  for (int i = 0; i < 4; ++i) ts.emplace_back([&, p = p] { sum += p.get(); });
  std::vector<Promise<int>> inside;
  for (int i = 0; i < 8; ++i) inside.push_back(p.then([](const int& v) { return v; }));
  r.set_value(3);
  for (auto& t : ts) t.join();
  for (auto& q : inside) sum += q.get();
  EXPECT_EQ(sum.load(), 36);
}

TEST(Promise, FlattensPromisesReturnedByBlocksAndThen) {
  auto a = make_actor<int>(1);
  auto b = make_actor<int>(2);
  // The block returns a promise: when() gives Promise<int>, not Promise<Promise<int>>.
  Promise<int> p = when(a, [b](int& x) { return when(b, [x](int& y) { return x + y; }); });
  EXPECT_EQ(p.get(), 3);
  Promise<void> v = when(a, [b](int&) { return when(b, [](int& y) { ++y; }); });
  v.get();
  EXPECT_EQ(when(b, [](int& y) { return y; }).get(), 3);
  auto [gate, open] = make_promise<int>();
  Promise<int> chained = ready_promise(5).then(
      [gate = gate](const int& v) { return gate.then([v](const int& g) { return v * g; }); });
  open.set_value(7);
  EXPECT_EQ(chained.get(), 35);
  Promise<int> failed = when(a, [](int&) -> Promise<int> { throw std::runtime_error("before"); });
  EXPECT_THROW(failed.get(), std::runtime_error);
  auto [e, er] = make_promise<int>();
  Promise<int> inner_failed = when(a, [e = e](int&) { return e; });
  er.set_exception(std::make_exception_ptr(std::runtime_error("inner")));
  EXPECT_THROW(inner_failed.get(), std::runtime_error);
}

TEST(Promise, EmptyPromiseIsATypedErrorNotACrash) {
  Promise<int> empty;
  EXPECT_FALSE(empty.valid());
  EXPECT_FALSE(empty.ready());
  EXPECT_FALSE(empty.failed());
  auto code_of = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.code();
    }
    return Errc::system;
  };
  EXPECT_EQ(code_of([&] { (void)empty.get(); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { empty.wait(); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { (void)empty.then([](int v) { return v; }); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { (void)when(empty, [](const int& v) { return v; }); }),
            Errc::invalid_argument);
  auto [p, r] = make_promise<int>();
  Promise<int> moved = std::move(p);
  EXPECT_EQ(code_of([&] { (void)p.get(); }),
            Errc::invalid_argument);  // NOLINT(bugprone-use-after-move)
  r.set_value(3);
  EXPECT_EQ(moved.get(), 3);
}
