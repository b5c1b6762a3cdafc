// bench/proc/bench_proc.cpp: bench_proc, worker processes against what a
// systems programmer would write by hand, both sides in one run. Owns the
// cases, their baselines, the run loop and the table.
//
//   bench_proc [--runs N] [--quick] [--case rt,pipe,tasks,cold,idle]
//              [--side troupe|baseline]   (one side only: for perf and strace)
//   bench_proc --case w2w,chain            (not in the default set: BP6)
//
// Cases (ratio = troupe / baseline, whatever the unit):
//   rt     call round trip to a remote actor's empty method, one at a time,
//          vs a 1-byte round trip over a SOCK_SEQPACKET socketpair with a
//          fork'd child echoing it (blocking read/write on both ends).
//   pipe   the same calls with 1000 in flight (a ring of 1000 promises, the
//          oldest awaited and replaced), vs 1-byte requests on a SOCK_STREAM
//          socketpair with up to 1000 in flight: one send per request, as one
//          sendmsg per call (non-blocking, poll-driven: see raw_pipelined_per_s);
//          the echo child (blocking) and the reader take whatever is there in
//          one read (the natural echo server).
//   tasks  Executor::submit(isolated<&inc>, x) with 1000 in flight, vs a pool
//          of `budget` fork'd workers reading 4-byte tasks from a pipe each
//          and writing results back on another (one write per task from the
//          parent, poll over the result pipes, batched reads).
//   cold   a fresh process's first spawn<T>() to its handle (no worker yet,
//          no runtime threads yet), vs posix_spawn of this same binary that
//          writes one byte back over a socketpair from main and exits.
//   w2w    an actor in worker A calling an empty method of an actor in worker
//          B, one at a time, timed inside A (Pinger::ping), over the direct
//          A-B channel (src/proc/node_private.hpp N11), vs the root-to-worker
//          round trip of `rt` in the same run; then the same pair relayed by
//          the root (proc::set_direct_calls(false) before the pair's first
//          call) vs root-to-worker again. Goal: direct within 1.5x of rt.
//   chain  a 3-stage pipeline producer -> transformer -> sink of actors in
//          three workers (Placement::fresh), moving n longs; each stage keeps
//          up to 256 calls to the next in flight and awaits the oldest; the
//          sink checks count, sum and order (BP4). Items/s, timed in the root
//          around Producer::run (which ends once every item is at the sink),
//          direct channels vs the same pipeline relayed by the root. Goal:
//          >= 200 000 items/s on 2 cores.
//          Measured on a 2-vCPU VM at load 4 (--runs 5): w2w direct 1.5-1.6
//          µs beside rt 1.3-1.7 µs, relayed 27-54 µs (before direct channels,
//          every worker-to-worker call: 27 µs); chain direct 450 000-670 000
//          items/s, relayed 315 000-513 000 (before: 243 000-543 000).
//   idle   CPU ticks (/proc/<pid>/stat utime+stime, 1 tick = 1/CLK_TCK s)
//          that the idle workers burn in 1 s after the runs, vs an idle
//          fork/pipe pool measured in the same second; and the root process.
//          Ticks are coarse (10 ms), so the wake-ups (context switches of all
//          threads, /proc/<pid>/task/*/status) in that second are shown too.
//
// Compare the two sides of one run only: on a small VM shared with other work
// both sides swing with the load (the raw round trip measured 2.3 µs on a busy
// 2-vCPU host and 4.5 µs on a quiet one, where each wake-up of a halted vCPU
// costs an IPI through the hypervisor).
//
// Invariants:
//   BP1. proc::init is the first thing in main: this binary, re-executed as a
//       worker, serves calls there and never returns.
//   BP2. Each side of a case runs once untimed (warm-up), then N timed runs,
//       troupe and baseline alternating run by run, so that load from other
//       processes falls on both alike; 50 ms between runs. Medians shown.
//   BP3. fork'd baseline children (forked while this process has threads) call
//       only read, write, close and _exit.
//   BP4. Every result is checked; a wrong one aborts the bench.
//   BP5. The budget lock file is private to this process (by pid), so other
//       troupe programs on the machine neither take our slots nor we theirs.
//   BP6. w2w and chain set up a direct and a relayed set of actors before the
//       runs (the choice is made when a worker's first call to another sets
//       up the channel) and keep both alive, each actor in a worker of its
//       own: when --case names either, the budget is at least 10 workers
//       (main scans --case before proc::init, reading argv only). The two
//       sides then alternate (BP2) on idle workers that do not interfere.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/core.h>

