// tests/core/backpressure_test.cpp: flooded actors push back
// (troupe/backpressure.hpp, BP1-BP7 of troupe/detail/cown.hpp).
//   - 4 producer actors flood 1 slow consumer with 1 KiB messages: the
//     consumer's queue stays near its limit, memory stays under a stated
//     bound (unbounded, the same run queues 200 MB), every message arrives,
//     in order per sender, and producers were really paused.
//   - outside threads block (or get Error(overloaded), nothing sent).
//   - cycles cannot deadlock: actors that flood each other, flood
//     themselves, and behaviours on two actors queued on a flooded one all
//     finish; also under many seeded interleavings (explore).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <troupe/backpressure.hpp>
#include <troupe/test/explore.hpp>
#include <troupe/troupe.hpp>
#include <vector>

#include "../sanitizers.hpp"

using namespace troupe;

namespace {

using troupe_tests::kSanitized;

std::size_t rss_bytes() {
  std::ifstream f("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

// Restores the process's settings after a test.
struct Settings {
  Backpressure before = backpressure();
  explicit Settings(const Backpressure& b) { set_backpressure(b); }
  ~Settings() { set_backpressure(before); }
};

struct Consumer {
  std::vector<long> next;  // per producer: the sequence number expected
  long received = 0;
  long out_of_order = 0;
  std::uint32_t max_backlog = 0;
  std::size_t max_rss = 0;
  std::uint64_t checksum = 0;
};

void spin_for(std::chrono::nanoseconds d) {
  auto end = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < end) {
  }
}

// Holds `a` until `met()` (at most 5 s), e.g. until a sender met the full
// queue: the test's senders then meet it however fast the consumer is (a
// sanitizer slows the senders more than a consumer that spins on the clock).
template <class T, class F>
void gate(const Actor<T>& a, F met) {
  when(a, [met](T&) {
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!met() && std::chrono::steady_clock::now() < end) std::this_thread::yield();
  });
}
std::uint64_t overloads() {
  auto s = backpressure_stats();
  return s.paused + s.skipped + s.blocked + s.refused;
}

struct Producer {
  int id;
  long sent = 0;
};

// A producer sends one message per behaviour and then its own next
// behaviour, as a user's actor loop does.
void produce(Actor<Producer> p, Actor<Consumer> c, long total) {
  when(p, [p, c, total](Producer& me) {
    std::string payload(1024, static_cast<char>('a' + me.id));
    const int id = me.id;
    const long seq = me.sent++;
    when(c, [c, id, seq, payload = std::move(payload)](Consumer& k) {
      if (k.next[static_cast<std::size_t>(id)] != seq) ++k.out_of_order;
      k.next[static_cast<std::size_t>(id)] = seq + 1;
      ++k.received;
      k.checksum += static_cast<unsigned char>(payload[0]) + payload.size();
      k.max_backlog = std::max(k.max_backlog, c.backlog());
      if (k.received % 1024 == 0) k.max_rss = std::max(k.max_rss, rss_bytes());
      spin_for(std::chrono::microseconds(2));  // slower than the producers
    });
    if (me.sent < total) produce(p, c, total);
  });
}

TEST(Backpressure, FourProducersIntoOneSlowConsumer) {
  constexpr std::uint32_t kLimit = 2000;
  const long per_producer = kSanitized ? 10'000 : 50'000;
  Settings s({});
  // Unbounded, 4 x 50 000 messages of 1 KiB (plus their behaviours) would
  // queue ~200 MB: the producers are far faster than the consumer. Bounded
  // at 2000 the queue holds ~2 MB; the bound below leaves room for the
  // allocator's caches and the sanitizers' shadow memory.
  const std::size_t kBound = kSanitized ? 160u << 20 : 48u << 20;
  auto consumer = make_actor<Consumer>();
  consumer.set_mailbox_limit(kLimit);
  when(consumer, [](Consumer& k) { k.next.assign(4, 0); }).get();
  const std::size_t rss0 = rss_bytes();
  const auto stats0 = backpressure_stats();
  std::vector<Actor<Producer>> producers;
  for (int i = 0; i < 4; ++i) producers.push_back(make_actor<Producer>(Producer{i}));
  gate(consumer, [&] { return backpressure_stats().paused > stats0.paused; });
  for (auto& p : producers) produce(p, consumer, per_producer);
  wait_idle();
  auto k = when(read(consumer), [](const Consumer& k) { return k; }).get();
  const auto stats = backpressure_stats();
  std::printf(
      "  received %ld, max backlog %u (limit %u), RSS +%zu KiB (bound %zu KiB), "
      "paused %llu, resumed early %llu, skipped %llu\n",
      k.received, k.max_backlog, kLimit, (k.max_rss - std::min(k.max_rss, rss0)) >> 10,
      kBound >> 10, static_cast<unsigned long long>(stats.paused - stats0.paused),
      static_cast<unsigned long long>(stats.resumed_early - stats0.resumed_early),
      static_cast<unsigned long long>(stats.skipped - stats0.skipped));
  EXPECT_EQ(k.received, 4 * per_producer);
  EXPECT_EQ(k.out_of_order, 0);
  for (long n : k.next) EXPECT_EQ(n, per_producer);
  std::uint64_t want = 0;
  for (int i = 0; i < 4; ++i) want += static_cast<std::uint64_t>(per_producer) * ('a' + i + 1024);
  EXPECT_EQ(k.checksum, want);
  EXPECT_GT(stats.paused, stats0.paused) << "the producers were never paused";
  // Each producer sends one message per behaviour, then is paused: the
  // queue passes the limit by at most a few messages per producer.
  EXPECT_LE(k.max_backlog, kLimit + 64);
  EXPECT_LT(k.max_rss - std::min(k.max_rss, rss0), kBound);
}

TEST(Backpressure, OutsideThreadsBlockUntilItDrains) {
  constexpr std::uint32_t kLimit = 500;
  const long per_thread = kSanitized ? 3'000 : 20'000;
  Settings s({});
  auto consumer = make_actor<Consumer>();
  consumer.set_mailbox_limit(kLimit);
  when(consumer, [](Consumer& k) { k.next.assign(4, 0); }).get();
  const auto stats0 = backpressure_stats();
  gate(consumer, [&] { return backpressure_stats().blocked > stats0.blocked; });
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (long seq = 0; seq < per_thread; ++seq)
        when(consumer, [consumer, t, seq](Consumer& k) {
          if (k.next[static_cast<std::size_t>(t)] != seq) ++k.out_of_order;
          k.next[static_cast<std::size_t>(t)] = seq + 1;
          ++k.received;
          k.max_backlog = std::max(k.max_backlog, consumer.backlog());
          spin_for(std::chrono::microseconds(1));
        });
    });
  for (auto& t : ts) t.join();
  wait_idle();
  auto k = when(read(consumer), [](const Consumer& k) { return k; }).get();
  EXPECT_EQ(k.received, 4 * per_thread);
  EXPECT_EQ(k.out_of_order, 0);
  EXPECT_GT(backpressure_stats().blocked, stats0.blocked);
  // Each thread may pass its check just under the limit and send one past
  // it; the gate's behaviour and the consumer's own running one count too.
  EXPECT_LE(k.max_backlog, kLimit + 8);
}

