// src/proc/node_supervisor.cpp: root side of Node (node_private.hpp): the
// supervisor. Dispatches calls to a ready worker or queues them, starts
// workers within the budget, sends the queued calls, reaps a worker that
// died and fails its calls, times calls out and retires idle workers, and
// asks every worker to leave at the end. Keeps N3 (a budget slot is a byte
// lock only the worker holds), N4 (only the IO thread starts workers), N5
// (no thread waits for a worker slot), N6 (dead_ is bounded), N1.
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>

#include "node_private.hpp"

extern char** environ;

namespace troupe::proc::detail {

namespace {

std::string describe_status(int status) {
  if (WIFSIGNALED(status))
    return fmt::format("exited with signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  return "ended";
}

// N9: a fresh placement that could only wait for ever.
Error no_fresh_worker(const std::string& call, std::size_t budget) {
  return Error(Errc::invalid_argument,
               fmt::format("{}: Placement::fresh: each of this program's {} workers (its budget) "
                           "hosts actors",
                           call, budget));
}

}  // namespace

// Sends the call to a worker now, or queues it for the IO thread (N4, N5).
std::uint64_t Node::dispatch(detail::OutCall&& call, std::unique_ptr<PendingBase> p, bool expect) {
  ensure_io();
  std::unique_lock lock(mu_);
  // Before init, or after shutdown (whose clearing of pending_ under mu_
  // then cannot miss this call): fail now rather than never.
  if (!initialized_ || shut_.load()) {
    bool shut = shut_.load();
    lock.unlock();
    p->fail(std::make_exception_ptr(
        Error(shut ? Errc::shutdown : Errc::invalid_argument,
              shut ? fmt::format("{}: troupe::proc::shutdown() was called", call.name)
                   : fmt::format("{}: troupe::proc::init(argc, argv) was not called (call it first "
                                 "in main: without it a worker would run the whole program again)",
                                 call.name))));
    return 0;
  }
  std::shared_ptr<WorkerRec> w;
  if (call.worker != 0) {
    auto it = workers_.find(call.worker);
    if (it == workers_.end() || it->second->retiring) {
      std::string why = lost_worker_locked(call.worker);
      lock.unlock();
      p->fail(std::make_exception_ptr(
          Error(Errc::worker_lost,
                fmt::format("{}: its actor is lost: worker {} {}", call.name, call.worker, why))));
      return 0;
    }
    w = it->second;
  } else if (waiting_.empty()) {  // N5: first come, first served
    const bool spawns = call.name.rfind("new ", 0) == 0;
    w = ready_worker_locked(spawns, call.placement);
    if (!w && spawns && call.placement.kind == PlacementRule::fresh && fresh_impossible_locked()) {
      lock.unlock();  // N9
      p->fail(std::make_exception_ptr(no_fresh_worker(call.name, opts_.budget)));
      return 0;
    }
  }
  Waiting q;
  if (!w) {
    // node.hpp ND2: the caller's descriptors are borrowed only until we
    // return; a queued call holds its own.
    for (int fd : call.fds) {
      int d = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
      if (d < 0) {
        Error why = errno_error(
            Errc::system, errno,
            fmt::format("{}: cannot keep its descriptors while it waits for a worker", call.name));
        lock.unlock();
        p->fail(std::make_exception_ptr(why));
        return 0;
      }
      q.fds.emplace_back(d);
    }
  }
  if (call.timeout.count() == 0) call.timeout = opts_.call_timeout;  // Options::call_timeout
  std::uint64_t id = next_call_++;
  PendingEntry e;
  e.p = std::move(p);
  e.spawns_object = call.name.rfind("new ", 0) == 0;
  e.placement = std::move(call.placement);
  if (call.timeout.count() > 0) {
    e.deadline = Clock::now() + call.timeout;
    deadlines_++;
  }
  if (w) assign_locked(e, *w);
  pending_.emplace(id, std::move(e));
  if (!w) {
    q.id = id;
    q.body = std::move(call.body);
    waiting_.push_back(std::move(q));
    lock.unlock();
    wake_io();  // N4: it starts a worker, or sends when one is free
    return id;
  }
  lock.unlock();
  if (expect) tl_expect = id;  // N8
  send_call(*w, id, call.body, call.fds);
  if (call.timeout.count() > 0) wake_io();
  return id;
}

// The worker a call for "any worker" goes to now, or null: the IO thread
// must start one first (the program is under its budget and every worker is
// busy), or none is usable yet (N5). `spawns`: the call creates an actor,
// and actors spread over the budget: one goes next to another only when no
// new worker can start.
std::shared_ptr<WorkerRec> Node::ready_worker_locked(bool spawns, const PlacementRule& rule) {
  bool start_new = false;
  std::shared_ptr<WorkerRec> w = place_locked(spawns, rule, start_new);
  return start_new ? nullptr : w;
}

// Where a call for "any worker" would go now (N9 for spawns), and whether a
// new worker should be started for it instead (`start_new`; the program is
// under its budget and the candidate is busy, or there is none).
std::shared_ptr<WorkerRec> Node::place_locked(bool spawns, const PlacementRule& rule,
                                              bool& start_new) {
  if (spawns && rule.kind == PlacementRule::in_group) {
    if (auto it = groups_.find(rule.group); it != groups_.end()) {
      auto wit = workers_.find(it->second);
      if (wit != workers_.end() && !wit->second->retiring) {
        start_new = false;
        return wit->second;
      }
      groups_.erase(it);  // its worker is gone: the group starts anew
    }
  }
  if (spawns && rule.kind == PlacementRule::fresh) {
    std::shared_ptr<WorkerRec> best;
    for (auto& [id, w] : workers_)
      if (!w->retiring && w->objects == 0 && (!best || w->outstanding < best->outstanding))
        best = w;
    start_new = (!best || best->outstanding > 0) && may_spawn_locked();
    return best;
  }
  std::shared_ptr<WorkerRec> w = pick_locked(spawns);
  start_new = (!w || busy(*w, spawns)) && may_spawn_locked();
  return w;
}

// N9: no worker free of actors, and none can be added.
bool Node::fresh_impossible_locked() const {
  if (workers_.size() < opts_.budget) return false;
  for (auto& [id, w] : workers_)
    if (w->retiring || w->objects == 0) return false;
  return true;
}

bool Node::busy(const WorkerRec& w, bool spawns) {
  return w.outstanding > 0 || (spawns && w.objects > 0);
}

// A new worker only if this program is under its budget and the
// machine-wide file did not just say no (retried after a back-off or when
// one of ours exits), so a busy program does not hammer the file.
bool Node::may_spawn_locked() const {
  return workers_.size() < opts_.budget && Clock::now() >= next_spawn_try_;
}

void Node::assign_locked(PendingEntry& e, WorkerRec& w) {
  e.worker = w.id;
  if (e.spawns_object) w.objects++;
  if (e.spawns_object && e.placement.kind == PlacementRule::in_group)
    groups_[e.placement.group] = w.id;  // N9
  w.outstanding++;
  w.last_used = Clock::now();
}

void Node::send_call(const WorkerRec& w, std::uint64_t id, std::string_view body,
                     std::span<const int> fds) {
  try {
    w.chan->send(Kind::call, id, body, fds);
  } catch (const Error& e) {
    // A dead peer: the IO thread sees its end of stream and fails this call
    // with the cause (the signal), so leave it pending. Anything else: now.
    if (e.code() != Errc::worker_lost) fail_pending(id, std::current_exception());
  } catch (...) {
    fail_pending(id, std::current_exception());
  }
}

// IO thread: sends the queued calls as workers become available, starting
// workers within the budget (N4, N5). Never waits: what cannot go now stays
// queued until a worker exits or the budget back-off ends.
void Node::drain_waiting() {
  for (;;) {
    std::unique_lock lock(mu_);
    if (waiting_.empty()) {
      mark_waiting_for_budget(false);  // N10
      return;
    }
    auto front = pending_.find(waiting_.front().id);
    bool spawns = front != pending_.end() && front->second.spawns_object;
    const PlacementRule rule = front != pending_.end() ? front->second.placement : PlacementRule{};
    bool start_new = false;
    std::shared_ptr<WorkerRec> w = place_locked(spawns, rule, start_new);
    if (!w && spawns && rule.kind == PlacementRule::fresh && fresh_impossible_locked()) {
      // N9: it would wait for ever; fail it (the others may go on).
      auto p = std::move(front->second.p);
      forget_deadline_locked(front->second);
      pending_.erase(front);
      waiting_.pop_front();
      lock.unlock();
      p->fail(std::make_exception_ptr(no_fresh_worker(p->name, opts_.budget)));
      continue;
    }
    if (start_new) {
      try {
        if (auto fresh = spawn_locked()) {
          w = std::move(fresh);
          mark_waiting_for_budget(false);  // N10: the file gave us a slot
        } else {
          next_spawn_try_ = Clock::now() + std::chrono::milliseconds(20);
          if (!w) mark_waiting_for_budget(true);  // N10: another program holds the slots
        }
      } catch (const Error& err) {
        next_spawn_try_ = Clock::now() + std::chrono::milliseconds(20);
        if (!w) {
          // No worker to fall back on: every queued call fails with the
          // cause rather than wait for a start that keeps failing.
          fail_waiting_locked(lock, err);
          continue;
        }
      }
    }
    if (!w) return;
    Waiting q = std::move(waiting_.front());
    waiting_.pop_front();
    auto it = pending_.find(q.id);
    if (it == pending_.end()) continue;  // cancelled or timed out while it waited
    assign_locked(it->second, *w);
    lock.unlock();
    std::vector<int> fds;
    for (auto& f : q.fds) fds.push_back(f.get());
    send_call(*w, q.id, q.body, fds);
  }
}

// Fails every queued call with `err` (a worker could not be started);
// unlocks `lock` to complete them (N1) and locks it again.
void Node::fail_waiting_locked(std::unique_lock<std::mutex>& lock, const Error& err) {
  std::vector<std::unique_ptr<PendingBase>> failed;
  for (auto& q : waiting_) {
    auto it = pending_.find(q.id);
    if (it == pending_.end()) continue;
    failed.push_back(std::move(it->second.p));
    forget_deadline_locked(it->second);
    pending_.erase(it);
  }
  waiting_.clear();
  lock.unlock();
  for (auto& p : failed)
    p->fail(std::make_exception_ptr(
        Error(err.code(), fmt::format("cannot start a worker for {}: {}", p->name, err.what()))));
  lock.lock();
}

// Why a call to an actor on `worker` cannot go there (mu_ held).
std::string Node::lost_worker_locked(std::uint32_t worker) const {
  auto dit = dead_.find(worker);
  if (dit != dead_.end()) return dit->second;
  if (worker > 0 && worker < next_worker_) return "is gone";
  return "does not exist";
}

// The least busy worker: by outstanding calls, or for a call creating an
// actor by hosted actors first (spread), then outstanding calls.
std::shared_ptr<WorkerRec> Node::pick_locked(bool spawns) {
  std::shared_ptr<WorkerRec> best;
  auto key = [spawns](const WorkerRec& w) {
    return std::make_pair(spawns ? w.objects : 0, w.outstanding);
  };
  for (auto& [id, w] : workers_) {
    if (w->retiring) continue;
    if (!best || key(*w) < key(*best)) best = w;
  }
  return best;
}

// N10: the byte of the budget file that waiting programs lock shared (far
// beyond any slot byte).
constexpr off_t kWaitByte = off_t{1} << 20;

// One byte of the budget file, as the open-file-description locks take it
// (N3, N10): `cmd` F_OFD_SETLK or F_OFD_GETLK; for GETLK, `type` is updated
// to what would conflict (F_UNLCK: nothing). True if fcntl succeeded.
static bool budget_byte_lock(int fd, int cmd, short& type, off_t byte) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  if (::fcntl(fd, cmd, &fl) != 0) return false;
  type = fl.l_type;
  return true;
}

void Node::mark_waiting_for_budget(bool on) {
  if (on == marked_waiting_ || !budget_probe_) return;  // no descriptor: spawn_locked reports why
  short type = on ? F_RDLCK : F_UNLCK;
  if (budget_byte_lock(budget_probe_.get(), F_OFD_SETLK, type, kWaitByte)) marked_waiting_ = on;
}

bool Node::other_program_waits() {
  auto now = Clock::now();
  if (now < next_probe_) return false;
  next_probe_ = now + std::chrono::milliseconds(50);
  if (!budget_probe_) return false;
  short type = F_WRLCK;  // would a writer conflict with someone's shared mark?
  return budget_byte_lock(budget_probe_.get(), F_OFD_GETLK, type, kWaitByte) && type != F_UNLCK;
}

// N3: one byte lock per worker, on a descriptor of its own.
Fd Node::take_budget_slot() {
  Fd fd(::open(opts_.budget_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) throw errno_error(Errc::system, errno, fmt::format("budget file {}", opts_.budget_file));
  for (std::size_t slot = 0; slot < opts_.budget; ++slot) {
    short type = F_WRLCK;
    if (budget_byte_lock(fd.get(), F_OFD_SETLK, type, static_cast<off_t>(slot))) return fd;
  }
  return Fd();
}

// N4: the IO thread only. Throws Error naming the cause if a worker cannot
// be started; null if the budget file has no free slot.
std::shared_ptr<WorkerRec> Node::spawn_locked() {
  if (!budget_probe_)  // N10's descriptor: opened once, with the first worker, kept for life
    budget_probe_ = Fd(::open(opts_.budget_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  Fd slot = take_budget_slot();
  if (!slot) return nullptr;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    throw errno_error(Errc::system, errno, "socketpair");
  Fd mine(sv[0]), theirs(sv[1]);
  // Room for many messages in flight each way, so that the IO thread's
  // blocking sends (routing, forwarded replies) practically never wait on a
  // busy worker. FORCE needs CAP_NET_ADMIN; otherwise the system maximum.
  for (int fd : {mine.get(), theirs.get()}) {
    int bytes = 8 << 20;
    if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) != 0)
      ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  }
  auto w = std::make_shared<WorkerRec>();
  w->id = next_worker_++;
  detail::ChannelFds peer;  // N7: the worker's end of its rings; closed here after the spawn
  w->chan = detail::Channel::create(std::move(mine), peer);
  // The last field: this program's default call timeout, which the worker
  // keeps for the calls it makes to other workers directly (N11).
  std::string env_value = fmt::format("TROUPE_WORKER={}:{}:{}:{}:{}:{}:{}:{}:{}", theirs.get(),
                                      w->id, opts_.worker_threads, slot.get(), ::getpid(),
                                      peer.memfd.get(), peer.to_worker.get(), peer.to_root.get(),
                                      static_cast<long long>(opts_.call_timeout.count()));
  std::vector<char*> envp;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, "TROUPE_WORKER=", 14) != 0) envp.push_back(*e);
  envp.push_back(env_value.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  // dup2 onto itself clears close-on-exec for the child only (glibc >= 2.29).
  posix_spawn_file_actions_adddup2(&fa, theirs.get(), theirs.get());
  posix_spawn_file_actions_adddup2(&fa, slot.get(), slot.get());
  for (const Fd* f : {&peer.memfd, &peer.to_worker, &peer.to_root})
    posix_spawn_file_actions_adddup2(&fa, f->get(), f->get());
  // Options::worker_command, or this executable with init's argv.
  std::vector<std::string>& words = opts_.worker_command.empty() ? argv_ : opts_.worker_command;
  std::vector<char*> argv;
  for (auto& a : words) argv.push_back(a.data());
  argv.push_back(nullptr);
  const char* path = opts_.worker_command.empty() ? "/proc/self/exe" : words[0].c_str();
  pid_t pid;
  int rc = ::posix_spawn(&pid, path, &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0)
    throw errno_error(Errc::system, rc, fmt::format("posix_spawn of a worker ({})", path));
  w->pid = pid;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = w->id;
  epoll_event wake{};
  wake.events = EPOLLIN;
  wake.data.u64 = w->id | kWakeEvent;
  if (::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, w->chan->socket(), &ev) != 0 ||
      ::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, w->chan->wake_fd(), &wake) != 0) {
    int err = errno;  // unwatched, it could never be reaped or its calls failed: end it now
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw errno_error(Errc::system, err, "epoll_ctl for a new worker");
  }
  workers_.emplace(w->id, w);
  stats_.started++;
  stats_.alive = workers_.size();
  stats_.max_alive = std::max(stats_.max_alive, stats_.alive);
  return w;  // `theirs`, `slot`, `peer` close here: only the worker holds them now (N3)
}

