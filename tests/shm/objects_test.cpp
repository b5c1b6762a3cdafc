// tests/shm/objects_test.cpp: values, strings, tuples, lists, dicts and
// records in a shared heap, changed by transactions in one process: encoding
// round trips, nesting, roots, abort rollback, reference counts of shared
// containers, reclamation (no leaked bytes), stale handles (V2), a forged
// irrevocable token.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <thread>
#include <string>
#include <unistd.h>
#include <troupe/shm/objects.hpp>
#include <troupe/shm/detail/tx_layout.hpp>
#include <chrono>

#include "test_heap.hpp"

using namespace troupe::shm;
using troupe::Error;

using objects_test_heap::make_heap;

namespace {

// Published bytes besides the layer's own (table, logs, root cells).
std::size_t published(Heap& h) {
  h.flush_thread_cache();
  return h.stats().published;
}

// Published bytes besides the layer's (its table and redo logs, which grow
// with the largest transaction so far): root cells and objects.
std::size_t user_bytes(Heap& h) { return published(h) - TxHeap::attach(h).tx_heap_bytes(); }

// A container's reference count: word 3 of its block (objects.hpp, V2).
std::uint64_t refs(Tx& tx, Offset container) { return tx.read(container + 24); }

// The heap is sound and holds exactly `bytes` of objects, nothing unpublished.
void expect_clean(Heap& h, std::size_t bytes) {
  EXPECT_EQ(user_bytes(h), bytes) << "leaked (or lost) bytes";
  EXPECT_EQ(h.stats().unpublished, 0u);
  EXPECT_EQ(TxHeap::attach(h).stuck_locks(), 0u);
  EXPECT_EQ(TxHeap::attach(h).busy_records(), 0u);
  for (auto& p : h.verify()) ADD_FAILURE() << p;
}

TEST(ShmValue, LocalValues) {
  EXPECT_TRUE(Value().is_none());
  EXPECT_EQ(Value(42).as_int(), 42);
  EXPECT_EQ(Value(2.5).as_double(), 2.5);
  EXPECT_EQ(Value("hi").as_string(), "hi");
  EXPECT_EQ(Value::bytes("\x01\x02").as_bytes(), "\x01\x02");
  EXPECT_THROW(Value(1).as_string(), Error);
  EXPECT_EQ(Value::tuple({1, "a"}), Value::tuple({1, "a"}));
  EXPECT_NE(Value::tuple({1, "a"}).hash(), Value::tuple({"a", 1}).hash());
  EXPECT_THROW(Value(1.5).hash(), Error);
  EXPECT_EQ(Value::tuple({1, "a"}).repr(), "(1, 'a')");
}

TEST(ShmObjects, DictRoundTripsEveryKind) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  std::string long_str(100, 'x');
  atomically(l, [&](Tx& tx) {
    d.set(tx, 1, Value());
    d.set(tx, 2, true);
    d.set(tx, 3, 7);
    d.set(tx, 4, 1.25);
    d.set(tx, "short", "abc");
    d.set(tx, long_str, long_str);
    d.set(tx, Value::bytes("k"), Value::bytes(std::string(20, '\0')));
    d.set(tx, Value::tuple({1, "two", Value::tuple({3})}), Value::tuple({long_str, 2.0}));
  });
  atomically(l, [&](Tx& tx) {
    EXPECT_EQ(d.size(tx), 8u);
    EXPECT_TRUE(d.get(tx, 1)->is_none());
    EXPECT_EQ(d.get(tx, 2)->as_bool(), true);
    EXPECT_EQ(d.get_int(tx, 3), 7);
    EXPECT_EQ(d.get(tx, 4)->as_double(), 1.25);
    EXPECT_EQ(d.get(tx, "short")->as_string(), "abc");
    EXPECT_EQ(d.get(tx, long_str)->as_string(), long_str);
    EXPECT_EQ(d.get(tx, Value::bytes("k"))->as_bytes(), std::string(20, '\0'));
    EXPECT_EQ(*d.get(tx, Value::tuple({1, "two", Value::tuple({3})})),
              Value::tuple({long_str, 2.0}));
    EXPECT_FALSE(d.get(tx, 99).has_value());
    EXPECT_FALSE(d.contains(tx, "abd"));
  });
  EXPECT_THROW(atomically(l, [&](Tx& tx) { d.set(tx, 1.5, 1); }), Error);
}

TEST(ShmObjects, DictGrowsAndErases) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d", 2);
  for (int i = 0; i < 1000; i += 100)
    atomically(l, [&](Tx& tx) {
      for (int k = i; k < i + 100; ++k) d.set(tx, k, std::to_string(k * 1000003));
    });
  atomically(l, [&](Tx& tx) {
    EXPECT_EQ(d.size(tx), 1000u);
    for (int k = 0; k < 1000; ++k)
      ASSERT_EQ(d.get(tx, k)->as_string(), std::to_string(k * 1000003));
    for (int k = 0; k < 1000; k += 2) EXPECT_TRUE(d.erase(tx, k));
    EXPECT_FALSE(d.erase(tx, 0));
  });
  atomically(l, [&](Tx& tx) {
    EXPECT_EQ(d.size(tx), 500u);
    EXPECT_EQ(d.keys(tx).size(), 500u);
    EXPECT_FALSE(d.contains(tx, 10));
    EXPECT_TRUE(d.contains(tx, 11));
    EXPECT_EQ(d.add(tx, "n", 5), 5);
    EXPECT_EQ(d.add(tx, "n", 5), 10);
  });
}

