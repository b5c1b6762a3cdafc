// bench/core/realwork_plain.cpp: the baselines of bench_realwork, written as
// their own documentation and common practice write them.
//
//   serial bfs:     the textbook queue BFS on one thread: a level array, a
//                   vector used as the FIFO queue.
//   mutex bfs:      std::threads (as many as troupe's pool has) over the same
//                   partitions as troupe's side, one std::mutex per partition
//                   guarding its levels and next frontier; per level, threads
//                   claim partitions from an atomic counter and expand their
//                   frontiers, buffering discovered vertices per owner
//                   (flushed at kBfsFlush and at the end, each batch applied
//                   under the owner's lock, std::lock_guard); a std::barrier
//                   ends the level, and its completion step decides whether
//                   another level follows.
//   serial service: one loop over the requests in the order the clients'
//                   closed loops issue them (every client's first request,
//                   then every client's second, ...), replies counted.
//   mutex service:  std::threads, the clients split among them (client c on
//                   thread c % threads), one std::mutex per server: a query or
//                   move under std::lock_guard, a cross-server transfer under
//                   std::scoped_lock over both servers' mutexes (deadlock-free
//                   by std::lock's algorithm).
//
// Invariants:
//   RP1. The mutex bfs's frontier of level L is lists[L % 2] of a partition,
//       only read during level L (no lock); discoveries go to lists[(L+1) % 2]
//       under the partition's mutex; the barrier's completion step clears the
//       frontiers. The levels are written only under their partition's mutex.
//   RP2. Every shared server is touched only under its mutex; a reply's
//       counters live in the issuing thread's own tally.
#include <algorithm>
#include <atomic>
#include <barrier>
#include <mutex>
#include <thread>
#include <vector>

#include "realwork.hpp"