TEST(Backpressure, OutsideThreadsCanFailInstead) {
  Backpressure b;
  b.outside = Overload::fail;
  Settings s(b);
  auto consumer = make_actor<Consumer>();
  consumer.set_mailbox_limit(10);
  std::atomic<bool> go{false};
  std::atomic<long> ran{0};
  // The consumer is busy until `go`: its queue fills up.
  when(consumer, [&](Consumer&) {
    while (!go.load()) std::this_thread::yield();
  });
  long sent = 0, refused = 0;
  for (int i = 0; i < 50; ++i) {
    try {
      when(consumer, [&](Consumer&) { ran.fetch_add(1); });
      ++sent;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::overloaded) << e.what();
      ++refused;
    }
  }
  go.store(true);
  wait_idle();
  EXPECT_GE(sent, 9);  // the limit counts the busy behaviour too
  EXPECT_LE(sent, 10);
  EXPECT_EQ(refused, 50 - sent);
  EXPECT_EQ(ran.load(), sent);  // a refused send sent nothing
}

TEST(Backpressure, ABlockedOutsideThreadGivesUpWithAnError) {
  Backpressure b;
  b.block_for = std::chrono::milliseconds(200);
  Settings s(b);
  auto consumer = make_actor<Consumer>();
  consumer.set_mailbox_limit(4);
  std::atomic<bool> go{false};
  // The consumer waits for this very thread: blocking forever would hang.
  when(consumer, [&](Consumer&) {
    while (!go.load()) std::this_thread::yield();
  });
  auto t0 = std::chrono::steady_clock::now();
  bool refused = false;
  for (int i = 0; i < 10 && !refused; ++i) {
    try {
      when(consumer, [](Consumer&) {});
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::overloaded);
      EXPECT_NE(std::string(e.what()).find("200 ms"), std::string::npos) << e.what();
      refused = true;
    }
  }
  EXPECT_TRUE(refused);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(200));
  go.store(true);
  wait_idle();
}

