// src/shm/heap_state.hpp: one process's view of a mapped heap, and
// the allocator and recovery entry points the public Heap calls.
//
// Owns: HeapState (the fd, the mapping, which slots this object holds) and the
// process-local binding of threads to slots.
// Invariants:
//   P1. `base` maps the segment file over data_off + max_size bytes (the
//       whole reservation, MAP_SHARED) for the whole life of the HeapState;
//       pages past the file's end are never touched. [0, mapped) is known to
//       be committed (backed by posix_fallocate); mapped only grows (CAS),
//       up to what committed_pages said, and is only a fast-path bound.
//   P2. own[i] is true exactly while this object holds slot i's kernel lock.
//       Slot i's non-atomic fields are touched only by the one thread bound to
//       it (or by the thread holding `mu` while no thread is bound to it).
//   P3. `mu` serialises slot claiming and recovery inside this process; the
//       kernel lock on each slot serialises them across processes.
//   P4. recovering[i] is set (under mu) while this process holds dead slot
//       i's kernel lock to recover it and runs the hook: a claim or recovery
//       nested in the hook (which may allocate) skips slot i, since our own
//       open file description would win its lock byte again.
#pragma once

#include <array>
#include <atomic>
#include <bitset>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "shm/layout.hpp"
#include "troupe/shm/heap.hpp"

namespace troupe::shm::detail {

using TagSet = std::bitset<256>;  // a set of tags (slot + 1)

struct HeapState {
  int fd = -1;
  std::string name;      // shm name or path; "" for memfd
  bool is_path = false;  // name is a file path (open/unlink), not shm_open
  bool anonymous = false;
  char* base = nullptr;
  std::size_t reserved = 0;
  std::atomic<std::size_t> mapped{0};  // P1
  Header* hdr = nullptr;
  Slot* slots = nullptr;
  std::atomic<std::uint64_t>* pagemap = nullptr;
  std::uint64_t data_off = 0;
  std::uint64_t max_pages = 0;
  std::uint32_t slot_count = 0;
  std::uint64_t serial = 0;  // unique per HeapState in this process, never reused

  // P3. Recursive: a recovery hook runs under it and may allocate, which can
  // take a slot for its thread.
  std::recursive_mutex mu;
  // P2. Relaxed atomics: read by free()/publish() on any thread to decide
  // whether a tag names one of our slots; a slot is ours before any block
  // carries its tag in this process (the claim happens-before the thread's use).
  std::array<std::atomic<bool>, kMaxSlots> own{};
  std::bitset<kMaxSlots> recovering;  // P4 (under mu)
  std::vector<unsigned> idle_slots;   // ours, not bound to a thread (under mu)
  Heap::RecoveryHook hook;            // under mu
  Heap* hook_heap = nullptr;

  Superblock* sb_at(std::uint64_t page) const {
    return reinterpret_cast<Superblock*>(base + data_off + page * kPageSize);
  }
  std::uint64_t page_offset(std::uint64_t page) const { return data_off + page * kPageSize; }
};

// The open state of a Heap; Error(invalid_argument) once it is closed (heap.cpp).
HeapState& need(const std::unique_ptr<HeapState>& s);

// ---- segment (segment.cpp) ----
void ensure_mapped(HeapState& st, std::uint64_t end);
bool try_lock_byte(int fd, std::uint64_t byte, short type);
void unlock_byte(int fd, std::uint64_t byte);

// ---- process slots (slots.cpp) ----
// The process-local registry of open HeapStates (a thread that exits hands
// its slots back to those still open); register_state also gives st its serial.
void register_state(HeapState& st);
void unregister_state(HeapState& st);
unsigned thread_slot_slow(HeapState& st);
struct ThreadBinding {
  std::uint64_t serial;
  unsigned slot;
};
// initial-exec: a direct %fs access instead of __tls_get_addr on the hot
// path. A build for a library loaded late with dlopen() (the Python
// extension module: TROUPE_TLS_DYNAMIC) uses the default model, since the
// static TLS space such a library may take is small and shared.
#if defined(TROUPE_TLS_DYNAMIC)
#define TROUPE_TLS_HOT
#else
#define TROUPE_TLS_HOT [[gnu::tls_model("initial-exec")]]
#endif
TROUPE_TLS_HOT extern thread_local ThreadBinding tls_binding;
inline unsigned thread_slot(HeapState& st) {
  if (tls_binding.serial == st.serial) [[likely]]
    return tls_binding.slot;
  return thread_slot_slow(st);
}
// `force`: also when S2 (slots.cpp) would leave the dead slots to a process
// with a hook (this one needs them: out of slots or space, a dead holder of
// the root lock).
RecoveryReport recover_dead(HeapState& st, bool force = false);

// ---- allocator (alloc.cpp) ----
Offset allocate(HeapState& st, std::size_t bytes);
void free_block(HeapState& st, Offset off);
void publish(HeapState& st, Offset off, bool publish);
Owner owner_of(HeapState& st, Offset off);
std::size_t usable_size(HeapState& st, Offset off);
void flush_slot_caches(HeapState& st, unsigned slot);
// Frees everything tagged with a tag in `dead`, releases their superblocks and
// resets their slots' caches. The caller holds every dead slot's kernel lock.
void recover_tags(HeapState& st, const TagSet& dead, RecoveryReport& report);
std::size_t retire_empty(HeapState& st, std::uint8_t tag, bool exact);
Stats compute_stats(HeapState& st);
std::vector<std::string> verify_heap(HeapState& st);

}  // namespace troupe::shm::detail
