// src/shm/list.cpp: List, a growable array of cells in shared memory:
// {len, cap, items, refs, stamp} over an items block of cap cells. Keeps V1
// and V2 (objects.hpp: every cell written through the transaction, a stored
// value counted before the one it replaces is dropped) and V5 (a length past the
// capacity is corruption, reported as a typed error).
#include <fmt/format.h>

#include "shm/objects_private.hpp"
#include "troupe/shm/objects.hpp"

namespace troupe::shm {

using namespace detail;

namespace {

[[noreturn]] void out_of_range(std::size_t i, std::size_t n) {
  throw Error(Errc::invalid_argument, fmt::format("list index {} out of range (size {})", i, n));
}

// V5: the length a walk, a clear or an append trusts is at most the
// capacity, and the capacity's cells fit in the heap: a forged length is a
// typed error, not a huge reserve() or a write past the items block.
// Only size() and get() skip it: they write nothing, and a cell get() reads
// past a forged capacity is still inside the heap (Heap::ptr bounds reads).
struct Shape {
  std::uint64_t len, cap;
  Offset items;
};
Shape checked_shape(Tx& tx, Offset list) {
  Shape s{tx.read(list), tx.read(list + 8), tx.read(list + 16)};
  if (s.cap >= tx.heap().committed_bytes() / 16) corrupt("list capacity", list, s.cap);
  if (s.len > s.cap) corrupt("list", list, s.len);
  return s;
}

}  // namespace

// ---- List: {len, cap, items, refs, stamp} ----------------------------------------------
List new_list(Tx& tx, std::size_t capacity) {
  capacity = std::max<std::size_t>(capacity, 1);
  Offset b = tx.allocate(kHeaderBytes);
  Offset items = tx.allocate(16 * capacity);
  put_zeros(tx.heap().ptr<std::uint64_t>(items), 2 * capacity);  // none cells; private (X6), T9
  return List(b, init_header(tx, Kind::list, b, capacity, items));
}

std::size_t List::size(Tx& tx) const {
  live(tx);
  return tx.read(off_);
}

Value List::get(Tx& tx, std::size_t i) const {
  live(tx);
  std::size_t n = tx.read(off_);
  if (i >= n) out_of_range(i, n);
  return decode(tx, read_cell(tx, tx.read(off_ + 16) + 16 * i));
}

Offset List::payload_word(Tx& tx, std::size_t i) const {
  live(tx);
  auto [n, cap, items] = checked_shape(tx, off_);  // V5
  if (i >= n) out_of_range(i, n);
  return items + 16 * i + 8;
}

void List::set(Tx& tx, std::size_t i, const Value& v) const {
  live(tx);
  auto [n, cap, items] = checked_shape(tx, off_);  // V5
  if (i >= n) out_of_range(i, n);
  store_cell(tx, items + 16 * i, v);  // V2
}

void List::append(Tx& tx, const Value& v) const {
  live(tx);
  Cell fresh = encode(tx, v);  // V2
  auto [len, cap, items] = checked_shape(tx, off_);  // V5
  if (len == cap) {
    std::uint64_t ncap = cap * 2;
    Offset fresh = tx.allocate(16 * ncap);
    auto* p = tx.heap().ptr<std::uint64_t>(fresh);  // private until commit (X6), T9
    for (std::uint64_t i = 0; i < len; ++i) {
      Cell s = read_cell(tx, items + 16 * i);
      put(p + 2 * i, s.tag);
      put(p + 2 * i + 1, s.payload);
    }
    put_zeros(p + 2 * len, 2 * (ncap - len));
    tx.write(off_ + 8, ncap);
    tx.write(off_ + 16, fresh);
    tx.retire(items);
    items = fresh;
  }
  write_cell(tx, items + 16 * len, fresh);
  tx.write(off_, len + 1);
}

Value List::pop(Tx& tx) const {
  live(tx);
  auto [len, cap, items] = checked_shape(tx, off_);  // V5
  if (len == 0) throw Error(Errc::invalid_argument, "pop from an empty list");
  Offset at = items + 16 * (len - 1);
  Cell s = read_cell(tx, at);
  Value v = decode(tx, s);
  retire_cell(tx, s);  // V2: a popped container not stored again is freed at commit
  write_cell(tx, at, Cell{});
  tx.write(off_, len - 1);
  return v;
}

void List::clear(Tx& tx) const {
  live(tx);
  auto [len, cap, items] = checked_shape(tx, off_);  // V5
  for (std::uint64_t i = 0; i < len; ++i) {
    retire_cell(tx, read_cell(tx, items + 16 * i));
    write_cell(tx, items + 16 * i, Cell{});
  }
  tx.write(off_, 0);
}

std::vector<Value> List::items(Tx& tx) const {
  live(tx);
  auto [len, cap, items] = checked_shape(tx, off_);  // V5
  std::vector<Value> out;
  out.reserve(len);
  for (std::uint64_t i = 0; i < len; ++i) out.push_back(decode(tx, read_cell(tx, items + 16 * i)));
  return out;
}
}  // namespace troupe::shm
