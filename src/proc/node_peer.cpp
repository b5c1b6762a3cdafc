// src/proc/node_peer.cpp: worker side of Node (node_private.hpp): direct
// channels to other workers. Submitting a call to an actor in another worker
// (queued while the root sets the channel up), taking the root's answer and
// sending the queue, receiving on a channel (replies to our calls, or the
// peer's calls to the actors we host, under ids of our own), replying to a
// peer, and dropping a channel whose peer is gone. Keeps N11 (one path per
// sender and worker, in order; every wait bounded by a reply or an end of
// stream), N7 (only the main thread receives), N1 (no message sent under
// mu_), node.hpp ND1 (each call completes once) and ND2 (a queued call holds
// dups of its descriptors).
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "node_private.hpp"

namespace troupe::proc::detail {

// N11: a method call to an actor in another worker (a spawn next to one
// goes through the root, which counts the actors each worker hosts).
bool Node::goes_direct(const detail::OutCall& call) const {
  return worker_mode_ && call.worker != 0 && call.worker != self_id_ &&
         call.name.rfind("new ", 0) != 0;
}

// N11: sends `call` over the direct channel to call.worker, or queues it
// while the channel is being set up (asking the root for it on the first
// call), or sends it to the root once the root said to relay.
std::uint64_t Node::submit_direct(detail::OutCall&& call, std::unique_ptr<PendingBase> p) {
  // ND2: the caller's descriptors are borrowed only until we return; a call
  // that is queued holds dups (made first, outside the lock; dropped if it
  // is sent at once).
  std::vector<Fd> dups;
  for (int fd : call.fds) {
    int d = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0) {
      p->fail(std::make_exception_ptr(errno_error(
          Errc::system, errno,
          fmt::format("{}: cannot keep its descriptors for a direct channel", p->name))));
      return 0;
    }
    dups.emplace_back(d);
  }
  std::uint64_t id;
  std::shared_ptr<PeerChan> via;
  bool first_deadline = false;  // the main thread may sleep in poll without a timeout
  bool ask = false, queued = false;
  {
    std::lock_guard lock(mu_);
    id = next_call_++;
    PendingEntry e;
    e.p = std::move(p);
    // N11: the deadline the root would have kept, had it relayed the call.
    const auto timeout = call.timeout.count() > 0 ? call.timeout : opts_.call_timeout;
    if (timeout.count() > 0) {
      e.deadline = Clock::now() + timeout;
      first_deadline = deadlines_++ == 0;
    }
    auto [it, first] = peers_out_.try_emplace(call.worker);
    PeerOut& po = it->second;
    if (po.state == PeerOut::connecting) {
      Waiting q;
      q.id = id;
      q.fds = std::move(dups);
      q.body = std::move(call.body);
      po.queued.push_back(std::move(q));
      e.worker = call.worker;
      ask = first;
      queued = true;
    } else if (po.state == PeerOut::direct) {
      via = po.chan;
      e.worker = call.worker;
    }
    pending_.emplace(id, std::move(e));
  }
  // N11: a main thread asleep in poll with no deadline to watch (this call
  // comes from a pool thread of a worker with several) wakes, so that it
  // sleeps at most 10 ms from now on. Its own wake eventfd: woke() clears it.
  if (first_deadline) [[maybe_unused]]
    auto rc = ::eventfd_write(parent_->wake_fd(), 1);
  if (queued) {
    if (ask) {
      msgpack::sbuffer b;
      msgpack::pack(b, std::make_tuple(call.worker));
      try {
        parent_->send(Kind::connect, 0, std::string_view(b.data(), b.size()));
      } catch (const std::exception& err) {
        // The root is gone: this worker stops serving; its calls wait for nothing.
        log_failure(err, "cannot ask for a direct channel");
      }
    }
    return id;
  }
  try {
    if (via)
      via->chan->send(Kind::call, id, call.body, call.fds);
    else
      parent_->send(Kind::call, id, call.body, call.fds);
  } catch (const Error& err) {
    // A dead peer: the channel's end of stream fails the call naming it (N11).
    if (!via || err.code() != Errc::worker_lost) fail_pending(id, std::current_exception());
  } catch (...) {
    fail_pending(id, std::current_exception());
  }
  return id;
}

