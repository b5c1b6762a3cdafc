// The loop scheduler driven by a plain epoll loop on a thread the test owns:
// behaviours sent from other threads run on the loop thread, in order; the
// eventfd is readable exactly when work is pending; get() on the loop thread
// runs loop work instead of deadlocking.
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "troupe/troupe.hpp"

using namespace troupe;

namespace {
struct Log {
  std::vector<int> seen;
  std::thread::id ran_on;
};
bool readable(int fd) {
  int ep = epoll_create1(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  int n = epoll_wait(ep, &ev, 1, 0);
  close(ep);
  return n == 1;
}
}  // namespace

TEST(LoopScheduler, EpollLoopRunsActorsOnItsThread) {
  sched::LoopScheduler loop;
  auto log = make_actor_on<Log>(loop);
  EXPECT_FALSE(readable(loop.fd()));

  constexpr int kSenders = 3, kPer = 500;
  std::vector<std::thread> senders;
  for (int s = 0; s < kSenders; ++s)
    senders.emplace_back([&, s] {
      for (int i = 0; i < kPer; ++i)
        when(log, [s, i](Log& l) {
          l.seen.push_back(s * 100000 + i);
          l.ran_on = std::this_thread::get_id();
        });
    });

  int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, loop.fd(), &ev), 0);
  std::size_t ran = 0;
  while (ran < kSenders * kPer) {
    epoll_event out;
    int n = epoll_wait(ep, &out, 1, 5000);
    ASSERT_EQ(n, 1) << "the eventfd never became readable";
    ran += loop.run_pending();
  }
  close(ep);
  for (auto& t : senders) t.join();
  loop.run_pending();
  EXPECT_FALSE(readable(loop.fd()));

  // Read the log through the loop as well: get() on this thread drives it.
  sched::Scheduler* prev = sched::set_current(&loop);
  auto res = when(log, [](Log& l) { return std::make_pair(l.seen, l.ran_on); }).get();
  sched::set_current(prev);
  EXPECT_EQ(res.second, std::this_thread::get_id());
  ASSERT_EQ(res.first.size(), static_cast<std::size_t>(kSenders * kPer));
  std::vector<int> last(kSenders, -1);
  for (int v : res.first) {  // per-sender order is kept
    EXPECT_EQ(v % 100000, last[static_cast<std::size_t>(v / 100000)] + 1);
    last[static_cast<std::size_t>(v / 100000)] = v % 100000;
  }
}

TEST(LoopScheduler, MixesWithPoolActors) {
  sched::LoopScheduler loop;
  auto on_loop = make_actor_on<Log>(loop);
  auto on_pool = make_actor<Log>();
  // A pool behaviour sends to the loop actor; the loop runs it.
  when(on_pool, [on_loop](Log&) { when(on_loop, [](Log& l) { l.seen.push_back(7); }); });
  troupe::wait_idle();
  while (loop.run_pending() == 0) std::this_thread::yield();
  sched::Scheduler* prev = sched::set_current(&loop);
  EXPECT_EQ(when(on_loop, [](Log& l) { return l.seen.size(); }).get(), 1u);
  sched::set_current(prev);
}

// A get() on the loop thread for a promise the pool fulfils: the pool's
// wake_helpers() may land just before help_until's drain resets the eventfd,
// which used to leave the loop thread in poll() forever with the value there.
TEST(LoopScheduler, GetOnTheLoopThreadSeesAPoolFulfilment) {
  sched::LoopScheduler loop;
  auto on_pool = make_actor<Log>();
  sched::Scheduler* prev = sched::set_current(&loop);
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr int kRounds = 300;
#else
  constexpr int kRounds = 3000;
#endif
  for (int i = 0; i < kRounds; ++i) EXPECT_EQ(when(on_pool, [i](Log&) { return i; }).get(), i);
  sched::set_current(prev);
}
