// src/core/cown.cpp: Behaviour-Oriented Concurrency scheduling and release.
// The invariants CW1-CW6 cited here are those of troupe/detail/cown.hpp.
#include "troupe/detail/cown.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "troupe/detail/platform.hpp"
#include "troupe/detail/systematic.hpp"
#include "troupe/error.hpp"
#include "troupe/promise.hpp"
#include "troupe/trace.hpp"

namespace troupe::detail {

namespace {

// Waits until `s`'s successor (which already swapped `last`) links itself (CW2).
Request* wait_next(Request* s) noexcept {
  Request* n;
  Spin spin;
  // acquire: pairs with the successor's release store; we then see its request.
  while ((n = s->next.load(std::memory_order_acquire)) == nullptr) {
    spin.step();
    TROUPE_YIELD();
  }
  return n;
}

// The request after `s` on its cown, or nullptr if `s` was last and the cown is
// now free; then the caller owes the queue's reference (CW8). After this
// returns, `s` is out of the queue (CW3).
Request* pass_on(Request* s) noexcept {
  Request* n = s->next.load(std::memory_order_acquire);  // see wait_next
  if (n) return n;
  Request* expected = s;
  // acq_rel on success: release publishes our writes to the cown (and CW4's
  // reader registration) to the next behaviour that swaps `last` and finds null.
  if (s->cown->last.compare_exchange_strong(expected, nullptr, std::memory_order_acq_rel,
                                            std::memory_order_acquire))
    return nullptr;
  TROUPE_YIELD();
  return wait_next(s);  // a successor swapped `last` but has not linked yet
}

// Where `b` runs: its scheduler, or the default pool if it names none.
sched::Scheduler& scheduler_of(const BehaviourBase& b) {
  return b.sched ? *b.sched : sched::default_scheduler();
}

// Every cown of `b` is held: it runs on its scheduler.
void make_runnable(BehaviourBase& b) { scheduler_of(b).schedule(&b.work); }

// CW11: offers `b` (every cown received) to run nested in the running block.
// Thread-local guard state: nested runs so far (the first of every
// kNestedSampleEvery is timed) and offers still to refuse.
constexpr std::uint32_t kNestedSampleEvery = 64;
constexpr std::int64_t kNestedLongNs = 4000;
constexpr std::uint32_t kNestedSkip = 1024;
__thread std::uint32_t tl_nested_runs = 0;
__thread std::uint32_t tl_nested_skip = 0;
__thread bool tl_no_nesting = false;  // NoNestedRuns
// CW12: the behaviour running nested on this thread, which may still owe
// its queues' references (last_release reads it).
__thread BehaviourBase* tl_nested_owing = nullptr;

// CW11's guard: whether this thread may run a behaviour on `s` nested now
// (counts a refusal against kNestedSkip).
bool nesting_allowed(const sched::Scheduler* s) noexcept {
  if (tl_running_behaviour == nullptr || tl_nested_caller != nullptr ||
      sched::tl_in_continuations || tl_no_nesting)
    return false;
  if (tl_nested_skip != 0) {
    --tl_nested_skip;
    return false;
  }
  return s == sched::current();
}

// Runs `b` (every cown held) nested, on scheduler `s`, which the guard
// allowed; false if `s` declines (SC7).
bool run_nested_now(BehaviourBase& b, sched::Scheduler* s) {
  using Clock = std::chrono::steady_clock;
  const bool timed = tl_nested_runs % kNestedSampleEvery == 0;
  const Clock::time_point t0 = timed ? Clock::now() : Clock::time_point{};
  struct Caller {  // restored even if a run throws (a behaviour's does not)
    Caller(const BehaviourBase* c, BehaviourBase* b) {
      tl_nested_caller = c;
      tl_nested_owing = b;
    }
    ~Caller() {
      tl_nested_caller = nullptr;
      tl_nested_owing = nullptr;  // `b` may be freed after its run
    }
  } caller(tl_running_behaviour, &b);
  if (!s->run_nested(&b.work)) return false;
  ++tl_nested_runs;
  if (timed && Clock::now() - t0 >= std::chrono::nanoseconds(kNestedLongNs))
    tl_nested_skip = kNestedSkip;
  return true;
}

bool run_nested(BehaviourBase& b) {
  sched::Scheduler* s = &scheduler_of(b);
  return nesting_allowed(s) && run_nested_now(b, s);
}

// `s` has received its cown: one fewer for its behaviour to wait for.
void resolve(Request* s) noexcept {
  if (!s->sole) return s->behaviour->resolve_one();
  // CW9: the only grant it waits for.
  BehaviourBase* b = s->behaviour;
  __builtin_prefetch(b);
  (s->on_default ? &sched::default_scheduler() : b->sched)->schedule(&b->work);
}

// `s` has just received its cown: apply reader/writer rules (CW4) and, for a
// reader, pass the cown straight on. Iterative over a run of readers.
// `from_writer`: a writer passed the cown on, so no reader holds it (CW6) and
// a writer `s` need not read rstate, whose line the enqueuers keep taking.
// `keep_own` (phase 2 of schedule(), CW10): `s` is the caller's own request;
// if it received the cown, grant returns true and leaves the count to the
// caller instead of resolving it. The readers passed on after it are other
// behaviours': they are resolved here.
// `fresh` (CW12): `s` found its queue empty (phase 2, schedule_one); a
// reader then owes the queue's reference, taken only if the queue goes on.
bool grant(Request* s, bool from_writer, bool keep_own = false, bool fresh = false) noexcept {
  bool own = keep_own, kept = false;
  while (s) {
    Cown* c = s->cown;
    TROUPE_YIELD();
    if (s->read) {
      // relaxed: the writer that later sees this count gets the cown from us,
      // either in this thread (program order) or through `last` (acq_rel).
      c->rstate.fetch_add(2, std::memory_order_relaxed);
      Request* n = pass_on(s);
      if (fresh) {
        // CW12: a successor queued behind the reader found the queue
        // non-empty and took nothing: the stretch's reference, taken before
        // that successor is granted (below, or by this reader's release).
        // The reader's handle counts meanwhile.
        if (n != nullptr) c->add_ref();
      } else if (n == nullptr) {
        // CW8: the reader emptied the queue. Its read handle still counts, so
        // this cannot be the last reference while it reads.
        c->release();
      }
      fresh = false;
      if (own)
        kept = true;  // our caller's: it cannot run before the caller counts it
      else
        resolve(s);  // may run and free s's behaviour: s is dead now
      own = false;
      s = n;
      from_writer = false;
      continue;
    }
    // acquire: pairs with the release of the last reader's sign-out (CW4).
    if (!from_writer && c->rstate.load(std::memory_order_acquire) != 0) {
      c->waiting_writer = s;
      // acq_rel: release publishes waiting_writer; acquire sees readers' writes.
      std::uint64_t old = c->rstate.fetch_or(1, std::memory_order_acq_rel);
      if ((old >> 1) != 0) return kept;  // parked: the last reader grants us (CW4)
      // Every reader left between our load and our fetch_or: nobody else can
      // touch rstate now (we hold the cown), so undo the park ourselves.
      c->waiting_writer = nullptr;
      c->rstate.store(0, std::memory_order_relaxed);
    }
    if (own) return true;
    resolve(s);
    return kept;
  }
  return kept;
}

// A writer's release passes its cown to `n`, queued behind it: CW6 (no
// reader holds it), and SC6 (what this grant schedules was a backlog).
void grant_successor(Request* n) noexcept {
  sched::tl_granting_successor = true;
  grant(n, /*from_writer=*/true);
  sched::tl_granting_successor = false;
}

}  // namespace

std::uint32_t sort_many(Request* requests, std::uint32_t n) {
  if (n > kInsertionSortMax) {
    // A run-time set of actors can be large: O(n log n) on a copy of the
    // keys (a request holds atomics and is not moved), then written back.
    std::vector<std::pair<Cown*, bool>> keys(n);
    for (std::uint32_t i = 0; i < n; ++i) keys[i] = {requests[i].cown, requests[i].read};
    std::sort(keys.begin(), keys.end());
    for (std::uint32_t i = 0; i < n; ++i) {
      requests[i].cown = keys[i].first;
      requests[i].read = keys[i].second;
    }
  }
  // Insertion sort: n is small (the actors named in one `when`), or sorted.
  for (std::uint32_t i = 1; i < n; ++i) {
    Cown* c = requests[i].cown;
    bool r = requests[i].read;
    std::uint32_t j = i;
    for (; j > 0 && requests[j - 1].cown > c; --j) {
      requests[j].cown = requests[j - 1].cown;
      requests[j].read = requests[j - 1].read;
    }
    requests[j].cown = c;
    requests[j].read = r;
  }
  std::uint32_t out = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    if (out > 0 && requests[out - 1].cown == requests[i].cown) {
      requests[out - 1].read = requests[out - 1].read && requests[i].read;  // a write wins
      continue;
    }
    requests[out].cown = requests[i].cown;
    requests[out].read = requests[i].read;
    ++out;
  }
  return out;
}

