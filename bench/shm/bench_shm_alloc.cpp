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
// Heap::open, Boost: open_only), wait on a pipe for the start, and report the
// time they took; throughput = all pairs / the slower child's time.
//
// Usage: bench_shm_alloc [--runs N] [--pairs N]
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
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

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--runs") g_runs = std::max(1, std::atoi(argv[i + 1]));
    if (a == "--pairs") g_pairs = std::strtoull(argv[i + 1], nullptr, 10);
  }
  troupe::shm::CreateOptions opt;
  opt.max_size = std::size_t{256} << 20;
  opt.initial_size = std::size_t{4} << 20;
  troupe::shm::Heap heap = troupe::shm::Heap::create(opt);
  const std::string bname = fmt::format("troupe_bench_bip_{}", ::getpid());
  bip::shared_memory_object::remove(bname.c_str());
  bip::managed_shared_memory seg(bip::create_only, bname.c_str(), std::size_t{256} << 20);

  std::vector<Row> rows;
  auto measure = [&](auto fn) {
    std::vector<double> v;
    fn();  // warm-up
    for (int r = 0; r < g_runs; ++r) v.push_back(fn());
    return median(v);
  };
  for (Work w : {Work::pairs, Work::batch}) {
    const char* wname = w == Work::pairs ? "pairs 64 B" : "batch 16-512 B";
    double t = measure([&] { return troupe_one(heap, w, g_pairs); });
    double m = measure([&] { return malloc_one(w, g_pairs); });
    double b = measure([&] { return boost_one(seg, w, g_pairs); });
    rows.push_back({fmt::format("1 process, {}", wname), "malloc/free", g_pairs / t, g_pairs / m});
    rows.push_back(
        {fmt::format("1 process, {}", wname), "Boost.Interprocess", g_pairs / t, g_pairs / b});
    auto troupe2 = [&] {
      return in_processes(2, [&](auto wait_start) {
        troupe::shm::Heap mine = troupe::shm::Heap::open(heap.name());
        troupe_one(mine, w, g_pairs / 8);  // warm the slot's cache
        wait_start();
        double s = troupe_one(mine, w, g_pairs);
        mine.close();
        return s;
      });
    };
    auto boost2 = [&] {
      return in_processes(2, [&](auto wait_start) {
        bip::managed_shared_memory mine(bip::open_only, bname.c_str());
        wait_start();
        return boost_one(mine, w, g_pairs);
      });
    };
    double t2 = measure(troupe2);
    double b2 = measure(boost2);
    rows.push_back({fmt::format("2 processes, {}", wname), "Boost.Interprocess", 2 * g_pairs / t2,
                    2 * g_pairs / b2});
  }
  bip::shared_memory_object::remove(bname.c_str());

  fmt::print("alloc+free pairs per second, median of {} runs, {} pairs per process per run\n\n",
             g_runs, g_pairs);
  fmt::print("| case | troupe (M pairs/s) | peer | peer (M pairs/s) | ratio troupe/peer |\n");
  fmt::print("|---|---:|---|---:|---:|\n");
  for (auto& r : rows)
    fmt::print("| {} | {:.1f} | {} | {:.1f} | {:.2f} |\n", r.name, r.troupe / 1e6, r.peer,
               r.other / 1e6, r.troupe / r.other);
  return 0;
}