#include "troupe/exec/executor.hpp"
#include "troupe/proc/process.hpp"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
namespace proc = troupe::proc;

constexpr int kWindow = 1000;  // calls / tasks in flight

struct Noop {
  void noop() {}
};
int inc(int x) { return x + 1; }

// w2w: an actor in one worker calling another worker's Noop, timed there.
struct Pinger {
  // n calls of b's empty method, one at a time, after 1000 untimed: µs per call.
  double ping(proc::RemoteActor<Noop> b, long n) {
    for (int i = 0; i < 1000; ++i) b.call<&Noop::noop>().get();
    auto t0 = Clock::now();
    for (long i = 0; i < n; ++i) b.call<&Noop::noop>().get();
    return std::chrono::duration<double>(Clock::now() - t0).count() / static_cast<double>(n) * 1e6;
  }
};

// chain: producer -> transformer -> sink, each in its own worker. Each stage
// keeps up to kStageWindow calls to the next in flight, awaiting the oldest.
constexpr std::size_t kStageWindow = 256;
struct Sink {
  long count = 0, sum = 0, last = -1;
  bool ordered = true;
  void put(long x) {
    ordered = ordered && x > last;
    last = x;
    count++;
    sum += x;
  }
  // [count, sum, ordered], then starts afresh.
  std::tuple<long, long, bool> take() {
    auto r = std::make_tuple(count, sum, ordered);
    count = sum = 0;
    last = -1;
    ordered = true;
    return r;
  }
};
struct Transformer {
  explicit Transformer(proc::RemoteActor<Sink> s) : sink(std::move(s)), ring(kStageWindow) {}
  void put(long x) {
    auto& p = ring[next++ % kStageWindow];
    if (p.valid()) p.get();
    p = sink.call<&Sink::put>(x * 2);
  }
  void flush() {
    for (auto& p : ring)
      if (p.valid()) std::exchange(p, troupe::Promise<void>()).get();
  }
  proc::RemoteActor<Sink> sink;
  std::vector<troupe::Promise<void>> ring;
  std::size_t next = 0;
};
struct Producer {
  // Sends 0..n-1 through t, then flushes t: every item has reached the sink.
  void run(proc::RemoteActor<Transformer> t, long n) {
    std::vector<troupe::Promise<void>> ring(kStageWindow);
    for (long i = 0; i < n; ++i) {
      auto& p = ring[static_cast<std::size_t>(i) % kStageWindow];
      if (p.valid()) p.get();
      p = t.call<&Transformer::put>(i);
    }
    for (auto& p : ring)
      if (p.valid()) p.get();
    t.call<&Transformer::flush>().get();
  }
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "bench_proc: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}
void check(bool ok, const std::string& what) {  // BP4
  if (ok) return;
  std::fprintf(stderr, "bench_proc: WRONG RESULT: %s\n", what.c_str());
  std::abort();
}

void write_all(int fd, const void* p, std::size_t n) {
  auto* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) die("write");
    c += w;
    n -= static_cast<std::size_t>(w);
  }
}
std::size_t read_some(int fd, void* p, std::size_t n) {
  for (;;) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) die("read");
    return static_cast<std::size_t>(r);
  }
}

// ------------------------------------------------------------ raw sockets (BP3)
struct Echo {
  pid_t pid = -1;
  int fd = -1;
  ~Echo() {
    ::close(fd);
    ::waitpid(pid, nullptr, 0);
  }
};

// A fork'd child echoing whatever it reads, one read then one write.
std::unique_ptr<Echo> fork_echo(int type) {
  int sv[2];
  if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
  pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    ::close(sv[0]);
    char buf[4096];
    for (;;) {
      ssize_t r = ::read(sv[1], buf, sizeof buf);
      if (r <= 0) ::_exit(0);
      for (ssize_t off = 0; off < r;) {
        ssize_t w = ::write(sv[1], buf + off, static_cast<std::size_t>(r - off));
        if (w <= 0) ::_exit(0);
        off += w;
      }
    }
  }
  ::close(sv[1]);
  auto e = std::make_unique<Echo>();
  e->pid = pid;
  e->fd = sv[0];
  return e;
}

