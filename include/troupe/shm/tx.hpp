// troupe/shm/tx.hpp: transactions over words of a shared heap, from many
// threads and processes, that survive any of them being killed.
//
// Owns: troupe::shm::TxHeap (the transaction table attached to a Heap in this
// process), troupe::shm::Tx (one running transaction), atomically(), and the
// single-word atomic operations that need no transaction.
//
// Algorithm: TL2 (Dice, Shalev, Shavit, DISC 2006) with a redo log in shared
// memory. A transaction samples the global clock (rv), reads words validating
// each against its stripe's versioned lock (locked: it waits for the release,
// holding no lock itself; newer than rv: the snapshot is extended, as in LSA
// (Riegel, Felber, Fetzer, DISC 2006), or the transaction aborts), buffers
// writes locally, and at commit try-locks the write stripes (and those of
// the blocks it frees) in order (never waiting while holding one: a busy
// lock aborts), takes a write version wv = clock + 1 without writing the
// clock (GV5 of TL2; X8 of tx_layout.hpp), validates the read set, writes its
// redo log, marks it committed (the commit point), applies it and releases
// the stripes with wv.
// Conflicts retry with randomised exponential backoff; after kIrrevocableAfter
// aborts a transaction takes the irrevocable token, which stops every other
// transaction from starting or committing until it is done (no livelock).
// Reclamation without reader announcements: a commit that unlinks blocks also
// locks every stripe covering them and frees them right after releasing those
// stripes with wv (X5 of tx_layout.hpp); a transaction still reading such a
// block fails its next check (T1, T8), and the heap never unmaps, so a stale
// read cannot fault.
// Reference counts live in the objects' own words (objects.hpp, V2), so they
// commit, abort and recover with the rest of the write set; the blocks whose
// count reached zero are collected just before the commit point (T7, deferred
// reference counting with a zero-count table: Deutsch and Bobrow, CACM 1976).
// Crash safety: see tx_layout.hpp (X1-X8) and TxHeap's recovery hook.
//
// Invariants:
//   T1. Opacity: every value Tx::read has returned belongs to the snapshot
//       at the current rv (or to the transaction's own writes); rv only moves
//       forward by an extension that revalidates every earlier read (X8). A
//       read that cannot be placed there throws TxConflict before returning,
//       so user code never sees a half-applied state of another transaction.
//   T2. A read-only transaction writes no shared word: it announces nothing
//       (X5), only loads the clock (X8), and its commit is local. Four
//       exceptions, the first three never while no process has died and the
//       transaction commits within kIrrevocableAfter attempts: a thread's
//       first transaction on a heap takes a heap slot; after
//       kIrrevocableAfter aborts a transaction, read-only or not, takes the
//       irrevocable token (no livelock needs a way to stop the writers that
//       keep aborting it); and a transaction that keeps aborting helps
//       recover dead slots (Heap::recover, recover_orphans); and a
//       transaction that meets a version the clock has not reached (a
//       commit's, GV5) advances the clock to it (X8): one successful
//       compare-exchange of the clock (alone on its page) per such version,
//       whoever meets it. Also outside
//       the letter: while a dead process's record waits for a slotted thread
//       (the table's `deferred` count), every 64th begin helps finish it; the
//       thread's own record is settled at begin when a recovery left it
//       marked; and a read-only transaction that allocates (Tx::allocate)
//       takes and returns heap blocks, which writes the allocator's words.
//   T3. Only the words a transaction touches are recorded (read set: stripes;
//       write set: words).
//   T4. Unsynchronised access (Heap::ptr and plain loads/stores) bypasses all
//       of this: it may see torn, half-applied states and its writes are
//       invisible to validation. Use it only on data no transaction changes
//       concurrently (e.g. before other processes attach).
//   T5. The write set names no word of a block freed at once during the
//       transaction: retire() of a block the transaction allocated frees it
//       immediately (it was never published) and drops the writes buffered
//       for it, so commit never applies them to the block's next owner. (A
//       published block in frees[] may still be written, e.g. its count:
//       those writes are applied before it is freed.)
//   T6. Nothing that can fail runs after the commit point: the frees are
//       checked before it (each retired block published and retired once),
//       and should an exception still escape after it, rollback() undoes
//       nothing (the record keeps the rest of the work for settle()).
//   T7. Blocks named by collect_at_commit() are offered to their collector
//       at commit, before the write set is locked, until none is left (a
//       collector may name more); one that a collector retired is never
//       offered again in the transaction. A retry or abort forgets them all
//       (begin() starts afresh), so only the attempt that commits collects.
//   T8. Immutable words (objects.hpp V1: blobs, tuples, a record's schema
//       and field count; written only before the commit that publishes their
//       block, never after) are read without recording them: peek() is an
//       unvalidated atomic load, and what was peeked from block b is used
//       only after settled(b), called after the peeks, found the stripe of
//       b's first word unlocked at a version <= rv (b's offset came from a
//       read valid at rv, or from a settled peek of the tuple holding it).
//       That one stripe suffices: while b is allocated its words do not
//       change, and its freer bumps all of b's stripes before anyone can
//       write b again (X5). A peek that returned a later owner's store is
//       ordered, by that owner's release fence after allocating (T9) and the
//       peek's acquire, before a stripe load that sees the freer's version
//       (> rv: the freer unlinked b after snapshot rv) or a later one. A
//       length or offset is peeked, settled, and only then used to size a
//       copy or to be followed. (The allocator's own header stores into a
//       reused run are plain stores outside this argument; on x86 the order
//       holds by TSO; seen, not changed.)
//   T9. Fresh blocks are initialised with atomic stores (relaxed is enough:
//       the publishing commit's release orders them), after the release fence
//       Tx::allocate issues (detail::fresh_block_fence(), for a block taken
//       from the heap directly): a transaction holding a stale offset to the
//       block's previous incarnation may be peeking at the same words (T8).
//   T10. Bounded on corrupt memory: a stripe lock that names no slot, or an
//       orphan lock recovery does not clear within kUnexplainedAfter
//       attempts, fails the transaction with Error(bad_segment) rather than
//       retrying for ever (tx.cpp wait_unlocked); so does any transaction
//       still aborting after kGiveUpAfter attempts, irrevocable for most of
//       them (tx.cpp backoff). fuzz/heap_fuzz.cpp drives corrupt heaps.
//   T11. A taken block (take()) is logged in frees[] like a retired one; at
//       commit it is unpublished into the committing thread's heap slot
//       instead of freed (TxHeap::free_entry with keep). Recovery of a dead
//       committer frees it as any logged free: the process that would have
//       read it is dead. So it is freed exactly once, by its taker or by
//       recovery.
//   T12. A transaction that found a root missing (objects.hpp get_root: no
//       cell yet, so nothing it could read and validate) keeps its snapshot:
//       pin_snapshot() makes every later extension fail, so a read newer
//       than rv aborts it. A root created and committed by another
//       transaction after the look then either is never read (this one
//       serialises first) or aborts this one, which retries and finds it;
//       two get-or-create transactions cannot both create it and lose one.
//
// Every process that changes objects must attach the TxHeap (TxHeap::attach)
// right after opening the heap: attaching installs the recovery hook that
// finishes a dead slot's transaction. Heap::open recovers dead slots before a
// hook can be installed; a record such a recovery skipped is finished later
// (X7 of tx_layout.hpp: by the slot's next owner, by a transaction that keeps
// aborting, or by recover_orphans()), exactly for the state of its shared
// words, but a block caught between publish() and the log's next word may
// then leak. A process that reaps a dead worker should therefore call
// heap.recover() (with the TxHeap attached) before starting the next one.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "troupe/shm/detail/tx_layout.hpp"
#include "troupe/shm/heap.hpp"

