// bench/shm/bench_shm_alloc.cpp: allocation throughput (alloc+free pairs per
// second) of troupe's shared heap beside malloc/free in one process and beside
// Boost.Interprocess managed_shared_memory from one and two processes.
// Prints one markdown table: case, troupe, peer, ratio (troupe / peer); each
// number is the median of --runs runs (default 5).
//
// Workloads (the same for both sides, each block's first byte is written):
//   pairs 64 B     allocate one 64-byte block, free it, repeat
//   batch 16-512 B allocate 32 blocks of mixed sizes (16..512), free them all
// Two processes: fork()ed children open the segment by name (troupe:
// Heap::open, Boost: open_only), warm up, wait on a pipe for the start, and
// report the time they took; throughput = all pairs / the slower child's time.
//
// Rules (as bench/README.md): one untimed warm-up per side, then the sides
// alternate run by run; after every run each side is checked (troupe: no live
// bytes left and verify() clean; Boost: free memory back to where it was and
// check_sanity()), a wrong state aborts the program.
//
// Usage: bench_shm_alloc [--runs N] [--pairs N] [--quick]
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <troupe/shm/heap.hpp>
#include <vector>

namespace bip = boost::interprocess;
using Clock = std::chrono::steady_clock;

namespace {

std::size_t g_pairs = 4'000'000;  // per process per run
int g_runs = 5;
constexpr int kBatch = 32;

std::vector<std::size_t> make_sizes() {
  std::mt19937 rng(42);
  std::vector<std::size_t> s(4096);
  for (auto& v : s) v = 16 + rng() % 497;
  return s;
}
const std::vector<std::size_t> g_sizes = make_sizes();

// One allocator's hot loop. A: alloc(size) -> handle, F: free(handle),
// T: touch(handle) writes the first byte.
template <class A, class F, class T>
void run_pairs(std::size_t pairs, A alloc, F free, T touch) {
  for (std::size_t i = 0; i < pairs; ++i) {
    auto h = alloc(64);
    touch(h);
    free(h);
  }
}

template <class A, class F, class T>
void run_batch(std::size_t pairs, A alloc, F free, T touch) {
  using H = decltype(alloc(1));
  H held[kBatch];
  std::size_t k = 0;
  for (std::size_t done = 0; done < pairs; done += kBatch) {
    for (int j = 0; j < kBatch; ++j) {
      held[j] = alloc(g_sizes[k++ & 4095]);
      touch(held[j]);
    }
    for (int j = 0; j < kBatch; ++j) free(held[j]);
  }
}

enum class Work { pairs, batch };

template <class A, class F, class T>
double seconds_for(Work w, std::size_t pairs, A alloc, F free, T touch) {
  auto t0 = Clock::now();
  if (w == Work::pairs)
    run_pairs(pairs, alloc, free, touch);
  else
    run_batch(pairs, alloc, free, touch);
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// ---- troupe ----
double troupe_one(troupe::shm::Heap& heap, Work w, std::size_t pairs) {
  return seconds_for(
      w, pairs, [&](std::size_t n) { return heap.allocate(n); },
      [&](troupe::shm::Offset o) { heap.free(o); },
      [&](troupe::shm::Offset o) { *heap.ptr<volatile char>(o) = 1; });
}

// ---- Boost.Interprocess, as its documentation uses it ----
double boost_one(bip::managed_shared_memory& seg, Work w, std::size_t pairs) {
  return seconds_for(
      w, pairs, [&](std::size_t n) { return seg.allocate(n); }, [&](void* p) { seg.deallocate(p); },
      [](void* p) { *static_cast<volatile char*>(p) = 1; });
}

double malloc_one(Work w, std::size_t pairs) {
  return seconds_for(
      w, pairs, [](std::size_t n) { return std::malloc(n); }, [](void* p) { std::free(p); },
      [](void* p) { *static_cast<volatile char*>(p) = 1; });
}

// Runs `child(w)` in `procs` forked processes started together; returns the
// slowest child's seconds.
template <class Child>
double in_processes(int procs, Child child) {
  int go[2], back[2];
  if (::pipe(go) != 0 || ::pipe(back) != 0) std::abort();
  std::vector<pid_t> pids;
  for (int p = 0; p < procs; ++p) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(go[1]);
      double secs = child([&] {
        char c;
        if (::read(go[0], &c, 1) != 1) ::_exit(2);
      });
      if (::write(back[1], &secs, sizeof secs) != sizeof secs) ::_exit(2);
      ::_exit(0);  // never run the parent's destructors (troupe H2)
    }
    pids.push_back(pid);
  }
  ::usleep(200000);  // let the children open the segment
  char start[8] = {};
  if (::write(go[1], start, static_cast<std::size_t>(procs)) != procs) std::abort();
  double slowest = 0;
  for (int p = 0; p < procs; ++p) {
    double s = 0;
    if (::read(back[0], &s, sizeof s) != sizeof s) std::abort();
    slowest = std::max(slowest, s);
  }
  for (pid_t pid : pids) ::waitpid(pid, nullptr, 0);
  ::close(go[0]);
  ::close(go[1]);
  ::close(back[0]);
  ::close(back[1]);
  return slowest;
}

