// src/proc/node_worker.cpp: worker side of Node (node_private.hpp): the
// serving loop that receives from the parent's channel and the direct
// channels of other workers (N11: one poll over all of them) and acts on each
// message, the single-threaded worker's scheduler (WorkerLoop), running
// calls, replying, the objects this worker hosts. Keeps W1 (one thread
// receives and runs everything), W2 (a cancel skips only a call not yet
// started), N7 (only the worker's main thread receives).
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "node_private.hpp"
#include "troupe/detail/mpsc_queue.hpp"
#include "troupe/trace.hpp"

namespace troupe::proc::detail {

namespace {

// A worker ends with _exit (no static destructors: they belong to the
// program the worker was started from): what would have been written at
// exit is written here, the trace (trace.hpp: TROUPE_TRACE) and stdio.
[[noreturn]] void leave(int status) {
  try {
    troupe::trace::stop();
  } catch (const Error& e) {
    std::fprintf(stderr, "troupe worker: %s\n", e.what());
  }
  std::fflush(nullptr);
  _exit(status);
}

}  // namespace

// Receives every message the parent's channel can deliver now and acts on
// each (N7). False: stop serving (the parent is gone, or it asked this
// worker to retire).
bool Node::serve_available(bool socket_ready) {
  for (;;) {
    Message m;
    try {
      auto got = parent_->receive(m, socket_ready);
      if (got == detail::Channel::Got::none) return true;
      if (got == detail::Channel::Got::closed) return false;  // the parent is gone
    } catch (const detail::BadMessage& e) {
      if (!answer_rejected(
              e, [this](std::uint64_t id, const std::string& body) { send_reply(id, body); }))
        std::fprintf(stderr, "troupe worker %u: %s\n", self_id_, e.what());
      continue;  // bad input: rejected, the caller told (wire.hpp WR3), keep serving
    } catch (const Error& e) {
      std::fprintf(stderr, "troupe worker %u: %s\n", self_id_, e.what());
      continue;  // bad input: reject it and keep serving
    }
    if (!handle(m)) return false;
  }
}

// Waits until the parent's channel or a direct one (N11) has something (or
// `extra`, if >= 0, is readable), spinning on the rings first (C4); then
// serves what is there. False: stop serving.
template <class Busy>
bool Node::wait_and_serve(int extra, Busy&& busy) {
  // A snapshot: handling a message may add a channel (on_connect) or drop
  // one (drop_peer), also from a wait nested in a call (W1).
  std::vector<std::shared_ptr<PeerChan>> peers = peer_chans_;
  auto serve_all = [&](const std::vector<char>* socket_ready) {
    bool go_on = serve_available(socket_ready && (*socket_ready)[0]);
    for (std::size_t i = 0; i < peers.size(); ++i)
      if (!serve_peer(peers[i], socket_ready && (*socket_ready)[i + 1])) drop_peer(peers[i]);
    return go_on;
  };
  auto any_ready = [&] {
    if (parent_->ready()) return true;
    for (auto& p : peers)
      if (p->chan->ready()) return true;
    return false;
  };
  // N11: whichever way this returns, direct calls past their deadline fail
  // (expire_direct scans at most every 10 ms).
  if (spin_until(kSpin, any_ready)) {
    const bool go_on = serve_all(nullptr);
    expire_direct();
    return go_on;
  }
  if (busy()) {
    expire_direct();
    return true;
  }
  // C4 on every channel: each prepare_sleep that finds its ring non-empty
  // clears its own word; the others are cleared by woke() below.
  bool sleep = parent_->prepare_sleep();
  for (auto& p : peers) sleep = p->chan->prepare_sleep() && sleep;
  std::vector<pollfd> fds;
  fds.reserve(3 + 2 * peers.size());
  fds.push_back({parent_->socket(), POLLIN, 0});
  fds.push_back({parent_->wake_fd(), POLLIN, 0});
  fds.push_back({extra, POLLIN, 0});  // a negative fd is ignored by poll
  for (auto& p : peers) {
    fds.push_back({p->chan->socket(), POLLIN, 0});
    fds.push_back({p->chan->wake_fd(), POLLIN, 0});
  }
  int timeout_ms = -1;  // N11: a direct call's deadline is checked every 10 ms
  {
    std::lock_guard lock(mu_);
    if (deadlines_ > 0) timeout_ms = 10;
  }
  int r = sleep && !busy() ? ::poll(fds.data(), fds.size(), timeout_ms) : 0;
  auto signalled = [&](std::size_t i) { return r > 0 && (fds[i].revents & POLLIN); };
  auto readable = [&](std::size_t i) {
    return r > 0 && (fds[i].revents & (POLLIN | POLLHUP | POLLERR));
  };
  parent_->woke(signalled(1));
  for (std::size_t i = 0; i < peers.size(); ++i) peers[i]->chan->woke(signalled(4 + 2 * i));
  if (r < 0 && errno != EINTR) return false;
  if (extra >= 0 && signalled(2)) {
    std::uint64_t v;
    [[maybe_unused]] auto rr = ::read(extra, &v, sizeof v);
  }
  std::vector<char> socket_ready(1 + peers.size());
  socket_ready[0] = readable(0);
  for (std::size_t i = 0; i < peers.size(); ++i) socket_ready[i + 1] = readable(3 + 2 * i);
  const bool go_on = serve_all(&socket_ready);
  expire_direct();
  return go_on;
}

// Acts on one message from the parent. False: stop serving.
bool Node::handle(Message& m) {
  if (m.kind == Kind::call) {
    serve_call(m);
  } else if (m.kind == Kind::reply) {
    complete(m);
  } else if (m.kind == Kind::cancel) {
    std::lock_guard lock(mu_);
    // W2: only a call that has not started yet can still be skipped.
    auto it = unstarted_.find(m.id);
    if (it != unstarted_.end()) it->second = true;
  } else if (m.kind == Kind::release) {
    release_local(m);
  } else if (m.kind == Kind::shutdown) {
    return false;
  } else if (m.kind == Kind::connect) {
    on_connect(m);  // N11
  }
  return true;
}

// W1: the scheduler of a single-threaded worker. Its one thread waits on the
// parent's socket and on a wake eventfd, receives calls and runs them (and
// the behaviours of the actors it hosts) itself: a call costs no thread
// hand-off and nothing spins. A wait inside a call (a nested call's get())
// keeps receiving and running work until the value is there.
class Node::WorkerLoop final : public sched::Scheduler {
 public:
  explicit WorkerLoop(Node& n) : node_(n), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (!wake_) throw errno_error(Errc::system, errno, "eventfd");
  }
  void schedule(sched::Work* w) override {
    q_.push(w);
    // Only another thread must wake the loop: the loop thread drains the
    // queue before it waits again.
    if (sched::current() != this) wake_helpers();
  }
  void wake_helpers() override {
    std::uint64_t one = 1;
    [[maybe_unused]] auto r = ::write(wake_.get(), &one, sizeof one);
  }
  void help_until(sched::Waiter& w) override {
    bool armed = false;
    while (!w.ready()) {
      if (drain() > 0) continue;
      if (!armed) {
        w.arm(this);
        armed = true;
        continue;
      }
      if (!wait_and_receive()) {
        // The parent is gone while a call waits on it: nothing can finish.
        leave(0);
      }
    }
  }
  void wait_idle() override { drain(); }