TEST(ShmObjects, NestedContainersAndRecords) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  atomically(l, [&](Tx& tx) {
    Dict users = new_dict(tx);
    set_root(tx, "users", users);
    for (int i = 0; i < 3; ++i) {
      List items = new_list(tx);
      for (int j = 0; j <= i * 5; ++j) {
        Record r = new_record(tx, {"name", "balance", "tags"});
        r.set(tx, "name", "user-with-a-long-name-" + std::to_string(j));
        r.set(tx, "balance", j * 10);
        r.set(tx, "tags", Value::tuple({"a", j}));
        items.append(tx, r);
      }
      users.set(tx, i, items);
    }
  });
  atomically(l, [&](Tx& tx) {
    Dict users = get_root(tx, "users").as_dict();
    List items = users.get(tx, 2)->as_list();
    ASSERT_EQ(items.size(tx), 11u);
    Record r = items.get(tx, 7).as_record();
    EXPECT_EQ(r.get(tx, "name").as_string(), "user-with-a-long-name-7");
    EXPECT_EQ(r.get(tx, "balance").as_int(), 70);
    EXPECT_EQ(r.get(tx, "tags"), Value::tuple({"a", 7}));
    EXPECT_EQ(r.fields(tx), (std::vector<std::string>{"name", "balance", "tags"}));
    EXPECT_THROW(r.get(tx, "nope"), Error);
    // A container may be stored in a second place (V2): both name it.
    users.set(tx, 9, items);
    EXPECT_EQ(users.get(tx, 9)->as_list().offset(), items.offset());
    EXPECT_EQ(refs(tx, items.offset()), 2u);
  });
  // Atomic op on a record field, outside any transaction.
  Offset word = atomically(l, [&](Tx& tx) {
    return get_root(tx, "users")
        .as_dict()
        .get(tx, 1)
        ->as_list()
        .get(tx, 0)
        .as_record()
        .payload_word(tx, "balance");
  });
  for (int i = 0; i < 100; ++i) l.fetch_add(word, 2);
  EXPECT_EQ(static_cast<std::int64_t>(l.load(word)), 200);
  List popped = atomically(l, [&](Tx& tx) {
    List lst = get_root(tx, "users").as_dict().get(tx, 0)->as_list();
    EXPECT_EQ(lst.pop(tx).kind(), Kind::record);
    EXPECT_THROW(lst.pop(tx), Error);
    lst.append(tx, 5);
    lst.set(tx, 0, "x");
    return lst;
  });
  atomically(l, [&](Tx& tx) {
    EXPECT_EQ(popped.items(tx), (std::vector<Value>{"x"}));
    popped.clear(tx);
    EXPECT_EQ(popped.size(tx), 0u);
  });
}

TEST(ShmObjects, AbortLeavesNothingAndFreesWhatItAllocated) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  atomically(l, [&](Tx& tx) { d.set(tx, "k", 1); });
  std::size_t before = published(h);
  struct Boom {};
  EXPECT_THROW(atomically(l,
                          [&](Tx& tx) {
                            d.set(tx, "k", std::string(500, 'y'));
                            d.set(tx, "other", new_list(tx));
                            EXPECT_EQ(d.get(tx, "k")->as_string(), std::string(500, 'y'));
                            throw Boom{};
                          }),
               Boom);
  atomically(l, [&](Tx& tx) {
    EXPECT_EQ(d.get_int(tx, "k"), 1);
    EXPECT_FALSE(d.contains(tx, "other"));
  });
  EXPECT_EQ(published(h), before);
  auto s = h.stats();
  EXPECT_EQ(s.unpublished, 0u);
}

TEST(ShmObjects, OverwrittenTreesAreFreed) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  // Warm up: the slot's redo log grows to its final size first.
  atomically(l, [&](Tx& tx) {
    for (int i = 0; i < 2000; ++i) d.set(tx, i, i);
  });
  atomically(l, [&](Tx& tx) {
    for (int i = 1; i < 2000; ++i) d.erase(tx, i);
  });
  std::size_t base = published(h);
  for (int round = 0; round < 20; ++round)
    atomically(l, [&](Tx& tx) {
      List lst = new_list(tx, 1);
      for (int i = 0; i < 50; ++i) lst.append(tx, Value::tuple({std::string(40, 'a'), i}));
      d.set(tx, 1, lst);
      d.set(tx, std::string(30, 'k'), std::string(300, 'v'));
    });
  atomically(l, [&](Tx& tx) {
    d.erase(tx, 1);
    d.erase(tx, std::string(30, 'k'));
  });
  EXPECT_EQ(published(h), base);
  EXPECT_EQ(l.stuck_locks(), 0u);
  EXPECT_EQ(l.busy_records(), 0u);
  EXPECT_TRUE(h.verify().empty());
}

TEST(ShmTx, ReadYourWritesAndNesting) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  int r = atomically(h, [&](Tx& tx) {
    d.set(tx, 1, 10);
    EXPECT_EQ(d.get_int(tx, 1), 10);
    return atomically(h, [&](Tx& inner) { return static_cast<int>(d.add(inner, 1, 1)); });
  });
  EXPECT_EQ(r, 11);
  EXPECT_EQ(atomically(h, [&](Tx& tx) { return d.get_int(tx, 1); }), 11);
}

// The irrevocable token is 0 or a slot + 1. A scribbled one that names no
// slot, but whose low 32 bits, cast to a slot index, named our own live slot,
// made every transaction and atomic op wait for it for ever (libFuzzer,
// fuzz/heap-corpus/forged_irrevocable_token). A waiter clears it after 4096
// rounds (tx_recovery.cpp), so both finish; a hang fails by ctest's timeout.
TEST(ShmTx, ATokenThatNamesNoSlotIsCleared) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  atomically(l, [&](Tx& tx) { d.set(tx, "n", 1); });
  Offset word = atomically(l, [&](Tx& tx) { return d.payload_word(tx, "n"); });
  const std::uint64_t forged = 0xffffff0000000001ull;  // (unsigned)(forged - 1) == 0
  l.table().irrevocable.store(forged);
  atomically(l, [&](Tx& tx) { d.set(tx, "n", 2); });
  EXPECT_EQ(l.table().irrevocable.load(), 0u);
  l.table().irrevocable.store(forged);
  EXPECT_EQ(l.fetch_add(word, 1), 2);
  EXPECT_EQ(l.table().irrevocable.load(), 0u);
  EXPECT_EQ(atomically(l, [&](Tx& tx) { return d.get_int(tx, "n"); }), 3);
}

