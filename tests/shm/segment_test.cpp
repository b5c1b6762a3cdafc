// tests/shm/segment_test.cpp: the segment seen from several processes:
// an unrelated process opens by name and maps elsewhere, an fd handed over,
// growth seen by another process, another user refused, a full tmpfs gives an
// error (not SIGBUS), a killed process's slot recovered, stale heaps removed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <troupe/shm/heap.hpp>

#include "shm_test_util.hpp"

using troupe::Errc;
using troupe::Error;
using troupe::shm::CreateOptions;
using troupe::shm::Heap;
using troupe::shm::Offset;
using namespace shm_test;

namespace {

bool wait_root(Heap& h, const char* name, int ms = 5000) {
  for (int i = 0; i < ms; ++i) {
    if (h.root(name)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

TEST(ShmSegment, UnrelatedProcessOpensByNameAtAnotherAddress) {
  CreateOptions o = small_heap(128 << 10);
  o.address_hint = test_hint(0);
  Heap h = Heap::create(o);
  Offset msg = h.allocate(64);
  std::strcpy(h.ptr<char>(msg), "hello from the creator");
  h.publish(msg);
  h.set_root("msg", msg);
  pid_t pid = spawn_worker({"open-check", h.name()});
  ASSERT_GT(pid, 0);
  int status = wait_status(pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  Offset reply = h.root("reply");
  ASSERT_NE(reply, 0u);
  auto* r = h.ptr<std::uint64_t>(reply);
  EXPECT_NE(r[0], reinterpret_cast<std::uint64_t>(h.base())) << "child mapped at the same address";
  EXPECT_STREQ(reinterpret_cast<char*>(r + 1), "pong");
}

TEST(ShmSegment, FdHandedToAnotherProcess) {
  CreateOptions o = small_heap(128 << 10);
  o.anonymous = true;  // memfd: reachable only through the fd
  Heap h = Heap::create(o);
  pid_t pid = spawn_worker({"open-fd", "100"}, {}, h.fd(), 100);
  ASSERT_GT(pid, 0);
  int status = wait_status(pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  ASSERT_NE(h.root("fdreply"), 0u);
  EXPECT_STREQ(h.ptr<char>(h.root("fdreply")), "via-fd");
}

TEST(ShmSegment, GrowthByAnotherProcessIsSeen) {
  CreateOptions o = small_heap(128 << 10);
  o.initial_size = 64 << 10;
  Heap h = Heap::create(o);
  std::size_t before = h.committed_bytes();
  pid_t pid = spawn_worker({"grow", h.name(), "100"});
  ASSERT_GT(pid, 0);
  int status = wait_status(pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_GT(h.committed_bytes(), before + (6 << 20));
  auto* list = h.ptr<std::uint64_t>(h.root("grown"));
  ASSERT_EQ(list[0], 100u);
  for (int i = 0; i < 100; ++i) {
    auto* p = h.ptr<unsigned char>(list[i + 1]);
    EXPECT_EQ(p[0], i);
    EXPECT_EQ(p[65535], i);
  }
}

TEST(ShmSegment, AnotherUserCannotOpen) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch to user nobody";
  Heap h = Heap::create(small_heap(128 << 10));
  struct stat sb {};
  ASSERT_EQ(::fstat(h.fd(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  std::string name = h.name();
  int fd = h.fd();
  pid_t pid = ::fork();  // this test process has no other threads
  if (pid == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(10);
    int code = 0;
    try {
      Heap::open(name);
      code = 11;
    } catch (const Error& e) {
      if (e.code() != Errc::permission_denied) code = 12;
    }
    try {
      Heap::open_fd(fd);  // even holding the fd, it cannot reopen it
      code = code ? code : 13;
    } catch (const Error& e) {
      if (e.code() != Errc::permission_denied) code = code ? code : 14;
    }
    ::_exit(code);  // H2: never run the inherited Heap's destructor
  }
  int status = wait_status(pid);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10 setuid failed, 11/13 opened, 12/14 wrong error";
}

TEST(ShmSegment, FullTmpfsFailsAtAllocationNotWithSigbus) {
  char dir[] = "/tmp/troupe-tmpfs-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  if (::mount("tmpfs", dir, "tmpfs", 0, "size=2m,mode=0700") != 0) {
    ::rmdir(dir);
    GTEST_SKIP() << "cannot mount a tmpfs here: " << std::strerror(errno);
  }
  struct Unmount {
    const char* dir;
    ~Unmount() {
      ::umount2(dir, MNT_DETACH);
      ::rmdir(dir);
    }
  } unmount{dir};  // also when an assertion returns early
  {
    CreateOptions o;
    o.directory = dir;
    o.max_size = 64 << 20;
    o.initial_size = 64 << 10;
    o.slots = 8;
    Heap h = Heap::create(o);
    std::vector<Offset> blocks;
    bool failed = false;
    try {
      for (int i = 0; i < 1000; ++i) {
        Offset b = h.allocate(i % 2 ? 60000 : 3000);
        std::memset(h.ptr(b), 0xab, i % 2 ? 60000 : 3000);  // SIGBUS here if not backed
        blocks.push_back(b);
      }
    } catch (const Error& e) {
      failed = true;
      EXPECT_EQ(e.code(), Errc::out_of_memory) << e.what();
      EXPECT_NE(std::string(e.what()).find("posix_fallocate"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(failed) << "a 2 MiB tmpfs held 1000 blocks";
    EXPECT_GT(blocks.size(), 10u);
    for (Offset b : blocks) h.free(b);  // and the heap still works
    EXPECT_NE(h.allocate(3000), 0u);
  }
}

TEST(ShmSegment, KilledProcessIsRecovered) {
  Heap h = Heap::create(small_heap(128 << 10));
  std::size_t live0 = h.stats().live_bytes();
  pid_t pid = spawn_worker({"hold", h.name(), "300", "20"});
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(wait_root(h, "ready"));
  auto during = h.stats();
  EXPECT_GT(during.unpublished, live0 + 300 * 16);
  std::vector<std::uint64_t> hook_saw;
  h.set_recovery_hook([&](Heap& heap, unsigned, std::span<std::atomic<std::uint64_t>> words) {
    hook_saw.push_back(words[0].load());
    heap.free(heap.allocate(100));  // a hook may use the heap
  });
  ::kill(pid, SIGKILL);
  wait_status(pid);
  auto slots = h.slots();
  bool dead_seen = false;
  for (auto& s : slots) dead_seen |= s.attached && !s.alive;
  EXPECT_TRUE(dead_seen) << "the killed worker's slot should look dead";
  auto rep = h.recover();
  EXPECT_EQ(rep.slots.size(), 1u);
  ASSERT_EQ(hook_saw.size(), 1u);
  EXPECT_EQ(hook_saw[0], 0xfeedu);
  EXPECT_GE(rep.blocks_freed, 270u);
  EXPECT_GE(rep.pages_freed, 30u * 5);
  auto after = h.stats();
  EXPECT_EQ(after.unpublished, live0);
  auto* list = h.ptr<std::uint64_t>(h.root("held"));
  ASSERT_EQ(list[0], 20u);
  EXPECT_EQ(after.published, 112u * 20 + h.usable_size(h.root("held")));
  for (int i = 0; i < 20; ++i) h.free(list[i + 1]);
  h.free(h.root("held"));
  EXPECT_TRUE(h.verify().empty());
  EXPECT_EQ(h.recover().slots.size(), 0u);
}

TEST(ShmSegment, StaleHeapsAreListedAndRemoved) {
  char dir[] = "/dev/shm/troupe-stale-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  CreateOptions o = small_heap(128 << 10);
  o.directory = dir;
  std::string stale_name, kept_name;
  {
    Heap dying = Heap::create(o);
    stale_name = dying.name();
    pid_t pid = spawn_worker({"hold", stale_name, "10", "1"});
    ASSERT_GT(pid, 0);
    ASSERT_TRUE(wait_root(dying, "ready"));
    dying.close();  // we leave cleanly; the worker then dies attached
    ::kill(pid, SIGKILL);
    wait_status(pid);
  }
  CreateOptions k = o;
  k.keep = true;
  { kept_name = Heap::create(k).name(); }  // kept, closed cleanly: not stale
  Heap live = Heap::create(o);             // attached: not stale
  auto stale = Heap::list_stale(dir);
  ASSERT_EQ(stale.size(), 1u);
  EXPECT_EQ(stale[0].name, stale_name);
  EXPECT_EQ(stale[0].attached, 1u);
  auto removed = Heap::remove_stale(dir);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_NE(::access(stale_name.c_str(), F_OK), 0);
  EXPECT_EQ(::access(kept_name.c_str(), F_OK), 0);
  EXPECT_EQ(::access(live.name().c_str(), F_OK), 0);
  EXPECT_TRUE(Heap::list_stale(dir).empty());
  live.close();
  Heap::remove(kept_name);
  ::rmdir(dir);
}

}  // namespace
