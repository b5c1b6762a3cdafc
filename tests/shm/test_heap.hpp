// tests/shm/test_heap.hpp: the heap the single-process shared-objects
// tests create (4 MiB committed of 64 MiB reserved).
#pragma once

#include <troupe/shm/heap.hpp>

namespace objects_test_heap {

inline troupe::shm::Heap make_heap() {
  troupe::shm::CreateOptions o;
  o.initial_size = 4 << 20;
  o.max_size = 64 << 20;
  return troupe::shm::Heap::create(o);
}

}  // namespace objects_test_heap
