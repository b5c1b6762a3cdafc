// tests/shm/worker.cpp: the process the shm tests spawn (an unrelated
// process: exec'd, it opens the heap by name or from a passed fd).
//
// Modes (argv[1]):
//   stress <name> <worker> <seed>     shadow-table stress (shm_test_util.hpp)
//   open-check <name>                  reads root "msg", answers in root "reply"
//   open-fd <fd>                       open_fd, answers in root "fdreply"
//   hold <name> <unpublished> <published>  allocates, sets root "ready", sleeps
//   churn <name> <seconds>             alloc/publish/free/trim loop (fault points)
//   grow <name> <blocks>               allocates 64 KiB blocks, root "grown"
//   increment <name> <n>               n times: Dict::increment of "k" in root
//                                      dict "d", then fetch_add of its "acked"
// Exit codes: 0 done, 2 usage, 3 error (message on stderr), 4 check failed.
#include <fmt/format.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <random>
#include <thread>
#include <troupe/shm/heap.hpp>
#include <troupe/shm/objects.hpp>

#include "shm_test_util.hpp"

using troupe::shm::Heap;
using troupe::shm::Offset;
using namespace shm_test;

namespace {

int stress(const std::string& name, unsigned w, unsigned long seed) {
  Heap heap = Heap::open(name);
  auto* table = heap.ptr<Table>(heap.root("shadow"));
  if (!table) return 4;
  std::atomic<bool> failed{false};
  auto body = [&](unsigned t) {
    std::mt19937_64 rng(seed * 7919 + t);
    std::uint64_t counter = 0;
    Entry* entries = table->e[w][t];
    try {
      while (!table->stop.load(std::memory_order_acquire)) {
        Entry& e = entries[rng() % kEntries];
        std::uint64_t word = e.word.load(std::memory_order_relaxed);
        if ((word & 3) == kEmpty) {
          unsigned r = rng() % 100;
          std::size_t size = r < 90   ? 8 + rng() % 505
                             : r < 98 ? 513 + rng() % 7680
                                      : 8193 + rng() % 30000;
          Offset off = heap.allocate(size);
          std::uint64_t id =
              (std::uint64_t(::getpid()) << 24) ^ (std::uint64_t(t) << 60) ^ ++counter;
          auto* p = heap.ptr<unsigned char>(off);
          std::memcpy(p, &id, 8);
          if (size >= 16) std::memcpy(p + size - 8, &id, 8);  // the far end is ours too
          e.id.store(id, std::memory_order_relaxed);
          e.size.store(size, std::memory_order_relaxed);
          e.word.store(off | kAllocating, std::memory_order_release);
          heap.publish(off);
          e.word.store(off | kLive, std::memory_order_release);
        } else {
          Offset off = word & ~std::uint64_t{15};
          std::uint64_t id = 0;
          std::memcpy(&id, heap.ptr(off), 8);
          if (id != e.id.load(std::memory_order_relaxed)) {
            table->violations.fetch_add(1);
            fmt::print(stderr, "worker {}: block {:#x} carries id {:#x}, entry says {:#x}\n", w,
                       off, id, e.id.load());
          }
          e.word.store(off | kFreeing, std::memory_order_release);
          heap.free(off);
          e.word.store(0, std::memory_order_release);
        }
        table->ops[w].fetch_add(1, std::memory_order_relaxed);
      }
    } catch (const std::exception& ex) {
      fmt::print(stderr, "worker {} thread {}: {}\n", w, t, ex.what());
      failed = true;
    }
  };
  std::vector<std::thread> threads;
  for (unsigned t = 1; t < kThreads; ++t) threads.emplace_back(body, t);
  body(0);
  for (auto& th : threads) th.join();
  heap.close();
  return failed ? 3 : 0;
}

int open_check(const std::string& name) {
  // Map somewhere else than the parent on purpose.
  Heap heap = Heap::open(name, {.address_hint = test_hint(3)});
  Offset msg = heap.root("msg");
  if (!msg || std::strcmp(heap.ptr<char>(msg), "hello from the creator") != 0) return 4;
  Offset reply = heap.allocate(64);
  auto* r = heap.ptr<std::uint64_t>(reply);
  r[0] = reinterpret_cast<std::uint64_t>(heap.base());
  std::strcpy(reinterpret_cast<char*>(r + 1), "pong");
  heap.publish(reply);
  heap.set_root("reply", reply);
  heap.close();
  return 0;
}

int open_fd(int fd) {
  Heap heap = Heap::open_fd(fd);
  Offset b = heap.allocate(32);
  std::strcpy(heap.ptr<char>(b), "via-fd");
  heap.publish(b);
  heap.set_root("fdreply", b);
  heap.close();
  return 0;
}

int hold(const std::string& name, int unpublished, int published) {
  Heap heap = Heap::open(name);
  for (int i = 0; i < unpublished; ++i) heap.allocate(i % 10 == 0 ? 20000 : 16 + 8 * (i % 40));
  Offset list = heap.allocate(8 * (published + 1));
  auto* l = heap.ptr<std::uint64_t>(list);
  l[0] = static_cast<std::uint64_t>(published);
  for (int i = 0; i < published; ++i) {
    l[i + 1] = heap.allocate(100);
    heap.publish(l[i + 1]);
  }
  heap.publish(list);
  heap.set_root("held", list);
  heap.slot_words()[0].store(0xfeed);  // for the recovery hook to find
  heap.set_root("ready", 1);
  for (;;) ::pause();
}

int churn(const std::string& name, double seconds) {
  Heap heap = Heap::open(name);
  std::mt19937_64 rng(static_cast<unsigned long>(::getpid()));
  std::vector<Offset> live;
  auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  for (long i = 0; std::chrono::steady_clock::now() < until; ++i) {
    if (live.size() < 400 && rng() % 3 != 0) {
      unsigned r = rng() % 100;
      std::size_t size = r < 85   ? 16 + rng() % 400
                         : r < 95 ? 600 + rng() % 7000
                                  : 9000 + rng() % 40000;
      Offset off = heap.allocate(size);
      std::memset(heap.ptr(off), 0x5a, std::min<std::size_t>(size, 64));
      if (rng() % 2) heap.publish(off);
      live.push_back(off);
    } else if (!live.empty()) {
      std::size_t k = rng() % live.size();
      heap.free(live[k]);
      live[k] = live.back();
      live.pop_back();
    }
    if (i % 2000 == 1999) {
      for (Offset o : live) heap.free(o);
      live.clear();
      heap.flush_thread_cache();
      heap.trim();
    }
  }
  return 0;  // published blocks are left behind on purpose (the parent counts them)
}

int grow(const std::string& name, int blocks) {
  Heap heap = Heap::open(name);
  Offset list = heap.allocate(8 * (blocks + 1));
  auto* l = heap.ptr<std::uint64_t>(list);
  l[0] = static_cast<std::uint64_t>(blocks);
  for (int i = 0; i < blocks; ++i) {
    l[i + 1] = heap.allocate(65536);
    std::memset(heap.ptr(l[i + 1]), i & 0xff, 65536);
    heap.publish(l[i + 1]);
  }
  heap.publish(list);
  heap.set_root("grown", list);
  heap.close();
  return 0;
}

// Each increment is acknowledged after it returns: k - acked is 0 or 1 after
// a kill anywhere (the op in flight applied or not, never half or twice).
int increment(const std::string& name, long n) {
  using namespace troupe::shm;
  Heap heap = Heap::open(name);
  TxHeap& l = TxHeap::attach(heap);
  Dict d = root_dict(l, "d");
  Offset acked = atomically(l, [&](Tx& tx) { return d.payload_word(tx, "acked"); });
  for (long i = 0; i < n; ++i) {
    d.increment(l, "k", 1);
    l.fetch_add(acked, 1);
  }
  TxHeap::detach(heap);
  heap.close();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a test that fails early leaves no worker running
  if (argc < 3) return 2;
  std::string mode = argv[1];
  try {
    if (mode == "stress" && argc == 5)
      return stress(argv[2], static_cast<unsigned>(std::atoi(argv[3])), std::stoul(argv[4]));
    if (mode == "open-check") return open_check(argv[2]);
    if (mode == "open-fd") return open_fd(std::atoi(argv[2]));
    if (mode == "hold" && argc == 5) return hold(argv[2], std::atoi(argv[3]), std::atoi(argv[4]));
    if (mode == "churn" && argc == 4) return churn(argv[2], std::atof(argv[3]));
    if (mode == "grow" && argc == 4) return grow(argv[2], std::atoi(argv[3]));
    if (mode == "increment" && argc == 4) return increment(argv[2], std::atol(argv[3]));
  } catch (const std::exception& e) {
    fmt::print(stderr, "shm_worker {}: {}\n", mode, e.what());
    return 3;
  }
  return 2;
}
