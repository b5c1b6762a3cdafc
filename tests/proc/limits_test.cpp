// Worker processes at their limits: a worker out of descriptors, a budget file
// that cannot be opened, the machine-wide budget taken by someone else, a
// worker started from a thread that then ends, and bookkeeping that must not
// grow with calls that were cancelled after they started.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "proc/fd_util.hpp"
#include "troupe/proc/process.hpp"
#include "util/proc_fs.hpp"

using namespace troupe;
using namespace std::chrono_literals;
using troupe::test::open_fds;

namespace {

int add(int a, int b) { return a + b; }

using proc_test::read_all;

// Lives in a worker; can use up that worker's descriptors and give them back.
struct FdHog {
  int open_count() { return open_fds(); }
  // Lowers the soft RLIMIT_NOFILE and opens descriptors until the next
  // fails, then closes `spare` of them: a message with more descriptors than
  // that is truncated. (With none spare, UBSan's checks, which probe memory
  // through a pipe, fail in this process.)
  int exhaust(int spare) {
    getrlimit(RLIMIT_NOFILE, &saved);
    rlimit low = saved;
    low.rlim_cur = std::min<rlim_t>(saved.rlim_cur, 256);
    if (setrlimit(RLIMIT_NOFILE, &low) != 0) return -1;
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null >= 0) hoard.push_back(null);
    for (int i = 0; i < 4096 && null >= 0; ++i) {
      int d = fcntl(null, F_DUPFD_CLOEXEC, 0);
      if (d < 0) break;
      hoard.push_back(d);
    }
    int probe = fcntl(0, F_DUPFD_CLOEXEC, 0);
    if (probe >= 0) {  // not at the limit after all
      close(probe);
      return -1;
    }
    for (int i = 0; i < spare && !hoard.empty(); ++i) {
      close(hoard.back());
      hoard.pop_back();
    }
    return static_cast<int>(hoard.size());
  }
  int give_back() {
    for (int d : hoard) close(d);
    hoard.clear();
    setrlimit(RLIMIT_NOFILE, &saved);
    return 0;
  }
  std::string read(proc::Fd fd) { return read_all(std::move(fd)); }
  std::string read_all_of(std::vector<proc::Fd> fds) {
    std::string s;
    for (auto& fd : fds) s += read_all(std::move(fd));
    return s;
  }
  int ping() { return 7; }
  std::vector<int> hoard;
  rlimit saved{};
};

struct Napper {
  int nap(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
  }
  std::size_t unstarted() { return proc::detail::table_sizes().unstarted; }
};

// Waits up to `limit` for p, so that a lost reply fails the test, not hangs it.
template <class T>
bool settles(const Promise<T>& p, std::chrono::milliseconds limit = 10s) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (!p.ready() && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(1ms);
  return p.ready();
}

void retire_all() {
  proc::retire_idle_workers();
  for (int i = 0; i < 500 && proc::stats().alive > 0; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(proc::stats().alive, 0u);
}

std::string budget_file() {
  const char* f = std::getenv("TROUPE_TEST_BUDGET_FILE");  // set by proc_main.cpp
  return f ? f : "";
}

// Takes every slot of the budget file (proc_main.cpp: budget 2), as other
// programs on the machine would: OFD locks, so they conflict with ours too.
struct BudgetTaken {
  BudgetTaken() : fd(open(budget_file().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    for (off_t slot = 0; slot < 2; ++slot) {
      struct flock fl {};
      fl.l_type = F_WRLCK;
      fl.l_whence = SEEK_SET;
      fl.l_start = slot;
      fl.l_len = 1;
      ok = ok && fd >= 0 && fcntl(fd, F_OFD_SETLK, &fl) == 0;
    }
  }
  ~BudgetTaken() { close(fd); }
  int fd;
  bool ok = true;
};

}  // namespace

// A worker at its fd limit cannot take the descriptors of a call: the kernel
// truncates them (MSG_CTRUNC). The caller gets a typed error naming the
// cause, not a call that never answers; the worker keeps serving; nothing
// leaks on either side.
TEST(Limits, WorkerAtItsFdLimitRejectsTheCallWithAnError) {
  constexpr int kSpare = 4;
  proc::call<&add>(0, 0).get();  // the IO thread and its descriptors exist
  retire_all();
  int root_before = open_fds();
  {
    auto hog = proc::spawn<FdHog>().get();
    int worker_before = hog.call<&FdHog::open_count>().get();
    ASSERT_GT(hog.call<&FdHog::exhaust>(kSpare).get(), 0)
        << "could not bring the worker to its fd limit";
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    proc::Fd rd(p[0]), wr(p[1]);
    // More descriptors than the worker has room for: the kernel truncates.
    std::vector<proc::Fd> many;
    for (int i = 0; i < kSpare + 2; ++i) many.push_back(rd.dup());
    auto lost = hog.call<&FdHog::read_all_of>(std::move(many));
    ASSERT_TRUE(settles(lost)) << "the call was dropped: its caller would wait forever";
    try {
      lost.get();
      FAIL() << "a call whose descriptors never arrived returned";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::bad_message);
      std::string w = e.what();
      EXPECT_NE(w.find("MSG_CTRUNC"), std::string::npos) << w;
      EXPECT_NE(w.find("fd limit"), std::string::npos) << w;
      EXPECT_NE(w.find("FdHog::read_all_of"), std::string::npos) << w;
    }
    EXPECT_EQ(hog.call<&FdHog::ping>().get(), 7);  // still serving, still at the limit
    hog.call<&FdHog::give_back>().get();
    EXPECT_EQ(hog.call<&FdHog::open_count>().get(), worker_before)
        << "the worker leaked descriptors";
    // And descriptors reach it again.
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    proc::Fd rd2(p[0]), wr2(p[1]);
    ASSERT_EQ(write(wr2.get(), "again", 5), 5);
    wr2.reset();
    EXPECT_EQ(hog.call<&FdHog::read>(std::move(rd2)).get(), "again");
  }
  retire_all();
  EXPECT_EQ(open_fds(), root_before);
}