  void run() {
    sched::Scheduler* prev = sched::set_current(this);
    while (true) {
      drain();
      if (!wait_and_receive()) break;
    }
    drain();
    sched::set_current(prev);
  }

 private:
  std::size_t drain() {
    std::size_t n = 0;
    while (sched::Work* w = q_.try_pop()) {
      w->run();
      ++n;
    }
    return n;
  }
  // Waits for the parent's channel or a wake; handles what came. False: stop.
  bool wait_and_receive() {
    if (q_.size_hint() > 0) return true;  // work arrived meanwhile
    return node_.wait_and_serve(wake_.get(), [this] { return q_.size_hint() > 0; });
  }
  Node& node_;
  Fd wake_;
  troupe::detail::MpscQueue<sched::Work> q_;
};

[[noreturn]] void Node::serve(std::unique_ptr<detail::Channel> chan, std::uint32_t id,
                              std::size_t threads) {
  worker_mode_ = true;
  self_id_ = id;
  parent_ = std::move(chan);
  if (threads <= 1) {
    // W1: one thread receives and runs everything, no hand-off.
    WorkerLoop loop(*this);
    sched::set_default_scheduler(&loop);
    loop.run();
    sched::set_default_scheduler(nullptr);
  } else {
    troupe::init({.threads = threads});
    while (wait_and_serve(-1, [] { return false; })) {
    }
    troupe::shutdown();  // drain this worker's pool
  }
  leave(0);
}

