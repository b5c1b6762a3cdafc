// src/shm/heap.cpp: the public Heap over its parts: the block calls (to the
// allocator, alloc.cpp), named roots (the root table in the header, under its
// lock) and maintenance and accessors. The segment is segment.cpp's, the
// process slots slots.cpp's. Keeps H1 (heap.hpp) where offsets come in:
// ptr_slow maps only committed offsets, and the block calls reach the
// allocator, which rejects any other; a dead holder's root lock is released
// by recovery (L2 of layout.hpp), which RootLock runs while it waits.
#include <fcntl.h>
#include <fmt/format.h>

#include <cstring>
#include <thread>

#include "shm/heap_state.hpp"
#include "troupe/detail/platform.hpp"

namespace troupe::shm {

using namespace detail;

// ---- allocation ---------------------------------------------------------------

HeapState& detail::need(const std::unique_ptr<HeapState>& s) {
  if (!s) throw Error(Errc::invalid_argument, "use of a closed troupe::shm::Heap");
  return *s;
}

Offset Heap::allocate(std::size_t bytes) { return detail::allocate(need(state_), bytes); }
void Heap::free(Offset block) { detail::free_block(need(state_), block); }
std::size_t Heap::usable_size(Offset block) const {
  return detail::usable_size(need(state_), block);
}
void Heap::publish(Offset block) { detail::publish(need(state_), block, true); }
void Heap::unpublish(Offset block) { detail::publish(need(state_), block, false); }
Owner Heap::owner(Offset block) const { return detail::owner_of(need(state_), block); }

void* Heap::ptr_slow(Offset off) const {
  HeapState& st = need(state_);
  if (off == 0) return nullptr;
  ensure_mapped(st, off + 1);  // throws if beyond the committed size
  return st.base + off;
}

Offset Heap::offset_of(const void* p) const {
  HeapState& st = need(state_);
  if (p == nullptr) return 0;
  auto c = static_cast<const char*>(p);
  if (c < st.base || c >= st.base + st.reserved)
    throw Error(Errc::invalid_argument,
                fmt::format("pointer {} is not inside heap '{}'", p, st.name));
  return static_cast<Offset>(c - st.base);
}

// ---- roots ------------------------------------------------------------------------

namespace {

struct RootLock {
  HeapState& st;
  explicit RootLock(HeapState& s) : st(s) {
    const std::uint32_t tag = thread_slot(st) + 1;
    std::uint32_t stuck = 0;  // checks in a row that saw an impossible holder
    for (int spins = 0;; ++spins) {
      std::uint32_t seen = 0;
      // Acquire/release: a lock; recovery releases a dead holder's (L2).
      if (st.hdr->root_lock.compare_exchange_weak(seen, tag, std::memory_order_acquire,
                                                  std::memory_order_relaxed))
        return;
      if (spins % 64 == 63) {
        recover_dead(st, /*force=*/true);  // slots.cpp S2: we wait on it
        // A holder is a slot that stays attached until it lets go (or its
        // recovery does). Anything else is corruption, or this thread again
        // (a recovery hook using roots): fail instead of spinning forever.
        // Relaxed/acquire: a diagnosis, repeated before it is trusted.
        seen = st.hdr->root_lock.load(std::memory_order_relaxed);
        bool impossible = seen == tag || seen > st.slot_count ||
                          (seen != 0 && st.slots[seen - 1].state.load(std::memory_order_acquire) !=
                                            kSlotAttached);
        stuck = impossible ? stuck + 1 : 0;
        if (stuck >= 16 || seen == tag || seen > st.slot_count)
          throw Error(Errc::bad_segment,
                      seen == tag ? fmt::format("heap '{}': this thread (slot {}) already holds "
                                                "the root lock",
                                                st.name, tag - 1)
                                  : fmt::format("heap '{}' is corrupt: its root lock names slot "
                                                "{}, which is not attached",
                                                st.name, seen - 1));
      }
      troupe::detail::Spin::yield_thread();
    }
  }
  ~RootLock() { st.hdr->root_lock.store(0, std::memory_order_release); }
};

void check_root_name(std::string_view name) {
  if (name.empty() || name.size() > kRootName)
    throw Error(Errc::invalid_argument,
                fmt::format("root name '{}' must have 1 to {} bytes", name, kRootName));
}

RootEntry* find_root(HeapState& st, std::string_view name) {
  for (auto& r : st.hdr->roots)
    if (r.used.load(std::memory_order_relaxed) && name == r.name) return &r;  // under RootLock
  return nullptr;
}

}  // namespace

Offset Heap::root(std::string_view name) const {
  HeapState& st = need(state_);
  check_root_name(name);
  RootLock lk(st);
  RootEntry* r = find_root(st, name);
  // Acquire: pairs with the release store in set_root: the object is visible.
  return r ? r->value.load(std::memory_order_acquire) : 0;
}

void Heap::set_root(std::string_view name, Offset value) {
  HeapState& st = need(state_);
  check_root_name(name);
  RootLock lk(st);
  RootEntry* r = find_root(st, name);
  if (!r) {
    for (auto& e : st.hdr->roots)
      if (!e.used.load(std::memory_order_relaxed)) {
        r = &e;
        break;
      }
    if (!r)
      throw Error(Errc::out_of_memory,
                  fmt::format("heap '{}' has no free root entry for '{}' ({} in use)", st.name,
                              name, kRoots));
    std::memset(r->name, 0, sizeof r->name);
    std::memcpy(r->name, name.data(), name.size());
    r->used.store(1, std::memory_order_relaxed);  // under RootLock
  }
  r->value.store(value, std::memory_order_release);  // publishes the object
}

bool Heap::compare_exchange_root(std::string_view name, Offset& expected, Offset desired) {
  HeapState& st = need(state_);
  check_root_name(name);
  {
    RootLock lk(st);
    if (RootEntry* r = find_root(st, name))
      return r->value.compare_exchange_strong(expected, desired, std::memory_order_acq_rel);
  }
  if (expected != 0) {
    expected = 0;
    return false;
  }
  set_root(name, desired);
  return true;
}

bool Heap::remove_root(std::string_view name) {
  HeapState& st = need(state_);
  check_root_name(name);
  RootLock lk(st);
  RootEntry* r = find_root(st, name);
  if (!r) return false;
  r->value.store(0, std::memory_order_relaxed);
  r->used.store(0, std::memory_order_relaxed);  // under RootLock
  return true;
}

// ---- recovery and maintenance -------------------------------------------------------

std::size_t Heap::trim() {
  HeapState& st = need(state_);
  return retire_empty(st, static_cast<std::uint8_t>(thread_slot(st) + 1), true);
}

void Heap::flush_thread_cache() {
  HeapState& st = need(state_);
  flush_slot_caches(st, thread_slot(st));
}

Stats Heap::stats() const { return compute_stats(need(state_)); }
std::vector<std::string> Heap::verify() const { return verify_heap(need(state_)); }

int Heap::fd() const { return need(state_).fd; }
const std::string& Heap::name() const { return need(state_).name; }
std::uint64_t Heap::instance() const { return need(state_).serial; }

std::size_t Heap::committed_bytes() const {
  return need(state_).hdr->committed_pages.load(std::memory_order_relaxed) *
         kPageSize;  // a snapshot
}
std::size_t Heap::max_size() const { return need(state_).max_pages * kPageSize; }
void* Heap::base() const { return need(state_).base; }
void Heap::set_keep(bool keep) {
  HeapState& st = need(state_);
  // Relaxed: read by the last process under the write lock on byte 0.
  if (keep)
    st.hdr->flags.fetch_or(kFlagKeep, std::memory_order_relaxed);
  else
    st.hdr->flags.fetch_and(~std::uint32_t{kFlagKeep}, std::memory_order_relaxed);
}
std::span<std::atomic<std::uint64_t>> Heap::header_words() const {
  return {need(state_).hdr->reserved_words, 32};
}

}  // namespace troupe::shm
