// src/shm/tx_recovery.cpp: recovery of a slot's transaction: the heap's
// recovery hook (recover_slot in the hook, for a dead slot), the slot's next
// owner (settle), recover_orphans for records no hook saw, and the stale
// irrevocable token. Keeps X2-X7 (tx_layout.hpp: a record is finished by one
// party, X7; discarded before the commit point, X3, or rolled forward after
// it, X4; its logged blocks freed exactly once, X5, X6; a log swap finished,
// X9) and T11 (tx.hpp).
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

std::size_t TxHeap::recover_orphans() {
  std::size_t n = 0;
  for (auto& info : heap_->slots()) {
    if (info.index >= kTxSlots || info.alive || info.attached) continue;
    if (is_idle(table_->slots[info.index].state.load())) continue;
    recover_slot(info.index, false, true);
    ++n;
  }
  return n;
}

// X6. Frees the published block of a log entry so that a death at any step
// leaves it to exactly one party: kFreeing and unpublish() hand it to our heap
// slot (the heap frees it if we die), the cleared entry tells a later
// recoverer there is nothing left, and only then is it freed.
void TxHeap::free_entry(std::atomic_ref<std::uint64_t> entry, Offset block, bool keep) {
  // Relaxed: a log entry of the record we finish (X1/X7); the recoverer
  // reads it after acquiring the state.
  entry.store(block | kEntryFreeing, std::memory_order_relaxed);
  heap_->unpublish(block);  // ours now: freed by recovery if we die (T11)
  fault_point("tx.entry.unpublished");
  entry.store(0, std::memory_order_relaxed);
  if (!keep) heap_->free(block);
}

// Finishes a log entry left by a dead party (allocs[] when discarding,
// frees[] when freeing, log_old after a log swap, X9); true when the hook
// left it for a slotted thread. The block is ours to free only if it is
// surely still published: flagged kPublished, or flagged kPublishing/kFreeing
// and still published; the latter we can tell only in the hook (the dead
// slot's blocks are still tagged, so a published one was not freed and
// reused). Otherwise the heap frees it (tagged with a dead slot) or, without
// the hook, it may leak (never freed twice).
bool TxHeap::finish_entry(std::atomic_ref<std::uint64_t> entry, bool in_hook) {
  std::uint64_t e = entry.load(std::memory_order_relaxed);
  Offset b = e & ~kEntryFlags;
  if (!b) return false;
  bool ours = (e & kEntryPublished) || ((e & (kEntryPublishing | kEntryFreeing)) && in_hook &&
                                        heap_->owner(b).kind == Owner::published);
  if (ours) {
    if (in_hook) {  // no heap call that needs a slot: leave it, surely ours
      entry.store(b | kEntryPublished, std::memory_order_relaxed);
      return true;
    }
    free_entry(entry, b);
    return false;
  }
  if ((e & (kEntryPublishing | kEntryFreeing)) && !in_hook)
    table_->unsettled.fetch_add(1, std::memory_order_relaxed);  // statistics
  entry.store(0, std::memory_order_relaxed);
  return false;
}

// X9. Adopts log_new if it is surely published (as finish_entry decides),
// keeping the log it replaces in log_old, then frees log_old. Each step
// checks what is done already, so the owner and any later finisher run the
// same code.
bool TxHeap::finish_log_swap(SlotRecord& r, bool in_hook) {
  std::atomic_ref<std::uint64_t> log_new(r.log_new), log_old(r.log_old);
  // Relaxed: the record's own words, read by its owner or by the one party
  // that claimed it (X7) after acquiring the state.
  std::uint64_t e = log_new.load(std::memory_order_relaxed);
  if (Offset fresh = e & ~kEntryFlags) {
    bool published = (e & kEntryPublished) || ((e & kEntryPublishing) && in_hook &&
                                               heap_->owner(fresh).kind == Owner::published);
    if (published) {
      // T10: a log the block cannot hold is corrupt memory, not a log.
      const std::uint64_t cap = r.log_new_cap.load(std::memory_order_relaxed);
      if (cap == 0 || cap > (std::uint64_t{1} << 40) ||
          heap_->usable_size(fresh) < cap * kLogWordsPerEntry * sizeof(std::uint64_t))
        throw Error(Errc::bad_segment,
                    fmt::format("a transaction record's new log {:#x} cannot hold {} entries "
                                "(corrupt memory?)",
                                fresh, cap));
      Offset old = r.log.load(std::memory_order_relaxed);
      if (old != fresh) {
        if (old && !log_old.load(std::memory_order_relaxed))
          log_old.store(old | kEntryPublished, std::memory_order_relaxed);
        r.log_cap.store(cap, std::memory_order_relaxed);
        // Release: pairs with log_words' acquire (the cap before the log).
        r.log.store(fresh, std::memory_order_release);
      }
      fault_point("tx.log.swapped");
    } else if (!in_hook) {
      // Freed by the heap (a dead slot's block), or published and leaked: a
      // recovery without the hook cannot tell (X6).
      table_->unsettled.fetch_add(1, std::memory_order_relaxed);  // statistics
    }
    log_new.store(0, std::memory_order_relaxed);
  }
  return finish_entry(log_old, in_hook);
}

