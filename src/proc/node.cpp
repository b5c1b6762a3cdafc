// src/proc/node.cpp: the node's lifetime (configuration, shutdown, ~Node,
// the N8 poller's removal), the helpers both sides use for a rejected
// message, the one Node of this process, and the public entry points of
// the proc layer (process.hpp, node.hpp) that forward to it. Class Node, its
// invariants (N1-N8, W1, W2) and which file holds which part of it:
// node_private.hpp. Keeps N1 (stats and tables read under mu_), N4 (stop
// before the workers' parent thread ends), N8 (no wait reaches a node being
// destroyed or shut down).
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "node_private.hpp"
#include "troupe/runtime.hpp"

namespace troupe::proc::detail {

Node::~Node() {
  // N9. From a pool thread (exit() called there) shutdown refuses: nothing
  // better can be done then than going on.
  try {
    troupe::shutdown();
  } catch (...) {
  }
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
    return {};  // unreadable: the rejection is reported without the name
  }
  return {};
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
  Stats s = stats_;
  s.waiting = waiting_.size();
  if (!waiting_.empty())
    s.longest_wait = std::chrono::duration_cast<std::chrono::milliseconds>(
        Clock::now() - waiting_.front().since);  // N5: first come, first served
  return s;
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

// A failure that nobody waits on (a cancel, release or shutdown message that
// cannot be sent, a release that cannot be read) goes to stderr like the
// node's other reports, with what was being done. A dead peer
// (Errc::worker_lost) is not reported: its end of stream is handled where it
// is received (the IO thread's on_exit fails its calls; a worker stops
// serving).
void Node::log_failure(const std::exception& e, std::string_view doing) {
  if (auto* err = dynamic_cast<const Error*>(&e); err && err->code() == Errc::worker_lost) return;
  std::string what = fmt::format("{}: {}", doing, e.what());
  if (worker_mode_)
    std::fprintf(stderr, "troupe worker %u: %s\n", self_id_, what.c_str());
  else
    std::fprintf(stderr, "troupe: %s\n", what.c_str());
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
  long long call_timeout_ms = 0;
  if (std::sscanf(w, "%u:%u:%zu:%u:%ld:%u:%u:%u:%lld", &sock, &id, &threads, &lockfd, &parent,
                  &memfd, &to_worker, &to_root, &call_timeout_ms) != 9) {
    std::fprintf(stderr, "troupe: malformed TROUPE_WORKER=%s\n", w);
    _exit(2);
  }
  ::unsetenv("TROUPE_WORKER");  // the worker's own children are not workers
  // The root's default timeout, for the calls this worker makes directly to
  // other workers (N11), whatever Options the worker's own init passed.
  n.set_call_timeout(std::chrono::milliseconds(call_timeout_ms));
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
void set_direct_calls(bool on) { node().set_direct_calls(on); }
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