// Actors that flood each other and themselves, and behaviours on two of them
// queued on a flooded one: BP5 keeps every pause from closing a cycle.
struct Node {
  long handled = 0;
};

struct Count {
  std::atomic<long> sent{0}, handled{0};
};

void flood(Actor<Node> from, Actor<Node> to, Actor<Node> third,
           std::shared_ptr<std::atomic<long>> budget, std::shared_ptr<Count> n) {
  if (budget->fetch_sub(1) <= 0) return;
  n->sent.fetch_add(1);
  when(from, [from, to, third, budget, n](Node& x) {
    ++x.handled;
    n->handled.fetch_add(1);
    flood(to, from, third, budget, n);  // to the other (may be flooded)
    flood(from, to, third, budget, n);  // to itself (never paused on itself)
    if (x.handled % 7 == 0) {           // on two actors, one of them maybe flooded
      n->sent.fetch_add(1);
      when(from, third, [n](Node& a, Node& b) {
        ++a.handled;
        ++b.handled;
        n->handled.fetch_add(1);
      });
    }
  });
}

// Every behaviour sent ran: the pair (sent, handled).
std::pair<long, long> run_cycle(long messages, std::uint32_t limit) {
  auto a = make_actor<Node>(), b = make_actor<Node>(), c = make_actor<Node>();
  for (auto* x : {&a, &b, &c}) x->set_mailbox_limit(limit);
  auto budget = std::make_shared<std::atomic<long>>(messages);
  auto n = std::make_shared<Count>();
  flood(a, b, c, budget, n);
  flood(b, a, c, budget, n);
  flood(c, a, b, budget, n);
  wait_idle();
  return {n->sent.load(), n->handled.load()};
}

// BP5's waits and resumes in the same program: P (on b) floods t and is
// paused; a continuation on P's promise needs d, which Y (on d and a)
// queues on before it meets a held-paused cown; O (on a) get()s a behaviour
// queued on b behind P; M (on t and a) is queued on the flooded t.
std::pair<long, long> run_waits(long rounds, std::uint32_t limit) {
  auto t = make_actor<Node>(), a = make_actor<Node>(), b = make_actor<Node>(),
       d = make_actor<Node>();
  t.set_mailbox_limit(limit);
  auto n = std::make_shared<Count>();
  auto one = [n] { n->handled.fetch_add(1); };
  for (long r = 0; r < rounds; ++r) {
    n->sent.fetch_add(5);
    auto p = when(b, [t, n, one](Node&) {
      one();
      for (int i = 0; i < 3; ++i) {
        n->sent.fetch_add(1);
        when(t, [one](Node&) { one(); });
      }
    });
    when(p, d, [one](Node&) { one(); });
    when(d, a, [one](Node&, Node&) { one(); });
    when(a, [b, n, one](Node&) {
      one();
      n->sent.fetch_add(1);
      when(b, [one](Node&) { one(); }).get();
    });
    when(t, a, [one](Node&, Node&) { one(); });
  }
  wait_idle();
  return {n->sent.load(), n->handled.load()};
}