void Node::on_exit(const std::shared_ptr<WorkerRec>& w) {
  int status = 0;
  ::waitpid(w->pid, &status, 0);
  std::string how = describe_status(status);
  std::vector<std::unique_ptr<PendingBase>> lost;
  {
    std::lock_guard lock(mu_);
    lost = take_pending_of_locked(w->id);
    ::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, w->chan->socket(), nullptr);
    ::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, w->chan->wake_fd(), nullptr);
    workers_.erase(w->id);
    if (w->objects > 0) {  // N6: only handles name a worker later
      dead_[w->id] = fmt::format("(pid {}) {}", w->pid, how);
      if (dead_.size() > kDeadKept) dead_.erase(dead_.begin());  // the oldest
    }
    next_spawn_try_ = {};  // its budget slot is free again
    stats_.alive = workers_.size();
    if (!lost.empty() || w->objects > 0 || !w->retiring) stats_.lost++;
  }
  for (auto& p : lost)
    p->fail(std::make_exception_ptr(
        Error(Errc::worker_lost,
              fmt::format("worker {} (pid {}) {} while running {}", w->id, w->pid, how, p->name))));
}

void Node::expire_and_retire() {
  auto now = Clock::now();
  std::vector<std::pair<std::uint64_t, std::string>> expired;
  std::vector<std::shared_ptr<WorkerRec>> retire;
  {
    std::lock_guard lock(mu_);
    if (deadlines_ > 0) {
      for (auto& [id, e] : pending_)
        if (e.deadline <= now) expired.emplace_back(id, e.p->name);
    }
    std::shared_ptr<WorkerRec> longest_idle;  // N10: the one to give back
    for (auto& [id, w] : workers_) {
      if (w->retiring || w->outstanding != 0 || w->objects != 0) continue;
      if (retire_all_ || now - w->last_used >= opts_.idle_timeout) {
        w->retiring = true;
        retire.push_back(w);
      } else if (now - w->last_used >= opts_.give_back_after &&
                 (!longest_idle || w->last_used < longest_idle->last_used)) {
        longest_idle = w;
      }
    }
    retire_all_ = false;
    if (longest_idle && waiting_.empty() && other_program_waits()) {
      longest_idle->retiring = true;
      retire.push_back(longest_idle);
      stats_.given_back++;
    }
  }
  for (auto& [id, name] : expired) {
    std::shared_ptr<WorkerRec> w;
    {
      std::lock_guard lock(mu_);
      auto it = pending_.find(id);
      if (it != pending_.end()) {
        auto wit = workers_.find(it->second.worker);
        if (wit != workers_.end()) w = wit->second;
      }
    }
    if (w) {
      try {
        w->chan->send(Kind::cancel, id, {});
      } catch (const std::exception& e) {  // it fails as timed out all the same
        log_failure(e, fmt::format("cannot cancel {} (timed out) on worker {}", name, w->id));
      }
    }
    fail_pending(id,
                 std::make_exception_ptr(Error(Errc::timeout, fmt::format("{} timed out", name))));
  }
  for (auto& w : retire) {
    try {
      w->chan->send(Kind::shutdown, 0, {});
    } catch (const std::exception& e) {
      log_failure(e, fmt::format("cannot retire idle worker {}", w->id));
    }
  }
}

