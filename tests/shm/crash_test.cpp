// tests/shm/crash_test.cpp: kill -9 at any point. Every named fault point
// leaves a heap that recovery makes exact again; then N processes x M threads
// allocate/free with a shadow table (shm_test_util.hpp) while the parent
// kills them at random (and they kill themselves at random fault points);
// after reclaim, live + free bytes equal the total, no block is owned twice
// and nothing leaks.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <troupe/shm/heap.hpp>

#include "shm/fault.hpp"
#include "shm_test_util.hpp"

using troupe::Error;
using troupe::shm::CreateOptions;
using troupe::shm::Heap;
using troupe::shm::Offset;
using troupe::shm::Owner;
using namespace shm_test;

namespace {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int kTargetDeaths = 120;  // sanitized processes run slower
#else
constexpr int kTargetDeaths = 240;
#endif

CreateOptions crash_heap() {
  CreateOptions o;
  o.max_size = 128 << 20;
  o.initial_size = 64 << 10;
  o.slots = 48;
  return o;
}

// At quiescence, after recovery: the accounting is exact and sound.
void expect_exact(Heap& h, std::size_t published_expected) {
  for (auto& p : h.verify()) ADD_FAILURE() << p;
  h.flush_thread_cache();
  auto s = h.stats();
  EXPECT_EQ(s.free_bytes() + s.live_bytes() + s.overhead, s.committed);
  EXPECT_EQ(s.unpublished, 0u) << "a dead slot's blocks were not reclaimed";
  EXPECT_EQ(s.cached, 0u);
  EXPECT_EQ(s.published, published_expected);
}

TEST(ShmCrash, EveryFaultPointLeavesARecoverableHeap) {
  std::mt19937 rng(11);
  for (std::string_view point : troupe::shm::detail::kFaultPoints) {
    SCOPED_TRACE(std::string(point));
    Heap h = Heap::create(crash_heap());
    if (point.rfind("recover.", 0) == 0) {  // needs a dead slot to recover
      pid_t holder = spawn_worker({"hold", h.name(), "200", "0"});
      for (int i = 0; i < 5000 && !h.root("ready"); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      ::kill(holder, SIGKILL);
      wait_status(holder);
    }
    bool frequent = point == "alloc.after_pop" || point == "free.after_take" ||
                    point == "publish.after" || point == "alloc.refill.after_claim";
    std::string fault =
        fmt::format("TROUPE_SHM_FAULT={}@{}", point, frequent ? 1 + rng() % 300 : 1);
    auto t0 = std::chrono::steady_clock::now();
    pid_t pid = spawn_worker({"churn", h.name(), "3"}, {fault});
    ASSERT_GT(pid, 0);
    int status = wait_status(pid);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "fault point never reached (status " << status << ")";
    std::printf("%-26s killed after %lld ms\n", std::string(point).c_str(),
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::steady_clock::now() - t0)
                                           .count()));
    auto rep = h.recover();
    EXPECT_GE(rep.slots.size(), 1u);
    // churn leaves its published blocks behind: count them as live.
    auto s = h.stats();
    expect_exact(h, s.published);
  }
}

void reconcile(Heap& h, Table* table, unsigned w, int& violations) {
  for (unsigned t = 0; t < kThreads; ++t) {
    for (unsigned i = 0; i < kEntries; ++i) {
      Entry& e = table->e[w][t][i];
      std::uint64_t x = e.word.load();
      if (x == 0) continue;
      Offset off = x & ~std::uint64_t{15};
      bool ours = false;
      try {
        if (h.owner(off).kind == Owner::published) {
          std::uint64_t id;
          std::memcpy(&id, h.ptr(off), 8);
          ours = id == e.id.load();
        }
      } catch (const Error&) {
        // no longer a block at all: freed and its superblock retired
      }
      if ((x & 3) == kLive && !ours) {
        ++violations;
        ADD_FAILURE() << "live entry " << w << "/" << t << "/" << i << " lost its block " << off;
      }
      if (ours) h.free(off);
      e.word.store(0);
    }
  }
}