namespace troupe::shm {

// Thrown inside a transaction when it must abort and retry; atomically()
// catches it. User code must let it pass (or rethrow it).
struct TxConflict {};

struct TxStats {
  std::uint64_t commits = 0;
  std::uint64_t aborts = 0;
  std::uint64_t irrevocable = 0;
};

class Tx;

// One thread's statistics for one TxHeap: written only by that thread (a
// load and a store, no shared read-modify-write per transaction), summed by
// TxHeap::stats().
struct TxCounters {
  std::atomic<std::uint64_t> commits{0}, aborts{0}, irrevocable{0};
  static void bump(std::atomic<std::uint64_t>& c) {
    // Relaxed: statistics; the owning thread is the only writer.
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
};

class TxHeap {
 public:
  // The TxHeap of this heap in this process (created and its hook installed on
  // first call; the shared table is created by the first process).
  static TxHeap& attach(Heap& heap);
  // Forget the TxHeap of this heap (call before closing the Heap).
  static void detach(Heap& heap);

  Heap& heap() const { return *heap_; }
  detail::TxTable& table() const { return *table_; }

  // Single-word atomic operations on an int value (`word` is its cell's
  // payload word: payload_word() in objects.hpp), no transaction needed
  // (linearizable with transactions: they lock the word's stripe and publish
  // a new version). The word must stay allocated while they run (e.g. a
  // record field). Anything but an int value there: Error(invalid_argument).
  // Called inside a transaction on this TxHeap they are part of it (commit,
  // roll back and retry with it); inside one on another TxHeap they throw.
  std::int64_t fetch_add(Offset word, std::int64_t delta);
  std::uint64_t exchange(Offset word, std::uint64_t value);
  std::uint64_t load(Offset word);  // a consistent single-word read