// PR_SET_PDEATHSIG fires when the thread that started a worker ends. A
// worker started for a call made on a short-lived thread must outlive that
// thread (the root starts workers from its IO thread only).
TEST(Limits, WorkerStartedFromAShortLivedThreadOutlivesIt) {
  retire_all();
  std::size_t lost_before = proc::stats().lost;
  proc::RemoteActor<Napper> napper;
  std::thread t([&] { napper = proc::spawn<Napper>().get(); });
  t.join();
  std::this_thread::sleep_for(100ms);  // a SIGKILL would have landed by now
  EXPECT_EQ(napper.call<&Napper::nap>(1).get(), 1);
  std::thread u([] { EXPECT_EQ(proc::call<&add>(2, 3).get(), 5); });
  u.join();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(proc::call<&add>(4, 5).get(), 9);
  EXPECT_EQ(napper.call<&Napper::nap>(1).get(), 1);
  EXPECT_EQ(proc::stats().lost, lost_before);
}

// A worker cannot be started (here: the budget file is a directory). The
// call fails with a typed error naming the cause, instead of throwing out of
// proc::call or ending the IO thread; once the cause is gone, calls work.
TEST(Limits, AWorkerThatCannotStartFailsTheCallWithTheCause) {
  retire_all();
  std::string file = budget_file();
  ASSERT_FALSE(file.empty());
  unlink(file.c_str());
  ASSERT_EQ(mkdir(file.c_str(), 0700), 0);
  Promise<int> p;
  EXPECT_NO_THROW(p = proc::call<&add>(1, 2));
  try {
    p.get();
    FAIL() << "a call ran without a worker";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::system);
    std::string w = e.what();
    EXPECT_NE(w.find("budget file"), std::string::npos) << w;
    EXPECT_NE(w.find("add"), std::string::npos) << w;
  }
  ASSERT_EQ(rmdir(file.c_str()), 0);
  EXPECT_EQ(proc::call<&add>(20, 22).get(), 42);  // the IO thread is still there
}

// The machine-wide budget is taken by other programs: calls wait in a queue
// (no thread sleeps for a slot, the caller returns at once), keep their
// timeouts and cancellation, and run when a slot frees.
TEST(Limits, CallsWaitForABudgetSlotWithoutBlockingAnyThread) {
  retire_all();
  auto taken = std::make_unique<BudgetTaken>();
  ASSERT_TRUE(taken->ok);
  // Made on another thread, so that a caller that blocks fails the test
  // (the slots are freed below) instead of hanging it.
  Promise<int> later, timed, cancelled;
  proc::CancelToken token;
  std::atomic<bool> returned{false};
  std::thread caller([&] {
    later = proc::call<&add>(1, 2);
    timed = proc::call_with<&add>({.timeout = 100ms}, 3, 4);
    cancelled = proc::call_with<&add>({.cancel = &token}, 5, 6);
    returned = true;
  });
  for (int i = 0; i < 500 && !returned; ++i) std::this_thread::sleep_for(1ms);
  if (!returned) {
    taken.reset();
    caller.join();
    FAIL() << "a caller waited for a budget slot";
  }
  caller.join();
  token.cancel();
  try {
    timed.get();
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::timeout) << e.what();
  }
  try {
    cancelled.get();
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::cancelled) << e.what();
  }
  EXPECT_EQ(proc::stats().alive, 0u);
  EXPECT_EQ(proc::detail::table_sizes().waiting, 1u);
  taken.reset();  // a slot frees: the queued call runs
  EXPECT_EQ(later.get(), 3);
  EXPECT_EQ(proc::detail::table_sizes().waiting, 0u);
  EXPECT_EQ(proc::detail::table_sizes().pending, 0u);
}

// A cancel that reaches a worker after the call started leaves nothing behind
// in the worker.
TEST(Limits, CancellingStartedCallsLeavesNoRecord) {
  auto napper = proc::spawn<Napper>().get();
  for (int i = 0; i < 20; ++i) {
    proc::CancelToken token;
    auto p = napper.call_with<&Napper::nap>({.cancel = &token}, 30);
    std::this_thread::sleep_for(10ms);  // it has started
    token.cancel();
    EXPECT_THROW(p.get(), Error);
  }
  EXPECT_EQ(napper.call<&Napper::unstarted>().get(), 0u);
}
