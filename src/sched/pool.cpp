// src/sched/pool.cpp: the work-stealing pool (see troupe/sched/pool.hpp for
// the invariants PL1-PL14 cited here).
#include "troupe/sched/pool.hpp"

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "troupe/detail/platform.hpp"
#include "troupe/detail/systematic.hpp"

namespace troupe::sched {

__thread bool tl_in_continuations = false;    // scheduler.hpp SC5
__thread bool tl_granting_successor = false;  // scheduler.hpp SC6

namespace {
thread_local unsigned tl_help_depth = 0;  // helping frames on this thread's stack (PL7)

std::uint64_t xorshift(std::uint64_t& s) noexcept {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}
}  // namespace

Pool::Pool(std::size_t threads) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  workers_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i) {
    auto w = std::make_unique<Worker>();
    w->index = static_cast<unsigned>(i);
    w->rng = 0x9E3779B97F4A7C15ull * (i + 1);
    workers_.push_back(std::move(w));
  }
  for (auto& w : workers_) {
    Worker* raw = w.get();
    w->thread = std::thread([this, raw] { worker_main(raw); });
  }
}

Pool::~Pool() {
  if (this_worker() != nullptr) {
    // PL5: a worker cannot join itself, and once this returns it would go on
    // running worker_main on freed memory. A program error, reported loudly
    // (troupe::shutdown() turns the same mistake into a troupe::Error).
    std::fprintf(stderr, "troupe: a sched::Pool was destroyed from one of its own threads\n");
    std::abort();
  }
  wait_idle();  // PL5: drain first
  stop_.store(true, std::memory_order_seq_cst);
  sleep_.notify_all();
  for (auto& w : workers_) w->thread.join();
}

__thread void* Pool::tl_worker_ = nullptr;
__thread const Pool* Pool::tl_pool_ = nullptr;

void Pool::schedule(Work* w) {
  if (Worker* self = this_worker()) {
    // PL6: into the next slot, and what it displaces into the deque; PL10:
    // a continuation's work goes into the deque itself if the slot is taken.
    // The exchange's release half publishes w's contents to a thief that
    // exchanges it out; its acquire half: the displaced item was put there
    // by this thread, and a thief's null was written by an exchange we read.
    // seq_cst: with the seq_cst loads below, the store half of PL3's Dekker
    // pair (a searcher or sleeper re-checks `next` with a seq_cst load after
    // its own seq_cst RMW), so no fence is needed for it.
    Work* to_deque = w;
    bool successor = tl_granting_successor;  // PL12: what to_deque is
    if (!tl_in_continuations || !self->next.load(std::memory_order_relaxed)) {
      to_deque = self->next.exchange(w, std::memory_order_seq_cst);
      std::swap(successor, self->next_is_successor);
    }
    if (to_deque) {
      self->deque.push(to_deque);  // PL1
      self->newest_is_successor = successor;
      // Orders the push (a plain release store) before the loads below.
      detail::store_load_fence();
    }
  } else {
    // The queue's seq_cst fetch_add on its size is the same full barrier.
    injection_.push(w);
  }
  TROUPE_YIELD();
  // PL3: wake a sleeper unless a worker is already searching (it will find w;
  // a searcher that gives up re-checks every queue before it sleeps).
  if (searching_.load(std::memory_order_seq_cst) == 0) sleep_.notify_one(/*fenced=*/true);
}

bool Pool::run_nested(Work* w) {
  Worker* self = this_worker();  // PL14: our own workers only
  if (self == nullptr) return false;
  self->counters.bump(self->counters.run);  // PL9
  self->counters.bump(self->counters.nested);
  w->run();
  return true;
}

