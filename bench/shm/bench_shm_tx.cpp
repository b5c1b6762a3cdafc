// bench/shm/bench_shm_tx.cpp: shared-dict transactions from one and
// two processes, troupe beside Boost.Interprocess containers guarded by an
// interprocess_mutex, and single-word atomic increments beside std::atomic
// (the ceiling). Prints one markdown table; every number is the median of
// --runs runs (default 5) in million operations per second (all processes).
//
// Cases (the same work on every side):
//   increment      add 1 to the value of a random key among 10 000: troupe
//                  twice, as one atomic operation (Dict::increment, what
//                  Python's d.increment(k) runs) and as a transaction
//                  (atomically + Dict::add), beside the same Boost runs
//   read-mostly    90 % read a random key's value, 10 % increment one
//   atomic add     add 1 to one shared int (troupe: TxHeap::fetch_add)
// Processes are fork()ed; the troupe children open the heap by name (H2 of
// heap.hpp) and attach the transaction layer, the Boost ones open_only the
// segment; each reports "ready" and waits on a pipe for the start, so that
// setup is outside the timed region. Throughput = all ops / the parent's wall
// time from the start to the last child's "done".
//
// Rules (as bench/README.md): for each case and process count, one untimed
// warm-up per side, then the sides alternate run by run. Every run checks its
// result: the sum of the values (or the shared int) equals the number of
// increments (no lost update), else the program aborts. The header line
// says how many cores two processes got at once (a spin loop's speed-up):
// on a loaded machine where they take turns, the 2-process rows measure the
// cost per operation, not scaling.
//
// Usage: bench_shm_tx [--runs N] [--ops N] [--quick] [--case increment|read|atomic]
//                     [--procs N] [--side troupe|map|unordered|atomic]
// (--case, --procs and --side select a subset, e.g. for perf.)
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/containers/map.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/interprocess/sync/scoped_lock.hpp>
#include <boost/unordered_map.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <troupe/shm/objects.hpp>
#include <vector>

namespace bip = boost::interprocess;
using Clock = std::chrono::steady_clock;
using namespace troupe::shm;

namespace {

constexpr long kKeys = 10'000;
std::size_t g_ops = 1'000'000;  // per process per run
int g_runs = 5;
std::string g_case, g_side;  // empty: all
int g_procs = 0;             // 0: 1 and 2

enum class Work { increment, increment_tx, read_mostly, atomic_add };

struct Rng {
  std::uint64_t s;
  std::uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
};

// Runs `procs` fork()ed children: each calls body(child_index, start), and
// body calls start() once its setup is done; start() reports ready and
// returns when every child is ready and the parent gives the signal. Returns
// ops/s over all of them (g_ops each), timed from the signal to the last
// child's "done".
using Start = std::function<void()>;
double in_processes(int procs, const std::function<void(int, const Start&)>& body) {
  int go[2], back[2];
  if (::pipe(go) != 0 || ::pipe(back) != 0) std::abort();
  std::vector<pid_t> pids;
  for (int c = 0; c < procs; ++c) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(go[1]);
      ::close(back[0]);
      auto start = [&] {
        char ready = 1, b;
        if (::write(back[1], &ready, 1) != 1) ::_exit(4);
        if (::read(go[0], &b, 1) != 1) ::_exit(3);
      };
      body(c, start);
      char done = 1;
      if (::write(back[1], &done, 1) != 1) ::_exit(4);
      ::_exit(0);
    }
    pids.push_back(pid);
  }
  auto wait_all = [&] {
    for (int c = 0; c < procs; ++c) {
      char b = 0;
      if (::read(back[0], &b, 1) != 1) {
        std::fprintf(stderr, "a benchmark child exited early\n");
        std::exit(1);
      }
    }
  };
  wait_all();  // ready: heaps opened, layers attached
  char start[8] = {};
  auto t0 = Clock::now();
  if (::write(go[1], start, static_cast<std::size_t>(procs)) != procs) std::abort();
  wait_all();  // done
  double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  for (pid_t p : pids) {
    int st = 0;
    ::waitpid(p, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      std::fprintf(stderr, "a benchmark child failed (status %d)\n", st);
      std::exit(1);
    }
  }
  for (int f : {go[0], go[1], back[0], back[1]}) ::close(f);
  return static_cast<double>(g_ops) * procs / seconds;
}

