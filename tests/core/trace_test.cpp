// tests/core/trace_test.cpp: troupe/trace.hpp on actors. A recording of
// one-actor and multi-actor behaviours is loaded with a JSON parser and
// checked: every behaviour is there with its actors, thread and duration,
// every multi-actor behaviour has a matched acquisition slice; TR2 (one
// recording at a time, stop() clears); and TROUPE_TRACE in a child process
// (this binary re-executed) writes the file at exit.
#include "troupe/trace.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "troupe/troupe.hpp"

using namespace troupe;
using nlohmann::json;

namespace {

struct Counter {
  long n = 0;
};

std::string temp_path(const char* what) {
  return (std::filesystem::temp_directory_path() /
          ("troupe_trace_" + std::to_string(::getpid()) + "_" + what + ".json"))
      .string();
}

json load(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return json::parse(in);  // throws (fails the test) on malformed JSON
}

// n one-actor behaviours on a, n on b, and n two-actor ones on both.
void workload(Actor<Counter> a, Actor<Counter> b, int n) {
  for (int i = 0; i < n; ++i) {
    when(a, [](Counter& c) { ++c.n; });
    when(b, [](Counter& c) { ++c.n; });
    when(a, b, [](Counter& x, Counter& y) {
      ++x.n;
      ++y.n;
    });
  }
  when(a, b, [](Counter&, Counter&) {}).get();  // everything before it has run
}

TEST(Trace, RecordsBehavioursAndAcquisitions) {
  const std::string path = temp_path("api");
  auto a = make_actor<Counter>();
  auto b = make_actor<Counter>();
  ASSERT_FALSE(trace::active());
  trace::start(path);
  EXPECT_TRUE(trace::active());
  EXPECT_THROW(trace::start(path), Error);  // TR2
  constexpr int kN = 200;
  workload(a, b, kN);
  const std::size_t written = trace::stop();
  EXPECT_FALSE(trace::active());
  EXPECT_EQ(trace::stop(), 0u);  // not recording: nothing written

  json doc = load(path);
  ASSERT_TRUE(doc.contains("traceEvents"));
  EXPECT_EQ(doc["dropped"], 0);
  std::size_t one = 0, two = 0, events = 0;
  std::map<std::string, int> open_acquires;  // id -> begins - ends
  std::set<std::string> actors_seen;
  for (const json& e : doc["traceEvents"]) {
    if (e["ph"] == "M") continue;
    ++events;
    ASSERT_TRUE(e.contains("ts") && e.contains("pid") && e.contains("tid")) << e.dump();
    EXPECT_GE(e["ts"].get<double>(), 0.0);
    EXPECT_EQ(e["pid"], ::getpid());
    if (e["cat"] == "actor") {
      ASSERT_EQ(e["ph"], "X");
      EXPECT_GE(e["dur"].get<double>(), 0.0);
      const json& acts = e["args"]["actors"];
      for (const json& x : acts) actors_seen.insert(x.get<std::string>());
      if (acts.size() == 1) ++one;
      if (acts.size() == 2) {
        ++two;
        EXPECT_EQ(e["name"], "when (several actors)");
        EXPECT_NE(acts[0], acts[1]);
      }
    } else if (e["cat"] == "acquire") {
      ASSERT_TRUE(e["ph"] == "b" || e["ph"] == "e") << e.dump();
      open_acquires[e["id"].get<std::string>()] += e["ph"] == "b" ? 1 : -1;
    }
  }
  EXPECT_EQ(events, written);
  EXPECT_EQ(one, 2u * kN);
  EXPECT_EQ(two, kN + 1u);
  EXPECT_EQ(actors_seen.size(), 2u);  // a and b, the same two names throughout
  for (auto& [id, balance] : open_acquires) EXPECT_EQ(balance, 0) << "acquisition " << id;
  EXPECT_FALSE(open_acquires.empty());

  // A second recording holds only its own events (TR2).
  trace::start(path);
  when(a, [](Counter& c) { ++c.n; }).get();
  EXPECT_EQ(trace::stop(), 1u);
  std::filesystem::remove(path);
}

TEST(Trace, OffRecordsNothing) {
  const std::string path = temp_path("off");
  auto a = make_actor<Counter>();
  when(a, [](Counter& c) { ++c.n; }).get();  // not recording
  trace::start(path);
  EXPECT_EQ(trace::stop(), 0u);
  json doc = load(path);
  std::size_t events = 0;
  for (const json& e : doc["traceEvents"]) events += e.value("ph", "") != "M";
  EXPECT_EQ(events, 0u);
  std::filesystem::remove(path);
}

TEST(Trace, UnwritablePathIsATypedError) {
  trace::start("/nonexistent-dir/trace.json");
  auto a = make_actor<Counter>();
  when(a, [](Counter& c) { ++c.n; }).get();
  EXPECT_THROW(trace::stop(), Error);
  EXPECT_FALSE(trace::active());
}

// Runs in the child only (TROUPE_TRACE set by the parent below).
TEST(Trace, EnvChild) {
  if (!std::getenv("TROUPE_TRACE_TEST_CHILD")) GTEST_SKIP() << "run by Trace.Environment";
  ASSERT_TRUE(trace::active());
  workload(make_actor<Counter>(), make_actor<Counter>(), 10);
}

TEST(Trace, Environment) {
  const std::string path = temp_path("env");
  std::filesystem::remove(path);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setenv("TROUPE_TRACE", path.c_str(), 1);
    ::unsetenv("TROUPE_TRACE_ROOT");
    ::setenv("TROUPE_TRACE_TEST_CHILD", "1", 1);
    ::execl("/proc/self/exe", "trace_test", "--gtest_filter=Trace.EnvChild", nullptr);
    _exit(127);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  json doc = load(path);
  std::size_t behaviours = 0;
  for (const json& e : doc["traceEvents"]) behaviours += e.value("cat", "") == "actor";
  EXPECT_EQ(behaviours, 31u);
  std::filesystem::remove(path);
}

}  // namespace
