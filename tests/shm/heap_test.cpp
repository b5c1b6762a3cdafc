// tests/shm/heap_test.cpp: single-process behaviour of troupe::shm::Heap:
// allocation, size classes, ownership tags, roots, growth, two mappings of
// one heap at different addresses, close/keep/remove, memfd, stats, trim,
// rejection of bad offsets and of forged superblock fields.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>
#include <troupe/shm/heap.hpp>

#include "shm/layout.hpp"
#include "shm_test_util.hpp"

using troupe::Errc;
using troupe::Error;
using troupe::shm::CreateOptions;
using troupe::shm::Heap;
using troupe::shm::Offset;
using troupe::shm::Owner;

namespace {

void expect_sound(const Heap& h) {
  auto problems = h.verify();
  for (auto& p : problems) ADD_FAILURE() << p;
}

TEST(ShmHeap, AllocateWriteFree) {
  Heap h = Heap::create(shm_test::small_heap());
  std::vector<std::pair<Offset, std::size_t>> blocks;
  std::set<Offset> seen;
  for (std::size_t size : {1, 8, 16, 17, 48, 100, 1000, 4096, 8192, 8193, 20000, 300000}) {
    for (int i = 0; i < 20; ++i) {
      Offset o = h.allocate(size);
      ASSERT_NE(o, 0u);
      EXPECT_EQ(o % 16, 0u);
      EXPECT_GE(h.usable_size(o), size);
      EXPECT_TRUE(seen.insert(o).second) << "offset handed out twice";
      std::memset(h.ptr(o), static_cast<int>(size & 0xff), size);
      blocks.emplace_back(o, size);
    }
  }
  for (auto [o, size] : blocks) {
    auto* p = h.ptr<unsigned char>(o);
    EXPECT_EQ(p[0], size & 0xff);
    EXPECT_EQ(p[size - 1], size & 0xff);
    EXPECT_EQ(h.owner(o).kind, Owner::slot);
    h.free(o);
  }
  expect_sound(h);
}

TEST(ShmHeap, SizeClassesAreTightAndAligned) {
  Heap h = Heap::create(shm_test::small_heap());
  for (std::size_t size = 1; size <= 8192; size += 7) {
    Offset o = h.allocate(size);
    std::size_t u = h.usable_size(o);
    EXPECT_GE(u, size);
    if (size > 64) {
      EXPECT_LE(u, size + size / 4 + 16) << size;
    }
    h.free(o);
  }
}

TEST(ShmHeap, PublishTransfersResponsibility) {
  Heap h = Heap::create(shm_test::small_heap());
  Offset o = h.allocate(64);
  EXPECT_EQ(h.owner(o).kind, Owner::slot);
  EXPECT_EQ(h.owner(o).slot_index, h.slot_index());
  h.publish(o);
  EXPECT_EQ(h.owner(o).kind, Owner::published);
  h.unpublish(o);
  EXPECT_EQ(h.owner(o).kind, Owner::slot);
  h.publish(o);
  h.free(o);  // freeing a published block takes it back first
  Offset big = h.allocate(100000);
  h.publish(big);
  EXPECT_EQ(h.owner(big).kind, Owner::published);
  h.free(big);
  auto s = h.stats();
  EXPECT_EQ(s.published, 0u);
}

TEST(ShmHeap, BadOffsetsAreRejectedWithClearErrors) {
  Heap h = Heap::create(shm_test::small_heap());
  Offset o = h.allocate(100);
  auto expect_invalid = [&](Offset bad, const char* words) {
    try {
      h.free(bad);
      ADD_FAILURE() << "free(" << bad << ") did not throw";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::invalid_argument);
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << words << ": " << e.what();
    }
  };
  expect_invalid(0, "null");
  expect_invalid(o + 8, "aligned");
  expect_invalid(o + 16, "not at the start");
  expect_invalid(64, "header");
  expect_invalid(Offset{1} << 40, "beyond");
  h.free(o);
  h.flush_thread_cache();
  expect_invalid(o, "double free");
  Offset big = h.allocate(50000);
  expect_invalid(big + 4096, "inside a large block");
  h.free(big);
  expect_invalid(big, "not allocated");
  EXPECT_THROW(h.ptr(Offset{1} << 40), Error);
}

