// src/core/backpressure.cpp: the registry of paused senders and of outside
// threads waiting for an overloaded actor (troupe/backpressure.hpp), and the
// rules that keep it deadlock-free. The invariants BP1-BP7 cited here are
// those of troupe/detail/cown.hpp. Everything here runs only when a bounded
// actor is over its limit or someone waits on one: the common path is the
// counting in cown.cpp.
#include "troupe/backpressure.hpp"

#include <fmt/core.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <iterator>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "troupe/detail/cown.hpp"
#include "troupe/detail/platform.hpp"
#include "troupe/error.hpp"
#include "troupe/promise.hpp"

namespace troupe {

namespace detail {
namespace {

// TROUPE_MAILBOX_LIMIT=n sets the process's default limit at start (as
// set_backpressure would), so a program can be bounded without a rebuild.
std::uint32_t limit_from_env() {
  const char* v = std::getenv("TROUPE_MAILBOX_LIMIT");
  if (!v || !*v) return 0;
  char* end = nullptr;
  unsigned long n = std::strtoul(v, &end, 10);
  if (*end != '\0' || n > UINT32_MAX) return 0;  // not a number: no limit
  return static_cast<std::uint32_t>(n);
}
std::atomic<std::uint32_t> g_default_limit{limit_from_env()};

struct Paused {
  BehaviourBase* b;
  Cown* target;  // a counted reference (BP7)
  std::uint32_t how;
  Finish finish;
};

struct Registry {
  Registry() { settings.mailbox_limit = g_default_limit.load(std::memory_order_relaxed); }
  using Entry = std::list<Paused>::iterator;
  // Every field below is read and written under mu only.
  std::mutex mu;
  std::condition_variable cv;  // outside threads (kBlockedOn)
  // BP3: the paused behaviours, indexed by the cown each waits on and by
  // every cown each holds (one paused holder per cown), so that a drain, a
  // wanted cown and BP5's checks cost O(what they touch), not O(all paused):
  // thousands of senders may wait on one flooded actor.
  std::list<Paused> paused;
  std::unordered_map<Cown*, std::vector<Entry>> by_target;
  std::unordered_map<Cown*, Entry> by_held;
  std::unordered_map<Cown*, unsigned> blocked;  // outside threads waiting, per cown
  Backpressure settings;
};

Registry& registry() {
  static Registry* r = new Registry;  // never destroyed: used until the last thread ends
  return *r;
}

std::atomic<std::uint64_t> g_paused{0}, g_resumed_early{0}, g_skipped{0}, g_blocked{0},
    g_refused{0};
// BP5: behaviours blocked in wait() now, and entries in the registry (a
// Dekker pair: each side changes its own with an RMW, then reads the other).
std::atomic<std::uint64_t> g_waiting{0}, g_registered{0};

std::uint32_t low_mark(const Cown* c) { return c->limit.load(std::memory_order_relaxed) / 2; }

// Under r.mu: registers a pause (BP3).
void add(Registry& r, const Paused& p) {
  auto it = r.paused.insert(r.paused.end(), p);
  r.by_target[p.target].push_back(it);
  for (std::uint32_t k = 0; k < p.b->nrequests; ++k) r.by_held[p.b->requests[k].cown] = it;
  g_registered.fetch_add(1);  // BP5: then the waiters (try_pause)
}

// Under r.mu: takes an entry out of the registry and clears what it set on
// the cowns it holds (BP3, BP6); its target's list is the caller's to
// update (drop_from_target). The caller finishes it after unlocking.
Paused take(Registry& r, Registry::Entry it) {
  Paused p = *it;
  for (std::uint32_t k = 0; k < p.b->nrequests; ++k) {
    Cown* h = p.b->requests[k].cown;
    r.by_held.erase(h);
    h->flags.fetch_and(~(Cown::kHeldPaused | Cown::kWanted));
  }
  r.paused.erase(it);
  g_registered.fetch_sub(1);
  return p;
}

// Under r.mu: the target's list without `it` (O(pauses on that target)).
void drop_from_target(Registry& r, Cown* t, Registry::Entry it) {
  auto found = r.by_target.find(t);
  auto& v = found->second;
  auto pos = std::find(v.begin(), v.end(), it);
  *pos = v.back();
  v.pop_back();
  if (v.empty()) {
    r.by_target.erase(found);
    t->flags.fetch_and(~Cown::kMutedOn);
  }
}

// Under r.mu: every pause waiting on `t`, taken.
void take_target(Registry& r, Cown* t, std::vector<Paused>& out) {
  auto found = r.by_target.find(t);
  if (found == r.by_target.end()) return;
  out.reserve(out.size() + found->second.size());  // may throw: nothing taken yet
  auto node = r.by_target.extract(found);
  t->flags.fetch_and(~Cown::kMutedOn);
  for (Registry::Entry it : node.mapped()) out.push_back(take(r, it));
}

void finish(const std::vector<Paused>& ps) {
  for (const Paused& p : ps) {
    p.finish(p.b, p.how);
    p.target->release();
  }
}

// BP5, before registering: is a behaviour on several cowns queued behind one
// of b's requests? Walks the successors; one that swapped `last` but has
// not linked yet is waited for (its phase 1 ends: CW1). A queue longer than
// kMaxWalk counts as yes (refusing a pause is always safe), so a flooded
// sender's attempts cost O(1), not O(its queue).
constexpr unsigned kMaxWalk = 64;
bool multi_cown_successor(const BehaviourBase* b) {
  for (std::uint32_t i = 0; i < b->nrequests; ++i) {
    Request* x = &b->requests[i];
    for (unsigned walked = 0;; ++walked) {
      if (walked == kMaxWalk) return true;
      // Acquire: pairs with the successor's release of its link (CW2); its
      // request and behaviour were initialised before.
      Request* n = x->next.load(std::memory_order_acquire);
      if (!n) {
        // Seq_cst: after our RMW of kHeldPaused (BP5).
        if (x->cown->last.load() == x) break;  // x is the tail
        Spin spin;
        while ((n = x->next.load(std::memory_order_acquire)) == nullptr) spin.step();
      }
      if (n->behaviour->nrequests > 1) return true;
      x = n;
    }
  }
  return false;
}

}  // namespace

std::uint32_t default_mailbox_limit() noexcept {
  return g_default_limit.load(std::memory_order_relaxed);
}

void admit(const BehaviourBase& b) {
  for (std::uint32_t i = 0; i < b.nrequests; ++i) {
    Cown* c = b.requests[i].cown;
    const std::uint32_t limit = c->limit.load(std::memory_order_relaxed);
    if (limit == 0 || c->backlog() < limit) continue;
    if (tl_running_behaviour) {  // a behaviour sends: pause it after its block
      if (!tl_mute_target) {
        c->add_ref();  // BP7
        tl_mute_target = c;
      }
      continue;
    }
    // A pool thread outside a behaviour must not wait; nor may the thread
    // that alone runs the target's work (an event loop's: it would wait for
    // itself).
    sched::Scheduler* runs = c->sched ? c->sched : &sched::default_scheduler();
    if (sched::current() || tl_never_block || runs->runs_here()) {
      g_skipped.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    Registry& r = registry();
    std::unique_lock lk(r.mu);
    const Backpressure set = r.settings;
    auto refuse = [&](const char* why) {
      g_refused.fetch_add(1, std::memory_order_relaxed);
      throw Error(Errc::overloaded,
                  fmt::format("actor@{} has {} behaviours queued, over its mailbox limit of {}{}",
                              static_cast<const void*>(c), c->backlog(), limit, why));
    };
    if (set.outside == Overload::fail) refuse("");
    g_blocked.fetch_add(1, std::memory_order_relaxed);
    // c stays alive: when()'s caller holds a handle to it during admit.
    ++r.blocked[c];
    c->flags.fetch_or(Cown::kBlockedOn);  // BP4: then the backlog, under r.mu
    const auto deadline = std::chrono::steady_clock::now() + set.block_for;
    const bool ok = r.cv.wait_until(lk, deadline, [&] { return c->backlog() <= low_mark(c); });
    if (--r.blocked[c] == 0) {
      r.blocked.erase(c);
      c->flags.fetch_and(~Cown::kBlockedOn);
    }
    if (!ok)
      refuse(fmt::format(" for {} ms (Overload::block's block_for): is it waiting for this "
                         "thread?",
                         set.block_for.count())
                 .c_str());
  }
}

bool try_pause(BehaviourBase* b, Cown* t, std::uint32_t how, Finish fin) {
  // cown.hpp CW12: a behaviour run nested still owes its queues'
  // references; paused, its release may come after its caller's handles
  // are gone, so they are taken now (kept if the pause is refused).
  b->take_queue_refs();
  auto refuse = [&] {
    g_skipped.fetch_add(1, std::memory_order_relaxed);
    t->release();
    return false;
  };
  for (std::uint32_t i = 0; i < b->nrequests; ++i)
    if (b->requests[i].read || b->requests[i].cown == t) return refuse();  // BP5
  // BP5: mark what we hold (RMW, dropping a kWanted left by an earlier
  // pause), then look for behaviours on several cowns queued behind us.
  for (std::uint32_t i = 0; i < b->nrequests; ++i) {
    auto& f = b->requests[i].cown->flags;
    std::uint32_t old = f.load();
    while (!f.compare_exchange_weak(old, (old | Cown::kHeldPaused) & ~Cown::kWanted)) {
    }
  }
  auto unmark = [&] {
    for (std::uint32_t i = 0; i < b->nrequests; ++i)
      b->requests[i].cown->flags.fetch_and(~(Cown::kHeldPaused | Cown::kWanted));
  };
  if (multi_cown_successor(b)) {
    unmark();
    return refuse();
  }
  Registry& r = registry();
  std::unique_lock lk(r.mu);
  // BP5: no paused behaviour waits on one that is paused: t is not held by
  // one, and nothing we hold is waited on by one.
  bool conflict = r.by_held.contains(t);
  for (std::uint32_t i = 0; i < b->nrequests && !conflict; ++i)
    conflict = r.by_target.contains(b->requests[i].cown);
  if (conflict) {
    lk.unlock();
    unmark();
    return refuse();
  }
  add(r, {b, t, how, fin});           // BP5: then the waiters
  t->flags.fetch_or(Cown::kMutedOn);  // BP4: then the backlog
  bool early = t->backlog() <= low_mark(t) || g_waiting.load() != 0;
  for (std::uint32_t i = 0; i < b->nrequests && !early; ++i)
    early = (b->requests[i].cown->flags.load() & Cown::kWanted) != 0;  // BP5
  if (!early) {
    g_paused.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  // Drained already, or wanted already: not paused after all.
  auto it = std::prev(r.paused.end());
  drop_from_target(r, t, it);
  take(r, it);
  lk.unlock();
  g_skipped.fetch_add(1, std::memory_order_relaxed);
  t->release();
  return false;
}

void wanted(Cown* c) {
  c->flags.fetch_or(Cown::kWanted);  // BP5: seen by a pauser still registering
  Registry& r = registry();
  std::vector<Paused> out;
  {
    std::lock_guard lk(r.mu);
    if (auto h = r.by_held.find(c); h != r.by_held.end()) {
      Registry::Entry it = h->second;
      drop_from_target(r, it->target, it);
      out.push_back(take(r, it));
    }
  }
  g_resumed_early.fetch_add(out.size(), std::memory_order_relaxed);
  finish(out);
}

void drop_mute_target() noexcept {
  if (Cown* t = std::exchange(tl_mute_target, nullptr)) {
    g_skipped.fetch_add(1, std::memory_order_relaxed);
    t->release();
  }
}

void behaviour_wait_begins() {
  g_waiting.fetch_add(1);  // BP5: then the registered count
  if (g_registered.load() == 0) return;
  Registry& r = registry();
  std::vector<Paused> out;
  {
    std::lock_guard lk(r.mu);
    try {
      out.reserve(r.paused.size());  // nothing taken yet if it throws
    } catch (...) {
      g_waiting.fetch_sub(1);  // the caller's guard is not built
      throw;
    }
    while (!r.by_target.empty()) take_target(r, r.by_target.begin()->first, out);
  }
  g_resumed_early.fetch_add(out.size(), std::memory_order_relaxed);
  finish(out);
}

void behaviour_wait_ends() noexcept { g_waiting.fetch_sub(1); }

void drained(Cown* c) {
  Registry& r = registry();
  std::vector<Paused> out;
  {
    std::lock_guard lk(r.mu);
    if (c->backlog() > low_mark(c)) return;
    take_target(r, c, out);
    if (c->flags.load() & Cown::kBlockedOn) r.cv.notify_all();
  }
  finish(out);
}

}  // namespace detail

void set_backpressure(const Backpressure& b) {
  detail::Registry& r = detail::registry();
  std::lock_guard lk(r.mu);
  r.settings = b;
  detail::g_default_limit.store(b.mailbox_limit, std::memory_order_relaxed);
}

Backpressure backpressure() {
  detail::Registry& r = detail::registry();
  std::lock_guard lk(r.mu);
  return r.settings;
}

BackpressureStats backpressure_stats() {
  using detail::g_paused;
  auto ld = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  return {ld(g_paused), ld(detail::g_resumed_early), ld(detail::g_skipped), ld(detail::g_blocked),
          ld(detail::g_refused)};
}

}  // namespace troupe
