// fuzz/wire_fuzz.cpp: libFuzzer target for the worker message decoder
// (troupe::proc::detail::decode, wire.hpp) and for what a receiver does with
// a body it accepted: a worker's unpacking of a call [worker, object, name,
// args] and the conversion of args to its parameter tuple (decode_args, the
// same template the worker instantiates), a caller's unpacking of a reply
// [status, payload], and the root's unpacking of a release [worker, object].
// Built and run by scripts/fuzz.sh.
//
// Each input is one received datagram. It is decoded twice:
//   1. as it is, with no descriptors: decode(data, len, {});
//   2. when its header announces 1..4 descriptors: as a header alone, with
//      nfds - 1 descriptors (/dev/null) and, last, a memfd holding the bytes
//      after the header, which is how a body too large for a datagram travels
//      (kBodyInFd). This reaches the memfd path and lets Fd arguments convert.
// and then read as the contents of a shared-memory ring (ring.hpp) that a
// forging peer filled: 3. the input is the ring's data area (4 KiB), its
// first 8 bytes the published tail; every frame the consumer accepts is
// decoded as in 1. ASan checks the consumer never reads outside the ring
// (ring.hpp R3).
//
// Invariants the target checks (a violation is a crash libFuzzer reports):
//   FW1. Every rejection is a troupe::Error (from decode) or a msgpack
//       exception (unpack_error and its kinds, type_error); anything else
//       escapes and aborts. ASan/UBSan catch memory errors and UB.
//   FW2. No descriptor leaks: after each input, every descriptor the target
//       opened is closed again (checked with fcntl F_GETFD).
//   FW4. The ring consumer rejects a forged ring only with troupe::Error, and
//       returns no frame longer than the bytes published.
//   FW3. decode() that accepts returns a kind in 1..5 and exactly the
//       descriptors that were attached, less the body's memfd.
//
// Regression K1: receivers once called msgpack::unpack with no unpack_limit,
// so a 5-byte body announcing an array of 2^32 - 1 elements made msgpack ask
// for 128 GiB (std::bad_alloc, or an ASan abort) before it saw the bytes were
// missing. Found by this target; fixed by detail::unpack_body (limits from the
// body's size), which the parsers below call as the receivers do. The seed
// fuzz/corpus/k1_array32_huge replays it.

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "troupe/proc/detail/msgpack.hpp"
#include "proc/ring.hpp"
#include "troupe/proc/detail/wire.hpp"
#include "troupe/proc/process.hpp"

namespace {

using troupe::proc::Fd;
using namespace troupe::proc::detail;

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "wire_fuzz: invariant violated: %s\n", what);
  std::abort();
}

struct Point {  // a user type as the tests declare one
  double x = 0, y = 0;
  std::vector<std::string> tags;
  MSGPACK_DEFINE(x, y, tags)
};

// One conversion attempt; FW1: only msgpack's own errors may come out.
template <class Tuple>
void try_args(const msgpack::object& args) {
  try {
    auto t = decode_args<Tuple>(args);
    (void)t;
  } catch (const msgpack::type_error&) {
  }
}

template <class T>
void try_as(const msgpack::object& o) {
  try {
    T v = o.as<T>();
    (void)v;
  } catch (const msgpack::type_error&) {
  }
}

// What Node::serve_call does with a call body, then the invokers' decode_args
// for a few typical parameter lists.
void parse_call(Message& m) {
  auto oh = unpack_body(m.body);
  const msgpack::object& o = oh.get();
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 4) return;
  try_as<std::uint32_t>(o.via.array.ptr[0]);
  try_as<std::uint64_t>(o.via.array.ptr[1]);
  try_as<std::string>(o.via.array.ptr[2]);
  const msgpack::object& args = o.via.array.ptr[3];
  FdContext saved = fd_context();
  fd_context().in = &m.fds;
  try_args<std::tuple<>>(args);
  try_args<std::tuple<int, int>>(args);
  try_args<std::tuple<std::string>>(args);
  try_args<std::tuple<std::string, int>>(args);
  try_args<std::tuple<std::vector<double>>>(args);
  try_args<std::tuple<std::map<std::string, std::int64_t>>>(args);
  try_args<std::tuple<Point, double>>(args);
  try_args<std::tuple<std::uint32_t, std::uint64_t>>(args);  // a spawn's result, a handle
  try_args<std::tuple<Fd>>(args);
  try_args<std::tuple<Fd, Fd, std::string>>(args);
  fd_context() = saved;
}

