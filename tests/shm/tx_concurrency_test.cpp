// tests/shm/tx_concurrency_test.cpp: threads of one process racing on
// the same words: single-word atomic ops beside transactions (no lost update),
// opacity (no transaction ever sees another's half-applied writes, checked
// inside the block), snapshot extension (X8), progress under heavy conflict (irrevocable mode),
// reference counts of shared records under racing stores and drops, and
// readers racing the immediate frees and reuse of what they read (X5, T8).
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <random>
#include <thread>
#include <troupe/shm/objects.hpp>
#include <vector>

#include "test_heap.hpp"

using namespace troupe::shm;

using objects_test_heap::make_heap;

namespace {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int kOps = 2000;
#else
constexpr int kOps = 20000;
#endif

TEST(ShmTxConcurrency, AtomicOpsAndTransactionsOnOneWord) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  atomically(l, [&](Tx& tx) { d.set(tx, "n", 0); });
  Offset word = atomically(l, [&](Tx& tx) { return d.payload_word(tx, "n"); });
  std::vector<std::thread> ts;
  for (int t = 0; t < 2; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < kOps; ++i) l.fetch_add(word, 1);
    });
  for (int t = 0; t < 2; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < kOps; ++i) atomically(l, [&](Tx& tx) { d.add(tx, "n", 1); });
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(atomically(l, [&](Tx& tx) { return d.get_int(tx, "n"); }), 4 * kOps);
  EXPECT_EQ(l.stuck_locks(), 0u);
  EXPECT_EQ(l.exchange(word, 7), static_cast<std::uint64_t>(4 * kOps));
  EXPECT_EQ(l.load(word), 7u);
  TxHeap::detach(h);
}

// X8: a read that meets a version above the snapshot, committed by another
// thread after the transaction began, extends the snapshot when nothing read
// so far changed (no retry, the new value is returned), and aborts when
// something did (the retry sees both new values).
TEST(ShmTxConcurrency, SnapshotExtendsOnlyOverUnchangedReads) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  atomically(l, [&](Tx& tx) {
    d.set(tx, "x", 0);
    d.set(tx, "y", 0);
  });
  auto commit_elsewhere = [&](std::vector<const char*> keys) {
    std::thread([&] {
      atomically(l, [&](Tx& tx) {
        for (auto k : keys) d.add(tx, k, 1);
      });
    }).join();
  };
  unsigned attempts = 0;
  auto [x, y] = atomically(l, [&](Tx& tx) {
    ++attempts;
    std::int64_t a = d.get_int(tx, "x");
    if (tx.attempt() == 0) commit_elsewhere({"y"});  // y is newer than rv now
    return std::pair{a, d.get_int(tx, "y")};
  });
  EXPECT_EQ(attempts, 1u) << "an unchanged read set extends the snapshot";
  EXPECT_EQ(x, 0);
  EXPECT_EQ(y, 1);
  attempts = 0;
  auto [x2, y2] = atomically(l, [&](Tx& tx) {
    ++attempts;
    std::int64_t a = d.get_int(tx, "x");
    if (tx.attempt() == 0) commit_elsewhere({"x", "y"});  // x, already read, changed
    return std::pair{a, d.get_int(tx, "y")};
  });
  EXPECT_EQ(attempts, 2u) << "a changed read set must abort, not extend";
  EXPECT_EQ(x2, 1);
  EXPECT_EQ(y2, 2);
  EXPECT_EQ(l.stuck_locks(), 0u);
  TxHeap::detach(h);
}

