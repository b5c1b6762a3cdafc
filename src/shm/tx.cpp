// src/shm/tx.cpp: Tx, one running transaction (TL2 with a shared redo log):
// begin, read (with snapshot extension), write, peek/settled for immutable
// words, allocate/retire/take, collect at commit, commit, rollback and
// backoff; and the pacing of waits (relax and the embedder's wait hook).
// Invariants T1-T11 (tx.hpp) and X1-X8 (detail/tx_layout.hpp) are cited
// where they are kept.
#include "troupe/shm/tx.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <map>
#include <mutex>
#include <thread>

#include "shm/fault.hpp"
#include "shm/tx_private.hpp"
#include "troupe/detail/platform.hpp"
#include "troupe/trace.hpp"

namespace troupe::shm {

using namespace detail;

namespace {

constexpr unsigned kIrrevocableAfter = 24;  // aborts before taking the token
constexpr std::size_t kLinearWrites = 16;   // write-set lookups scan up to here
constexpr unsigned kMaxExtensions = 4;      // snapshot extensions per read (X8)

std::atomic<detail::TxWaitHook> wait_hook{nullptr};

}  // namespace

void detail::relax(unsigned n) {
  if (n < 8) {
    troupe::detail::Spin::backoff(n);  // 2^n pauses (PF2 of platform.hpp)
  } else if (detail::TxWaitHook h = wait_hook.load(std::memory_order_relaxed)) {
    h();  // e.g. the Python package: yields with the GIL released
  } else {
    troupe::detail::Spin::yield_thread();
  }
}

void detail::set_tx_wait_hook(TxWaitHook hook) noexcept {
  wait_hook.store(hook, std::memory_order_relaxed);  // set once, before transactions run
}

Tx*& detail::current_tx() {
  static thread_local Tx* t = nullptr;
  return t;
}

Tx& detail::thread_tx(TxHeap& txh) {
  static thread_local std::unique_ptr<Tx> cached;
  static thread_local std::uint64_t serial = 0;
  if (!cached || serial != txh.serial()) {
    cached = std::make_unique<Tx>(txh);
    serial = txh.serial();
  }
  return *cached;
}

// ---- Tx -----------------------------------------------------------------------

Tx::Tx(TxHeap& txh)
    : tx_heap_(&txh),
      heap_(&txh.heap()),
      table_(&txh.table()),
      counters_(txh.new_counters()),
      rng_(reinterpret_cast<std::uintptr_t>(this) * 0x9E3779B97F4A7C15ull + 1) {}

Tx::~Tx() { finish(); }

void Tx::finish() {
  if (irrevocable_) {
    std::uint64_t tok = slot_ + 1;
    table_->irrevocable.compare_exchange_strong(tok, 0);
    irrevocable_ = false;
  }
  attempt_ = 0;
}

void Tx::take_irrevocable() {
  for (unsigned n = 0;; ++n) {
    std::uint64_t z = 0;
    if (table_->irrevocable.compare_exchange_weak(z, slot_ + 1)) break;
    relax(n < 10 ? n : 10);
    if (n % 4096 == 4095) tx_heap_->clear_stale_token();
  }
  irrevocable_ = true;
  counters_->bump(counters_->irrevocable);
}

void Tx::begin() {
  slot_ = heap_->slot_index();  // may recover dead slots
  if (slot_ >= kTxSlots) throw Error(Errc::invalid_argument, "heap slot beyond the tx table");
  rec_ = &table_->slots[slot_];
  seq_ = tx_heap_->settle(slot_);
  // Relaxed: a hint; recover_orphans synchronises through the records.
  if (table_->deferred.load(std::memory_order_relaxed) != 0 && ++deferred_tick_ % 64 == 0)
    tx_heap_->recover_orphans();
  if (attempt_ >= kIrrevocableAfter && !irrevocable_) take_irrevocable();
  if (!irrevocable_)
    for (unsigned n = 0;; ++n) {
      std::uint64_t tok = table_->irrevocable.load();
      if (tok == 0) break;
      if (tok == slot_ + 1) {  // left by a dead previous owner of our slot
        table_->irrevocable.compare_exchange_strong(tok, 0);
        break;
      }
      relax(n < 10 ? n : 10);
      if (n % 4096 == 4095) tx_heap_->clear_stale_token();
    }
  // The snapshot (T2: a load, nothing announced; X5). Seq_cst: X8 (b, c).
  rv_ = table_->clock.load();
  settle_tries_ = 0;
  pinned_ = false;  // T12
  reads_.clear();
  writes_.clear();
  write_index_.clear();
  allocs_.clear();
  frees_.clear();
  taken_.clear();
  candidates_.clear();
  if (!collected_.empty()) collected_.clear();  // clear() sweeps every bucket
  committed_ = false;
  if (troupe::detail::trace::on()) [[unlikely]]
    trace_t0_ = troupe::detail::trace::now_ns();
}

// trace.hpp: a commit's event, from begin to now.
void Tx::trace_commit() noexcept {
  try {  // after the commit point: nothing here may fail the transaction
    troupe::detail::trace::complete(
        "tx", "commit", trace_t0_, troupe::detail::trace::now_ns(),
        fmt::format("\"heap\":{},\"reads\":{},\"writes\":{},\"attempt\":{}",
                    troupe::detail::trace::json_string(heap_->name()), reads_.size(),
                    writes_.size(), attempt_));
  } catch (...) {  // out of memory while tracing: the event is lost
  }
}

// T2: an abort writes nothing shared either; the retry extends its snapshot
// past any version it meets again (X8).
void Tx::conflict() { throw TxConflict{}; }

std::uint64_t Tx::read_slow(Offset word) {
  check_aligned(word);
  if (!writes_.empty())
    if (WriteEntry* w = find_write(word)) return w->value;
  const std::uint64_t s = stripe_of(word);
  auto& lk = table_->stripes[s];
  auto* p = heap_->ptr<std::uint64_t>(word);
  for (unsigned tries = 0;;) {
    const StripeRead r = stripe_read(lk, p);  // T1 (tx.hpp)
    if (r.at_or_before(rv_)) [[likely]] {
      reads_.push_back(static_cast<std::uint32_t>(s));  // T3
      return r.val;
    }
    if (is_locked(r.v1) || is_locked(r.v2)) {  // a commit in progress: wait for it
      wait_unlocked(lk);
      continue;
    }
    // A commit came between the loads (read again), or the word is newer than
    // the snapshot but settled (move the snapshot forward, X8, and read
    // again); a failed extension, or too many, aborts.
    if (++tries > kMaxExtensions || (r.v1 == r.v2 && !extend(version_of(r.v1)))) conflict();
  }
}

// Waits until `lk` is unlocked instead of aborting: a transaction holds no
// stripe before its commit (X2), so waiting here cannot close a cycle, and
// the holder (a commit, a single-word op or a recoverer) never waits while it
// holds stripes, so it releases them soon unless it is dead: a holder whose
// slot is dead is left to recovery (backoff()) and we abort. So is a lock
// that names our own slot (we hold none before commit) or a slot whose record
// is idle (every holder marks its record first, X2): an orphan that only
// recovery may clear. An abort is always safe. Writes nothing.
// T10: a lock that no slot can hold, or an orphan that recovery has not
// cleared after kUnexplainedAfter attempts (backoff() ran recover() and
// recover_orphans() several times meanwhile), is not one a crash can leave:
// the heap's memory is corrupt, and retrying would go on forever. The
// transaction fails with Error(bad_segment) instead.
void Tx::wait_unlocked(const std::atomic<std::uint64_t>& lk) {
  for (unsigned n = 0;; ++n) {
    // Acquire is enough: the caller loads the stripe again (seq_cst).
    std::uint64_t v = lk.load(std::memory_order_acquire);
    if (!is_locked(v)) return;
    const auto holder = static_cast<unsigned>(v >> 1) - 1;
    if (holder >= kTxSlots) corrupt_lock(v, "names no slot of the table");  // T10
    // The same lock value found orphaned by an earlier attempt is checked at
    // once: recovery ran in between (backoff), and waiting again would only
    // make a corrupt heap slow to report (T10).
    const bool orphan =
        holder == slot_ || ((n % 1024 == 1023 || v == last_orphan_) &&
                            (!tx_heap_->slot_alive(holder) ||
                             is_idle(table_->slots[holder].state.load(std::memory_order_acquire))));
    if (orphan) {
      if (attempt_ >= kUnexplainedAfter)  // T10
        corrupt_lock(v, "belongs to no live transaction and recovery did not clear it");
      last_orphan_ = v;
      conflict();
    }
    relax(n < 10 ? n : 10);
  }
}

void Tx::misaligned(Offset word) const {
  throw Error(Errc::bad_segment,
              fmt::format("heap '{}': word offset {:#x} is null or not 8-aligned: an offset "
                          "read from the heap is corrupt",
                          heap_->name(), word));
}

void Tx::corrupt_lock(std::uint64_t v, const char* why) {
  throw Error(Errc::bad_segment,
              fmt::format("heap '{}': a stripe lock ({:#x}) {} after {} attempts: the heap's "
                          "memory is corrupt",
                          heap_->name(), v, why, attempt_));
}

// X8 (snapshot extension, LSA). Advances the clock to `seen` if it is behind
// (a commit's version, GV5: T2's fourth exception, the only write here),
// takes it as the new snapshot (>= seen) and keeps it only if every stripe
// read so far is still unlocked at a version within the old one: by X8 (b)
// none of them changed since it was read, by X8 (c) every commit with a
// version up to the new snapshot is visible to these loads, so all our reads
// belong to it (T1). A version more than one above the clock (X8 Q) is
// corrupt memory: the extension fails, the transaction aborts, and after
// kGiveUpAfter attempts backoff() fails it with bad_segment (T10).
bool Tx::extend(std::uint64_t seen) {
  if (pinned_) return false;                 // T12
  std::uint64_t now = table_->clock.load();  // seq_cst: X8 (c)
  if (seen > now + 1) return false;          // X8 Q: no run of the protocol releases this (T10)
  if (now < seen) {                          // a commit's version the clock has not reached
    clock_advance(*table_, seen);
    now = table_->clock.load();
  }
  for (std::uint32_t s : reads_) {
    std::uint64_t w = table_->stripes[s].load();  // seq_cst: X8 (c)
    if (is_locked(w) || version_of(w) > rv_) return false;
  }
  rv_ = now;
  return true;
}

void Tx::peek_words(Offset first, std::uint64_t* out, std::size_t n) const {
  if (n == 0) return;
  check_aligned(first);
  auto* p = heap_->ptr<std::uint64_t>(first);
  heap_->ptr(first + 8 * (n - 1));  // the last word is in the heap too (throws if not)
  // Acquire: as peek() (T8).
  for (std::size_t i = 0; i < n; ++i)
    out[i] = std::atomic_ref(p[i]).load(std::memory_order_acquire);
}

// T8. After the peeks of `block`: its first word's stripe unlocked at <= rv
// means the block still held what it was published with when they ran (or
// the snapshot is extended over a newer, unrelated version, and the caller
// peeks again).
bool Tx::settled(Offset block) {
  // Seq_cst (a plain load on x86): after the peeks' acquire loads, and in S
  // as every stripe load of a read (X8 c).
  auto& lk = table_->stripes[stripe_of(block)];
  std::uint64_t v = lk.load();
  if (!is_locked(v) && version_of(v) <= rv_) [[likely]] {
    settle_tries_ = 0;
    return true;
  }
  if (is_locked(v)) {  // the block may be being freed: wait, then peek again
    wait_unlocked(lk);
    return false;
  }
  if (settle_tries_ >= kMaxExtensions || !extend(version_of(v))) conflict();
  ++settle_tries_;
  return false;
}

// X5. Adds to lock_order_ every stripe covering a word of each block this
// transaction frees (every stripe, for a block with as many words as there
// are stripes or more). The sizes are looked up before validation: should a
// block have been freed (and reused) under us, its size may be another's or
// no size at all, but then the word we unlinked it from changed and
// validation fails before anything is applied; a block that is no block at
// all locks nothing here and is refused after validation (T6).
void Tx::lock_freed_blocks() {
  for (Offset b : frees_) {
    std::uint64_t words = 0;
    try {
      words = heap_->usable_size(b) / 8;
    } catch (const Error&) {
      continue;
    }
    if (words >= kStripes) {
      lock_order_.resize(kStripes);
      for (std::uint32_t s = 0; s < kStripes; ++s) lock_order_[s] = s;
      return;
    }
    for (std::uint64_t w = 0; w < words; ++w)
      lock_order_.push_back(static_cast<std::uint32_t>(stripe_of(b + 8 * w)));
  }
}

Tx::WriteEntry* Tx::find_write(Offset word) {
  if (write_index_.empty()) {
    for (auto& w : writes_)
      if (w.word == word) return &w;
    return nullptr;
  }
  std::size_t mask = write_index_.size() - 1;
  for (std::size_t i = (word >> 3) * 0x9E3779B97F4A7C15ull >> 20 & mask;; i = (i + 1) & mask) {
    std::uint32_t e = write_index_[i];
    if (e == 0) return nullptr;
    if (writes_[e - 1].word == word) return &writes_[e - 1];
  }
}

void Tx::write(Offset word, std::uint64_t value) {
  check_aligned(word);
  if (WriteEntry* w = find_write(word)) {
    w->value = value;
    return;
  }
  writes_.push_back({word, value});
  if (writes_.size() <= kLinearWrites) return;
  if (write_index_.size() < writes_.size() * 2) return reindex();
  std::size_t mask = write_index_.size() - 1;
  std::size_t i = (word >> 3) * 0x9E3779B97F4A7C15ull >> 20 & mask;
  while (write_index_[i]) i = (i + 1) & mask;
  write_index_[i] = static_cast<std::uint32_t>(writes_.size());
}

void Tx::reindex() {
  write_index_.clear();
  if (writes_.size() <= kLinearWrites) return;  // find_write scans
  write_index_.assign(std::bit_ceil(std::max<std::size_t>(64, writes_.size() * 4)), 0);
  std::size_t mask = write_index_.size() - 1;
  for (std::size_t k = 0; k < writes_.size(); ++k) {
    std::size_t i = (writes_[k].word >> 3) * 0x9E3779B97F4A7C15ull >> 20 & mask;
    while (write_index_[i]) i = (i + 1) & mask;
    write_index_[i] = static_cast<std::uint32_t>(k + 1);
  }
}

Offset Tx::allocate(std::size_t bytes) {
  Offset o = heap_->allocate(bytes);  // X6: unpublished until the commit point
  // T8, T9: the caller's (relaxed, atomic) initialising stores come after
  // this fence, so a stale reader whose acquire peek returns one of them
  // also sees, in its next stripe load, the release by which the block's
  // last freer bumped the block's stripes (X5).
  fresh_block_fence();
  allocs_.push_back(o);
  return o;
}

bool Tx::allocated_here(Offset block) const {
  return std::find(allocs_.begin(), allocs_.end(), block) != allocs_.end();
}

void Tx::collect_at_commit(Offset block, std::uint64_t arg, Collector collect) {
  candidates_.push_back({block, arg, collect});
}

// T7. Runs before anything is locked, so a collector's reads, writes and
// retirements are ordinary parts of the transaction (validated, logged).
void Tx::collect() {
  while (!candidates_.empty()) {
    Candidate c = candidates_.back();
    candidates_.pop_back();
    if (collected_.contains(c.block)) continue;  // retired (maybe freed) already
    if (c.collect(*this, c.block, c.arg)) collected_.insert(c.block);
  }
}

void Tx::retire(Offset block) {
  auto it = std::find(allocs_.begin(), allocs_.end(), block);
  if (it != allocs_.end()) {  // never published: free it now
    allocs_.erase(it);
    // T5: the block's next owner (maybe an allocation of ours) must not
    // receive the writes we buffered for it.
    const Offset end = block + heap_->usable_size(block);
    if (std::erase_if(writes_,
                      [&](const WriteEntry& w) { return w.word >= block && w.word < end; }))
      reindex();
    heap_->free(block);
    return;
  }
  frees_.push_back(block);
}

void Tx::take(Offset block) {
  if (allocated_here(block))
    throw Error(Errc::invalid_argument,
                fmt::format("Tx::take: block {:#x} was allocated by this transaction, not "
                            "published shared data",
                            block));
  frees_.push_back(block);
  taken_.push_back(block);
}

// X9. Our record is idle: nothing reads its log while the phase lasts.
void Tx::grow_log(std::uint64_t cap) {
  SlotRecord& r = *rec_;
  // Ours until published: the heap frees it if we die before that.
  Offset fresh = heap_->allocate(cap * kLogWordsPerEntry * sizeof(std::uint64_t));
  fresh_block_fence();  // T9: its words are written with atomic stores after it
  // Relaxed: our own record (X1); the release store of the state orders them.
  std::atomic_ref(r.log_new).store(fresh | kEntryPublishing, std::memory_order_relaxed);
  r.log_new_cap.store(cap, std::memory_order_relaxed);
  ++seq_;  // X7: a new phase in the record
  r.state.store(seq_ << 32 | kTxLogSwap, std::memory_order_release);
  heap_->publish(fresh);
  fault_point("tx.log.published");
  std::atomic_ref(r.log_new).store(fresh | kEntryPublished, std::memory_order_relaxed);
  tx_heap_->finish_log_swap(r, false);
  r.state.store(seq_ << 32, std::memory_order_release);
}

void Tx::release_locks(std::size_t n, std::uint64_t version_word, bool restore) {
  LogView L = view(*heap_, *rec_);
  for (std::size_t i = 0; i < n; ++i) {
    auto& lk = table_->stripes[lock_order_[i]];
    // Release: the applied words (or nothing, when restoring) before the
    // stripe is free again; pairs with readers' acquire.
    lk.store(restore ? L.lock_old(i).load(std::memory_order_relaxed) : version_word,
             std::memory_order_release);
  }
}

void Tx::rollback() {
  if (committed_) return;  // T6: an exception after the commit point (nothing to undo)
  // Relaxed/any: our own record (X1); the state store is a release.
  if (rec_ && !is_idle(rec_->state.load(std::memory_order_relaxed)))
    rec_->state.store(seq_ << 32, std::memory_order_release);
  for (Offset a : allocs_) heap_->free(a);
  allocs_.clear();
  ++attempt_;
  counters_->bump(counters_->aborts);
  if (troupe::detail::trace::on()) [[unlikely]] {
    try {  // rollback runs while an exception unwinds: it must not replace it
      troupe::detail::trace::instant(
          "tx", "abort",
          fmt::format("\"heap\":{},\"attempt\":{}",
                      troupe::detail::trace::json_string(heap_->name()), attempt_));
    } catch (...) {
    }
  }
}

void Tx::backoff() {
  // T10: irrevocable since attempt kIrrevocableAfter, with recovery run many
  // times since, a transaction that still cannot commit meets memory that no
  // run of the protocol leaves (a stripe newer than the clock, a chain that
  // never validates): fail it rather than retry for ever.
  if (attempt_ >= kGiveUpAfter) {
    unsigned tried = attempt_;
    finish();  // hands the irrevocable token back
    throw Error(Errc::bad_segment,
                fmt::format("heap '{}': a transaction conflicted {} times, irrevocable since "
                            "attempt {}, with recovery run in between: the heap's memory is "
                            "corrupt",
                            heap_->name(), tried, kIrrevocableAfter));
  }
  rng_ ^= rng_ << 13;
  rng_ ^= rng_ >> 7;
  rng_ ^= rng_ << 17;
  unsigned e = std::min(attempt_, 10u);
  std::uint64_t spins = rng_ % (std::uint64_t{16} << e);
  for (std::uint64_t i = 0; i < spins; ++i) troupe::detail::cpu_relax();
  if (attempt_ > 4) troupe::detail::Spin::yield_thread();
  if (attempt_ % 16 == 15) heap_->recover();             // a lock may belong to the dead
  if (attempt_ % 64 == 63) tx_heap_->recover_orphans();  // ... or to a record no hook saw
}

void Tx::commit() {
  collect();  // T7: may extend the write set, or throw TxConflict
  SlotRecord& r = *rec_;
  if (writes_.empty() && frees_.empty()) {
    // Read-only (T2): every read was valid at rv when it returned, and rv
    // only moved by extensions that kept them valid (T1), so there is
    // nothing to validate and nothing shared to write.
    for (Offset a : allocs_) heap_->free(a);  // allocated but never linked
    allocs_.clear();
    if (irrevocable_) {
      table_->irrevocable.store(0);
      irrevocable_ = false;
    }
    if (troupe::detail::trace::on()) [[unlikely]]
      trace_commit();
    attempt_ = 0;
    counters_->bump(counters_->commits);
    return;
  }
  lock_order_.clear();
  for (auto& w : writes_) {
    const std::uint64_t s = stripe_of(w.word);
    lock_order_.push_back(static_cast<std::uint32_t>(s));
    // Ask for the lines we are about to lock and store to now, so that
    // their transfers from other cores overlap with the log writes below
    // instead of stalling the lock and the apply one after the other.
    __builtin_prefetch(&table_->stripes[s], 1);
    __builtin_prefetch(heap_->ptr<std::uint64_t>(w.word), 1);
  }
  if (!frees_.empty()) lock_freed_blocks();  // X5
  if (lock_order_.size() > 1) std::sort(lock_order_.begin(), lock_order_.end());
  lock_order_.erase(std::unique(lock_order_.begin(), lock_order_.end()), lock_order_.end());

  // The log must hold every section: grow it while we hold nothing.
  std::size_t need = std::max({writes_.size(), lock_order_.size(), allocs_.size(), frees_.size()});
  // Relaxed: our own record (X1).
  if (r.log_cap.load(std::memory_order_relaxed) < need) {
    std::uint64_t cap = 64;
    while (cap < need) cap *= 2;
    grow_log(cap);
  }
  LogView L = view(*heap_, r);

  // Relaxed stores into our log: the release store of the state (or of
  // n_locks) orders them before any recoverer reads them.
  for (std::size_t i = 0; i < allocs_.size(); ++i)
    L.alloc(i).store(allocs_[i], std::memory_order_relaxed);
  r.n_allocs.store(allocs_.size(), std::memory_order_relaxed);
  r.n_writes.store(0, std::memory_order_relaxed);
  r.n_frees.store(0, std::memory_order_relaxed);
  r.n_locks.store(0, std::memory_order_relaxed);
  ++seq_;  // X7: a new transaction in the record
  r.state.store(seq_ << 32 | kTxLocking, std::memory_order_release);

  // All-or-none try-locks in stripe order; never wait while holding one.
  const std::uint64_t mine = locked_word(slot_);
  std::size_t held = 0;
  auto unlock = [&] {
    release_locks(held, 0, true);
    r.state.store(seq_ << 32, std::memory_order_release);
  };
  auto fail = [&] {
    unlock();
    conflict();
  };
  for (std::size_t i = 0; i < lock_order_.size(); ++i) {
    auto& lk = table_->stripes[lock_order_[i]];
    std::uint64_t cur = lk.load(std::memory_order_relaxed);
    if (is_locked(cur)) fail();
    L.lock_stripe(i).store(lock_order_[i], std::memory_order_relaxed);
    L.lock_old(i).store(cur, std::memory_order_relaxed);
    r.n_locks.store(i + 1, std::memory_order_release);  // X2: logged before taken
    // Seq_cst (the same lock cmpxchg as acquire on x86): our locks precede
    // our clock load in the single total order (X8 c); it also acquires the
    // previous holder's writes.
    if (!lk.compare_exchange_strong(cur, mine, std::memory_order_seq_cst,
                                    std::memory_order_relaxed))
      fail();
    held = i + 1;
    fault_point("tx.after_some_locks");
  }

  // X8 (GV5): wv = the clock + 1, the clock left as it is (commits running
  // together may share a version; a reader that meets wv above the clock
  // advances it). Seq_cst: after our locks in the single total order (X8 c).
  const std::uint64_t wv = table_->clock.load() + 1;
  // Validate the read set (always: with shared versions, wv == rv + 1 says
  // nothing about other commits). Seq_cst loads (plain loads on x86): X8 (b, c).
  for (std::uint32_t s : reads_) {
    std::uint64_t w = table_->stripes[s].load();
    if (w == mine) {
      auto it = std::lower_bound(lock_order_.begin(), lock_order_.end(), s);
      std::uint64_t before = L.lock_old(it - lock_order_.begin()).load(std::memory_order_relaxed);
      if (version_of(before) > rv_) fail();
    } else if (is_locked(w) || version_of(w) > rv_) {
      fail();
    }
  }
  if (!irrevocable_) {
    std::uint64_t tok = table_->irrevocable.load();
    if (tok != 0 && tok != slot_ + 1u) fail();
  }
  // T6: the frees must not fail after the commit point. Each block must be
  // published (the snapshot is validated, so a block we unlinked is still
  // linked) and listed once (a second owner would free it twice).
  auto published = [&](Offset b) {
    try {
      return heap_->owner(b).kind == Owner::published;
    } catch (const Error&) {  // not a block (H1): refused below, locks released
      return false;
    }
  };
  std::sort(frees_.begin(), frees_.end());
  for (std::size_t i = 0; i < frees_.size(); ++i) {
    const bool twice = i > 0 && frees_[i] == frees_[i - 1];
    if (twice || !published(frees_[i])) {
      unlock();
      throw Error(Errc::invalid_argument,
                  fmt::format("a transaction retired block {:#x} {} (does it have two owners?); "
                              "it was aborted before its commit point",
                              frees_[i], twice ? "twice" : "that is not published"));
    }
  }

  // Past here nothing aborts. X6: publish before the commit point; a death
  // before it makes recovery free them (they are listed in allocs[]).
  try {
    for (std::size_t i = 0; i < allocs_.size(); ++i) {  // X6. Relaxed: our own log (X1)
      L.alloc(i).store(allocs_[i] | kEntryPublishing, std::memory_order_relaxed);
      heap_->publish(allocs_[i]);
      L.alloc(i).store(allocs_[i] | kEntryPublished, std::memory_order_relaxed);
    }
  } catch (...) {
    unlock();  // a block the heap refuses (H1): before the commit point, release all
    throw;
  }
  for (std::size_t i = 0; i < writes_.size(); ++i) {
    L.write_addr(i).store(writes_[i].word, std::memory_order_relaxed);
    L.write_val(i).store(writes_[i].value, std::memory_order_relaxed);
  }
  for (std::size_t i = 0; i < frees_.size(); ++i)
    L.free_(i).store(frees_[i], std::memory_order_relaxed);
  r.n_writes.store(writes_.size(), std::memory_order_relaxed);
  r.n_frees.store(frees_.size(), std::memory_order_relaxed);
  r.wv.store(wv, std::memory_order_relaxed);
  fault_point("tx.before_commit");
  r.state.store(seq_ << 32 | kTxCommitted, std::memory_order_release);  // X3: the commit point
  // T6: from here an exception must undo nothing; the blocks we allocated
  // are published, owned by shared data now.
  committed_ = true;
  allocs_.clear();

  for (std::size_t i = 0; i < writes_.size(); ++i) {
    // Release: we hold the stripe, and a reader that sees this value must
    // also see our lock (Tx::read); the stripe's release store publishes it (X4).
    std::atomic_ref(*heap_->ptr<std::uint64_t>(writes_[i].word))
        .store(writes_[i].value, std::memory_order_release);
    if (i == writes_.size() / 2) fault_point("tx.mid_apply");
  }
  release_locks(lock_order_.size(), wv << 1, false);

  if (!frees_.empty()) {
    // X5: every stripe of these blocks was just released with wv, so a
    // transaction still reading one of them fails its next check; free now.
    r.state.store(seq_ << 32 | kTxFreeing, std::memory_order_release);
    for (std::size_t i = 0; i < frees_.size(); ++i)
      tx_heap_->free_entry(L.free_(i), frees_[i],
                           std::find(taken_.begin(), taken_.end(), frees_[i]) != taken_.end());
  }
  r.state.store(seq_ << 32, std::memory_order_release);
  if (irrevocable_) {
    table_->irrevocable.store(0);
    irrevocable_ = false;
  }
  allocs_.clear();
  frees_.clear();
  taken_.clear();
  if (troupe::detail::trace::on()) [[unlikely]]
    trace_commit();
  attempt_ = 0;
  counters_->bump(counters_->commits);
}

}  // namespace troupe::shm
