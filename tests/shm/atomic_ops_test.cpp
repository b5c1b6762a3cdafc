// tests/shm/atomic_ops_test.cpp: the single-word atomic operations
// (TxHeap::fetch_add, exchange, Dict::increment) on int values: outside a
// transaction they apply at once; inside one they are part of it (rolled
// back with it, applied once however often it retries); on anything but an
// int value they throw. Dict::increment's lookup without logs (SO1-SO2 of
// src/shm/tx_private.hpp) races transactions that unlink, move and rehash
// its entries and loses no increment; killed at its fault points it applies
// once or not at all and leaves no lock behind.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <functional>
#include <mutex>
#include <random>
#include <thread>
#include <troupe/detail/platform.hpp>
#include <troupe/shm/objects.hpp>
#include <vector>

#include "../sanitizers.hpp"
#include "shm/fault.hpp"
#include "shm/tx_private.hpp"
#include "shm_test_util.hpp"
#include "test_heap.hpp"

using namespace troupe::shm;
using troupe::Error;

using objects_test_heap::make_heap;

namespace {

using troupe_tests::kSanitized;

struct Boom {};

// Nothing left behind: no stripe locked, no record busy, the heap sound.
void expect_settled(TxHeap& l, Heap& h) {
  EXPECT_EQ(l.stuck_locks(), 0u);
  EXPECT_EQ(l.busy_records(), 0u);
  EXPECT_TRUE(h.verify().empty());
}

TEST(ShmAtomicOps, InsideATransactionTheyArePartOfIt) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  atomically(l, [&](Tx& tx) { d.set(tx, "n", 10); });
  Offset n = atomically(l, [&](Tx& tx) { return d.payload_word(tx, "n"); });

  // Rolled back with a user exception.
  EXPECT_THROW(atomically(l,
                          [&](Tx&) {
                            EXPECT_EQ(l.fetch_add(n, 5), 10);
                            EXPECT_EQ(l.exchange(n, 99), 15u);
                            throw Boom{};
                          }),
               Boom);
  EXPECT_EQ(l.load(n), 10u);

  // Applied once although the transaction runs twice, and seen by its reads.
  int runs = 0;
  atomically(l, [&](Tx& tx) {
    ++runs;
    EXPECT_EQ(l.fetch_add(n, 5), 10);
    EXPECT_EQ(d.get_int(tx, "n"), 15);
    if (tx.attempt() == 0) throw TxConflict{};
  });
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(l.load(n), 15u);

  // Committed with the transaction's other writes.
  atomically(l, [&](Tx& tx) {
    d.set(tx, "m", 1);
    EXPECT_EQ(l.exchange(n, 7), 15u);
  });
  atomically(l, [&](Tx& tx) {
    EXPECT_EQ(d.get_int(tx, "n"), 7);
    EXPECT_EQ(d.get_int(tx, "m"), 1);
  });
  expect_settled(l, h);
}

TEST(ShmAtomicOps, InsideATransactionOfAnotherHeapTheyThrow) {
  Heap h1 = make_heap(), h2 = make_heap();
  TxHeap& l1 = TxHeap::attach(h1);
  TxHeap& l2 = TxHeap::attach(h2);
  Dict d1 = root_dict(l1, "d"), d2 = root_dict(l2, "d");
  atomically(l2, [&](Tx& tx) { d2.set(tx, "n", 1); });
  Offset n2 = atomically(l2, [&](Tx& tx) { return d2.payload_word(tx, "n"); });
  EXPECT_THROW(atomically(l1,
                          [&](Tx& tx) {
                            d1.set(tx, "a", 1);
                            l2.fetch_add(n2, 1);
                          }),
               Error);
  EXPECT_THROW(atomically(l1,
                          [&](Tx& tx) {
                            d1.set(tx, "a", 1);
                            atomically(l2, [&](Tx& inner) { d2.set(inner, "n", 2); });
                          }),
               Error);
  EXPECT_EQ(l2.load(n2), 1u);
  atomically(l1, [&](Tx& tx) { EXPECT_FALSE(d1.contains(tx, "a")); });
  EXPECT_EQ(l1.busy_records(), 0u);
  EXPECT_EQ(l2.busy_records(), 0u);
}

