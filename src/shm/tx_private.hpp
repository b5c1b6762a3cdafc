// src/shm/tx_private.hpp: what the transaction files share (tx_heap.cpp,
// tx_recovery.cpp, tx_atomic_ops.cpp, tx.cpp): a view of a slot record's redo
// log (its sections, tx_layout.hpp), the clock's advance (X8), the
// pacing of a wait (relax) and SnapshotOp, a single-word op on a word found
// by a lookup outside any transaction (tx_atomic_ops.cpp). Private: not
// installed.
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

// Log sections (tx_layout.hpp): cap entries of 6 words in all.
inline constexpr std::uint64_t kLogWordsPerEntry = 6;
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

// A single-word atomic op (fetch_add) on a word that a lookup finds, outside
// any transaction, without a transaction's logs (Dict::increment). It keeps
// X8 as a transaction with one write does:
//   SO1. The lookup's reads are seqlock reads at a snapshot rv (a clock load),
//       each accepted only unlocked at a version <= rv, so by X8 (b, c) they
//       all belong to snapshot rv. The first read that cannot be accepted
//       ends the attempt: it and every later read return 0 without loading
//       anything (the lookup, written so that a 0 ends it, stops), and
//       retry() waits for the lock or advances the clock to the newer
//       version (X8) before the next attempt. At most kMaxReads stripes.
//       peek() loads a word of a block that never changes while the block
//       is linked (a dict entry's key cell, V3; a dict's stamp, V2) without
//       its stripe: it is usable when a link to the block was read, since
//       unlinking writes that link (so SO2's validation fails) before the
//       block can be freed and reused, or, for the stamp, right after a
//       validated read of another word of the block (a retire zeroes the
//       stamp, then bumps every stripe of the block, X5: see
//       Dict::increment); the value peeked may be anything, and is only
//       compared.
//   SO2. fetch_add(word) locks the word's stripe as a single-word op does
//       (the record names it first, kTxAtomicOp: recovery publishes a fresh
//       version, tx_recovery.cpp), then validates every stripe the lookup
//       read (unlocked at <= rv, or the one it holds with its old version
//       <= rv): the lookup's result still holds at the lock, which is the
//       op's linearization point. The word itself is loaded only under the
//       lock, so its stripe's version may be above rv when the lookup did
//       not read that stripe (GV5 leaves recent versions at clock + 1:
//       refusing them would make most ops on a busy word retry). On failure it releases the stripe
//       unchanged and the attempt is retried. Then it checks the int tag
//       (V4), adds, and releases with wv = clock + 1 (GV5, as a commit).
// Not for use inside a transaction (Dict::increment runs add() there). A
// SnapshotOp is a local of one call: only its thread touches its fields.
// Dict::increment calls outside a transaction that ran add() in one instead
// (an absent or long key, repeated conflicts), in this process: statistics
// and tests (relaxed).
inline std::atomic<std::uint64_t>& increment_fallbacks() {
  static std::atomic<std::uint64_t> n{0};
  return n;
}

class SnapshotOp {
 public:
  static constexpr unsigned kMaxReads = 24;
  explicit SnapshotOp(TxHeap& txh);  // this thread's slot, its record settled
  void begin() {
    rv_ = table_->clock.load();  // seq_cst: X8 (b, c), as Tx::begin
    n_ = 0;
    failed_ = false;
    newer_ = 0;
    locked_ = false;
  }
  // SO1. The word's value at snapshot rv, or 0 once the attempt failed.
  std::uint64_t read(Offset word) {
    if (failed_) return 0;
    if ((word & 7) != 0 || word == null_offset || n_ == kMaxReads) {
      failed_ = true;  // not a lookup this op serves: the caller falls back
      newer_ = ~std::uint64_t{0};
      return 0;
    }
    const std::uint64_t s = stripe_of(word);
    const StripeRead r = stripe_read(table_->stripes[s], heap_->ptr<std::uint64_t>(word));
    if (r.at_or_before(rv_)) [[likely]] {
      stripes_[n_++] = static_cast<std::uint32_t>(s);
      return r.val;
    }
    return fail_read(r.v1, r.v2);
  }
  // SO1: a word of a block reached through a link this op read.
  std::uint64_t peek(Offset word) {
    if (failed_) return 0;
    if ((word & 7) != 0 || word == null_offset) return fail_read(1, 1);  // locked: retry
    // Acquire: as Tx::peek (T8).
    return std::atomic_ref(*heap_->ptr<std::uint64_t>(word)).load(std::memory_order_acquire);
  }
  [[gnu::noinline, gnu::cold]] std::uint64_t fail_read(std::uint64_t v1, std::uint64_t v2) {
    failed_ = true;
    if (is_locked(v1) || is_locked(v2))
      locked_ = true;
    else if (v1 == v2)
      newer_ = std::max(newer_, version_of(v1));
    return 0;
  }
  bool failed() const { return failed_; }
  // After a failed lookup: false when it cannot be served here (too many
  // reads: use a transaction); else waits for the lock met (one relax
  // round, `n` attempts in) or advances the clock to the version met.
  bool retry(unsigned n);
  enum class Result { done, conflict, not_int };
  // SO2. On done, *old holds the word's value before the add.
  Result fetch_add(Offset word, std::int64_t delta, std::int64_t* old);

 private:
  TxHeap* txh_;
  Heap* heap_;
  TxTable* table_;
  unsigned slot_;
  std::uint64_t seq_;
  std::uint64_t rv_ = 0, newer_ = 0;
  unsigned n_ = 0;
  bool failed_ = false, locked_ = false;
  std::uint32_t stripes_[kMaxReads];
};

}  // namespace troupe::shm::detail
