// src/shm/fault.cpp: reads TROUPE_SHM_FAULT once, before main (F1), and kills
// the process at the chosen fault point; calls a test's fault observer.
#include "shm/fault.hpp"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace troupe::shm::detail {
namespace {

struct FaultConfig {
  std::string name;
  long countdown = 1;
  FaultConfig() {
    const char* env = std::getenv("TROUPE_SHM_FAULT");
    if (!env || !*env) return;
    std::string spec(env);
    auto at = spec.find('@');
    name = spec.substr(0, at);
    if (at != std::string::npos) countdown = std::max(1L, std::atol(spec.c_str() + at + 1));
  }
};

FaultConfig& config() {
  static FaultConfig c;
  return c;
}

// Hits are counted per process; fault points may run on many threads.
std::atomic<long> g_hits{0};

std::atomic<FaultObserver> g_observer{nullptr};

}  // namespace

std::atomic<bool> g_fault_armed{!config().name.empty()};  // F1: static init

void set_fault_observer(FaultObserver observer) {
  // Release/acquire: a thread that sees the observer sees what the test set
  // up before installing it.
  g_observer.store(observer, std::memory_order_release);
  // Relaxed: F1, the test installs the observer before starting the threads
  // it watches.
  if (observer) g_fault_armed.store(true, std::memory_order_relaxed);
}

void fault_hit(std::string_view name) {
  if (FaultObserver obs = g_observer.load(std::memory_order_acquire)) obs(name);
  if (name != config().name) return;
  // Relaxed: only the count matters, not ordering with other memory.
  if (g_hits.fetch_add(1, std::memory_order_relaxed) + 1 == config().countdown)
    ::kill(::getpid(), SIGKILL);
}

}  // namespace troupe::shm::detail
