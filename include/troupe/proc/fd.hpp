// troupe/proc/fd.hpp: Fd, an owned file descriptor, and SharedBytes, a byte
// buffer in shared memory; both travel to worker processes as arguments.
//
// An Fd passed in a call arrives in the worker as a working descriptor
// (SCM_RIGHTS dups it into the receiver); the sender keeps its own. A
// SharedBytes is a memfd mapping: it crosses as its descriptor, and the
// receiver maps the same pages, so its bytes are never copied.
//
// Invariants:
//   FD1. An Fd closes its descriptor exactly once (destructor or reset), and
//       never one it released.
//   FD2. While a message is packed or unpacked, the descriptors it carries are
//       in the calling thread's FdContext (set by the runtime); outside a
//       message, packing an Fd is an error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "troupe/proc/detail/msgpack.hpp"

namespace troupe::proc {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;  // FD1
  // A new Fd for the same open file (dup with close-on-exec).
  Fd dup() const;

 private:
  int fd_ = -1;
};

// A byte buffer in a memfd, shareable with workers without copying.
class SharedBytes {
 public:
  SharedBytes() = default;
  explicit SharedBytes(std::size_t size);              // new, zero-filled
  static SharedBytes map(Fd fd);                       // the receiver's side
  SharedBytes(SharedBytes&& o) noexcept { *this = std::move(o); }
  SharedBytes& operator=(SharedBytes&& o) noexcept;
  ~SharedBytes();

  std::span<std::byte> bytes() noexcept { return {data_, size_}; }
  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  std::size_t size() const noexcept { return size_; }
  const Fd& fd() const noexcept { return fd_; }

 private:
  Fd fd_;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

namespace detail {
// FD2: the descriptors of the message being packed (out) or unpacked (in).
struct FdContext {
  std::vector<int>* out = nullptr;  // packing: raw fds to send (borrowed)
  std::vector<Fd>* in = nullptr;    // unpacking: received fds (taken by index)
};
FdContext& fd_context() noexcept;
inline constexpr std::int8_t kFdExt = 1;
}  // namespace detail

}  // namespace troupe::proc

// msgpack adaptors: an Fd is packed as ext type 1 holding its index in the
// message's descriptor list (FD2); SharedBytes as its Fd.
namespace msgpack {
MSGPACK_API_VERSION_NAMESPACE(MSGPACK_DEFAULT_API_NS) {
  namespace adaptor {
  template <>
  struct pack<troupe::proc::Fd> {
    template <class Stream>
    packer<Stream>& operator()(packer<Stream>& o, const troupe::proc::Fd& fd) const {
      auto& ctx = troupe::proc::detail::fd_context();
      if (!ctx.out || fd.get() < 0) throw type_error();
      std::uint32_t index = static_cast<std::uint32_t>(ctx.out->size());
      ctx.out->push_back(fd.get());
      o.pack_ext(sizeof index, troupe::proc::detail::kFdExt);
      o.pack_ext_body(reinterpret_cast<const char*>(&index), sizeof index);
      return o;
    }
  };
  template <>
  struct convert<troupe::proc::Fd> {
    const msgpack::object& operator()(const msgpack::object& o, troupe::proc::Fd& fd) const {
      auto& ctx = troupe::proc::detail::fd_context();
      if (o.type != type::EXT || o.via.ext.type() != troupe::proc::detail::kFdExt ||
          o.via.ext.size != sizeof(std::uint32_t) || !ctx.in)
        throw type_error();
      std::uint32_t index;
      std::memcpy(&index, o.via.ext.data(), sizeof index);
      if (index >= ctx.in->size() || !(*ctx.in)[index]) throw type_error();  // forged or reused
      fd = std::move((*ctx.in)[index]);
      return o;
    }
  };
  template <>
  struct pack<troupe::proc::SharedBytes> {
    template <class Stream>
    packer<Stream>& operator()(packer<Stream>& o, const troupe::proc::SharedBytes& b) const {
      return o << b.fd();
    }
  };
  template <>
  struct convert<troupe::proc::SharedBytes> {
    const msgpack::object& operator()(const msgpack::object& o, troupe::proc::SharedBytes& b) const {
      troupe::proc::Fd fd;
      o.convert(fd);
      b = troupe::proc::SharedBytes::map(std::move(fd));
      return o;
    }
  };
  }  // namespace adaptor
}
}  // namespace msgpack