void Node::retire_idle() {
  {
    std::lock_guard lock(mu_);
    retire_all_ = true;
  }
  wake_io();
}

// IO thread, on leaving: asks every worker to exit, waits up to 1 s for
// each, kills the rest. It runs here because the workers' PDEATHSIG fires
// when this thread ends (N4): they get their second to leave first.
void Node::shut_down_workers() {
  std::vector<std::shared_ptr<WorkerRec>> ws;
  {
    std::unique_lock lock(mu_);
    // N5: no worker will take the queued calls any more.
    if (!waiting_.empty())
      fail_waiting_locked(lock, Error(Errc::shutdown, "the program is shutting down"));
    for (auto& [id, w] : workers_) ws.push_back(w);
  }
  for (auto& w : ws) {
    try {
      w->chan->send(Kind::shutdown, 0, {});
    } catch (const std::exception& e) {  // below, its socket is shut and it is killed after 1 s
      log_failure(e, fmt::format("cannot ask worker {} to exit", w->id));
    }
  }
  for (auto& w : ws) {
    w->chan->shutdown_socket();  // the worker sees end of stream even if it missed shutdown
    int status;
    // Wait up to 1 s for it to leave; a pidfd wakes us the moment it does.
    Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, w->pid, 0)));
    if (pidfd) {
      pollfd pf{pidfd.get(), POLLIN, 0};
      ::poll(&pf, 1, 1000);
    } else {
      for (int i = 0; i < 1000 && ::waitpid(w->pid, &status, WNOHANG) == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (::waitpid(w->pid, &status, WNOHANG) == 0) {
      ::kill(w->pid, SIGKILL);
      ::waitpid(w->pid, &status, 0);
    }
  }
}
}  // namespace troupe::proc::detail