// A block created and dropped in one transaction (a list's items array after
// two grows, a fresh dict's bucket array after a resize) is freed at once and
// may be reused by the next allocation of its size class in the same
// transaction: no write buffered for the dropped block may land at commit.
TEST(ShmObjects, BlocksDroppedInTheirTransactionTakeNoStaleWrites) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  const std::string s48(48, 's');  // a 56-byte blob: the 64-byte class of the old items
  atomically(l, [&](Tx& tx) {
    List lst = new_list(tx);  // capacity 4: a 64-byte items array
    for (int i = 0; i < 4; ++i) lst.append(tx, i);
    lst.append(tx, s48);  // grows (frees the fresh array), then allocates the blob
    set_root(tx, "list", lst);
  });
  atomically(l, [&](Tx& tx) {
    EXPECT_EQ(get_root(tx, "list").as_list().items(tx),
              (std::vector<Value>{0, 1, 2, 3, Value(s48)}));
  });
  // Many grows of a fresh list and of a fresh dict in one transaction, with
  // blobs of every size class in between.
  auto text = [](int i) { return std::string(9 + i % 120, static_cast<char>('a' + i % 26)); };
  atomically(l, [&](Tx& tx) {
    List lst = new_list(tx, 1);
    Dict d = new_dict(tx, 1);
    for (int i = 0; i < 300; ++i) {
      lst.append(tx, text(i));
      d.set(tx, i, text(i + 1));
    }
    set_root(tx, "many", lst);
    set_root(tx, "dict", d);
  });
  // And of a published dict (its bucket array grows twice here).
  atomically(l, [&](Tx& tx) {
    Dict d = get_root(tx, "dict").as_dict();
    for (int i = 300; i < 3000; ++i) d.set(tx, i, text(i + 1));
  });
  atomically(l, [&](Tx& tx) {
    List lst = get_root(tx, "many").as_list();
    Dict d = get_root(tx, "dict").as_dict();
    ASSERT_EQ(lst.size(tx), 300u);
    ASSERT_EQ(d.size(tx), 3000u);
    for (int i = 0; i < 300; ++i) ASSERT_EQ(lst.get(tx, i).as_string(), text(i)) << i;
    for (int i = 0; i < 3000; ++i) ASSERT_EQ(d.get(tx, i)->as_string(), text(i + 1)) << i;
  });
  EXPECT_TRUE(h.verify().empty());
}

// V2 inside one transaction: a container may be stored twice, in one slot or
// in several, and each store counts.
TEST(ShmObjects, ContainerStoredTwiceInOneTransaction) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  atomically(l, [&](Tx& tx) { set_root(tx, "x", Value()); });
  const std::size_t base = user_bytes(h);
  // Storing it again where it already is changes nothing.
  atomically(l, [&](Tx& tx) {
    List x = new_list(tx);
    x.append(tx, 1);
    d.set(tx, "k", x);
    d.set(tx, "k", x);
    EXPECT_EQ(refs(tx, x.offset()), 1u);
    Record r = new_record(tx, {"f"});
    r.set(tx, "f", x.size(tx) == 1 ? Value(7) : Value());
    d.set(tx, "r", r);
    d.set(tx, "r", r);
    EXPECT_EQ(refs(tx, r.offset()), 1u);
  });
  atomically(l, [&](Tx& tx) {
    List x = d.get(tx, "k")->as_list();
    x.append(tx, std::string(40, 'z'));  // x must still be alive
  });
  atomically(l, [&](Tx& tx) {
    EXPECT_EQ(d.get(tx, "k")->as_list().items(tx), (std::vector<Value>{1, std::string(40, 'z')}));
    EXPECT_EQ(d.get(tx, "r")->as_record().get(tx, "f").as_int(), 7);
  });
  // Every way of storing one fresh container twice counts two references.
  auto store_twice = [&](auto&& store) {
    atomically(l, [&](Tx& tx) {
      List a = new_list(tx);
      a.append(tx, 0);
      a.append(tx, 0);
      d.set(tx, "a", a);
      List x = new_list(tx);
      x.append(tx, std::string(30, 'x'));
      store(tx, a, x);
      EXPECT_EQ(refs(tx, x.offset()), 2u);
    });
  };
  auto check = [&](auto&& read_both) {
    atomically(l, [&](Tx& tx) {
      auto [one, two] = read_both(tx, d.get(tx, "a")->as_list());
      EXPECT_EQ(one.offset(), two.offset());
      EXPECT_EQ(refs(tx, one.offset()), 2u);
      EXPECT_EQ(one.items(tx), (std::vector<Value>{std::string(30, 'x')}));
      d.erase(tx, "a");
      d.erase(tx, "x");
      d.erase(tx, "y");
      set_root(tx, "x", Value());
    });
  };
  store_twice([](Tx& tx, List a, List x) {
    a.set(tx, 0, x);
    a.set(tx, 1, x);
  });
  check([](Tx& tx, List a) { return std::pair{a.get(tx, 0).as_list(), a.get(tx, 1).as_list()}; });
  store_twice([&](Tx& tx, List a, List x) {
    d.set(tx, "x", x);
    a.append(tx, x);
  });
  check([&](Tx& tx, List a) {
    return std::pair{d.get(tx, "x")->as_list(), a.get(tx, 2).as_list()};
  });
  store_twice([](Tx& tx, List a, List x) { a.append(tx, Value::tuple({x, x})); });
  check([](Tx& tx, List a) {
    Value t = a.get(tx, 2);
    return std::pair{t.as_tuple()[0].as_list(), t.as_tuple()[1].as_list()};
  });
  store_twice([&](Tx& tx, List, List x) {
    set_root(tx, "x", x);
    d.set(tx, "y", Value::tuple({1, x}));
  });
  check([&](Tx& tx, List) {
    return std::pair{get_root(tx, "x").as_list(), d.get(tx, "y")->as_tuple()[1].as_list()};
  });
  atomically(l, [&](Tx& tx) {
    EXPECT_FALSE(d.contains(tx, "a"));
    EXPECT_TRUE(get_root(tx, "x").is_none());
    d.erase(tx, "k");
    d.erase(tx, "r");
  });
  expect_clean(h, base);
}

