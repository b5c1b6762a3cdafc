// tests/shm/bank_worker.cpp: the process the bank tests spawn (and kill).
//   shm_bank_worker <heap> <threads> <seed> [max_ops] [churn]
// Opens the heap, attaches the transaction layer (its recovery hook) and runs
// run_bank (or run_churn) on each thread until the parent sets stop (or
// max_ops each).
#include <sys/prctl.h>

#include <csignal>
#include <thread>

#include "bank_util.hpp"

int main(int argc, char** argv) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a test that fails early leaves no worker running
  if (argc < 4) return 2;
  using namespace troupe::shm;
  Heap h = Heap::open(argv[1]);
  TxHeap::attach(h);
  unsigned threads = static_cast<unsigned>(std::stoul(argv[2]));
  std::uint64_t seed = std::stoull(argv[3]);
  std::uint64_t max_ops = argc > 4 ? std::stoull(argv[4]) : ~0ull;
  bool churn = argc > 5 && std::string(argv[5]) == "churn";
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      if (churn)
        bank::run_churn(h, seed * 64 + t, max_ops);
      else
        bank::run_bank(h, seed * 64 + t, max_ops);
    });
  for (auto& t : ts) t.join();
  TxHeap::detach(h);
  h.close();
  return 0;
}
