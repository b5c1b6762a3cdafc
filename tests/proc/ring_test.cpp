// The data path on its own: the shared-memory ring (ring.hpp R1-R4) and the
// channel over ring and socket (channel.hpp C1-C6), both ends in this process.
// Wrap-around, a full ring falling back to the socket with the order kept,
// descriptors on the socket in order, forged frames and indices rejected with
// bad_message (never read out of bounds), the peer's end of stream seen only
// after the ring is drained, wake-ups only for a sleeping receiver.
#include "proc/ring.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "proc/channel.hpp"
#include "util/proc_fs.hpp"

using namespace troupe;
using namespace troupe::proc;
using namespace troupe::proc::detail;
using troupe::test::open_fds;

namespace {

struct Mem {
  explicit Mem(std::size_t cap) : cap(cap), bytes(Ring::bytes(cap) + 64) { Ring::init(base()); }
  void* base() {
    auto p = reinterpret_cast<std::uintptr_t>(bytes.data());
    return reinterpret_cast<void*>((p + 63) & ~std::uintptr_t{63});
  }
  RingControl& ctl() { return *static_cast<RingControl*>(base()); }
  char* data() { return static_cast<char*>(base()) + sizeof(RingControl); }
  std::size_t cap;
  std::vector<char> bytes;
};

struct Ends {
  explicit Ends(std::size_t cap = 4096) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    ChannelFds peer;
    root = Channel::create(Fd(sv[0]), peer, cap);
    worker = Channel::attach(Fd(sv[1]), std::move(peer));
  }
  std::unique_ptr<Channel> root, worker;
};

// Everything `c` can deliver now, in order.
std::vector<Message> drain(Channel& c) {
  std::vector<Message> out;
  for (;;) {
    Message m;
    auto got = c.receive(m, true);
    if (got != Channel::Got::message) break;
    out.push_back(std::move(m));
  }
  return out;
}

std::string body_of(int i, std::size_t size) {
  std::string b = std::to_string(i);
  b.resize(size, 'x');
  return b;
}

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

}  // namespace

TEST(Ring, WrapsAroundManyTimes) {
  Mem mem(256);
  Ring prod(mem.base(), 256), cons(mem.base(), 256);
  std::string frame;
  for (int i = 0; i < 1000; ++i) {
    std::string a = body_of(i, 1 + i % 37), b = body_of(-i, i % 13);
    ASSERT_TRUE(prod.try_push({a, b}));
    ASSERT_TRUE(cons.peek(frame));
    EXPECT_EQ(frame, a + b);
    cons.pop();
    EXPECT_TRUE(cons.empty());
  }
  EXPECT_GT(mem.ctl().tail.load(), 256u * 20);  // went round many times
}

TEST(Ring, FullRingRefusesThenTakesAgain) {
  Mem mem(256);
  Ring prod(mem.base(), 256), cons(mem.base(), 256);
  int pushed = 0;
  while (prod.try_push({body_of(pushed, 24)})) ++pushed;
  EXPECT_EQ(pushed, 256 / 32);  // 8-byte prefix + 24 bytes each
  EXPECT_FALSE(prod.try_push({"a"}));
  std::string frame;
  ASSERT_TRUE(cons.peek(frame));
  cons.pop();
  EXPECT_TRUE(prod.try_push({body_of(99, 24)}));
  EXPECT_FALSE(prod.try_push({std::string(300, 'y')}));  // larger than the ring ever holds
}

