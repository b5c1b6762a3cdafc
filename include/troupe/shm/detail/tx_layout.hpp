// troupe/shm/detail/tx_layout.hpp: the shared bytes of the transaction layer,
// as every process that maps the heap sees them. Offsets only, no pointers.
//
// One TxTable per heap (a published page run; header_words()[kTableWord]
// holds its offset, set once by compare-exchange). It holds the global version
// clock, the irrevocable token, one SlotRecord per heap process slot (the slot
// a thread holds names the record it uses) and the stripe lock table of TL2
// (Dice, Shalev, Shavit, "Transactional Locking II", DISC 2006): every 8-byte
// word of the heap is guarded by the versioned lock stripes[stripe_of(word)].
//
// Lock word: unlocked = version << 1; locked = ((slot + 1) << 1) | 1.
// Redo log (one published block per SlotRecord, rec.log; capacity rec.log_cap
// entries), sections of log_cap entries each:
//   writes[log_cap]  {word offset, new value}   (2 words)
//   locks[log_cap]   {stripe, version before}   (2 words)
//   allocs[log_cap]  offset of a block this transaction allocated
//   frees[log_cap]   offset of a block it unlinked (0 once freed)
// Invariants:
//   X1. Only the thread holding heap slot s writes SlotRecord s and its log,
//       except that a recoverer of dead slot s (holding s's kernel lock, inside
//       the heap's recovery hook) finishes or discards s's transaction.
//   X2. A stripe is locked only by compare-exchange from an unlocked value,
//       after locks[n_locks] = {stripe, that value} and n_locks+1 are stored;
//       so every lock a slot holds is in its log, and recovery releases exactly
//       the listed stripes whose word still says "locked by s".
//   X3. state == kCommitted is the commit point: it is stored (release) only
//       after every write-set stripe is locked, the read set is validated and
//       the whole redo log is written. Before it, recovery discards the log;
//       after it, recovery rolls the log forward.
//   X4. Every write is applied before the first lock is released, so a write
//       whose stripe is still locked by s has not been overwritten by anyone:
//       re-applying it (recovery) is idempotent; one whose stripe was released
//       was applied already.
//   X5. A commit that frees blocks (frees[]) locks, with its write set and
//       by the same all-or-none try-locks (X2), every stripe that covers a
//       word of each such block (all stripes, when a block has as many words
//       as there are stripes or more), releases them with its wv after applying,
//       and only then frees the blocks, at once: no grace period, and no
//       reader announces anything. A transaction whose snapshot precedes the
//       free (wv > rv) and that loads a word of the block, even after the
//       block was reused, meets at its check of that word's stripe (after
//       the load: Tx::read, Tx::settled; T1, T8 of tx.hpp) the lock or a
//       version above rv, so no value of the reused block is ever accepted
//       as long as the transaction reached the block through shared words
//       it read (their change makes the extension past the free fail). A
//       handle kept from an earlier transaction has no such link: objects.hpp
//       V2 says what it may do. The price of locking: freeing a block of
//       512 KiB or more locks all 65 536 stripes (a log of that many entries
//       and a commit every concurrent one conflicts with).
//       Reading a freed or reused block cannot fault: the heap maps its whole
//       reservation at open and unmaps nothing before close (P1 of
//       heap_state.hpp); lengths read from such blocks are used only once
//       checked (T8). Writers announce nothing either: their reads are
//       checked the same way when made, and again at commit (validation).
//   X6. allocs[] and frees[] entries carry flags in their low bits (blocks are
//       16-byte aligned): kEntryPublishing before publish(), kEntryPublished
//       after it (both before the commit point), kEntryFreeing before a
//       published block is unpublished to be freed; an entry is cleared before
//       its block is freed. So a block is freed by exactly one party whatever
//       step a death interrupts (TxHeap::free_entry / finish_entry).
//   X7. One party at a time finishes a record: its owner, or a recoverer that
//       won the compare-exchange of state to kRecovering | itself from the
//       value it saw (same seq) after seeing the owner's slot dead. Steps are
//       idempotent (lock words compared with "locked by s", frees[] and
//       allocs[] entries cleared by exchange before use), so a recoverer that
//       dies is replaced by another that starts over.
//   X8. The clock (GV5 of TL2, with LSA snapshot extension). A commit takes
//       wv = c + 1 where c is a load of the clock after its last lock, and
//       leaves the clock as it is: commits that run together may share a
//       version, and the clock's line stays shared in the caches of every
//       core instead of moving with each commit. The clock moves only when
//       needed: a transaction that meets an unlocked version v above its rv
//       advances the clock to v (compare-exchange to the larger value)
//       before it takes a snapshot >= v; a single-word atomic op
//       (TxHeap::fetch_add, exchange) takes v = max(its stripe's version + 1,
//       c + 1) by a fetch_add that read c, advancing to v when that is
//       larger; Dict::increment's op (SO1-SO2 of src/shm/tx_private.hpp) takes
//       wv = c + 1 after its lock, as a commit with one write does; recovery
//       advances the clock to a version before releasing with it. So:
//         Q. A released version is never above clock + 1 (a commit's c was a
//            value of the clock, which never goes down; the others advance
//            first). A version above it is corrupt memory (T10).
//       Stripe lock compare-exchanges, clock operations and the stripe loads
//       the argument uses (a read's first load, extension's and validation's
//       loads) are seq_cst, so they lie in one total order S; a read's second
//       load and the wait for a lock may be weaker. Why validation stays correct:
//       (a) Versions of a stripe never decrease: a locker's clock load
//           follows the previous release of the stripe (via the lock's
//           acquire), so it reads at least the previous locker's c: equal
//           versions are possible, smaller ones are not.
//       (b) A commit (or op) that locks stripe s after transaction T loaded
//           rv releases s with a version > rv: its clock read follows its
//           lock, which follows T's clock load in S, so it reads >= rv. So a
//           stripe of T's read set still unlocked at a version <= rv has not
//           changed since T read it.
//       (c) If T's snapshot rv >= wv of commit W, T sees each of W's locks or
//           a later value of the stripe: W's locks precede W's clock load,
//           which read wv - 1 < rv, so it precedes in S the write that took
//           the clock past wv - 1, which precedes (or is) the load or advance
//           that gave T its rv, which precedes T's stripe loads. So T never
//           reads a word W wrote with its value before W; with (b), every
//           read accepted at a version <= rv is the word's value at
//           snapshot rv (T1). The same holds for a single-word op.
//       Validation is always done: with shared versions, TL2's shortcut
//       (skip it when wv == rv + 1) says nothing about other commits.
//       Extension: T, meeting an unlocked version v > rv, advances the clock
//       to v, loads it as rv' (>= v) and revalidates its read set at <= rv:
//       by (b) nothing it read changed, by (c) nothing committed at <= rv'
//       is hidden, so all its reads belong to snapshot rv'.
//       Why GV5 and not GV1 (a fetch_add of the clock per commit): with GV1
//       the clock's line moved between the cores of every committing
//       process; in bench_shm_tx's increments from 2 processes it took a
//       quarter of the samples, and GV5 took that row from 9.2 to 14.6 Mop/s
//       (1 process: 18.3 to 16.4, the price of always validating).
//   X9. A record's redo log is replaced (grown) in a phase of its own,
//       kTxLogSwap, with two words that are X6 entries: log_new (the fresh
//       block: kEntryPublishing before publish(), kEntryPublished after) and
//       log_old (the block it replaces, retired by free_entry). The swap
//       sets log_old, then log_cap and log, then clears log_new, and frees
//       log_old last; whoever finishes it (TxHeap::finish_log_swap: the
//       owner, or a recoverer, X7) repeats what is left of that. So `log`
//       names one published block (none before the record's first log) and
//       every other block of the swap is freed once, whatever step a death
//       interrupts; only a recovery without the hook that meets log_new
//       still kEntryPublishing cannot tell whether the heap freed it, and
//       counts it in `unsettled`, as X6's entries are. Since S2 of
//       src/shm/slots.cpp, a process without the hook recovers a dead slot
//       only when it must (no other slot, a full heap, a dead holder of the
//       root lock); Heap::open leaves it to TxHeap::attach, which recovers
//       with the hook.
//       (Until TX5 the log was cleared and freed, and the fresh
//       one published and then stored: a death between those steps leaked
//       a block, 3 KiB for a first log.)
#pragma once