// A record shared by two dicts is read and changed through both; dropping one
// reference leaves it whole, dropping the last frees it (and what it holds).
TEST(ShmObjects, RecordSharedByTwoDicts) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d1 = root_dict(l, "d1");
  Dict d2 = root_dict(l, "d2");
  atomically(l, [&](Tx& tx) {
    d1.set(tx, 0, 0);  // entries and buckets that stay
    d2.set(tx, 0, 0);
  });
  const std::size_t base = user_bytes(h);
  atomically(l, [&](Tx& tx) {
    Record r = new_record(tx, {"name", "balance", "history"});
    r.set(tx, "name", std::string(50, 'n'));
    r.set(tx, "balance", 10);
    List hist = new_list(tx);
    hist.append(tx, std::string(20, 'h'));
    r.set(tx, "history", hist);
    d1.set(tx, "shared", r);
    d2.set(tx, std::string(30, 'k'), r);
  });
  atomically(l, [&](Tx& tx) {
    Record a = d1.get(tx, "shared")->as_record();
    Record b = d2.get(tx, std::string(30, 'k'))->as_record();
    EXPECT_EQ(a.offset(), b.offset());
    EXPECT_EQ(refs(tx, a.offset()), 2u);
    a.set(tx, "balance", 25);  // a change through one is seen through the other
    EXPECT_EQ(b.get(tx, "balance").as_int(), 25);
  });
  atomically(l, [&](Tx& tx) { EXPECT_TRUE(d1.erase(tx, "shared")); });
  atomically(l, [&](Tx& tx) {
    Record b = d2.get(tx, std::string(30, 'k'))->as_record();
    EXPECT_EQ(refs(tx, b.offset()), 1u);
    EXPECT_EQ(b.get(tx, "name").as_string(), std::string(50, 'n'));
    EXPECT_EQ(b.get(tx, "balance").as_int(), 25);
    List hist = b.get(tx, "history").as_list();
    EXPECT_EQ(refs(tx, hist.offset()), 1u);
    EXPECT_EQ(hist.items(tx), (std::vector<Value>{std::string(20, 'h')}));
  });
  EXPECT_GT(user_bytes(h), base);
  atomically(l, [&](Tx& tx) { d2.set(tx, std::string(30, 'k'), Value()); });
  atomically(l, [&](Tx& tx) { EXPECT_TRUE(d2.erase(tx, std::string(30, 'k'))); });
  expect_clean(h, base);
}

// Counts are words of the write set: an exception in the block or a retry
// rolls them back, also a count that went to zero (nothing is freed).
TEST(ShmObjects, CountsRollBackOnAbortAndRetry) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  const std::size_t empty = user_bytes(h);
  Offset rec = atomically(l, [&](Tx& tx) {
    Record r = new_record(tx, {"v"});
    r.set(tx, "v", std::string(40, 'v'));
    d.set(tx, "r", r);
    return r.offset();
  });
  const std::size_t base = user_bytes(h);
  struct Boom {};
  EXPECT_THROW(atomically(l,
                          [&](Tx& tx) {
                            Record r = d.get(tx, "r")->as_record();
                            d.set(tx, "again", r);
                            d.set(tx, "tuple", Value::tuple({r, r}));
                            EXPECT_EQ(refs(tx, rec), 4u);
                            throw Boom{};
                          }),
               Boom);
  EXPECT_THROW(atomically(l,
                          [&](Tx& tx) {
                            EXPECT_TRUE(d.erase(tx, "r"));  // the last reference
                            EXPECT_EQ(refs(tx, rec), 0u);
                            throw Boom{};
                          }),
               Boom);
  atomically(l, [&](Tx& tx) {
    EXPECT_EQ(refs(tx, rec), 1u);
    EXPECT_EQ(d.size(tx), 1u);
    EXPECT_EQ(d.get(tx, "r")->as_record().get(tx, "v").as_string(), std::string(40, 'v'));
  });
  EXPECT_EQ(user_bytes(h), base);
  // Retried attempts: only the committing one's counts remain.
  unsigned attempts = 0;
  atomically(l, [&](Tx& tx) {
    ++attempts;
    Record r = d.get(tx, "r")->as_record();
    d.set(tx, "again", r);
    List fresh = new_list(tx);
    fresh.append(tx, r);  // never stored: freed at commit, dropping its reference
    if (tx.attempt() < 3) throw TxConflict{};  // as a conflicting read would
    EXPECT_EQ(refs(tx, rec), 3u);
  });
  EXPECT_EQ(attempts, 4u);
  atomically(l, [&](Tx& tx) {
    EXPECT_EQ(refs(tx, rec), 2u);
    EXPECT_EQ(d.get(tx, "again")->as_record().offset(), rec);
    d.erase(tx, "again");
    EXPECT_EQ(refs(tx, rec), 1u);
  });
  expect_clean(h, base);
  atomically(l, [&](Tx& tx) { d.erase(tx, "r"); });
  expect_clean(h, empty);
}

// A container created in a transaction and never stored is freed when it
// commits, with its contents; a popped one is freed unless stored again.
TEST(ShmObjects, UnstoredContainersAreFreedAtCommit) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  atomically(l, [&](Tx& tx) {
    Record shared = new_record(tx, {"n"});
    d.set(tx, "shared", shared);
    d.set(tx, "list", new_list(tx));
  });
  const std::size_t base = user_bytes(h);
  atomically(l, [&](Tx& tx) {
    Record shared = d.get(tx, "shared")->as_record();
    List lst = new_list(tx, 1);
    for (int i = 0; i < 20; ++i) lst.append(tx, std::string(40 + i, 'l'));  // grows
    Dict dd = new_dict(tx, 1);
    for (int i = 0; i < 40; ++i) dd.set(tx, std::string(20, 'a' + i % 26) + std::to_string(i), i);
    Record r = new_record(tx, {"a", "b"});
    r.set(tx, "a", lst);
    r.set(tx, "b", Value::tuple({dd, shared}));
    lst.append(tx, shared);
    EXPECT_EQ(refs(tx, shared.offset()), 3u);
    new_list(tx);  // dropped at once
  });
  atomically(l,
             [&](Tx& tx) { EXPECT_EQ(refs(tx, d.get(tx, "shared")->as_record().offset()), 1u); });
  EXPECT_EQ(user_bytes(h), base);
  // Popped: freed at commit, or kept by a new reference in the same transaction.
  atomically(l, [&](Tx& tx) {
    List lst = d.get(tx, "list")->as_list();
    List a = new_list(tx);
    a.append(tx, std::string(30, 'a'));
    lst.append(tx, a);
    lst.append(tx, new_list(tx));
  });
  const std::size_t with_two = user_bytes(h);
  atomically(l, [&](Tx& tx) {
    List lst = d.get(tx, "list")->as_list();
    Value second = lst.pop(tx);
    Value first = lst.pop(tx);
    EXPECT_EQ(refs(tx, first.ref()), 0u);
    d.set(tx, "kept", first);  // stored again: survives
    EXPECT_EQ(first.as_list().items(tx), (std::vector<Value>{std::string(30, 'a')}));
    EXPECT_EQ(second.as_list().size(tx), 0u);  // readable until commit
  });
  EXPECT_LT(user_bytes(h), with_two);
  atomically(l, [&](Tx& tx) {
    List kept = d.get(tx, "kept")->as_list();
    EXPECT_EQ(refs(tx, kept.offset()), 1u);
    EXPECT_EQ(kept.items(tx), (std::vector<Value>{std::string(30, 'a')}));
    d.erase(tx, "kept");
  });
  atomically(l, [&](Tx& tx) { EXPECT_EQ(d.get(tx, "list")->as_list().size(tx), 0u); });
  expect_clean(h, base);
}