void BehaviourBase::resolve_one(std::uint32_t n) {
  // acq_rel: the last decrement sees every grant (and the body's inputs) and
  // hands them to the thread that runs the behaviour through schedule().
  if (pending.fetch_sub(n, std::memory_order_acq_rel) == n) make_runnable(*this);
}

// One cown: phase 1 is the swap and the link, and nothing comes after it on
// a later cown (CW1), so the request is linkable before the swap and the end of
// phase 1 is not counted: the link (or the grant) is the last this thread
// touches of the behaviour, and the thread that runs it takes its line
// once, not back and forth.
void BehaviourBase::schedule_one() {
  Request* s = &requests[0];
  Cown* c = s->cown;
  s->behaviour = this;
  s->sole = true;  // CW9
  s->on_default = sched == nullptr;
  s->next.store(nullptr, std::memory_order_relaxed);
  s->counted = c->limit.load(std::memory_order_relaxed) != 0;  // BP1, as below
  if (s->counted) [[unlikely]]
    c->enq.fetch_add(1, std::memory_order_relaxed);
  // relaxed: published by the swap's release. No `pending` count (CW9).
  s->linkable.store(true, std::memory_order_relaxed);
  Request* prev = c->last.exchange(s, std::memory_order_seq_cst);
  TROUPE_YIELD();
  if (prev == nullptr) {
    // CW8: the queue was empty. CW12: a writer takes its reference before
    // its grant hands the behaviour on; a reader, only if the queue goes on.
    if (!s->read) c->add_ref();
    grant(s, /*from_writer=*/false, /*keep_own=*/false, /*fresh=*/true);
    return;
  }
  __builtin_prefetch(prev, 1);  // a hint: we read `linkable`, then write `next`
  Spin spin;
  while (!prev->linkable.load(std::memory_order_acquire)) {  // CW1, as below
    spin.step();
    TROUPE_YIELD();
  }
  prev->next.store(s, std::memory_order_release);  // CW2: from here `this` may run and be freed
}