Work* Pool::find_local(Worker* self) {
  if (++self->tick >= kFairnessInterval) {  // PL2
    self->tick = 0;
    // The oldest outside item or our own oldest, each first in its turn.
    const bool deque_first = (++self->fair_picks % kDequeFirstEvery) == 0;
    if (Work* w = deque_first ? self->deque.steal() : injection_.try_pop()) return w;
    if (Work* w = deque_first ? injection_.try_pop() : self->deque.steal()) return w;
  }
  // PL12: two chains of successors, taken in turn.
  if (std::exchange(self->took_next, false) && self->next_is_successor &&
      self->newest_is_successor)
    if (Work* w = self->deque.take()) {
      self->newest_is_successor = false;  // not known for the one below it
      return w;
    }
  // acq_rel: pairs with the exchange that put the item there (ours or, for
  // the pointer only, a thief's null).
  if (self->next.load(std::memory_order_relaxed))
    if (Work* w = self->next.exchange(nullptr, std::memory_order_acq_rel)) {
      self->took_next = true;
      return w;
    }
  if (Work* w = self->deque.take()) {
    self->newest_is_successor = false;
    return w;
  }
  // PL11: work already inside the pool before new outside work. One victim,
  // at random: a constant cost per empty-handed look, however many workers
  // (the search in find_work tries them all).
  if (const std::size_t n = workers_.size(); n > 1) {
    std::size_t i = xorshift(self->rng) % (n - 1);  // any worker but us
    if (i >= self->index) ++i;
    if (Work* w = steal_from(self, workers_[i].get())) return w;
  }
  return injection_.try_pop();
}

Work* Pool::steal_from(Worker* self, Worker* victim) {
  Work* w = victim->deque.steal();
  if (w) self->counters.bump(self->counters.stolen);  // PL9
  return w;
}

Work* Pool::steal_any(Worker* self, bool take_next) {
  const std::size_t n = workers_.size();
  if (n <= 1) return nullptr;
  std::size_t start = xorshift(self->rng) % n;
  for (std::size_t i = 0; i < n; ++i) {
    Worker* v = workers_[(start + i) % n].get();
    if (v == self) continue;
    if (Work* w = steal_from(self, v)) return w;
    // PL6: a next slot only late in the search. Load first so that an empty
    // slot's cache line is not written.
    if (take_next && v->next.load(std::memory_order_relaxed))
      if (Work* w = v->next.exchange(nullptr, std::memory_order_acq_rel)) {
        self->counters.bump(self->counters.stolen);
        return w;
      }
  }
  return nullptr;
}

Work* Pool::find_work(Worker* self) {
  if (Work* w = find_local(self)) return w;
  searching_.fetch_add(1, std::memory_order_seq_cst);
  Work* found = nullptr;
  for (unsigned round = 0; round < kSpinRounds && !found; ++round) {
    found = steal_any(self, round >= kStealNextAfter);
    if (!found) found = injection_.try_pop();
    if (!found) {
      if (stop_.load(std::memory_order_relaxed)) break;
      unsigned pauses = 32;
      if (round >= kYieldAfterRounds) {  // PL13
        detail::Spin::yield_thread();
        self->counters.bump(self->counters.yields);
        pauses = kPausesAfterYield;
      }
      for (unsigned i = 0; i < pauses; ++i) detail::cpu_relax();
      TROUPE_YIELD();
    }
  }
  // seq_cst: a producer that still saw us searching skipped its notify; our
  // re-check in worker_main (after sleep_.prepare) then sees its work (PL3).
  std::size_t searchers = searching_.fetch_sub(1, std::memory_order_seq_cst);
  // The last searcher to find work passes the duty on: producers that saw it
  // searching did not wake anyone, so if more work is visible, wake a sleeper
  // (the rule Go's scheduler uses for its spinning Ms).
  if (found && searchers == 1 && any_work_visible()) sleep_.notify_one();
  return found;
}

PoolStats Pool::stats() const noexcept {
  PoolStats s;
  s.threads = workers_.size();
  s.queued = static_cast<std::size_t>(std::max<std::int64_t>(injection_.size_hint(), 0));
  for (auto& w : workers_) {
    const auto& c = w->counters;  // PL9: relaxed snapshots of each owner's counts
    s.run += c.run.load(std::memory_order_relaxed);
    s.stolen += c.stolen.load(std::memory_order_relaxed);
    s.sleeps += c.sleeps.load(std::memory_order_relaxed);
    s.wakes += c.wakes.load(std::memory_order_relaxed);
    s.yields += c.yields.load(std::memory_order_relaxed);
    s.nested += c.nested.load(std::memory_order_relaxed);
    s.queued += w->deque.size_hint() + (w->next.load(std::memory_order_relaxed) ? 1 : 0);
  }
  return s;
}

bool Pool::any_work_visible() const {
  if (injection_.size_hint() > 0) return true;
  for (auto& w : workers_)
    if (!w->deque.empty_hint() || w->next.load(std::memory_order_seq_cst)) return true;
  return false;
}

