// bench/shm_objects/bench_shm_tx.cpp: shared-dict transactions from one and
// two processes, troupe beside Boost.Interprocess containers guarded by an
// interprocess_mutex, and single-word atomic increments beside std::atomic
// (the ceiling). Prints one markdown table; every number is the median of
// --runs runs (default 5) in million operations per second (all processes).
//
// Cases (the same work on every side):
//   increment      add 1 to the value of a random key among 10 000
//   read-mostly    90 % read a random key's value, 10 % increment one
//   atomic add     add 1 to one shared int (troupe: TxHeap::fetch_add)
// Processes are fork()ed; the troupe children open the heap by name (H2 of
// heap.hpp), the Boost ones open_only the segment. The children wait on a
// pipe for the start; throughput = all ops / the parent's wall time from the
// start to the last child's "done".
// The troupe side checks the dict's sum afterwards (no lost increments).
//
// Usage: bench_shm_tx [--runs N] [--ops N] [--quick]
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

enum class Work { increment, read_mostly, atomic_add };

struct Rng {
  std::uint64_t s;
  std::uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
};

// Runs body(child_index) in `procs` fork()ed children started together;
// returns ops/s over all of them (ops each).
double in_processes(int procs, const std::function<void(int)>& body) {
  int go[2], back[2];
  if (::pipe(go) != 0 || ::pipe(back) != 0) std::abort();
  std::vector<pid_t> pids;
  for (int c = 0; c < procs; ++c) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(go[1]);
      char b;
      if (::read(go[0], &b, 1) != 1) ::_exit(3);
      body(c);
      char done = 1;
      if (::write(back[1], &done, 1) != 1) ::_exit(4);
      ::_exit(0);
    }
    pids.push_back(pid);
  }
  ::usleep(20000);  // children set up (open the segment) before the start
  char start[8] = {};
  auto t0 = Clock::now();
  if (::write(go[1], start, static_cast<std::size_t>(procs)) != procs) std::abort();
  for (int c = 0; c < procs; ++c) {
    char done = 0;
    if (::read(back[0], &done, 1) != 1) std::abort();
  }
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
  double r = in_processes(procs, [&](int c) {
    Heap mine = Heap::open(name);
    TxHeap& lm = TxHeap::attach(mine);
    Rng rng{0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(c + 1)};
    std::int64_t sink = 0;
    for (std::size_t i = 0; i < g_ops; ++i) {
      long k = static_cast<long>(rng.next() % kKeys);
      if (w == Work::atomic_add) {
        lm.fetch_add(counter, 1);
      } else if (w == Work::read_mostly && rng.next() % 10 != 0) {
        sink += atomically(lm, [&](Tx& tx) { return d.get_int(tx, k); });
      } else {
        atomically(lm, [&](Tx& tx) { d.add(tx, k, 1); });
      }
    }
    if (sink == -1) std::puts("");
    TxHeap::detach(mine);
    mine.close();
  });
  // No lost update: the sum of the values is the number of increments.
  std::int64_t sum = atomically(l, [&](Tx& tx) {
    std::int64_t s = 0;
    d.for_each(tx, [&](const Value&, const Value& v) { s += v.as_int(); });
    return s;
  });
  if (w != Work::read_mostly && sum != static_cast<std::int64_t>(g_ops) * procs) {
    std::fprintf(stderr, "troupe: sum %lld, expected %lld\n", static_cast<long long>(sum),
                 static_cast<long long>(g_ops) * procs);
    std::exit(1);
  }
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
  double r = in_processes(procs, [&](int c) {
    Segment seg(bip::open_only, name.c_str());
    M* m = seg.find<M>("m").first;
    auto* mu = seg.find<bip::interprocess_mutex>("mu").first;
    auto* ceiling = seg.find<std::atomic<long>>("ceiling").first;
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
  bip::shared_memory_object::remove(name.c_str());
  return r;
}

template <class F>
double med(F f) {
  std::vector<double> v;
  for (int i = 0; i < g_runs; ++i) v.push_back(f());
  return median(v);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      g_ops = 200'000;
    } else if (a == "--runs" && i + 1 < argc) {
      g_runs = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--ops" && i + 1 < argc) {
      g_ops = static_cast<std::size_t>(std::atoll(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: bench_shm_tx [--runs N] [--ops N] [--quick]\n");
      return 2;
    }
  }
  std::printf("bench_shm_tx: %zu ops per process, median of %d runs, Mop/s (all processes)\n\n",
              g_ops, g_runs);
  std::printf(
      "| case | procs | troupe | Boost map+mutex | Boost unordered_map+mutex | "
      "std::atomic | troupe / peer |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- |\n");
  for (Work w : {Work::increment, Work::read_mostly}) {
    for (int p : {1, 2}) {
      double t = med([&] { return troupe_run(w, p); });
      double m = med([&] { return boost_run<BMap>(w, p); });
      double u = med([&] { return boost_run<BUMap>(w, p); });
      std::printf(
          "| %s (10 000 keys) | %d | %.2f | %.2f | %.2f | - | %.2fx map, %.2fx unordered |\n",
          w == Work::increment ? "increment" : "read-mostly 90 %", p, t / 1e6, m / 1e6, u / 1e6,
          t / m, t / u);
      std::fflush(stdout);
    }
  }
  for (int p : {1, 2}) {
    double t = med([&] { return troupe_run(Work::atomic_add, p); });
    double a = med([&] { return boost_run<BMap>(Work::atomic_add, p); });
    std::printf("| atomic add (one int) | %d | %.2f | - | - | %.2f | %.2fx |\n", p, t / 1e6,
                a / 1e6, t / a);
    std::fflush(stdout);
  }
  return 0;
}
