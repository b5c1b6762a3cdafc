// tests/shm/recovery_test.cpp: recovering a killed process's slot while this
// process is busy with the heap: a recovery hook that allocates on a thread
// that has no slot yet (from its first allocation, and from recover()), and
// a superblock retired and reused as user data under a recovering thread
// that already read its head (held there by a fault observer).
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <thread>
#include <troupe/shm/heap.hpp>

#include "shm/fault.hpp"
#include "shm_test_util.hpp"

using troupe::shm::CreateOptions;
using troupe::shm::Heap;
using troupe::shm::Offset;
using troupe::shm::Owner;
using namespace shm_test;

namespace {

// Spawns a worker that allocates and waits, then kills it: its slot is left
// attached and dead. Returns the dead slot's index.
unsigned make_dead_slot(Heap& h, const char* unpublished) {
  h.remove_root("ready");
  pid_t pid = spawn_worker({"hold", h.name(), unpublished, "0"});
  EXPECT_GT(pid, 0);
  for (int i = 0; i < 5000 && !h.root("ready"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_NE(h.root("ready"), 0u);
  ::kill(pid, SIGKILL);
  wait_status(pid);
  for (auto& s : h.slots())
    if (s.attached && !s.alive) return s.index;
  ADD_FAILURE() << "no dead slot after the kill";
  return 0;
}

// The hook allocates on its first call only, so that a hook run twice for
// one slot shows up as a count instead of endless recursion.
struct AllocatingHook {
  std::map<unsigned, int> calls;
  Offset block = 0;
  void install(Heap& h) {
    h.set_recovery_hook([this](Heap& heap, unsigned slot, std::span<std::atomic<std::uint64_t>>) {
      if (calls[slot]++ == 0 && block == 0) block = heap.allocate(200);
    });
  }
  void expect_sound(Heap& h, unsigned dead) {
    EXPECT_EQ(calls.size(), 1u);
    EXPECT_EQ(calls[dead], 1) << "the hook ran more than once for slot " << dead;
    ASSERT_NE(block, 0u);
    Owner o = h.owner(block);
    ASSERT_EQ(o.kind, Owner::slot) << "the block the hook allocated was freed under it";
    auto slots = h.slots();
    EXPECT_TRUE(slots[o.slot_index].attached && slots[o.slot_index].ours);
    h.free(block);
    EXPECT_TRUE(h.verify().empty());
    EXPECT_TRUE(h.recover().slots.empty());
  }
};

TEST(ShmRecovery, AllocatingHookOnAThreadWithoutASlotFromAllocate) {
  Heap h = Heap::create(small_heap());
  unsigned dead = make_dead_slot(h, "50");
  AllocatingHook hook;
  hook.install(h);
  Offset mine = 0;
  // The thread's first allocation takes a slot: the dead one (S1), whose
  // recovery runs the hook, which allocates before the thread has a slot.
  std::thread([&] { mine = h.allocate(64); }).join();
  ASSERT_NE(mine, 0u);
  h.free(mine);
  hook.expect_sound(h, dead);
}

TEST(ShmRecovery, AllocatingHookOnAThreadWithoutASlotFromRecover) {
  Heap h = Heap::create(small_heap());
  unsigned dead = make_dead_slot(h, "50");
  AllocatingHook hook;
  hook.install(h);
  troupe::shm::RecoveryReport rep;
  std::thread([&] { rep = h.recover(); }).join();
  ASSERT_EQ(rep.slots.size(), 1u);
  EXPECT_EQ(rep.slots[0], dead);
  hook.expect_sound(h, dead);
}

// Holds the recovering thread at its first superblock head until released.
std::atomic<int> g_stage{0};  // 0 armed, 1 held, 2 released, 3 done
void hold_at_first_superblock(std::string_view point) {
  if (point != "recover.sb.after_head") return;
  int armed = 0;
  if (!g_stage.compare_exchange_strong(armed, 1)) return;
  while (g_stage.load() != 2) std::this_thread::yield();
}

// A recovering thread read superblock S's head; before it reads S's owner
// words, S is retired and its pages handed out as a large run whose bytes
// equal the dead slot's tag. Recovery must leave those bytes alone.
TEST(ShmRecovery, SuperblockRetiredUnderARecoveringThreadKeepsItsNewData) {
  CreateOptions o = small_heap();
  o.initial_size = 4 << 20;  // room enough that the worker retires nothing
  Heap h = Heap::create(o);
  // S: the first superblock (page 0), class of 1000 bytes, left free and
  // unheld so trim() can retire it.
  std::vector<Offset> blocks;
  for (int i = 0; i < 20; ++i) blocks.push_back(h.allocate(1000));
  const Offset s_off = blocks[0] & ~Offset{0xffff};  // data area is 64 KiB aligned
  for (Offset b : blocks) h.free(b);
  h.flush_thread_cache();
  unsigned char s_header[64];
  std::memcpy(s_header, h.ptr(s_off), sizeof s_header);
  const unsigned dead = make_dead_slot(h, "30");
  const auto dead_tag = static_cast<unsigned char>(dead + 1);

  g_stage.store(0);
  troupe::shm::detail::set_fault_observer(hold_at_first_superblock);
  std::thread recoverer([&] { h.recover(); });
  struct Release {  // also when an assertion returns early
    std::thread& t;
    ~Release() {
      g_stage.store(2);
      if (t.joinable()) t.join();
      troupe::shm::detail::set_fault_observer(nullptr);
    }
  } release{recoverer};
  while (g_stage.load() != 1) std::this_thread::yield();
  // The recoverer sits at S's head. Retire S and take its pages as a run.
  EXPECT_GE(h.trim(), std::size_t{64} << 10);
  std::vector<Offset> runs;
  Offset run = 0;
  for (int i = 0; i < 64 && run == 0; ++i) {
    Offset r = h.allocate(64 << 10);
    if (r == s_off)
      run = r;
    else
      runs.push_back(r);
  }
  ASSERT_EQ(run, s_off) << "S's pages were not handed out again";
  auto* p = h.ptr<unsigned char>(run);
  std::memcpy(p, s_header, sizeof s_header);  // data that looks like S's header
  std::memset(p + sizeof s_header, dead_tag, (64 << 10) - sizeof s_header);
  h.publish(run);
  g_stage.store(2);
  recoverer.join();

  std::size_t damaged = 0;
  for (std::size_t i = sizeof s_header; i < (64 << 10); ++i) damaged += p[i] != dead_tag;
  EXPECT_EQ(damaged, 0u) << "recovery cleared bytes of user data that looked like the dead tag";
  EXPECT_EQ(std::memcmp(p, s_header, sizeof s_header), 0) << "recovery wrote into user data";
  EXPECT_EQ(h.owner(run).kind, Owner::published);
  h.free(run);
  for (Offset r : runs) h.free(r);
  EXPECT_TRUE(h.verify().empty());
}

}  // namespace
