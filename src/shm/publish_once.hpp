// src/shm/publish_once.hpp: the one way a block is created once for every
// process, outside a transaction (the transaction table, tx_heap.cpp; a
// root's cell, roots.cpp): allocate it, fill it, publish it, then compare-
// exchange its offset into a shared word that was null; a process that loses
// the race frees its block and uses the winner's. Keeps H1 and the
// publish-before-link order of heap.hpp (the block is published before any
// other process can reach it, so a death at any step leaks nothing: before
// publish() the heap frees it with our slot). Private: not installed.
#pragma once

#include "troupe/shm/heap.hpp"

namespace troupe::shm::detail {

// init(block) fills the fresh block; install(expected, block) is the
// compare-exchange from null (true: installed; false: `expected` now holds
// the winner's offset). Returns the installed block, ours or the winner's.
template <class Init, class Install>
Offset publish_once(Heap& heap, std::size_t bytes, Init&& init, Install&& install) {
  Offset mine = heap.allocate(bytes);
  init(mine);
  heap.publish(mine);
  Offset expected = null_offset;
  if (install(expected, mine)) return mine;
  heap.free(mine);
  return expected;
}

}  // namespace troupe::shm::detail