// Freeing at zero is recursive: a tree of shared containers stored in two
// places is freed only when both are dropped, to the last byte. A cycle is
// not (V2, as Python without its cycle collector) until it is broken.
TEST(ShmObjects, TreesAreFreedAtZeroAndCyclesWhenBroken) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  atomically(l, [&](Tx& tx) { set_root(tx, "other", Value()); });
  const std::size_t base = user_bytes(h);
  atomically(l, [&](Tx& tx) {
    Dict tree = new_dict(tx, 2);
    for (int i = 0; i < 50; ++i) {
      List lst = new_list(tx, 1);
      for (int j = 0; j < 5; ++j) {
        Record r = new_record(tx, {"name", "t"});
        r.set(tx, "name", std::string(20 + j, 'r'));
        r.set(tx, "t", Value::tuple({j, std::string(30, 't')}));
        lst.append(tx, r);
      }
      tree.set(tx, i, lst);
    }
    d.set(tx, "tree", tree);
    set_root(tx, "other", tree);
  });
  const std::size_t full = user_bytes(h);
  EXPECT_GT(full, base);
  atomically(l, [&](Tx& tx) { d.erase(tx, "tree"); });
  atomically(l, [&](Tx& tx) {
    Dict tree = get_root(tx, "other").as_dict();
    EXPECT_EQ(refs(tx, tree.offset()), 1u);
    EXPECT_EQ(tree.size(tx), 50u);
    EXPECT_EQ(tree.get(tx, 49)->as_list().get(tx, 4).as_record().get(tx, "name").as_string(),
              std::string(24, 'r'));
  });
  atomically(l, [&](Tx& tx) { set_root(tx, "other", Value()); });
  expect_clean(h, base);

  // a -> b -> a: unreachable but counted, until the cycle is broken.
  atomically(l, [&](Tx& tx) {
    List a = new_list(tx);
    List b = new_list(tx);
    a.append(tx, b);
    b.append(tx, a);
    a.append(tx, a);
    set_root(tx, "other", a);
  });
  List a = atomically(l, [&](Tx& tx) {
    List a = get_root(tx, "other").as_list();
    set_root(tx, "other", Value());
    EXPECT_EQ(refs(tx, a.offset()), 2u);  // from b and from itself
    return a;
  });
  EXPECT_GT(user_bytes(h), base);               // leaked, as documented
  atomically(l, [&](Tx& tx) { a.clear(tx); });  // a handle still valid: a is alive
  expect_clean(h, base);
}
// A block retired twice would be freed twice after the commit point: it is
// refused before it, and nothing of the transaction is applied.
TEST(ShmTx, DoubleRetireIsRefusedBeforeTheCommitPoint) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  atomically(l, [&](Tx& tx) { d.set(tx, "s", std::string(100, 's')); });
  EXPECT_THROW(atomically(l,
                          [&](Tx& tx) {
                            d.set(tx, "new", std::string(200, 'n'));  // a fresh block
                            Offset blob = tx.read(d.payload_word(tx, "s"));
                            tx.retire(blob);
                            tx.retire(blob);
                          }),
               Error);
  // Likewise a block that is not published, or no block at all.
  for (Offset bad : {Offset{8}, Offset{1} << 40})
    EXPECT_THROW(atomically(l,
                            [&](Tx& tx) {
                              d.set(tx, "new", std::string(200, 'n'));
                              tx.retire(bad);
                            }),
                 Error);
  EXPECT_EQ(l.stuck_locks(), 0u);
  atomically(l, [&](Tx& tx) {
    EXPECT_FALSE(d.contains(tx, "new"));
    EXPECT_EQ(d.get(tx, "s")->as_string(), std::string(100, 's'));
    d.set(tx, "new", std::string(200, 'n'));
  });
  EXPECT_EQ(atomically(l, [&](Tx& tx) { return d.get(tx, "new")->as_string(); }),
            std::string(200, 'n'));
  EXPECT_EQ(l.stuck_locks(), 0u);
  EXPECT_EQ(l.busy_records(), 0u);
  EXPECT_TRUE(h.verify().empty());
}

// A tuple may hold containers: they come back as handles, live on, and are
// freed with the tuple.
TEST(ShmObjects, ContainersInsideTuples) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  atomically(l, [&](Tx& tx) { d.set(tx, 0, 0); });
  std::size_t base = user_bytes(h);  // the redo log may grow (X5 locks freed blocks)
  atomically(l, [&](Tx& tx) {
    List lst = new_list(tx);
    lst.append(tx, "item");
    Record r = new_record(tx, {"n"});
    r.set(tx, "n", 5);
    d.set(tx, "t", Value::tuple({lst, "mid", Value::tuple({r, new_dict(tx)})}));
  });
  atomically(l, [&](Tx& tx) {
    Value t = *d.get(tx, "t");
    ASSERT_EQ(t.kind(), Kind::tuple);
    ASSERT_EQ(t.as_tuple().size(), 3u);
    List lst = t.as_tuple()[0].as_list();
    EXPECT_EQ(lst.items(tx), (std::vector<Value>{"item"}));
    lst.append(tx, std::string(30, 'x'));
    EXPECT_EQ(t.as_tuple()[1].as_string(), "mid");
    const auto& inner = t.as_tuple()[2].as_tuple();
    EXPECT_EQ(inner[0].as_record().get(tx, "n").as_int(), 5);
    inner[1].as_dict().set(tx, "k", "v");
    // A copy of the tuple is a second reference to each container in it.
    d.set(tx, "copy", t);
    EXPECT_EQ(refs(tx, lst.offset()), 2u);
  });
  atomically(l, [&](Tx& tx) { d.erase(tx, "t"); });
  atomically(l, [&](Tx& tx) {
    Value t = *d.get(tx, "copy");
    EXPECT_EQ(t.as_tuple()[0].as_list().size(tx), 2u);
    EXPECT_EQ(refs(tx, t.as_tuple()[0].ref()), 1u);
    EXPECT_EQ(t.as_tuple()[2].as_tuple()[1].as_dict().get(tx, "k")->as_string(), "v");
    d.erase(tx, "copy");
  });
  EXPECT_EQ(user_bytes(h), base);
  EXPECT_TRUE(h.verify().empty());
}

