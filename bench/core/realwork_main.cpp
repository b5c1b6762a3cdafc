// bench/core/realwork_main.cpp: bench_realwork's command line, the inputs
// (graph, requests, references), the run loop and the table. Owns the order of
// runs and the statistics; the sides live in realwork_troupe.cpp (ours) and
// realwork_plain.cpp (one thread; std::thread + mutex).
//
//   bench_realwork [--runs N] [--case bfs,service,service-bare,service-heavy] [--quick]
//                  [--threads N] [--work ROUNDS]
//
// Invariants:
//   RM1. Each side of a case runs once untimed (warm-up), then N timed runs,
//       the sides alternating run by run (the first side rotates each round),
//       so that load from other processes falls on every side alike. The
//       table shows medians, and min - max.
//   RM2. Runs are 50 ms apart, after troupe's pool went idle (the teardown of
//       the last run's actors), so no side pays for another.
//   RM3. troupe's pool and the mutex side get the same number of threads
//       (--threads, default: the cores); the one-thread side gets one.
//   RM4. The references (the serial BFS's levels, the serial service's final
//       balances) are computed once, untimed, before any run; every timed run
//       of every side is checked against them (realwork.hpp RW2, RW3).
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <troupe/runtime.hpp>
#include <vector>

#include "bench_args.hpp"
#include "realwork.hpp"

