// src/proc/node_io.cpp: root side of Node (node_private.hpp): the IO thread
// (epoll over every worker's channel, spinning on the rings while replies
// are due) and what the holder of a worker's claim does with what it
// receives: complete replies, route workers' own calls, release objects,
// set up a direct channel between two workers (N11).
// Keeps N2 (a sender holds the WorkerRec), N4 (the IO thread starts the
// workers and ends after them), N7 (only the claim's holder receives), and
// the IO thread's side of N8 (io_asleep_, claims, socket_hint).
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "node_private.hpp"

namespace troupe::proc::detail {

void Node::ensure_io() {
  std::call_once(io_once_, [this] {
    epfd_ = Fd(::epoll_create1(EPOLL_CLOEXEC));
    wake_ = Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    ::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, wake_.get(), &ev);
    io_ = std::thread([this] { io_loop(); });
    sched::set_blocking_poller([](sched::Waiter& w) { return node().help_wait(w); });  // N8
  });
}

void Node::wake_io() {
  std::uint64_t one = 1;
  if (wake_) [[maybe_unused]]
    auto r = ::write(wake_.get(), &one, sizeof one);
}

void Node::io_loop() {
  ::pthread_setname_np(::pthread_self(), "troupe-io");
  tl_receiving = true;  // N8: a continuation run here must not start receiving
  while (!stop_.load(std::memory_order_acquire)) {
    epoll_event evs[16];
    // Sleep until a message, a wake (new deadline), or the next check that
    // time needs: deadlines (10 ms grain) or idle retirement. With no
    // worker and no deadline the root process makes no wake-ups at all.
    int timeout_ms = -1;
    bool expecting = false;  // a reply is due: spin on the rings before sleeping
    {
      std::lock_guard lock(mu_);
      if (deadlines_ > 0 || !waiting_.empty())  // N5: queued calls retry the budget
        timeout_ms = 10;
      else if (!workers_.empty())  // idle retirement, and N10's probe for a waiting program
        timeout_ms = static_cast<int>(std::clamp<long>(
            std::min<long>(opts_.idle_timeout.count() / 4,
                           std::max<long>(opts_.give_back_after.count(), 50)),
            10, 1000));
      if (retire_all_) timeout_ms = 0;
      polled_.clear();
      for (auto& [id, w] : workers_) {
        polled_.push_back(w);
        // N8: a ring a caller watches is the caller's to spin on.
        expecting =
            expecting || (w->outstanding > 0 && !w->claimed.load(std::memory_order_relaxed));
      }
    }
    // A ring a caller receives from (N8) is the caller's to watch.
    auto waiting_on = [](const std::shared_ptr<WorkerRec>& w) {
      return !w->claimed.load(std::memory_order_relaxed) && w->chan->maybe_ready();
    };
    bool ready = false;
    for (auto& w : polled_) ready = ready || waiting_on(w);
    if (!ready && expecting && timeout_ms != 0) {
      ready = detail::spin_until(kSpin, [&] {
        for (auto& w : polled_)
          if (waiting_on(w)) return true;
        return false;
      });
    }
    bool slept = false;
    if (!ready && timeout_ms != 0) {
      slept = true;
      io_asleep_.store(true);  // N8: before the claims, seq_cst
      for (auto& w : polled_) {
        w->claim();
        ready = !w->chan->prepare_sleep() || ready;  // C4
        w->unclaim();
      }
    }
    int n = ::epoll_wait(epfd_.get(), evs, 16, ready ? 0 : timeout_ms);
    io_asleep_.store(false);  // N8
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.u64 == 0) {
        std::uint64_t v;
        [[maybe_unused]] auto r = ::read(wake_.get(), &v, sizeof v);
      }
    }
    for (auto& w : polled_) {
      bool socket_ready = false, woken = false;
      for (int i = 0; i < n; ++i) {
        if (static_cast<std::uint32_t>(evs[i].data.u64) != w->id) continue;
        if (evs[i].data.u64 & kWakeEvent)
          woken = true;
        else
          socket_ready = true;
      }
      if (!w->try_claim()) {
        // N8: a caller receives from it and has cleared the sleeping word;
        // an event for it is taken once the caller leaves.
        if (!socket_ready && !woken) continue;
        if (socket_ready) w->socket_hint.store(true, std::memory_order_relaxed);
        w->claim();
      }
      w->socket_hint.store(false, std::memory_order_relaxed);  // we read the socket now
      if (slept || woken) w->chan->woke(woken);
      bool closed = receive_from(w, socket_ready);
      w->unclaim();
      if (closed) on_exit(w);
    }
    drain_waiting();  // N5: a worker may have exited or replied
    expire_and_retire();
  }
  polled_.clear();
  shut_down_workers();  // N4: before this thread, their PDEATHSIG parent, ends
}

