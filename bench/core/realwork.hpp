// bench/core/realwork.hpp: what the sides of bench_realwork share: the two
// programs' sizes and inputs (a random graph for BFS, a request list for the
// service), the per-request server code every side runs, result checks, and
// the entry points each side (troupe actors, one thread, std::thread + mutex)
// implements (realwork_troupe.cpp, realwork_plain.cpp).
//
// Every entry point builds its state, runs the program to completion, checks
// the result against the reference computed once at start-up (untimed) and
// returns the milliseconds from the first state built to the result known. A
// failed check aborts the program: a benchmark that computes the wrong thing is
// worthless.
//
// Invariants:
//   RW1. Every side of a program gets the same Sizes, the same graph and the
//       same request list, and runs the same per-item code (Partitioning, the
//       service's query/move_within/transfer below), so the sides do the same
//       work and differ only in how they coordinate.
//   RW2. The service's updates are additions of fixed amounts, so the final
//       balances do not depend on the order requests ran in: every side's
//       final accounts must equal the reference exactly, whatever the
//       interleaving. Replies (balances, receipts) do depend on it and are
//       counted, not compared.
//   RW3. The BFS levels of every side must equal the reference BFS's levels,
//       vertex by vertex.
#pragma once

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace realwork {

struct Sizes {
  // BFS: a uniform random multigraph (G(n, m), self-loops dropped), 2^20
  // vertices, 8 M undirected edges (average degree 16), from vertex 0.
  std::uint32_t bfs_vertices = 1u << 20;
  std::uint64_t bfs_edges = 8u << 20;
  std::uint32_t bfs_parts_per_thread = 4;  // partitions (actors): at most 4 x threads
  // Service: clients in a closed loop (one request outstanding each).
  std::uint32_t clients = 10'000;
  std::uint32_t servers = 100;
  std::uint32_t accounts_per_server = 1000;
  std::uint32_t requests_per_client = 20;
  std::int64_t initial_balance = 1000;
  int work_rounds = 600;  // the receipt's mixing rounds: about 1 us per request
  // service-heavy: about 10 us of receipt per request, fewer requests each.
  int heavy_work_rounds = 6000;
  std::uint32_t heavy_requests_per_client = 4;
  std::size_t threads = 0;  // troupe's pool, and the mutex side's std::threads

  // A smoke run: a 64 Ki-vertex graph, 10 000 clients with 2 requests each
  // (1 in service-heavy).
  Sizes quick() const {
    Sizes s = *this;
    s.bfs_vertices = 1u << 16;
    s.bfs_edges = 8u << 16;
    s.requests_per_client = 2;
    s.heavy_requests_per_client = 1;
    return s;
  }
};

[[noreturn]] void fail(const char* file, int line, const char* cond, const std::string& what);

#define REALWORK_CHECK(cond, ...)                                                       \
  do {                                                                                  \
    if (!(cond)) ::realwork::fail(__FILE__, __LINE__, #cond, fmt::format(__VA_ARGS__)); \
  } while (0)

// This process's CPU time so far (every thread), in seconds.
double process_cpu_seconds();

// Times one run from its construction to ms(), which each side calls once,
// on the main thread, when its result is known; ms() also records how many
// cores the whole process used meanwhile (CPU time / wall time) in
// last_run_cores, which the run loop reads after the run.
inline double last_run_cores = 0;  // main thread only
class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()), cpu_(process_cpu_seconds()) {}
  double ms() const {
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_)
            .count();
    last_run_cores = (process_cpu_seconds() - cpu_) * 1e3 / ms;
    return ms;
  }

 private:
  std::chrono::steady_clock::time_point start_;
  double cpu_;
};

