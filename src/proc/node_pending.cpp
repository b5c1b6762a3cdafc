// src/proc/node_pending.cpp: both sides of Node (node_private.hpp): the table
// of pending calls: submitting (a worker's own calls go to its parent),
// completing and failing an entry, the bookkeeping an erased entry leaves,
// and the messages that end a call or an object early (cancel, release).
// Keeps node.hpp ND1 (every call completes once, its entry erased under mu_ by
// whoever completes it), N1 (completed outside mu_), N5 (a queued call that
// ends leaves the queue), N6.
#include <algorithm>

#include "node_private.hpp"
#include "troupe/trace.hpp"

namespace troupe::proc::detail {

void PendingBase::trace_end() noexcept {
  if (trace_t0 == 0) [[likely]]
    return;
  const std::uint64_t t0 = std::exchange(trace_t0, 0);
  try {  // trace.hpp: the call, from submit to its end
    std::string args = fmt::format("\"outcome\":\"{}\"", trace_outcome);
    if (trace_pid != 0) fmt::format_to(std::back_inserter(args), ",\"worker_pid\":{}", trace_pid);
    troupe::detail::trace::complete("proc", name, t0, troupe::detail::trace::now_ns(),
                                    std::move(args));
  } catch (...) {  // out of memory while tracing: the event is lost, not the call
  }
}

std::uint64_t Node::submit(detail::OutCall&& call, std::unique_ptr<PendingBase> p) {
  if (troupe::detail::trace::on()) [[unlikely]]
    p->trace_t0 = troupe::detail::trace::now_ns();
  if (worker_mode_) return submit_to_parent(std::move(call), std::move(p));
  return dispatch(std::move(call), std::move(p), true);
}

std::uint64_t Node::submit_to_parent(detail::OutCall&& call, std::unique_ptr<PendingBase> p) {
  if (goes_direct(call)) return submit_direct(std::move(call), std::move(p));  // N11
  std::uint64_t id;
  {
    std::lock_guard lock(mu_);
    id = next_call_++;
    PendingEntry e;
    e.p = std::move(p);
    pending_.emplace(id, std::move(e));
  }
  try {
    parent_->send(Kind::call, id, call.body, call.fds);
  } catch (...) {
    fail_pending(id, std::current_exception());
  }
  return id;
}

void Node::release_remote(std::uint32_t worker, std::uint64_t object) {
  msgpack::sbuffer b;
  msgpack::pack(b, std::make_tuple(worker, object));
  try {
    if (worker_mode_) {
      parent_->send(Kind::release, 0, std::string_view(b.data(), b.size()));
      return;
    }
    std::shared_ptr<WorkerRec> w;
    {
      std::lock_guard lock(mu_);
      auto it = workers_.find(worker);
      if (it == workers_.end()) return;  // it died: nothing to release
      w = it->second;
      if (w->objects > 0) w->objects--;
      w->last_used = Clock::now();
    }
    w->chan->send(Kind::release, 0, std::string_view(b.data(), b.size()));
  } catch (const std::exception& e) {
    // The worker is gone (worker_lost, not logged): so is the object.
    log_failure(e, fmt::format("cannot release object #{} on worker {}", object, worker));
  }
}

// Ends call `id` now: Errc::cancelled, or Errc::timeout (`timed_out`); the
// worker it went to is told to skip it.
void Node::cancel(std::uint64_t id, bool timed_out) {
  std::unique_ptr<PendingBase> p;
  std::shared_ptr<WorkerRec> w;
  std::shared_ptr<PeerChan> peer;  // N11: a direct call's channel
  bool unsent = false;             // N11: still queued, the peer never sees it
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return;  // already done
    p = std::move(it->second.p);
    if (worker_mode_ && it->second.worker != 0) {
      auto po = peers_out_.find(it->second.worker);
      if (po != peers_out_.end()) {
        auto& q = po->second.queued;
        auto qit =
            std::find_if(q.begin(), q.end(), [id](const Waiting& qw) { return qw.id == id; });
        unsent = qit != q.end();
        if (unsent) q.erase(qit);
        peer = po->second.chan;
      }
      unsent = unsent || !peer;
    }
    if (!worker_mode_) {
      auto wit = workers_.find(it->second.worker);
      if (wit != workers_.end()) {
        w = wit->second;
        unassign_locked(it->second, *w);
      }
    }
    forget_deadline_locked(it->second);
    forget_waiting_locked(it->first, it->second);
    pending_.erase(it);
  }
  try {
    detail::Channel* chan = worker_mode_ ? parent_.get() : (w ? w->chan.get() : nullptr);
    if (peer) chan = peer->chan.get();
    if (chan && !unsent) chan->send(Kind::cancel, id, {});
  } catch (const std::exception& e) {  // the call fails as cancelled all the same
    log_failure(e, fmt::format("cannot send the cancel of {}", p->name));
  }
  p->trace_outcome = timed_out ? "timed out" : "cancelled";
  p->trace_end();
  p->fail(std::make_exception_ptr(timed_out ? Error(Errc::timeout, p->name + " timed out")
                                            : Error(Errc::cancelled, p->name + " was cancelled")));
}

