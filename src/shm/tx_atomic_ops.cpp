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

#include "shm/fault.hpp"
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

// One stripe taken by a single-word op (TxHeap's, or SnapshotOp's): X2 for
// one stripe. The record names the stripe and its word before the lock, as
// recovery needs (tx_recovery.cpp, kTxAtomicOp); each attempt is a new seq
// (X7). Only the record's owner thread uses it.
struct OpStripe {
  enum class Took { yes, busy, irrevocable };
  TxTable& t;
  unsigned slot;
  std::uint64_t& seq;
  std::uint64_t s;
  SlotRecord& r = t.slots[slot];
  std::atomic<std::uint64_t>& lk = t.stripes[s];

  // `cur`: the stripe's word, just loaded unlocked.
  Took take(std::uint64_t cur) {
    // Relaxed: our own record, ordered for a recoverer by the release below.
    r.op_stripe.store(s, std::memory_order_relaxed);
    r.op_old.store(cur, std::memory_order_relaxed);
    ++seq;                                                              // X7
    r.state.store(seq << 32 | kTxAtomicOp, std::memory_order_release);  // X2 for one stripe
    // Seq_cst: before the op's validation and clock loads (X8 c); acquires
    // the word's last writer's release of the stripe.
    if (!lk.compare_exchange_strong(cur, locked_word(slot), std::memory_order_seq_cst,
                                    std::memory_order_relaxed)) {
      idle();
      return Took::busy;
    }
    // An irrevocable transaction (T2) must commit: yield to it as a commit
    // does (seq_cst, after our lock).
    if (std::uint64_t tok = t.irrevocable.load(); tok != 0 && tok != slot + 1u) {
      put_back(cur);
      return Took::irrevocable;
    }
    return Took::yes;
  }
  // Unchanged: the old version stands.
  void put_back(std::uint64_t cur) {
    lk.store(cur, std::memory_order_release);
    idle();
  }
  // Release: the word before its new version v.
  void release_at(std::uint64_t v) {
    lk.store(v << 1, std::memory_order_release);
    idle();
  }
  void idle() { r.state.store(seq << 32, std::memory_order_release); }
};

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
  std::uint64_t seq = txh.settle(slot);
  OpStripe held{t, slot, seq, s};
  for (unsigned n = 0;; ++n) {
    std::uint64_t cur = lk.load(std::memory_order_relaxed);
    if (!is_locked(cur)) {
      OpStripe::Took took = held.take(cur);
      if (took == OpStripe::Took::yes) {
        // The cell's kind cannot change while we hold its payload's stripe
        // (V4 of objects.hpp: the tag is written only with the payload);
        // the acquire above ordered its last write before this load.
        std::uint64_t tag = std::atomic_ref(p[-1]).load(std::memory_order_relaxed);
        if (tag != kIntCellTag) {
          held.put_back(cur);
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
        held.release_at(v);
        return old;
      }
      if (took == OpStripe::Took::irrevocable && n % 4096 == 4095)
        txh.clear_stale_token();  // its holder may be dead
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

// ---- SnapshotOp (tx_private.hpp SO1-SO2) ----

SnapshotOp::SnapshotOp(TxHeap& txh)
    : txh_(&txh), heap_(&txh.heap()), table_(&txh.table()), slot_(heap_->slot_index()) {
  if (slot_ >= kTxSlots) throw Error(Errc::invalid_argument, "heap slot beyond the tx table");
  seq_ = txh.settle(slot_);
}

bool SnapshotOp::retry(unsigned n) {
  if (newer_ == ~std::uint64_t{0}) return false;
  if (newer_ > rv_) {
    // X8 Q: a version above clock + 1 is corrupt memory (T10): a
    // transaction reports it; never move the clock there.
    if (newer_ > table_->clock.load() + 1) return false;
    clock_advance(*table_, newer_);  // X8: as an extension does
  }
  if (locked_) {
    relax(n < 12 ? n : 12);
    if (n % 8192 == 8191) heap_->recover();  // the holder may be dead
  }
  return true;
}

SnapshotOp::Result SnapshotOp::fetch_add(Offset word, std::int64_t delta, std::int64_t* old) {
  fault_point("tx.op.found");  // the lookup done, nothing taken
  const std::uint64_t s = stripe_of(word);
  auto* p = heap_->ptr<std::uint64_t>(word);
  OpStripe held{*table_, slot_, seq_, s};
  // The word itself was not read by the lookup (unless its stripe was, which
  // the validation checks): its version may be above rv.
  const std::uint64_t cur = held.lk.load(std::memory_order_relaxed);
  if (is_locked(cur) || held.take(cur) != OpStripe::Took::yes) {
    locked_ = true;  // retry() waits (for the holder, or the irrevocable token)
    newer_ = 0;
    return Result::conflict;
  }
  fault_point("tx.op.locked");
  // SO2: the lookup still holds. Seq_cst loads: as a commit's validation.
  for (unsigned i = 0; i < n_; ++i) {
    const std::uint64_t w = stripes_[i] == s ? cur : table_->stripes[stripes_[i]].load();
    if (is_locked(w) || version_of(w) > rv_) {
      locked_ = is_locked(w);
      newer_ = locked_ ? 0 : version_of(w);
      held.put_back(cur);
      return Result::conflict;
    }
  }
  // V4: the cell's tag is written only with its payload, under this stripe.
  if (std::atomic_ref(p[-1]).load(std::memory_order_relaxed) != kIntCellTag) {
    held.put_back(cur);
    return Result::not_int;
  }
  std::atomic_ref<std::uint64_t> w(*p);
  const std::uint64_t before = w.load(std::memory_order_relaxed);  // we hold the stripe
  w.store(before + static_cast<std::uint64_t>(delta), std::memory_order_release);  // Tx::read
  fault_point("tx.op.stored");
  // GV5 (X8): a version above every snapshot that may have read the word,
  // as a commit takes it. Seq_cst: after our lock in S.
  held.release_at(table_->clock.load() + 1);
  *old = static_cast<std::int64_t>(before);
  return Result::done;
}

}  // namespace troupe::shm
