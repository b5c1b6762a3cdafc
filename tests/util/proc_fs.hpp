// tests/util/proc_fs.hpp: what /proc says about this test process, for tests
// that check nothing leaks: open descriptors, threads, child processes.
#pragma once

#include <dirent.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

namespace troupe::test {

// Entries in a /proc directory, without "." and "..".
inline int count_entries(const char* dir) {
  int n = 0;
  if (DIR* d = opendir(dir)) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
  }
  return n;
}

// Open descriptors, not counting the one used to list them.
inline int open_fds() { return count_entries("/proc/self/fd") - 1; }

inline int thread_count() { return count_entries("/proc/self/task"); }

// Living (or zombie) processes whose parent is this process.
inline int children() {
  int n = 0;
  std::string me = std::to_string(getpid());
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      std::ifstream f(std::string("/proc/") + e->d_name + "/stat");
      std::string s((std::istreambuf_iterator<char>(f)), {});
      auto close = s.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream in(s.substr(close + 2));
      std::string state, ppid;
      in >> state >> ppid;
      if (ppid == me) ++n;
    }
    closedir(d);
  }
  return n;
}

}  // namespace troupe::test