// A3 of alloc.cpp: a superblock's plain fields lie in the body, which another
// process may scribble on; the allocator takes a block's geometry from the
// class in its page-map head. A forged header changes nothing but check(),
// and a forged class in the head makes free() a typed error, not an index
// past the slot's caches (a crash libFuzzer found).
TEST(ShmHeap, ForgedSuperblockFieldsAreNotTrusted) {
  namespace d = troupe::shm::detail;
  Heap h = Heap::create(shm_test::small_heap());
  Offset a = h.allocate(100), b = h.allocate(100);
  ASSERT_EQ(h.usable_size(a), 112u);
  // The data area starts 64 KiB-aligned (kDataAlign), so a small block's
  // superblock starts at its offset rounded down to kSbSize.
  auto* sb = h.ptr<d::Superblock>(a & ~Offset{d::kSbSize - 1});
  ASSERT_EQ(sb->block_size, 112u);
  sb->cls = 1420;
  sb->block_size = 1;
  sb->nblocks = ~0u;
  sb->first = 0;
  sb->reciprocal = ~std::uint64_t{0};
  EXPECT_EQ(h.usable_size(a), 112u);
  EXPECT_THROW(h.free(a + 16), Error);
  h.free(a);
  EXPECT_NE(h.allocate(100), 0u);
  auto problems = h.verify();
  ASSERT_FALSE(problems.empty());
  EXPECT_NE(problems[0].find("superblock header does not match"), std::string::npos)
      << problems[0];

  // Now the class in the page-map head.
  auto* hdr = static_cast<d::Header*>(h.base());
  auto* pm = reinterpret_cast<std::atomic<std::uint64_t>*>(static_cast<char*>(h.base()) +
                                                           hdr->pagemap_off);
  const std::uint64_t page = (b - hdr->data_off) / d::kPageSize & ~std::uint64_t{d::kSbPages - 1};
  std::uint64_t head = pm[page].load();
  ASSERT_TRUE(d::pm_is_sb(head));
  pm[page].store((head & ~(std::uint64_t{0xff} << 16)) | (std::uint64_t{200} << 16));
  try {
    h.free(b);
    ADD_FAILURE() << "free of a block under a forged class did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("size class"), std::string::npos) << e.what();
  }
  EXPECT_THROW(h.usable_size(b), Error);
  (void)h.stats();  // skips the corrupt superblock
  pm[page].store(head);  // repaired: b frees as before
  h.free(b);
}

TEST(ShmHeap, RootsByName) {
  Heap h = Heap::create(shm_test::small_heap());
  EXPECT_EQ(h.root("nothing"), 0u);
  Offset o = h.allocate(32);
  h.publish(o);
  h.set_root("config", o);
  EXPECT_EQ(h.root("config"), o);
  Offset expected = 0;
  EXPECT_FALSE(h.compare_exchange_root("config", expected, 5));
  EXPECT_EQ(expected, o);
  EXPECT_TRUE(h.compare_exchange_root("config", expected, 0));
  expected = 0;
  EXPECT_TRUE(h.compare_exchange_root("fresh", expected, o));
  EXPECT_EQ(h.root("fresh"), o);
  EXPECT_TRUE(h.remove_root("fresh"));
  EXPECT_FALSE(h.remove_root("fresh"));
  EXPECT_THROW(h.set_root(std::string(60, 'x'), 1), Error);
}

TEST(ShmHeap, GrowsAndASecondMappingAtAnotherAddressFollows) {
  CreateOptions o = shm_test::small_heap();
  o.initial_size = 64 << 10;
  o.address_hint = shm_test::test_hint(1);
  Heap a = Heap::create(o);
  // The same heap, mapped a second time in this process, somewhere else.
  Heap b = Heap::open(a.name(), {.address_hint = shm_test::test_hint(2)});
  ASSERT_NE(a.base(), b.base());
  std::size_t before = b.committed_bytes();
  std::vector<Offset> blocks;
  for (int i = 0; i < 200; ++i) {
    Offset x = a.allocate(i % 2 ? 40000 : 3000);
    std::memset(a.ptr(x), i, 3000);
    a.publish(x);
    blocks.push_back(x);
  }
  EXPECT_GT(a.committed_bytes(), before);
  for (int i = 0; i < 200; ++i) {
    auto* p = b.ptr<unsigned char>(blocks[static_cast<std::size_t>(i)]);  // maps the growth lazily
    EXPECT_EQ(p[0], i & 0xff);
    EXPECT_EQ(p[2999], i & 0xff);
  }
  for (Offset x : blocks) b.free(x);  // published: any process may free it
  expect_sound(a);
}