  TxStats stats() const;  // this process's counters

  // For tests: stripes still locked, and slot records not idle (after every
  // process is quiescent and recovered, both must be 0).
  std::size_t stuck_locks() const;
  std::size_t busy_records() const;
  // Finishes the records of slots that no process holds any more (their
  // slot was recovered by a process without the hook: rare since S2 of
  // src/shm/slots.cpp, where one that needs a slot or space found only dead ones).
  // Safe at any time (X7 of tx_layout.hpp); transactions call it after many
  // aborts, and a thread that claims such a slot finishes its record itself.
  // Returns how many records it looked at.
  std::size_t recover_orphans();
  // Log entries recoveries without the hook left unsettled (each may be one
  // leaked block; see X6 of tx_layout.hpp).
  std::uint64_t unsettled() const { return table_->unsettled.load(); }
  // Published bytes the TxHeap itself holds (its table and the slots' redo
  // logs), for leak accounting at quiescence.
  std::size_t tx_heap_bytes() const;

  explicit TxHeap(Heap& heap);
  std::uint64_t serial() const { return serial_; }
  TxHeap(const TxHeap&) = delete;
  TxHeap& operator=(const TxHeap&) = delete;

  // ---- internals used by Tx and the hook ----
  void recover_slot(unsigned slot, bool in_hook, bool orphan);
  bool claim(unsigned slot, bool orphan, unsigned me, std::uint64_t& phase, std::uint64_t& prev);
  bool slot_alive(unsigned slot) const;
  void clear_stale_token();
  // The record of `slot` (the caller's own) made idle; returns its seq. The
  // record is idle but after a death: that check inline, the rest out of line.
  std::uint64_t settle(unsigned slot) {
    // Acquire: pairs with the release store that made it idle.
    std::uint64_t s = table_->slots[slot].state.load(std::memory_order_acquire);
    return detail::is_idle(s) ? detail::seq_of(s) : settle_slow(slot);
  }
  std::uint64_t settle_slow(unsigned slot);
  // Frees a block of a committed transaction's frees[] (X5); with `keep`
  // (Tx::take, T11) it only takes it back from the shared data.
  void free_entry(std::atomic_ref<std::uint64_t> entry, Offset block, bool keep = false);
  bool finish_entry(std::atomic_ref<std::uint64_t> entry, bool in_hook);
  // X9: finishes a record's kTxLogSwap phase (its owner, or the one party
  // that claimed it, X7); true when the hook left a block for a slotted thread.
  bool finish_log_swap(detail::SlotRecord& r, bool in_hook);
  std::shared_ptr<TxCounters> new_counters();  // registers a Tx's counters