// Completes the call `m` answers. True if calls wait for a worker (N5):
// this reply may have freed one, and only the IO thread sends them.
// `waiter`: called by a waiting caller (N8).
bool Node::complete(Message& m, bool waiter) {
  std::unique_ptr<PendingBase> p;
  bool queued;
  {
    std::lock_guard lock(mu_);
    queued = !waiting_.empty();
    auto it = pending_.find(m.id);
    if (it == pending_.end()) return queued;  // timed out or cancelled: drop the late reply
    if (waiter) stats_.replies_to_waiters++;
    p = std::move(it->second.p);
    if (!worker_mode_) {
      const pid_t pid = note_reply_locked(it->second, m);
      if (p->trace_t0 != 0) p->trace_pid = pid;  // trace.hpp
    }
    forget_deadline_locked(it->second);
    forget_waiting_locked(it->first, it->second);
    pending_.erase(it);
  }
  p->trace_outcome = "replied";
  p->trace_end();
  p->complete(m);  // N1: outside the lock
  return queued;
}

void Node::fail_pending(std::uint64_t id, std::exception_ptr e) {
  std::unique_ptr<PendingBase> p;
  {
    std::lock_guard lock(mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    p = std::move(it->second.p);
    if (!worker_mode_) {
      auto wit = workers_.find(it->second.worker);
      if (wit != workers_.end()) unassign_locked(it->second, *wit->second);
    }
    forget_deadline_locked(it->second);
    forget_waiting_locked(it->first, it->second);
    pending_.erase(it);
  }
  p->trace_end();
  p->fail(std::move(e));
}

// A call on `w` ends without a reply (cancelled, timed out, rejected): no
// handle will ever own the object a spawn may have made, so it no longer
// keeps the worker from retiring (mu_ held).
void Node::unassign_locked(const PendingEntry& e, WorkerRec& w) {
  if (w.outstanding > 0) w.outstanding--;
  if (e.spawns_object && w.objects > 0) w.objects--;
}

// Bookkeeping for a pending entry about to be erased (mu_ held).
void Node::forget_deadline_locked(const PendingEntry& e) {
  if (e.deadline != Clock::time_point::max() && deadlines_ > 0) deadlines_--;
}

// N5: a queued call that ends before it was sent (cancelled, timed out)
// leaves the queue, closing the descriptors it held (mu_ held).
void Node::forget_waiting_locked(std::uint64_t id, const PendingEntry& e) {
  if (e.worker != 0 || waiting_.empty()) return;
  auto it =
      std::find_if(waiting_.begin(), waiting_.end(), [id](const Waiting& q) { return q.id == id; });
  if (it != waiting_.end()) waiting_.erase(it);
}

std::vector<std::unique_ptr<PendingBase>> Node::take_pending_of_locked(std::uint32_t worker) {
  std::vector<std::unique_ptr<PendingBase>> taken;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.worker == worker) {
      taken.push_back(std::move(it->second.p));
      forget_deadline_locked(it->second);
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  return taken;
}

pid_t Node::note_reply_locked(PendingEntry& e, const Message& m) {
  auto wit = workers_.find(e.worker);
  if (wit == workers_.end()) return 0;
  WorkerRec& w = *wit->second;
  w.outstanding--;
  w.last_used = Clock::now();
  if (e.spawns_object) {
    // body is [status, payload]: the object exists only if status is ok.
    bool ok = m.body.size() >= 2 && static_cast<unsigned char>(m.body[0]) == 0x92 && m.body[1] == 0;
    if (!ok && w.objects > 0) w.objects--;
  }
  return w.pid;
}
}  // namespace troupe::proc::detail