// x + y == 0 and list size == record.len at every transaction boundary; the
// readers check both inside the block (T1).
TEST(ShmTxConcurrency, NoTransactionSeesAHalfAppliedOne) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Record r = atomically(l, [&](Tx& tx) {
    Record rec = new_record(tx, {"x", "y", "len", "items"});
    rec.set(tx, "x", 0);
    rec.set(tx, "y", 0);
    rec.set(tx, "len", 0);
    rec.set(tx, "items", new_list(tx, 2));
    set_root(tx, "r", rec);
    return rec;
  });
  std::atomic<int> violations{0}, checks{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < 2; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < kOps; ++i)
        atomically(l, [&](Tx& tx) {
          std::int64_t k = (i % 7) - 3;
          r.set(tx, "x", r.get(tx, "x").as_int() + k);
          r.set(tx, "y", r.get(tx, "y").as_int() - k);
          List items = r.get(tx, "items").as_list();
          if ((i + t) % 3 != 0 || items.size(tx) == 0)
            items.append(tx, std::string(20, 'q'));
          else
            items.pop(tx);
          r.set(tx, "len", static_cast<long long>(items.size(tx)));
        });
    });
  std::thread reader([&] {
    while (!stop.load()) {
      atomically(l, [&](Tx& tx) {
        if (r.get(tx, "x").as_int() + r.get(tx, "y").as_int() != 0) violations.fetch_add(1);
        List items = r.get(tx, "items").as_list();
        if (static_cast<std::int64_t>(items.size(tx)) != r.get(tx, "len").as_int())
          violations.fetch_add(1);
      });
      checks.fetch_add(1);
    }
  });
  for (auto& t : ts) t.join();
  stop.store(true);
  reader.join();
  EXPECT_EQ(violations.load(), 0);
  EXPECT_GT(checks.load(), 0);
  EXPECT_EQ(l.stuck_locks(), 0u);
  EXPECT_EQ(l.busy_records(), 0u);
  TxHeap::detach(h);
}

// Long transactions that read every key and write one all conflict; each
// still finishes (after enough aborts it runs irrevocably).
TEST(ShmTxConcurrency, HeavyConflictStillFinishes) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  atomically(l, [&](Tx& tx) {
    for (int k = 0; k < 64; ++k) d.set(tx, k, 0);
  });
  std::vector<std::thread> ts;
  const int per = kOps / 20;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < per; ++i)
        atomically(l, [&](Tx& tx) {
          std::int64_t sum = 0;
          for (int k = 0; k < 64; ++k) sum += d.get_int(tx, k);
          d.add(tx, (t * 17 + i) % 64, 1);
          (void)sum;
        });
    });
  for (auto& t : ts) t.join();
  std::int64_t total = atomically(l, [&](Tx& tx) {
    std::int64_t s = 0;
    for (int k = 0; k < 64; ++k) s += d.get_int(tx, k);
    return s;
  });
  EXPECT_EQ(total, 4 * per);
  auto st = l.stats();
  std::printf("  %llu commits, %llu aborts, %llu irrevocable\n",
              static_cast<unsigned long long>(st.commits),
              static_cast<unsigned long long>(st.aborts),
              static_cast<unsigned long long>(st.irrevocable));
  TxHeap::detach(h);
}

