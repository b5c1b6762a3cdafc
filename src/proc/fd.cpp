// src/proc/fd.cpp: proc::Fd, an owned file descriptor (troupe/proc/fd.hpp).
#include "troupe/proc/fd.hpp"

#include <fcntl.h>
#include <fmt/core.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "troupe/error.hpp"

namespace troupe::proc {

void Fd::reset(int fd) noexcept {
  if (fd_ >= 0 && fd_ != fd) ::close(fd_);
  fd_ = fd;
}

Fd Fd::dup() const {
  int d = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
  if (d < 0) throw errno_error(Errc::system, errno, fmt::format("dup of fd {}", fd_));
  return Fd(d);
}

}  // namespace troupe::proc
