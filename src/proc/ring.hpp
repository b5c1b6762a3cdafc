// src/proc/ring.hpp: a single-producer single-consumer byte ring of
// framed messages in memory shared by two processes (the classic Lamport
// ring: a monotonically increasing tail written only by the producer, a head
// written only by the consumer, positions taken modulo a power-of-two
// capacity), plus the consumer's "sleeping" word for Dekker-style wake-ups.
//
// A frame is an 8-byte prefix holding the frame's length (a u32, then four
// unused bytes), then that many bytes (one wire datagram, wire.hpp), padded
// to a multiple of 8. A frame may wrap around the end of the data area.
//
// The peer process can write anything into the shared memory at any time, so
// each side keeps its own index privately and only reads the other's:
//
// Invariants:
//   R1. Only the producer writes `tail`, only the consumer writes `head` and
//       `sleeping`; each side's private copy of its own index is the truth,
//       the shared one only a publication of it.
//   R2. The producer writes frame bytes only in [tail, head + capacity), and
//       publishes them with its store of `tail`; the consumer reads only in
//       [head, tail) and returns the space with its store of `head`.
//   R3. The consumer never trusts what it reads: a published tail more than
//       `capacity` ahead of its head, not a multiple of 8, or a frame length
//       beyond the bytes published is a forged ring; it discards everything
//       published and throws Error(Errc::bad_message). It copies a frame out
//       before anyone parses it, so a peer rewriting it meanwhile changes
//       nothing that was checked. A producer that reads a forged head (more
//       than `capacity` behind its tail) treats the ring as full.
//   R4. Wake-ups (Dekker): the consumer stores sleeping = 1, then loads tail,
//       and sleeps only if it saw nothing new; the producer stores tail, then
//       loads sleeping, and wakes the consumer if it is set. All four are
//       seq_cst, so at least one side sees the other's store: a frame is
//       never left unseen by a sleeping consumer.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <new>
#include <string>
#include <string_view>

#include "troupe/error.hpp"

namespace troupe::proc::detail {

struct RingControl {
  alignas(64) std::atomic<std::uint64_t> tail{0};      // R1: producer only
  alignas(64) std::atomic<std::uint64_t> head{0};      // R1: consumer only
  alignas(64) std::atomic<std::uint32_t> sleeping{0};  // R1: consumer only (R4)
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "shared across processes");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "shared across processes");

class Ring {
 public:
  static constexpr std::size_t kPrefix = 8;

  // Bytes of shared memory a ring of `capacity` data bytes takes.
  static constexpr std::size_t bytes(std::size_t capacity) {
    return sizeof(RingControl) + capacity;
  }
  // Prepares fresh (zeroed) memory; once, by whoever creates it.
  static void init(void* mem) { new (mem) RingControl; }

  Ring() = default;
  // A view of the ring at `mem` (bytes(capacity) long, 64-byte aligned);
  // capacity is a power of two, at least 64.
  Ring(void* mem, std::size_t capacity)
      : ctl_(static_cast<RingControl*>(mem)),
        data_(static_cast<char*>(mem) + sizeof(RingControl)),
        cap_(capacity) {}

  // ------------------------------------------------------------- producer
  // Writes one frame made of `parts`, or returns false if it does not fit now.
  bool try_push(std::initializer_list<std::string_view> parts) {
    std::size_t len = 0;
    for (auto p : parts) len += p.size();
    const std::uint64_t need = padded(len);
    // acquire: pairs with the consumer's release store of head, so it has
    // finished reading the bytes we are about to overwrite (R2).
    const std::uint64_t head = ctl_->head.load(std::memory_order_acquire);
    const std::uint64_t used = mine_ - head;
    if (used > cap_ || cap_ - used < need) return false;  // full, or a forged head (R3)
    const auto len32 = static_cast<std::uint32_t>(len);
    char prefix[kPrefix] = {};
    std::memcpy(prefix, &len32, sizeof len32);
    std::uint64_t at = mine_;
    put(at, prefix, kPrefix);
    at += kPrefix;
    for (auto p : parts) {
      put(at, p.data(), p.size());
      at += p.size();
    }
    mine_ += need;
    // seq_cst: publishes the frame (release) and is the producer's store in
    // the Dekker pair with consumer_sleeping() (R4).
    ctl_->tail.store(mine_, std::memory_order_seq_cst);
    return true;
  }
  // R4: the second half of the producer's pair, after try_push's store.
  bool consumer_sleeping() const { return ctl_->sleeping.load(std::memory_order_seq_cst) != 0; }

