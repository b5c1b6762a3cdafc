// src/shm/roots.cpp: named roots of shared objects: a root is a heap root
// (Heap::root) naming a cell, a published 16-byte block holding one value,
// created once and never freed; get_root/set_root read and write its cell in
// a transaction, root_dict makes a dict root. Keeps V2 (objects.hpp: a root's
// value is counted like any cell's), T9 (tx.hpp: the cell is initialised
// with atomic stores) and T12 (a root found missing pins the snapshot).
#include <fmt/format.h>

#include <map>
#include <mutex>
#include <string>

#include "shm/objects_private.hpp"
#include "shm/publish_once.hpp"
#include "troupe/shm/objects.hpp"

namespace troupe::shm {

using namespace detail;

// ---- roots ------------------------------------------------------------------------

namespace {

std::mutex g_cells_mu;
// Per opened heap (Heap::instance, never reused: a heap closed and created
// again under its name, even at the same address, has other cells).
std::map<std::pair<std::uint64_t, std::string>, Offset> g_cells;

// The cell behind root `name`: a published 16-byte block holding one value,
// created by the first process that asks (compare_exchange_root), never freed.
Offset root_cell(Heap& h, std::string_view name, bool create) {
  std::pair<std::uint64_t, std::string> key{h.instance(), std::string(name)};
  {
    std::lock_guard<std::mutex> lk(g_cells_mu);
    if (auto it = g_cells.find(key); it != g_cells.end()) return it->second;
  }
  Offset cell = h.root(name);
  if (!cell) {
    if (!create) return null_offset;
    cell = publish_once(
        h, 16,
        [&](Offset mine) {
          detail::fresh_block_fence();  // T9 of tx.hpp (as Tx::allocate), then atomic stores
          put_zeros(h.ptr<std::uint64_t>(mine), 2);  // none
        },
        [&](Offset& expected, Offset mine) {
          return h.compare_exchange_root(name, expected, mine);
        });
  }
  std::lock_guard<std::mutex> lk(g_cells_mu);
  g_cells[key] = cell;
  return cell;
}

}  // namespace

Value get_root(Tx& tx, std::string_view name) {
  Offset cell = root_cell(tx.heap(), name, false);
  if (!cell) {
    tx.pin_snapshot();  // T12: the missing root is part of what this transaction saw
    return Value();
  }
  return decode(tx, read_cell(tx, cell));
}

void set_root(Tx& tx, std::string_view name, const Value& v) {
  store_cell(tx, root_cell(tx.heap(), name, true), v);  // V2
}

Dict root_dict(TxHeap& txh, std::string_view name, std::size_t buckets) {
  root_cell(txh.heap(), name, true);  // outside the transaction: no retries
  return atomically(txh, [&](Tx& tx) {
    Value v = get_root(tx, name);
    if (v.kind() == Kind::dict) return v.as_dict();
    if (!v.is_none())
      throw Error(Errc::invalid_argument,
                  fmt::format("root '{}' holds a {}, not a dict", name, to_string(v.kind())));
    Dict d = new_dict(tx, buckets);
    set_root(tx, name, d);
    return d;
  });
}

}  // namespace troupe::shm