void BehaviourBase::schedule() {
  if (nrequests == 1) return schedule_one();
  // trace.hpp: a multi-actor behaviour's acquisition starts here.
  if (trace::on() && nrequests > 1) [[unlikely]]
    trace::async_begin("acquire", "acquire", this, trace::now_ns());
  // relaxed: nobody else sees this behaviour before the first swap below,
  // whose acq_rel publishes it.
  pending.store(nrequests + 1, std::memory_order_relaxed);
  bool any_held_paused = false;
  bool all_free = true;  // CW12
  bool plain = true;     // plain_writers
  for (std::uint32_t i = 0; i < nrequests; ++i) {
    Request* s = &requests[i];
    s->behaviour = this;
    s->sole = false;
    s->next.store(nullptr, std::memory_order_relaxed);
    s->linkable.store(false, std::memory_order_relaxed);
    Cown* c = s->cown;
    // BP1: counted while the cown is bounded (relaxed: a setting; the
    // count's own RMW is on the line the exchange below takes anyway).
    s->counted = c->limit.load(std::memory_order_relaxed) != 0;
    if (s->counted) [[unlikely]]
      c->enq.fetch_add(1, std::memory_order_relaxed);
    plain &= !(s->read | s->counted);
    // Release publishes our request to the successor that finds it in
    // `last`; acquire lets us read our predecessor's request and behaviour.
    // Seq_cst (the same xchg on x86): before our read of `flags` (BP5).
    Request* prev = c->last.exchange(s, std::memory_order_seq_cst);
    TROUPE_YIELD();
    if (prev == nullptr) {
      // CW8: the queue was empty; it holds the cown from now until it is
      // empty again. CW12: its reference is taken below or later (our
      // caller's counted handle keeps the cown alive meanwhile).
      s->free_at_enqueue = true;
      continue;
    }
    s->free_at_enqueue = false;
    all_free = false;
    // CW1: do not go on to later cowns before the predecessor has finished
    // its phase 1. It cannot be freed meanwhile (CW3): it cannot leave this
    // cown's queue before we link, and it cannot run before it is linkable.
    // acquire: pairs with the predecessor's release store of `linkable`.
    __builtin_prefetch(prev, 1);  // a hint: we read `linkable`, then write `next`
    Spin spin;
    while (!prev->linkable.load(std::memory_order_acquire)) {
      spin.step();
      TROUPE_YIELD();
    }
    prev->next.store(s, std::memory_order_release);  // CW2; pairs with wait_next
    // BP5: on several cowns, we may be queued on a paused sender's target.
    // Noted here (the seq_cst load after our exchange), acted on below.
    s->held_paused = nrequests > 1 && (c->flags.load() & Cown::kHeldPaused) != 0;
    any_held_paused |= s->held_paused;
  }
  plain_writers = plain;  // before the behaviour can run (published as its requests are)
  // CW12: our writers owe their empty queues' references. Taken now unless
  // every queue was empty (then we may run nested, and owe them longer);
  // before the resumes below, whose continuations run user code.
  owes_refs = true;
  if (!all_free) take_queue_refs();
  // release: successors waiting in their phase 1 may now link behind us.
  for (std::uint32_t i = 0; i < nrequests; ++i)
    requests[i].linkable.store(true, std::memory_order_release);
  // BP5: resume the paused holders only now: their finish may schedule
  // behaviours (continuations) that queue behind us and wait for `linkable`.
  // We cannot run before the count at the end.
  if (any_held_paused) [[unlikely]]
    for (std::uint32_t i = 0; i < nrequests; ++i)
      if (requests[i].held_paused) wanted(requests[i].cown);
  // Phase 2: the cowns that were free are ours; take them now, after phase 1,
  // because a reader passes its cown on at once and must not wait for a
  // successor that is waiting for our phase 1. CW10: what we receive here is
  // counted down with the end of phase 1, in one step.
  std::uint32_t received = 1;  // the end of phase 1
  for (std::uint32_t i = 0; i < nrequests; ++i) {
    Request* s = &requests[i];
    if (!s->free_at_enqueue) continue;
    // What grant() does for our own writer, inline (a transfer's two):
    // no reader holds the cown (CW4), so it is ours. acquire: as grant's.
    TROUPE_YIELD();
    if (!s->read && s->cown->rstate.load(std::memory_order_acquire) == 0) {
      ++received;
      continue;
    }
    received += grant(s, /*from_writer=*/false, /*keep_own=*/true, /*fresh=*/true) ? 1 : 0;
  }
  // CW10: every request received here: nobody else counts this behaviour
  // down, so no RMW (the scheduler's hand-off is release/acquire, and every
  // grant happened on this thread). CW12: the references are taken before
  // the behaviour leaves this thread; nested, later or never. (A writer
  // parked behind readers cannot run before resolve_one counts the end of
  // phase 1, after them.)
  if (received == nrequests + 1 && run_nested(*this)) return;  // CW11
  take_queue_refs();
  if (received == nrequests + 1)
    make_runnable(*this);
  else
    resolve_one(received);
}

