// tests/shm/atomic_ops_test.cpp: the single-word atomic operations
// (TxHeap::fetch_add, exchange) on int values: outside a transaction they
// apply at once; inside one they are part of it (rolled back with it, applied
// once however often it retries); on anything but an int value they throw.
#include <gtest/gtest.h>

#include <troupe/shm/objects.hpp>

#include "test_heap.hpp"

using namespace troupe::shm;
using troupe::Error;

using objects_test_heap::make_heap;

namespace {

struct Boom {};

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
  EXPECT_EQ(l.stuck_locks(), 0u);
  EXPECT_EQ(l.busy_records(), 0u);
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
  EXPECT_EQ(l.stuck_locks(), 0u);
  EXPECT_EQ(l.busy_records(), 0u);
  EXPECT_TRUE(h.verify().empty());
}

}  // namespace