// Records shared between a pool and a holders dict, stored, dropped and
// replaced by racing threads: inside every audit transaction each record's
// count equals the references to it (V2: counts are transactional), and once
// everything is dropped no byte is left.
TEST(ShmTxConcurrency, SharedRecordCountsStayExact) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict pool = root_dict(l, "pool");
  Dict holders = root_dict(l, "holders", 64);
  constexpr int kPool = 8, kHolders = 32;
  h.flush_thread_cache();
  const std::size_t base = h.stats().published - l.tx_heap_bytes();
  auto make = [](Tx& tx, int n) {
    Record r = new_record(tx, {"name", "hits"});
    r.set(tx, "name", std::string(24 + n % 40, static_cast<char>('a' + n % 26)));
    r.set(tx, "hits", 0);
    return r;
  };
  atomically(l, [&](Tx& tx) {
    for (int k = 0; k < kPool; ++k) pool.set(tx, k, make(tx, k));
  });
  std::atomic<std::uint64_t> bad{0}, audits{0};
  auto audit = [&](Tx& tx) {
    std::map<Offset, std::uint64_t> want;
    auto count = [&](const Value&, const Value& v) {
      if (v.kind() == Kind::record) ++want[v.ref()];
    };
    pool.for_each(tx, count);
    holders.for_each(tx, count);
    std::uint64_t wrong = 0;
    for (auto [off, n] : want) wrong += tx.read(off + 24) != n;  // word 3: refs
    return wrong;
  };
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      std::mt19937 rng(t + 1);
      for (int i = 0; i < kOps / 10; ++i) {
        int k = static_cast<int>(rng() % kPool), j = static_cast<int>(rng() % kHolders);
        switch (rng() % 8) {
          case 0:
            atomically(l, [&](Tx& tx) { pool.set(tx, k, make(tx, i)); });
            break;
          case 1:
          case 2:
            atomically(l, [&](Tx& tx) { holders.erase(tx, j); });
            break;
          case 3:
            bad += atomically(l, [&](Tx& tx) { return audit(tx); });
            ++audits;
            break;
          default:
            atomically(l, [&](Tx& tx) {
              Record r = pool.get(tx, k)->as_record();
              holders.set(tx, j, r);
              r.set(tx, "hits", r.get(tx, "hits").as_int() + 1);
            });
        }
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_GT(audits.load(), 0u);
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_EQ(atomically(l, [&](Tx& tx) { return audit(tx); }), 0u);
  atomically(l, [&](Tx& tx) {
    for (int k = 0; k < kPool; ++k) pool.erase(tx, k);
    for (int j = 0; j < kHolders; ++j) holders.erase(tx, j);
  });
  h.flush_thread_cache();
  EXPECT_EQ(h.stats().published - l.tx_heap_bytes(), base) << "leaked bytes";
  EXPECT_EQ(l.stuck_locks(), 0u);
  EXPECT_EQ(l.busy_records(), 0u);
  for (auto& p : h.verify()) ADD_FAILURE() << p;
  TxHeap::detach(h);
}

// X5, T8: blocks are freed as soon as the transaction that unlinked them
// commits, with no grace period, while readers may still hold their offsets.
// Writers replace strings of varying length, tuples holding strings, records
// (with their schema and long field names) and whole lists, and shrink a
// list by pops, in a loop, so blocks are freed and reused all the time;
// readers read all of them in transactions and check, inside the block, that
// each value is one that was ever written (never garbage from a reused
// block), and that the list's items match its size.
std::string racing_string(long k, std::size_t len) {
  std::string s = std::to_string(k) + ":" + std::to_string(len) + ":";
  s.resize(len, static_cast<char>('a' + k % 26));
  return s;
}
bool is_racing_string(long k, const std::string& s) {
  return s.size() >= 9 && s == racing_string(k, s.size());
}
std::string racing_item(std::size_t i) {
  return std::string(9 + i % 40, static_cast<char>('A' + i % 26));
}