bool BehaviourBase::run_inline() {
  // CW13: what schedule() and a nested run (CW11) do for a behaviour whose
  // cowns are all free, without a queue wait: every cown must be free now.
  if (nrequests < 2 || trace::on()) return false;  // one cown: a message (CW11)
  for (std::uint32_t i = 0; i < nrequests; ++i)
    // relaxed: a setting (BP1); a bounded cown counts its queue.
    if (requests[i].read || requests[i].cown->limit.load(std::memory_order_relaxed) != 0)
      return false;
  sched::Scheduler* s = &scheduler_of(*this);
  if (!nesting_allowed(s)) return false;
  plain_writers = true;
  owes_refs = true;  // CW12: none taken unless a queue goes on at the release
  std::uint32_t taken = 0;
  bool all = true;
  for (; taken < nrequests; ++taken) {
    Request* r = &requests[taken];
    r->behaviour = this;
    r->sole = false;
    r->counted = false;
    r->free_at_enqueue = true;
    r->next.store(nullptr, std::memory_order_relaxed);
    r->linkable.store(false, std::memory_order_relaxed);
    Cown* c = r->cown;
    Request* expected = nullptr;
    TROUPE_YIELD();
    // seq_cst, as schedule()'s exchange: release publishes the request to a
    // successor that swaps behind it; acquire sees the last holder's writes.
    if (!c->last.compare_exchange_strong(expected, r, std::memory_order_seq_cst,
                                         std::memory_order_relaxed)) {
      all = false;  // queued on: not free
      break;
    }
    // CW4: readers that passed the cown on may still read it.
    if (c->rstate.load(std::memory_order_acquire) != 0) {
      ++taken;
      all = false;
      break;
    }
  }
  // CW1: successors that swapped behind our requests may link now.
  for (std::uint32_t i = 0; i < taken; ++i)
    requests[i].linkable.store(true, std::memory_order_release);
  if (all && run_nested_now(*this, s)) return true;
  // Not all free, or the scheduler declined: pass on what we took, as an
  // empty run would. CW12: the reference only for a queue that goes on.
  // Not as a writer's release (CW6): readers may hold the last one taken.
  owes_refs = false;
  for (std::uint32_t i = 0; i < taken; ++i) {
    Request* r = &requests[i];
    TROUPE_YIELD();
    if (Request* n = pass_on(r)) {
      r->cown->add_ref();  // relaxed: CW12
      grant(n, /*from_writer=*/false);
    }
  }
  return false;
}