TEST(ShmCrash, RandomKillsKeepTheHeapExact) {
  Heap h = Heap::create(crash_heap());
  Offset table_off = h.allocate(sizeof(Table));
  auto* table = h.ptr<Table>(table_off);
  std::memset(static_cast<void*>(table), 0, sizeof(Table));
  h.publish(table_off);
  h.set_root("shadow", table_off);

  std::mt19937 rng(2024);
  pid_t pids[kWorkers];
  bool killed[kWorkers] = {};
  std::uint64_t ops_at_spawn[kWorkers] = {};
  std::string fault[kWorkers];
  std::map<std::string, int> fired;
  int deaths = 0, fault_deaths = 0, violations = 0;
  unsigned long seed = 1;
  auto spawn = [&](unsigned w) {
    std::vector<std::string> env;
    fault[w].clear();
    if (rng() % 2) {
      const auto& points = troupe::shm::detail::kFaultPoints;
      std::string_view p = points[rng() % std::size(points)];
      bool frequent = p == "alloc.after_pop" || p == "free.after_take" || p == "publish.after";
      fault[w] = std::string(p);
      env.push_back(fmt::format("TROUPE_SHM_FAULT={}@{}", p, 1 + rng() % (frequent ? 400 : 3)));
    }
    killed[w] = false;
    ops_at_spawn[w] = table->ops[w].load();
    pids[w] = spawn_worker({"stress", h.name(), std::to_string(w), std::to_string(seed++)}, env);
    ASSERT_GT(pids[w], 0);
  };
  for (unsigned w = 0; w < kWorkers; ++w) spawn(w);
  auto handle = [&](unsigned w, int status) {
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "worker " << w << " ended with status " << status << " (3: error on its stderr)";
    if (!killed[w]) {
      ++fault_deaths;
      ++fired[fault[w]];
    }
    ++deaths;
    if (rng() % 2) h.recover();  // else a new worker recovers it when it opens
    reconcile(h, table, w, violations);
  };
  auto start = std::chrono::steady_clock::now();
  while (deaths < kTargetDeaths) {
    std::this_thread::sleep_for(std::chrono::microseconds(500 + rng() % 8000));
    unsigned victim = rng() % kWorkers;
    // Mostly kill workers inside their loop (so fault points get their
    // chance too); sometimes one still starting up (opening, recovering).
    // A worker armed with a fault point is spared three times in four, so
    // it usually reaches its point even where it runs slowly (sanitizers).
    bool started = table->ops[victim].load() > ops_at_spawn[victim];
    bool spare = !fault[victim].empty() && rng() % 4 != 0;
    if (!killed[victim] && !spare && (started || rng() % 5 == 0)) {
      killed[victim] = true;
      ::kill(pids[victim], SIGKILL);
    }
    for (unsigned w = 0; w < kWorkers; ++w) {
      int status = 0;
      if (::waitpid(pids[w], &status, killed[w] ? 0 : WNOHANG) == pids[w]) {
        handle(w, status);
        if (::testing::Test::HasFatalFailure()) return;
        spawn(w);
      }
    }
    ASSERT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(100));
  }
  table->stop.store(1);
  for (unsigned w = 0; w < kWorkers; ++w) {
    int status = wait_status(pids[w]);
    bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    bool fault_kill = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    EXPECT_TRUE(clean || fault_kill) << "worker " << w << " status " << status;
    reconcile(h, table, w, violations);
  }
  h.recover();
  std::uint64_t ops = 0;
  for (auto& o : table->ops) ops += o.load();
  RecordProperty("deaths", deaths);
  RecordProperty("fault_deaths", fault_deaths);
  std::printf("deaths %d (by fault points %d, %zu distinct), ops %llu, violations %llu\n", deaths,
              fault_deaths, fired.size(), static_cast<unsigned long long>(ops),
              static_cast<unsigned long long>(table->violations.load()));
  EXPECT_GE(deaths, kTargetDeaths);
  EXPECT_GT(fault_deaths, kTargetDeaths / 12);
  EXPECT_EQ(violations, 0);
  EXPECT_EQ(table->violations.load(), 0u) << "a block was owned twice";
  // Only the table is live; everything else is free, and trim returns it all.
  expect_exact(h, h.usable_size(table_off));
  h.trim();
  auto s = h.stats();
  EXPECT_EQ(s.superblocks, 0u);
  EXPECT_EQ(s.free_pages + s.published, s.committed);
}

}  // namespace