 private:
  friend class Tx;
  std::uint64_t serial_;  // unique per TxHeap in this process, never reused
  Heap* heap_;
  void* base_;
  std::string name_;
  detail::TxTable* table_;
  mutable std::mutex counters_mu_;
  // Every thread's counters (kept after it ends), under counters_mu_.
  std::unordered_map<std::thread::id, std::shared_ptr<TxCounters>> counters_;
};

namespace detail {
// T1's seqlock read of one word under its stripe (Tx::read, Tx::read_slow,
// SnapshotOp::read). v1 acquire: pairs with the writer's release of the
// stripe, so the word is at least as new as v1. The word's load is acquire
// and every writer stores words with release after locking the stripe: if
// we read a word a writer stored, we also see its lock (or later) in v2, and
// the acquire keeps v2's load after the word's. So v1 == v2, unlocked, means
// no writer came between (no fence: free on x86, understood by TSan).
//   v1 is seq_cst, not just acquire, for X8 (c): it must follow the reader's
// clock load in the single total order (the same plain load on x86).
struct StripeRead {
  std::uint64_t v1, val, v2;
  // The word's value at a version <= rv.
  bool at_or_before(std::uint64_t rv) const {
    return v1 == v2 && !is_locked(v1) && version_of(v1) <= rv;
  }
};
inline StripeRead stripe_read(std::atomic<std::uint64_t>& lk, std::uint64_t* p) {
  StripeRead r;
  r.v1 = lk.load();
  r.val = std::atomic_ref(*p).load(std::memory_order_acquire);
  r.v2 = lk.load(std::memory_order_relaxed);
  return r;
}
}  // namespace detail

class Tx {
 public:
  // Reads a word (T1). Throws TxConflict when it cannot be placed at rv.
  // Inline: the common case (nothing written yet, the stripe unlocked and
  // within the snapshot) is the seqlock read of Tx::read_slow without a call.
  std::uint64_t read(Offset word) {
    if (writes_.empty() && (word & 7) == 0 && word != null_offset) [[likely]] {
      const std::uint64_t s = detail::stripe_of(word);
      const detail::StripeRead r =
          detail::stripe_read(table_->stripes[s], heap_->ptr<std::uint64_t>(word));
      if (r.at_or_before(rv_)) [[likely]] {
        reads_.push_back(static_cast<std::uint32_t>(s));  // T3
        return r.val;
      }
    }
    return read_slow(word);
  }
  void write(Offset word, std::uint64_t value);

  template <class T>
  T read_as(Offset word) {
    static_assert(sizeof(T) == 8 && std::is_trivially_copyable_v<T>);
    std::uint64_t w = read(word);
    T t;
    std::memcpy(&t, &w, 8);
    return t;
  }

  // T8: an unvalidated load of a word of an immutable block, and the check
  // that makes the words peeked from `block` so far usable: true when they
  // belong to the snapshot; false when the snapshot was extended or a lock
  // waited for instead (peek them again, then call settled() again); throws
  // TxConflict when the block may have been freed since its offset was read
  // through shared words of this transaction (objects.hpp V2 for handles).
  std::uint64_t peek(Offset word) const {
    check_aligned(word);
    // Acquire: T8 (pairs with a later owner's release fence after allocating).
    return std::atomic_ref(*heap_->ptr<std::uint64_t>(word)).load(std::memory_order_acquire);
  }
  void peek_words(Offset first, std::uint64_t* out, std::size_t n) const;  // n words from first
  bool settled(Offset block);

