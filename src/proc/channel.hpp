// src/proc/channel.hpp: one end of the link between the root and a
// worker, or between two workers (C7): the control socket (SOCK_SEQPACKET,
// wire.hpp) and the data path, two shared-memory rings (ring.hpp) in one
// memfd that both processes map, ring 0 carrying root -> worker, ring 1
// worker -> root. Each receiver has an eventfd that its sender writes only
// when the receiver said it sleeps.
//
// A message goes in the ring unless it carries descriptors (SCM_RIGHTS needs
// the socket), its body travels in a memfd (over kMaxInline), or the ring has
// no room for it now; then it goes on the socket. Both paths carry the same
// datagrams (wire.hpp), numbered.
//
// Invariants:
//   C1. Senders are serialised by send_mu_: a message's sequence number is
//       taken, and the message is wholly sent (sendmsg returned, or the ring's
//       tail published), under it; numbers start at 1 and go up by one.
//   C2. Order: receive() delivers messages in sequence-number order across
//       both paths. By C1, when number n + 1 is visible on one path, n is
//       already readable on the other, so the receiver reads the socket only
//       when the ring's next frame is not the number it expects (or the
//       socket is readable and the ring empty) and holds at most one socket
//       message back (stash_) while the ring catches up.
//   C3. No stall on bad input: a message rejected with its number (wire.hpp
//       WR4) counts as received; a number missing from both paths while a
//       later one is present is skipped; a number at or below the next
//       expected one (a forged or unnumbered message) is delivered at once.
//       A forged ring is emptied and reported (ring.hpp R3).
//   C4. Sleep and wake-up follow ring.hpp R4: prepare_sleep() stores the
//       sleeping word and rechecks the ring; send() writes the receiver's
//       eventfd only if it saw the word set. An idle end makes no system
//       call and burns no CPU: it blocks in poll/epoll on socket and eventfd.
//   C5. A dead peer is seen as the socket's end of stream, reported
//       (Got::closed) only when the ring holds nothing more, so what the
//       peer sent before it died is delivered first.
//   C6. The channel owns its socket, its two eventfds and its mapping; the
//       memfd is closed as soon as it is mapped (the root keeps it only until
//       the worker has been started with it).
//   C7. A direct channel between two workers (src/proc/node_private.hpp N11)
//       is the same pair of rings, socket and eventfds: the root makes them
//       (make_parts, a socketpair), passes them to both workers once over
//       their own channels (SCM_RIGHTS) and closes its copies; the worker
//       that calls through it takes the root's end (ring 0 out, wake-up
//       `to_root`), the one that serves takes the worker's end. C1-C6 hold
//       as between root and worker.
#pragma once

#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "troupe/detail/platform.hpp"
#include "proc/ring.hpp"
#include "troupe/proc/detail/wire.hpp"
#include "troupe/proc/fd.hpp"

namespace troupe::proc::detail {

// The spin pacing of every wait loop (platform.hpp PF2).
using troupe::detail::Spin;
using troupe::detail::spin_until;

// What the worker's end is made from: passed to the worker at spawn.
struct ChannelFds {
  Fd memfd;      // the two rings
  Fd to_worker;  // eventfd: the worker's wake-up
  Fd to_root;    // eventfd: the root's wake-up for this worker
};

class Channel {
 public:
  static constexpr std::size_t kRingCapacity = 256 * 1024;  // per direction

  // The root's end over `sock`: makes the rings and eventfds; `peer` gets
  // what the worker's end needs (C6).
  static std::unique_ptr<Channel> create(Fd sock, ChannelFds& peer,
                                         std::size_t capacity = kRingCapacity);
  // The worker's end, from what the root passed; `root_end`: the other end
  // (a direct channel's caller, C7). Throws Error(system) if the memfd is not
  // a pair of rings.
  static std::unique_ptr<Channel> attach(Fd sock, ChannelFds fds, bool root_end = false);
  // C7: fresh rings (initialised, not mapped here) and two eventfds, for
  // two ends that attach() elsewhere.
  static ChannelFds make_parts(std::size_t capacity = kRingCapacity);
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Sends one message (C1). Any thread. Throws as send_message does.
  void send(Kind kind, std::uint64_t id, std::string_view body, std::span<const int> fds = {});

  enum class Got { message, none, closed };
  // The next message in order (C2, C3), `none` if nothing can be delivered
  // now, `closed` once the peer is gone and everything it sent was delivered
  // (C5). `socket_ready`: poll said the socket is readable (else it is read
  // only when the ring says a message waits there). One thread at a time.
  // Throws Error(bad_message) (a BadMessage when the header was readable)
  // for a rejected message; calling again continues after it.
  Got receive(Message& out, bool socket_ready);

  // Receiver: is there something in the ring?
  bool ready() const { return !in_.empty(); }
  // Any thread (the receiver may be another one): does the ring seem to hold
  // something? Compares the peer's tail with what receive() last consumed,
  // never with the head the peer could rewrite (ring.hpp R3).
  bool maybe_ready() const { return in_.published() != consumed_.load(std::memory_order_relaxed); }
  // Receiver: spins (with a pause) up to `d` for the ring to fill; true if it did.
  bool spin(std::chrono::nanoseconds d) const;
  // Receiver, before blocking on socket() and wake_fd(): false if the ring
  // holds something after all (then do not block). C4.
  bool prepare_sleep();
  // Receiver, after blocking (whatever woke it): clears the sleeping word,
  // and the eventfd if it was signalled.
  void woke(bool signalled);

  int socket() const noexcept { return sock_.get(); }
  int wake_fd() const noexcept { return my_wake_.get(); }
  // Ends the stream for the peer (it reads end of file) without closing the
  // descriptor other threads may still be using.
  void shutdown_socket() noexcept;

 private:
  Channel(Fd sock, Fd my_wake, Fd peer_wake, void* map, std::size_t map_len, std::size_t capacity,
          bool root);

  Fd sock_, my_wake_, peer_wake_;  // C6
  void* map_ = nullptr;
  std::size_t map_len_ = 0;
  // Sending side (C1): written under send_mu_ only.
  std::mutex send_mu_;
  Ring out_;
  std::uint64_t next_send_ = 1;
  // Receiving side: one receiving thread at a time (in the root, the holder
  // of the worker's claim, handed over with acquire/release:
  // src/proc/node_private.hpp N7).
  Ring in_;
  std::uint64_t next_recv_ = 1;
  std::optional<Message> stash_;  // C2: a socket message ahead of the ring
  std::string frame_;             // the ring frame being read
  // in_.consumed() as receive() left it: written only by the receiving
  // thread, at the end of each receive(); read by any thread, relaxed, in
  // maybe_ready() (a hint: whoever then claims the channel looks again).
  std::atomic<std::uint64_t> consumed_{0};
};

}  // namespace troupe::proc::detail
