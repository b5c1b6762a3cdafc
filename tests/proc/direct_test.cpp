// tests/proc/direct_test.cpp: direct channels between workers
// (src/proc/node_private.hpp N11): a chain of actors in three workers
// delivers every item in order per sender, over channels the root set up and
// with no call relayed by the root (and relayed, every call, when
// proc::set_direct_calls(false)); killing the callee fails the caller's call
// in flight with worker_lost naming the method while the caller keeps
// serving; a direct call's timeout is kept by the caller, and its cancel
// reaches the callee; killing the
// caller leaves the callee serving others, its state what the calls it
// received made it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "proc/test_main.hpp"
#include "troupe/proc/process.hpp"

using namespace troupe;
using namespace std::chrono_literals;

namespace {

std::string marker_path(const char* what) {
  return "/tmp/troupe-direct-test-" + std::to_string(::getpid()) + "-" + what;
}
// Waits (bounded) for the file `path`: the callee has started.
bool wait_for_file(const std::string& path) {
  struct stat st {};
  for (int i = 0; i < 1000; ++i) {
    if (::stat(path.c_str(), &st) == 0) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

// Counts the items of each sender and whether each sender's came in order.
struct Sink {
  std::vector<long> last = std::vector<long>(4, -1), count = std::vector<long>(4, 0);
  bool ordered = true;
  void put(int sender, long seq) {
    ordered = ordered && seq == last.at(static_cast<std::size_t>(sender)) + 1;
    last[static_cast<std::size_t>(sender)] = seq;
    count[static_cast<std::size_t>(sender)]++;
  }
  std::tuple<std::vector<long>, bool> report() const { return {count, ordered}; }
};

constexpr std::size_t kWindow = 64;

// Forwards each item to the sink, up to kWindow calls in flight.
struct Transformer {
  explicit Transformer(proc::RemoteActor<Sink> s) : sink(std::move(s)), ring(kWindow) {}
  void put(int sender, long seq) {
    auto& p = ring[next++ % kWindow];
    if (p.valid()) p.get();
    p = sink.call<&Sink::put>(sender, seq);
  }
  void flush() {
    for (auto& p : ring)
      if (p.valid()) std::exchange(p, Promise<void>()).get();
  }
  proc::RemoteActor<Sink> sink;
  std::vector<Promise<void>> ring;
  std::size_t next = 0;
};

// Sends 0..n-1 as `sender`, up to kWindow in flight (so the first calls
// queue while the channel is set up), then flushes the transformer.
struct Producer {
  void run(proc::RemoteActor<Transformer> t, int sender, long n) {
    std::vector<Promise<void>> ring(kWindow);
    for (long i = 0; i < n; ++i) {
      auto& p = ring[static_cast<std::size_t>(i) % kWindow];
      if (p.valid()) p.get();
      p = t.call<&Transformer::put>(sender, i);
    }
    for (auto& p : ring)
      if (p.valid()) p.get();
    t.call<&Transformer::flush>().get();
  }
};

struct Counter {
  long n = 0;
  long add(long d) { return n += d; }
  long get() const { return n; }
  // Marks that it runs (marker.in), then waits (bounded) for marker.out.
  void busy_until(std::string marker) {
    std::ofstream(marker + ".in") << "in";
    wait_for_file(marker + ".out");
  }
  // Marks that it started (the file), then sleeps: a call in flight for ever.
  void hang(std::string marker) {
    std::ofstream(marker) << "in";
    std::this_thread::sleep_for(60s);
  }
};

// An actor that calls a Counter in another worker.
struct Caller {
  long add_to(proc::RemoteActor<Counter> c, long d) { return c.call<&Counter::add>(d).get(); }
  // "code: what" of the error the call to hang() ends with.
  std::string hang_on(proc::RemoteActor<Counter> c, std::string marker) {
    try {
      c.call<&Counter::hang>(std::move(marker)).get();
      return "no error";
    } catch (const Error& e) {
      return std::to_string(static_cast<int>(e.code())) + ": " + e.what();
    }
  }
  // "code: what" of the error hang() ends with under a 100 ms timeout.
  std::string hang_for_a_while(proc::RemoteActor<Counter> c, std::string marker) {
    try {
      c.call_with<&Counter::hang>(proc::CallOptions{.timeout = 100ms}, std::move(marker)).get();
      return "no error";
    } catch (const Error& e) {
      return std::to_string(static_cast<int>(e.code())) + ": " + e.what();
    }
  }
  // Adds 1 `done` times, awaiting each, then `in_flight` times without
  // awaiting; marks that it sent them all (the file), then sleeps.
  void add_then_hang(proc::RemoteActor<Counter> c, long done, long in_flight, std::string marker) {
    for (long i = 0; i < done; ++i) c.call<&Counter::add>(1L).get();
    std::vector<Promise<long>> sent;
    for (long i = 0; i < in_flight; ++i) sent.push_back(c.call<&Counter::add>(1L));
    std::ofstream(marker) << "sent";
    std::this_thread::sleep_for(60s);
  }
  long pid() const { return static_cast<long>(::getpid()); }
  // Sends add(1) while the callee's only thread is busy, and cancels it
  // at once: the cancel goes over the direct channel too, and the callee,
  // receiving both once it is free, skips the add (W2: not yet started).
  // The files order it: the add is sent only once the busy call runs, and
  // the busy call ends only once the cancel is sent (a receiver that took
  // the add in before running the busy call would run it before it could
  // see the cancel). "<code of the add's error> <counter>".
  std::string cancel_behind_busy(proc::RemoteActor<Counter> c, std::string marker) {
    auto busy = c.call<&Counter::busy_until>(marker);
    if (!wait_for_file(marker + ".in")) return "the busy call never started";
    proc::CancelToken token;
    auto add = c.call_with<&Counter::add>(proc::CallOptions{.cancel = &token}, 1L);
    token.cancel();
    std::ofstream(marker + ".out") << "cancelled";
    std::string r = "ran";
    try {
      add.get();
    } catch (const Error& e) {
      r = std::to_string(static_cast<int>(e.code()));
    }
    busy.get();
    return r + " " + std::to_string(c.call<&Counter::get>().get());
  }
};

// Waits until the program holds no worker (so each test starts alike).
void no_workers() {
  proc::retire_idle_workers();
  for (int i = 0; i < 300 && proc::stats().alive > 0; ++i) {
    std::this_thread::sleep_for(10ms);
    proc::retire_idle_workers();
  }
}

struct ChainResult {
  std::vector<long> counts;
  bool ordered = false;
  proc::Stats before, after;
};

// Two producers -> one transformer -> one sink, four workers.
ChainResult run_chain(long n) {
  no_workers();
  auto sink = proc::spawn_with<Sink>(proc::Placement::fresh()).get();
  auto mid = proc::spawn_with<Transformer>(proc::Placement::fresh(), sink).get();
  auto p0 = proc::spawn_with<Producer>(proc::Placement::fresh()).get();
  auto p1 = proc::spawn_with<Producer>(proc::Placement::fresh()).get();
  EXPECT_NE(p0.pid(), p1.pid());
  EXPECT_NE(mid.pid(), sink.pid());
  ChainResult r;
  r.before = proc::stats();
  auto a = p0.call<&Producer::run>(mid, 0, n);
  auto b = p1.call<&Producer::run>(mid, 1, n);
  a.get();
  b.get();
  r.after = proc::stats();
  std::tie(r.counts, r.ordered) = sink.call<&Sink::report>().get();
  return r;
}

TEST(Direct, AChainDeliversEveryItemInOrderPerSenderAndTheRootRelaysNone) {
  const long n = 3000;
  ChainResult r = run_chain(n);
  EXPECT_EQ(r.counts[0], n);
  EXPECT_EQ(r.counts[1], n);
  EXPECT_TRUE(r.ordered) << "a sender's items reached the sink out of order";
  // Producer 0 -> transformer, producer 1 -> transformer, transformer -> sink.
  EXPECT_EQ(r.after.direct_channels - r.before.direct_channels, 3u);
  EXPECT_EQ(r.after.relayed, r.before.relayed) << "the root relayed calls between workers";
}

TEST(Direct, WithDirectCallsOffTheRootRelaysEveryCallInOrder) {
  proc::set_direct_calls(false);
  const long n = 500;
  ChainResult r = run_chain(n);
  proc::set_direct_calls(true);
  EXPECT_EQ(r.counts[0], n);
  EXPECT_EQ(r.counts[1], n);
  EXPECT_TRUE(r.ordered);
  EXPECT_EQ(r.after.direct_channels, r.before.direct_channels);
  // 2n puts and 2 flushes to the transformer, 2n puts to the sink.
  EXPECT_EQ(r.after.relayed - r.before.relayed, static_cast<std::size_t>(4 * n + 2));
}

TEST(Direct, KillingTheCalleeFailsTheCallInFlightNamingTheMethodAndTheCallerServesOn) {
  no_workers();
  auto b = proc::spawn_with<Counter>(proc::Placement::fresh()).get();
  auto other = proc::spawn_with<Counter>(proc::Placement::fresh()).get();
  auto a = proc::spawn_with<Caller>(proc::Placement::fresh()).get();
  const proc::Stats s0 = proc::stats();
  EXPECT_EQ(a.call<&Caller::add_to>(b, 5L).get(), 5);  // sets the channel up
  const std::string marker = marker_path("callee");
  ::unlink(marker.c_str());
  auto hung = a.call<&Caller::hang_on>(b, marker);
  ASSERT_TRUE(wait_for_file(marker)) << "the call never started in the callee";
  EXPECT_EQ(proc::stats().relayed, s0.relayed) << "the calls went through the root";
  ASSERT_EQ(::kill(b.pid(), SIGKILL), 0);
  std::string what = hung.get();
  ::unlink(marker.c_str());
  EXPECT_EQ(what.rfind(std::to_string(static_cast<int>(Errc::worker_lost)) + ": ", 0), 0u) << what;
  EXPECT_NE(what.find("Counter::hang"), std::string::npos) << what;
  EXPECT_NE(what.find(std::to_string(b.pid())), std::string::npos) << what;

  // The caller keeps serving: its own method, a call to another worker.
  EXPECT_EQ(a.call<&Caller::pid>().get(), static_cast<long>(a.pid()));
  EXPECT_EQ(a.call<&Caller::add_to>(other, 2L).get(), 2);
  EXPECT_EQ(a.call<&Caller::add_to>(other, 3L).get(), 5);
  // A later call to the dead actor fails too (through the root, which knows
  // how it died), naming the method.
  try {
    a.call<&Caller::add_to>(b, 1L).get();
    FAIL() << "a call to a killed actor succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::worker_lost) << e.what();  // rethrown by add_to in a
    EXPECT_NE(std::string(e.what()).find("Counter::add"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("worker"), std::string::npos) << e.what();
  }
}

TEST(Direct, ADirectCallTimesOutInTheCallerNamingTheMethod) {
  no_workers();
  auto b = proc::spawn_with<Counter>(proc::Placement::fresh()).get();
  auto a = proc::spawn_with<Caller>(proc::Placement::fresh()).get();
  const proc::Stats s0 = proc::stats();
  const std::string marker = marker_path("timeout");
  ::unlink(marker.c_str());
  std::string what = a.call<&Caller::hang_for_a_while>(b, marker).get();
  ::unlink(marker.c_str());
  EXPECT_EQ(what.rfind(std::to_string(static_cast<int>(Errc::timeout)) + ": ", 0), 0u) << what;
  EXPECT_NE(what.find("Counter::hang"), std::string::npos) << what;
  EXPECT_EQ(proc::stats().relayed, s0.relayed) << "the call went through the root";
  EXPECT_EQ(a.call<&Caller::pid>().get(), static_cast<long>(a.pid()));  // a serves on
  ASSERT_EQ(::kill(b.pid(), SIGKILL), 0);                               // b still sleeps in hang()
}

TEST(Direct, ACancelReachesTheCalleeOverTheDirectChannel) {
  no_workers();
  auto b = proc::spawn_with<Counter>(proc::Placement::fresh()).get();
  auto a = proc::spawn_with<Caller>(proc::Placement::fresh()).get();
  a.call<&Caller::add_to>(b, 0L).get();  // the channel is up
  const proc::Stats s0 = proc::stats();
  const std::string marker = marker_path("cancel");
  EXPECT_EQ(a.call<&Caller::cancel_behind_busy>(b, marker).get(),
            std::to_string(static_cast<int>(Errc::cancelled)) + " 0");
  ::unlink((marker + ".in").c_str());
  ::unlink((marker + ".out").c_str());
  EXPECT_EQ(proc::stats().relayed, s0.relayed) << "a call went through the root";
}

TEST(Direct, KillingTheCallerLeavesTheCalleeServingOthers) {
  no_workers();
  auto b = proc::spawn_with<Counter>(proc::Placement::fresh()).get();
  auto a = proc::spawn_with<Caller>(proc::Placement::fresh()).get();
  auto c = proc::spawn_with<Caller>(proc::Placement::fresh()).get();
  const std::string marker = marker_path("caller");
  ::unlink(marker.c_str());
  const long done = 100, in_flight = 64;
  auto hung = a.call<&Caller::add_then_hang>(b, done, in_flight, marker);
  ASSERT_TRUE(wait_for_file(marker)) << "the caller never sent its calls";
  ASSERT_EQ(::kill(a.pid(), SIGKILL), 0);
  ::unlink(marker.c_str());
  try {
    hung.get();
    FAIL() << "a call to a killed worker succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::worker_lost) << e.what();
  }
  // Every call the dead caller sent before it died runs (channel.hpp C5):
  // the count reaches done + in_flight, and no further.
  long seen = 0;
  for (int i = 0; i < 1000 && seen != done + in_flight; ++i) {
    seen = b.call<&Counter::get>().get();
    if (seen != done + in_flight) std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(seen, done + in_flight);
  // The callee serves the root and another worker; its count moves by
  // exactly what they add.
  for (long i = 1; i <= 50; ++i) {
    EXPECT_EQ(c.call<&Caller::add_to>(b, 1L).get(), seen + 2 * i - 1);
    EXPECT_EQ(b.call<&Counter::add>(1L).get(), seen + 2 * i);
  }
}

}  // namespace

int main(int argc, char** argv) {
  proc::Options o;
  o.budget = 4;
  o.idle_timeout = std::chrono::milliseconds(1500);
  o.budget_file = proc_test::budget_file("direct");
  return proc_test::run_tests(argc, argv, o);
}