  // A fresh block, private to this transaction until it commits (initialise
  // it through heap().ptr() with atomic stores, T9; it is freed if the
  // transaction aborts).
  Offset allocate(std::size_t bytes);
  // Frees `block` when this transaction commits, after locking and releasing
  // every stripe of it (X5). The caller has unlinked it in this transaction.
  // A block allocated by this transaction is freed now, with its buffered
  // writes (T5).
  void retire(Offset block);
  // As retire(), but at commit the block becomes this process's own instead
  // of being freed (T11): the caller reads it in place (its content is
  // immutable, objects.hpp V1) and frees it with Heap::free() when done; if
  // the process dies first, the heap frees it. The block must be published
  // (not allocated by this transaction).
  void take(Offset block);
  bool allocated_here(Offset block) const;
  // Deferred reference counting (T7; objects.hpp V2): `block`'s count may be
  // zero when this transaction ends. At commit, before the commit point,
  // collect(tx, block, arg) runs for it inside the transaction (it may read,
  // write, retire and name more blocks, and throw TxConflict); it returns
  // true when it retired the block, which is then never offered again.
  using Collector = bool (*)(Tx& tx, Offset block, std::uint64_t arg);
  void collect_at_commit(Offset block, std::uint64_t arg, Collector collect);

  Heap& heap() const { return *heap_; }
  TxHeap& tx_heap() const { return *tx_heap_; }
  std::uint64_t read_version() const { return rv_; }
  // T12: no extension of the snapshot from here to the end of this attempt.
  void pin_snapshot() noexcept { pinned_ = true; }
  bool read_only() const { return writes_.empty(); }
  unsigned attempt() const { return attempt_; }

  // ---- driven by atomically() ----
  explicit Tx(TxHeap& txh);
  void begin();
  void commit();
  void rollback();  // after an abort or a user exception
  void backoff();
  void finish();  // gives up the transaction for good (user exception)
  ~Tx();

 private:
  struct WriteEntry {
    Offset word;
    std::uint64_t value;
  };
  [[noreturn]] void conflict();
  std::uint64_t read_slow(Offset word);  // read(): a buffered write, a lock, a newer version
  void trace_commit() noexcept;
  // Every word a transaction reads or writes is 8-aligned and not null; an
  // offset that is not came from corrupt memory (T10: bad_segment, not
  // undefined behaviour).
  void check_aligned(Offset word) const {
    if ((word & 7) != 0 || word == null_offset) [[unlikely]]
      misaligned(word);
  }
  [[noreturn]] void misaligned(Offset word) const;
  [[noreturn]] void corrupt_lock(std::uint64_t v, const char* why);  // T10
  static constexpr unsigned kUnexplainedAfter = 256;                 // T10
  static constexpr unsigned kGiveUpAfter = 1024;                     // T10
  std::uint64_t last_orphan_ = 0;           // T10: a lock value an earlier attempt found orphaned
  bool extend(std::uint64_t seen_version);  // X8: moves rv_ forward or fails
  void wait_unlocked(const std::atomic<std::uint64_t>& lk);
  void lock_freed_blocks();  // X5: adds the frees' stripes to lock_order_
  WriteEntry* find_write(Offset word);
  void reindex();  // rebuilds write_index_ from writes_
  void release_locks(std::size_t n, std::uint64_t version_word, bool restore);
  void take_irrevocable();
  void grow_log(std::uint64_t cap);  // X9: replaces our record's log by one of cap entries

