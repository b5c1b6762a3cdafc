// bench/core/savina.hpp: what the sides of bench_savina share: problem sizes,
// the banking workload, the trivial per-message work, result checks, and the
// entry points each side (troupe, CAF, oneTBB, std::mutex) implements.
//
// Every entry point builds its actors, runs the case to completion, checks the
// result (count, sum, conserved balance) and returns the milliseconds from the
// first actor created to the result known. Checks that fail abort the program:
// a benchmark that computes the wrong thing is worthless.
//
// Invariants:
//   SV1. Both sides of a case get the same Sizes and the same input data (the
//       banking transfer list, the seeds of every random choice), so they do
//       the same work.
//   SV2. A side leaves nothing running when it returns but teardown (actors
//       whose last handle is gone); settle() waits for that, outside timing.
#pragma once

#include <fmt/core.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace savina {

struct Sizes {
  std::int64_t pingpong_round_trips = 1'000'000;
  std::int64_t counting_messages = 1'000'000;
  std::int64_t fj_actors = 60;
  std::int64_t fj_messages = 100'000;  // per actor
  std::int64_t fjc_actors = 100'000;
  std::int64_t ring_actors = 100;
  std::int64_t ring_hops = 100'000;
  std::int64_t chameneos = 100;
  std::int64_t chameneos_meetings = 200'000;
  std::int64_t big_actors = 120;
  std::int64_t big_pings = 16'000;  // per actor
  std::int64_t bank_accounts = 1000;
  std::int64_t bank_transfers = 50'000;
  std::int64_t bank_initial_balance = 1'000'000;
  std::int64_t skynet_leaves = 1'000'000;  // a power of 10
  int fib_n = 30;
  std::size_t threads = 0;  // workers of every runtime

  // 10x smaller everywhere, for a smoke test.
  Sizes quick() const {
    Sizes s = *this;
    s.pingpong_round_trips /= 10;
    s.counting_messages /= 10;
    s.fj_messages /= 10;
    s.fjc_actors /= 10;
    s.ring_hops /= 10;
    s.chameneos_meetings /= 10;
    s.big_pings /= 10;
    s.bank_transfers /= 10;
    s.skynet_leaves /= 10;
    s.fib_n -= 5;  // about 11x fewer calls
    return s;
  }
};

struct Transfer {
  std::uint32_t src;
  std::uint32_t dst;  // != src
  std::int64_t amount;
};

// The same transfers for every side of the banking case (SV1).
std::vector<Transfer> make_transfers(const Sizes& s, std::uint64_t seed);

[[noreturn]] void fail(const char* file, int line, const char* cond, const std::string& what);

#define SAVINA_CHECK(cond, ...)                                                  \
  do {                                                                           \
    if (!(cond)) ::savina::fail(__FILE__, __LINE__, #cond, fmt::format(__VA_ARGS__)); \
  } while (0)

// Savina fjthrput/fjcreate's "performComputation": trivial floating-point work.
inline double fj_work(std::int64_t i) {
  double s = std::sin(static_cast<double>(i) * 1e-3);
  return s * s;
}

// xorshift64: the per-actor random choices of "big", seeded alike on each side.
inline std::uint64_t xorshift(std::uint64_t& s) {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

// Savina chameneos colours: 0, 1, 2; two different colours make the third.
inline int complement(int a, int b) { return a == b ? a : 3 - a - b; }

inline std::int64_t fib_serial(int n) { return n < 2 ? n : fib_serial(n - 1) + fib_serial(n - 2); }

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double ms() const {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_)
        .count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

namespace troupe_side {
void start(std::size_t threads);
void settle();  // SV2
double pingpong(const Sizes& s);
double counting(const Sizes& s);
double fjthrput(const Sizes& s);
double fjthrput_bounded(const Sizes& s);  // mailboxes of 1000 (backpressure.hpp)
double fjcreate(const Sizes& s);
double threadring(const Sizes& s);
double chameneos(const Sizes& s);
double big(const Sizes& s);
double banking(const Sizes& s, const std::vector<Transfer>& transfers);
// One teller per thread, each sending its share of the transfers (every
// threads-th), as the std::scoped_lock program's threads do; no reply per
// transfer: an audit over every account, sent once the tellers are done,
// queues behind all of them.
double banking_tellers(const Sizes& s, const std::vector<Transfer>& transfers);
double skynet(const Sizes& s);
double fib(const Sizes& s);
}  // namespace troupe_side

namespace caf_side {
void start(std::size_t threads);  // builds the actor system
void stop();
void settle();  // SV2: until every actor of the last run has terminated
double pingpong(const Sizes& s);
double counting(const Sizes& s);
double fjthrput(const Sizes& s);
double fjcreate(const Sizes& s);
double threadring(const Sizes& s);
double chameneos(const Sizes& s);
double big(const Sizes& s);
double banking(const Sizes& s, const std::vector<Transfer>& transfers);
double skynet(const Sizes& s);
}  // namespace caf_side

namespace tbb_side {
void start(std::size_t threads);  // limits oneTBB to `threads`
void stop();
double fib(const Sizes& s);
}  // namespace tbb_side

namespace lock_side {
// Banking on plain threads: one std::mutex per account, std::scoped_lock.
double banking(const Sizes& s, const std::vector<Transfer>& transfers);
}  // namespace lock_side

}  // namespace savina
