// Unit and stress tests of the lock-free pieces under the pool: the
// Chase-Lev deque (every item taken exactly once under thieves) and the MPSC
// injection queue (every item popped exactly once under many producers).
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "troupe/detail/chase_lev.hpp"
#include "troupe/detail/mpsc_queue.hpp"
#include "troupe/sched/scheduler.hpp"

using troupe::detail::ChaseLevDeque;
using troupe::detail::MpscQueue;

TEST(ChaseLev, OwnerIsLifoThiefIsFifo) {
  ChaseLevDeque<int*> d(4);
  int v[10];
  for (auto& x : v) d.push(&x);  // grows past 4
  EXPECT_EQ(d.steal(), &v[0]);
  EXPECT_EQ(d.take(), &v[9]);
  EXPECT_EQ(d.take(), &v[8]);
  EXPECT_EQ(d.steal(), &v[1]);
}

TEST(ChaseLev, EveryItemExactlyOnceUnderThieves) {
  constexpr int kItems = 200000;
  ChaseLevDeque<int*> d(8);
  std::vector<int> items(kItems);
  std::vector<std::atomic<int>> seen(kItems);
  std::atomic<bool> done{false};
  std::atomic<int> got{0};
  auto mark = [&](int* p) {
    seen[static_cast<std::size_t>(p - items.data())].fetch_add(1, std::memory_order_relaxed);
    got.fetch_add(1, std::memory_order_relaxed);
  };
  std::vector<std::thread> thieves;
  for (int t = 0; t < 3; ++t)
    thieves.emplace_back([&] {
      while (!done.load(std::memory_order_acquire) || !d.empty_hint())
        if (int* p = d.steal()) mark(p);
    });
  for (int i = 0; i < kItems; ++i) {
    d.push(&items[static_cast<std::size_t>(i)]);
    if (i % 3 == 0)
      if (int* p = d.take()) mark(p);
  }
  while (int* p = d.take()) mark(p);
  done.store(true, std::memory_order_release);
  for (auto& t : thieves) t.join();
  EXPECT_EQ(got.load(), kItems);
  for (auto& s : seen) ASSERT_EQ(s.load(), 1);
}

struct Node {
  std::atomic<Node*> next{nullptr};
  int producer = 0, seq = 0;
};

TEST(Mpsc, EveryItemOnceAndPerProducerOrder) {
  constexpr int kProducers = 4, kPer = 50000;
  MpscQueue<Node> q;
  std::vector<std::vector<Node>> nodes(kProducers);
  for (auto& v : nodes) v = std::vector<Node>(kPer);
  std::vector<std::thread> ps;
  for (int p = 0; p < kProducers; ++p)
    ps.emplace_back([&, p] {
      for (int i = 0; i < kPer; ++i) {
        auto& n = nodes[static_cast<std::size_t>(p)][static_cast<std::size_t>(i)];
        n.producer = p;
        n.seq = i;
        q.push(&n);
      }
    });
  std::vector<int> last(kProducers, -1);
  int total = 0;
  while (total < kProducers * kPer) {
    if (Node* n = q.try_pop()) {
      ASSERT_EQ(n->seq, last[static_cast<std::size_t>(n->producer)] + 1);
      last[static_cast<std::size_t>(n->producer)] = n->seq;
      ++total;
    }
  }
  for (auto& t : ps) t.join();
  EXPECT_EQ(q.try_pop(), nullptr);
}