// The claim's holder (N7, N8): handles everything worker `w` has sent that
// can be delivered now. True if the worker is gone and all it sent was
// handled (the IO thread then reaps it). `watch`: a waiting caller, not the
// IO thread (N8): at most kHelperBatch messages, up to the reply to
// watch->id; calls queued for a worker are left to the IO thread, woken.
bool Node::receive_from(const std::shared_ptr<WorkerRec>& w, bool socket_ready, Watch* watch) {
  const std::uint32_t wid = w->id;
  const bool helper = watch != nullptr;
  for (std::size_t n = 0; !helper || n < kHelperBatch; ++n) {
    Message m;
    try {
      auto got = w->chan->receive(m, socket_ready);
      if (got == detail::Channel::Got::none) return false;
      if (got == detail::Channel::Got::closed) return true;
    } catch (const detail::BadMessage& e) {
      // wire.hpp WR3: the worker's call is answered, its reply fails our call.
      if (!answer_rejected(e, [&](std::uint64_t id, const std::string& body) {
            send_to(wid, Kind::reply, id, body, {});
          }))
        std::fprintf(stderr, "troupe: from worker %u: %s\n", wid, e.what());
      if (helper) wake_io();  // N5: a failed call may have freed a worker for queued ones
      continue;
    } catch (const Error& e) {
      std::fprintf(stderr, "troupe: from worker %u: %s\n", wid, e.what());
      if (e.code() == Errc::bad_message) continue;  // rejected, the worker keeps its place
      return false;                                 // a failing socket: epoll tells us again
    }
    if (m.kind == Kind::reply) {
      if (helper && m.id == watch->id) watch->done = true;
      if (complete(m, helper) && helper) wake_io();  // N5: a worker may be free for them
    } else if (m.kind == Kind::call) {
      route(w, m);
    } else if (m.kind == Kind::connect) {
      connect_workers(w, m);  // N11
    } else if (m.kind == Kind::release) {
      try {
        auto oh = detail::unpack_body(m.body);
        auto t = oh.get().as<std::tuple<std::uint32_t, std::uint64_t>>();
        release_remote(std::get<0>(t), std::get<1>(t));
      } catch (const std::exception& e) {  // a malformed release: its object stays
        log_failure(e, fmt::format("from worker {}: a release that cannot be read", wid));
      }
    }
    if (helper && watch->done) break;  // N8: the caller's reply: back to it
  }
  return false;
}

// A worker's own call: dispatch it like ours, then send the reply back.
struct Node::Forward final : PendingBase {
  Forward(Node* n, std::uint32_t from, std::uint64_t id) : node(n), from(from), id(id) {}
  void complete(Message& m) override {
    std::vector<int> fds;
    for (auto& f : m.fds) fds.push_back(f.get());
    node->send_to(from, Kind::reply, id, m.body, fds);
  }
  void fail(std::exception_ptr e) override {
    std::string body;
    try {
      std::rethrow_exception(e);
    } catch (const Error& err) {
      body = detail::pack_error(err.code(), err.what());
    } catch (const std::exception& err) {
      body = detail::pack_error(Errc::system, err.what());
    }
    node->send_to(from, Kind::reply, id, body, {});
  }
  Node* node;
  std::uint32_t from;
  std::uint64_t id;
};

void Node::send_to(std::uint32_t worker, Kind kind, std::uint64_t id, std::string_view body,
                   std::span<const int> fds) {
  std::shared_ptr<WorkerRec> w;
  {
    std::lock_guard lock(mu_);
    auto it = workers_.find(worker);
    if (it == workers_.end()) return;  // it died meanwhile
    w = it->second;
  }
  try {
    w->chan->send(kind, id, body, fds);
  } catch (const std::exception& e) {
    log_failure(e, fmt::format("cannot send to worker {}", worker));
  }
}