// The irrevocable token of a holder that died: its hook clears it; without
// the hook (slots.cpp S2: a process that had to) nobody would, so a waiter does.
// A token that names no slot (a scribbled table: it is 0 or slot + 1, at most
// kTxSlots) is cleared too; cast to a slot index it could have named a live
// one, ours included, and every waiter would have waited for ever.
void TxHeap::clear_stale_token() {
  heap_->recover();
  std::uint64_t tok = table_->irrevocable.load();
  if (tok != 0 && (tok > kTxSlots || !slot_alive(static_cast<unsigned>(tok - 1))))
    table_->irrevocable.compare_exchange_strong(tok, 0);
}

bool TxHeap::slot_alive(unsigned slot) const {
  for (auto& s : heap_->slots())
    if (s.index == slot) return s.alive;
  return false;
}

// X7. Takes the right to finish `slot`'s record for the calling thread; false
// when it is idle, or a live party (its owner, or a live recoverer) has it.
// `orphan`: the caller is not the hook and not the slot's owner, so the
// owner's slot must be seen dead after the state was read.
//   `me`: the claimant's identity, whose liveness others check: the caller's
// own slot, or in the hook the dead slot itself (we hold its kernel lock
// while the hook runs; and the hook must not take a slot: the heap would
// recover the slot under recovery again, recursively).
bool TxHeap::claim(unsigned slot, bool orphan, unsigned me, std::uint64_t& phase,
                   std::uint64_t& prev) {
  auto& st = table_->slots[slot].state;
  for (;;) {
    std::uint64_t s = st.load();  // seq_cst: ordered before the liveness checks
    if (is_idle(s)) return false;
    if (s & kRecovering) {
      unsigned r = recoverer_of(s);
      if (r == me) {
        phase = phase_of(s);
        prev = s;
        return true;
      }
      if (slot_alive(r)) return false;
    } else if (orphan && slot_alive(slot)) {
      return false;
    }
    std::uint64_t want =
        (s & ~std::uint64_t{0xffff}) | phase_of(s) | kRecovering | std::uint64_t{me + 1} << 8;
    if (st.compare_exchange_strong(s, want)) {
      phase = phase_of(s);
      prev = s;
      return true;
    }
  }
}

