// The message decoder and transport against bad input: short, forged,
// mis-sized datagrams, descriptor-count lies, truncated control data. Each is
// a typed bad_message error; no descriptor leaks on any path.
#include "troupe/proc/detail/wire.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "util/proc_fs.hpp"

using namespace troupe;
using namespace troupe::proc;
using namespace troupe::proc::detail;
using troupe::test::open_fds;

namespace {
std::string header_bytes(Header h) {
  return std::string(reinterpret_cast<const char*>(&h), sizeof h);
}
void expect_bad(const std::string& bytes, std::vector<Fd> fds = {}) {
  try {
    decode(bytes.data(), bytes.size(), std::move(fds));
    FAIL() << "accepted a bad message";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::bad_message);
  }
}
struct Pair {
  Pair() {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    a = Fd(sv[0]);
    b = Fd(sv[1]);
  }
  Fd a, b;
};
}  // namespace

TEST(Wire, RoundTripWithDescriptors) {
  int before = open_fds();
  {
    Pair p;
    int pipefd[2];
    ASSERT_EQ(pipe2(pipefd, O_CLOEXEC), 0);
    Fd r(pipefd[0]), w(pipefd[1]);
    int fds[] = {r.get(), w.get()};
    send_message(p.a.get(), Kind::call, 77, "hello", fds);
    Message m;
    ASSERT_TRUE(recv_message(p.b.get(), m));
    EXPECT_EQ(m.kind, Kind::call);
    EXPECT_EQ(m.id, 77u);
    EXPECT_EQ(m.body, "hello");
    ASSERT_EQ(m.fds.size(), 2u);
    ASSERT_EQ(write(m.fds[1].get(), "x", 1), 1);  // the received write end works
    char c = 0;
    ASSERT_EQ(read(r.get(), &c, 1), 1);
    EXPECT_EQ(c, 'x');
    std::string big(200000, 'b');  // over kMaxInline: through a memfd
    send_message(p.a.get(), Kind::reply, 5, big);
    ASSERT_TRUE(recv_message(p.b.get(), m));
    EXPECT_EQ(m.body, big);
    EXPECT_TRUE(m.fds.empty());
  }
  EXPECT_EQ(open_fds(), before);
}

TEST(Wire, DecoderRejectsForgeries) {
  Header good{kMagic, 1, 0, 0, 3, 9};
  EXPECT_NO_THROW(decode((header_bytes(good) + "abc").data(), sizeof good + 3, {}));
  expect_bad("");
  expect_bad("short");
  expect_bad(header_bytes(good));           // body shorter than announced
  expect_bad(header_bytes(good) + "abcd");  // longer
  Header magic = good;
  magic.magic = 0xdeadbeef;
  expect_bad(header_bytes(magic) + "abc");
  Header kind = good;
  kind.kind = 9;
  expect_bad(header_bytes(kind) + "abc");
  Header flags = good;
  flags.flags = 0x80;
  expect_bad(header_bytes(flags) + "abc");
  Header nfds = good;
  nfds.nfds = 2;
  expect_bad(header_bytes(nfds) + "abc");  // announces fds that did not come
  int before = open_fds();
  {
    std::vector<Fd> extra;
    extra.emplace_back(dup(0));
    expect_bad(header_bytes(good) + "abc", std::move(extra));  // fds nobody announced
    Header in_fd = good;
    in_fd.flags = kBodyInFd;
    in_fd.nfds = 1;
    in_fd.body_len = 100;
    std::vector<Fd> one;
    one.emplace_back(memfd_create("short", MFD_CLOEXEC));  // empty, not 100 bytes
    expect_bad(header_bytes(in_fd), std::move(one));
  }
  EXPECT_EQ(open_fds(), before);
}

