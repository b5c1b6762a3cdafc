// tests/exec/executor_test.cpp: exec::Executor (executor.hpp EX1, EX2): one
// executor for the thread pool and, opted into per call, worker processes;
// the same Promise either way; map keeps input order; a nested isolated call
// and an isolated failure arrive as they would through proc::call.
#include "troupe/exec/executor.hpp"

#include <gtest/gtest.h>

#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

using namespace troupe;

namespace {

int add(int a, int b) { return a + b; }
int plus3(int x) { return x + 3; }
int nested(int x) { return proc::call<&plus3>(x + 2).get(); }  // a worker calling a worker
int refuse(int x) {
  if (x < 0) throw std::invalid_argument("negative: " + std::to_string(x));
  return x;
}

TEST(Executor, OneExecutorOptInIsolation) {
  exec::Executor ex;
  EXPECT_EQ(ex.submit(add, 1, 2).get(), 3);
  EXPECT_EQ(ex.submit(exec::isolated<&add>, 1, 2).get(), 3);
  Promise<int> local = ex.submit([](int x) { return x * 2; }, 21);
  Promise<int> remote = ex.submit(exec::isolated<&add>, 40, 2);
  EXPECT_EQ(local.get(), remote.get());
}

TEST(Executor, MapKeepsInputOrderOnBothSides) {
  exec::Executor ex;
  std::vector<int> in(50);
  std::iota(in.begin(), in.end(), 0);
  auto squares = ex.map([](int x) { return x * x; }, in).get();
  ASSERT_EQ(squares.size(), in.size());
  for (int i = 0; i < 50; ++i) EXPECT_EQ(squares[i], i * i);
  auto isolated = ex.map(exec::isolated<&plus3>, std::vector<int>{1, 2, 3}).get();
  EXPECT_EQ(isolated, (std::vector<int>{4, 5, 6}));
  EXPECT_EQ(ex.submit(exec::isolated<&nested>, 1).get(), 6);
}

TEST(Executor, FailuresArriveAsTheyWouldThroughProcCall) {
  exec::Executor ex;
  EXPECT_THROW(ex.submit([] { return refuse(-1); }).get(), std::invalid_argument);
  try {
    ex.submit(exec::isolated<&refuse>, -2).get();
    FAIL() << "expected the worker's exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::remote_exception);
    EXPECT_NE(std::string(e.what()).find("negative: -2"), std::string::npos) << e.what();
  }
  proc::CallOptions opt;
  opt.timeout = std::chrono::seconds(30);
  EXPECT_EQ(ex.submit_with(exec::isolated<&add>, opt, 2, 2).get(), 4);
}

}  // namespace
