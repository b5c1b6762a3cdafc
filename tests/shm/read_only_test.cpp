// tests/shm/read_only_test.cpp: read-only transactions write no shared
// memory (T2 of tx.hpp). A reader process maps the whole heap (its
// transaction table included) read-only and runs thousands of read-only
// transactions, which check the bank invariant and the shape of every
// string, tuple and list inside the block, while writer processes transfer
// between accounts and replace strings, tuples and lists, so that blocks are
// freed and reused under the reader (X5). Any shared write by the reader
// faults (SIGSEGV), and the test fails.
//   Of the writes T2 allows a read-only transaction, two could happen here:
//   advancing the clock to a commit's version above it (X8: the clock's
//   page, which holds nothing else, stays writable), and the irrevocable token,
// after kIrrevocableAfter aborts in a row. So that a slow (sanitized) reader
// never gets there, the test has a contention manager outside shared memory:
// a reader whose transaction aborted a few times asks the writers, through
// pipes, to pause between their transactions until it has committed.
#include <execinfo.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <troupe/shm/objects.hpp>

using namespace troupe::shm;

namespace {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int kReads = 600;
#else
constexpr int kReads = 4000;
#endif
constexpr long kAccounts = 16;
constexpr std::int64_t kStart = 1000;

std::string named(long k, std::size_t len) {  // the only strings ever stored under key k
  std::string s = std::to_string(k) + ":" + std::to_string(len) + ":";
  s.resize(len, static_cast<char>('a' + k % 26));
  return s;
}
bool is_named(long k, const std::string& s) { return s.size() >= 9 && s == named(k, s.size()); }
std::string item(std::size_t i) { return std::string(9 + i % 30, static_cast<char>('A' + i % 26)); }

// The control block (raw root "ro.ctl"): written by the parent only.
struct Ctl {
  std::atomic<std::uint64_t> stop;
};

// Pause requests, reader to writers: one pipe per writer; 'p' pauses it
// (between transactions), 'r' lifts one pause.
constexpr int kWriters = 2;
int g_pause[kWriters][2];

void tell_writers(char c) {
  for (auto& p : g_pause)
    if (::write(p[1], &c, 1) != 1) ::_exit(2);
}

// The address range of the mapping that starts at `base` (/proc/self/maps).
std::pair<char*, std::size_t> mapping_of(void* base) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream in(line);
    in >> std::hex >> lo >> dash >> hi;
    if (lo == reinterpret_cast<std::uintptr_t>(base))
      return {reinterpret_cast<char*>(lo), static_cast<std::size_t>(hi - lo)};
  }
  return {nullptr, 0};
}

// One read-only transaction: the bank sum, every string and tuple, and the
// list; returns the violations it saw (there must be none: T1).
std::uint64_t audit(Tx& tx, Dict accounts, Dict names) {
  std::uint64_t bad = 0;
  std::int64_t sum = 0;
  for (long k = 0; k < kAccounts; ++k) sum += accounts.get_int(tx, k);
  bad += sum != kStart * kAccounts;
  for (long k = 0; k < kAccounts; ++k) {
    bad += !is_named(k, names.get(tx, k)->as_string());
    Value t = *names.get(tx, k + 100);
    bad += t.as_tuple().size() != 2 || t.as_tuple()[0].as_int() != k ||
           !is_named(k, t.as_tuple()[1].as_string());
  }
  List lst = get_root(tx, "ro.list").as_list();
  std::vector<Value> items = lst.items(tx);
  for (std::size_t i = 0; i < items.size(); ++i) bad += items[i].as_string() != item(i);
  return bad;
}

// Child: opens the heap, takes its slot, runs one transaction (so that every
// process-local cache is filled), maps the heap read-only and audits.
// Exit status: 0 clean, 1 violations, 2 setup failed; a write faults.
[[noreturn]] void reader(const std::string& name) {
  Heap h = Heap::open(name);
  TxHeap& l = TxHeap::attach(h);
  h.slot_index();
  Dict accounts, names;
  atomically(l, [&](Tx& tx) {
    accounts = get_root(tx, "ro.accounts").as_dict();
    names = get_root(tx, "ro.names").as_dict();
    audit(tx, accounts, names);
  });
  auto [lo, len] = mapping_of(h.base());
  // On a fault, say where before dying of it (backtrace() called once
  // first, so that the handler loads nothing).
  void* frames[32];
  backtrace(frames, 1);
  struct sigaction sa {};
  sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
  sa.sa_sigaction = [](int, siginfo_t* si, void*) {
    char msg[] = "reader: fault at 0x0000000000000000, called from:\n";
    auto a = reinterpret_cast<std::uintptr_t>(si->si_addr);
    for (int i = 0; i < 16; ++i) msg[34 - i] = "0123456789abcdef"[(a >> (4 * i)) & 15];
    (void)!::write(2, msg, sizeof msg - 1);
    void* f[32];
    backtrace_symbols_fd(f, backtrace(f, 32), 2);
  };
  sigaction(SIGSEGV, &sa, nullptr);
  if (!lo || ::mprotect(lo, len, PROT_READ) != 0) ::_exit(2);
  // T2's fourth exception: meeting a commit's version above the clock (GV5,
  // X8), a transaction advances the clock. Its page stays writable: the
  // clock is alone on it (tx_layout.hpp TxTable).
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  void* clock_page =
      reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(&l.table().clock) & ~(page - 1));
  if (clock_page != static_cast<void*>(&l.table().clock)) ::_exit(2);  // alone on its page
  if (::mprotect(clock_page, page, PROT_READ | PROT_WRITE) != 0) ::_exit(2);
  std::uint64_t bad = 0;
  unsigned most = 0;
  for (int i = 0; i < kReads; ++i) {
    bool paused = false;
    bad += atomically(l, [&](Tx& tx) {
      most = std::max(most, tx.attempt());
      if (tx.attempt() >= 4 && !paused) {  // well below kIrrevocableAfter
        tell_writers('p');
        paused = true;
      }
      return audit(tx, accounts, names);
    });
    if (paused) tell_writers('r');
  }
  auto st = l.stats();
  std::printf(
      "  reader: %d read-only transactions, %llu aborts, at most %u in a row, "
      "%llu irrevocable\n",
      kReads, static_cast<unsigned long long>(st.aborts), most,
      static_cast<unsigned long long>(st.irrevocable));
  std::fflush(stdout);
  ::mprotect(lo, len, PROT_READ | PROT_WRITE);
  TxHeap::detach(h);
  h.close();
  ::_exit(bad == 0 ? 0 : 1);
}

