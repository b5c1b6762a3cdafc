// tests/shm_objects/objects_test.cpp: values, strings, tuples, lists, dicts and
// records in a shared heap, changed by transactions in one process: encoding
// round trips, nesting, roots, abort rollback, reclamation (no leaked bytes).
#include <gtest/gtest.h>

#include <troupe/shm/objects.hpp>

using namespace troupe::shm;
using troupe::Error;

namespace {

Heap make_heap() {
  CreateOptions o;
  o.initial_size = 4 << 20;
  o.max_size = 64 << 20;
  return Heap::create(o);
}

// Published bytes besides the layer's own (table, logs, root cells).
std::size_t published(Heap& h) {
  h.flush_thread_cache();
  return h.stats().published;
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
    // A container already owned cannot be stored twice (V2).
    EXPECT_THROW(users.set(tx, 9, items), Error);
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

// V2 inside the creating transaction: a fresh container has one owner.
TEST(ShmObjects, FreshContainerIsStoredOnce) {
  Heap h = make_heap();
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "d");
  // Storing it again where it already is changes nothing.
  atomically(l, [&](Tx& tx) {
    List x = new_list(tx);
    x.append(tx, 1);
    d.set(tx, "k", x);
    d.set(tx, "k", x);
    Record r = new_record(tx, {"f"});
    r.set(tx, "f", x.size(tx) == 1 ? Value(7) : Value());
    d.set(tx, "r", r);
    d.set(tx, "r", r);
    set_root(tx, "x", Value());
  });
  atomically(l, [&](Tx& tx) {
    List x = d.get(tx, "k")->as_list();
    x.append(tx, std::string(40, 'z'));  // x must still be alive
  });
  atomically(l, [&](Tx& tx) {
    EXPECT_EQ(d.get(tx, "k")->as_list().items(tx), (std::vector<Value>{1, std::string(40, 'z')}));
    EXPECT_EQ(d.get(tx, "r")->as_record().get(tx, "f").as_int(), 7);
  });
  // A second owner is refused with a typed error, before anything changes.
  auto second_owner = [&](auto&& store_twice) {
    try {
      atomically(l, [&](Tx& tx) {
        List a = new_list(tx);
        a.append(tx, 0);
        a.append(tx, 0);
        d.set(tx, "a", a);
        List x = new_list(tx);
        store_twice(tx, a, x);
      });
      ADD_FAILURE() << "a container stored twice was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), troupe::Errc::invalid_argument);
      EXPECT_NE(std::string(e.what()).find("already has an owner"), std::string::npos) << e.what();
    }
  };
  second_owner([](Tx& tx, List a, List x) {
    a.set(tx, 0, x);
    a.set(tx, 1, x);
  });
  second_owner([&](Tx& tx, List a, List x) {
    d.set(tx, "x", x);
    a.append(tx, x);
  });
  second_owner([](Tx& tx, List a, List x) { a.append(tx, Value::tuple({x, x})); });
  second_owner([&](Tx& tx, List, List x) {
    set_root(tx, "x", x);
    d.set(tx, "y", Value::tuple({1, x}));
  });
  atomically(l, [&](Tx& tx) {
    EXPECT_FALSE(d.contains(tx, "a"));
    EXPECT_TRUE(get_root(tx, "x").is_none());
  });
  // The error leaves the transaction usable: caught inside, it still commits.
  atomically(l, [&](Tx& tx) {
    List x = new_list(tx);
    d.set(tx, "x", x);
    EXPECT_THROW(d.set(tx, "y", x), Error);
    x.append(tx, 3);
  });
  atomically(l, [&](Tx& tx) {
    EXPECT_EQ(d.get(tx, "x")->as_list().items(tx), (std::vector<Value>{3}));
    EXPECT_FALSE(d.contains(tx, "y"));
    d.erase(tx, "x");
    d.erase(tx, "k");
    d.erase(tx, "r");
  });
  EXPECT_EQ(l.stuck_locks(), 0u);
  EXPECT_EQ(l.busy_records(), 0u);
  EXPECT_TRUE(h.verify().empty());
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
  std::size_t base = published(h);
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
    // Stored already (in the tuple): a copy of the tuple would be a second owner.
    EXPECT_THROW(d.set(tx, "copy", t), Error);
  });
  atomically(l, [&](Tx& tx) {
    Value t = *d.get(tx, "t");
    EXPECT_EQ(t.as_tuple()[0].as_list().size(tx), 2u);
    EXPECT_EQ(t.as_tuple()[2].as_tuple()[1].as_dict().get(tx, "k")->as_string(), "v");
    d.erase(tx, "t");
  });
  EXPECT_EQ(published(h), base);
  EXPECT_TRUE(h.verify().empty());
}

}  // namespace