double raw_round_trip_us(long n) {
  auto e = fork_echo(SOCK_SEQPACKET);
  char b = 1;
  for (int i = 0; i < 1000; ++i) {
    write_all(e->fd, &b, 1);
    read_some(e->fd, &b, 1);
  }
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) {
    write_all(e->fd, &b, 1);
    check(read_some(e->fd, &b, 1) == 1, "echo of one byte");
  }
  return seconds_since(t0) / static_cast<double>(n) * 1e6;
}

// The caller never blocks in write: a unix stream socket charges every 1-byte
// write a whole buffer against SO_SNDBUF, so ~300 unread requests fill it; a
// blocking writer would then wait on a child that waits on it (the child's
// echoes fill the other direction). Sends are non-blocking, driven by poll.
double raw_pipelined_per_s(long n) {
  auto e = fork_echo(SOCK_STREAM);
  char one = 1, buf[4096];
  long sent = 0, done = 0;
  auto t0 = Clock::now();
  while (done < n) {
    // Send until the window is full or the socket would block.
    while (sent < n && sent - done < kWindow) {
      ssize_t w = ::send(e->fd, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (w == 1) {
        ++sent;
        continue;
      }
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      die("send");
    }
    pollfd p{e->fd, POLLIN, 0};
    if (sent < n && sent - done < kWindow) p.events |= POLLOUT;
    if (::poll(&p, 1, -1) < 0 && errno != EINTR) die("poll");
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      done += static_cast<long>(read_some(e->fd, buf, sizeof buf));
    }
  }
  double dt = seconds_since(t0);
  check(done == n && sent == n, "every request echoed once");
  return static_cast<double>(n) / dt;
}

// ------------------------------------------------------------ fork/pipe pool (BP3)
struct PipePool {
  std::vector<pid_t> pids;
  std::vector<int> req, resp;  // the parent's ends
  ~PipePool() {
    for (int fd : req) ::close(fd);
    for (int fd : resp) ::close(fd);
    for (pid_t p : pids) ::waitpid(p, nullptr, 0);
  }
};

std::unique_ptr<PipePool> fork_pool(std::size_t n) {
  auto pool = std::make_unique<PipePool>();
  for (std::size_t i = 0; i < n; ++i) {
    int rq[2], rs[2];
    if (::pipe2(rq, O_CLOEXEC) != 0 || ::pipe2(rs, O_CLOEXEC) != 0) die("pipe2");
    pid_t pid = ::fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
      for (int fd : pool->req) ::close(fd);  // other workers' ends: EOF must reach them
      for (int fd : pool->resp) ::close(fd);
      ::close(rq[1]);
      ::close(rs[0]);
      int buf[1024];  // 4096 bytes: whole tasks, since every write is 4 bytes
      for (;;) {
        ssize_t r = ::read(rq[0], buf, sizeof buf);
        if (r <= 0) ::_exit(0);
        for (ssize_t k = 0; k < r / 4; ++k) buf[k] = inc(buf[k]);
        for (ssize_t off = 0; off < r;) {
          ssize_t w = ::write(rs[1], reinterpret_cast<char*>(buf) + off,
                              static_cast<std::size_t>(r - off));
          if (w <= 0) ::_exit(0);
          off += w;
        }
      }
    }
    ::close(rq[0]);
    ::close(rs[1]);
    pool->pids.push_back(pid);
    pool->req.push_back(rq[1]);
    pool->resp.push_back(rs[0]);
  }
  return pool;
}

