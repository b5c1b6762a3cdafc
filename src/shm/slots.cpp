// src/shm/slots.cpp: process slots: which slot a thread of this process
// uses (claimed on first use, handed back when the thread exits or asks),
// their liveness (the kernel lock byte 1 + i of the segment file, segment.cpp)
// and the recovery of dead slots, with the recovery hook of the layer above.
// Keeps S1 (below) and P2-P4 (heap_state.hpp).
// Invariants:
//   S1. A slot's state is kSlotAttached only while someone holds, or held
//       until it died, lock byte 1 + i. Whoever takes the lock of an attached
//       slot owns its recovery (recover_tags) before reusing or freeing it.
//   S2. Once any process installed a recovery hook on a heap (header flag
//       kFlagHooked, set for good), a process without one leaves dead slots
//       to one with it: Heap::open's and recover()'s recoveries skip them,
//       and a claim takes a free slot before a dead one. Only a recovery it
//       needs (no other slot to claim, the heap full, a dead holder of the
//       root lock) goes ahead without the hook. Why: the hook runs while the
//       dead slot's blocks are still tagged, so the layer can tell a block
//       it was publishing from one the heap is about to free (the
//       transaction layer's X6/X9); after a recovery without it, it cannot,
//       and such a block leaked (3 KiB, a first redo log, in 1 of 5 runs of
//       ShmBankStress.Kills8, where workers opened the heap while another lay
//       dead at a fault point).
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <unordered_map>

#include "shm/heap_state.hpp"

namespace troupe::shm {
namespace detail {
namespace {

// ---- process-local registry: which HeapStates are open (thread exit) --------
std::mutex g_registry_mu;
std::unordered_map<std::uint64_t, HeapState*> g_registry;
std::atomic<std::uint64_t> g_serial{1};

// Threads' slots, handed back to their heap's idle pool when the thread exits.
struct ThreadSlots {
  std::vector<ThreadBinding> entries;
  ~ThreadSlots() {
    std::lock_guard<std::mutex> reg(g_registry_mu);
    for (auto& e : entries) {
      auto it = g_registry.find(e.serial);
      if (it == g_registry.end()) continue;
      std::lock_guard<std::recursive_mutex> lk(it->second->mu);
      it->second->idle_slots.push_back(e.slot);
    }
  }
};
thread_local ThreadSlots tls_slots;
}  // namespace

void register_state(HeapState& st) {
  st.serial = g_serial.fetch_add(1, std::memory_order_relaxed);  // unique is all we need
  std::lock_guard<std::mutex> reg(g_registry_mu);
  g_registry[st.serial] = &st;
}
void unregister_state(HeapState& st) {
  std::lock_guard<std::mutex> reg(g_registry_mu);
  g_registry.erase(st.serial);
}

// TROUPE_TLS_HOT (heap_state.hpp): initial-exec unless built to be dlopen()ed.
TROUPE_TLS_HOT thread_local ThreadBinding tls_binding{0, 0};
namespace {

// S2: a process without a hook leaves dead slots of a hooked heap alone.
// Under mu (the hook).
bool leaves_dead_slots(const HeapState& st) {
  // Relaxed: a flag set once; a process that misses it behaves as before S2.
  return !st.hook && (st.hdr->flags.load(std::memory_order_relaxed) & kFlagHooked) != 0;
}

// Takes a slot for this Heap object: an idle one of ours, or a free (or dead,
// after recovering it) slot whose kernel lock we win (S1).
unsigned acquire_slot(HeapState& st) {
  for (int round = 0; round < 2; ++round) {
    // S2: without a hook on a hooked heap, a dead slot is claimed (and
    // recovered) only in the second round, when no other slot was free.
    bool skip_dead = false;
    {
      std::lock_guard<std::recursive_mutex> lk(st.mu);  // P3
      skip_dead = round == 0 && leaves_dead_slots(st);  // reads the hook: under mu
      if (!st.idle_slots.empty()) {
        unsigned s = st.idle_slots.back();
        st.idle_slots.pop_back();
        return s;
      }
      for (unsigned i = 0; i < st.slot_count; ++i) {
        if (st.own[i].load(std::memory_order_relaxed)) continue;  // under mu
        if (st.recovering[i]) continue;                           // P4: an outer frame recovers it
        if (!try_lock_byte(st.fd, 1 + i, F_WRLCK)) continue;
        Slot& slot = st.slots[i];
        // Acquire: pairs with the release store of the state by the last
        // owner (or its recoverer).
        if (slot.state.load(std::memory_order_acquire) == kSlotAttached) {
          if (skip_dead) {
            unlock_byte(st.fd, 1 + i);  // S2: left to a process with the hook
            continue;
          }
          TagSet dead;
          dead[i + 1] = true;
          RecoveryReport rep;
          st.recovering[i] = true;  // P4: the hook may allocate
          try {
            if (st.hook) {
              std::span<std::atomic<std::uint64_t>> words(slot.user, kSlotUserWords);
              st.hook(*st.hook_heap, i, words);
            }
            recover_tags(st, dead, rep);
          } catch (...) {
            st.recovering[i] = false;
            unlock_byte(st.fd, 1 + i);  // still attached: recovered later (S1)
            throw;
          }
          st.recovering[i] = false;
        }
        for (auto& w : slot.user) w.store(0, std::memory_order_relaxed);  // ours now
        slot.pid.store(::getpid(), std::memory_order_relaxed);            // informational
        slot.generation.fetch_add(1, std::memory_order_relaxed);
        // Release: our slot's fields are initialised before it reads attached.
        slot.state.store(kSlotAttached, std::memory_order_release);
        st.own[i].store(true, std::memory_order_relaxed);
        return i;
      }
    }
    if (skip_dead) continue;  // S2: the next round may take a dead slot
    if (recover_dead(st, true).slots.empty()) break;
  }
  throw Error(Errc::out_of_memory,
              fmt::format("heap '{}': all {} process slots are held by live threads", st.name,
                          st.slot_count));
}

}  // namespace

unsigned thread_slot_slow(HeapState& st) {
  for (auto& e : tls_slots.entries) {
    if (e.serial == st.serial) {
      tls_binding = e;
      return e.slot;
    }
  }
  unsigned s = acquire_slot(st);
  for (auto& e : tls_slots.entries) {
    if (e.serial == st.serial) {
      // A recovery hook run by acquire_slot allocated, which bound this
      // thread to another slot (P4): keep that one, and s for later.
      std::lock_guard<std::recursive_mutex> lk(st.mu);
      st.idle_slots.push_back(s);
      tls_binding = e;
      return e.slot;
    }
  }
  tls_slots.entries.push_back({st.serial, s});
  tls_binding = {st.serial, s};
  return s;
}

RecoveryReport recover_dead(HeapState& st, bool force) {
  RecoveryReport rep;
  std::lock_guard<std::recursive_mutex> lk(st.mu);  // P3
  if (!force && leaves_dead_slots(st)) return rep;  // S2
  TagSet dead;
  for (unsigned i = 0; i < st.slot_count; ++i) {
    if (st.own[i].load(std::memory_order_relaxed)) continue;
    if (st.recovering[i]) continue;  // P4: an outer frame recovers it
    // Acquire: see acquire_slot.
    if (st.slots[i].state.load(std::memory_order_acquire) != kSlotAttached) continue;
    if (!try_lock_byte(st.fd, 1 + i, F_WRLCK)) continue;  // alive
    if (st.slots[i].state.load(std::memory_order_acquire) != kSlotAttached) {
      unlock_byte(st.fd, 1 + i);  // someone recovered it meanwhile
      continue;
    }
    dead[i + 1] = true;
    rep.slots.push_back(i);
  }
  if (rep.slots.empty()) return rep;
  // P4: the hook may allocate, and so claim a slot for this thread, or
  // recover (out of memory): neither may take the slots we are recovering.
  for (unsigned i : rep.slots) st.recovering[i] = true;
  try {
    for (unsigned i : rep.slots) {
      if (!st.hook) break;
      std::span<std::atomic<std::uint64_t>> words(st.slots[i].user, kSlotUserWords);
      st.hook(*st.hook_heap, i, words);
    }
    recover_tags(st, dead, rep);
  } catch (...) {
    for (unsigned i : rep.slots) {
      st.recovering[i] = false;
      unlock_byte(st.fd, 1 + i);  // still attached: recovered later (S1)
    }
    throw;
  }
  for (unsigned i : rep.slots) {
    st.recovering[i] = false;
    // Release: the recovery's writes happen before the slot reads free (S1).
    st.slots[i].state.store(kSlotFree, std::memory_order_release);
    unlock_byte(st.fd, 1 + i);
  }
  return rep;
}

}  // namespace detail

using namespace detail;

RecoveryReport Heap::recover() { return recover_dead(need(state_)); }

void Heap::release_thread_slot() {
  HeapState& st = need(state_);
  auto& v = tls_slots.entries;
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (it->serial != st.serial) continue;
    unsigned s = it->slot;
    flush_slot_caches(st, s);
    v.erase(it);
    if (tls_binding.serial == st.serial) tls_binding = {0, 0};
    std::lock_guard<std::recursive_mutex> lk(st.mu);
    st.idle_slots.push_back(s);
    return;
  }
}