  // ------------------------------------------------------------- consumer
  // Copies the next frame into `frame` without consuming it; false if the
  // ring is empty. Throws Error(bad_message) for a forged ring (R3).
  bool peek(std::string& frame) {
    // acquire: pairs with try_push's store of tail: the frame's bytes are
    // visible (R2).
    const std::uint64_t tail = ctl_->tail.load(std::memory_order_acquire);
    const std::uint64_t avail = tail - mine_;
    if (avail == 0) return false;
    if (avail > cap_ || avail % kPrefix != 0)
      forged(tail, "the ring's producer index is " + std::to_string(avail) +
                       " bytes ahead of its consumer (capacity " + std::to_string(cap_) + ")");
    char prefix[kPrefix];
    get(mine_, prefix, kPrefix);
    std::uint32_t len;
    std::memcpy(&len, prefix, sizeof len);
    if (padded(len) > avail)
      forged(tail, "a ring frame claims " + std::to_string(len) + " bytes, " +
                       std::to_string(avail - kPrefix) + " are in the ring");
    frame.resize(len);
    get(mine_ + kPrefix, frame.data(), len);
    peeked_ = padded(len);
    return true;
  }
  // Consumes the frame the last peek() returned.
  void pop() {
    mine_ += peeked_;
    peeked_ = 0;
    // release: our reads of the frame are done before the producer may
    // reuse its space (R2).
    ctl_->head.store(mine_, std::memory_order_release);
  }
  // R4: the consumer's load (also used without sleeping: then any order
  // would do, seq_cst costs nothing more for a load on the targets we run).
  bool empty() const { return ctl_->tail.load(std::memory_order_seq_cst) == mine_; }
  // Any thread: the producer's published tail (compare it with a copy of
  // consumed() kept where other threads may read it).
  std::uint64_t published() const { return ctl_->tail.load(std::memory_order_acquire); }
  // Consumer: how far it has consumed (its private index, R1).
  std::uint64_t consumed() const { return mine_; }
  // R4: the consumer's store, before its last empty() check.
  void set_sleeping(bool s) { ctl_->sleeping.store(s ? 1 : 0, std::memory_order_seq_cst); }

  std::size_t capacity() const { return cap_; }
  // The largest frame body that can ever fit.
  std::size_t max_frame() const { return cap_ - kPrefix; }

 private:
  static constexpr std::uint64_t padded(std::uint64_t len) {
    return (kPrefix + len + kPrefix - 1) & ~std::uint64_t{kPrefix - 1};
  }
  void put(std::uint64_t at, const char* src, std::size_t n) {
    if (n == 0) return;  // an empty body's data() may be null
    const std::size_t off = at & (cap_ - 1), first = std::min(n, cap_ - off);
    std::memcpy(data_ + off, src, first);
    std::memcpy(data_, src + first, n - first);
  }
  void get(std::uint64_t at, char* dst, std::size_t n) const {
    if (n == 0) return;
    const std::size_t off = at & (cap_ - 1), first = std::min(n, cap_ - off);
    std::memcpy(dst, data_ + off, first);
    std::memcpy(dst + first, data_, n - first);
  }
  [[noreturn]] void forged(std::uint64_t tail, const std::string& why) {
    mine_ = tail;  // R3: drop everything published
    peeked_ = 0;
    ctl_->head.store(mine_, std::memory_order_release);  // release: as in pop()
    throw Error(Errc::bad_message, "bad message: " + why);
  }

  RingControl* ctl_ = nullptr;
  char* data_ = nullptr;
  std::size_t cap_ = 0;
  std::uint64_t mine_ = 0;    // R1: the producer's tail or the consumer's head
  std::uint64_t peeked_ = 0;  // consumer: the size of the frame peek() returned
};

}  // namespace troupe::proc::detail
