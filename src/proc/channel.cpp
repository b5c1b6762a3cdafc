// src/proc/channel.cpp: the root/worker link (and a direct worker/worker
// one), rings plus socket (channel.hpp C1-C7, ring.hpp R1-R4).
#include "proc/channel.hpp"

#include <fmt/core.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "troupe/error.hpp"

namespace troupe::proc::detail {

namespace {
[[noreturn]] void sys_error(const char* what) { throw errno_error(Errc::system, errno, what); }
Fd make_eventfd() {
  Fd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd) sys_error("eventfd");
  return fd;
}
void* map_rings(int memfd, std::size_t len) {
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (p == MAP_FAILED) sys_error("mmap of a worker's rings");
  return p;
}
// The sequence number of a ring frame holding a readable numbered header, or 0.
std::uint64_t frame_seq(const std::string& frame) {
  Header h;
  std::uint64_t seq = 0;
  if (frame.size() < sizeof h + sizeof seq) return 0;
  std::memcpy(&h, frame.data(), sizeof h);
  if (h.magic != kMagic || !(h.flags & kSeq)) return 0;
  std::memcpy(&seq, frame.data() + sizeof h, sizeof seq);
  return seq;
}
}  // namespace

Channel::Channel(Fd sock, Fd my_wake, Fd peer_wake, void* map, std::size_t map_len,
                 std::size_t capacity, bool root)
    : sock_(std::move(sock)),
      my_wake_(std::move(my_wake)),
      peer_wake_(std::move(peer_wake)),
      map_(map),
      map_len_(map_len) {
  char* base = static_cast<char*>(map);
  Ring r0(base, capacity), r1(base + Ring::bytes(capacity), capacity);
  out_ = root ? r0 : r1;
  in_ = root ? r1 : r0;
}

std::unique_ptr<Channel> Channel::create(Fd sock, ChannelFds& peer, std::size_t capacity) {
  if (capacity < 64 || (capacity & (capacity - 1)) != 0)
    throw Error(Errc::invalid_argument, "a ring's capacity must be a power of two, at least 64");
  const std::size_t len = 2 * Ring::bytes(capacity);
  Fd memfd(::memfd_create("troupe-rings", MFD_CLOEXEC));
  if (!memfd) sys_error("memfd_create");
  if (::ftruncate(memfd.get(), static_cast<off_t>(len)) != 0) sys_error("ftruncate");
  void* map = map_rings(memfd.get(), len);
  Ring::init(map);
  Ring::init(static_cast<char*>(map) + Ring::bytes(capacity));
  Fd to_worker = make_eventfd(), to_root = make_eventfd();
  peer.to_worker = to_worker.dup();
  peer.to_root = to_root.dup();
  peer.memfd = std::move(memfd);
  return std::unique_ptr<Channel>(new Channel(std::move(sock), std::move(to_root),
                                              std::move(to_worker), map, len, capacity, true));
}

ChannelFds Channel::make_parts(std::size_t capacity) {
  const std::size_t len = 2 * Ring::bytes(capacity);
  ChannelFds parts;
  parts.memfd = Fd(::memfd_create("troupe-rings", MFD_CLOEXEC));
  if (!parts.memfd) sys_error("memfd_create");
  if (::ftruncate(parts.memfd.get(), static_cast<off_t>(len)) != 0) sys_error("ftruncate");
  void* map = map_rings(parts.memfd.get(), len);
  Ring::init(map);
  Ring::init(static_cast<char*>(map) + Ring::bytes(capacity));
  ::munmap(map, len);
  parts.to_worker = make_eventfd();
  parts.to_root = make_eventfd();
  return parts;
}

std::unique_ptr<Channel> Channel::attach(Fd sock, ChannelFds fds, bool root_end) {
  struct stat st {};
  if (::fstat(fds.memfd.get(), &st) != 0) sys_error("fstat of the rings' memfd");
  const auto len = static_cast<std::size_t>(st.st_size);
  const std::size_t capacity = len / 2 >= sizeof(RingControl) ? len / 2 - sizeof(RingControl) : 0;
  if (capacity < 64 || (capacity & (capacity - 1)) != 0 || len != 2 * Ring::bytes(capacity))
    throw Error(Errc::system, fmt::format("the rings' memfd holds {} bytes: not two rings", len));
  void* map = map_rings(fds.memfd.get(), len);
  fds.memfd.reset();  // C6
  if (root_end)       // C7: a direct channel's caller
    return std::unique_ptr<Channel>(new Channel(std::move(sock), std::move(fds.to_root),
                                                std::move(fds.to_worker), map, len, capacity,
                                                true));
  return std::unique_ptr<Channel>(new Channel(std::move(sock), std::move(fds.to_worker),
                                              std::move(fds.to_root), map, len, capacity, false));
}

