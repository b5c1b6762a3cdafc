// src/proc/registry.cpp: the table of what can be called across processes
// (registry.hpp RG1).
#include "troupe/proc/detail/registry.hpp"

namespace troupe::proc::detail {

Registry& registry() noexcept {
  static Registry r;  // registry.hpp RG1
  return r;
}

}  // namespace troupe::proc::detail
