// bench/core/savina_main.cpp: bench_savina's command line, the run loop and
// the table. Owns the order of runs and the statistics; the cases themselves
// live in savina_troupe.cpp (ours) and savina_caf.cpp / savina_tbb_lock.cpp
// (the peers).
//
//   bench_savina [--runs N] [--case NAME[,NAME...]] [--quick] [--threads N] [--warm]
//
// Invariants:
//   SN1. Each side of a case runs once untimed (warm-up), then N timed runs,
//       troupe and its peers alternating run by run, so that load from other
//       processes falls on both sides alike. The table shows medians.
//   SN2. Runs are 50 ms apart, so the threads of the previous run's runtime
//       are asleep again.
//   SN3. Every runtime gets the same number of worker threads (--threads,
//       default: the cores).
//   SN4. --warm replaces SN1's alternation and SN2's pause: each side runs
//       its N timed runs back to back (troupe's first, then each peer's), so
//       the table shows a program that keeps using its runtime (threads
//       awake, caches its own), with less noise from the machine.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench_args.hpp"
#include "savina.hpp"

namespace savina {

void fail(const char* file, int line, const char* cond, const std::string& what) {
  std::fprintf(stderr, "\nbench_savina: WRONG RESULT at %s:%d: %s\n  %s\n", file, line, cond,
               what.c_str());
  std::fflush(stderr);
  std::abort();
}

std::vector<Transfer> make_transfers(const Sizes& s, std::uint64_t seed) {
  std::vector<Transfer> out;
  out.reserve(static_cast<std::size_t>(s.bank_transfers));
  std::uint64_t rng = seed | 1;
  auto n = static_cast<std::uint64_t>(s.bank_accounts);
  for (std::int64_t i = 0; i < s.bank_transfers; ++i) {
    auto src = static_cast<std::uint32_t>(xorshift(rng) % n);
    auto dst = static_cast<std::uint32_t>(xorshift(rng) % (n - 1));
    if (dst >= src) ++dst;  // uniform over the other accounts
    out.push_back({src, dst, static_cast<std::int64_t>(xorshift(rng) % 1000) + 1});
  }
  return out;
}

namespace {

struct Side {
  std::string name;
  std::function<double()> run;
  std::function<void()> settle;
  std::vector<double> ms;
};

struct Case {
  std::string name;
  Side ours;
  std::vector<Side> peers;
};

using bench::median;

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "bench_savina: %s\n"
               "usage: bench_savina [--runs N] [--case NAME[,NAME...]] [--quick] [--threads N] "
               "[--warm]\n"
               "cases: pingpong counting fjthrput-bounded fjthrput fjcreate threadring chameneos big "
               "banking banking-tellers skynet fib\n",
               why);
  std::exit(2);
}

}  // namespace
}  // namespace savina