// ---- stale handles (V2) ----

// Runs `use` with a handle whose container is gone: it must throw
// Error(not_found) naming the kind, never return data (a failure here) nor
// throw anything else (length_error, bad_alloc, another Error code).
template <class Use>
void expect_stale(TxHeap& l, const char* kind, const char* what, Use use) {
  atomically(l, [&](Tx& tx) {
    try {
      use(tx);
      ADD_FAILURE() << what << " on a stale " << kind << " handle returned";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), troupe::Errc::not_found) << what << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find(std::string("stale ") + kind), std::string::npos)
          << e.what();
    }
  });
}

// A container of kind k stored at root "r", filled so that its words matter.
Value make_container(Tx& tx, Kind k) {
  switch (k) {
    case Kind::list: {
      List x = new_list(tx, 1);
      x.append(tx, 7);
      x.append(tx, std::string(20, 'q'));
      return x;
    }
    case Kind::dict: {
      Dict x = new_dict(tx, 2);
      x.set(tx, "a", 1);
      x.set(tx, 2, "two");
      return x;
    }
    default: {
      Record x = new_record(tx, {"f"});
      x.set(tx, "f", 5);
      return x;
    }
  }
}

// Drops the only reference to the container at root "r" (freed at once) and
// then allocates, in one process, until its block is reused: by containers of
// the same kind, or by strings of 0xff bytes filling the block (a huge
// "length" in every word). Returns whether the block was seen reused.
bool replace_and_reuse(TxHeap& l, Kind k, bool strings) {
  Heap& h = l.heap();
  Offset old = atomically(l, [&](Tx& tx) { return get_root(tx, "r").ref(); });
  std::size_t block = h.usable_size(old);
  atomically(l, [&](Tx& tx) {
    set_root(tx, "keep", new_list(tx, 256));  // before the free: never takes the block
    set_root(tx, "r", Value());
  });
  return atomically(l, [&](Tx& tx) {
    List keep = get_root(tx, "keep").as_list();
    bool seen = false;
    for (int i = 0; i < 64 && !seen; ++i) {
      if (strings)
        keep.append(tx, std::string(block - 8, '\xff'));
      else
        keep.append(tx, make_container(tx, k));
      seen = tx.read(keep.payload_word(tx, keep.size(tx) - 1)) == old;
    }
    return seen;
  });
}

TEST(ShmObjects, StaleHandlesAfterBlockReuseThrowTheTypedError) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  for (bool strings : {false, true})
    for (Kind k : {Kind::list, Kind::dict, Kind::record}) {
      SCOPED_TRACE(std::string(to_string(k)) + (strings ? " reused by strings" : " reused"));
      Value old = atomically(l, [&](Tx& tx) {
        set_root(tx, "r", make_container(tx, k));
        return get_root(tx, "r");  // the handle, decoded from the root
      });
      // Still valid in a later transaction while stored.
      atomically(l, [&](Tx& tx) {
        if (k == Kind::list) {
          EXPECT_EQ(old.as_list().size(tx), 2u);
        }
        if (k == Kind::dict) {
          EXPECT_EQ(old.as_dict().get(tx, "a")->as_int(), 1);
        }
        if (k == Kind::record) {
          EXPECT_EQ(old.as_record().get(tx, "f").as_int(), 5);
        }
      });
      ASSERT_TRUE(replace_and_reuse(l, k, strings)) << "the freed block was not reused";
      const char* kind = to_string(k).data();
      if (k == Kind::list) {
        List x = old.as_list();
        expect_stale(l, kind, "size", [&](Tx& tx) { x.size(tx); });
        expect_stale(l, kind, "items", [&](Tx& tx) { x.items(tx); });
        expect_stale(l, kind, "get", [&](Tx& tx) { x.get(tx, 0); });
        expect_stale(l, kind, "payload_word", [&](Tx& tx) { x.payload_word(tx, 0); });
        expect_stale(l, kind, "append", [&](Tx& tx) { x.append(tx, 1); });
        expect_stale(l, kind, "pop", [&](Tx& tx) { x.pop(tx); });
        expect_stale(l, kind, "clear", [&](Tx& tx) { x.clear(tx); });
        expect_stale(l, kind, "set", [&](Tx& tx) { x.set(tx, 0, 1); });
      } else if (k == Kind::dict) {
        Dict x = old.as_dict();
        expect_stale(l, kind, "size", [&](Tx& tx) { x.size(tx); });
        expect_stale(l, kind, "get", [&](Tx& tx) { x.get(tx, "a"); });
        expect_stale(l, kind, "contains", [&](Tx& tx) { x.contains(tx, 2); });
        expect_stale(l, kind, "keys", [&](Tx& tx) { x.keys(tx); });
        expect_stale(l, kind, "get_int", [&](Tx& tx) { x.get_int(tx, "a"); });
        expect_stale(l, kind, "set", [&](Tx& tx) { x.set(tx, "a", 2); });
        expect_stale(l, kind, "add", [&](Tx& tx) { x.add(tx, "a", 2); });
        expect_stale(l, kind, "erase", [&](Tx& tx) { x.erase(tx, "a"); });
      } else {
        Record x = old.as_record();
        expect_stale(l, kind, "fields", [&](Tx& tx) { x.fields(tx); });
        expect_stale(l, kind, "get", [&](Tx& tx) { x.get(tx, "f"); });
        expect_stale(l, kind, "payload_word", [&](Tx& tx) { x.payload_word(tx, "f"); });
        expect_stale(l, kind, "set", [&](Tx& tx) { x.set(tx, "f", 6); });
      }
      // Storing a stale handle counts nothing: refused, in a slot, a root or a tuple.
      expect_stale(l, kind, "set_root", [&](Tx& tx) { set_root(tx, "x", old); });
      expect_stale(l, kind, "tuple item", [&](Tx& tx) { set_root(tx, "x", Value::tuple({old})); });
      // The containers (or strings) that reused the block are intact.
      atomically(l, [&](Tx& tx) {
        for (const Value& v : get_root(tx, "keep").as_list().items(tx)) {
          if (strings) {
            EXPECT_EQ(v.as_string().find_first_not_of('\xff'), std::string::npos);
          }
          if (!strings && k == Kind::list) {
            EXPECT_EQ(v.as_list().size(tx), 2u);
          }
          if (!strings && k == Kind::dict) {
            EXPECT_EQ(v.as_dict().get(tx, "a")->as_int(), 1);
          }
          if (!strings && k == Kind::record) {
            EXPECT_EQ(v.as_record().get(tx, "f").as_int(), 5);
          }
        }
        set_root(tx, "keep", Value());
      });
    }
  atomically(l, [&](Tx& tx) { set_root(tx, "x", Value()); });
  EXPECT_TRUE(h.verify().empty());
  EXPECT_EQ(l.stuck_locks(), 0u);
}

