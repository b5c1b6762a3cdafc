// src/proc/reply.cpp: decoding a reply body into its payload or the remote
// error (process.hpp's open_reply).
#include <fmt/core.h>

#include <exception>
#include <string>

#include "troupe/proc/process.hpp"

namespace troupe::proc::detail {

const msgpack::object* open_reply(const msgpack::object_handle& oh, const std::string& name,
                                  std::exception_ptr& err) {
  const msgpack::object& o = oh.get();
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 2) throw msgpack::type_error();
  int status = o.via.array.ptr[0].as<int>();
  const msgpack::object& payload = o.via.array.ptr[1];
  if (status == static_cast<int>(Status::ok)) return &payload;
  if (payload.type != msgpack::type::ARRAY || payload.via.array.size != 2)
    throw msgpack::type_error();
  if (status == static_cast<int>(Status::exception)) {
    auto type = payload.via.array.ptr[0].as<std::string>();
    auto what = payload.via.array.ptr[1].as<std::string>();
    err = std::make_exception_ptr(
        RemoteException(type, what, fmt::format("{} threw {}: {}", name, type, what)));
    return nullptr;
  }
  if (status == static_cast<int>(Status::error)) {
    int code = payload.via.array.ptr[0].as<int>();
    if (code < 1 || code > static_cast<int>(Errc::overloaded)) throw msgpack::type_error();  // the last
    err = std::make_exception_ptr(
        Error(static_cast<Errc>(code), payload.via.array.ptr[1].as<std::string>()));
    return nullptr;
  }
  throw msgpack::type_error();
}

}  // namespace troupe::proc::detail