void BehaviourBase::take_queue_refs(const Cown* adopted) noexcept {
  if (!owes_refs) return;
  owes_refs = false;
  for (std::uint32_t i = 0; i < nrequests; ++i) {
    const Request& s = requests[i];
    if (s.free_at_enqueue && !s.read && s.cown != adopted) s.cown->add_ref();  // relaxed: CW12
  }
}

void last_release(Cown* c) noexcept {
  // CW12: the nested block dropped the last handle of a cown its behaviour
  // holds and owes the queue's reference for: the queue adopts the count.
  if (BehaviourBase* b = tl_nested_owing; b != nullptr && b->owes_refs) [[unlikely]]
    for (std::uint32_t i = 0; i < b->nrequests; ++i) {
      const Request& s = b->requests[i];
      if (s.cown == c && s.free_at_enqueue && !s.read) {
        // relaxed: this thread is the only holder (no handle is left, and
        // the queue's successors take no reference).
        c->refs.store(1, std::memory_order_relaxed);
        b->take_queue_refs(c);
        return;
      }
    }
  c->destroy(c);
}

void BehaviourBase::release_cowns() {
  // The common case, one unbounded cown held for writing: the loops below
  // reduced to what they do for it (schedule_one owes no reference, CW12).
  if (nrequests == 1 && !requests[0].counted && !requests[0].read) [[likely]] {
    Request* s = &requests[0];
    TROUPE_YIELD();
    if (Request* n = pass_on(s))
      grant_successor(n);
    else
      s->cown->release();  // CW8: the queue we emptied drops its reference last
    return;
  }
  // CW12: run nested, every writer still owes its queue's reference (our
  // caller's handles keep the cowns alive): taken only for a queue that
  // goes on, before its successor is granted; none to drop.
  const bool owed = std::exchange(owes_refs, false);
  if (plain_writers) [[likely]] {
    // The loop below for writers alone, none counted: nothing to sign out
    // of, nobody to wake (a transfer's two accounts).
    for (std::uint32_t i = 0; i < nrequests; ++i) {
      Request* s = &requests[i];
      TROUPE_YIELD();
      Request* n = pass_on(s);
      s->emptied = n == nullptr && !owed;
      if (n) {
        if (owed) s->cown->add_ref();  // CW12
        grant_successor(n);
      }
    }
    if (!owed)  // CW8: as below
      for (std::uint32_t i = 0; i < nrequests; ++i)
        if (requests[i].emptied) requests[i].cown->release();
    return;
  }
  // BP5: cowns whose waiters are woken after the loop, each with a
  // reference taken for it (a successor may empty the queue meanwhile,
  // CW8); beyond eight, in a vector.
  Cown* to_wake[8];
  std::uint32_t n_wake = 0;
  std::vector<Cown*> more_to_wake;
  for (std::uint32_t i = 0; i < nrequests; ++i) {
    Request* s = &requests[i];
    Cown* c = s->cown;
    if (s->counted) [[unlikely]] {
      // BP4: seq_cst RMW, then seq_cst load of flags.
      c->done.fetch_add(1);
      if (c->flags.load() & (Cown::kMutedOn | Cown::kBlockedOn)) [[unlikely]] {
        if (n_wake < 8)
          to_wake[n_wake++] = c;
        else
          more_to_wake.push_back(c);  // may throw: no reference taken yet
        c->add_ref();  // we hold the cown: a counted reference exists (CW8)
      }
    }
    if (s->read) {
      // Readers left the queue when they got the cown; sign out (CW4).
      // acq_rel: release publishes our reads' end to the writer we may grant;
      // acquire sees the writer's waiting_writer store.
      std::uint64_t old = c->rstate.fetch_sub(2, std::memory_order_acq_rel);
      if (old == 3) {  // last reader, a writer is parked
        Request* w = c->waiting_writer;
        c->waiting_writer = nullptr;
        // relaxed: only the parked writer could race, and it is parked.
        c->rstate.store(0, std::memory_order_relaxed);
        resolve(w);
      }
      continue;
    }
    TROUPE_YIELD();
    Request* n = pass_on(s);
    s->emptied = n == nullptr && !owed;
    if (n) {
      if (owed) c->add_ref();  // CW12
      grant_successor(n);
    }
  }
  for (std::uint32_t i = 0; i < n_wake; ++i) drained(to_wake[i]), to_wake[i]->release();
  for (Cown* c : more_to_wake) drained(c), c->release();
  // CW8: the queues we emptied drop their references last, so that a T
  // destroyed here runs its destructor after every cown was passed on.
  for (std::uint32_t i = 0; i < nrequests; ++i)
    if (requests[i].emptied) requests[i].cown->release();  // only writers set it
}

}  // namespace troupe::detail

