// tests/shm/queue_test.cpp: shm::Queue (queue.hpp Q1-Q5): order,
// bounds, blocking waits woken by the other side, close, and threads
// producing and consuming at once with every item taken exactly once, and
// in-place gets that hand the item's blob to the taker; a scribbled-over
// queue record is a typed error when opened (Q6).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

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
  auto heap = objects_test_heap::make_heap();
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
  auto heap = objects_test_heap::make_heap();
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
  auto heap = objects_test_heap::make_heap();
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
  auto heap = objects_test_heap::make_heap();
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

// Q5, tx.hpp T11: an in-place get hands the item's blob to the taker, who
// reads it after later puts reuse the slot and frees it; a taker that dies
// holding it loses nothing for good: recovery frees the blob.
TEST(Queue, InPlaceGetHandsTheBlobToTheTaker) {
  auto heap = objects_test_heap::make_heap();
  auto& txh = troupe::shm::TxHeap::attach(heap);
  auto used = [&] { return heap.stats().published - txh.tx_heap_bytes(); };  // shared data
  Queue q = Queue::create(heap, "q", 2);
  const std::size_t empty = used();
  const std::string big(1000, 'b');
  ASSERT_TRUE(q.try_put(Value::bytes_ref(big)));  // borrowed: copied once, into the heap
  ASSERT_TRUE(q.try_put(Value::bytes("tiny")));
  auto got = q.try_get_in_place();
  ASSERT_TRUE(got && got->block);
  EXPECT_EQ(got->bytes, big);
  EXPECT_EQ(heap.owner(got->block).kind, troupe::shm::Owner::slot);  // ours, not shared
  auto small = q.try_get_in_place();  // inline in its slot: a value
  ASSERT_TRUE(small && !small->block);
  EXPECT_EQ(small->value.as_bytes(), "tiny");
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(q.try_put(Value::bytes(std::string(500, 'x'))));
  EXPECT_EQ(got->bytes, big);  // the slot was reused, the blob is the taker's
  heap.free(got->block);
  while (q.try_get()) {
  }
  EXPECT_EQ(used(), empty);
  EXPECT_THROW(troupe::shm::atomically(heap, [&](troupe::shm::Tx&) { q.try_get_in_place(); }),
               troupe::Error);  // inside a transaction: refused

  ASSERT_TRUE(q.try_put(Value::bytes(big)));
  pid_t pid = fork();
  if (pid == 0) {  // H2: the child opens the heap again, takes the item and dies
    auto child = troupe::shm::Heap::open(heap.name());
    troupe::shm::TxHeap::attach(child);
    auto item = Queue::open(child, "q").try_get_in_place();
    _exit(item && item->bytes == big ? 9 : 1);  // without freeing it
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 9);
  EXPECT_EQ(q.size(), 0u);
  const std::size_t live = heap.stats().live_bytes();  // the dead taker's blob among them
  heap.recover();
  EXPECT_LE(heap.stats().live_bytes() + big.size(), live);  // freed by recovery
  EXPECT_EQ(used(), empty);
}

TEST(Queue, AQueueRecordScribbledOverIsBadSegmentWhenOpened) {
  using troupe::shm::Tx;
  auto heap = objects_test_heap::make_heap();
  Queue::create(heap, "q", 4);
  auto forge = [&](const char* field, long long v) {
    troupe::shm::atomically(heap, [&](Tx& tx) {
      troupe::shm::get_root(tx, "queue:q").as_record().set(tx, field, Value(v));
    });
  };
  auto expect_bad = [&](const char* what) {
    try {
      Queue::open(heap, "q");
      ADD_FAILURE() << what << ": opened";
    } catch (const troupe::Error& e) {
      EXPECT_EQ(e.code(), troupe::Errc::bad_segment) << what << ": " << e.what();
    }
  };
  forge("capacity", 0);  // a modulus of 0
  expect_bad("capacity 0");
  forge("capacity", 5);  // more cells than the items list has
  expect_bad("capacity past the items");
  forge("capacity", 4);
  EXPECT_NO_THROW(Queue::open(heap, "q"));
  forge("sync", 0);
  expect_bad("null futex block");
  forge("sync", 3);
  expect_bad("misaligned futex block");
  forge("sync", 1LL << 40);
  expect_bad("futex block past the heap");
}