void Pool::note_idle_change() {
  idle_gen_.fetch_add(1, std::memory_order_release);
  detail::futex_wake(&idle_gen_, INT_MAX);
}

void Pool::worker_main(Worker* self) {
  tl_worker_ = self;
  tl_pool_ = this;
  set_current(this);
  // PL3: our search ended empty-handed, but the re-check found work. The
  // producers of that work may have skipped their wake-up because we were
  // searching, so when we take one item, more visible work gets a sleeper
  // woken, as the last searcher's duty in find_work (without this, two
  // items pushed while we searched ran one after the other, the second
  // worker asleep throughout).
  bool searched_late = false;
  for (;;) {
    if (Work* w = find_work(self)) {
      if (std::exchange(searched_late, false) && any_work_visible()) sleep_.notify_one();
      self->counters.bump(self->counters.run);  // PL9
      w->run();
      continue;
    }
    searched_late = false;
    std::uint32_t key = sleep_.prepare();  // PL3: announce, then re-check
    if (any_work_visible()) {
      sleep_.cancel();
      searched_late = true;
      continue;
    }
    if (stop_.load(std::memory_order_seq_cst)) {
      sleep_.cancel();
      break;
    }
    // PL4: count ourselves idle before sleeping; the last one in tells wait_idle.
    if (idle_.fetch_add(1, std::memory_order_seq_cst) + 1 == workers_.size()) note_idle_change();
    self->counters.bump(self->counters.sleeps);
    sleep_.wait(key);
    self->counters.bump(self->counters.wakes);
    idle_.fetch_sub(1, std::memory_order_seq_cst);
  }
  set_current(nullptr);
  tl_worker_ = nullptr;
  tl_pool_ = nullptr;
}

void Pool::help_until(Waiter& waiter) {
  Worker* self = this_worker();
  if (self == nullptr) {
    Scheduler::help_until(waiter);
    return;
  }
  const bool may_steal = tl_help_depth < kMaxHelpDepth;  // PL7
  // PL8: a waiter that may not steal sleeps apart, so schedule()'s single
  // wake-up always reaches a thread that can take the new work.
  detail::EventCount& sleep = may_steal ? sleep_ : deep_sleep_;
  bool armed = false, slept = false;
  unsigned spins = 0;
  while (!waiter.ready()) {
    // PL7: our own newest items first (they are deeper than the waiter); no
    // fairness pick here, it would pull in old, large work.
    Work* w = nullptr;
    if (self->next.load(std::memory_order_relaxed))
      w = self->next.exchange(nullptr, std::memory_order_acq_rel);
    if (!w) w = self->deque.take();
    if (!w && may_steal) {
      w = steal_any(self, spins >= kStealNextAfter);
      if (!w) w = injection_.try_pop();
    }
    if (w) {
      self->counters.bump(self->counters.run);
      ++tl_help_depth;
      w->run();
      --tl_help_depth;
      spins = 0;
      continue;
    }
    if (++spins < kSpinRounds) {
      for (int i = 0; i < 32; ++i) detail::cpu_relax();
      continue;
    }
    if (!armed) {
      waiter.arm(this);  // ready() -> wake_helpers()
      armed = true;
      continue;
    }
    std::uint32_t key = sleep.prepare();
    if (waiter.ready() || (may_steal && any_work_visible())) {
      sleep.cancel();
      continue;
    }
    self->counters.bump(self->counters.sleeps);
    sleep.wait(key);  // not idle (PL4): we are inside a task
    self->counters.bump(self->counters.wakes);
    slept = true;
    spins = 0;
  }
  // PL8: the wake-up that ended our sleep may have been schedule()'s one
  // notify for work we are not taking now (our own result came first): pass
  // it on, or that work would wait for a worker that nobody woke.
  if (slept && any_work_visible()) sleep_.notify_one();
}

void Pool::wake_helpers() {
  sleep_.notify_all();
  deep_sleep_.notify_all();
}

void Pool::wait_idle() {
  for (;;) {
    std::uint32_t gen = idle_gen_.load(std::memory_order_acquire);
    if (idle_.load(std::memory_order_seq_cst) == workers_.size() && !any_work_visible()) return;
    detail::futex_wait(&idle_gen_, gen);
  }
}

}  // namespace troupe::sched
