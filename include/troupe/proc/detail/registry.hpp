// troupe/proc/detail/registry.hpp: what can be called across processes, by
// name.
//
// Every free function, constructor and method that a program calls in a
// worker (proc::call<&f>, spawn<T>(...), RemoteActor<T>::call<&T::m>) is
// registered when the template that names it is instantiated: a static
// initialiser adds its invoker under a name derived from the symbol. Workers
// run the same executable, so both sides hold the same table. A name that
// was never registered (forged, or from another binary) is rejected.
//
// Invariants:
//   RG1. The table is filled during static initialisation only (before main,
//       single-threaded) and read-only afterwards: lookups take no lock.
//   RG2. Names are stable within one executable: they come from the compiler's
//       spelling of the symbol (__PRETTY_FUNCTION__), identical in parent and
//       worker.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "troupe/proc/detail/msgpack.hpp"

namespace troupe::proc::detail {

// Decodes args (the descriptors are in fd_context().in), runs the call
// somewhere, and eventually sends exactly one reply for call `id`.
// Throws msgpack::type_error (or any exception) if the arguments do not fit;
// the caller then replies with the error.
using Invoker = void (*)(const msgpack::object& args, std::uint64_t object, std::uint64_t id);

struct Registry {
  std::unordered_map<std::string, Invoker> table;  // RG1
  bool add(std::string_view name, Invoker inv) {
    table.emplace(std::string(name), inv);
    return true;
  }
  Invoker find(std::string_view name) const {
    auto it = table.find(std::string(name));
    return it == table.end() ? nullptr : it->second;
  }
};
Registry& registry() noexcept;

template <class T>
constexpr std::string_view between(std::string_view s, std::string_view key) {
  auto b = s.find(key);
  if (b == std::string_view::npos) return s;
  b += key.size();
  auto e = s.find_first_of(";]", b);
  return s.substr(b, e - b);
}
// RG2
template <auto F>
std::string_view symbol_name() {
  return between<void>(__PRETTY_FUNCTION__, "F = ");
}
template <class T>
std::string_view type_name() {
  return between<void>(__PRETTY_FUNCTION__, "T = ");
}

}  // namespace troupe::proc::detail