// A container created and never stored is freed when its transaction
// commits: its handle is stale afterwards too.
TEST(ShmObjects, HandleOfAnUnstoredContainerIsStaleAfterCommit) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  List lst = atomically(l, [&](Tx& tx) {
    List x = new_list(tx);
    x.append(tx, 1);
    return x;
  });
  atomically(l, [&](Tx& tx) {  // reuse what was freed
    for (int i = 0; i < 8; ++i) set_root(tx, "s" + std::to_string(i), std::string(40, '\xff'));
  });
  expect_stale(l, "list", "items", [&](Tx& tx) { lst.items(tx); });
  expect_stale(l, "list", "append", [&](Tx& tx) { lst.append(tx, 2); });
}

// One thread keeps replacing the list at a root (each replaced list is freed
// at once and its blocks reused by the next ones and by blobs); another uses
// handles it read in earlier transactions, in read-only transactions. It
// sees either the list's own contents or the typed error, nothing else.
TEST(ShmObjects, OldHandlesUnderConcurrentReplacementGiveDataOrTheTypedError) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  auto fill = [](Tx& tx, List x, std::int64_t k) {
    x.append(tx, k);
    x.append(tx, k);
    x.append(tx, std::string(9 + k % 40, static_cast<char>('a' + k % 26)));
  };
  atomically(l, [&](Tx& tx) {
    List x = new_list(tx, 2);
    fill(tx, x, 0);
    set_root(tx, "r", x);
  });
  std::atomic<std::uint64_t> commits{0};
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (std::int64_t k = 1; !stop.load(); ++k) {
      atomically(l, [&](Tx& tx) {
        List x = new_list(tx, 2);
        fill(tx, x, k);
        set_root(tx, "r", x);  // the old list: count 0, freed at this commit
        set_root(tx, "junk", std::string(8 + 8 * (k % 6), '\xff'));
      });
      commits.fetch_add(1);
    }
  });
  std::size_t ok = 0, stale = 0, bad = 0;
  std::string first_bad;
  for (int i = 0; i < 400; ++i) {
    List x = atomically(l, [&](Tx& tx) { return get_root(tx, "r").as_list(); });
    // x came from commit number seen + 1 at the latest (counted after it).
    std::uint64_t seen = commits.load();
    bool must_be_stale = i % 2 == 1;
    if (must_be_stale)  // wait until the list read above has surely been replaced
      while (commits.load() < seen + 2) std::this_thread::yield();
    try {
      atomically(l, [&](Tx& tx) {
        std::vector<Value> items = x.items(tx);
        std::size_t n = x.size(tx);
        Value last = x.get(tx, 2);
        EXPECT_TRUE(tx.read_only());
        if (n != 3 || items.size() != 3 || !(items[0] == items[1]) || !(items[2] == last) ||
            items[0].kind() != Kind::integer) {
          ++bad;
          if (first_bad.empty()) first_bad = "wrong contents";
          return;
        }
        std::int64_t k = items[0].as_int();
        if (last.as_string() != std::string(9 + k % 40, static_cast<char>('a' + k % 26))) {
          ++bad;
          if (first_bad.empty()) first_bad = "wrong string";
          return;
        }
      });
      if (must_be_stale) {
        ++bad;
        if (first_bad.empty()) first_bad = "a replaced list was still readable";
      } else {
        ++ok;
      }
    } catch (const Error& e) {
      if (e.code() == troupe::Errc::not_found &&
          std::string(e.what()).find("stale list") != std::string::npos) {
        ++stale;
      } else {
        ++bad;
        if (first_bad.empty()) first_bad = e.what();
      }
    } catch (const std::exception& e) {
      ++bad;
      if (first_bad.empty()) first_bad = e.what();
    }
  }
  stop = true;
  writer.join();
  std::printf("old handles: %zu read valid data, %zu stale (typed error), %zu bad\n", ok, stale,
              bad);
  EXPECT_EQ(bad, 0u) << first_bad;
  EXPECT_GE(stale, 200u);
  EXPECT_GT(ok + stale, 0u);
  atomically(l, [&](Tx& tx) {
    set_root(tx, "r", Value());
    set_root(tx, "junk", Value());
  });
  EXPECT_TRUE(h.verify().empty());
  EXPECT_EQ(l.stuck_locks(), 0u);
}

}  // namespace

// tx.hpp T10: a heap whose body is corrupt (a lock word no crash can leave)
// fails the transaction with bad_segment instead of retrying for ever.
TEST(Corrupt, ForgedStripeLocksFailWithBadSegment) {
  auto heap = objects_test_heap::make_heap();
  auto& txh = TxHeap::attach(heap);
  Dict d = root_dict(txh, "d");
  Offset word = atomically(heap, [&](Tx& tx) {
    d.set(tx, Value(1), Value(10));
    return d.payload_word(tx, Value(1));
  });
  auto& stripe = txh.table().stripes[troupe::shm::detail::stripe_of(word)];
  const std::uint64_t saved = stripe.load();
  for (std::uint64_t holder : {std::uint64_t{999}, std::uint64_t{200}}) {  // beyond the table; a slot no one holds
    stripe.store(((holder + 1) << 1) | 1);
    auto t0 = std::chrono::steady_clock::now();
    try {
      atomically(heap, [&](Tx& tx) { return d.get(tx, Value(1))->as_int(); });
      FAIL() << "a transaction read through a forged lock";
    } catch (const troupe::Error& e) {
      EXPECT_EQ(e.code(), troupe::Errc::bad_segment) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(60));  // bounded, not fast
  }
  stripe.store(saved);
  EXPECT_EQ(atomically(heap, [&](Tx& tx) { return d.get(tx, Value(1))->as_int(); }), 10);
}