// A caller's side of a reply (PendingCall::complete, open_reply's shape).
void parse_reply(Message& m) {
  auto oh = unpack_body(m.body);
  const msgpack::object& o = oh.get();
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 2) return;
  try_as<int>(o.via.array.ptr[0]);
  const msgpack::object& payload = o.via.array.ptr[1];
  try_as<std::tuple<std::string, std::string>>(payload);  // an exception
  try_as<std::tuple<int, std::string>>(payload);          // an error
  FdContext saved = fd_context();
  fd_context().in = &m.fds;
  try_as<int>(payload);
  try_as<std::string>(payload);
  try_as<std::vector<double>>(payload);
  try_as<std::tuple<std::uint32_t, std::uint64_t>>(payload);
  try_as<Point>(payload);
  try_as<Fd>(payload);
  fd_context() = saved;
}

void parse_release(Message& m) {
  auto oh = unpack_body(m.body);
  try_as<std::tuple<std::uint32_t, std::uint64_t>>(oh.get());
}

void accept(Message& m, std::size_t fds_in, bool body_in_fd) {
  if (static_cast<int>(m.kind) < 1 || static_cast<int>(m.kind) > kLastKind)
    violated("kind out of range");
  if (m.fds.size() != fds_in - (body_in_fd ? 1 : 0)) violated("descriptor count");  // FW3
  try {
    switch (m.kind) {
      case Kind::call:
        parse_call(m);
        break;
      case Kind::reply:
        parse_reply(m);
        break;
      case Kind::release:
        parse_release(m);
        break;
      default:
        break;
    }
  } catch (const msgpack::unpack_error&) {  // FW1: parse_error, insufficient_bytes, *_overflow
  } catch (const msgpack::type_error&) {
  }
}

void decode_plain(const std::uint8_t* data, std::size_t size) {
  try {
    Message m = decode(reinterpret_cast<const char*>(data), size, {});
    accept(m, 0, false);
  } catch (const troupe::Error&) {  // FW1
  }
}

void decode_with_memfd(const std::uint8_t* data, std::size_t size) {
  if (size < sizeof(Header)) return;
  Header h;
  std::memcpy(&h, data, sizeof h);
  if (h.nfds < 1 || h.nfds > 4) return;
  std::vector<int> opened;  // FW2
  std::vector<Fd> fds;
  for (int i = 0; i + 1 < h.nfds; ++i) {
    fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    opened.push_back(fds.back().get());
  }
  Fd body(::memfd_create("wire-fuzz-body", MFD_CLOEXEC));
  if (!body) violated("memfd_create failed");
  const std::size_t rest = size - sizeof h;
  if (rest > 0 && ::write(body.get(), data + sizeof h, rest) != static_cast<ssize_t>(rest))
    violated("memfd write failed");
  opened.push_back(body.get());
  fds.push_back(std::move(body));
  try {
    Message m = decode(reinterpret_cast<const char*>(data), sizeof h, std::move(fds));
    accept(m, h.nfds, (h.flags & kBodyInFd) != 0);
  } catch (const troupe::Error&) {  // FW1
  }
  fds.clear();
  for (int fd : opened)  // FW2: closed by the Message, the decoder or fds
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) violated("a descriptor leaked");
}

void decode_ring(const std::uint8_t* data, std::size_t size) {
  constexpr std::size_t kCap = 4096;
  if (size < 8) return;
  alignas(64) static char mem[Ring::bytes(kCap)];
  std::memset(mem, 0, sizeof mem);
  Ring::init(mem);
  std::uint64_t tail;
  std::memcpy(&tail, data, sizeof tail);
  std::memcpy(mem + sizeof(RingControl), data + 8, std::min(size - 8, kCap));
  static_cast<RingControl*>(static_cast<void*>(mem))->tail.store(tail);
  Ring ring(mem, kCap);
  std::string frame;
  for (int i = 0; i < 64; ++i) {  // frames are at least 8 bytes: 4096 / 8 at most, fewer here
    try {
      if (!ring.peek(frame)) return;
    } catch (const troupe::Error&) {  // FW4
      return;
    }
    if (frame.size() > tail) violated("a ring frame longer than what was published");  // FW4
    ring.pop();
    decode_plain(reinterpret_cast<const std::uint8_t*>(frame.data()), frame.size());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  decode_plain(data, size);
  decode_with_memfd(data, size);
  decode_ring(data, size);
  return 0;
}