  TxHeap* tx_heap_;
  Heap* heap_;
  detail::TxTable* table_;
  std::shared_ptr<TxCounters> counters_;  // this thread's (statistics)
  detail::SlotRecord* rec_ = nullptr;
  unsigned slot_ = 0;
  std::uint64_t rv_ = 0;
  std::uint64_t trace_t0_ = 0;  // begin's time, while tracing (trace.hpp)
  std::uint64_t seq_ = 0;       // the record's transaction count (X7)
  std::uint64_t deferred_tick_ = 0;
  unsigned attempt_ = 0;
  unsigned settle_tries_ = 0;  // extensions by settled() since the last success
  bool irrevocable_ = false;
  bool pinned_ = false;     // T12: this attempt's snapshot may not be extended
  bool committed_ = false;  // past the commit point (T6)
  std::uint64_t rng_;
  std::vector<std::uint32_t> reads_;  // stripes (T3)
  std::vector<WriteEntry> writes_;
  std::vector<std::uint32_t> write_index_;  // open addressing over writes_, when large
  std::vector<Offset> allocs_;
  std::vector<Offset> frees_;
  std::vector<Offset> taken_;  // T11: the blocks of frees_ kept, not freed
  struct Candidate {
    Offset block;
    std::uint64_t arg;
    Collector collect;
  };
  void collect();  // T7
  std::vector<Candidate> candidates_;
  std::unordered_set<Offset> collected_;
  std::vector<std::uint32_t> lock_order_;
};

namespace detail {
Tx*& current_tx();

// Called (instead of a plain yield) by a transaction that has waited a while
// for another's lock or the irrevocable token. An embedder whose threads hold
// a lock of their own while they run transactions (the Python package: the
// GIL) releases it here, so that the transaction it waits for, run by
// another of its threads, can finish. Null: yield.
using TxWaitHook = void (*)();
void set_tx_wait_hook(TxWaitHook hook) noexcept;

// T9: the release fence issued after a fresh block is allocated, before its
// initialising stores. ThreadSanitizer does not model fences (GCC warns:
// -Wtsan) and never reports a race between two atomic accesses, which are
// all this fence orders, so its builds leave it out.
inline void fresh_block_fence() {
#if !defined(__SANITIZE_THREAD__)
  std::atomic_thread_fence(std::memory_order_release);  // a compiler barrier on x86
#endif
}
Tx& thread_tx(TxHeap& txh);  // this thread's Tx for txh (reset for a new transaction)
}  // namespace detail

// Runs f(tx) as one transaction: all of its writes become visible at once or
// none does. Retries f on conflict (f must have no effects outside tx but
// idempotent local ones); a user exception aborts and propagates. Nested
// calls on the same thread join the outer transaction; a nested call on
// another heap's TxHeap throws Error (it could not commit with the outer one).
template <class F>
auto atomically(TxHeap& txh, F&& f) -> decltype(f(std::declval<Tx&>())) {
  using R = decltype(f(std::declval<Tx&>()));
  if (Tx* outer = detail::current_tx()) {
    if (&outer->tx_heap() != &txh)
      throw Error(Errc::invalid_argument, "atomically() on heap '" + txh.heap().name() +
                                              "' inside a transaction of heap '" +
                                              outer->heap().name() +
                                              "': transactions cannot span heaps");
    return f(*outer);
  }
  Tx& tx = detail::thread_tx(txh);  // reused: its buffers keep their capacity
  for (;;) {
    tx.begin();
    detail::current_tx() = &tx;
    try {
      if constexpr (std::is_void_v<R>) {
        f(tx);
        tx.commit();
        detail::current_tx() = nullptr;
        return;
      } else {
        R r = f(tx);
        tx.commit();
        detail::current_tx() = nullptr;
        return r;
      }
    } catch (const TxConflict&) {
      detail::current_tx() = nullptr;
      tx.rollback();
      tx.backoff();
    } catch (...) {
      detail::current_tx() = nullptr;
      tx.rollback();
      tx.finish();
      throw;
    }
  }
}

template <class F>
auto atomically(Heap& heap, F&& f) -> decltype(f(std::declval<Tx&>())) {
  return atomically(TxHeap::attach(heap), std::forward<F>(f));
}

}  // namespace troupe::shm
