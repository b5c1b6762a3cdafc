// bench/core/bench_args.hpp: what bench_savina and bench_realwork share: the
// command line both take (--runs N, --case A,B, --quick, --threads N, plus a
// program's own options), the case selection, the median of a run's
// timings, and the machine probe printed beside them (cross_core_round_trip_ns).
#pragma once

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace bench {

struct Args {
  int runs = 5;
  bool quick = false;
  std::size_t threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::string> cases;  // empty: all

  bool selected(const std::string& name) const {
    return cases.empty() || std::find(cases.begin(), cases.end(), name) != cases.end();
  }
};

// Parses the common options; `extra(flag, value)` gets any other flag (it
// calls `value()` to take the next argument) and returns false if it does
// not know it. `usage(why)` does not return.
inline Args parse_args(
    int argc, char** argv, void (*usage)(const char*),
    const std::function<bool(std::string_view, const std::function<std::string()>&)>& extra = {}) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    std::function<std::string()> value = [&]() -> std::string {
      if (i + 1 >= argc) usage("missing value");
      return argv[++i];
    };
    if (flag == "--runs") {
      a.runs = std::atoi(value().c_str());
      if (a.runs < 1) usage("--runs must be >= 1");
    } else if (flag == "--case") {
      std::string only = value();
      for (std::size_t at = 0; at <= only.size();) {
        std::size_t comma = std::min(only.find(',', at), only.size());
        a.cases.push_back(only.substr(at, comma - at));
        at = comma + 1;
      }
    } else if (flag == "--quick") {
      a.quick = true;
    } else if (flag == "--threads") {
      int t = std::atoi(value().c_str());
      if (t < 1) usage("--threads must be >= 1");
      a.threads = static_cast<std::size_t>(t);
    } else if (flag == "--help" || flag == "-h") {
      usage("help");
    } else if (!extra || !extra(flag, value)) {
      usage("unknown argument");
    }
  }
  return a;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The machine probe: two threads, pinned to the first two CPUs this process
// may use, pass one cache line back and forth (an atomic counter each side
// bumps in turn); returns the median of 3 timed rounds of the round trip
// (after both threads run pinned and 1000 untimed trips), in ns,
// or 0 with fewer than 2 CPUs. On a VM it moves with where the host places
// the vCPUs: on one 2-core VM it read 50 ns and, minutes later, 330 ns, and
// a program that hands each message to the other core (Savina's counting)
// took 25 ms and then 230 ms with the same binary. So every table these
// programs print carries it: figures from different regimes do not compare.
inline double cross_core_round_trip_ns(int trips = 20000) {
  cpu_set_t mine;
  if (pthread_getaffinity_np(pthread_self(), sizeof mine, &mine) != 0) return 0;
  int cpus[2], found = 0;
  for (int c = 0; c < CPU_SETSIZE && found < 2; ++c)
    if (CPU_ISSET(c, &mine)) cpus[found++] = c;
  if (found < 2) return 0;
  auto pin = [](int cpu) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    pthread_setaffinity_np(pthread_self(), sizeof one, &one);
  };
  struct alignas(64) Line {  // a line of its own: nothing else of either thread's on it
    std::atomic<int> v{0};
    char pad[64 - sizeof(std::atomic<int>)];
  };
  auto owned = std::make_unique<Line>();
  std::atomic<int>& line = owned->v;
  // The other thread answers each odd value with the next even one; -1 is
  // its sign that it runs pinned (the clock starts after that and after
  // warm-up trips, so a thread's start and migration are not timed).
  std::thread other([&] {
    pin(cpus[1]);
    line.store(-1, std::memory_order_release);
    for (int v = 1;; v += 2) {
      int seen;
      while ((seen = line.load(std::memory_order_acquire)) != v && seen != -2) {
      }
      if (seen == -2) return;
      line.store(v + 1, std::memory_order_release);
    }
  });
  pin(cpus[0]);
  while (line.load(std::memory_order_acquire) != -1) {
  }
  int v = 0;
  auto trip_n = [&](int n) {
    for (int i = 0; i < n; ++i, v += 2) {
      line.store(v + 1, std::memory_order_release);
      while (line.load(std::memory_order_acquire) != v + 2) {
      }
    }
  };
  trip_n(1000);  // warm-up
  std::vector<double> rounds;
  for (int round = 0; round < 3; ++round) {
    auto t0 = std::chrono::steady_clock::now();
    trip_n(trips);
    auto t1 = std::chrono::steady_clock::now();
    rounds.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / trips);
  }
  line.store(-2, std::memory_order_release);
  other.join();
  pthread_setaffinity_np(pthread_self(), sizeof mine, &mine);  // the caller's mask back
  return median(rounds);
}

}  // namespace bench
