// tests/shm/trace_test.cpp: transactions in a trace (troupe/trace.hpp): each
// commit is a complete event with its heap, reads and writes, each abort an
// instant event; two threads conflicting on one word leave aborts that the
// trace counts as the heap's statistics do.
#include "troupe/trace.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_heap.hpp"
#include "troupe/shm/objects.hpp"

using namespace troupe;
using namespace troupe::shm;
using nlohmann::json;

namespace {

TEST(TxTrace, CommitsAndAborts) {
  Heap h = objects_test_heap::make_heap();
  TxHeap& txh = TxHeap::attach(h);
  Dict d = root_dict(txh, "d");
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("troupe_tx_trace_" + std::to_string(::getpid()) + ".json"))
                               .string();
  const std::uint64_t aborts_before = txh.stats().aborts;
  trace::start(path);
  atomically(txh, [&](Tx& tx) { d.set(tx, 1L, 10L); });                       // commit, writes
  EXPECT_EQ(atomically(txh, [&](Tx& tx) { return d.get_int(tx, 1L); }), 10);  // read-only
  EXPECT_THROW(atomically(txh,
                          [&](Tx& tx) {
                            d.set(tx, 2L, 1L);
                            throw std::runtime_error("user error");  // rolls back: an abort
                          }),
               std::runtime_error);
  // Two threads adding to one key: conflicts, each retried until it commits.
  constexpr int kAdds = 2000;
  std::vector<std::thread> ts;
  for (int t = 0; t < 2; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < kAdds; ++i) atomically(txh, [&](Tx& tx) { d.add(tx, 1L, 1L); });
    });
  for (auto& t : ts) t.join();
  trace::stop();
  const std::uint64_t aborts = txh.stats().aborts - aborts_before;

  std::ifstream in(path);
  json doc = json::parse(in);
  std::size_t commits = 0, with_writes = 0, read_only = 0, abort_events = 0;
  for (const json& e : doc["traceEvents"]) {
    if (e.value("cat", "") != "tx") continue;
    EXPECT_EQ(e["args"]["heap"], h.name());
    if (e["name"] == "commit") {
      ASSERT_EQ(e["ph"], "X");
      EXPECT_GE(e["dur"].get<double>(), 0.0);
      ++commits;
      (e["args"]["writes"].get<int>() > 0 ? with_writes : read_only) += 1;
    } else {
      ASSERT_EQ(e["name"], "abort");
      ASSERT_EQ(e["ph"], "i");
      ++abort_events;
    }
  }
  EXPECT_EQ(commits, 2u + 2 * kAdds);
  EXPECT_EQ(with_writes, 1u + 2 * kAdds);
  EXPECT_EQ(read_only, 1u);
  EXPECT_EQ(abort_events, aborts);  // the user error's rollback and every conflict
  EXPECT_GE(abort_events, 1u);
  EXPECT_EQ(atomically(txh, [&](Tx& tx) { return d.get_int(tx, 1L); }), 10 + 2 * kAdds);
  std::filesystem::remove(path);
  TxHeap::detach(h);
}

}  // namespace