namespace realwork {

void fail(const char* file, int line, const char* cond, const std::string& what) {
  std::fprintf(stderr, "\nbench_realwork: WRONG RESULT at %s:%d: %s\n  %s\n", file, line, cond,
               what.c_str());
  std::fflush(stderr);
  std::abort();
}

Graph make_graph(const Sizes& s, std::uint64_t seed) {
  const std::uint32_t n = s.bfs_vertices;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> edges;
  edges.reserve(s.bfs_edges);
  std::uint64_t rng = seed;
  while (edges.size() < s.bfs_edges) {
    const std::uint64_t r = splitmix(rng);
    const auto u = static_cast<std::uint32_t>((r & 0xFFFFFFFFu) % n);
    const auto v = static_cast<std::uint32_t>((r >> 32) % n);
    if (u != v) edges.emplace_back(u, v);
  }
  Graph g;
  g.n = n;
  g.offsets.assign(std::size_t{n} + 1, 0);
  for (auto [u, v] : edges) {
    ++g.offsets[u + 1];
    ++g.offsets[v + 1];
  }
  for (std::uint32_t v = 0; v < n; ++v) g.offsets[v + 1] += g.offsets[v];
  g.adj.resize(2 * edges.size());
  std::vector<std::uint64_t> at(g.offsets.begin(), g.offsets.end() - 1);
  for (auto [u, v] : edges) {
    g.adj[at[u]++] = v;
    g.adj[at[v]++] = u;
  }
  return g;
}

std::vector<std::int32_t> bfs_serial(const Graph& g, std::uint32_t source) {
  std::vector<std::int32_t> level(g.n, -1);
  std::vector<std::uint32_t> queue;
  queue.reserve(g.n);
  level[source] = 0;
  queue.push_back(source);
  for (std::size_t head = 0; head < queue.size(); ++head) {
    const std::uint32_t v = queue[head];
    const std::int32_t next = level[v] + 1;
    for (std::uint32_t w : g.neighbours(v)) {
      if (level[w] < 0) {
        level[w] = next;
        queue.push_back(w);
      }
    }
  }
  return level;
}

void check_levels(const char* side, std::span<const std::int32_t> got,
                  const std::vector<std::int32_t>& ref, std::uint32_t lo) {
  REALWORK_CHECK(lo + got.size() <= ref.size(), "{}: levels for [{}, {}) of {} vertices", side, lo,
                 lo + got.size(), ref.size());
  for (std::size_t i = 0; i < got.size(); ++i)
    REALWORK_CHECK(got[i] == ref[lo + i], "{}: vertex {} at level {}, expected {}", side, lo + i,
                   got[i], ref[lo + i]);
}

std::vector<Request> make_requests(const Sizes& s, std::uint64_t seed) {
  std::vector<Request> out;
  out.reserve(static_cast<std::size_t>(s.clients) * s.requests_per_client);
  std::uint64_t rng = seed;
  auto below = [&](std::uint32_t n) { return static_cast<std::uint32_t>(splitmix(rng) % n); };
  for (std::uint32_t c = 0; c < s.clients; ++c) {
    for (std::uint32_t j = 0; j < s.requests_per_client; ++j) {
      const std::uint32_t pick = below(100);
      Request q{};
      q.src_server = static_cast<std::uint16_t>(below(s.servers));
      q.dst_server = q.src_server;
      q.src_account = below(s.accounts_per_server);
      q.dst_account = below(s.accounts_per_server);
      q.amount = static_cast<std::int64_t>(below(100)) + 1;
      if (pick < 45) {
        q.kind = Kind::query;
      } else if (pick < 90) {
        q.kind = Kind::move;
      } else {
        q.kind = Kind::transfer;
        std::uint32_t other = below(s.servers - 1);
        if (other >= q.src_server) ++other;  // uniform over the other servers
        q.dst_server = static_cast<std::uint16_t>(other);
      }
      out.push_back(q);
    }
  }
  return out;
}

void check_service(const char* side, const Sizes& s, const std::vector<Request>& reqs,
                   const ServiceResult& got, const ServiceResult& ref) {
  std::uint64_t handled = 0;
  for (const Request& q : reqs) handled += q.kind == Kind::query ? 0 : q.kind == Kind::move ? 1 : 2;
  REALWORK_CHECK(got.replies == reqs.size(), "{}: {} replies, expected {}", side, got.replies,
                 reqs.size());
  REALWORK_CHECK(got.handled == handled, "{}: servers counted {} updates, expected {}", side,
                 got.handled, handled);
  std::int64_t total = 0;
  for (std::int64_t b : got.balances) total += b;
  const std::int64_t expected_total =
      s.initial_balance * static_cast<std::int64_t>(s.servers) * s.accounts_per_server;
  REALWORK_CHECK(total == expected_total, "{}: total {} not conserved ({})", side, total,
                 expected_total);
  REALWORK_CHECK(got.balances == ref.balances, "{}: final balances differ from the reference",
                 side);
}

double process_cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

namespace {

// CPU seconds every process spent (from /proc/stat: all but idle and iowait)
// and this process spent (getrusage), and the wall clock, to say how much of
// the machine other processes took while a case ran.
struct CpuSample {
  double machine_busy = 0, self = 0, wall = 0;
};
CpuSample cpu_sample() {
  CpuSample c;
  std::ifstream stat("/proc/stat");
  std::string cpu;
  double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  stat >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  c.machine_busy = (user + nice + system + irq + softirq + steal) / 100.0;  // USER_HZ
  c.self = process_cpu_seconds();
  c.wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  return c;
}

struct Side {
  std::string name;
  std::function<double()> run;
  std::vector<double> ms;
  std::vector<double> cores;  // CPU time / wall time of each timed run
};

struct Case {
  std::string name;
  std::string what;
  std::size_t requests;     // 0: not a service case
  std::vector<Side> sides;  // troupe, one thread, mutex
  troupe::Stats before, after;
  CpuSample cpu_before, cpu_after;
};

using bench::median;

std::string cell(const std::vector<double>& ms) {
  auto [lo, hi] = std::minmax_element(ms.begin(), ms.end());
  return fmt::format("{:.1f} ({:.1f} - {:.1f})", median(ms), *lo, *hi);
}

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "bench_realwork: %s\n"
               "usage: bench_realwork [--runs N] [--case NAME[,NAME...]] [--quick] [--threads N] "
               "[--work ROUNDS]\n"
               "cases: bfs service service-bare service-heavy\n",
               why);
  std::exit(2);
}

}  // namespace
}  // namespace realwork