#include <atomic>
#include <cstdint>

namespace troupe::shm::detail {

// The table's format and protocol, and the objects' layout built on it
// (objects.hpp): "TROUPTX5" since a log is replaced in a phase of its own
// (X9; TX4: commits stopped advancing the clock, X8, GV5; TX3: readers
// stopped announcing epochs, X5, and containers carry a stamp, V2); a heap
// whose table has another magic is refused (mixing them would be unsafe: a
// TX4 process would not know the kTxLogSwap phase, nor a TX3 process a
// version above the clock).
inline constexpr std::uint64_t kTxMagic = 0x5452'4f55'5054'5835ull;  // "TROUPTX5"
inline constexpr unsigned kTableWord = 0;  // header_words() index of the table
inline constexpr unsigned kTxSlots = 256;
inline constexpr std::uint64_t kStripeBits = 16;
inline constexpr std::uint64_t kStripes = std::uint64_t{1} << kStripeBits;

enum TxState : std::uint64_t {
  kTxIdle = 0,
  kTxLocking = 1,    // taking commit locks (X2): recovery discards
  kTxCommitted = 2,  // X3: recovery rolls forward
  kTxFreeing = 3,    // applied and unlocked with wv; frees[] being freed (X5)
  kTxAtomicOp = 4,   // a single-word atomic op holds op_stripe
  kTxLogSwap = 5,    // X9: the log being replaced (log_new, log_old)
};

// SlotRecord::state = seq << 32 | recoverer + 1 << 8 | kRecovering? | phase.
// seq counts the owner's transactions (so a recoverer's compare-exchange
// cannot mistake a new transaction for the dead one it looked at: X7);
// kRecovering marks a record some slot `recoverer` is finishing.
// kDeferred: the hook finished everything but heap calls (frees), which need
// a slot of the caller's own (a hook must not take one); any slotted thread
// completes it later (recover_orphans, called by Tx::begin while the table's
// `deferred` count is not 0).
inline constexpr std::uint64_t kRecovering = 0x80;
inline constexpr std::uint64_t kDeferred = 0x40;
inline constexpr std::uint64_t phase_of(std::uint64_t s) { return s & 0x3f; }
inline constexpr bool is_idle(std::uint64_t s) { return (s & 0xff) == kTxIdle; }
inline constexpr unsigned recoverer_of(std::uint64_t s) {
  return static_cast<unsigned>((s >> 8) & 0xff) - 1;
}
inline constexpr std::uint64_t seq_of(std::uint64_t s) { return s >> 32; }

// One per heap slot. Written only by its slot's thread (X1).
struct alignas(128) SlotRecord {
  std::atomic<std::uint64_t> state;  // TxState
  std::atomic<std::uint64_t> wv;     // write version of the committed transaction
  std::atomic<std::uint64_t> log;    // offset of the redo log block (published)
  std::atomic<std::uint64_t> log_cap;
  std::atomic<std::uint64_t> n_writes;
  std::atomic<std::uint64_t> n_locks;
  std::atomic<std::uint64_t> n_allocs;
  std::atomic<std::uint64_t> n_frees;
  std::atomic<std::uint64_t> op_stripe;  // kTxAtomicOp: the stripe held
  std::atomic<std::uint64_t> op_old;     // kTxAtomicOp: its word before locking
  // kTxLogSwap (X9): X6 entries, so plain words used through std::atomic_ref
  // as the log's own entries are; 0 outside the phase.
  std::uint64_t log_new;                  // the fresh log block, flagged
  std::atomic<std::uint64_t> log_new_cap;  // its capacity
  std::uint64_t log_old;                  // the block it replaces, flagged
};

struct TxTable {
  std::uint64_t magic;  // written before the table's offset is published
  std::uint64_t stripe_count;
  // TL2 global version clock (X8, GV5): loaded by every transaction at
  // begin and by every commit; advanced by a transaction that meets a
  // version above it, by single-word ops and by recoverers. On a page of its
  // own: the only word of the table a read-only transaction may write in the
  // common case (T2), which a test checks by mapping the rest read-only.
  alignas(4096) std::atomic<std::uint64_t> clock;
  alignas(4096) std::atomic<std::uint64_t> irrevocable;  // 0 or slot + 1
  // Log entries a recovery without the hook could not settle (X6): each may
  // be one leaked block. Any recoverer adds; statistics and tests read.
  std::atomic<std::uint64_t> unsettled;
  std::atomic<std::uint64_t> deferred;  // records marked kDeferred (hooks add, finishers remove)
  alignas(128) SlotRecord slots[kTxSlots];
  alignas(128) std::atomic<std::uint64_t> stripes[kStripes];
};

// The tag word of an int value's cell (objects.hpp: {tag, payload}, tag =
// Kind::integer); the single-word atomic operations change only words whose
// preceding word holds it.
inline constexpr std::uint64_t kIntCellTag = 2;

inline constexpr std::uint64_t kEntryPublishing = 1;
inline constexpr std::uint64_t kEntryPublished = 2;
inline constexpr std::uint64_t kEntryFreeing = 4;
inline constexpr std::uint64_t kEntryFlags = 15;

inline std::uint64_t stripe_of(std::uint64_t word_offset) {
  // Consecutive words map to consecutive stripes (no false conflicts inside a
  // 512 KiB window); the high bits fold in so distant objects spread.
  std::uint64_t w = word_offset >> 3;
  return (w ^ (w >> kStripeBits) * 0x9E37u) & (kStripes - 1);
}
inline constexpr std::uint64_t locked_word(unsigned slot) {
  return (std::uint64_t{slot + 1} << 1) | 1;
}
inline constexpr bool is_locked(std::uint64_t w) { return w & 1; }
inline constexpr std::uint64_t version_of(std::uint64_t w) { return w >> 1; }

}  // namespace troupe::shm::detail