int main(int argc, char** argv) {
  using namespace savina;
  bool warm = false;  // SN4
  const bench::Args args =
      bench::parse_args(argc, argv, usage, [&](std::string_view flag, const auto&) {
        if (flag != "--warm") return false;
        warm = true;
        return true;
      });
  const int runs = args.runs;
  const bool quick = args.quick;
  const std::size_t threads = args.threads;

  Sizes sizes;
  if (quick) sizes = sizes.quick();
  sizes.threads = threads;
  const std::vector<Transfer> transfers = make_transfers(sizes, 0x5eed);

  troupe_side::start(threads);  // SN3
  caf_side::start(threads);
  tbb_side::start(threads);

  auto troupe_settle = [] { troupe_side::settle(); };
  auto caf_settle = [] { caf_side::settle(); };
  auto nothing = [] {};
  const Sizes& s = sizes;
  auto ours = [&](double (*f)(const Sizes&)) {
    return Side{"troupe", [f, &s] { return f(s); }, troupe_settle, {}};
  };
  auto caf = [&](double (*f)(const Sizes&)) {
    return Side{"CAF 0.17", [f, &s] { return f(s); }, caf_settle, {}};
  };

  std::vector<Case> cases;
  cases.push_back({"pingpong", ours(troupe_side::pingpong), {caf(caf_side::pingpong)}});
  cases.push_back({"counting", ours(troupe_side::counting), {caf(caf_side::counting)}});
  // troupe with bounded mailboxes, beside the same CAF program (which has
  // none). Before the unbounded case: that one leaves the chunks of its
  // queued behaviours in the allocator (SA3); with free lists threaded
  // through the blocks that slowed a bounded run after it 4x, with bitmap
  // chunks (SA10) about 7 % (550 ms first, 576-605 ms after).
  cases.push_back(
      {"fjthrput-bounded", ours(troupe_side::fjthrput_bounded), {caf(caf_side::fjthrput)}});
  cases.push_back({"fjthrput", ours(troupe_side::fjthrput), {caf(caf_side::fjthrput)}});
  cases.push_back({"fjcreate", ours(troupe_side::fjcreate), {caf(caf_side::fjcreate)}});
  cases.push_back({"threadring", ours(troupe_side::threadring), {caf(caf_side::threadring)}});
  cases.push_back({"chameneos", ours(troupe_side::chameneos), {caf(caf_side::chameneos)}});
  cases.push_back({"big", ours(troupe_side::big), {caf(caf_side::big)}});
  cases.push_back(
      {"banking",
       Side{"troupe", [&] { return troupe_side::banking(s, transfers); }, troupe_settle, {}},
       {Side{"CAF 0.17", [&] { return caf_side::banking(s, transfers); }, caf_settle, {}},
        Side{"std::scoped_lock", [&] { return lock_side::banking(s, transfers); }, nothing, {}}}});
  cases.push_back(
      {"banking-tellers",
       Side{"troupe", [&] { return troupe_side::banking_tellers(s, transfers); }, troupe_settle, {}},
       {Side{"std::scoped_lock", [&] { return lock_side::banking(s, transfers); }, nothing, {}}}});
  cases.push_back({"skynet", ours(troupe_side::skynet), {caf(caf_side::skynet)}});
  cases.push_back({"fib",
                   ours(troupe_side::fib),
                   {Side{"oneTBB task_group", [&] { return tbb_side::fib(s); }, nothing, {}}}});

  // --case takes one name or a comma-separated list.
  for (const std::string& w : args.cases)
    if (std::none_of(cases.begin(), cases.end(), [&](const Case& c) { return c.name == w; }))
      usage("unknown case");
  auto selected = [&](const Case& c) { return args.selected(c.name); };

  // The header first and each case's rows as soon as it is done, so that a
  // case that dies still leaves the rows before it.
  std::printf(
      "threads: %zu per runtime (troupe pool, CAF scheduler.max-threads, oneTBB "
      "max_allowed_parallelism, banking std::threads); medians of %d runs%s%s\n"
      "cross-core round trip at the start: %.0f ns (bench_args.hpp; each case's is on stderr)\n\n",
      threads, runs, quick ? "; --quick sizes (10x smaller)" : "",
      warm ? "; --warm: each side's runs back to back" : "", bench::cross_core_round_trip_ns());
  std::printf("| case | troupe ms | peer | peer ms | troupe/peer |\n");
  std::printf("| --- | ---: | --- | ---: | ---: |\n");
  std::fflush(stdout);
  for (Case& c : cases) {
    if (!selected(c)) continue;
    std::fprintf(stderr, "%-11s [%.0f ns]", c.name.c_str(), bench::cross_core_round_trip_ns());
    auto once = [warm](Side& side, bool timed) {
      double ms = side.run();
      side.settle();
      // Let every runtime's threads go quiet (CAF's workers poll for ~25 ms,
      // oneTBB's spin) before the next run, so no side pays for another.
      if (!warm) std::this_thread::sleep_for(std::chrono::milliseconds(50));  // SN2
      if (timed) side.ms.push_back(ms);
      std::fprintf(stderr, timed ? " %.0f" : " (%.0f)", ms);
      std::fflush(stderr);
    };
    if (warm) {  // SN4
      std::vector<Side*> order{&c.ours};
      for (Side& p : c.peers) order.push_back(&p);
      for (Side* side : order) {
        std::fprintf(stderr, " |");
        once(*side, false);
        for (int r = 0; r < runs; ++r) once(*side, true);
      }
    } else {
      once(c.ours, false);  // SN1: warm-up
      for (Side& p : c.peers) once(p, false);
      for (int r = 0; r < runs; ++r) {
        std::fprintf(stderr, " |");
        once(c.ours, true);
        for (Side& p : c.peers) once(p, true);
      }
    }
    std::fprintf(stderr, "\n");
    std::fflush(stderr);
    double ours_ms = median(c.ours.ms);
    for (Side& p : c.peers) {
      double peer_ms = median(p.ms);
      std::printf("| %s | %.1f | %s | %.1f | %.2f |\n", c.name.c_str(), ours_ms, p.name.c_str(),
                  peer_ms, ours_ms / peer_ms);
    }
    std::fflush(stdout);
  }

  std::printf("\ncross-core round trip at the end: %.0f ns\n", bench::cross_core_round_trip_ns());
  caf_side::stop();
  tbb_side::stop();
  return 0;
}
