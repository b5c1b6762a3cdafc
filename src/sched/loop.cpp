// src/sched/loop.cpp: the event-loop scheduler (loop.hpp; LP1, LP2 there).
#include "troupe/sched/loop.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "troupe/error.hpp"

namespace troupe::sched {

LoopScheduler::LoopScheduler() {
  fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd_ < 0) throw errno_error(Errc::system, errno, "eventfd");
}

LoopScheduler::~LoopScheduler() {
  run_pending();
  ::close(fd_);
}

void LoopScheduler::schedule(Work* w) {
  q_.push(w);
  std::uint64_t one = 1;
  // LP1: after queueing. EAGAIN only if the counter would overflow: still readable.
  [[maybe_unused]] ssize_t r = ::write(fd_, &one, sizeof one);
}

std::size_t LoopScheduler::run_pending(std::size_t max) {
  std::uint64_t v;
  [[maybe_unused]] ssize_t r = ::read(fd_, &v, sizeof v);  // LP1: reset first
  Scheduler* prev = set_current(this);                     // LP2
  loop_thread_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  std::size_t n = 0;
  while (n < max) {
    Work* w = q_.try_pop();
    if (!w) {
      if (q_.size_hint() > 0) continue;  // a producer is mid-push: it will finish
      break;
    }
    w->run();
    ++n;
  }
  set_current(prev);
  if (q_.size_hint() > 0) {  // stopped at max: keep the fd readable
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t w = ::write(fd_, &one, sizeof one);
  }
  return n;
}

void LoopScheduler::help_until(Waiter& w) {
  bool armed = false;
  while (!w.ready()) {
    if (run_pending(1) > 0) continue;
    if (!armed) {
      w.arm(this);
      armed = true;
      continue;
    }
    // run_pending() reset the eventfd before finding nothing; a wake_helpers()
    // that came before that reset was consumed by it, so re-check readiness
    // after the reset and only then sleep (a later wake leaves fd readable).
    if (w.ready()) break;
    pollfd p{fd_, POLLIN, 0};
    ::poll(&p, 1, -1);  // new work or wake_helpers() makes fd readable
  }
}

void LoopScheduler::wake_helpers() {
  std::uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(fd_, &one, sizeof one);
}

void LoopScheduler::wait_idle() {
  while (run_pending() > 0) {
  }
}

}  // namespace troupe::sched