double pool_tasks_per_s(std::size_t workers, long n) {
  auto pool = fork_pool(workers);
  auto run = [&](long count) {
    std::size_t nw = pool->pids.size();
    std::vector<pollfd> pfd(nw);
    for (std::size_t k = 0; k < nw; ++k) pfd[k] = {pool->resp[k], POLLIN, 0};
    long sent = 0, done = 0, sum = 0, expect = 0;
    auto send_to = [&](std::size_t k) {
      int x = static_cast<int>(sent++);
      expect += x + 1;
      write_all(pool->req[k], &x, sizeof x);  // one write per task
    };
    for (long i = 0; i < kWindow && sent < count; ++i) send_to(static_cast<std::size_t>(i) % nw);
    int buf[1024];
    while (done < count) {
      if (::poll(pfd.data(), nw, -1) < 0 && errno != EINTR) die("poll");
      for (std::size_t k = 0; k < nw; ++k) {
        if (!(pfd[k].revents & POLLIN)) continue;
        std::size_t r = read_some(pool->resp[k], buf, sizeof buf);
        check(r % 4 == 0, "whole results");
        for (std::size_t j = 0; j < r / 4; ++j) {
          sum += buf[j];
          ++done;
          if (sent < count) send_to(k);  // refill the worker that freed a slot
        }
      }
    }
    check(sum == expect, "sum of x + 1 over every task");
  };
  run(kWindow);  // warm-up
  auto t0 = Clock::now();
  run(n);
  return static_cast<double>(n) / seconds_since(t0);
}

// ------------------------------------------------------------ troupe
double troupe_round_trip_us(long n) {
  auto a = proc::spawn<Noop>().get();
  for (int i = 0; i < 1000; ++i) a.call<&Noop::noop>().get();
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) a.call<&Noop::noop>().get();
  return seconds_since(t0) / static_cast<double>(n) * 1e6;
}

double troupe_pipelined_per_s(long n) {
  auto a = proc::spawn<Noop>().get();
  std::vector<troupe::Promise<void>> ring(kWindow);
  auto run = [&](long count) {
    for (long i = 0; i < count; ++i) {
      auto& p = ring[static_cast<std::size_t>(i % kWindow)];
      if (p.valid()) p.get();
      p = a.call<&Noop::noop>();
    }
    for (auto& p : ring)
      if (p.valid()) std::exchange(p, troupe::Promise<void>()).get();
  };
  run(kWindow);  // warm-up
  auto t0 = Clock::now();
  run(n);
  return static_cast<double>(n) / seconds_since(t0);
}

double troupe_tasks_per_s(long n) {
  troupe::exec::Executor ex;
  std::vector<troupe::Promise<int>> ring(kWindow);
  auto run = [&](long count) {
    long sum = 0, expect = 0;
    for (long i = 0; i < count; ++i) {
      auto& p = ring[static_cast<std::size_t>(i % kWindow)];
      if (p.valid()) sum += p.get();
      expect += i + 1;
      p = ex.submit(troupe::exec::isolated<&inc>, static_cast<int>(i));
    }
    for (auto& p : ring)
      if (p.valid()) sum += std::exchange(p, troupe::Promise<int>()).get();
    check(sum == expect, "sum of x + 1 over every isolated task");
  };
  run(kWindow);  // warm-up
  auto t0 = Clock::now();
  run(n);
  return static_cast<double>(n) / seconds_since(t0);
}

// w2w and chain: actors in workers of their own (Placement::fresh).
struct W2wPair {
  proc::RemoteActor<Pinger> a;
  proc::RemoteActor<Noop> b;
};
W2wPair make_w2w_pair() {
  auto b = proc::spawn_with<Noop>(proc::Placement::fresh()).get();
  auto a = proc::spawn_with<Pinger>(proc::Placement::fresh()).get();
  check(a.pid() != b.pid(), "w2w: the two actors in two workers");
  return {std::move(a), std::move(b)};
}
double w2w_round_trip_us(const W2wPair& pair, long n) {
  return pair.a.call<&Pinger::ping>(pair.b, n).get();
}

struct Chain {
  proc::RemoteActor<Sink> sink;
  proc::RemoteActor<Transformer> mid;
  proc::RemoteActor<Producer> src;
};
Chain make_chain() {
  auto sink = proc::spawn_with<Sink>(proc::Placement::fresh()).get();
  auto mid = proc::spawn_with<Transformer>(proc::Placement::fresh(), sink).get();
  auto src = proc::spawn_with<Producer>(proc::Placement::fresh()).get();
  check(sink.pid() != mid.pid() && mid.pid() != src.pid() && sink.pid() != src.pid(),
        "chain: three actors in three workers");
  return {std::move(sink), std::move(mid), std::move(src)};
}
double chain_items_per_s(const Chain& c, long n) {
  auto t0 = Clock::now();
  c.src.call<&Producer::run>(c.mid, n).get();
  double s = seconds_since(t0);
  auto [count, sum, ordered] = c.sink.call<&Sink::take>().get();
  check(count == n && sum == n * (n - 1) && ordered, "chain: every item at the sink, in order");
  return static_cast<double>(n) / s;
}

