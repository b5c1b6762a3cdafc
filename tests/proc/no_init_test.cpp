// tests/proc/no_init_test.cpp: a program that never calls proc::init gets a
// typed error from its first isolated call or spawn, at once (without init a
// worker would be this program started again, running main from the top).
#include <gtest/gtest.h>

#include "troupe/proc/process.hpp"

namespace {

int twice(int x) { return 2 * x; }
struct Counter {
  int n = 0;
  int add(int k) { return n += k; }
};

TEST(NoInit, IsolatedCallFailsWithInvalidArgument) {
  auto p = troupe::proc::call<&twice>(21);
  try {
    p.get();
    FAIL() << "the call ran without proc::init";
  } catch (const troupe::Error& e) {
    EXPECT_EQ(e.code(), troupe::Errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("proc::init"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(troupe::proc::worker_pids().empty());
}

TEST(NoInit, SpawnFailsWithInvalidArgument) {
  auto p = troupe::proc::spawn<Counter>();
  EXPECT_THROW(p.get(), troupe::Error);
}

}  // namespace