TEST(ShmAtomicOps, OnlyIntValues) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  const std::string text(40, 't');
  atomically(l, [&](Tx& tx) {
    d.set(tx, "s", text);
    d.set(tx, "none", Value());
    d.set(tx, "real", 1.5);
    d.set(tx, "n", 1);
  });
  auto word = [&](const char* key) {
    return atomically(l, [&](Tx& tx) { return d.payload_word(tx, key); });
  };
  for (const char* key : {"s", "none", "real"}) {
    Offset w = word(key);
    EXPECT_THROW(l.fetch_add(w, 16), Error) << key;
    EXPECT_THROW(l.exchange(w, 16), Error) << key;
    EXPECT_THROW(atomically(l, [&](Tx&) { l.fetch_add(w, 16); }), Error) << key;
  }
  // A word that held an int and now holds a string.
  Offset n = word("n");
  atomically(l, [&](Tx& tx) { d.set(tx, "n", text); });
  EXPECT_THROW(l.fetch_add(n, 16), Error);
  atomically(l, [&](Tx& tx) {
    EXPECT_EQ(d.get(tx, "s")->as_string(), text);
    EXPECT_TRUE(d.get(tx, "none")->is_none());
    EXPECT_EQ(d.get(tx, "real")->as_double(), 1.5);
    EXPECT_EQ(d.get(tx, "n")->as_string(), text);
  });
  expect_settled(l, h);
}

TEST(ShmAtomicOps, DictIncrementAddsInsertsAndRefuses) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  const std::string long_key(100, 'k');  // not inline (V3): a transaction's path
  atomically(l, [&](Tx& tx) {
    d.set(tx, "n", 10);
    d.set(tx, "s", "text");
    d.set(tx, long_key, 1);
  });
  EXPECT_EQ(d.increment(l, "n", 5), 15);
  EXPECT_EQ(d.increment(l, "n", -20), -5);
  EXPECT_EQ(d.increment(l, "absent", 3), 3);  // inserted
  EXPECT_EQ(d.increment(l, "absent"), 4);
  EXPECT_EQ(d.increment(l, long_key, 2), 3);
  EXPECT_EQ(d.increment(l, 7L, 1), 1);
  EXPECT_THROW(d.increment(l, "s", 1), Error);
  // Inside a transaction it is add(): rolled back with it.
  EXPECT_THROW(atomically(l,
                          [&](Tx&) {
                            EXPECT_EQ(d.increment(l, "n", 100), 95);
                            throw Boom{};
                          }),
               Boom);
  // A stale handle is told so, not given another dict's data.
  Dict gone = atomically(l, [&](Tx& tx) {
    Dict x = new_dict(tx);
    x.set(tx, "n", 1);
    d.set(tx, "tmp", Value::ref(Kind::dict, x.offset(), x.stamp()));
    return x;
  });
  EXPECT_EQ(gone.increment(l, "n"), 2);
  atomically(l, [&](Tx& tx) { d.erase(tx, "tmp"); });
  try {
    gone.increment(l, "n");
    ADD_FAILURE() << "a stale handle incremented";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), troupe::Errc::not_found) << e.what();
  }
  atomically(l, [&](Tx& tx) {
    EXPECT_EQ(d.get_int(tx, "n"), -5);
    EXPECT_EQ(d.get_int(tx, "absent"), 4);
    EXPECT_EQ(d.get_int(tx, long_key), 3);
    EXPECT_EQ(d.get(tx, "s")->as_string(), "text");
  });
  expect_settled(l, h);
}