// Child: transfers, replaces strings and tuples, grows and shrinks the list
// and replaces it whole, until the parent says stop; paused between
// transactions while a reader asks it to.
[[noreturn]] void writer(const std::string& name, unsigned seed) {
  const int pause_fd = g_pause[seed - 1][0];
  ::fcntl(pause_fd, F_SETFL, O_NONBLOCK);
  int pauses = 0;  // requests not yet lifted
  Heap h = Heap::open(name);
  TxHeap& l = TxHeap::attach(h);
  auto& ctl = *h.ptr<Ctl>(h.root("ro.ctl"));
  Dict accounts = atomically(l, [&](Tx& tx) { return get_root(tx, "ro.accounts").as_dict(); });
  Dict names = atomically(l, [&](Tx& tx) { return get_root(tx, "ro.names").as_dict(); });
  std::mt19937 rng(seed);
  for (unsigned i = 0; ctl.stop.load() == 0; ++i) {
    for (;;) {  // wait while a pause request is not lifted
      char c = 0;
      while (::read(pause_fd, &c, 1) == 1) pauses += c == 'p' ? 1 : -1;
      if (pauses == 0 || ctl.stop.load() != 0) break;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    long a = static_cast<long>(rng() % kAccounts), b = static_cast<long>(rng() % kAccounts);
    std::size_t len = 9 + rng() % 300;
    atomically(l, [&](Tx& tx) {
      accounts.add(tx, a, -7);
      accounts.add(tx, b, 7);
      if (i % 2 == 0)
        names.set(tx, a, named(a, len));
      else
        names.set(tx, a + 100, Value::tuple({Value(static_cast<long long>(a)), named(a, len)}));
      List lst = get_root(tx, "ro.list").as_list();
      std::size_t n = lst.size(tx);
      if (i % 16 == 0) {
        List fresh = new_list(tx, 1);
        for (std::size_t j = 0; j < len % 24; ++j) fresh.append(tx, item(j));
        set_root(tx, "ro.list", fresh);  // frees the old list, its items and strings
      } else if (n < 24 && rng() % 2 == 0) {
        lst.append(tx, item(n));
      } else if (n > 0) {
        lst.pop(tx);
      }
    });
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  TxHeap::detach(h);
  h.close();
  ::_exit(0);
}

TEST(ShmReadOnly, ReadOnlyTransactionsWriteNothing) {
  CreateOptions o;
  o.initial_size = 4 << 20;
  o.max_size = 64 << 20;
  Heap h = Heap::create(o);
  TxHeap& l = TxHeap::attach(h);
  Offset c = h.allocate(sizeof(Ctl));
  new (h.ptr<Ctl>(c)) Ctl{};
  h.publish(c);
  h.set_root("ro.ctl", c);
  Dict accounts = root_dict(l, "ro.accounts", kAccounts);
  Dict names = root_dict(l, "ro.names", 2 * kAccounts);
  atomically(l, [&](Tx& tx) {
    for (long k = 0; k < kAccounts; ++k) {
      accounts.set(tx, k, kStart);
      names.set(tx, k, named(k, 9));
      names.set(tx, k + 100, Value::tuple({Value(static_cast<long long>(k)), named(k, 9)}));
    }
    set_root(tx, "ro.list", new_list(tx));
  });
  std::fflush(stdout);
  for (auto& p : g_pause) ASSERT_EQ(::pipe(p), 0);
  std::vector<pid_t> writers;
  for (unsigned w = 0; w < kWriters; ++w) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) writer(h.name(), w + 1);
    writers.push_back(pid);
  }
  std::vector<pid_t> readers;
  for (int r = 0; r < 2; ++r) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) reader(h.name());
    readers.push_back(pid);
  }
  for (pid_t pid : readers) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
      ADD_FAILURE() << "the reader died of signal " << WTERMSIG(status)
                    << (WTERMSIG(status) == SIGSEGV
                            ? ": a read-only transaction wrote shared memory"
                            : "");
    else
      EXPECT_EQ(WEXITSTATUS(status), 0) << "1: the reader saw a broken invariant; 2: setup failed";
  }
  h.ptr<Ctl>(c)->stop.store(1);
  for (pid_t pid : writers) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "writer status " << status;
  }
  h.recover();
  EXPECT_EQ(atomically(l, [&](Tx& tx) { return audit(tx, accounts, names); }), 0u);
  EXPECT_EQ(l.stuck_locks(), 0u);
  EXPECT_EQ(l.busy_records(), 0u);
  for (auto& p : h.verify()) ADD_FAILURE() << p;
  TxHeap::detach(h);
}

}  // namespace