// objects.hpp V5: a list length past its capacity, a bucket count
// that is not a power of two and a chain that loops are bad_segment, not a
// huge allocation, a write past the items block or a walk without end. Each
// forgery is written inside the transaction that meets it, so its abort
// leaves the heap sound; the fuzzer (fuzz/heap_fuzz.cpp) forges them in a
// heap's bytes.
TEST(Corrupt, ForgedListLengthsDictBucketsAndChainCyclesFailWithBadSegment) {
  auto heap = objects_test_heap::make_heap();
  auto& txh = TxHeap::attach(heap);
  Dict d = root_dict(txh, "d", 4);
  List l = atomically(heap, [&](Tx& tx) {
    List x = new_list(tx, 4);
    for (int i = 0; i < 3; ++i) x.append(tx, Value(i));
    set_root(tx, "l", Value(x));
    for (long i = 0; i < 6; ++i) d.set(tx, Value(i), Value(i));
    return x;
  });
  auto expect_bad = [&](const char* what, auto&& f) {
    try {
      atomically(heap, f);
      ADD_FAILURE() << what << ": no error";
    } catch (const troupe::Error& e) {
      EXPECT_EQ(e.code(), troupe::Errc::bad_segment) << what << ": " << e.what();
    }
  };
  expect_bad("huge list length", [&](Tx& tx) {
    tx.write(l.offset(), std::uint64_t{1} << 40);
    (void)l.items(tx);
  });
  expect_bad("length past capacity", [&](Tx& tx) {
    tx.write(l.offset(), 4 + 1);
    l.append(tx, Value(9));
  });
  expect_bad("huge capacity", [&](Tx& tx) {
    tx.write(l.offset() + 8, std::uint64_t{1} << 50);
    l.set(tx, 0, Value(9));
  });
  expect_bad("bucket count not a power of two", [&](Tx& tx) {
    tx.write(d.offset() + 8, 3);
    (void)d.get(tx, Value(1));
  });
  // A chain that loops: an entry's next word names the entry itself.
  const std::uint64_t nb = atomically(heap, [&](Tx& tx) { return tx.read(d.offset() + 8); });
  long absent = 1000;  // a key not in the dict, hashed into the looping chain
  Offset head = 0;
  atomically(heap, [&](Tx& tx) {
    Offset buckets = tx.read(d.offset() + 16);
    for (std::uint64_t i = 0; i < nb && !head; ++i) head = tx.read(buckets + 8 * i);
    std::uint64_t bucket = tx.read(head + 8) & (nb - 1);
    while ((Value(absent).hash() & (nb - 1)) != bucket) ++absent;
  });
  ASSERT_NE(head, 0u);
  expect_bad("chain cycle, for_each", [&](Tx& tx) {
    tx.write(head, head);
    d.for_each(tx, [](const Value&, const Value&) {});
  });
  expect_bad("chain cycle, lookup", [&](Tx& tx) {
    tx.write(head, head);
    (void)d.contains(tx, Value(absent));
  });
  expect_bad("chain cycle, growth", [&](Tx& tx) {
    tx.write(head, head);
    for (long i = 0; i < 64; ++i) d.set(tx, Value(5000 + i), Value(i));
  });
  // Every forgery aborted: the heap is sound and holds what it held.
  EXPECT_TRUE(heap.verify().empty());
  EXPECT_EQ(atomically(heap, [&](Tx& tx) { return l.items(tx).size(); }), 3u);
  EXPECT_EQ(atomically(heap, [&](Tx& tx) { return d.size(tx); }), 6u);
}

// tx.hpp T12: two get-or-create transactions of one root. B looks first and
// finds no root; A then creates it and commits; B creates it too. Without
// T12, B's snapshot was extended over A's commit (B had read nothing A wrote:
// a missing root is no word to validate), B committed and replaced A's list,
// and what A's process went on adding to was lost (CI caught this across
// processes in tests/python/test_shm.py). With T12, B aborts, retries and
// finds A's list.
TEST(ShmObjects, AGetOrCreateOfAMissingRootNeverReplacesOneCreatedMeanwhile) {
  auto heap = objects_test_heap::make_heap();
  TxHeap::attach(heap);
  std::atomic<int> stage{0};
  auto wait_for = [&](int s) {
    while (stage.load() < s) std::this_thread::yield();
  };
  auto get_or_create = [&](Tx& tx, const char* who) {
    Value v = get_root(tx, "late");
    if (v.is_none()) {
      List l = new_list(tx);
      l.append(tx, Value(who));
      set_root(tx, "late", Value(l));
    }
  };
  std::thread a([&] {
    wait_for(1);
    atomically(heap, [&](Tx& tx) { get_or_create(tx, "a"); });
    stage.store(2);
  });
  int b_attempts = 0;
  atomically(heap, [&](Tx& tx) {
    Value v = get_root(tx, "late");
    if (++b_attempts == 1) {
      EXPECT_TRUE(v.is_none());
      stage.store(1);
      wait_for(2);  // A created the root and committed
    }
    if (v.is_none()) {
      List l = new_list(tx);
      l.append(tx, Value("b"));
      set_root(tx, "late", Value(l));
    }
  });
  a.join();
  EXPECT_EQ(b_attempts, 2);
  EXPECT_EQ(atomically(heap, [&](Tx& tx) { return get_root(tx, "late").as_list().get(tx, 0); }),
            Value("a"));
  expect_clean(heap, user_bytes(heap));
}

// A heap closed and created again under the same name (often mapped at the
// same address) has its own roots: nothing cached from the first one leaks
// into the second.
TEST(ShmObjects, RootsOfAHeapCreatedAgainUnderItsName) {
  troupe::shm::CreateOptions o;
  o.name = "/troupe.test-roots-again-" + std::to_string(::getpid());
  o.initial_size = 1 << 20;
  o.max_size = 16 << 20;
  {
    auto h = Heap::create(o);
    atomically(h, [&](Tx& tx) { set_root(tx, "a", Value("first")); });
  }
  auto h = Heap::create(o);
  EXPECT_TRUE(atomically(h, [&](Tx& tx) { return get_root(tx, "a"); }).is_none());
  atomically(h, [&](Tx& tx) { set_root(tx, "a", Value("second")); });
  auto other = Heap::open(o.name);  // another mapping reads the root table itself
  EXPECT_EQ(atomically(other, [&](Tx& tx) { return get_root(tx, "a"); }).as_string(), "second");
}