// Between its lookup and its lock (fault point tx.op.found) a transaction on
// the same thread changes what the lookup found: the op sees it.
struct Meddle {
  static inline TxHeap* l = nullptr;
  static inline Dict d;
  static inline int times = 0;
  static inline std::function<void(Tx&)> change;
  static void at(std::string_view name) {
    if (name == "tx.op.found" && times > 0) {
      --times;
      atomically(*l, change);
    }
  }
};

TEST(ShmAtomicOps, DictIncrementRevalidatesItsLookup) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  Meddle::l = &l;
  Meddle::d = d;
  atomically(l, [&](Tx& tx) { d.set(tx, "k", 10); });
  auto value = [&] { return atomically(l, [&](Tx& tx) { return d.get_int(tx, "k", -1); }); };
  troupe::shm::detail::set_fault_observer(&Meddle::at);
  // The entry found is unlinked and freed, a new one linked: the add goes to
  // the new entry, not into the freed block.
  Meddle::times = 1;
  Meddle::change = [](Tx& tx) {
    std::int64_t v = Meddle::d.get_int(tx, "k");
    Meddle::d.erase(tx, "k");
    Meddle::d.set(tx, "other", 0);  // may take the freed block
    Meddle::d.set(tx, "k", v + 100);
  };
  EXPECT_EQ(d.increment(l, "k", 1), 111);
  EXPECT_EQ(value(), 111);
  // The value changes under the lookup (not a conflict: the word is read
  // under the lock): the add applies to the new value.
  Meddle::times = 1;
  Meddle::change = [](Tx& tx) { Meddle::d.add(tx, "k", 5); };
  EXPECT_EQ(d.increment(l, "k", 1), 117);
  // The key is erased under the lookup: the op inserts it.
  Meddle::times = 1;
  Meddle::change = [](Tx& tx) { Meddle::d.erase(tx, "k"); };
  EXPECT_EQ(d.increment(l, "k", 3), 3);
  // The table is rehashed under the lookup (new buckets, old ones freed).
  Meddle::times = 1;
  Meddle::change = [](Tx& tx) {
    for (long i = 0; i < 200; ++i) Meddle::d.set(tx, i, i);
  };
  EXPECT_EQ(d.increment(l, "k", 1), 4);
  troupe::shm::detail::set_fault_observer(nullptr);
  atomically(l, [&](Tx& tx) {
    EXPECT_EQ(d.get_int(tx, "k"), 4);
    EXPECT_EQ(d.get_int(tx, "other"), 0);
    EXPECT_EQ(d.get_int(tx, 199L), 199);
  });
  expect_settled(l, h);
}

// Increments from two threads race a thread whose transactions erase an
// entry and insert it again (a new block, its old one freed), move 1 between
// two keys, and insert and erase extra keys so the table rehashes: every
// increment lands exactly once (the sum), nothing is left locked.
TEST(ShmAtomicOps, DictIncrementRacesTransactionsThatMoveItsEntries) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d", 4);
  constexpr long kKeys = 16;
  atomically(l, [&](Tx& tx) {
    for (long k = 0; k < kKeys; ++k) d.set(tx, k, 0);
  });
  const long rounds = kSanitized ? 300 : 3000;  // of the mover, while increments run
  std::atomic<long> moved{0};
  std::atomic<int> started{0};
  std::thread mover([&] {
    while (started.load() < 2) std::this_thread::yield();  // moves while increments run
    std::mt19937 rng(5);
    long extra = 1000;
    for (long r = 0; r < rounds; ++r, moved.store(r)) {
      long a = static_cast<long>(rng() % kKeys), b = static_cast<long>(rng() % kKeys);
      atomically(l, [&](Tx& tx) {
        std::int64_t v = d.get_int(tx, a);
        d.erase(tx, a);
        d.set(tx, a, v);
        if (a != b) {
          d.add(tx, a, -1);
          d.add(tx, b, 1);
        }
      });
      atomically(l, [&](Tx& tx) {  // grows the table, then empties it again
        if (extra < 1064) {
          d.set(tx, extra++, Value());
        } else {
          while (extra > 1000) d.erase(tx, --extra);
        }
      });
    }
  });
  std::atomic<long> increments{0};
  const std::uint64_t fallbacks0 = troupe::shm::detail::increment_fallbacks().load();
  std::vector<std::thread> ts;
  for (int t = 0; t < 2; ++t)
    ts.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t + 1));
      long n = 0;
      do {  // at least one before the mover starts, however late this thread runs
        d.increment(l, static_cast<long>(rng() % kKeys), 1);
        if (++n == 1) started.fetch_add(1);
      } while (moved.load(std::memory_order_relaxed) < rounds);
      increments.fetch_add(n);
    });
  for (auto& t : ts) t.join();
  mover.join();
  std::int64_t sum = atomically(l, [&](Tx& tx) {
    std::int64_t s = 0;
    for (long k = 0; k < kKeys; ++k) s += d.get_int(tx, k);
    return s;
  });
  EXPECT_GT(increments.load(), 0);
  // Most increments took the op's own path, not a transaction.
  const std::uint64_t fallbacks = troupe::shm::detail::increment_fallbacks().load() - fallbacks0;
  EXPECT_LT(fallbacks * 4, static_cast<std::uint64_t>(increments.load())) << fallbacks;
  EXPECT_EQ(sum, increments.load());
  expect_settled(l, h);
}