// ------------------------------------------------------------ cold start
pid_t spawn_self(std::vector<std::string> args, posix_spawn_file_actions_t* fa) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  int rc = ::posix_spawn(&pid, "/proc/self/exe", fa, nullptr, argv.data(), environ);
  if (rc != 0) {
    errno = rc;
    die("posix_spawn");
  }
  return pid;
}

// The child (--cold-child) times its own first spawn and prints microseconds.
double troupe_cold_ms(const std::string& exe) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) die("pipe2");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  pid_t pid = spawn_self({exe, "--cold-child"}, &fa);
  posix_spawn_file_actions_destroy(&fa);
  ::close(p[1]);
  std::string out;
  char buf[256];
  ssize_t r;
  while ((r = ::read(p[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(r));
  ::close(p[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  check(WIFEXITED(status) && WEXITSTATUS(status) == 0 && !out.empty(), "cold child exits cleanly");
  return std::stod(out) / 1000.0;
}

int cold_child_main() {
  auto t0 = Clock::now();
  auto a = proc::spawn<Noop>().get();
  double us = seconds_since(t0) * 1e6;
  check(a.worker() != 0, "a handle from the first spawn");
  std::printf("%.1f\n", us);
  std::fflush(stdout);
  return 0;
}

// posix_spawn of this binary, which answers one byte from main (--reply-once).
double raw_cold_ms(const std::string& exe) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, sv[1], sv[1]);  // clears close-on-exec in the child
  auto t0 = Clock::now();
  pid_t pid = spawn_self({exe, "--reply-once", std::to_string(sv[1])}, &fa);
  posix_spawn_file_actions_destroy(&fa);
  ::close(sv[1]);
  char b = 0;
  check(read_some(sv[0], &b, 1) == 1 && b == 42, "one byte from the spawned child");
  double ms = seconds_since(t0) * 1e3;
  ::close(sv[0]);
  ::waitpid(pid, nullptr, 0);
  return ms;
}

// ------------------------------------------------------------ idle CPU
long cpu_ticks(pid_t pid) {
  std::ifstream f(fmt::format("/proc/{}/stat", pid));
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto close_paren = s.rfind(')');
  if (close_paren == std::string::npos) return -1;
  std::istringstream in(s.substr(close_paren + 2));  // from field 3, the state
  std::string tok;
  long utime = 0, stime = 0;
  for (int field = 3; in >> tok; ++field) {
    if (field == 14) utime = std::stol(tok);
    if (field == 15) {
      stime = std::stol(tok);
      break;
    }
  }
  return utime + stime;
}
// Context switches of every thread of pid: each wake-up of an idle thread is one.
long wakeups(pid_t pid) {
  long n = 0;
  std::string dir = fmt::format("/proc/{}/task", pid);
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream f(dir + "/" + e->d_name + "/status");
      std::string line;
      while (std::getline(f, line))
        if (line.rfind("voluntary_ctxt_switches:", 0) == 0 ||
            line.rfind("nonvoluntary_ctxt_switches:", 0) == 0)
          n += std::stol(line.substr(line.find(':') + 1));
    }
    ::closedir(d);
  }
  return n;
}
long sum_wakeups(const std::vector<pid_t>& pids) {
  long n = 0;
  for (pid_t p : pids) n += wakeups(p);
  return n;
}
long sum_ticks(const std::vector<pid_t>& pids) {
  long t = 0;
  for (pid_t p : pids) t += cpu_ticks(p);
  return t;
}

// ------------------------------------------------------------ run loop, table
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct Row {
  std::string name;
  double ours, base;  // < 0: not measured
  int precision;
};

void print_row(const Row& r) {
  std::string ratio = r.base > 0 && r.ours >= 0 ? fmt::format("{:.2f}", r.ours / r.base) : "-";
  auto cell = [&](double v) { return v >= 0 ? fmt::format("{:.{}f}", v, r.precision) : "-"; };
  std::printf("| %s | %s | %s | %s |\n", r.name.c_str(), cell(r.ours).c_str(),
              cell(r.base).c_str(), ratio.c_str());
  std::fflush(stdout);
}

