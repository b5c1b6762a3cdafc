// src/proc/node.cpp: the node's lifetime (configuration, shutdown, ~Node,
// the N8 poller's removal), the helpers both sides use for a rejected
// message, the one Node of this process, and the public entry points of
// the proc layer (process.hpp, node.hpp) that forward to it. Class Node, its
// invariants (N1-N8, W1, W2) and which file holds which part of it:
// node_private.hpp. Keeps N1 (stats and tables read under mu_), N4 (stop
// before the workers' parent thread ends), N8 (no wait reaches a node being
// destroyed or shut down).
#include <fcntl.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "node_private.hpp"

namespace troupe::proc::detail {

Node::~Node() {
  sched::set_blocking_poller(nullptr);  // N8: no wait may reach a node being destroyed
  closing_.store(true);                 // seq_cst, against help_wait's count and load
  while (helpers_inside_.load() > 0) std::this_thread::yield();
  stop();
}

void Node::configure(const Options& o) {
  std::lock_guard lock(mu_);
  initialized_ = true;
  opts_ = o;
  if (opts_.budget == 0) opts_.budget = std::max(1u, std::thread::hardware_concurrency());
  if (opts_.budget_file.empty())
    opts_.budget_file = fmt::format("/dev/shm/troupe-budget-{}", getuid());
}

void Node::set_worker_command(std::vector<std::string> command) {
  std::lock_guard lock(mu_);
  opts_.worker_command = std::move(command);
}

// The registered name a call body names, or "" if it cannot be read.
std::string Node::call_name(std::string_view body) {
  try {
    auto oh = detail::unpack_body(body);
    const msgpack::object& o = oh.get();
    if (o.type == msgpack::type::ARRAY && o.via.array.size == 4)
      return o.via.array.ptr[2].as<std::string>();
  } catch (const std::exception&) {
  }
  return {};
}

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
      else if (!workers_.empty())
        timeout_ms = static_cast<int>(std::clamp<long>(opts_.idle_timeout.count() / 4, 10, 1000));
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
      // wire.hpp I3: the worker's call is answered, its reply fails our call.
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
    } else if (m.kind == Kind::release) {
      try {
        auto oh = detail::unpack_body(m.body);
        auto t = oh.get().as<std::tuple<std::uint32_t, std::uint64_t>>();
        release_remote(std::get<0>(t), std::get<1>(t));
      } catch (const std::exception&) {
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
  } catch (const std::exception&) {
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
  for (auto& f : m.fds) call.fds.push_back(f.get());  // borrowed until sent (I2)
  auto fwd = std::make_unique<Forward>(this, from->id, m.id);
  fwd->name = call.name;  // "... while running <name>" when the callee dies
  dispatch(std::move(call), std::move(fwd));
}

void Node::stop() {
  if (worker_mode_ || !io_.joinable()) return;
  stop_.store(true, std::memory_order_release);
  wake_io();
  io_.join();
}

// proc::shutdown(): no call is dispatched from now on; the IO thread ends
// after the workers (N4); what is still pending fails (N1).
void Node::shut_down() {
  if (worker_mode_ || shut_.exchange(true)) return;
  sched::set_blocking_poller(nullptr);  // N8, as in ~Node
  closing_.store(true);
  while (helpers_inside_.load() > 0) std::this_thread::yield();
  stop();
  std::vector<std::unique_ptr<PendingBase>> left;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, e] : pending_) left.push_back(std::move(e.p));
    pending_.clear();
    waiting_.clear();
    deadlines_ = 0;
  }
  for (auto& p : left)
    p->fail(std::make_exception_ptr(
        Error(Errc::shutdown, fmt::format("{}: the worker processes were shut down", p->name))));
}

Stats Node::stats() {
  std::lock_guard lock(mu_);
  return stats_;
}

detail::TableSizes Node::table_sizes() {
  std::lock_guard lock(mu_);
  return {pending_.size(), waiting_.size(), dead_.size(), unstarted_.size()};
}

std::vector<pid_t> Node::pids() {
  std::lock_guard lock(mu_);
  std::vector<pid_t> v;
  for (auto& [id, w] : workers_) v.push_back(w->pid);
  return v;
}

Node& node() {
  static Node n;
  return n;
}

}  // namespace troupe::proc::detail

namespace troupe::proc {

using detail::Node;
using detail::node;

void init(int argc, char** argv, const Options& options) {
  Node& n = node();
  n.argv_.assign(argv, argv + argc);
  if (n.argv_.empty()) n.argv_.push_back("troupe-worker");
  n.configure(options);
  const char* w = std::getenv("TROUPE_WORKER");
  if (!w) return;
  unsigned sock = 0, id = 0, lockfd = 0, memfd = 0, to_worker = 0, to_root = 0;
  std::size_t threads = 1;
  long parent = 0;
  if (std::sscanf(w, "%u:%u:%zu:%u:%ld:%u:%u:%u", &sock, &id, &threads, &lockfd, &parent, &memfd,
                  &to_worker, &to_root) != 8) {
    std::fprintf(stderr, "troupe: malformed TROUPE_WORKER=%s\n", w);
    _exit(2);
  }
  ::unsetenv("TROUPE_WORKER");  // the worker's own children are not workers
  // Never outlive the program: the root starts workers from its IO thread
  // only, which lives as long as the runtime (N4), so this fires when the
  // program ends, not when some short-lived thread of it does.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != static_cast<pid_t>(parent)) _exit(0);  // it died before prctl
  ::fcntl(static_cast<int>(sock), F_SETFD, FD_CLOEXEC);
  ::fcntl(static_cast<int>(lockfd), F_SETFD, FD_CLOEXEC);  // held for life (N3)
  for (unsigned fd : {memfd, to_worker, to_root})
    ::fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
  std::unique_ptr<detail::Channel> chan;
  try {
    chan = detail::Channel::attach(Fd(static_cast<int>(sock)),
                                   {Fd(static_cast<int>(memfd)), Fd(static_cast<int>(to_worker)),
                                    Fd(static_cast<int>(to_root))});
  } catch (const Error& e) {
    std::fprintf(stderr, "troupe worker %u: %s\n", id, e.what());
    _exit(2);
  }
  n.serve(std::move(chan), id, threads);
}

bool is_worker() noexcept { return node().worker_mode_; }
void set_worker_command(std::vector<std::string> command) {
  node().set_worker_command(std::move(command));
}
void shutdown() { node().shut_down(); }
Stats stats() { return node().stats(); }
std::vector<pid_t> worker_pids() { return node().pids(); }
void retire_idle_workers() { node().retire_idle(); }

namespace detail {
std::uint64_t submit_call(OutCall&& call, std::unique_ptr<PendingBase> p) {
  return node().submit(std::move(call), std::move(p));
}
void cancel_call(std::uint64_t id) { node().cancel(id); }
void send_reply(std::uint64_t id, std::string_view body, std::span<const int> fds) {
  node().send_reply(id, body, fds);
}
bool take_cancelled(std::uint64_t id) { return node().take_cancelled(id); }
std::uint32_t self_worker_id() noexcept { return node().self_id_; }
std::uint64_t add_object(std::string_view type, std::shared_ptr<void> actor) {
  return node().add_object(type, std::move(actor));
}
std::shared_ptr<void> find_object(std::uint64_t id, std::string_view type) {
  return node().find_object(id, type);
}
void release_object(std::uint32_t worker, std::uint64_t object) {
  node().release_remote(worker, object);
}
TableSizes table_sizes() { return node().table_sizes(); }
}  // namespace detail

}  // namespace troupe::proc