int main(int argc, char** argv) {
  using namespace realwork;
  int work = -1;
  const bench::Args args =
      bench::parse_args(argc, argv, usage, [&](std::string_view flag, const auto& value) {
        if (flag != "--work") return false;
        work = std::atoi(value().c_str());
        if (work < 0) usage("--work must be >= 0");
        return true;
      });
  const int runs = args.runs;
  const bool quick = args.quick;
  const std::size_t threads = args.threads;
  const std::vector<std::string>& wanted = args.cases;
  for (const std::string& w : wanted)
    if (w != "bfs" && w != "service" && w != "service-bare" && w != "service-heavy")
      usage("unknown case");
  auto selected = [&](const std::string& name) { return args.selected(name); };

  Sizes sizes;
  if (quick) sizes = sizes.quick();
  if (work >= 0) sizes.work_rounds = work;
  sizes.threads = threads;

  // The inputs and the references (RM4), untimed.
  Graph graph;
  std::vector<std::int32_t> levels;
  if (selected("bfs")) {
    graph = make_graph(sizes, 0x6A09E667F3BCC908ull);
    levels = bfs_serial(graph, kBfsSource);
  }
  struct ServiceInput {
    Sizes s;
    std::vector<Request> reqs;
    ServiceResult ref;
  };
  std::deque<ServiceInput> inputs;  // stable addresses for the sides' closures
  auto service_input = [&](const Sizes& z) -> const ServiceInput& {
    std::vector<Request> reqs = make_requests(z, 0xBB67AE8584CAA73Bull);
    ServiceResult ref = serial_side::run_service(z, reqs);
    return inputs.emplace_back(ServiceInput{z, std::move(reqs), std::move(ref)});
  };

  troupe_side::start(threads);  // RM3
  const Sizes& s = sizes;
  std::vector<Case> cases;
  if (selected("bfs")) {
    std::uint32_t reached = 0;
    std::int32_t depth = 0;
    for (std::int32_t l : levels) {
      reached += l >= 0;
      depth = std::max(depth, l);
    }
    cases.push_back(
        {"bfs",
         fmt::format("BFS from vertex 0 of a random graph, {} vertices, {} edges, {} partitions; "
                     "{} reached, {} levels",
                     s.bfs_vertices, s.bfs_edges, s.threads * s.bfs_parts_per_thread, reached,
                     depth + 1),
         0,
         {Side{"troupe", [&] { return troupe_side::bfs(s, graph, levels); }, {}, {}},
          Side{"one thread", [&] { return serial_side::bfs(s, graph, levels); }, {}, {}},
          Side{"std::thread + mutex", [&] { return mutex_side::bfs(s, graph, levels); }, {}, {}}},
         {},
         {},
         {},
         {}});
  }
  auto service_case = [&](const char* name, const Sizes& z) {
    const ServiceInput& in = service_input(z);
    return Case{
        name,
        fmt::format("{} clients x {} requests, {} servers x {} accounts, 45 % queries, 45 % moves, "
                    "10 % cross-server transfers; receipt: {} mixing rounds per request",
                    z.clients, z.requests_per_client, z.servers, z.accounts_per_server,
                    z.work_rounds),
        in.reqs.size(),
        {Side{"troupe", [&in] { return troupe_side::service(in.s, in.reqs, in.ref); }, {}, {}},
         Side{"one thread", [&in] { return serial_side::service(in.s, in.reqs, in.ref); }, {}, {}},
         Side{"std::thread + mutex",
              [&in] { return mutex_side::service(in.s, in.reqs, in.ref); },
              {},
              {}}},
        {},
        {},
        {},
        {}};
  };
  if (selected("service")) cases.push_back(service_case("service", sizes));
  if (selected("service-bare")) {
    Sizes bare = sizes;
    bare.work_rounds = 0;
    cases.push_back(service_case("service-bare", bare));
  }
  if (selected("service-heavy")) {
    Sizes heavy = sizes;
    heavy.work_rounds = sizes.heavy_work_rounds;
    heavy.requests_per_client = sizes.heavy_requests_per_client;
    cases.push_back(service_case("service-heavy", heavy));
  }

  const double round_trip_start = bench::cross_core_round_trip_ns();
  for (Case& c : cases) {
    std::fprintf(stderr, "%-13s [%.0f ns]", c.name.c_str(), bench::cross_core_round_trip_ns());
    auto once = [](Side& side, bool timed) {
      double ms = side.run();
      troupe_side::settle();  // RM2
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (timed) {
        side.ms.push_back(ms);
        side.cores.push_back(last_run_cores);
      }
      std::fprintf(stderr, timed ? " %.0f" : " (%.0f)", ms);
      std::fflush(stderr);
    };
    for (Side& side : c.sides) once(side, false);  // RM1: warm-up
    c.before = troupe::stats();
    c.cpu_before = cpu_sample();
    for (int r = 0; r < runs; ++r) {
      std::fprintf(stderr, " |");
      for (std::size_t k = 0; k < c.sides.size(); ++k)
        once(c.sides[(k + static_cast<std::size_t>(r)) % c.sides.size()], true);
    }
    c.after = troupe::stats();
    c.cpu_after = cpu_sample();
    std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

  std::printf(
      "threads: %zu (troupe pool: %zu; the std::thread + mutex side: %zu std::threads); "
      "medians of %d runs, (min - max), ms%s\n"
      "cross-core round trip (bench_args.hpp): %.0f ns at the start, %.0f ns at the end\n\n",
      threads, troupe::stats().threads, threads, runs, quick ? "; --quick sizes" : "",
      round_trip_start, bench::cross_core_round_trip_ns());
  std::printf(
      "| program | troupe | one thread | std::thread + mutex | one thread / troupe | "
      "mutex / troupe | goal: >= 1.5 and >= 1.0 |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: | ---: | --- |\n");
  for (Case& c : cases) {
    const double ours = median(c.sides[0].ms), serial = median(c.sides[1].ms),
                 mutex = median(c.sides[2].ms);
    const double vs_serial = serial / ours, vs_mutex = mutex / ours;
    std::printf("| %s | %s | %s | %s | %.2f | %.2f | %s |\n", c.name.c_str(),
                cell(c.sides[0].ms).c_str(), cell(c.sides[1].ms).c_str(),
                cell(c.sides[2].ms).c_str(), vs_serial, vs_mutex,
                vs_serial >= 1.5 && vs_mutex >= 1.0 ? "met"
                : vs_serial >= 1.5                  ? "not met (mutex)"
                : vs_mutex >= 1.0                   ? "not met (one thread)"
                                                    : "not met (both)");
  }
  std::printf("\n");
  for (Case& c : cases) {
    // Every run of every side in the timed rounds: only troupe's side
    // schedules on the pool, so the counters are its own.
    const double n = runs;
    const double wall = c.cpu_after.wall - c.cpu_before.wall;
    const double others = std::max(0.0, (c.cpu_after.machine_busy - c.cpu_before.machine_busy) -
                                            (c.cpu_after.self - c.cpu_before.self)) /
                          wall;
    std::string per_request;
    if (c.requests > 0)
      per_request = fmt::format(" ({:.2f} us per request on one thread)",
                                median(c.sides[1].ms) * 1e3 / static_cast<double>(c.requests));
    std::printf(
        "- %s: %s%s. troupe::stats() per timed troupe run: %.0f behaviours run, %.0f "
        "stolen, %.0f sleeps, %.0f wake-ups. Other processes took %.2f of the machine's "
        "%u cores during the timed runs; cores this process used (CPU / wall, median): "
        "troupe %.2f, one thread %.2f, std::thread + mutex %.2f.\n",
        c.name.c_str(), c.what.c_str(), per_request.c_str(), (c.after.run - c.before.run) / n,
        (c.after.stolen - c.before.stolen) / n, (c.after.sleeps - c.before.sleeps) / n,
        (c.after.wakes - c.before.wakes) / n, others, std::thread::hardware_concurrency(),
        median(c.sides[0].cores), median(c.sides[1].cores), median(c.sides[2].cores));
  }
  return 0;
}