void Node::serve_call(Message& m) {
  std::string name = "(unreadable call)";
  try {
    auto oh = detail::unpack_body(m.body);
    const msgpack::object& o = oh.get();
    if (o.type != msgpack::type::ARRAY || o.via.array.size != 4) throw msgpack::type_error();
    auto object = o.via.array.ptr[1].as<std::uint64_t>();
    name = o.via.array.ptr[2].as<std::string>();
    const msgpack::object& args = o.via.array.ptr[3];
    detail::Invoker inv = detail::registry().find(name);
    if (!inv)
      throw Error(Errc::bad_message, fmt::format("bad message: no function or method named '{}' "
                                                 "is registered in this program",
                                                 name));
    {
      std::lock_guard lock(mu_);
      unstarted_.emplace(m.id, false);  // W2: until the invoker's take_cancelled
    }
    detail::FdContext saved = detail::fd_context();
    detail::fd_context().in = &m.fds;
    try {
      inv(args, object, m.id);
    } catch (...) {
      detail::fd_context() = saved;
      throw;
    }
    detail::fd_context() = saved;
  } catch (const msgpack::type_error&) {
    take_cancelled(m.id);  // W2: it never starts
    send_reply(m.id, detail::pack_error(Errc::bad_message,
                                        fmt::format("bad message: the arguments of {} do not "
                                                    "match its parameters",
                                                    name)));
  } catch (const Error& e) {
    take_cancelled(m.id);
    send_reply(m.id, detail::pack_error(e.code(), e.what()));
  } catch (const std::exception& e) {
    take_cancelled(m.id);
    send_reply(m.id, detail::pack_error(Errc::bad_message,
                                        fmt::format("bad message: {} ({})", e.what(), name)));
  }
}

void Node::release_local(Message& m) {
  try {
    auto oh = detail::unpack_body(m.body);
    auto t = oh.get().as<std::tuple<std::uint32_t, std::uint64_t>>();
    if (std::get<0>(t) == self_id_) {
      std::lock_guard lock(mu_);
      objects_.erase(std::get<1>(t));
    } else {  // a handle dropped here for an object elsewhere: the root routes it
      parent_->send(Kind::release, 0, m.body);
    }
  } catch (const std::exception& e) {  // a malformed release, or the parent's send failed
    log_failure(e, "cannot release an object");
  }
}

void Node::send_reply(std::uint64_t id, std::string_view body, std::span<const int> fds) {
  if (reply_to_peer(id, body, fds)) return;  // N11: a call from another worker
  try {
    parent_->send(Kind::reply, id, body, fds);
  } catch (const Error& e) {
    std::fprintf(stderr, "troupe worker %u: cannot reply: %s\n", self_id_, e.what());
  }
}

// W2: the call starts now (or never): forget it, and say whether it was
// cancelled meanwhile.
bool Node::take_cancelled(std::uint64_t id) {
  std::lock_guard lock(mu_);
  auto it = unstarted_.find(id);
  if (it == unstarted_.end()) return false;
  bool cancelled = it->second;
  unstarted_.erase(it);
  return cancelled;
}

std::uint64_t Node::add_object(std::string_view type, std::shared_ptr<void> actor) {
  std::lock_guard lock(mu_);
  std::uint64_t id = next_object_++;
  objects_.emplace(id, std::make_pair(std::string(type), std::move(actor)));
  return id;
}

std::shared_ptr<void> Node::find_object(std::uint64_t id, std::string_view type) {
  std::lock_guard lock(mu_);
  auto it = objects_.find(id);
  if (it == objects_.end())
    throw Error(Errc::bad_message,
                fmt::format("bad message: no object #{} on worker {} (forged or released handle)",
                            id, self_id_));
  if (it->second.first != type)
    throw Error(Errc::bad_message,
                fmt::format("bad message: object #{} on worker {} is a {}, not a {}", id, self_id_,
                            it->second.first, type));
  return it->second.second;
}
}  // namespace troupe::proc::detail