// N11: the root's answer to a connect (call: our channel to the peer; relay:
// none), or the serving end of a channel another worker asked for. Main
// thread (it receives from the parent).
void Node::on_connect(Message& m) {
  std::uint32_t peer = 0;
  std::int32_t pid = 0;
  PeerRole role = PeerRole::relay;
  try {
    auto oh = detail::unpack_body(m.body);
    auto t = oh.get().as<std::tuple<std::uint32_t, std::int32_t, std::uint8_t>>();
    peer = std::get<0>(t);
    pid = std::get<1>(t);
    if (std::get<2>(t) > static_cast<std::uint8_t>(PeerRole::relay)) throw msgpack::type_error();
    role = static_cast<PeerRole>(std::get<2>(t));
  } catch (const std::exception& e) {
    log_failure(e, "a connect message that cannot be read");
    return;
  }
  std::shared_ptr<PeerChan> pc;
  if (role != PeerRole::relay) {
    try {
      if (m.fds.size() != 4)
        throw Error(Errc::bad_message,
                    fmt::format("bad message: a direct channel with {} descriptors", m.fds.size()));
      auto c = std::make_shared<PeerChan>();
      c->peer = peer;
      c->pid = pid;
      c->caller = role == PeerRole::call;
      c->chan = detail::Channel::attach(
          std::move(m.fds[0]), {std::move(m.fds[1]), std::move(m.fds[2]), std::move(m.fds[3])},
          c->caller);  // C7
      pc = std::move(c);
      peer_chans_.push_back(pc);
    } catch (const std::exception& e) {
      // Our end closes: the peer sees its end of stream (N11), our calls relay.
      log_failure(e, fmt::format("cannot attach a direct channel with worker {}", peer));
    }
  }
  if (role == PeerRole::serve) return;
  send_queued(peer, pc);
}

// N11: sends the calls queued for `peer` in order, over `via` (or to the
// root if null), then makes that the path of later calls.
void Node::send_queued(std::uint32_t peer, const std::shared_ptr<PeerChan>& via) {
  for (;;) {
    Waiting q;
    {
      std::lock_guard lock(mu_);
      auto it = peers_out_.find(peer);
      if (it == peers_out_.end()) return;  // we never asked
      PeerOut& po = it->second;
      if (po.state != PeerOut::connecting) return;  // answered already
      po.chan = via;
      if (po.queued.empty()) {
        po.state = via ? PeerOut::direct : PeerOut::relayed;
        return;
      }
      q = std::move(po.queued.front());
      po.queued.pop_front();
      auto pit = pending_.find(q.id);
      if (pit == pending_.end()) continue;  // cancelled meanwhile
      if (!via) pit->second.worker = 0;     // the root's from now on
    }
    std::vector<int> fds;
    for (auto& f : q.fds) fds.push_back(f.get());
    try {
      if (via)
        via->chan->send(Kind::call, q.id, q.body, fds);
      else
        parent_->send(Kind::call, q.id, q.body, fds);
    } catch (const Error& err) {
      if (!via || err.code() != Errc::worker_lost) fail_pending(q.id, std::current_exception());
    } catch (...) {
      fail_pending(q.id, std::current_exception());
    }
  }
}

// N11, N7: handles everything `pc` can deliver now. False: its peer is gone
// (the caller drops it).
bool Node::serve_peer(const std::shared_ptr<PeerChan>& pc, bool socket_ready) {
  if (pc->closed.load(std::memory_order_relaxed)) return true;  // dropped in a nested wait
  for (;;) {
    Message m;
    try {
      auto got = pc->chan->receive(m, socket_ready);
      if (got == detail::Channel::Got::none) return true;
      if (got == detail::Channel::Got::closed) return false;
    } catch (const detail::BadMessage& e) {
      // wire.hpp WR3: a rejected call is answered, a rejected reply fails ours.
      if (!answer_rejected(e, [&](std::uint64_t id, const std::string& body) {
            try {
              pc->chan->send(Kind::reply, id, body);
            } catch (const std::exception& err) {
              log_failure(err, fmt::format("cannot reply to worker {}", pc->peer));
            }
          }))
        std::fprintf(stderr, "troupe worker %u: from worker %u: %s\n", self_id_, pc->peer,
                     e.what());
      continue;
    } catch (const Error& e) {
      std::fprintf(stderr, "troupe worker %u: from worker %u: %s\n", self_id_, pc->peer, e.what());
      if (e.code() == Errc::bad_message) continue;  // rejected, the channel keeps its place
      return false;                                 // a failing socket: drop the channel
    }
    if (pc->caller && m.kind == Kind::reply) {
      complete(m);
    } else if (!pc->caller && m.kind == Kind::call) {
      serve_peer_call(pc, m);
    } else if (!pc->caller && m.kind == Kind::cancel) {
      cancel_from_peer(*pc, m.id);
    } else {
      std::fprintf(stderr, "troupe worker %u: from worker %u: an unexpected message (kind %d)\n",
                   self_id_, pc->peer, static_cast<int>(m.kind));
    }
  }
}

