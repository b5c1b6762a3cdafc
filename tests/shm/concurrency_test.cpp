// tests/shm/concurrency_test.cpp: many threads of one process, and several
// processes, allocating and freeing at once (no kills): blocks handed between
// threads, published blocks freed by another process, exact accounting after.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <troupe/shm/heap.hpp>

#include "shm_test_util.hpp"

using troupe::shm::CreateOptions;
using troupe::shm::Heap;
using troupe::shm::Offset;
using namespace shm_test;

namespace {

#if defined(__SANITIZE_THREAD__)
constexpr int kRounds = 3000;
#else
constexpr int kRounds = 30000;
#endif

CreateOptions heap_options() {
  CreateOptions o;
  o.max_size = 128 << 20;
  o.initial_size = 64 << 10;
  o.slots = 32;
  return o;
}

TEST(ShmConcurrency, ThreadsHandBlocksToEachOther) {
  Heap h = Heap::create(heap_options());
  constexpr int kT = 4;
  struct Mailbox {
    std::mutex mu;
    std::vector<std::pair<Offset, std::uint64_t>> items;
  } box[kT];
  std::atomic<int> bad{0};
  std::atomic<int> finished{0};
  auto drain = [&](int t, std::vector<std::pair<Offset, std::uint64_t>>& mine) {
    {
      std::lock_guard<std::mutex> lk(box[t].mu);
      mine.insert(mine.end(), box[t].items.begin(), box[t].items.end());
      box[t].items.clear();
    }
    for (auto [b, want] : mine) {
      std::uint64_t got;
      std::memcpy(&got, h.ptr(b), 8);
      if (got != want) ++bad;
      h.free(b);  // blocks of another thread's slot, or published
    }
    mine.clear();
  };
  auto body = [&](int t) {
    std::mt19937 rng(static_cast<unsigned>(t));
    std::vector<std::pair<Offset, std::uint64_t>> mine;
    for (int i = 0; i < kRounds; ++i) {
      std::size_t size = rng() % 8 == 0 ? 9000 + rng() % 20000 : 16 + rng() % 2000;
      Offset o = h.allocate(size);
      std::uint64_t tag = (std::uint64_t(t) << 32) | static_cast<std::uint64_t>(i);
      std::memcpy(h.ptr(o), &tag, 8);
      if (rng() % 4 == 0) h.publish(o);
      if (rng() % 2) {
        Mailbox& next = box[(t + 1) % kT];
        // A next thread the OS keeps off the cores (ctest -j2 on 2 cores)
        // must not let its mailbox fill the heap: wait for it, emptying our
        // own meanwhile (so a ring of waiting threads still drains).
        for (;;) {
          {
            std::lock_guard<std::mutex> lk(next.mu);
            if (next.items.size() < 512) {
              next.items.emplace_back(o, tag);  // to the next thread
              break;
            }
          }
          drain(t, mine);
          std::this_thread::yield();
        }
      } else {
        mine.emplace_back(o, tag);
      }
      if (mine.size() > 64) drain(t, mine);
    }
    // Keep emptying our mailbox until every sender is done: the live set
    // stays bounded whatever the schedule.
    drain(t, mine);
    finished.fetch_add(1);
    while (finished.load() < kT) {
      drain(t, mine);
      std::this_thread::yield();
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kT; ++t) threads.emplace_back(body, t);
  for (auto& th : threads) th.join();
  for (auto& b : box)
    for (auto [o, want] : b.items) {
      std::uint64_t got;
      std::memcpy(&got, h.ptr(o), 8);
      if (got != want) ++bad;
      h.free(o);
    }
  EXPECT_EQ(bad.load(), 0) << "a block was handed out twice";
  for (auto& p : h.verify()) ADD_FAILURE() << p;
  auto s = h.stats();
  EXPECT_EQ(s.published, 0u);
  EXPECT_EQ(s.free_bytes() + s.live_bytes() + s.overhead, s.committed);
}

TEST(ShmConcurrency, ProcessesAndThreadsWithoutKills) {
  Heap h = Heap::create(heap_options());
  Offset table_off = h.allocate(sizeof(Table));
  auto* table = h.ptr<Table>(table_off);
  std::memset(static_cast<void*>(table), 0, sizeof(Table));
  h.publish(table_off);
  h.set_root("shadow", table_off);
  pid_t pids[kWorkers];
  for (unsigned w = 0; w < kWorkers; ++w) {
    pids[w] = spawn_worker({"stress", h.name(), std::to_string(w), std::to_string(w + 1)});
    ASSERT_GT(pids[w], 0);
  }
  // Meanwhile this process allocates too.
  std::vector<Offset> mine;
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
  std::mt19937 rng(5);
  while (std::chrono::steady_clock::now() < until) {
    mine.push_back(h.allocate(16 + rng() % 5000));
    if (mine.size() > 100) {
      for (Offset o : mine) h.free(o);
      mine.clear();
    }
  }
  for (Offset o : mine) h.free(o);
  table->stop.store(1);
  std::uint64_t published = 0;
  for (unsigned w = 0; w < kWorkers; ++w) {
    int status = wait_status(pids[w]);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "worker " << w << ": " << status;
    EXPECT_GT(table->ops[w].load(), 100u);
    for (auto& per_thread : table->e[w])
      for (auto& e : per_thread) {
        std::uint64_t x = e.word.load();
        EXPECT_TRUE(x == 0 || (x & 3) == kLive) << x;
        if (x) published += h.usable_size(x & ~std::uint64_t{15});
      }
  }
  EXPECT_EQ(table->violations.load(), 0u);
  h.flush_thread_cache();
  for (auto& p : h.verify()) ADD_FAILURE() << p;
  auto s = h.stats();
  EXPECT_EQ(s.unpublished, 0u);
  EXPECT_EQ(s.cached, 0u);
  EXPECT_EQ(s.published, published + h.usable_size(table_off));
  EXPECT_EQ(s.free_bytes() + s.live_bytes() + s.overhead, s.committed);
}

}  // namespace