TEST(Ring, ForgedFrameLengthIsRejected) {
  Mem mem(256);
  Ring prod(mem.base(), 256), cons(mem.base(), 256);
  ASSERT_TRUE(prod.try_push({"hello"}));
  std::uint32_t forged = 1u << 30;  // far past what was published
  std::memcpy(mem.data(), &forged, sizeof forged);
  std::string frame;
  try {
    cons.peek(frame);
    FAIL() << "accepted a forged frame length";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::bad_message);
    EXPECT_NE(std::string(e.what()).find("claims"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(cons.empty());  // R3: the forged contents are dropped
  ASSERT_TRUE(prod.try_push({"after"}));
  ASSERT_TRUE(cons.peek(frame));
  EXPECT_EQ(frame, "after");
}

TEST(Ring, ForgedIndicesAreRejected) {
  Mem mem(256);
  Ring prod(mem.base(), 256), cons(mem.base(), 256);
  mem.ctl().tail.store(1 << 20);  // a tail far beyond the capacity
  std::string frame;
  EXPECT_THROW(cons.peek(frame), Error);
  mem.ctl().head.store(std::uint64_t{1} << 40);  // a head ahead of the producer
  EXPECT_FALSE(prod.try_push({"x"}));            // treated as full, not written
}

TEST(Ring, SleepingWordFollowsDekker) {
  Mem mem(256);
  Ring prod(mem.base(), 256), cons(mem.base(), 256);
  EXPECT_FALSE(prod.consumer_sleeping());
  cons.set_sleeping(true);
  EXPECT_TRUE(cons.empty());
  ASSERT_TRUE(prod.try_push({"x"}));
  EXPECT_TRUE(prod.consumer_sleeping());
  EXPECT_FALSE(cons.empty());
}

TEST(Channel, FullRingFallsBackToTheSocketInOrder) {
  int before = open_fds();
  {
    Ends e(1024);
    // Far more than the ring holds: the rest go on the socket; then the ring
    // has room again part way through the receiving, so both paths interleave.
    for (int i = 0; i < 200; ++i) e.root->send(Kind::call, i, body_of(i, 40 + i % 50));
    std::vector<Message> got;
    for (int round = 0; round < 1000 && got.size() < 300; ++round) {
      Message m;
      if (e.worker->receive(m, true) == Channel::Got::message) got.push_back(std::move(m));
      if (round == 20)
        for (int i = 200; i < 300; ++i) e.root->send(Kind::call, i, body_of(i, 40));
    }
    ASSERT_EQ(got.size(), 300u);
    for (int i = 0; i < 300; ++i) {
      EXPECT_EQ(got[i].id, static_cast<std::uint64_t>(i));
      EXPECT_EQ(got[i].seq, static_cast<std::uint64_t>(i + 1));
      EXPECT_EQ(got[i].body, body_of(i, i < 200 ? 40 + i % 50 : 40));
    }
  }
  EXPECT_EQ(open_fds(), before);
}

TEST(Channel, DescriptorsAndLargeBodiesGoByTheSocketInOrder) {
  Ends e;
  int pipefd[2];
  ASSERT_EQ(pipe2(pipefd, O_CLOEXEC), 0);
  Fd r(pipefd[0]), w(pipefd[1]);
  int fds[] = {w.get()};
  std::string big(kMaxInline + 10, 'b');
  e.worker->send(Kind::reply, 1, "first");
  e.worker->send(Kind::reply, 2, "with fd", fds);
  e.worker->send(Kind::reply, 3, "third");
  e.worker->send(Kind::reply, 4, big);
  e.worker->send(Kind::reply, 5, "fifth");
  auto got = drain(*e.root);
  ASSERT_EQ(got.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(got[i].id, static_cast<std::uint64_t>(i + 1));
  ASSERT_EQ(got[1].fds.size(), 1u);
  ASSERT_EQ(::write(got[1].fds[0].get(), "z", 1), 1);
  char c = 0;
  ASSERT_EQ(::read(r.get(), &c, 1), 1);
  EXPECT_EQ(c, 'z');
  EXPECT_EQ(got[3].body, big);
}

TEST(Channel, OrderHoldsWithConcurrentSenders) {
  Ends e(512);
  constexpr int kPer = 2000;
  auto sender = [&](int t) {
    for (int i = 0; i < kPer; ++i) {
      int fds[] = {STDIN_FILENO};
      std::string b = std::to_string(t) + ":" + std::to_string(i);
      if (i % 97 == 0)
        e.root->send(Kind::call, i, b, fds);  // some by the socket
      else
        e.root->send(Kind::call, i, b);
    }
  };
  std::thread a(sender, 0), b(sender, 1);
  int next[2] = {0, 0};
  std::uint64_t seq = 0;
  while (next[0] + next[1] < 2 * kPer) {
    Message m;
    if (e.worker->receive(m, true) != Channel::Got::message) continue;
    EXPECT_EQ(m.seq, ++seq);
    int t = m.body[0] - '0';
    ASSERT_TRUE(t == 0 || t == 1);
    EXPECT_EQ(m.id, static_cast<std::uint64_t>(next[t]));  // each sender's order kept
    next[t]++;
  }
  a.join();
  b.join();
}

TEST(Channel, RejectedNumberedMessageDoesNotStallTheChannel) {
  Ends e;
  e.root->send(Kind::call, 1, "one");
  Message m;
  ASSERT_EQ(e.worker->receive(m, false), Channel::Got::message);
  EXPECT_EQ(m.body, "one");
  // A forged datagram numbered 2 on the socket, behind the channel's back
  // (its header lies about descriptors): rejected, and it counts as number
  // 2 (wire.hpp WR4, C3), so the ring's number 3 is not held back for it.
  Header h{kMagic, static_cast<std::uint8_t>(Kind::call), kSeq, 3, 0, 9};
  std::uint64_t seq = 2;
  std::string dgram(reinterpret_cast<const char*>(&h), sizeof h);
  dgram.append(reinterpret_cast<const char*>(&seq), sizeof seq);
  ASSERT_EQ(::send(e.root->socket(), dgram.data(), dgram.size(), 0),
            static_cast<ssize_t>(dgram.size()));
  int fds[] = {STDIN_FILENO};
  e.root->send(Kind::call, 2, "with fd", fds);  // numbered 2 as well: the socket, behind it
  e.root->send(Kind::call, 3, "three");         // number 3: the ring
  std::vector<std::string> bodies;
  int rejected = 0;
  for (int i = 0; i < 10; ++i) {
    try {
      auto got = e.worker->receive(m, true);
      if (got != Channel::Got::message) break;
      bodies.push_back(m.body);
    } catch (const BadMessage& b) {
      EXPECT_EQ(b.code(), Errc::bad_message);
      EXPECT_EQ(b.seq(), 2u);
      ++rejected;
    }
  }
  EXPECT_EQ(rejected, 1);
  // C3: the late duplicate number 2 is delivered at once, not dropped.
  EXPECT_EQ(bodies, (std::vector<std::string>{"three", "with fd"}));
}

TEST(Channel, EndOfStreamOnlyAfterTheRingIsDrained) {
  Ends e;
  e.worker->send(Kind::reply, 1, "last words");
  e.worker->send(Kind::reply, 2, "really last");
  e.worker.reset();  // the worker is gone: its socket closes
  Message m;
  ASSERT_EQ(e.root->receive(m, true), Channel::Got::message);
  EXPECT_EQ(m.body, "last words");
  ASSERT_EQ(e.root->receive(m, true), Channel::Got::message);
  EXPECT_EQ(m.body, "really last");
  EXPECT_EQ(e.root->receive(m, true), Channel::Got::closed);
}

TEST(Channel, WakesOnlyASleepingReceiver) {
  Ends e;
  e.root->send(Kind::call, 1, "awake");
  EXPECT_FALSE(readable(e.worker->wake_fd()));  // C4: no system call for a busy receiver
  EXPECT_FALSE(e.worker->prepare_sleep());      // something is there: do not sleep
  drain(*e.worker);
  ASSERT_TRUE(e.worker->prepare_sleep());
  e.root->send(Kind::call, 2, "asleep");
  EXPECT_TRUE(readable(e.worker->wake_fd()));
  e.worker->woke(true);
  EXPECT_FALSE(readable(e.worker->wake_fd()));
  auto got = drain(*e.worker);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].body, "asleep");
}