// N11: a call from another worker runs under an id of ours.
void Node::serve_peer_call(const std::shared_ptr<PeerChan>& pc, Message& m) {
  {
    std::lock_guard lock(mu_);
    const std::uint64_t local = kPeerCall | ++next_in_call_;
    in_calls_.emplace(local, InCall{pc, m.id});
    m.id = local;
  }
  serve_call(m);
}

// W2 for a call that came over `pc`: skipped if it has not started.
void Node::cancel_from_peer(const PeerChan& pc, std::uint64_t id) {
  std::lock_guard lock(mu_);
  for (auto& [local, in] : in_calls_) {
    if (in.from.get() != &pc || in.id != id) continue;
    auto it = unstarted_.find(local);
    if (it != unstarted_.end()) it->second = true;
    return;
  }
}

// N11: a reply to a call that came over a direct channel goes back there
// (false: `id` is not such a call). Any thread.
bool Node::reply_to_peer(std::uint64_t id, std::string_view body, std::span<const int> fds) {
  if (!(id & kPeerCall)) return false;
  InCall in;
  {
    std::lock_guard lock(mu_);
    auto it = in_calls_.find(id);
    if (it == in_calls_.end()) return true;  // its caller is gone: nobody waits
    in = std::move(it->second);
    in_calls_.erase(it);
  }
  if (in.from->closed.load(std::memory_order_relaxed)) return true;  // N11: dropped
  try {
    in.from->chan->send(Kind::reply, in.id, body, fds);
  } catch (const std::exception& e) {
    log_failure(e, fmt::format("cannot reply to worker {}", in.from->peer));
  }
  return true;
}

// N11: the end of stream on `pc` (its peer died or dropped it). Our calls
// through it fail naming the method; the peer's calls still running here
// will find no channel for their replies. Main thread.
void Node::drop_peer(const std::shared_ptr<PeerChan>& pc) {
  if (pc->closed.exchange(true)) return;
  peer_chans_.erase(std::remove(peer_chans_.begin(), peer_chans_.end(), pc), peer_chans_.end());
  std::vector<std::unique_ptr<PendingBase>> lost;
  {
    std::lock_guard lock(mu_);
    if (pc->caller) {
      auto it = peers_out_.find(pc->peer);
      if (it != peers_out_.end() && it->second.chan == pc) {
        it->second.state = PeerOut::relayed;  // the root knows the peer's fate
        it->second.chan.reset();
      }
      lost = take_pending_of_locked(pc->peer);
    } else {
      for (auto it = in_calls_.begin(); it != in_calls_.end();) {
        if (it->second.from == pc)
          it = in_calls_.erase(it);
        else
          ++it;
      }
    }
  }
  for (auto& p : lost)
    p->fail(std::make_exception_ptr(
        Error(Errc::worker_lost,
              fmt::format("worker {} (pid {}) is lost while running {}: its direct channel to "
                          "worker {} closed (it exited or was killed)",
                          pc->peer, pc->pid, p->name, self_id_))));
}

// N11: direct calls past their deadline fail with Errc::timeout, and the
// peer is told to skip them (as the root does for the calls it relays).
void Node::expire_direct() {
  std::vector<std::uint64_t> expired;
  {
    std::lock_guard lock(mu_);
    if (deadlines_ == 0) return;
    const auto now = Clock::now();
    if (now < next_expiry_scan_) return;  // at most one scan every 10 ms
    next_expiry_scan_ = now + std::chrono::milliseconds(10);
    for (auto& [id, e] : pending_)
      if (e.deadline <= now) expired.push_back(id);
  }
  for (std::uint64_t id : expired) cancel(id, true);
}

}  // namespace troupe::proc::detail