// BP2
std::string g_side;  // "": both; "troupe" or "baseline": that one only

Row measure(std::string name, int runs, int precision, const std::function<double()>& ours,
            const std::function<double()>& base) {
  std::vector<double> a, b;
  const bool run_ours = g_side != "baseline", run_base = g_side != "troupe";
  if (run_ours) ours();
  if (run_base) base();
  for (int i = 0; i < runs; ++i) {
    std::this_thread::sleep_for(50ms);
    if (run_ours) a.push_back(ours());
    std::this_thread::sleep_for(50ms);
    if (run_base) b.push_back(base());
  }
  return {std::move(name), run_ours ? median(a) : -1, run_base ? median(b) : -1, precision};
}

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "bench_proc: %s\nusage: bench_proc [--runs N] [--quick] "
               "[--case rt,pipe,tasks,cold,idle] [--side troupe|baseline]\n",
               why);
  std::exit(2);
}

}  // namespace

// BP6: w2w and chain keep a direct and a relayed set of actors alive side by
// side, each actor in a worker of its own: 2 + 2 + 3 + 3 workers at most.
bool names_worker_graph_case(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string_view(argv[i]) == "--case") {
      std::string c = "," + std::string(argv[i + 1]) + ",";
      return c.find(",w2w,") != std::string::npos || c.find(",chain,") != std::string::npos;
    }
  return false;
}

