// troupe/shm/queue.hpp: a bounded multi-producer multi-consumer queue in a
// shared heap, usable by name from any process that opens the heap.
//
//   auto q = shm::Queue::create(heap, "jobs", 1024);      // or Queue::open(heap, "jobs")
//   q.put(shm::Value::bytes("work"), 1s);                 // waits while full
//   std::optional<shm::Value> v = q.get(1s);              // waits while empty
//
// Items are shm::Values (the Python package stores pickled bytes). Each put
// and get is one transaction of the heap (tx.hpp), so a process killed at any
// instruction has either put (or taken) an item wholly or not at all, and a
// put or get may join a larger transaction (a consumer that records what it
// took in the same transaction takes it exactly once).
//
// Layout: the root `name` holds a record {items, head, tail, capacity,
// closed, sync}: items is a list of `capacity` cells used as a ring (cell
// i % capacity), head and tail count gets and puts since creation, sync is
// the offset of a published block of futex words that no transaction touches.
//
// Invariants:
//   Q1. 0 <= tail - head <= capacity; the items of the queue are the cells
//       head..tail-1 (mod capacity), oldest first; a cell outside that range
//       holds none (a get clears the cell it took, releasing its value), and
//       no item is none. So a put needs only tail and its cell (occupied:
//       full) and a get only head and its cell (empty: empty): producers and
//       consumers conflict only on a cell both want, never on head or tail.
//   Q2. A waiter never misses an item: it reads the sequence word (puts for a
//       getter, gets for a putter) before it tries, and sleeps on the futex
//       only while the word still has that value; every committed put (get)
//       increments the word after its commit and wakes the sleepers. A put or
//       get inside a larger transaction increments it before that commits:
//       a waiter that tried meanwhile sleeps at most one slice (100 ms) more.
//   Q3. A waiter's sleep is bounded (its timeout, 100 ms slices): a waker
//       that died between its commit and its wake costs at most one slice.
//   Q4. A waiter watches the sequence word for up to 50 us (Spin's pacing)
//       before it counts itself a sleeper and sleeps: an idle queue costs no
//       CPU after that, and a busy one no system call on either side.
//   Q5. try_get_in_place() empties the cell and takes the item's blob out of
//       the shared data in the same transaction (tx.hpp T11): the blob is
//       the taker's from the commit on, freed exactly once, by the taker or
//       by recovery if the taker dies.
//   Q6. Opening checks the record: a capacity of 0, an items list of another
//       length, or a futex block that is null, misaligned or past the heap
//       is Errc::bad_segment (a record another program scribbled over).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "troupe/shm/objects.hpp"

namespace troupe::shm {

class Queue {
 public:
  // The queue at root `name`: created with `capacity` cells if absent (an
  // existing queue keeps its capacity).
  static Queue create(Heap& heap, std::string_view name, std::size_t capacity);
  // The queue at root `name`; Error(not_found) if there is none.
  static Queue open(Heap& heap, std::string_view name);

  // Non-blocking: false when full (or closed: Error(shutdown)).
  bool try_put(const Value& v);
  // Non-blocking: the oldest item, or none when empty.
  std::optional<Value> try_get();
  // An item taken out whose bytes stay where they are (Q5): a bytes item of
  // more than 8 bytes comes as `block`, now this process's (the heap frees it
  // if the process dies), its bytes readable in place until the caller's
  // heap().free(block); any other item comes as `value` (block null). Not
  // inside atomically() (Error(invalid_argument)): the blob is the caller's
  // only once this get's own transaction commits.
  struct InPlace {
    Value value;
    Offset block = null_offset;
    std::string_view bytes;  // the block's bytes, in this process's mapping
  };
  std::optional<InPlace> try_get_in_place();
  // Blocking, up to `timeout` (negative: no limit): false / none at the limit.
  bool put(const Value& v, std::chrono::nanoseconds timeout);
  std::optional<Value> get(std::chrono::nanoseconds timeout);
  // One bounded wait (<= 100 ms) while the queue is full (for_put) or empty;
  // for callers that must look at something else between waits (signals).
  void wait(bool for_put, std::chrono::nanoseconds at_most);

  std::size_t size();
  std::size_t capacity() const { return capacity_; }
  // No put succeeds afterwards (Error(shutdown)); gets drain what is left.
  void close();
  bool closed();

  Heap& heap() const { return *heap_; }
  const std::string& name() const { return name_; }

 private:
  Queue(Heap& heap, std::string name, Record rec, Tx& tx);
  void notify(bool after_put);
  bool cell_taken(Tx& tx, std::uint64_t n) const;  // the cell of item n holds one
  Heap* heap_ = nullptr;
  std::string name_;
  Record rec_;
  std::size_t capacity_ = 0;
  Offset sync_ = null_offset;
  // Words of the queue's record and ring, stable while the queue lives (it
  // lives as long as the heap): the payload words of head, tail and closed,
  // and the ring's item cells (the list never grows).
  List items_;
  Offset head_word_ = null_offset, tail_word_ = null_offset, closed_word_ = null_offset;
  Offset cells_ = null_offset;
};

}  // namespace troupe::shm
