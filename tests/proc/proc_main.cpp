// main() for the process tests: proc::init first, so that this test binary,
// started again as a worker, serves calls instead of running the tests.
// A private budget file keeps parallel test binaries out of each other's way.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "troupe/proc/process.hpp"

int main(int argc, char** argv) {
  troupe::proc::Options o;
  o.budget = 2;
  o.idle_timeout = std::chrono::milliseconds(1500);
  o.budget_file = "/tmp/troupe-test-budget-" + std::to_string(getuid()) + "-" +
                  std::to_string(getpid());
  const char* inherited = std::getenv("TROUPE_TEST_BUDGET_FILE");
  if (inherited) o.budget_file = inherited;  // workers use the parent's
  else setenv("TROUPE_TEST_BUDGET_FILE", o.budget_file.c_str(), 1);
  troupe::proc::init(argc, argv, o);
  ::testing::InitGoogleTest(&argc, argv);
  int rc = RUN_ALL_TESTS();
  unlink(o.budget_file.c_str());
  return rc;
}
