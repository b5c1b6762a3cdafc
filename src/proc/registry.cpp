// src/proc/registry.cpp: the table of what can be called across processes
// (registry.hpp I1).
#include "troupe/proc/detail/registry.hpp"

namespace troupe::proc::detail {

Registry& registry() noexcept {
  static Registry r;  // registry.hpp I1
  return r;
}

}  // namespace troupe::proc::detail
