// src/shm/queue.cpp: shm::Queue (queue.hpp Q1-Q5).
#include "troupe/shm/queue.hpp"

#include <atomic>

#include "troupe/detail/platform.hpp"
#include "troupe/error.hpp"
#include "shm/fault.hpp"
#include "troupe/shm/heap.hpp"
#include "troupe/shm/tx.hpp"

namespace troupe::shm {

namespace {

// The futex block (Q2): words that no transaction reads or writes, shared by
// every process that maps the heap (so: shared futexes, not private ones).
struct Sync {
  std::atomic<std::uint32_t> puts;     // bumped after each committed put
  std::atomic<std::uint32_t> gets;     // bumped after each committed get
  std::atomic<std::uint32_t> getters;  // processes' threads sleeping for an item (a hint)
  std::atomic<std::uint32_t> putters;  // ... for room
};
static_assert(sizeof(Sync) <= 64);

constexpr auto kSlice = std::chrono::milliseconds(100);  // Q3
// Q4: how long a waiter watches the sequence word before it sleeps.
constexpr auto kSpin = std::chrono::microseconds(50);
// ... yielding from the start (64 rounds in): the peer process may share our
// CPU, and then only a yield lets it make the item we wait for.
constexpr auto kYieldFrom = std::chrono::nanoseconds(0);

std::string root_name(std::string_view name) { return "queue:" + std::string(name); }

}  // namespace

Queue::Queue(Heap& heap, std::string name, Record rec, Tx& tx)
    : heap_(&heap), name_(std::move(name)), rec_(rec) {
  capacity_ = static_cast<std::size_t>(rec.get(tx, "capacity").as_int());
  sync_ = static_cast<Offset>(rec.get(tx, "sync").as_int());
  items_ = rec.get(tx, "items").as_list();
  head_word_ = rec.payload_word(tx, "head");
  tail_word_ = rec.payload_word(tx, "tail");
  closed_word_ = rec.payload_word(tx, "closed");
  // Q6: a queue record another program scribbled over is a typed error
  // here, not a division by zero or a futex on a word outside the heap.
  auto corrupt = [&](const char* what) {
    throw Error(Errc::bad_segment,
                "queue '" + name_ + "' in heap '" + heap.name() + "' is corrupt: its " + what);
  };
  if (capacity_ == 0 || items_.size(tx) != capacity_) corrupt("capacity or items");
  if (sync_ == null_offset || sync_ % alignof(Sync) != 0) corrupt("futex block offset");
  try {
    (void)heap.ptr(sync_ + sizeof(Sync) - 1);  // throws past the heap's committed end
  } catch (const Error&) {
    corrupt("futex block offset");
  }
  cells_ = items_.payload_word(tx, 0) - 8;  // the first cell's tag word
}

// Q1: a cell's tag word says its kind; none is 0.
bool Queue::cell_taken(Tx& tx, std::uint64_t n) const {
  return (tx.read(cells_ + 16 * (n % capacity_)) & 0xff) != 0;
}

Queue Queue::create(Heap& heap, std::string_view name, std::size_t capacity) {
  if (capacity == 0) throw Error(Errc::invalid_argument, "a queue needs a capacity of at least 1");
  std::string root = root_name(name);
  // The futex block first, published, outside any transaction (never freed:
  // the queue lives as long as the heap).
  Offset sync = null_offset;
  for (;;) {
    auto found = atomically(heap, [&](Tx& tx) -> std::optional<Queue> {
      Value v = get_root(tx, root);
      if (v.kind() == Kind::record) return Queue(heap, std::string(name), v.as_record(), tx);
      if (!sync) return std::nullopt;
      Record r = new_record(tx, {"items", "head", "tail", "capacity", "closed", "sync"});
      List items = new_list(tx, capacity);
      for (std::size_t i = 0; i < capacity; ++i) items.append(tx, Value());
      r.set(tx, "items", Value(items));
      r.set(tx, "head", Value(0LL));
      r.set(tx, "tail", Value(0LL));
      r.set(tx, "capacity", Value(static_cast<long long>(capacity)));
      r.set(tx, "closed", Value(false));
      r.set(tx, "sync", Value(static_cast<long long>(sync)));
      set_root(tx, root, Value(r));
      return Queue(heap, std::string(name), r, tx);
    });
    if (found) {
      if (sync && found->sync_ != sync) heap.free(sync);  // another process created it first
      return *found;
    }
    sync = heap.allocate(sizeof(Sync));
    auto* s = heap.ptr<Sync>(sync);
    new (s) Sync{};
    heap.publish(sync);
  }
}

Queue Queue::open(Heap& heap, std::string_view name) {
  return atomically(heap, [&](Tx& tx) {
    Value v = get_root(tx, root_name(name));
    if (v.kind() != Kind::record)
      throw Error(Errc::not_found, "no queue named '" + std::string(name) + "' in heap '" +
                                       heap.name() + "'");
    return Queue(heap, std::string(name), v.as_record(), tx);
  });
}

bool Queue::try_put(const Value& v) {
  if (v.is_none())
    throw Error(Errc::invalid_argument, "a queue item cannot be none (an empty cell is, Q1)");
  bool put = atomically(*heap_, [&](Tx& tx) {
    if (tx.read(closed_word_) != 0)
      throw Error(Errc::shutdown, "put on queue '" + name_ + "', which is closed");
    std::uint64_t tail = tx.read(tail_word_);
    if (cell_taken(tx, tail)) return false;  // Q1: the oldest item is still there: full
    items_.set(tx, static_cast<std::size_t>(tail % capacity_), v);
    tx.write(tail_word_, tail + 1);
    return true;
  });
  if (put) {
    detail::fault_point("queue.put.after_commit");
    notify(true);
  }
  return put;
}

std::optional<Value> Queue::try_get() {
  auto got = atomically(*heap_, [&](Tx& tx) -> std::optional<Value> {
    std::uint64_t head = tx.read(head_word_);
    if (!cell_taken(tx, head)) return std::nullopt;  // Q1: empty
    auto at = static_cast<std::size_t>(head % capacity_);
    Value v = items_.get(tx, at);
    items_.set(tx, at, Value());  // Q1: the cell releases its value
    tx.write(head_word_, head + 1);
    return v;
  });
  if (got) {
    detail::fault_point("queue.get.after_commit");
    notify(false);
  }
  return got;
}

std::optional<Queue::InPlace> Queue::try_get_in_place() {
  constexpr std::uint64_t kBytesBlob = static_cast<std::uint64_t>(Kind::bytes);  // tag: not inline
  if (detail::current_tx())  // Q5: the blob is ours only once our own transaction commits
    throw Error(Errc::invalid_argument,
                "queue '" + name_ + "': an in-place get cannot join a larger transaction");
  auto got = atomically(*heap_, [&](Tx& tx) -> std::optional<InPlace> {
    std::uint64_t head = tx.read(head_word_);
    if (!cell_taken(tx, head)) return std::nullopt;  // Q1: empty
    const Offset cell = cells_ + 16 * (head % capacity_);
    InPlace r;
    if (tx.read(cell) == kBytesBlob) {  // Q5: empty the cell, keep its blob
      r.block = static_cast<Offset>(tx.read(cell + 8));
      tx.write(cell, 0);
      tx.write(cell + 8, 0);
      tx.take(r.block);
    } else {
      auto at = static_cast<std::size_t>(head % capacity_);
      r.value = items_.get(tx, at);
      items_.set(tx, at, Value());  // Q1: the cell releases its value
    }
    tx.write(head_word_, head + 1);
    return r;
  });
  if (got) {
    if (got->block) {  // ours now and immutable (objects.hpp V1): read in place
      const auto* p = heap_->ptr<std::uint64_t>(got->block);
      got->bytes = std::string_view(reinterpret_cast<const char*>(p + 1), p[0]);
    }
    detail::fault_point("queue.get.after_commit");
    notify(false);
  }
  return got;
}

void Queue::notify(bool after_put) {
  auto* s = heap_->ptr<Sync>(sync_);
  auto& seq = after_put ? s->puts : s->gets;
  seq.fetch_add(1);  // seq_cst: against the sleeper's count and load (Q2)
  if ((after_put ? s->getters : s->putters).load() > 0) troupe::detail::futex_wake_shared(&seq);
}

void Queue::wait(bool for_put, std::chrono::nanoseconds at_most) {
  auto* s = heap_->ptr<Sync>(sync_);
  auto& seq = for_put ? s->gets : s->puts;
  auto& sleepers = for_put ? s->putters : s->getters;
  std::uint32_t seen = seq.load();
  bool ready = atomically(*heap_, [&](Tx& tx) {
    if (tx.read(closed_word_) != 0) return true;
    return for_put ? !cell_taken(tx, tx.read(tail_word_)) : cell_taken(tx, tx.read(head_word_));
  });
  if (ready) return;
  // Q4: the other side is often a few microseconds from its next put (get):
  // watch the word a while, which costs it no wake-up system call and us no
  // sleep and wake-up (tens of microseconds on a VM).
  troupe::detail::Spin spin(std::min<std::chrono::nanoseconds>(at_most, kSpin), kYieldFrom);
  if (troupe::detail::spin_until(spin, [&] { return seq.load(std::memory_order_relaxed) != seen; }))
    return;
  sleepers.fetch_add(1);  // seq_cst (Q2): a notify after this sees us ...
  if (seq.load() == seen)  // ... or we see its increment
    troupe::detail::futex_wait_shared(&seq, seen,
                              std::min<std::chrono::nanoseconds>(at_most, kSlice).count());
  sleepers.fetch_sub(1);
}

bool Queue::put(const Value& v, std::chrono::nanoseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (try_put(v)) return true;
    auto left = timeout.count() < 0 ? std::chrono::nanoseconds(kSlice)
                                    : std::chrono::nanoseconds(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    wait(true, left);
  }
}

std::optional<Value> Queue::get(std::chrono::nanoseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto v = try_get()) return v;
    if (closed()) return std::nullopt;
    auto left = timeout.count() < 0 ? std::chrono::nanoseconds(kSlice)
                                    : std::chrono::nanoseconds(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    wait(false, left);
  }
}

std::size_t Queue::size() {
  return atomically(*heap_, [&](Tx& tx) {
    return static_cast<std::size_t>(tx.read(tail_word_) - tx.read(head_word_));
  });
}

void Queue::close() {
  atomically(*heap_, [&](Tx& tx) { rec_.set(tx, "closed", Value(true)); });
  notify(true);
  notify(false);
}

bool Queue::closed() {
  return atomically(*heap_, [&](Tx& tx) { return tx.read(closed_word_) != 0; });
}

}  // namespace troupe::shm
