// tests/shm_objects/queue_test.cpp: shm::Queue (queue.hpp Q1-Q3): order,
// bounds, blocking waits woken by the other side, close, and threads
// producing and consuming at once with every item taken exactly once.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <set>
#include <thread>
#include <vector>

#include "test_heap.hpp"
#include "troupe/shm/queue.hpp"

using namespace std::chrono_literals;
using troupe::shm::Queue;
using troupe::shm::Value;

TEST(Queue, FifoWithinItsCapacity) {
  auto heap = shm_objects_test::make_heap();
  Queue q = Queue::create(heap, "q", 3);
  EXPECT_FALSE(q.try_get());
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(q.try_put(Value(i)));
  EXPECT_FALSE(q.try_put(Value(3)));  // Q1: full
  EXPECT_EQ(q.size(), 3u);
  for (int round = 0; round < 10; ++round) {  // the ring wraps
    EXPECT_EQ(q.try_get()->as_int(), round);
    EXPECT_TRUE(q.try_put(Value(round + 3)));
  }
  Queue again = Queue::open(heap, "q");  // by name, same queue
  EXPECT_EQ(again.capacity(), 3u);
  EXPECT_EQ(again.try_get()->as_int(), 10);
  EXPECT_THROW(Queue::open(heap, "none"), troupe::Error);
}

TEST(Queue, BlockingGetIsWokenByAPut) {
  auto heap = shm_objects_test::make_heap();
  Queue q = Queue::create(heap, "q", 2);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(q.get(50ms));  // times out, empty
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 50ms);
  std::thread producer([&] {
    std::this_thread::sleep_for(20ms);
    q.put(Value("late"), -1ns);
  });
  t0 = std::chrono::steady_clock::now();
  auto v = q.get(5s);
  auto waited = std::chrono::steady_clock::now() - t0;
  producer.join();
  ASSERT_TRUE(v);
  EXPECT_EQ(v->as_string(), "late");
  EXPECT_LT(waited, 90ms);  // woken by the put, not by the 100 ms slice (Q2)
}

TEST(Queue, BlockingPutWaitsForRoomAndCloseEndsIt) {
  auto heap = shm_objects_test::make_heap();
  Queue q = Queue::create(heap, "q", 1);
  EXPECT_TRUE(q.put(Value(1), 1s));
  EXPECT_FALSE(q.put(Value(2), 30ms));  // full: times out
  std::thread consumer([&] {
    std::this_thread::sleep_for(20ms);
    q.get(1s);
  });
  EXPECT_TRUE(q.put(Value(3), 5s));
  consumer.join();
  q.close();
  EXPECT_THROW(q.try_put(Value(4)), troupe::Error);
  EXPECT_EQ(q.get(1s)->as_int(), 3);  // what is left drains
  EXPECT_FALSE(q.get(1s));            // then closed and empty: at once
}

TEST(Queue, ThreadsProduceAndConsumeEachItemOnce) {
  auto heap = shm_objects_test::make_heap();
  Queue q = Queue::create(heap, "q", 16);
  constexpr int kProducers = 3, kItems = 2000;
  std::vector<std::thread> ts;
  std::vector<std::vector<long long>> got(3);
  for (int p = 0; p < kProducers; ++p)
    ts.emplace_back([&, p] {
      for (int i = 0; i < kItems; ++i) ASSERT_TRUE(q.put(Value(p * kItems + i), 10s));
    });
  for (int c = 0; c < 3; ++c)
    ts.emplace_back([&, c] {
      while (auto v = q.get(300ms)) got[c].push_back(v->as_int());
    });
  for (auto& t : ts) t.join();
  std::multiset<long long> all;
  for (auto& g : got) all.insert(g.begin(), g.end());
  ASSERT_EQ(all.size(), static_cast<std::size_t>(kProducers * kItems));
  EXPECT_EQ(std::set<long long>(all.begin(), all.end()).size(), all.size());  // none twice
  for (auto& g : got)  // per producer, a consumer sees items in put order
    for (int p = 0; p < kProducers; ++p) {
      long long last = -1;
      for (long long v : g)
        if (v / kItems == p) {
          EXPECT_GT(v, last);
          last = v;
        }
    }
}
