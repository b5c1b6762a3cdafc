// tests/proc/test_main.hpp: what every process test's main() does: a private
// budget file (so that parallel test binaries keep out of each other's way),
// shared with the binary's own workers through TROUPE_TEST_BUDGET_FILE;
// proc::init first (this binary, started again as a worker, serves calls
// there instead of running the tests); the tests; the file removed.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "troupe/proc/process.hpp"

namespace proc_test {

// /tmp/troupe-test-<tag>-<uid>-<pid> of the test process, inherited by its
// workers.
inline std::string budget_file(const char* tag) {
  if (const char* inherited = std::getenv("TROUPE_TEST_BUDGET_FILE")) return inherited;
  std::string f = std::string("/tmp/troupe-test-") + tag + "-" + std::to_string(::getuid()) + "-" +
                  std::to_string(::getpid());
  ::setenv("TROUPE_TEST_BUDGET_FILE", f.c_str(), 1);
  return f;
}

// proc::init with `o` (its budget_file from budget_file()), then the tests.
inline int run_tests(int argc, char** argv, const troupe::proc::Options& o) {
  troupe::proc::init(argc, argv, o);
  ::testing::InitGoogleTest(&argc, argv);
  int rc = RUN_ALL_TESTS();
  ::unlink(o.budget_file.c_str());
  return rc;
}

}  // namespace proc_test