struct Row {
  std::string name, peer;
  double troupe, other;  // pairs per second
};

[[noreturn]] void wrong(const std::string& what) {
  std::fprintf(stderr, "bench_shm_alloc: WRONG RESULT: %s\n", what.c_str());
  std::abort();
}

void check_troupe(troupe::shm::Heap& heap) {
  heap.flush_thread_cache();
  auto st = heap.stats();
  if (st.live_bytes() != 0)
    wrong(
        fmt::format("troupe heap has {} live bytes after every block was freed", st.live_bytes()));
  if (auto problems = heap.verify(); !problems.empty()) wrong("troupe heap: " + problems.front());
}

void check_boost(bip::managed_shared_memory& seg, std::size_t free_at_start) {
  if (seg.get_free_memory() != free_at_start)
    wrong(fmt::format("Boost segment has {} free bytes, {} at start", seg.get_free_memory(),
                      free_at_start));
  if (!seg.check_sanity()) wrong("Boost segment failed check_sanity()");
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      g_runs = 1;
      g_pairs = 200'000;
    } else if (a == "--runs" && i + 1 < argc) {
      g_runs = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--pairs" && i + 1 < argc) {
      g_pairs = std::max<std::size_t>(kBatch, std::strtoull(argv[++i], nullptr, 10));
    } else {
      std::fprintf(stderr, "usage: bench_shm_alloc [--runs N] [--pairs N] [--quick]\n");
      return 2;
    }
  }
  troupe::shm::CreateOptions opt;
  opt.max_size = std::size_t{256} << 20;
  opt.initial_size = std::size_t{4} << 20;
  troupe::shm::Heap heap = troupe::shm::Heap::create(opt);
  const std::string bname = fmt::format("troupe_bench_bip_{}", ::getpid());
  bip::shared_memory_object::remove(bname.c_str());
  bip::managed_shared_memory seg(bip::create_only, bname.c_str(), std::size_t{256} << 20);
  const std::size_t boost_free = seg.get_free_memory();

  // Sides of one comparison: warmed up once each, then run alternately.
  auto alternate = [&](std::vector<std::function<double()>> sides) {
    std::vector<std::vector<double>> secs(sides.size());
    for (auto& side : sides) side();  // warm-up
    for (int r = 0; r < g_runs; ++r)
      for (std::size_t i = 0; i < sides.size(); ++i) secs[i].push_back(sides[i]());
    std::vector<double> med;
    for (auto& v : secs) med.push_back(median(v));
    return med;
  };

  std::vector<Row> rows;
  for (Work w : {Work::pairs, Work::batch}) {
    const char* wname = w == Work::pairs ? "pairs 64 B" : "batch 16-512 B";
    auto troupe1 = [&] {
      double s = troupe_one(heap, w, g_pairs);
      check_troupe(heap);
      return s;
    };
    auto malloc1 = [&] { return malloc_one(w, g_pairs); };
    auto boost1 = [&] {
      double s = boost_one(seg, w, g_pairs);
      check_boost(seg, boost_free);
      return s;
    };
    auto troupe2 = [&] {
      double s = in_processes(2, [&](auto wait_start) {
        troupe::shm::Heap mine = troupe::shm::Heap::open(heap.name());
        troupe_one(mine, w, g_pairs / 8);  // warm the slot's cache
        wait_start();
        double secs = troupe_one(mine, w, g_pairs);
        mine.flush_thread_cache();
        mine.close();
        return secs;
      });
      check_troupe(heap);
      return s;
    };
    auto boost2 = [&] {
      double s = in_processes(2, [&](auto wait_start) {
        bip::managed_shared_memory mine(bip::open_only, bname.c_str());
        boost_one(mine, w, g_pairs / 8);  // the same warm-up as troupe's children
        wait_start();
        return boost_one(mine, w, g_pairs);
      });
      check_boost(seg, boost_free);
      return s;
    };
    auto one = alternate({troupe1, malloc1, boost1});
    auto two = alternate({troupe2, boost2});
    const auto n = static_cast<double>(g_pairs);
    rows.push_back({fmt::format("1 process, {}", wname), "malloc/free", n / one[0], n / one[1]});
    rows.push_back(
        {fmt::format("1 process, {}", wname), "Boost.Interprocess", n / one[0], n / one[2]});
    rows.push_back({fmt::format("2 processes, {}", wname), "Boost.Interprocess", 2 * n / two[0],
                    2 * n / two[1]});
  }
  bip::shared_memory_object::remove(bname.c_str());

  fmt::print(
      "alloc+free pairs per second, median of {} runs (sides alternating), {} pairs per "
      "process per run\n\n",
      g_runs, g_pairs);
  fmt::print("| case | troupe (M pairs/s) | peer | peer (M pairs/s) | ratio troupe/peer |\n");
  fmt::print("|---|---:|---|---:|---:|\n");
  for (auto& r : rows)
    fmt::print("| {} | {:.1f} | {} | {:.1f} | {:.2f} |\n", r.name, r.troupe / 1e6, r.peer,
               r.other / 1e6, r.troupe / r.other);
  return 0;
}