namespace realwork {

// ---------------------------------------------------------------- serial
namespace serial_side {

double bfs(const Sizes&, const Graph& g, const std::vector<std::int32_t>& ref) {
  Stopwatch sw;
  std::vector<std::int32_t> level = bfs_serial(g, kBfsSource);
  double ms = sw.ms();
  check_levels("serial bfs", level, ref, 0);
  return ms;
}

ServiceResult run_service(const Sizes& s, const std::vector<Request>& reqs) {
  std::vector<Server> servers;
  servers.reserve(s.servers);
  for (std::uint32_t i = 0; i < s.servers; ++i) servers.push_back(make_server(s));
  std::vector<std::uint64_t> receipts(s.clients, 0);
  ServiceResult r;
  const std::uint32_t per = s.requests_per_client;
  for (std::uint32_t j = 0; j < per; ++j) {
    for (std::uint32_t c = 0; c < s.clients; ++c) {
      const Request& q = reqs[static_cast<std::size_t>(c) * per + j];
      Reply rep{};
      switch (q.kind) {
        case Kind::query:
          rep = query(servers[q.src_server], q, s.work_rounds);
          break;
        case Kind::move:
          rep = move_within(servers[q.src_server], q, s.work_rounds);
          break;
        case Kind::transfer:
          rep = transfer(servers[q.src_server], servers[q.dst_server], q, s.work_rounds);
          break;
      }
      ++r.replies;
      receipts[c] ^= rep.receipt;
    }
  }
  for (const Server& sv : servers) {
    for (const Account& a : sv.accounts) r.balances.push_back(a.balance);
    r.handled += sv.handled;
  }
  return r;
}

double service(const Sizes& s, const std::vector<Request>& reqs, const ServiceResult& ref) {
  Stopwatch sw;
  ServiceResult got = run_service(s, reqs);
  double ms = sw.ms();
  check_service("serial service", s, reqs, got, ref);
  return ms;
}

}  // namespace serial_side

// ---------------------------------------------------------------- mutex
namespace mutex_side {
namespace {
struct alignas(64) LockedPart {  // one per cache line at least: no false sharing
  std::mutex m;
  std::uint32_t lo = 0;
  std::vector<std::int32_t> level;      // guarded by m (RP1)
  std::vector<std::uint32_t> lists[2];  // the next frontier guarded by m (RP1)
};

void apply(LockedPart& p, const std::vector<std::uint32_t>& batch, std::int32_t level) {
  std::lock_guard lock(p.m);
  auto& next = p.lists[level & 1];
  for (std::uint32_t v : batch) {
    std::int32_t& l = p.level[v - p.lo];
    if (l < 0) {
      l = level;
      next.push_back(v);
    }
  }
}
}  // namespace

double bfs(const Sizes& s, const Graph& g, const std::vector<std::int32_t>& ref) {
  Stopwatch sw;
  const std::size_t nthreads = s.threads;
  const Partitioning by =
      partition(g.n, static_cast<std::uint32_t>(s.threads * s.bfs_parts_per_thread));
  std::vector<LockedPart> parts(by.parts);
  for (std::uint32_t p = 0; p < by.parts; ++p) {
    parts[p].lo = by.lo(p, g.n);
    parts[p].level.assign(by.hi(p, g.n) - parts[p].lo, -1);
  }
  apply(parts[by.owner(kBfsSource)], {kBfsSource}, 0);

  std::atomic<std::uint32_t> claim{0};
  std::atomic<std::size_t> expanded{0};
  std::int32_t level = 0;  // written by the barrier's completion step only
  std::int32_t levels = 0;
  bool done = false;
  auto end_level = [&]() noexcept {  // runs on one thread, the others wait (RP1)
    for (LockedPart& p : parts) p.lists[level & 1].clear();
    if (expanded.load(std::memory_order_relaxed) == 0) {
      done = true;
    } else {
      levels = level + 1;
    }
    expanded.store(0, std::memory_order_relaxed);
    claim.store(0, std::memory_order_relaxed);
    ++level;
  };
  std::barrier sync(static_cast<std::ptrdiff_t>(nthreads), end_level);
  auto worker = [&] {
    std::vector<std::vector<std::uint32_t>> out(by.parts);
    while (!done) {
      const std::int32_t l = level;
      for (std::uint32_t p; (p = claim.fetch_add(1, std::memory_order_relaxed)) < by.parts;) {
        const std::vector<std::uint32_t>& frontier = parts[p].lists[l & 1];
        expanded.fetch_add(frontier.size(), std::memory_order_relaxed);
        for (std::uint32_t v : frontier) {
          for (std::uint32_t w : g.neighbours(v)) {
            const std::uint32_t q = by.owner(w);
            out[q].push_back(w);
            if (out[q].size() == kBfsFlush) {
              apply(parts[q], out[q], l + 1);
              out[q].clear();
            }
          }
        }
        for (std::uint32_t q = 0; q < by.parts; ++q) {
          if (out[q].empty()) continue;
          apply(parts[q], out[q], l + 1);
          out[q].clear();
        }
      }
      sync.arrive_and_wait();
    }
  };
  std::vector<std::thread> threads;
  for (std::size_t t = 1; t < nthreads; ++t) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
  double ms = sw.ms();
  for (LockedPart& p : parts) check_levels("mutex bfs", p.level, ref, p.lo);
  REALWORK_CHECK(levels > 1, "mutex bfs: {} levels", levels);
  return ms;
}

namespace {
struct alignas(64) LockedServer {
  std::mutex m;
  Server s;  // guarded by m (RP2)
};
struct alignas(64) Tally {  // one thread's (RP2)
  std::uint64_t replies = 0;
  std::uint64_t receipts = 0;
};
}  // namespace

double service(const Sizes& s, const std::vector<Request>& reqs, const ServiceResult& ref) {
  Stopwatch sw;
  std::vector<LockedServer> servers(s.servers);
  for (LockedServer& sv : servers) sv.s = make_server(s);
  const std::size_t nthreads = s.threads;
  std::vector<Tally> tallies(nthreads);
  const std::uint32_t per = s.requests_per_client;
  auto worker = [&](std::size_t t) {
    Tally& tally = tallies[t];
    for (std::uint32_t j = 0; j < per; ++j) {
      for (std::size_t c = t; c < s.clients; c += nthreads) {
        const Request& q = reqs[c * per + j];
        LockedServer& a = servers[q.src_server];
        Reply rep{};
        switch (q.kind) {
          case Kind::query: {
            std::lock_guard lock(a.m);
            rep = query(a.s, q, s.work_rounds);
            break;
          }
          case Kind::move: {
            std::lock_guard lock(a.m);
            rep = move_within(a.s, q, s.work_rounds);
            break;
          }
          case Kind::transfer: {
            LockedServer& b = servers[q.dst_server];
            std::scoped_lock lock(a.m, b.m);
            rep = transfer(a.s, b.s, q, s.work_rounds);
            break;
          }
        }
        ++tally.replies;
        tally.receipts ^= rep.receipt;
      }
    }
  };
  std::vector<std::thread> threads;
  for (std::size_t t = 1; t < nthreads; ++t) threads.emplace_back(worker, t);
  worker(0);
  for (auto& th : threads) th.join();
  double ms = sw.ms();
  ServiceResult got;
  for (const LockedServer& sv : servers) {
    for (const Account& a : sv.s.accounts) got.balances.push_back(a.balance);
    got.handled += sv.s.handled;
  }
  for (const Tally& t : tallies) got.replies += t.replies;
  check_service("mutex service", s, reqs, got, ref);
  return ms;
}

}  // namespace mutex_side
}  // namespace realwork