std::vector<SlotInfo> Heap::slots() const {
  HeapState& st = need(state_);
  std::vector<SlotInfo> out;
  for (unsigned i = 0; i < st.slot_count; ++i) {
    const Slot& s = st.slots[i];
    SlotInfo info{};
    info.index = i;
    // Acquire: see acquire_slot.
    info.attached = s.state.load(std::memory_order_acquire) == kSlotAttached;
    info.ours = st.own[i].load(std::memory_order_relaxed);
    info.pid = s.pid.load(std::memory_order_relaxed);
    info.generation = s.generation.load(std::memory_order_relaxed);
    if (info.ours) {
      info.alive = true;
    } else {
      struct flock fl {};
      fl.l_type = F_WRLCK;
      fl.l_whence = SEEK_SET;
      fl.l_start = static_cast<off_t>(1 + i);
      fl.l_len = 1;
      info.alive = ::fcntl(st.fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    }
    out.push_back(info);
  }
  return out;
}

void Heap::set_recovery_hook(RecoveryHook hook) {
  HeapState& st = need(state_);
  std::lock_guard<std::recursive_mutex> lk(st.mu);
  // S2: from now on, processes without a hook leave dead slots to ours.
  if (hook) st.hdr->flags.fetch_or(kFlagHooked, std::memory_order_relaxed);
  st.hook = std::move(hook);
  st.hook_heap = this;
}

std::span<std::atomic<std::uint64_t>> Heap::slot_words() {
  HeapState& st = need(state_);
  return {st.slots[thread_slot(st)].user, kSlotUserWords};
}
unsigned Heap::slot_index() { return thread_slot(need(state_)); }

}  // namespace troupe::shm