namespace troupe::detail {

void nested_wait_seen() noexcept { tl_nested_skip = kNestedSkip; }  // CW11

NoNestedRuns::NoNestedRuns() noexcept : prev_(tl_no_nesting) { tl_no_nesting = true; }
NoNestedRuns::~NoNestedRuns() { tl_no_nesting = prev_; }

void reset_nesting_guard() noexcept {
  tl_nested_skip = 0;
  tl_nested_runs = 0;
}

// cown.hpp CW7, and CW11 for a nested block's caller.
void refuse_wait_on_held(const BehaviourBase& running, const PromiseBase* p, bool caller) {
  for (std::uint32_t i = 0; i < running.nrequests; ++i) {
    const Request& mine = running.requests[i];
    // A reader passed its cown on when it got it (grant): what is linked
    // behind it may have run and been freed, so it is not walked.
    if (mine.read) continue;
    // Acquire: pairs with the successor's release of its link (CW2); its request
    // and behaviour were initialised before.
    for (Request* s = mine.next.load(std::memory_order_acquire); s;
         s = s->next.load(std::memory_order_acquire)) {
      const BehaviourBase* b = s->behaviour;
      if (!b) continue;
      auto* theirs =
          reinterpret_cast<const PromiseBase*>(reinterpret_cast<const char*>(b) + b->promise_at);
      if (theirs == p && caller)
        throw Error(Errc::invalid_argument,
                    fmt::format("get() inside a behaviour that runs nested in the block of the "
                                "behaviour that scheduled it (a multi-actor when whose actors "
                                "were all free runs at once), on the promise of a behaviour "
                                "queued behind actor@{}, which that caller holds: it cannot run "
                                "before the caller ends, so the wait would never return (chain "
                                "it with when(promise, ...) instead)",
                                static_cast<const void*>(mine.cown)));
      if (theirs == p)
        throw Error(Errc::invalid_argument,
                    fmt::format("get() inside a behaviour on the promise of a behaviour queued "
                                "behind it on actor@{}, which this behaviour holds: it cannot run "
                                "before this one ends, so the wait would never return (chain it "
                                "with when(promise, ...) instead)",
                                static_cast<const void*>(mine.cown)));
    }
  }
}

}  // namespace troupe::detail