Channel::~Channel() {
  if (map_) ::munmap(map_, map_len_);
}

void Channel::send(Kind kind, std::uint64_t id, std::string_view body, std::span<const int> fds) {
  std::lock_guard lock(send_mu_);  // C1
  const std::uint64_t seq = next_send_;
  if (fds.empty() && body.size() <= kMaxInline) {
    char prefix[sizeof(Header) + 8];
    const std::size_t n = encode_prefix(prefix, kind, id, body.size(), seq);
    if (out_.try_push({std::string_view(prefix, n), body})) {
      next_send_++;
      // C4 (R4): the producer's load after try_push's seq_cst store of tail.
      if (out_.consumer_sleeping()) {
        std::uint64_t one = 1;
        [[maybe_unused]] auto r = ::write(peer_wake_.get(), &one, sizeof one);
      }
      return;
    }
  }
  send_message(sock_.get(), kind, id, body, fds, seq);  // throws: the number is not used
  next_send_++;
}

Channel::Got Channel::receive(Message& out, bool socket_ready) {
  struct Publish {  // maybe_ready(): what we consumed, however we leave (R3 included)
    Channel& c;
    ~Publish() { c.consumed_.store(c.in_.consumed(), std::memory_order_relaxed); }
  } publish{*this};
  for (;;) {
    if (stash_ && stash_->seq <= next_recv_) {  // C2: its turn has come
      if (stash_->seq == next_recv_) next_recv_++;
      out = std::move(*stash_);
      stash_.reset();
      return Got::message;
    }
    const bool have = in_.peek(frame_);  // R3: throws for a forged ring (C3)
    const std::uint64_t s = have ? frame_seq(frame_) : 0;
    if (have && s <= next_recv_) {  // C2: the next in order (or C3: unnumbered, forged)
      in_.pop();
      if (s == next_recv_) next_recv_++;
      out = decode(frame_.data(), frame_.size(), {});  // throws for bad input (C3)
      return Got::message;
    }
    if (stash_) {  // C3: next_recv_ is on neither path: skip to what is there
      next_recv_ = have ? std::min(s, stash_->seq) : stash_->seq;
      continue;
    }
    if (!have && !socket_ready) return Got::none;
    Message m;
    bool empty = false;
    bool got;
    try {
      got = recv_message(sock_.get(), m, true, &empty);
    } catch (const BadMessage& e) {
      if (e.seq() == next_recv_) next_recv_++;  // C3 (wire.hpp WR4)
      throw;
    }
    if (!got) {
      if (have) {        // C3: the ring's frame is later than a number that never came;
        next_recv_ = s;  // C5: and after end of stream, the ring is drained first
        continue;
      }
      return empty ? Got::none : Got::closed;
    }
    if (m.seq <= next_recv_) {
      if (m.seq == next_recv_) next_recv_++;
      out = std::move(m);
      return Got::message;
    }
    stash_ = std::move(m);  // C2: the ring holds what comes before it
    socket_ready = false;   // read the socket again only when the stash has gone
  }
}

bool Channel::spin(std::chrono::nanoseconds d) const {
  return spin_until(d, [this] { return ready(); });
}

bool Channel::prepare_sleep() {
  in_.set_sleeping(true);  // C4 (R4): the consumer's store, then its load
  if (in_.empty()) return true;
  in_.set_sleeping(false);
  return false;
}

void Channel::woke(bool signalled) {
  in_.set_sleeping(false);  // R4: a stale "sleeping" costs the sender one write at most
  if (!signalled) return;
  std::uint64_t v;
  [[maybe_unused]] auto r = ::read(my_wake_.get(), &v, sizeof v);
}

void Channel::shutdown_socket() noexcept { ::shutdown(sock_.get(), SHUT_RDWR); }

}  // namespace troupe::proc::detail