TEST(Backpressure, FloodingCyclesNeverDeadlock) {
  Settings s({});
  const auto stats0 = backpressure_stats();
  // A deadlock would hang here: ctest's timeout fails it.
  auto [sent, handled] = run_cycle(kSanitized ? 20'000 : 200'000, 8);
  EXPECT_EQ(handled, sent);
  auto [sent2, handled2] = run_waits(kSanitized ? 300 : 3'000, 4);
  EXPECT_EQ(handled2, sent2);
  const auto stats = backpressure_stats();
  std::printf("  paused %llu, resumed early %llu, skipped %llu\n",
              static_cast<unsigned long long>(stats.paused - stats0.paused),
              static_cast<unsigned long long>(stats.resumed_early - stats0.resumed_early),
              static_cast<unsigned long long>(stats.skipped - stats0.skipped));
  EXPECT_GT(stats.paused + stats.skipped, stats0.paused + stats0.skipped);
}

// Producers (unbounded) flood two bounded actors that also flood each
// other, and send behaviours on (themselves, their target): such a
// behaviour queued on the target needs the producer a pause holds (BP5's
// wanted()). Every message sent is handled.
struct Prod {
  long sent = 0;
};

void prod_loop(Actor<Prod> p, Actor<Node> t, Actor<Node> u, std::shared_ptr<Count> n, long total) {
  when(p, [p, t, u, n, total](Prod& me) {
    if (me.sent++ == total) return;
    n->sent.fetch_add(1);
    when(t, [n](Node& x) {
      ++x.handled;
      n->handled.fetch_add(1);
    });
    if (me.sent % 5 == 0) {
      n->sent.fetch_add(1);
      when(p, t, [n](Prod&, Node& x) {
        ++x.handled;
        n->handled.fetch_add(1);
      });
    }
    if (me.sent % 3 == 0) {
      n->sent.fetch_add(2);
      when(t, [u, n](Node&) {
        n->handled.fetch_add(1);
        when(u, [n](Node& x) {  // t floods u (which p2 floods)
          ++x.handled;
          n->handled.fetch_add(1);
        });
      });
    }
    prod_loop(p, t, u, n, total);
  });
}

std::pair<long, long> run_producers(long per_producer, std::uint32_t limit, bool gated) {
  auto t = make_actor<Node>(), u = make_actor<Node>();
  t.set_mailbox_limit(limit);
  u.set_mailbox_limit(limit);
  auto n = std::make_shared<Count>();
  auto p1 = make_actor<Prod>(), p2 = make_actor<Prod>();
  if (gated) {  // not under explore: its one thread would spin in the gate
    const std::uint64_t before = overloads();
    gate(t, [before] { return overloads() > before; });
  }
  prod_loop(p1, t, u, n, per_producer);
  prod_loop(p2, u, t, n, per_producer);
  wait_idle();
  return {n->sent.load(), n->handled.load()};
}

TEST(Backpressure, ProducersWithTwoActorBehavioursNeverDeadlock) {
  Settings s({});
  const auto stats0 = backpressure_stats();
  auto [sent, handled] = run_producers(kSanitized ? 5'000 : 50'000, 16, true);
  EXPECT_EQ(handled, sent);
  const auto stats = backpressure_stats();
  std::printf("  sent %ld, paused %llu, resumed early %llu, skipped %llu\n", sent,
              static_cast<unsigned long long>(stats.paused - stats0.paused),
              static_cast<unsigned long long>(stats.resumed_early - stats0.resumed_early),
              static_cast<unsigned long long>(stats.skipped - stats0.skipped));
  // The overload was met (a pause, or one refused by BP5: the producers'
  // own two-actor behaviours queued behind them often forbid it).
  EXPECT_GT(stats.paused + stats.skipped, stats0.paused + stats0.skipped);
}

TEST(Backpressure, FloodingCyclesUnderExplore) {
  Settings s({});
  const auto stats0 = backpressure_stats();
  auto report = test::explore(kSanitized ? 50 : 300, [] {
    for (auto [sent, handled] : {run_cycle(300, 3), run_producers(100, 4, false), run_waits(20, 2)})
      if (sent != handled)
        throw std::logic_error(fmt::format("sent {}, handled {}", sent, handled));
  });
  EXPECT_TRUE(report) << report.failure;
  EXPECT_GT(backpressure_stats().paused, stats0.paused);
}

}  // namespace
