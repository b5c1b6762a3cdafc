// src/shm/tx_heap.cpp: TxHeap, the transaction table of one heap in this
// process: attach (the shared table created by the first process, the
// recovery hook installed) and detach, the per-thread counters, and the
// checks tests use (stuck locks, busy records, the bytes it holds). It keeps
// no invariant of its own beyond creating the table whole before its offset
// is published (the release compare-exchange); the records' (X1-X8 of
// tx_layout.hpp) are kept by tx.cpp, tx_recovery.cpp and tx_atomic_ops.cpp.
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <thread>

#include "shm/publish_once.hpp"
#include "shm/tx_private.hpp"
#include "troupe/shm/tx.hpp"

namespace troupe::shm {

using namespace detail;

namespace {

std::mutex g_tx_heaps_mu;
std::map<const Heap*, std::unique_ptr<TxHeap>> g_tx_heaps;
std::atomic<std::uint64_t> g_next_serial{1};

}  // namespace

// ---- TxHeap ---------------------------------------------------------------------

TxHeap& TxHeap::attach(Heap& heap) {
  TxHeap* t = nullptr;
  {
    std::lock_guard<std::mutex> lk(g_tx_heaps_mu);
    auto& slot = g_tx_heaps[&heap];
    // A Heap object reused for another segment (or moved into) needs a new TxHeap.
    if (slot && slot->base_ == heap.base() && slot->name_ == heap.name()) return *slot;
    slot = std::make_unique<TxHeap>(heap);
    t = slot.get();
  }
  // slots.cpp S2: a process without our hook (this one, until now: Heap::open)
  // left the dead slots to one with it; recover them now, with the hook.
  heap.recover();
  return *t;
}

void TxHeap::detach(Heap& heap) {
  std::lock_guard<std::mutex> lk(g_tx_heaps_mu);
  g_tx_heaps.erase(&heap);
  if (heap) heap.set_recovery_hook(nullptr);
}

TxHeap::TxHeap(Heap& heap)
    : serial_(g_next_serial.fetch_add(1, std::memory_order_relaxed)),  // uniqueness only
      heap_(&heap),
      base_(heap.base()),
      name_(heap.name()) {
  auto& word = heap.header_words()[kTableWord];
  // Acquire: pairs with the release CAS below (the table is initialised).
  Offset off = word.load(std::memory_order_acquire);
  if (off == null_offset) {
    off = publish_once(
        heap, sizeof(TxTable),
        [&](Offset mine) {
          auto* t = heap.ptr<TxTable>(mine);
          std::memset(static_cast<void*>(t), 0, sizeof(TxTable));
          t->magic = kTxMagic;
          t->stripe_count = kStripes;
          t->clock.store(1, std::memory_order_relaxed);  // above every stripe's version 0
        },
        [&](Offset& expected, Offset mine) {
          // Release: the table's contents before its offset; acquire on
          // failure: see the load above.
          return word.compare_exchange_strong(expected, mine, std::memory_order_acq_rel,
                                              std::memory_order_acquire);
        });
  }
  table_ = heap.ptr<TxTable>(off);
  if (table_->magic != kTxMagic || table_->stripe_count != kStripes)
    throw Error(Errc::version_mismatch,
                fmt::format("heap '{}' holds a transaction table of another layout", heap.name()));
  heap.set_recovery_hook([this](Heap&, unsigned slot, std::span<std::atomic<std::uint64_t>>) {
    recover_slot(slot, true, false);
  });
}

TxStats TxHeap::stats() const {
  std::lock_guard<std::mutex> lk(counters_mu_);
  TxStats s;
  for (auto& [id, c] : counters_) {  // relaxed: statistics only
    s.commits += c->commits.load(std::memory_order_relaxed);
    s.aborts += c->aborts.load(std::memory_order_relaxed);
    s.irrevocable += c->irrevocable.load(std::memory_order_relaxed);
  }
  return s;
}

// One set per thread (a thread that alternates TxHeaps makes a new Tx at each
// switch, and reuses its counters; a thread id reused later adds to them).
std::shared_ptr<TxCounters> TxHeap::new_counters() {
  std::lock_guard<std::mutex> lk(counters_mu_);
  auto& c = counters_[std::this_thread::get_id()];
  if (!c) c = std::make_shared<TxCounters>();
  return c;
}

std::size_t TxHeap::stuck_locks() const {
  std::size_t n = 0;
  for (auto& s : table_->stripes) n += is_locked(s.load());
  return n;
}
std::size_t TxHeap::tx_heap_bytes() const {
  std::size_t n = heap_->usable_size(heap_->offset_of(table_));
  for (auto& r : table_->slots)
    if (Offset log = r.log.load()) n += heap_->usable_size(log);
  return n;
}

std::size_t TxHeap::busy_records() const {
  std::size_t n = 0;
  for (auto& r : table_->slots) n += !is_idle(r.state.load());
  return n + (table_->irrevocable.load() != 0);
}

}  // namespace troupe::shm