void check_sum(const char* side, long long sum, int procs) {
  long long want = static_cast<long long>(g_ops) * procs;
  if (sum != want) {
    std::fprintf(stderr, "%s: sum %lld, expected %lld (lost updates)\n", side, sum, want);
    std::exit(1);
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// ---- troupe ----

double troupe_run(Work w, int procs) {
  CreateOptions o;
  o.initial_size = 8 << 20;
  o.max_size = 256 << 20;
  Heap h = Heap::create(o);
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d", 2 * kKeys);
  for (long i = 0; i < kKeys; i += 1000)
    atomically(l, [&](Tx& tx) {
      for (long k = i; k < i + 1000; ++k) d.set(tx, k, 0);
    });
  Offset counter = atomically(l, [&](Tx& tx) { return d.payload_word(tx, 0L); });
  std::string name = h.name();
  double r = in_processes(procs, [&](int c, const Start& start) {
    Heap mine = Heap::open(name);
    TxHeap& lm = TxHeap::attach(mine);
    start();
    Rng rng{0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(c + 1)};
    std::int64_t sink = 0;
    for (std::size_t i = 0; i < g_ops; ++i) {
      long k = static_cast<long>(rng.next() % kKeys);
      if (w == Work::atomic_add) {
        lm.fetch_add(counter, 1);
      } else if (w == Work::read_mostly && rng.next() % 10 != 0) {
        sink += atomically(lm, [&](Tx& tx) { return d.get_int(tx, k); });
      } else if (w == Work::increment) {
        d.increment(lm, k, 1);
      } else {
        atomically(lm, [&](Tx& tx) { d.add(tx, k, 1); });
      }
    }
    if (sink == -1) std::puts("");
    TxHeap::detach(mine);
    mine.close();
  });
  // No lost update: the sum of the values (or the counter) is the number of
  // increments.
  std::int64_t sum = atomically(l, [&](Tx& tx) {
    std::int64_t s = 0;
    d.for_each(tx, [&](const Value&, const Value& v) { s += v.as_int(); });
    return s;
  });
  if (w != Work::read_mostly) check_sum("troupe", sum, procs);
  TxHeap::detach(h);
  return r;
}

// ---- Boost.Interprocess ----

using Segment = bip::managed_shared_memory;
using PairAlloc = bip::allocator<std::pair<const long, long>, Segment::segment_manager>;
using BMap = bip::map<long, long, std::less<long>, PairAlloc>;
using BUMap = boost::unordered_map<long, long, boost::hash<long>, std::equal_to<long>, PairAlloc>;

template <class M>
double boost_run(Work w, int procs) {
  std::string name = fmt::format("troupe_bench_tx_{}", ::getpid());
  bip::shared_memory_object::remove(name.c_str());
  {
    Segment seg(bip::create_only, name.c_str(), 64 << 20);
    M* m;
    if constexpr (std::is_same_v<M, BMap>)
      m = seg.construct<M>("m")(std::less<long>(), seg.get_segment_manager());
    else
      m = seg.construct<M>("m")(2 * kKeys, boost::hash<long>(), std::equal_to<long>(),
                                seg.get_segment_manager());
    for (long k = 0; k < kKeys; ++k) m->emplace(k, 0);
    seg.construct<bip::interprocess_mutex>("mu")();
    seg.construct<std::atomic<long>>("ceiling")(0);
  }
  double r = in_processes(procs, [&](int c, const Start& start) {
    Segment seg(bip::open_only, name.c_str());
    M* m = seg.find<M>("m").first;
    auto* mu = seg.find<bip::interprocess_mutex>("mu").first;
    auto* ceiling = seg.find<std::atomic<long>>("ceiling").first;
    start();
    Rng rng{0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(c + 1)};
    long sink = 0;
    for (std::size_t i = 0; i < g_ops; ++i) {
      long k = static_cast<long>(rng.next() % kKeys);
      if (w == Work::atomic_add) {
        ceiling->fetch_add(1);
      } else if (w == Work::read_mostly && rng.next() % 10 != 0) {
        bip::scoped_lock<bip::interprocess_mutex> lk(*mu);
        sink += m->find(k)->second;
      } else {
        bip::scoped_lock<bip::interprocess_mutex> lk(*mu);
        ++m->find(k)->second;
      }
    }
    if (sink == -1) std::puts("");
  });
  {
    Segment seg(bip::open_only, name.c_str());
    long long sum = 0;
    if (w == Work::atomic_add) {
      sum = seg.find<std::atomic<long>>("ceiling").first->load();
    } else {
      for (auto& kv : *seg.find<M>("m").first) sum += kv.second;
    }
    if (w != Work::read_mostly)
      check_sum(w == Work::atomic_add ? "std::atomic" : "Boost", sum, procs);
  }
  bip::shared_memory_object::remove(name.c_str());
  return r;
}

// One comparison: each side warmed up once (untimed), then the sides run
// alternately, --runs times; returns each side's median.
std::vector<double> alternate(const std::vector<std::function<double()>>& sides) {
  for (auto& side : sides) side();  // warm-up
  std::vector<std::vector<double>> r(sides.size());
  for (int i = 0; i < g_runs; ++i)
    for (std::size_t k = 0; k < sides.size(); ++k) r[k].push_back(sides[k]());
  std::vector<double> out;
  for (auto& v : r) out.push_back(median(v));
  return out;
}

bool want_side(const char* name) { return g_side.empty() || g_side == name; }
bool want_procs(int p) { return g_procs == 0 || g_procs == p; }

std::string cell(double v) { return v > 0 ? fmt::format("{:.2f}", v / 1e6) : "-"; }
std::string ratio(double a, double b) {
  return a > 0 && b > 0 ? fmt::format("{:.2f}x", a / b) : "-";
}

// How many cores two processes really get at once: the same spin loop in
// one process, then in two (2.0: two free cores; 1.0: they take turns on
// one, and the 2-process rows measure cost per op, not scaling).
double parallelism() {
  auto spin = [](int procs) {
    g_ops = 1;  // in_processes reports procs / seconds; we want seconds
    double rate = in_processes(procs, [](int, const Start& start) {
      start();
      volatile std::uint64_t x = 0;
      for (std::uint64_t i = 0; i < 100'000'000; ++i) x = x + i;
    });
    return procs / rate;
  };
  std::size_t ops = g_ops;
  double one = spin(1), two = spin(2);
  g_ops = ops;
  return 2 * one / two;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      g_ops = 200'000;
      g_runs = 3;
    } else if (a == "--runs" && i + 1 < argc) {
      g_runs = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--ops" && i + 1 < argc) {
      g_ops = static_cast<std::size_t>(std::atoll(argv[++i]));
    } else if (a == "--case" && i + 1 < argc) {
      g_case = argv[++i];
    } else if (a == "--procs" && i + 1 < argc) {
      g_procs = std::atoi(argv[++i]);
    } else if (a == "--side" && i + 1 < argc) {
      g_side = argv[++i];
    } else {
      std::fprintf(stderr,
                   "usage: bench_shm_tx [--runs N] [--ops N] [--quick] "
                   "[--case increment|read|atomic] [--procs N] "
                   "[--side troupe|map|unordered|atomic]\n");
      return 2;
    }
  }
  std::printf(
      "bench_shm_tx: %zu ops per process, median of %d runs (sides alternating after one "
      "warm-up each), Mop/s (all processes)\n\n",
      g_ops, g_runs);
  std::printf("Two processes ran %.2fx as fast as one on a spin loop (2.00: two free cores).\n\n",
              parallelism());
  std::printf(
      "| case | procs | troupe | Boost map+mutex | Boost unordered_map+mutex | "
      "std::atomic | troupe / peer |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- |\n");
  std::vector<int> procs;
  for (int p : {1, 2})
    if (want_procs(p)) procs.push_back(p);
  if (g_procs > 2) procs.push_back(g_procs);
  auto none = [] { return 0.0; };
  auto side = [&](const char* name, std::function<double()> f) {
    return want_side(name) ? std::move(f) : none;
  };
  auto row = [](const char* what, int p, double t, double m, double u) {
    std::printf("| %s | %d | %s | %s | %s | - | %s map, %s unordered |\n", what, p,
                cell(t).c_str(), cell(m).c_str(), cell(u).c_str(), ratio(t, m).c_str(),
                ratio(t, u).c_str());
    std::fflush(stdout);
  };
  if (g_case.empty() || g_case == "increment")
    for (int p : procs) {
      auto res = alternate({
          side("troupe", [&] { return troupe_run(Work::increment, p); }),
          side("troupe", [&] { return troupe_run(Work::increment_tx, p); }),
          side("map", [&] { return boost_run<BMap>(Work::increment, p); }),
          side("unordered", [&] { return boost_run<BUMap>(Work::increment, p); }),
      });
      row("increment, one op (10 000 keys)", p, res[0], res[2], res[3]);
      row("increment in a transaction", p, res[1], res[2], res[3]);
    }
  if (g_case.empty() || g_case == "read")
    for (int p : procs) {
      auto res = alternate({
          side("troupe", [&] { return troupe_run(Work::read_mostly, p); }),
          side("map", [&] { return boost_run<BMap>(Work::read_mostly, p); }),
          side("unordered", [&] { return boost_run<BUMap>(Work::read_mostly, p); }),
      });
      row("read-mostly 90 % (10 000 keys)", p, res[0], res[1], res[2]);
    }
  if (g_case.empty() || g_case == "atomic")
    for (int p : procs) {
      auto res = alternate({
          want_side("troupe")
              ? std::function<double()>([&] { return troupe_run(Work::atomic_add, p); })
              : none,
          want_side("atomic")
              ? std::function<double()>([&] { return boost_run<BMap>(Work::atomic_add, p); })
              : none,
      });
      std::printf("| atomic add (one int) | %d | %s | - | - | %s | %s |\n", p, cell(res[0]).c_str(),
                  cell(res[1]).c_str(), ratio(res[0], res[1]).c_str());
      std::fflush(stdout);
    }
  return 0;
}
