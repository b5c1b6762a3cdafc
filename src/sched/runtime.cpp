// src/sched/runtime.cpp: the systematic-testing stream, the
// per-thread current scheduler and the default pool's lifecycle.
//
// Invariants:
//   RU1. g_pool is created and destroyed under g_pool_mutex (never on a hot
//       path: default_scheduler(), inline in scheduler.hpp, reads
//       g_pool_ptr, an atomic, first).
#include "troupe/runtime.hpp"

#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "troupe/detail/platform.hpp"
#include "troupe/detail/systematic.hpp"
#include "troupe/error.hpp"
#include "troupe/sched/pool.hpp"

namespace troupe {

namespace detail {

namespace systematic {

bool enabled() noexcept {
#if defined(TROUPE_SYSTEMATIC)
  return true;
#else
  return false;
#endif
}

std::uint64_t seed() noexcept {
  static const std::uint64_t s = [] {
    const char* env = std::getenv("TROUPE_SEED");
    return env ? std::strtoull(env, nullptr, 10) : 1ull;
  }();
  return s;
}

void yield_point() noexcept {
  static std::atomic<std::uint64_t> next_thread{0};
  // Each thread gets its own stream: seed and the order threads first yield.
  thread_local std::mt19937_64 rng(seed() * 0x9E3779B97F4A7C15ull +
                                   next_thread.fetch_add(1, std::memory_order_relaxed));
  std::uint64_t r = rng() % 16;
  if (r == 0) {
    std::this_thread::yield();
  } else if (r == 1) {
    for (int i = 0; i < 200; ++i) cpu_relax();
  }
}

}  // namespace systematic
}  // namespace detail

namespace sched {

__thread Scheduler* tl_current = nullptr;  // SC3 of scheduler.hpp; thread-owned
std::atomic<Scheduler*> detail_default::g_override{nullptr};
std::atomic<Scheduler*> detail_default::g_pool{nullptr};

namespace {
std::mutex g_pool_mutex;                 // RU1
std::unique_ptr<Pool> g_pool;            // guarded by g_pool_mutex
std::atomic<Scheduler*>& g_pool_ptr = detail_default::g_pool;  // published copy of g_pool.get()
std::atomic<Scheduler*>& g_override = detail_default::g_override;
Options g_options;                       // guarded by g_pool_mutex

struct PoolReaper {
  ~PoolReaper() {
    // exit() called on a pool thread cannot join that pool: leave it to the
    // process's end rather than throw from a destructor.
    try {
      troupe::shutdown();
    } catch (const Error&) {
    }
  }
} g_reaper;
}  // namespace


namespace {
std::atomic<BlockingPoller> g_poller{nullptr};
}
// Release/acquire: a thread that sees the poller sees what its installer set up.
void set_blocking_poller(BlockingPoller p) noexcept {
  g_poller.store(p, std::memory_order_release);
}
BlockingPoller blocking_poller() noexcept { return g_poller.load(std::memory_order_acquire); }

Scheduler* set_current(Scheduler* s) noexcept {
  Scheduler* prev = tl_current;
  tl_current = s;
  return prev;
}

void Scheduler::help_until(Waiter& w) {
  while (!w.ready()) std::this_thread::yield();
}

namespace {
Scheduler& make_default_pool() {
  std::lock_guard lock(g_pool_mutex);
  if (!g_pool) {
    g_pool = std::make_unique<Pool>(g_options.threads);
    g_pool_ptr.store(g_pool.get(), std::memory_order_release);
  }
  return *g_pool;
}
}  // namespace

// default_scheduler()'s slow path (scheduler.hpp): no pool yet.
Scheduler& detail_default::make_pool() { return make_default_pool(); }

void set_default_scheduler(Scheduler* s) noexcept {
  g_override.store(s, std::memory_order_release);
}

}  // namespace sched

bool init(const Options& options) {
  std::lock_guard lock(sched::g_pool_mutex);
  if (sched::g_pool) return false;
  sched::g_options = options;
  return true;
}

void wait_idle() { sched::default_scheduler().wait_idle(); }

Stats stats() {
  Stats s;
  if (sched::g_override.load(std::memory_order_acquire)) return s;  // not the pool
  // Under the mutex: shutdown() takes the pool out under it before it
  // destroys it, so the pool we read lives until we are done.
  std::lock_guard lock(sched::g_pool_mutex);
  if (sched::g_pool) {
    sched::PoolStats ps = sched::g_pool->stats();
    s = Stats{ps.threads, ps.run, ps.stolen, ps.sleeps, ps.wakes, ps.queued};
  }
  return s;
}

void shutdown() {
  // Drain while the pool is still the default, so work that is still running
  // keeps scheduling onto it rather than starting a second pool.
  if (sched::Scheduler* p = sched::g_pool_ptr.load(std::memory_order_acquire)) {
    if (sched::current() == p)  // Pool RU5: a pool cannot join its own thread
      throw Error(Errc::invalid_argument,
                  "troupe::shutdown() called from a thread of the pool it would stop; call it "
                  "from main (or any thread outside the pool)");
    p->wait_idle();
  }
  std::unique_ptr<sched::Pool> pool;
  {
    std::lock_guard lock(sched::g_pool_mutex);
    sched::g_pool_ptr.store(nullptr, std::memory_order_release);
    pool = std::move(sched::g_pool);
  }
  pool.reset();  // Pool::~Pool drains and joins (pool.hpp PL5)
}

}  // namespace troupe
