// src/shm/tx_private.hpp: what the transaction files share (tx_heap.cpp,
// tx_recovery.cpp, tx_atomic_ops.cpp, tx.cpp): a view of a slot record's redo
// log (its sections, tx_layout.hpp), the clock's advance (X8) and the
// pacing of a wait (relax). Private: not installed.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "troupe/shm/tx.hpp"

namespace troupe::shm::detail {

inline std::uint64_t* log_words(Heap& h, const SlotRecord& r) {
  // Acquire: pairs with the release store of rec.log by its owner (X1).
  return h.ptr<std::uint64_t>(r.log.load(std::memory_order_acquire));
}

// Log sections (tx_layout.hpp).
struct LogView {
  std::uint64_t* base;
  std::uint64_t cap;
  std::atomic_ref<std::uint64_t> w(std::uint64_t i) const { return std::atomic_ref(base[i]); }
  std::atomic_ref<std::uint64_t> write_addr(std::uint64_t i) const { return w(2 * i); }
  std::atomic_ref<std::uint64_t> write_val(std::uint64_t i) const { return w(2 * i + 1); }
  std::atomic_ref<std::uint64_t> lock_stripe(std::uint64_t i) const { return w(2 * cap + 2 * i); }
  std::atomic_ref<std::uint64_t> lock_old(std::uint64_t i) const { return w(2 * cap + 2 * i + 1); }
  std::atomic_ref<std::uint64_t> alloc(std::uint64_t i) const { return w(4 * cap + i); }
  std::atomic_ref<std::uint64_t> free_(std::uint64_t i) const { return w(5 * cap + i); }
};

inline LogView view(Heap& h, const SlotRecord& r) {
  // Relaxed: log_cap is read by the record's owner or its recoverer (X1),
  // ordered by the acquire of rec.log.
  std::uint64_t* b = log_words(h, r);
  return {b, r.log_cap.load(std::memory_order_relaxed)};
}

// X8: makes the clock >= v: before a single-word op or a recoverer releases
// a stripe with v, and before a transaction that met v (a commit's version,
// GV5) takes a snapshot >= v. Seq_cst load and compare-exchange: clock
// operations are in S (X8).
inline void clock_advance(TxTable& t, std::uint64_t v) {
  std::uint64_t c = t.clock.load();
  while (c < v && !t.clock.compare_exchange_weak(c, v)) {
  }
}

// One round of a wait for another party (a lock, the irrevocable token, a
// record being recovered), `n` rounds in: Spin::backoff's pauses, then the
// embedder's wait hook (set_tx_wait_hook) or a yield (tx.cpp).
void relax(unsigned n);

}  // namespace troupe::shm::detail