TEST(Wire, TruncatedControlDataIsAnErrorAndLeaksNothing) {
  int before = open_fds();
  {
    Pair p;
    // More descriptors than the receiver accepts: the kernel truncates them.
    std::vector<int> raw;
    std::vector<Fd> keep;
    for (std::size_t i = 0; i < kMaxFds + 8; ++i) {
      keep.emplace_back(dup(0));
      raw.push_back(keep.back().get());
    }
    Header h{kMagic, 1, 0, static_cast<std::uint16_t>(raw.size()), 0, 1};
    iovec iov{&h, sizeof h};
    std::vector<char> control(CMSG_SPACE(sizeof(int) * raw.size()));
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * raw.size());
    std::memcpy(CMSG_DATA(c), raw.data(), sizeof(int) * raw.size());
    ASSERT_GE(sendmsg(p.a.get(), &msg, 0), 0);
    Message m;
    try {
      recv_message(p.b.get(), m);
      FAIL();
    } catch (const BadMessage& e) {
      // wire.hpp WR3: the rejection names the call, so the receiver can answer it.
      EXPECT_EQ(e.code(), Errc::bad_message);
      EXPECT_NE(std::string(e.what()).find("MSG_CTRUNC"), std::string::npos);
      EXPECT_EQ(e.kind(), Kind::call);
      EXPECT_EQ(e.id(), 1u);
    }
    // The channel still works afterwards.
    send_message(p.a.get(), Kind::cancel, 3, "");
    ASSERT_TRUE(recv_message(p.b.get(), m));
    EXPECT_EQ(m.id, 3u);
  }
  EXPECT_EQ(open_fds(), before);
}

TEST(Wire, RejectionsWithAReadableHeaderNameTheMessage) {
  Header h{kMagic, 2, 0, 2, 3, 41};  // a reply announcing fds that did not come
  try {
    decode((header_bytes(h) + "abc").data(), sizeof h + 3, {});
    FAIL();
  } catch (const BadMessage& e) {
    EXPECT_EQ(e.kind(), Kind::reply);
    EXPECT_EQ(e.id(), 41u);
  }
  Header forged = h;
  forged.magic = 0;  // no header to trust: a plain Error
  try {
    decode((header_bytes(forged) + "abc").data(), sizeof h + 3, {});
    FAIL();
  } catch (const BadMessage&) {
    FAIL() << "named a message whose header is not ours";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::bad_message);
  }
}

TEST(Wire, PeerGoneIsEndOfStreamOrWorkerLost) {
  Pair p;
  p.b.reset();
  EXPECT_THROW(send_message(p.a.get(), Kind::call, 1, "x"), Error);
  Pair q;
  q.a.reset();
  Message m;
  EXPECT_FALSE(recv_message(q.b.get(), m));
}

TEST(Wire, ForgedContainerLengthsCannotExhaustMemory) {
  // array32 claiming 4 294 967 295 elements, then nothing: without limits the
  // decoder would try to reserve ~100 GB for them.
  std::string body("\xdd\xff\xff\xff\xff", 5);
  EXPECT_THROW(unpack_body(body), std::exception);
  std::string map_body("\xdf\x7f\xff\xff\xff\x01\x02", 7);  // map32 likewise
  EXPECT_THROW(unpack_body(map_body), std::exception);
  std::string deep(100, '\x91');  // 100 nested one-element arrays
  deep += '\x01';
  EXPECT_THROW(unpack_body(deep), std::exception);
  std::string ok("\x93\x01\x02\x03", 4);  // [1, 2, 3] passes
  EXPECT_EQ(unpack_body(ok).get().via.array.size, 3u);
}

TEST(Wire, SequenceNumberTravelsAndIsChecked) {
  Pair p;
  send_message(p.a.get(), Kind::call, 5, "numbered", {}, 42);
  Message m;
  ASSERT_TRUE(recv_message(p.b.get(), m));
  EXPECT_EQ(m.seq, 42u);
  EXPECT_EQ(m.body, "numbered");
  // Nothing waiting: a non-blocking receive says so.
  bool empty = false;
  EXPECT_FALSE(recv_message(p.b.get(), m, true, &empty));
  EXPECT_TRUE(empty);
  // A numbered header cut short before its number.
  Header h{kMagic, static_cast<std::uint8_t>(Kind::reply), kSeq, 0, 0, 1};
  expect_bad(header_bytes(h) + "abc");
  // A rejection carries the number when it was readable (wire.hpp WR4).
  Header lie{kMagic, static_cast<std::uint8_t>(Kind::call), kSeq, 2, 0, 1};
  std::uint64_t seq = 7;
  std::string bytes = header_bytes(lie) + std::string(reinterpret_cast<const char*>(&seq), 8);
  try {
    decode(bytes.data(), bytes.size(), {});
    FAIL() << "accepted a descriptor-count lie";
  } catch (const BadMessage& e) {
    EXPECT_EQ(e.seq(), 7u);
  }
}
