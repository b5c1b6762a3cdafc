// tests/shm/bad_input_test.cpp: opening what is not a sound heap: wrong
// magic, another layout version or ABI, truncated header or data, a file
// whose creator died before finishing, corrupt geometry, and random header
// corruption. Each gives a troupe::Error naming the cause, never a crash.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <random>
#include <troupe/shm/heap.hpp>

#include "shm/layout.hpp"

using troupe::Errc;
using troupe::Error;
using troupe::shm::CreateOptions;
using troupe::shm::Heap;
namespace d = troupe::shm::detail;

namespace {

class ShmBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(::mkdtemp(dir_), nullptr);
    CreateOptions o;
    o.directory = dir_;
    o.keep = true;
    o.max_size = 16 << 20;
    o.initial_size = 64 << 10;
    o.slots = 4;
    path_ = Heap::create(o).name();
  }
  void TearDown() override {
    ::unlink(path_.c_str());
    ::rmdir(dir_);
  }
  template <class T>
  void poke(std::size_t off, T v) {
    int fd = ::open(path_.c_str(), O_RDWR);
    ASSERT_EQ(::pwrite(fd, &v, sizeof v, static_cast<off_t>(off)), static_cast<ssize_t>(sizeof v));
    ::close(fd);
  }
  void expect_error(Errc code, const char* words) {
    try {
      Heap h = Heap::open(path_);
      ADD_FAILURE() << "opened a bad heap";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  }
  char dir_[40] = "/dev/shm/troupe-bad-XXXXXX";
  std::string path_;
};

TEST_F(ShmBadInput, SoundHeapOpens) { EXPECT_NO_THROW(Heap::open(path_)); }

TEST_F(ShmBadInput, WrongMagic) {
  poke<char>(0, 'X');
  expect_error(Errc::bad_segment, "wrong magic");
}

TEST_F(ShmBadInput, OtherLayoutVersion) {
  poke<std::uint32_t>(offsetof(d::Header, layout_version), d::kLayoutVersion + 1);
  expect_error(Errc::version_mismatch,
               ("layout version " + std::to_string(d::kLayoutVersion + 1)).c_str());
}

TEST_F(ShmBadInput, OtherAbi) {
  poke<std::uint64_t>(offsetof(d::Header, abi), 12345);
  expect_error(Errc::version_mismatch, "ABI");
}

TEST_F(ShmBadInput, TruncatedHeader) {
  ASSERT_EQ(::truncate(path_.c_str(), 100), 0);
  expect_error(Errc::bad_segment, "truncated");
}

TEST_F(ShmBadInput, TruncatedData) {
  struct stat sb {};
  ASSERT_EQ(::stat(path_.c_str(), &sb), 0);
  ASSERT_EQ(::truncate(path_.c_str(), sb.st_size - 4096), 0);
  expect_error(Errc::bad_segment, "truncated");
}

TEST_F(ShmBadInput, NeverInitialised) {
  std::vector<char> zeros(8, 0);
  int fd = ::open(path_.c_str(), O_RDWR);
  ASSERT_EQ(::pwrite(fd, zeros.data(), 8, 0), 8);
  ::close(fd);
  expect_error(Errc::bad_segment, "never initialised");
}

TEST_F(ShmBadInput, EmptyFile) {
  ASSERT_EQ(::truncate(path_.c_str(), 0), 0);
  expect_error(Errc::bad_segment, "truncated");
}

TEST_F(ShmBadInput, CorruptGeometry) {
  poke<std::uint64_t>(offsetof(d::Header, data_off), 4096);
  expect_error(Errc::bad_segment, "corrupt header");
}

TEST_F(ShmBadInput, ImpossibleCommittedSize) {
  poke<std::uint64_t>(offsetof(d::Header, committed_pages), std::uint64_t{1} << 40);
  expect_error(Errc::bad_segment, "corrupt header");
}

TEST_F(ShmBadInput, NotAHeapAtAll) {
  int fd = ::open(path_.c_str(), O_RDWR | O_TRUNC);
  std::string text(100000, 'z');
  ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  ::close(fd);
  expect_error(Errc::bad_segment, "not a troupe heap");
}

// A root lock naming a slot nobody attached (slot 2 of 4; no process is
// attached) can never be released: a clear error instead of spinning forever.
TEST_F(ShmBadInput, RootLockHeldByANonAttachedSlot) {
  poke<std::uint32_t>(offsetof(d::Header, root_lock), 3);
  Heap h = Heap::open(path_);
  try {
    h.root("anything");
    ADD_FAILURE() << "root() returned despite the stuck root lock";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::bad_segment);
    EXPECT_NE(std::string(e.what()).find("root lock"), std::string::npos) << e.what();
  }
  poke<std::uint32_t>(offsetof(d::Header, root_lock), 99);  // not even a slot
  EXPECT_THROW(h.root("anything"), Error);
}

TEST_F(ShmBadInput, RandomHeaderCorruptionNeverCrashes) {
  std::vector<unsigned char> orig(sizeof(d::Header));
  int fd = ::open(path_.c_str(), O_RDWR);
  ASSERT_EQ(::pread(fd, orig.data(), orig.size(), 0), static_cast<ssize_t>(orig.size()));
  std::mt19937 rng(7);
  int errors = 0;
  for (int i = 0; i < 300; ++i) {
    auto copy = orig;
    for (int k = 0; k < 3; ++k) copy[rng() % 128] = static_cast<unsigned char>(rng());
    ASSERT_EQ(::pwrite(fd, copy.data(), copy.size(), 0), static_cast<ssize_t>(copy.size()));
    try {
      Heap h = Heap::open(path_);
      auto o = h.allocate(100);  // whatever passed the checks must still work
      h.free(o);
    } catch (const Error& e) {
      ++errors;
      EXPECT_FALSE(std::string(e.what()).empty());
    }
  }
  ::close(fd);
  EXPECT_GT(errors, 200);
}

}  // namespace