void Node::route(const std::shared_ptr<WorkerRec>& from, Message& m) {
  detail::OutCall call;
  try {
    auto oh = detail::unpack_body(m.body);
    const msgpack::object& o = oh.get();
    if (o.type != msgpack::type::ARRAY || o.via.array.size != 4) throw msgpack::type_error();
    call.worker = o.via.array.ptr[0].as<std::uint32_t>();
    call.name = o.via.array.ptr[2].as<std::string>();
  } catch (const std::exception&) {
    send_to(from->id, Kind::reply, m.id,
            detail::pack_error(Errc::bad_message, "bad message: a call the root cannot route"), {});
    return;
  }
  call.body = std::move(m.body);
  for (auto& f : m.fds) call.fds.push_back(f.get());  // borrowed until sent (node.hpp ND2)
  {
    std::lock_guard lock(mu_);
    stats_.relayed++;
  }
  auto fwd = std::make_unique<Forward>(this, from->id, m.id);
  fwd->name = call.name;  // "... while running <name>" when the callee dies
  dispatch(std::move(call), std::move(fwd));
}

// N11: worker `from` asks for a direct channel to the worker its body names.
// Always answered: the channel's two ends (to that worker first, so that it
// serves what `from` sends), or `relay`.
void Node::connect_workers(const std::shared_ptr<WorkerRec>& from, const Message& m) {
  std::uint32_t target = 0;
  try {
    auto oh = detail::unpack_body(m.body);
    target = std::get<0>(oh.get().as<std::tuple<std::uint32_t>>());
  } catch (const std::exception& e) {  // not from our worker code: it waits for no answer
    log_failure(e, fmt::format("from worker {}: a connect that cannot be read", from->id));
    return;
  }
  auto answer = [](std::uint32_t peer, pid_t pid, PeerRole role) {
    msgpack::sbuffer b;
    msgpack::pack(
        b, std::make_tuple(peer, static_cast<std::int32_t>(pid), static_cast<std::uint8_t>(role)));
    return std::string(b.data(), b.size());
  };
  std::shared_ptr<WorkerRec> to;
  {
    std::lock_guard lock(mu_);
    auto it = workers_.find(target);
    if (opts_.direct_calls && it != workers_.end() && !it->second->retiring && target != from->id)
      to = it->second;
  }
  if (to) {
    try {
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        throw errno_error(Errc::system, errno, "socketpair for a direct channel");
      Fd caller_end(sv[0]), serving_end(sv[1]);
      for (int fd : {sv[0], sv[1]}) {  // as spawn_locked: room for many messages in flight
        int bytes = 8 << 20;
        if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) != 0)
          ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
      }
      detail::ChannelFds parts = detail::Channel::make_parts();  // C7
      const int to_serving[4] = {serving_end.get(), parts.memfd.get(), parts.to_worker.get(),
                                 parts.to_root.get()};
      to->chan->send(Kind::connect, 0, answer(from->id, from->pid, PeerRole::serve), to_serving);
      const int to_caller[4] = {caller_end.get(), parts.memfd.get(), parts.to_worker.get(),
                                parts.to_root.get()};
      // If this fails, `from` is gone: the serving end sees the end of stream.
      from->chan->send(Kind::connect, 0, answer(to->id, to->pid, PeerRole::call), to_caller);
      std::lock_guard lock(mu_);
      stats_.direct_channels++;
      return;  // C7: our copies close here
    } catch (const std::exception& e) {
      log_failure(e, fmt::format("cannot connect worker {} to worker {}", from->id, target));
    }
  }
  send_to(from->id, Kind::connect, 0, answer(target, 0, PeerRole::relay), {});
}

void Node::set_direct_calls(bool on) {
  std::lock_guard lock(mu_);
  opts_.direct_calls = on;
}

void Node::stop() {
  if (worker_mode_ || !io_.joinable()) return;
  stop_.store(true, std::memory_order_release);
  wake_io();
  io_.join();
}
}  // namespace troupe::proc::detail
