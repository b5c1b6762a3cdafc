// src/shm/fault.hpp: named fault points for crash testing.
//
// TROUPE_SHM_FAULT=<name>[@<n>] makes the process kill itself with SIGKILL the
// n-th time (default: first) it reaches the fault point <name>. Fault points
// are compiled in always; when the variable is unset a fault point costs one
// relaxed load of a process-local flag and a predicted branch.
// A test can also watch fault points (set_fault_observer): its observer is
// called at each one, e.g. to hold a thread there while the test makes
// another thread interleave (no kill unless TROUPE_SHM_FAULT also names it).
// Invariants:
//   F1. g_fault_armed is written during static initialisation of the library
//       (before main), and otherwise only by set_fault_observer, which a test
//       calls before it starts the threads whose fault points it watches
//       (thread creation orders the store before their loads).
#pragma once

#include <atomic>
#include <span>
#include <string_view>

namespace troupe::shm::detail {

// Every name a fault point uses, for tests that pick one at random.
inline constexpr std::string_view kFaultPoints[] = {
    "alloc.after_pop",           // popped from the slot cache, not yet returned
    "alloc.refill.after_claim",  // claimed blocks (tagged), not yet in the cache
    "alloc.sb.after_pages",      // claimed a superblock's pages, header not written
    "alloc.sb.after_init",       // superblock written, page-map head still large
    "alloc.large.after_claim",   // pages kPending, head not written
    "alloc.large.after_head",    // head written, tails still kPending
    "free.after_take",           // took responsibility for a published block
    "free.flush.mid",            // flushing the cache: some blocks released
    "free.large.mid",            // dismantling a run: some tails back to kPending
    "publish.after",             // block published
    "grow.after_fallocate",      // file grown, committed size not yet raised
    "retire.after_claim",        // retiring a superblock: all blocks claimed
    "recover.mid",               // recovering a dead slot, half done
    "recover.sb.after_head",     // recovering: read a superblock's head, not its words
};

extern std::atomic<bool> g_fault_armed;  // F1
void fault_hit(std::string_view name);

// Tests only: `observer` (or nullptr) is called at every fault point reached
// from now on, on the thread that reaches it. Arms the fault points (F1).
using FaultObserver = void (*)(std::string_view name);
void set_fault_observer(FaultObserver observer);

// Relaxed suffices: the flag is set before main and never changes (F1).
inline void fault_point(std::string_view name) {
  if (g_fault_armed.load(std::memory_order_relaxed)) [[unlikely]]
    fault_hit(name);
}

}  // namespace troupe::shm::detail