// splitmix64: the inputs' random numbers, the same on every run.
inline std::uint64_t splitmix(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// ---------------------------------------------------------------- BFS

// Undirected graph in CSR form: the neighbours of v are
// adj[offsets[v] .. offsets[v + 1]); each edge is stored from both ends.
struct Graph {
  std::uint32_t n = 0;
  std::vector<std::uint64_t> offsets;
  std::vector<std::uint32_t> adj;
  std::span<const std::uint32_t> neighbours(std::uint32_t v) const {
    return {adj.data() + offsets[v], adj.data() + offsets[v + 1]};
  }
};
Graph make_graph(const Sizes& s, std::uint64_t seed);

// Vertices are split into contiguous blocks of 2^shift vertices (the
// smallest power of two that gives at most the partitions asked for: a shift,
// not a division, per edge); the partition that owns v keeps v's level.
struct Partitioning {
  std::uint32_t parts = 0;
  std::uint32_t shift = 0;
  std::uint32_t owner(std::uint32_t v) const { return v >> shift; }
  std::uint32_t lo(std::uint32_t p, std::uint32_t n) const { return std::min(n, p << shift); }
  std::uint32_t hi(std::uint32_t p, std::uint32_t n) const {
    return static_cast<std::uint32_t>(std::min<std::uint64_t>(n, (std::uint64_t{p} + 1) << shift));
  }
};
inline Partitioning partition(std::uint32_t n, std::uint32_t parts) {
  std::uint32_t shift = 0;
  while ((std::uint64_t{n} + (std::uint64_t{1} << shift) - 1) >> shift > parts) ++shift;
  const auto used =
      static_cast<std::uint32_t>((std::uint64_t{n} + (std::uint64_t{1} << shift) - 1) >> shift);
  return {used, shift};
}

// Remote discoveries travel in batches of at most this many vertices: a
// sender flushes a destination's buffer when it is full and at the end of its
// level (64 KiB of vertex ids).
inline constexpr std::size_t kBfsFlush = 16384;

inline constexpr std::uint32_t kBfsSource = 0;

// The reference: the plain queue BFS (the single-threaded side). level[v] is
// -1 for a vertex not reached.
std::vector<std::int32_t> bfs_serial(const Graph& g, std::uint32_t source);

// Checks a side's levels for vertices [lo, hi) against the reference (RW3).
void check_levels(const char* side, std::span<const std::int32_t> got,
                  const std::vector<std::int32_t>& ref, std::uint32_t lo);

// ---------------------------------------------------------------- service

enum class Kind : std::uint8_t { query, move, transfer };

// One client request: a balance query (one server, read-only), a move between
// two accounts of one server, or a transfer from an account of one server to
// an account of another (src_server != dst_server), atomic over both.
struct Request {
  Kind kind;
  std::uint16_t src_server;
  std::uint16_t dst_server;  // == src_server unless a transfer
  std::uint32_t src_account;
  std::uint32_t dst_account;
  std::int64_t amount;
};

// Client c's j-th request is requests[c * requests_per_client + j]: 45 %
// queries, 45 % moves, 10 % cross-server transfers.
std::vector<Request> make_requests(const Sizes& s, std::uint64_t seed);

struct Account {
  std::int64_t balance = 0;
  std::uint64_t last_receipt = 0;
};
struct Server {
  std::vector<Account> accounts;
  std::uint64_t handled = 0;  // requests that touched this server
};
inline Server make_server(const Sizes& s) {
  Server sv;
  sv.accounts.assign(s.accounts_per_server, Account{s.initial_balance, 0});
  return sv;
}

struct Reply {
  std::int64_t balance;
  std::uint64_t receipt;
};

// The receipt a server signs for each request: `rounds` rounds of a 64-bit
// mix over the request and the account's balance after it (state-dependent,
// so it is computed while the server is held, on every side).
inline std::uint64_t receipt(std::uint64_t x, int rounds) {
  for (int i = 0; i < rounds; ++i) {
    x ^= x >> 31;
    x *= 0x7FB5D329728EA185ull;
    x ^= x >> 27;
  }
  return x;
}

inline Reply query(const Server& s, const Request& q, int rounds) {
  const Account& a = s.accounts[q.src_account];
  return {a.balance, receipt(static_cast<std::uint64_t>(a.balance) ^ q.src_account, rounds)};
}
inline Reply move_within(Server& s, const Request& q, int rounds) {
  Account& a = s.accounts[q.src_account];
  Account& b = s.accounts[q.dst_account];
  a.balance -= q.amount;
  b.balance += q.amount;
  ++s.handled;
  a.last_receipt = receipt(static_cast<std::uint64_t>(a.balance) ^ q.src_account, rounds);
  return {a.balance, a.last_receipt};
}
inline Reply transfer(Server& from, Server& to, const Request& q, int rounds) {
  Account& a = from.accounts[q.src_account];
  Account& b = to.accounts[q.dst_account];
  a.balance -= q.amount;
  b.balance += q.amount;
  ++from.handled;
  ++to.handled;
  a.last_receipt = receipt(static_cast<std::uint64_t>(a.balance) ^ q.src_account, rounds);
  return {a.balance, a.last_receipt};
}

// What a run of the service leaves: every server's balances in order, replies
// received by clients, requests the servers counted.
struct ServiceResult {
  std::vector<std::int64_t> balances;  // server-major
  std::uint64_t replies = 0;
  std::uint64_t handled = 0;
};
// Checks a run against the reference run (RW2): same final balances, total
// conserved, every request answered and counted by its servers.
void check_service(const char* side, const Sizes& s, const std::vector<Request>& reqs,
                   const ServiceResult& got, const ServiceResult& ref);

// ---------------------------------------------------------------- sides

namespace troupe_side {
void start(std::size_t threads);
void settle();  // waits until the pool is idle (teardown of the last run)
double bfs(const Sizes& s, const Graph& g, const std::vector<std::int32_t>& ref);
double service(const Sizes& s, const std::vector<Request>& reqs, const ServiceResult& ref);
}  // namespace troupe_side

namespace serial_side {
double bfs(const Sizes& s, const Graph& g, const std::vector<std::int32_t>& ref);
ServiceResult run_service(const Sizes& s, const std::vector<Request>& reqs);
double service(const Sizes& s, const std::vector<Request>& reqs, const ServiceResult& ref);
}  // namespace serial_side

namespace mutex_side {
double bfs(const Sizes& s, const Graph& g, const std::vector<std::int32_t>& ref);
double service(const Sizes& s, const std::vector<Request>& reqs, const ServiceResult& ref);
}  // namespace mutex_side

}  // namespace realwork