// Increments through handles of dicts that another thread keeps freeing
// (each round replaces the root dict, whose last reference goes) and whose
// memory it hands to fresh witness dicts: every increment lands in a live
// dict of its own handle or fails with not_found; no witness value (all 0)
// ever changes, so no add went into memory that was freed and reused.
TEST(ShmAtomicOps, DictIncrementOnFreedDictsNeverWritesElsewhere) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  std::mutex mu;
  Dict current = atomically(l, [&](Tx& tx) {
    Dict x = new_dict(tx, 4);
    x.set(tx, "n", 0);
    set_root(tx, "x", x);
    set_root(tx, "witnesses", new_list(tx));
    return x;
  });
  std::atomic<bool> done{false};
  std::atomic<long> landed{0}, refused{0};
  std::thread incrementer([&] {
    while (!done.load()) {
      Dict d;
      {
        std::lock_guard lk(mu);
        d = current;
      }
      try {
        d.increment(l, "n", 1);
        landed.fetch_add(1);
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), troupe::Errc::not_found) << e.what();
        refused.fetch_add(1);
      }
    }
  });
  // Frees only once increments land (the thread may start late on a loaded
  // machine: 3000 rounds take a few ms).
  while (landed.load() == 0) std::this_thread::yield();
  const int rounds = kSanitized ? 300 : 3000;
  for (int r = 0; r < rounds; ++r) {
    Dict fresh = atomically(l, [&](Tx& tx) {
      Dict x = new_dict(tx, 4);
      x.set(tx, "n", 0);
      set_root(tx, "x", x);  // the previous dict's last reference: freed
      return x;
    });
    {
      std::lock_guard lk(mu);
      current = fresh;
    }
    if (r % 4 == 0)
      atomically(l, [&](Tx& tx) {  // witnesses, likely in the freed blocks
        Dict w = new_dict(tx, 4);
        for (int k = 0; k < 3; ++k) w.set(tx, k, 0);
        get_root(tx, "witnesses").as_list().append(tx, w);
      });
  }
  done.store(true);
  incrementer.join();
  long nonzero = 0, witnesses = 0;
  atomically(l, [&](Tx& tx) {
    nonzero = witnesses = 0;
    for (const Value& v : get_root(tx, "witnesses").as_list().items(tx)) {
      ++witnesses;
      v.as_dict().for_each(tx, [&](const Value&, const Value& x) { nonzero += x.as_int() != 0; });
    }
  });
  std::printf("  %ld increments landed, %ld refused (stale handle), %ld witness dicts\n",
              landed.load(), refused.load(), witnesses);
  EXPECT_EQ(nonzero, 0);
  EXPECT_GT(landed.load(), 0);
  expect_settled(l, h);
}