// Finishes (committed) or discards (before the commit point) slot's
// transaction. Callers: the heap's recovery hook for a dead slot (holding its
// kernel lock), the slot's new owner finding a record no hook saw, or
// recover_orphans; X7 makes one of them do it.
void TxHeap::recover_slot(unsigned slot, bool in_hook, bool orphan) {
  if (slot >= kTxSlots) return;
  SlotRecord& r = table_->slots[slot];
  auto& stripes = table_->stripes;
  const std::uint64_t mine = locked_word(slot);
  std::uint64_t state = 0, prev = 0;
  if (!claim(slot, orphan && !in_hook, in_hook ? slot : heap_->slot_index(), state, prev)) return;
  if ((prev & kDeferred) && !in_hook) table_->deferred.fetch_sub(1);  // we finish it
  const std::uint64_t keep = r.state.load(std::memory_order_relaxed) & ~std::uint64_t{0x7f};
  bool pending = false;  // in the hook: entries left for a slotted thread
  if (state == kTxLocking || state == kTxCommitted) {
    LogView L = view(*heap_, r);
    // Relaxed: written by the dead owner before its release store of state.
    std::uint64_t nl = std::min(r.n_locks.load(std::memory_order_relaxed), L.cap);
    if (state == kTxLocking) {
      // Discard (X3).
      std::uint64_t na = std::min(r.n_allocs.load(std::memory_order_relaxed), L.cap);
      for (std::uint64_t i = 0; i < na; ++i) pending |= finish_entry(L.alloc(i), in_hook);  // X6
      for (std::uint64_t i = 0; i < nl; ++i) {                                              // X2
        std::uint64_t s = L.lock_stripe(i).load(std::memory_order_relaxed) & (kStripes - 1);
        std::uint64_t expect = mine;
        // Release: nothing was written under the lock; pairs with readers' acquire.
        stripes[s].compare_exchange_strong(expect, L.lock_old(i).load(std::memory_order_relaxed),
                                           std::memory_order_release, std::memory_order_relaxed);
      }
      if (pending) {
        table_->deferred.fetch_add(1);
        // Release: the entries' flags before the state (a finisher acquires).
        r.state.store(keep | kDeferred | kTxLocking, std::memory_order_release);
        return;
      }
    } else {
      // Roll forward (X4): re-apply the writes whose stripe we still hold.
      std::uint64_t nw = std::min(r.n_writes.load(std::memory_order_relaxed), L.cap);
      for (std::uint64_t i = 0; i < nw; ++i) {
        Offset a = L.write_addr(i).load(std::memory_order_relaxed);
        // Relaxed: we hold the stripe (no one else writes the word, X4).
        // Release store of the word: see Tx::read.
        if (stripes[stripe_of(a)].load(std::memory_order_relaxed) == mine)
          std::atomic_ref(*heap_->ptr<std::uint64_t>(a))
              .store(L.write_val(i).load(std::memory_order_relaxed), std::memory_order_release);
      }
      std::uint64_t wv = r.wv.load(std::memory_order_relaxed);
      clock_advance(*table_, wv);
      for (std::uint64_t i = 0; i < nl; ++i) {
        std::uint64_t s = L.lock_stripe(i).load(std::memory_order_relaxed) & (kStripes - 1);
        std::uint64_t expect = mine;
        // Release: the writes above before the new version (readers acquire).
        stripes[s].compare_exchange_strong(expect, wv << 1, std::memory_order_release,
                                           std::memory_order_relaxed);
      }
      // Release: the log is applied before the state says so.
      r.state.store(keep | kTxFreeing, std::memory_order_release);
      state = kTxFreeing;
    }
  }
  if (state == kTxFreeing) {
    LogView L = view(*heap_, r);
    // X5: every stripe of these blocks was released with wv, so they may be
    // freed now. The hook does not free (a free needs a slot of the
    // caller's own): it settles the entries and defers the rest to a
    // slotted thread.
    std::uint64_t nf = std::min(r.n_frees.load(std::memory_order_relaxed), L.cap);
    for (std::uint64_t i = 0; i < nf; ++i) {
      // Entries the owner never started on are published blocks: kPublished
      // marks them so finish_entry frees them.
      std::uint64_t e = L.free_(i).load(std::memory_order_relaxed);
      if (e && !(e & kEntryFlags)) L.free_(i).store(e | kEntryPublished, std::memory_order_relaxed);
      pending |= finish_entry(L.free_(i), in_hook);
    }
    if (pending) {
      table_->deferred.fetch_add(1);
      r.state.store(keep | kDeferred | kTxFreeing, std::memory_order_release);  // see above
      return;
    }
  } else if (state == kTxLogSwap) {
    if (finish_log_swap(r, in_hook)) {
      table_->deferred.fetch_add(1);
      r.state.store(keep | kDeferred | kTxLogSwap, std::memory_order_release);  // see above
      return;
    }
  } else if (state == kTxAtomicOp) {
    std::uint64_t s = r.op_stripe.load(std::memory_order_relaxed) & (kStripes - 1);
    std::uint64_t old = r.op_old.load(std::memory_order_relaxed);
    std::uint64_t expect = mine;
    // The word holds its old or its new value, each a whole state: publish a
    // fresh version so readers of either revalidate (X8: the clock advanced first).
    // Release: after the word.
    std::uint64_t v = std::max(version_of(old) + 1, table_->clock.load() + 1);
    clock_advance(*table_, v);
    stripes[s].compare_exchange_strong(expect, v << 1, std::memory_order_release,
                                       std::memory_order_relaxed);
  }
  // Relaxed counters: the release store of the state below orders them.
  r.n_locks.store(0, std::memory_order_relaxed);
  r.n_writes.store(0, std::memory_order_relaxed);
  r.n_allocs.store(0, std::memory_order_relaxed);
  r.n_frees.store(0, std::memory_order_relaxed);
  r.state.store(keep & ~std::uint64_t{0xffff}, std::memory_order_release);  // idle, same seq
  std::uint64_t tok = slot + 1;
  table_->irrevocable.compare_exchange_strong(tok, 0);
}

// settle() when the record is not idle: a transaction left by a previous
// owner that no hook finished is finished now, or waited for while a live
// recoverer does (X7). Returns the record's seq.
std::uint64_t TxHeap::settle_slow(unsigned slot) {
  auto& st = table_->slots[slot].state;
  for (unsigned n = 0;; ++n) {
    // Acquire: pairs with the release store that made it idle.
    std::uint64_t s = st.load(std::memory_order_acquire);
    if (is_idle(s)) return seq_of(s);
    recover_slot(slot, false, false);
    if (!is_idle(st.load(std::memory_order_acquire))) relax(n < 10 ? n : 10);
  }
}

}  // namespace troupe::shm
