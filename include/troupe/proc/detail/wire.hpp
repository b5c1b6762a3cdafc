// troupe/proc/detail/wire.hpp: the messages between a program and its worker
// processes, and their transport over a Unix SOCK_SEQPACKET socket.
//
// A message is one datagram: a fixed Header, then (flag kSeq) its 8-byte
// sequence number, then a msgpack body, with up to kMaxFds descriptors
// attached (SCM_RIGHTS). A body too large for one datagram travels in a sealed
// memfd attached as the last descriptor (flag kBodyInFd). The same datagrams
// travel framed in a shared-memory ring (ring.hpp, channel.hpp), without
// descriptors; the sequence number orders the two paths (channel.hpp C2).
//
//   call     id = caller's call id   body [worker, object, name, args]
//   reply    id = that call id       body [status, payload]
//            status 0: payload = result; 1: [exception type, what];
//            2: [Errc, message]
//   cancel   id = call id            body []  (skip it if not started)
//   release  id = 0                  body [object]  (the remote actor is dropped)
//   shutdown id = 0                  body []  (idle: exit)
//   connect  id = 0                  worker -> root: body [worker] (a direct
//                                    channel to that worker, please);
//                                    root -> worker: body [peer, pid, role],
//                                    role 0 `call` (yours, to call the peer
//                                    through), 1 `serve` (the peer calls you
//                                    through it), 2 `relay` (no channel: go
//                                    through the root); 0 and 1 carry the
//                                    channel's socket, memfd and two eventfds
//                                    (src/proc/node_private.hpp N11)
//
// Invariants:
//   WR1. decode() accepts only what it fully checked: magic, kind, lengths,
//       descriptor count; anything else is Error(Errc::bad_message) naming the
//       reason, and every descriptor that came with it is closed.
//   WR2. recv_message never leaks a descriptor, on any path (truncated control
//       data, truncated datagram, bad header).
//   WR3. A rejection whose header was readable (right magic, known kind) is a
//       BadMessage carrying that kind and id, so the receiver can answer the
//       caller (a call) or fail its own pending call (a reply) instead of
//       dropping it silently. Truncated control data (MSG_CTRUNC: the
//       receiver at its fd limit) is such a rejection; the datagram's bytes
//       are still read, the descriptors that did arrive are closed.
//   WR4. A BadMessage carries the sequence number of the message it rejects
//       when that could be read (0 otherwise), so a channel keeps its order
//       (channel.hpp C2) past a rejected message.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "troupe/error.hpp"
#include "troupe/proc/fd.hpp"

namespace troupe::proc::detail {

enum class Kind : std::uint8_t {
  call = 1,
  reply = 2,
  cancel = 3,
  release = 4,
  shutdown = 5,
  connect = 6
};
inline constexpr std::uint8_t kLastKind = 6;
enum class Status : std::uint8_t { ok = 0, exception = 1, error = 2 };

struct Header {
  std::uint32_t magic;
  std::uint8_t kind;
  std::uint8_t flags;
  std::uint16_t nfds;
  std::uint32_t body_len;
  std::uint64_t id;
};
static_assert(sizeof(Header) == 24);

inline constexpr std::uint32_t kMagic = 0x31505254;  // "TRP1"
inline constexpr std::size_t kMaxFds = 32;
inline constexpr std::uint8_t kBodyInFd = 1;
inline constexpr std::uint8_t kSeq = 2;               // a u64 sequence number follows the header
inline constexpr std::size_t kMaxInline = 64 * 1024;  // larger bodies go by memfd
inline constexpr std::size_t kMaxBody = 256u * 1024 * 1024;  // refuse anything larger

// WR3: Error(Errc::bad_message) for a message whose header could be read.
class BadMessage : public Error {
 public:
  BadMessage(Kind kind, std::uint64_t id, std::string body, const std::string& message,
             std::uint64_t seq = 0)
      : Error(Errc::bad_message, message),
        kind_(kind),
        id_(id),
        seq_(seq),
        body_(std::move(body)) {}
  Kind kind() const noexcept { return kind_; }
  std::uint64_t id() const noexcept { return id_; }
  std::uint64_t seq() const noexcept { return seq_; }  // WR4
  // The inline body when only the control data was lost (MSG_CTRUNC), else
  // empty: unchecked bytes, for naming the call in the error at most.
  const std::string& body() const noexcept { return body_; }

 private:
  Kind kind_;
  std::uint64_t id_;
  std::uint64_t seq_;
  std::string body_;
};

struct Message {
  Kind kind{};
  std::uint64_t id = 0;
  std::uint64_t seq = 0;  // 0: none (flag kSeq not set)
  std::string body;
  std::vector<Fd> fds;  // the attached descriptors, the body's memfd removed
};

// Checks one received datagram (WR1, WR3).
Message decode(const char* data, std::size_t len, std::vector<Fd> fds);

// The header (and sequence number, if seq != 0) of an inline datagram with a
// body of body_len bytes, written into `out`; returns the bytes used.
std::size_t encode_prefix(char (&out)[sizeof(Header) + 8], Kind kind, std::uint64_t id,
                          std::size_t body_len, std::uint64_t seq);

// Sends one message, numbered `seq` if not 0. Thread-safe: one sendmsg per
// message. Throws Error(Errc::worker_lost) if the peer is gone, Errc::system
// otherwise.
void send_message(int sock, Kind kind, std::uint64_t id, std::string_view body,
                  std::span<const int> fds = {}, std::uint64_t seq = 0);

// Receives one message into out. Returns false on end of stream. Throws
// Error(Errc::bad_message) for anything malformed, a BadMessage when its
// header was readable (WR1, WR2, WR3).
// With `dontwait`, returns false at once if nothing is there (`*empty`).
bool recv_message(int sock, Message& out, bool dontwait = false, bool* empty = nullptr);

// Unpacks a message body with limits derived from its size: no container may
// claim more elements, and no string more bytes, than the body holds, and
// nesting stops at 64 levels. A forged length therefore cannot make the
// decoder allocate more than a small multiple of what was received; anything
// over a limit throws (msgpack's size_overflow / depth errors), which callers
// report as Errc::bad_message.
msgpack::object_handle unpack_body(std::string_view body);

// Pack/unpack helpers for reply bodies.
std::string pack_error(Errc code, const std::string& message);
std::string pack_exception(const std::string& type, const std::string& what);
// Demangled dynamic type name of the exception being handled.
std::string current_exception_type();

}  // namespace troupe::proc::detail