// Transactions that add to the key two threads increment commit (they turn
// irrevocable after repeated aborts, and the op yields to the token as a
// commit does, instead of failing them until they give up as corrupt).
TEST(ShmAtomicOps, DictIncrementYieldsToAnIrrevocableTransaction) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  atomically(l, [&](Tx& tx) { d.set(tx, "hot", 0); });
  std::atomic<bool> done{false};
  std::atomic<long> ops{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 2; ++t)
    ts.emplace_back([&] {
      long n = 0;
      for (; !done.load(std::memory_order_relaxed); ++n) d.increment(l, "hot", 1);
      ops.fetch_add(n);
    });
  const long txs = kSanitized ? 100 : 1000;
  for (long i = 0; i < txs; ++i)
    atomically(l, [&](Tx& tx) {
      std::int64_t v = d.get_int(tx, "hot");
      for (int k = 0; k < 50; ++k) troupe::detail::cpu_relax();  // a window for the ops
      d.set(tx, "hot", v + 1);
    });
  done.store(true);
  for (auto& t : ts) t.join();
  atomically(l, [&](Tx& tx) { EXPECT_EQ(d.get_int(tx, "hot"), ops.load() + txs); });
  auto st = l.stats();
  std::printf("  %ld ops, %ld transactions: %llu aborts, %llu irrevocable\n", ops.load(), txs,
              static_cast<unsigned long long>(st.aborts),
              static_cast<unsigned long long>(st.irrevocable));
  expect_settled(l, h);
}

// kill -9 at the op's fault points (lock taken; word stored, lock held):
// after recovery "k" is "acked" (the op in flight did not apply) or one more
// (it did), never anything else, and no lock or busy record is left.
TEST(ShmAtomicOps, DictIncrementKilledAppliesOnceOrNot) {
  CreateOptions o;
  o.initial_size = 4 << 20;
  o.max_size = 64 << 20;
  Heap h = Heap::create(o);
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  atomically(l, [&](Tx& tx) {
    d.set(tx, "k", 0);
    d.set(tx, "acked", 0);
  });
  std::mt19937 rng(11);
  int applied = 0, not_applied = 0;
  for (int round = 0; round < 24; ++round) {
    const char* point = round % 2 ? "tx.op.stored" : "tx.op.locked";
    std::string fault = fmt::format("TROUPE_SHM_FAULT={}@{}", point, 1 + rng() % 300);
    pid_t pid = shm_test::spawn_worker({"increment", h.name(), "1000"}, {fault});
    ASSERT_GT(pid, 0);
    int status = shm_test::wait_status(pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
    h.recover();
    l.recover_orphans();
    auto [k, acked] = atomically(l, [&](Tx& tx) {
      return std::pair{d.get_int(tx, "k"), d.get_int(tx, "acked")};
    });
    ASSERT_TRUE(k == acked || k == acked + 1) << point << ": k " << k << ", acked " << acked;
    if (round % 2 == 0) {
      EXPECT_EQ(k, acked) << "killed before validating, the op must not apply";
    }
    (k == acked ? not_applied : applied)++;
    atomically(l, [&](Tx& tx) { d.set(tx, "acked", k); });  // in step for the next round
    EXPECT_EQ(l.stuck_locks(), 0u) << point;
    EXPECT_EQ(l.busy_records(), 0u) << point;
  }
  EXPECT_GT(applied, 0);
  EXPECT_GT(not_applied, 0);
  // And a worker left alone counts exactly.
  pid_t pid = shm_test::spawn_worker({"increment", h.name(), "5000"});
  ASSERT_EQ(shm_test::wait_status(pid), 0);
  atomically(l, [&](Tx& tx) { EXPECT_EQ(d.get_int(tx, "k"), d.get_int(tx, "acked")); });
  EXPECT_TRUE(h.verify().empty());
  TxHeap::detach(h);
}

}  // namespace
