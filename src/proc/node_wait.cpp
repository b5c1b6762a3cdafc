// src/proc/node_wait.cpp: root side of Node (node_private.hpp): the waiting
// caller's own receive. A thread outside any scheduler that blocks on a
// promise while its last remote call is pending claims the channel of the
// worker that call went to and receives there itself, as the IO thread
// would (the blocking poller, scheduler.hpp SC4). Keeps N8, and N7 through
// it (only the claim's holder receives).
//
// N8: why no message is left unseen: the IO thread stores io_asleep_ = true
// before its round of claim + prepare_sleep over all channels and stores
// false after epoll_wait returns. If it claimed this channel in that round
// after the caller released it, it set the word itself; if before the caller
// claimed it, its release of the claim and the caller's acquire order its
// store before the caller's load, so the caller sees true and sets the word;
// if the IO thread is awake (false seen), it has not begun the round, or has
// woken and skipped this channel (no event for it), and its next round claims
// it and rechecks the ring before it sleeps.
#include "node_private.hpp"

namespace troupe::proc::detail {

// The blocking poller (N8): a caller outside any scheduler waiting on `wt`
// receives from the worker its last call went to. True once wt.ready().
bool Node::help_wait(sched::Waiter& wt) {
  if (tl_receiving || worker_mode_ || tl_expect == 0) return false;
  // N8: ~Node waits for the threads in here; none enters once it closes.
  struct Inside {
    explicit Inside(std::atomic<int>& n) : n(n) { n.fetch_add(1); }
    ~Inside() { n.fetch_sub(1); }
    std::atomic<int>& n;
  } inside(helpers_inside_);
  if (closing_.load()) return false;
  const std::uint64_t id = tl_expect;
  std::shared_ptr<WorkerRec> w;
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(id);
    if (it != pending_.end()) {
      auto wit = workers_.find(it->second.worker);
      if (wit != workers_.end()) w = wit->second;
    }
  }
  if (!w) {  // answered already (wt waits for something else), or its worker is gone
    tl_expect = 0;
    return false;
  }
  // The claim and tl_receiving, released however we leave (an exception
  // from a handler propagates to the waiter, the channel continues after it).
  struct Held {
    WorkerRec* w = nullptr;
    ~Held() {
      tl_receiving = false;
      if (w) w->unclaim();
    }
  } held;
  Watch watch{id};
  bool closed = false;
  detail::Spin spin(kSpin);
  while (!wt.ready()) {
    if (watch.done || closed) break;  // our call is done (wt waits for something else), or gone
    if (!held.w && w->try_claim()) {
      held.w = w.get();
      tl_receiving = true;
      w->chan->woke(false);  // N8: the reply needs no wake-up while we watch the ring
    }
    if (held.w && (w->chan->ready() || w->socket_hint.load(std::memory_order_relaxed)))
      closed = receive_from(w, w->socket_hint.exchange(false, std::memory_order_relaxed), &watch);
    if (!spin.step()) break;
  }
  // N8: leave the word set for a sleeping IO thread; if something came
  // meanwhile, it is the IO thread's (woken) rather than ours to take.
  // Held then releases the claim.
  if (held.w && !closed && io_asleep_.load() && !w->chan->prepare_sleep()) wake_io();
  if (watch.done) tl_expect = 0;
  return wt.ready();
}
}  // namespace troupe::proc::detail
