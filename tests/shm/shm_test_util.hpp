// tests/shm/shm_test_util.hpp: what the shm tests and their worker program
// share: the shadow table of the crash tests and process spawning.
//
// Shadow table (published block, root "shadow"): one entry per block a worker
// thread believes it owns. Entry::word = offset | state. Protocol, per thread:
//   allocate -> write id into the block -> entry {id,size} -> ALLOCATING
//   -> publish -> LIVE;   LIVE -> check id -> FREEING -> free -> EMPTY.
// Invariants:
//   TU1. A LIVE entry's block is published and starts with the entry's id.
//   TU2. A block is named by at most one non-EMPTY entry whose id it carries.
// After a worker dies its entries are reconciled by the parent: a block that
// is published and carries the entry's id is the entry's (the parent frees
// it); anything else was never published or already freed.
#pragma once

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <troupe/shm/heap.hpp>
#include <vector>

extern char** environ;

namespace shm_test {

inline constexpr unsigned kWorkers = 4;
inline constexpr unsigned kThreads = 2;
inline constexpr unsigned kEntries = 48;

// A small heap for unit tests: 64 MiB reserved, `initial` committed, 16 slots.
inline troupe::shm::CreateOptions small_heap(std::size_t initial = 256 << 10) {
  troupe::shm::CreateOptions o;
  o.max_size = 64 << 20;
  o.initial_size = initial;
  o.slots = 16;
  return o;
}

// Address hints for mapping a heap at deliberately different places. Under
// ThreadSanitizer only its application ranges may be mapped (0x55..-0x568..).
inline void* test_hint(unsigned n) {
#if defined(__SANITIZE_THREAD__)
  return reinterpret_cast<void*>(0x562000000000ull + n * 0x800000000ull);
#else
  return reinterpret_cast<void*>(0x4c0000000000ull + n * 0x10000000000ull);
#endif
}

enum EntryState : std::uint64_t { kEmpty = 0, kAllocating = 1, kLive = 2, kFreeing = 3 };

struct Entry {
  std::atomic<std::uint64_t> word;  // offset | EntryState; written by its thread
  std::atomic<std::uint64_t> id;
  std::atomic<std::uint64_t> size;
};

struct Table {
  std::atomic<std::uint64_t> stop;        // parent: 1 = workers finish and close
  std::atomic<std::uint64_t> violations;  // anyone: TU1/TU2 broken
  std::atomic<std::uint64_t> ops[kWorkers];
  Entry e[kWorkers][kThreads][kEntries];
};

#ifdef SHM_WORKER_PATH
// Spawns the worker program with args; extra_env entries are "K=V".
inline pid_t spawn_worker(const std::vector<std::string>& args,
                          const std::vector<std::string>& extra_env = {}, int pass_fd = -1,
                          int as_fd = -1) {
  std::vector<char*> argv;
  std::string path = SHM_WORKER_PATH;
  argv.push_back(path.data());
  std::vector<std::string> a = args;
  for (auto& s : a) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string s(*e);
    if (s.rfind("TROUPE_SHM_FAULT=", 0) == 0) continue;
    env.push_back(s);
  }
  for (auto& s : extra_env) env.push_back(s);
  std::vector<char*> envp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (pass_fd >= 0) posix_spawn_file_actions_adddup2(&fa, pass_fd, as_fd);
  pid_t pid = -1;
  int r = posix_spawn(&pid, path.c_str(), &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  return r == 0 ? pid : -1;
}

#endif

inline int wait_status(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
  }
  return status;
}

}  // namespace shm_test
