// main() for the process tests that share it: a budget of 2 workers
// (test_main.hpp: a private budget file, proc::init first).
#include "proc/test_main.hpp"

int main(int argc, char** argv) {
  troupe::proc::Options o;
  o.budget = 2;
  o.idle_timeout = std::chrono::milliseconds(1500);
  o.budget_file = proc_test::budget_file("budget");
  return proc_test::run_tests(argc, argv, o);
}