TEST(ShmTxConcurrency, ReadersRaceImmediateFreesAndReuse) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  constexpr long kKeys = 8;
  Dict d = root_dict(l, "d", 16);
  h.flush_thread_cache();
  const std::size_t base = h.stats().published - l.tx_heap_bytes();
  auto record = [](Tx& tx, long k, std::size_t len) {
    Record r = new_record(tx, {"a long field name", "label"});
    r.set(tx, "a long field name", static_cast<long long>(len));
    r.set(tx, "label", racing_string(k, len));
    return r;
  };
  atomically(l, [&](Tx& tx) {
    for (long k = 0; k < kKeys; ++k) {
      d.set(tx, k, racing_string(k, 9));
      d.set(tx, k + 100, Value::tuple({Value(static_cast<long long>(k)), racing_string(k, 9)}));
      d.set(tx, k + 200, record(tx, k, 9));
    }
    set_root(tx, "list", new_list(tx));
  });
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> bad{0}, reads{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 2; ++t)  // replace strings, tuples and records
    ts.emplace_back([&, t] {
      std::mt19937 rng(t + 7);
      for (int i = 0; i < kOps; ++i) {
        long k = static_cast<long>(rng() % kKeys);
        std::size_t len = 9 + rng() % 400;
        atomically(l, [&](Tx& tx) {
          switch (i % 3) {
            case 0:
              d.set(tx, k, racing_string(k, len));
              break;
            case 1:
              d.set(tx, k + 100,
                    Value::tuple({Value(static_cast<long long>(k)), racing_string(k, len)}));
              break;
            default:
              d.set(tx, k + 200, record(tx, k, len));
          }
        });
      }
    });
  ts.emplace_back([&] {  // grow and shrink the list, and replace it whole
    std::mt19937 rng(3);
    for (int i = 0; i < kOps; ++i)
      atomically(l, [&](Tx& tx) {
        List lst = get_root(tx, "list").as_list();
        std::size_t n = lst.size(tx);
        if (rng() % 16 == 0) {
          List fresh = new_list(tx, 1);
          for (std::size_t j = 0; j < rng() % 20; ++j) fresh.append(tx, racing_item(j));
          set_root(tx, "list", fresh);  // the old list, its items and strings are freed
        } else if (n < 40 && rng() % 2 == 0) {
          lst.append(tx, racing_item(n));
        } else if (n > 0) {
          lst.pop(tx);
        }
      });
  });
  for (int t = 0; t < 2; ++t)
    ts.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        // A settled length that is still absurd is an Error (corruption):
        // here it can only be garbage accepted from a reused block.
        std::uint64_t wrong = 0;
        try {
          wrong = atomically(l, [&](Tx& tx) {
            std::uint64_t w = 0;
            for (long k = 0; k < kKeys; ++k) {
              w += !is_racing_string(k, d.get(tx, k)->as_string());
              Value tuple = *d.get(tx, k + 100);
              const auto& t = tuple.as_tuple();
              w += t.size() != 2 || t[0].as_int() != k || !is_racing_string(k, t[1].as_string());
              Record r = d.get(tx, k + 200)->as_record();
              std::string label = r.get(tx, "label").as_string();
              w += !is_racing_string(k, label) || r.get(tx, "a long field name").as_int() !=
                                                      static_cast<std::int64_t>(label.size());
            }
            List lst = get_root(tx, "list").as_list();
            std::vector<Value> items = lst.items(tx);
            w += items.size() != lst.size(tx);
            for (std::size_t i = 0; i < items.size(); ++i)
              w += items[i].as_string() != racing_item(i);
            return w;
          });
        } catch (const troupe::Error& e) {
          ADD_FAILURE() << e.what();
          wrong = 1;
        }
        bad.fetch_add(wrong);
        reads.fetch_add(1);
      }
    });
  for (int t = 0; t < 3; ++t) ts[t].join();
  stop.store(true);
  for (std::size_t t = 3; t < ts.size(); ++t) ts[t].join();
  EXPECT_EQ(bad.load(), 0u) << "a reader accepted a value that was never written";
  EXPECT_GT(reads.load(), 0u);
  auto st = l.stats();
  std::printf("  %llu reader transactions, %llu commits, %llu aborts\n",
              static_cast<unsigned long long>(reads.load()),
              static_cast<unsigned long long>(st.commits),
              static_cast<unsigned long long>(st.aborts));
  atomically(l, [&](Tx& tx) {
    for (long k = 0; k < kKeys; ++k) {
      d.erase(tx, k);
      d.erase(tx, k + 100);
      d.erase(tx, k + 200);
    }
    set_root(tx, "list", Value());
  });
  h.flush_thread_cache();
  EXPECT_EQ(h.stats().published - l.tx_heap_bytes(), base + 16) << "leaked bytes (the root cell: 16)";
  EXPECT_EQ(l.stuck_locks(), 0u);
  EXPECT_EQ(l.busy_records(), 0u);
  for (auto& p : h.verify()) ADD_FAILURE() << p;
  TxHeap::detach(h);
}

}  // namespace