int main(int argc, char** argv) {
  proc::Options opts;
  opts.budget = std::max(1u, std::thread::hardware_concurrency());
  if (names_worker_graph_case(argc, argv)) opts.budget = std::max<std::size_t>(opts.budget, 10);
  opts.idle_timeout = 60s;  // workers stay for the idle case; the bench retires them at the end
  opts.budget_file = fmt::format("/tmp/troupe-bench-budget-{}-{}", getuid(), getpid());  // BP5
  proc::init(argc, argv, opts);  // BP1

  std::vector<std::string_view> args(argv + 1, argv + argc);
  if (!args.empty() && args[0] == "--reply-once") {
    if (args.size() != 2) usage("--reply-once FD");
    char b = 42;
    write_all(std::atoi(argv[2]), &b, 1);
    ::_exit(0);
  }
  if (!args.empty() && args[0] == "--cold-child") {
    int rc = cold_child_main();
    ::unlink(opts.budget_file.c_str());
    return rc;
  }

  int runs = 5;
  bool quick = false, runs_given = false;
  std::string cases = "rt,pipe,tasks,cold,idle";
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--runs" && i + 1 < args.size()) {
      runs = std::atoi(std::string(args[++i]).c_str());
      runs_given = true;
      if (runs < 1) usage("--runs needs a positive count");
    } else if (args[i] == "--quick") {
      quick = true;
    } else if (args[i] == "--side" && i + 1 < args.size()) {
      g_side = std::string(args[++i]);
      if (g_side != "troupe" && g_side != "baseline") usage("--side troupe or --side baseline");
    } else if (args[i] == "--case" && i + 1 < args.size()) {
      cases = std::string(args[++i]);
    } else {
      usage("unknown argument");
    }
  }
  if (quick && !runs_given) runs = 3;
  cases = "," + cases + ",";
  auto want = [&](const char* c) { return cases.find(fmt::format(",{},", c)) != std::string::npos; };
  const std::string exe = argv[0];
  const long rt_n = quick ? 1000 : 20000;
  const long pipe_n = quick ? 10000 : 100000;
  const long task_n = quick ? 10000 : 100000;
  const long chain_n = quick ? 20000 : 200000;
  const std::size_t budget = opts.budget;

  std::fprintf(stderr,
               "bench_proc: %d runs per side, medians; ratio = troupe / baseline; budget %zu "
               "workers; %s sizes\n",
               runs, budget, quick ? "quick" : "full");
  std::printf("| case | troupe | baseline | ratio |\n|---|---|---|---|\n");
  std::fflush(stdout);

  if (want("rt"))
    print_row(measure("call round trip, empty method, vs SOCK_SEQPACKET 1-byte echo (µs)", runs, 2,
                      [&] { return troupe_round_trip_us(rt_n); },
                      [&] { return raw_round_trip_us(rt_n); }));
  if (want("pipe"))
    print_row(measure(fmt::format("pipelined calls/s, {} in flight, vs SOCK_STREAM 1-byte echo",
                                  kWindow),
                      runs, 0, [&] { return troupe_pipelined_per_s(pipe_n); },
                      [&] { return raw_pipelined_per_s(pipe_n); }));
  if (want("tasks"))
    print_row(measure(fmt::format("isolated tasks/s, {} in flight, {} workers, vs fork/pipe pool",
                                  kWindow, budget),
                      runs, 0, [&] { return troupe_tasks_per_s(task_n); },
                      [&] { return pool_tasks_per_s(budget, task_n); }));
  if (want("w2w")) {
    // BP6: the direct pair, then the relayed one (its channel refused).
    W2wPair direct = make_w2w_pair();
    w2w_round_trip_us(direct, 10);  // sets the channel up
    proc::set_direct_calls(false);
    W2wPair relayed = make_w2w_pair();
    w2w_round_trip_us(relayed, 10);
    proc::set_direct_calls(true);
    print_row(measure(
        "worker-to-worker round trip, direct, vs root-to-worker round trip (µs)", runs, 2,
        [&] { return w2w_round_trip_us(direct, rt_n); },
        [&] { return troupe_round_trip_us(rt_n); }));
    print_row(measure(
        "worker-to-worker round trip, relayed by the root, vs root-to-worker (µs)", runs, 2,
        [&] { return w2w_round_trip_us(relayed, rt_n); },
        [&] { return troupe_round_trip_us(rt_n); }));
  }
  if (want("chain")) {
    Chain direct = make_chain();
    chain_items_per_s(direct, 1000);  // sets the channels up
    proc::set_direct_calls(false);
    Chain relayed = make_chain();
    chain_items_per_s(relayed, 1000);
    proc::set_direct_calls(true);
    print_row(measure(
        fmt::format("3-stage pipeline of actors in 3 workers, items/s ({} in flight "
                    "per stage), direct vs relayed by the root",
                    kStageWindow),
        runs, 0, [&] { return chain_items_per_s(direct, chain_n); },
        [&] { return chain_items_per_s(relayed, chain_n); }));
  }
  if (want("cold"))
    print_row(measure("cold start: first spawn to its result, vs posix_spawn of this binary "
                      "replying 1 byte (ms)",
                      runs, 2, [&] { return troupe_cold_ms(exe); },
                      [&] { return raw_cold_ms(exe); }));
  if (want("idle")) {
    std::vector<pid_t> workers = proc::worker_pids();
    if (workers.empty()) {  // only --case idle: make some workers first
      troupe_tasks_per_s(kWindow);
      workers = proc::worker_pids();
    }
    auto pool = fork_pool(workers.size());
    std::this_thread::sleep_for(10ms);  // the pool's workers reach their first read
    const pid_t self = getpid();
    long w0 = sum_ticks(workers), p0 = sum_ticks(pool->pids), r0 = cpu_ticks(self);
    long ws0 = sum_wakeups(workers), ps0 = sum_wakeups(pool->pids), rs0 = wakeups(self);
    std::this_thread::sleep_for(1s);
    long w1 = sum_ticks(workers), p1 = sum_ticks(pool->pids), r1 = cpu_ticks(self);
    long ws1 = sum_wakeups(workers), ps1 = sum_wakeups(pool->pids), rs1 = wakeups(self);
    auto d = [](long a, long b) { return static_cast<double>(b - a); };
    print_row({fmt::format("idle CPU of {} workers in 1 s, vs idle fork/pipe pool (ticks of 1/{} s)",
                           workers.size(), sysconf(_SC_CLK_TCK)),
               d(w0, w1), d(p0, p1), 0});
    print_row({"idle wake-ups of those workers in 1 s (context switches, all threads)", d(ws0, ws1),
               d(ps0, ps1), 0});
    print_row({"idle CPU of the root process in 1 s (ticks)", d(r0, r1), -1, 0});
    // The main thread sleeping here switches once; the rest are the runtime's.
    print_row({"idle wake-ups of the root process in 1 s (all threads, this one's sleep included)",
               d(rs0, rs1), -1, 0});
  }
  proc::retire_idle_workers();
  ::unlink(opts.budget_file.c_str());
  return 0;
}
