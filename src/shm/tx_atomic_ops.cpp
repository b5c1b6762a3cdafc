// src/shm/tx_atomic_ops.cpp: the single-word atomic operations on an int
// value (TxHeap::fetch_add, exchange, load), outside a transaction or as part
// of one. Keeps X2 (the record names the stripe before it is locked), X7 (a
// new seq), X8 (the clock advanced before the version) and V4 (objects.hpp: only an
// int cell's payload is changed).
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <thread>

#include "shm/tx_private.hpp"
#include "troupe/shm/tx.hpp"

namespace troupe::shm {

using namespace detail;

// Single-word atomic operations: lock the stripe (try, back off), check that
// the word is an int value's payload, change it, release with a version
// above every snapshot that may have read it. Inside a transaction of the
// same TxHeap they are made of its reads and writes instead (so they commit,
// roll back and retry with it, and leave its record alone: X7).
namespace {

[[noreturn]] void not_an_int(const char* op, Offset word, std::uint64_t tag) {
  throw Error(Errc::invalid_argument,
              fmt::format("TxHeap::{} on word {:#x}: the value there is not an int (its cell "
                          "tag is {:#x}); atomic operations change int values only",
                          op, word, tag));
}

template <class F>
std::uint64_t atomic_op(TxHeap& txh, const char* op, Offset word, F f) {
  if (Tx* tx = current_tx()) {
    if (&tx->tx_heap() != &txh)
      throw Error(Errc::invalid_argument,
                  fmt::format("TxHeap::{} on heap '{}' inside a transaction of heap '{}': it "
                              "could not commit or roll back with it",
                              op, txh.heap().name(), tx->heap().name()));
    if (std::uint64_t tag = tx->read(word - 8); tag != kIntCellTag) not_an_int(op, word, tag);
    std::uint64_t old = tx->read(word);
    tx->write(word, f(old));
    return old;
  }
  Heap& h = txh.heap();
  TxTable& t = txh.table();
  std::uint64_t s = stripe_of(word);
  auto& lk = t.stripes[s];
  auto* p = h.ptr<std::uint64_t>(word);
  // Ask for the stripe's, the word's and the clock's lines in exclusive
  // state now (they are all written below), so that under contention each
  // comes over once instead of shared for the load, then again for the
  // write, and the transfers overlap with finding our slot.
  __builtin_prefetch(&lk, 1);
  __builtin_prefetch(p, 1);
  __builtin_prefetch(&t.clock, 1);
  unsigned slot = h.slot_index();
  SlotRecord& r = t.slots[slot];
  std::uint64_t seq = txh.settle(slot);
  for (unsigned n = 0;; ++n) {
    std::uint64_t cur = lk.load(std::memory_order_relaxed);
    if (!is_locked(cur)) {
      // Relaxed: our own record, ordered for a recoverer by the release below.
      r.op_stripe.store(s, std::memory_order_relaxed);
      r.op_old.store(cur, std::memory_order_relaxed);
      ++seq;                                                              // X7
      r.state.store(seq << 32 | kTxAtomicOp, std::memory_order_release);  // X2 for one stripe
      // Seq_cst: before our clock load below (X8 c); acquires the word's
      // last writer's release of the stripe.
      if (lk.compare_exchange_weak(cur, locked_word(slot), std::memory_order_seq_cst,
                                   std::memory_order_relaxed)) {
        // The cell's kind cannot change while we hold its payload's stripe
        // (V4 of objects.hpp: the tag is written only with the payload);
        // the acquire above ordered its last write before this load.
        std::uint64_t tag = std::atomic_ref(p[-1]).load(std::memory_order_relaxed);
        if (tag != kIntCellTag) {
          lk.store(cur, std::memory_order_release);  // unchanged: the old version stands
          r.state.store(seq << 32, std::memory_order_release);
          not_an_int(op, word, tag);
        }
        std::atomic_ref<std::uint64_t> w(*p);
        // Relaxed load: we hold the stripe. Release store: see Tx::read.
        std::uint64_t old = w.load(std::memory_order_relaxed);
        w.store(f(old), std::memory_order_release);
        // A version above every current snapshot (X8 b) and above the
        // stripe's own (X8 a: a commit may have released it at clock + 1,
        // GV5), the clock made >= it before anyone can see it by the same
        // fetch_add that reads it, or by an advance when the stripe's was
        // ahead. Seq_cst: X8 (c).
        std::uint64_t c = t.clock.fetch_add(1);
        std::uint64_t v = std::max(version_of(cur) + 1, c + 1);
        if (v != c + 1) clock_advance(t, v);
        // Release: the word before its new version.
        lk.store(v << 1, std::memory_order_release);
        r.state.store(seq << 32, std::memory_order_release);
        return old;
      }
      r.state.store(seq << 32, std::memory_order_release);
    }
    relax(n < 12 ? n : 12);
    if (n % 8192 == 8191) h.recover();
  }
}
}  // namespace

std::int64_t TxHeap::fetch_add(Offset word, std::int64_t delta) {
  return static_cast<std::int64_t>(atomic_op(*this, "fetch_add", word, [delta](std::uint64_t v) {
    return v + static_cast<std::uint64_t>(delta);
  }));
}
std::uint64_t TxHeap::exchange(Offset word, std::uint64_t value) {
  return atomic_op(*this, "exchange", word, [value](std::uint64_t) { return value; });
}
std::uint64_t TxHeap::load(Offset word) {
  return atomically(*this, [&](Tx& tx) { return tx.read(word); });
}

}  // namespace troupe::shm
