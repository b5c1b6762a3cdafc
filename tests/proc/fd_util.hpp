// tests/proc/fd_util.hpp: reads a descriptor to its end; the proc tests also
// call it in workers (it is registered where a test names it in a call).
#pragma once

#include <unistd.h>

#include <string>
#include <troupe/proc/fd.hpp>

namespace proc_test {

inline std::string read_all(troupe::proc::Fd fd) {
  std::string s;
  char buf[256];
  ssize_t n;
  while ((n = ::read(fd.get(), buf, sizeof buf)) > 0) s.append(buf, static_cast<std::size_t>(n));
  return s;
}

}  // namespace proc_test