// A run that starts below another mapping's old end and runs into pages
// grown since: that mapping must read all of it (first fit puts the run at
// page 8 of 16 old pages and grows the heap for the rest).
TEST(ShmHeap, RunStraddlingAnotherMappingsOldEndIsReadable) {
  CreateOptions o = shm_test::small_heap();
  o.initial_size = 64 << 10;  // 16 pages
  o.address_hint = shm_test::test_hint(3);
  Heap a = Heap::create(o);
  Heap b = Heap::open(a.name(), {.address_hint = shm_test::test_hint(4)});
  ASSERT_EQ(b.committed_bytes(), std::size_t{64} << 10);
  Offset first = a.allocate(8 * 4096);
  Offset run = a.allocate(16 * 4096);
  ASSERT_EQ(run, first + 8 * 4096) << "first fit should start the run in the old pages";
  ASSERT_GT(a.committed_bytes(), std::size_t{64} << 10);
  std::memset(a.ptr(run), 0x3c, 16 * 4096);
  auto* p = b.ptr<unsigned char>(run);  // its start is inside b's first mapping
  for (std::size_t i = 0; i < 16 * 4096; i += 4096) EXPECT_EQ(p[i], 0x3c) << "page " << i / 4096;
  EXPECT_EQ(p[16 * 4096 - 1], 0x3c);
  p[16 * 4096 - 1] = 0x5d;  // and write it
  EXPECT_EQ(a.ptr<unsigned char>(run)[16 * 4096 - 1], 0x5d);
  a.free(run);
  a.free(first);
  expect_sound(a);
}

TEST(ShmHeap, LastCloseRemovesTheNameUnlessKept) {
  std::string name;
  {
    Heap a = Heap::create(shm_test::small_heap());
    name = a.name();
    Heap b = Heap::open(name);
    a.close();
    Heap c = Heap::open(name);  // b still attached: the name stays
  }
  try {
    Heap::open(name);
    ADD_FAILURE() << "heap survived its last process";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::not_found) << e.what();
  }
  CreateOptions k = shm_test::small_heap();
  k.keep = true;
  {
    Heap a = Heap::create(k);
    name = a.name();
    Offset o = a.allocate(10);
    std::strcpy(a.ptr<char>(o), "kept");
    a.publish(o);
    a.set_root("r", o);
  }
  {
    Heap again = Heap::open(name);
    EXPECT_STREQ(again.ptr<char>(again.root("r")), "kept");
  }
  Heap::remove(name);
  EXPECT_THROW(Heap::open(name), Error);
}

TEST(ShmHeap, MemfdHeapOpensFromItsFd) {
  CreateOptions o = shm_test::small_heap();
  o.anonymous = true;
  Heap a = Heap::create(o);
  Offset x = a.allocate(16);
  std::strcpy(a.ptr<char>(x), "anon");
  a.publish(x);
  a.set_root("x", x);
  Heap b = Heap::open_fd(a.fd());
  EXPECT_STREQ(b.ptr<char>(b.root("x")), "anon");
  EXPECT_NE(a.slot_index(), b.slot_index());  // separate descriptions, separate slots
}

TEST(ShmHeap, StatsAddUpAndTrimReturnsSuperblocks) {
  Heap h = Heap::create(shm_test::small_heap());
  std::mt19937 rng(1);
  std::vector<Offset> v;
  for (int i = 0; i < 5000; ++i) v.push_back(h.allocate(1 + rng() % 3000));
  for (std::size_t i = 0; i < v.size(); i += 3) h.publish(v[i]);
  auto s = h.stats();
  EXPECT_EQ(s.free_bytes() + s.live_bytes() + s.overhead, s.committed);
  EXPECT_GT(s.published, 0u);
  expect_sound(h);
  for (Offset o : v) h.free(o);
  h.flush_thread_cache();
  EXPECT_GT(h.trim(), 0u);
  s = h.stats();
  EXPECT_EQ(s.live_bytes(), 0u);
  EXPECT_EQ(s.superblocks, 0u);
  EXPECT_EQ(s.free_pages, s.committed);
  expect_sound(h);
}

TEST(ShmHeap, ClosingFreesUnpublishedKeepsPublished) {
  // Within one process a second Heap object is a separate holder of slots;
  // closing it frees what it held unpublished (leaving is dying politely).
  Heap a = Heap::create(shm_test::small_heap());
  std::size_t base_live = a.stats().live_bytes();
  {
    Heap b = Heap::open(a.name());
    for (int i = 0; i < 100; ++i) b.allocate(200);
    Offset kept = b.allocate(200);
    b.publish(kept);
    b.slot_words()[0].store(42);
  }
  auto s = a.stats();
  EXPECT_EQ(s.unpublished, base_live);
  EXPECT_EQ(s.published, 224u);  // 200 bytes: the 224-byte class
  expect_sound(a);
}

}  // namespace
