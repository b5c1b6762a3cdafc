// src/proc/wire.cpp: message checks and the socket transport (wire.hpp WR1, WR2,
// WR3, WR4).
#include "troupe/proc/detail/wire.hpp"

#include <cxxabi.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <typeinfo>

#include "troupe/error.hpp"

namespace troupe::proc {

namespace detail {

FdContext& fd_context() noexcept {
  thread_local FdContext ctx;
  return ctx;
}

namespace {
[[noreturn]] void bad(const std::string& why) {
  throw Error(Errc::bad_message, "bad message: " + why);
}
// The sequence number after a header, or 0 (WR4).
std::uint64_t seq_of(const char* data, std::size_t len, const Header& h) {
  std::uint64_t seq = 0;
  if ((h.flags & kSeq) && len >= sizeof h + sizeof seq)
    std::memcpy(&seq, data + sizeof h, sizeof seq);
  return seq;
}
// WR3: the header is readable, so the rejection names the message it rejects.
[[noreturn]] void bad(const Header& h, std::uint64_t seq, const std::string& why,
                      std::string body = {}) {
  throw BadMessage(static_cast<Kind>(h.kind), h.id, std::move(body), "bad message: " + why, seq);
}
// The header of a datagram if its magic and kind are right (WR3).
bool readable_header(const char* data, std::size_t len, Header& h) {
  if (len < sizeof h) return false;
  std::memcpy(&h, data, sizeof h);
  return h.magic == kMagic && h.kind >= 1 && h.kind <= kLastKind;
}
}  // namespace

std::size_t encode_prefix(char (&out)[sizeof(Header) + 8], Kind kind, std::uint64_t id,
                          std::size_t body_len, std::uint64_t seq) {
  Header h{};
  h.magic = kMagic;
  h.kind = static_cast<std::uint8_t>(kind);
  h.flags = seq != 0 ? kSeq : 0;
  h.body_len = static_cast<std::uint32_t>(body_len);
  h.id = id;
  std::memcpy(out, &h, sizeof h);
  if (seq == 0) return sizeof h;
  std::memcpy(out + sizeof h, &seq, sizeof seq);
  return sizeof h + sizeof seq;
}

Message decode(const char* data, std::size_t len, std::vector<Fd> fds) {
  if (len < sizeof(Header)) bad(fmt::format("{} bytes is shorter than a header", len));
  Header h;
  std::memcpy(&h, data, sizeof h);
  if (h.magic != kMagic) bad(fmt::format("wrong magic 0x{:08x}", h.magic));
  if (h.kind < 1 || h.kind > kLastKind) bad(fmt::format("unknown kind {}", h.kind));
  // From here on every rejection names the message (WR3) and its number (WR4).
  const std::uint64_t seq = seq_of(data, len, h);
  if (h.nfds != fds.size())
    bad(h, seq, fmt::format("header announces {} descriptors, {} arrived", h.nfds, fds.size()));
  if (h.flags & ~(kBodyInFd | kSeq)) bad(h, seq, fmt::format("unknown flags 0x{:x}", h.flags));
  const std::size_t start = sizeof h + ((h.flags & kSeq) ? sizeof seq : 0);
  if (len < start) bad(h, seq, "the sequence number is cut short");
  Message m;
  m.kind = static_cast<Kind>(h.kind);
  m.id = h.id;
  m.seq = seq;
  if (h.flags & kBodyInFd) {
    if (len != start) bad(h, seq, "a body in a memfd and inline bytes as well");
    if (fds.empty()) bad(h, seq, "body announced in a memfd but no descriptor came");
    if (h.body_len > kMaxBody)
      bad(h, seq, fmt::format("body of {} bytes is over the limit", h.body_len));
    Fd body_fd = std::move(fds.back());
    fds.pop_back();
    off_t size = ::lseek(body_fd.get(), 0, SEEK_END);
    if (size != static_cast<off_t>(h.body_len))
      bad(h, seq, fmt::format("memfd body holds {} bytes, header says {}", size, h.body_len));
    m.body.resize(h.body_len);
    if (h.body_len > 0 &&
        ::pread(body_fd.get(), m.body.data(), h.body_len, 0) != static_cast<ssize_t>(h.body_len))
      bad(h, seq, "could not read the memfd body");
  } else {
    if (h.body_len != len - start)
      bad(h, seq,
          fmt::format("header says {} body bytes, datagram holds {}", h.body_len, len - start));
    m.body.assign(data + start, h.body_len);
  }
  m.fds = std::move(fds);
  return m;
}

void send_message(int sock, Kind kind, std::uint64_t id, std::string_view body,
                  std::span<const int> fds, std::uint64_t seq) {
  if (fds.size() + 1 > kMaxFds)
    throw Error(Errc::invalid_argument,
                fmt::format("{} descriptors in one call: at most {}", fds.size(), kMaxFds - 1));
  if (body.size() > kMaxBody)
    throw Error(Errc::invalid_argument,
                fmt::format("message of {} bytes: at most {}", body.size(), kMaxBody));
  Header h{kMagic,
           static_cast<std::uint8_t>(kind),
           static_cast<std::uint8_t>(seq != 0 ? kSeq : 0),
           static_cast<std::uint16_t>(fds.size()),
           static_cast<std::uint32_t>(body.size()),
           id};
  Fd body_fd;
  iovec iov[3];
  iov[0] = {&h, sizeof h};
  int niov = 1;
  if (seq != 0) iov[niov++] = {&seq, sizeof seq};
  iov[niov++] = {const_cast<char*>(body.data()), body.size()};
  std::vector<int> all(fds.begin(), fds.end());
  if (body.size() > kMaxInline) {
    body_fd = Fd(::memfd_create("troupe-msg", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!body_fd) throw errno_error(Errc::system, errno, "memfd_create");
    const char* p = body.data();
    std::size_t left = body.size();
    while (left > 0) {
      ssize_t w = ::write(body_fd.get(), p, left);
      if (w <= 0)
        throw errno_error(Errc::out_of_memory, errno,
                          fmt::format("writing a {} byte body", body.size()));
      p += w;
      left -= static_cast<std::size_t>(w);
    }
    ::fcntl(body_fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    h.flags |= kBodyInFd;
    h.nfds = static_cast<std::uint16_t>(fds.size() + 1);
    all.push_back(body_fd.get());
    niov--;  // the body goes in the memfd
  }
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = static_cast<std::size_t>(niov);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  if (!all.empty()) {
    std::size_t bytes = sizeof(int) * all.size();
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(bytes);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(bytes);
    std::memcpy(CMSG_DATA(c), all.data(), bytes);
  }
  for (;;) {
    ssize_t r = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (r >= 0) return;
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN)
      throw Error(Errc::worker_lost, "the peer process is gone");
    throw errno_error(Errc::system, errno, "sendmsg");
  }
}

bool recv_message(int sock, Message& out, bool dontwait, bool* empty) {
  if (empty) *empty = false;
  // The largest datagram we send inline, plus slack to detect truncation.
  thread_local std::unique_ptr<char[]> buf(new char[kMaxInline + sizeof(Header) + 64]);
  const std::size_t cap = kMaxInline + sizeof(Header) + 64;  // the slack holds a seq too
  iovec iov{buf.get(), cap};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t r;
  do {
    r = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | (dontwait ? MSG_DONTWAIT : 0));
  } while (r < 0 && errno == EINTR);
  if (r == 0) return false;
  if (r < 0) {
    if (errno == ECONNRESET) return false;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (empty) *empty = true;
      return false;
    }
    throw errno_error(Errc::system, errno, "recvmsg");
  }
  std::vector<Fd> fds;  // WR2: owned from here on, closed on every error path
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < n; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds.emplace_back(fd);
      }
    }
  }
  const auto len = static_cast<std::size_t>(r);
  Header h{};
  const bool named = readable_header(buf.get(), len, h);
  if (msg.msg_flags & MSG_CTRUNC) {
    // WR2: the descriptors that did arrive are closed first: a receiver at
    // its fd limit needs them back to report the error at all. WR3: the bytes
    // did arrive whole, so the rejection names the message and keeps an
    // inline body, for the receiver to tell the caller which call lost its fds.
    const std::size_t arrived = fds.size();
    fds.clear();
    std::string why = fmt::format(
        "descriptors were truncated (MSG_CTRUNC): the receiving process is at its fd limit or "
        "more than {} were sent; {} of {} arrived",
        kMaxFds, arrived, named ? h.nfds : 0);
    if (!named) bad(why);
    std::string body;
    const std::uint64_t seq = seq_of(buf.get(), len, h);
    const std::size_t start = sizeof h + ((h.flags & kSeq) ? sizeof seq : 0);
    if (!(msg.msg_flags & MSG_TRUNC) && !(h.flags & kBodyInFd) && len >= start &&
        h.body_len == len - start)
      body.assign(buf.get() + start, h.body_len);
    bad(h, seq, why, std::move(body));
  }
  if (msg.msg_flags & MSG_TRUNC) {
    if (named)
      bad(h, seq_of(buf.get(), len, h), "datagram truncated (larger than any valid message)");
    bad("datagram truncated (larger than any valid message)");
  }
  out = decode(buf.get(), len, std::move(fds));
  return true;
}

msgpack::object_handle unpack_body(std::string_view body) {
  const std::size_t n = body.size();
  return msgpack::unpack(body.data(), n, nullptr, nullptr,
                         msgpack::unpack_limit(n, n, n, n, n, 64));
}

std::string pack_error(Errc code, const std::string& message) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_array(2);
  pk.pack(static_cast<int>(Status::error));
  pk.pack_array(2);
  pk.pack(static_cast<int>(code));
  pk.pack(message);
  return std::string(b.data(), b.size());
}

std::string pack_exception(const std::string& type, const std::string& what) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_array(2);
  pk.pack(static_cast<int>(Status::exception));
  pk.pack_array(2);
  pk.pack(type);
  pk.pack(what);
  return std::string(b.data(), b.size());
}

std::string current_exception_type() {
  std::type_info* t = abi::__cxa_current_exception_type();
  if (!t) return "unknown";
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> d(
      abi::__cxa_demangle(t->name(), nullptr, nullptr, &status), std::free);
  return status == 0 && d ? d.get() : t->name();
}

}  // namespace detail
}  // namespace troupe::proc
