// src/shm/layout.hpp: the bytes of a shared heap, as every process
// that maps it sees them. Nothing here holds a pointer; every reference is an
// offset from the start of the segment (a troupe::shm::Offset, 0 = null).
//
// Segment layout (all parts page aligned, the data area 64 KiB aligned):
//   [Header][Slot x slot_count][page map: one word per data page][data pages]
// The header, slots and page map are reserved with posix_fallocate at create;
// the data area grows by whole pages (Header::committed_pages).
//
// Ownership tags. Every small block (one byte in its superblock) and every
// large run (its page-map head word) carries exactly one *responsible party*:
//   0            free: belongs to its superblock / the page pool
//   s + 1        slot s: in s's cache, or allocated by s and not yet published
//   kPublished   reachable from shared data; whoever frees it takes it back
// Invariants:
//   L1. A tag changes from 0 only by a compare-exchange (a claim), and from
//       non-zero only by its responsible party (or, once that party's slot is
//       dead, by the survivor holding the dead slot's kernel lock). So each
//       transition is one atomic step: a process killed between any two
//       instructions leaves every block with exactly one responsible party.
//   L2. Recovery of dead slot s sets every tag s+1 to 0. Nothing else is
//       needed: caches and half-done operations are described by the tags.
//   L3. Only the holder of a superblock (tag s+1 in the holder byte of its
//       page-map head) claims blocks from it; a superblock with holder 0 may
//       be retired, and only by a slot that first becomes its holder and then
//       claims every block. The holder lives in the page-map word, not in the
//       superblock, so adopting is a CAS on a word that is never reused for
//       anything else: a superblock retired and reused under a slow adopter
//       makes the adopter's CAS fail instead of writing into user data.
//   L4. A page-map word leaves 0 only by compare-exchange (kPending, tagged);
//       a run's head is written before its tails become kTail, and a run is
//       dismantled tails-first back to kPending, so a page is never a tail of a
//       run whose head is gone (see Heap allocator, free_run).
//   L5. The header's layout fields are written once, before the magic, by the
//       creator while it holds the write lock on lock byte 0; readers check the
//       magic, version and ABI fingerprint before trusting any other field.
//   L6. Header::retire_epoch is incremented by every retire of a superblock
//       after its head stops saying SB and before its pages are freed, so a
//       reader that does not hold a superblock (recovery) and reads the epoch,
//       then the head, then a word, then the epoch again unchanged, read the
//       word while the pages were still that superblock (or a later one).
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace troupe::shm::detail {

inline constexpr char kMagic[8] = {'T', 'R', 'O', 'U', 'P', 'E', 'S', 'H'};
inline constexpr std::uint32_t kLayoutVersion = 2;  // 2: retire_epoch (L6)

inline constexpr std::size_t kPageSize = 4096;
inline constexpr std::size_t kPageShift = 12;
inline constexpr std::size_t kSbPages = 16;  // a superblock is 64 KiB, 64 KiB aligned
inline constexpr std::size_t kSbSize = kSbPages * kPageSize;
inline constexpr std::size_t kDataAlign = kSbSize;
inline constexpr std::size_t kMaxSmall = 8192;  // larger requests are page runs
inline constexpr std::size_t kMinAlign = 16;    // every block is 16-byte aligned
inline constexpr unsigned kMaxSlots = 254;      // tags 1..254 name slots
inline constexpr std::uint8_t kPublished = 255;
inline constexpr unsigned kRoots = 64;
inline constexpr unsigned kRootName = 47;  // bytes of name, plus a NUL
inline constexpr unsigned kSlotUserWords = 16;

// Size classes: 16, 32, 48, 64, then four per power of two up to 8192
// (80, 96, 112, 128, 160, ... 8192): at most 25 % internal waste above 64.
inline constexpr unsigned kClasses = 32;
constexpr std::array<std::uint32_t, kClasses> make_class_sizes() {
  std::array<std::uint32_t, kClasses> s{};
  unsigned i = 0;
  for (std::uint32_t v = 16; v <= 64; v += 16) s[i++] = v;
  for (std::uint32_t p = 64; p < kMaxSmall; p *= 2)
    for (std::uint32_t k = 1; k <= 4; ++k) s[i++] = p + k * (p / 4);
  return s;
}
inline constexpr std::array<std::uint32_t, kClasses> kClassSize = make_class_sizes();
static_assert(kClassSize[kClasses - 1] == kMaxSmall);

// Cache capacity per class: 32 blocks, fewer for big blocks (at most ~64 KiB
// cached per class). Refill and flush move half of it.
constexpr std::uint32_t cache_cap(unsigned cls) {
  std::uint32_t c = static_cast<std::uint32_t>(65536 / kClassSize[cls]);
  return c > 32 ? 32 : (c < 4 ? 4 : c);
}
inline constexpr std::uint32_t kCacheMax = 32;
constexpr std::array<std::uint32_t, kClasses> make_cache_caps() {
  std::array<std::uint32_t, kClasses> c{};
  for (unsigned i = 0; i < kClasses; ++i) c[i] = cache_cap(i);
  return c;
}
inline constexpr std::array<std::uint32_t, kClasses> kCacheCap = make_cache_caps();

// ---- page map words ---------------------------------------------------------
// bits 0-1 kind, bits 8-15 tag (kPending, large heads; the holder for SB
// heads), bits 16-23 class (SB heads), bits 32-63 run length in pages (heads).
enum PageKind : std::uint64_t { kFree = 0, kPending = 1, kHead = 2, kTail = 3 };
inline constexpr std::uint64_t kSbFlag = 1u << 2;

constexpr std::uint64_t pm_kind(std::uint64_t w) { return w & 3; }
constexpr bool pm_is_sb(std::uint64_t w) { return pm_kind(w) == kHead && (w & kSbFlag); }
constexpr bool pm_is_large(std::uint64_t w) { return pm_kind(w) == kHead && !(w & kSbFlag); }
constexpr std::uint8_t pm_tag(std::uint64_t w) { return static_cast<std::uint8_t>(w >> 8); }
constexpr unsigned pm_class(std::uint64_t w) { return static_cast<unsigned>((w >> 16) & 0xff); }
constexpr std::uint64_t pm_len(std::uint64_t w) { return w >> 32; }
constexpr std::uint64_t pm_pending(std::uint8_t tag) {
  return kPending | (std::uint64_t{tag} << 8);
}
constexpr std::uint64_t pm_large(std::uint8_t tag, std::uint64_t len) {
  return kHead | (std::uint64_t{tag} << 8) | (len << 32);
}
constexpr std::uint64_t pm_sb(unsigned cls, std::uint8_t holder = 0) {
  return kHead | kSbFlag | (std::uint64_t{holder} << 8) | (std::uint64_t{cls} << 16) |
         (std::uint64_t{kSbPages} << 32);
}

// ---- superblock ---------------------------------------------------------------
// At the start of its 64 KiB run. The plain fields are written by the slot that
// creates it before it publishes the page-map head as an SB head (release);
// readers reach a superblock only through that head (acquire), and the fields
// never change while the head says SB. The allocator does not trust them
// (see kSbGeom below): only nfree (a hint) and owner[] are read.
struct Superblock {
  std::uint32_t cls;
  std::uint32_t block_size;
  std::uint32_t nblocks;
  std::uint32_t first;       // byte offset of block 0 inside the superblock
  std::uint64_t reciprocal;  // ceil(2^32 / block_size): index = (d * r) >> 32
  std::uint32_t unused;      // (the holder is in the page-map head, L3)
  // Approximate count of tag-0 blocks: a hint for adoption and retiring, never
  // trusted for correctness (a crash between a tag change and this update
  // leaves it off by the batch). Everyone updates it with relaxed RMWs.
  std::atomic<std::int32_t> nfree;
  std::uint64_t pad[4];
  // owner[i / 8] byte (i % 8): the tag of block i (little-endian bytes).
  std::atomic<std::uint64_t> owner[1];
};
static_assert(offsetof(Superblock, owner) == 64);

constexpr std::uint32_t sb_nblocks(std::uint32_t size) {
  // largest n with 64 + 8*ceil(n/8) rounded to 16, plus n*size <= kSbSize
  std::uint32_t n = static_cast<std::uint32_t>((kSbSize - 64) / size);
  while (n > 0) {
    std::uint64_t hdr = 64 + 8 * ((n + 7) / 8);
    hdr = (hdr + 15) & ~std::uint64_t{15};
    if (hdr + std::uint64_t{n} * size <= kSbSize) break;
    --n;
  }
  return n;
}
constexpr std::uint32_t sb_first(std::uint32_t n) {
  std::uint64_t hdr = 64 + 8 * ((n + 7) / 8);
  return static_cast<std::uint32_t>((hdr + 15) & ~std::uint64_t{15});
}

// A class's superblock geometry. The allocator reads geometry from here, by
// the class in the page-map head, never from a superblock's plain fields:
// those lie in the segment's body, which a scribbling process or a bit flip
// may have changed, and an index computed from a forged block_size or
// nblocks would reach past the superblock. The fields stay written, for
// check() to compare and for a reader of a dump.
struct SbGeom {
  std::uint32_t size;        // block size
  std::uint32_t nblocks;
  std::uint32_t first;       // byte offset of block 0
  std::uint64_t reciprocal;  // ceil(2^32 / size): index = (d * r) >> 32
};
constexpr std::array<SbGeom, kClasses> make_sb_geometry() {
  std::array<SbGeom, kClasses> g{};
  for (unsigned c = 0; c < kClasses; ++c) {
    const std::uint32_t size = kClassSize[c], n = sb_nblocks(size);
    g[c] = {size, n, sb_first(n), ((std::uint64_t{1} << 32) + size - 1) / size};
  }
  return g;
}
inline constexpr std::array<SbGeom, kClasses> kSbGeom = make_sb_geometry();

// ---- process slots ------------------------------------------------------------
enum SlotState : std::uint32_t { kSlotFree = 0, kSlotAttached = 1 };

struct SlotCache {
  std::uint32_t n;             // entries in use
  std::uint32_t e[kCacheMax];  // block offsets >> 4 (tag == slot + 1)
};

// One per attached thread. Liveness is the kernel's: slot i is alive while
// some open file description holds the OFD write lock on byte 1 + i of the
// segment file. Fields are written only by the thread owning the slot (which
// holds that lock), or by a survivor that took the lock after the owner died.
struct Slot {
  std::atomic<std::uint32_t> state;       // SlotState
  std::atomic<std::int32_t> pid;          // informational only: never trusted
  std::atomic<std::uint64_t> generation;  // bumped each time the slot is taken
  // Words for layers above (transactions, epochs): read by the recovery hook
  // of the survivor before the slot's blocks are freed.
  std::atomic<std::uint64_t> user[kSlotUserWords];
  std::uint32_t cur_sb[kClasses];  // page index + 1 of the held superblock
  std::uint32_t cursor[kClasses];  // next owner word to scan in cur_sb
  SlotCache cache[kClasses];
};

// ---- header -------------------------------------------------------------------
// kFlagHooked (S2 of slots.cpp): a process has installed a recovery hook
// here, so a dead slot may hold a layer's state that only a hook settles.
enum HeaderFlags : std::uint32_t { kFlagKeep = 1, kFlagUnlinked = 2, kFlagHooked = 4 };

struct RootEntry {
  // 0 empty, 1 in use. Written under Header::root_lock.
  std::atomic<std::uint32_t> used;
  char name[kRootName + 1];
  std::atomic<std::uint64_t> value;  // an Offset; release/acquire publishes the object
};

struct Header {
  char magic[8];  // written last at create (L5)
  std::uint32_t layout_version;
  std::uint32_t header_bytes;
  std::uint64_t abi;
  std::uint64_t max_size;  // bytes of data area this heap may grow to
  std::uint64_t slot_count;
  std::uint64_t slots_off;
  std::uint64_t pagemap_off;
  std::uint64_t data_off;
  std::uint64_t max_pages;
  std::uint64_t create_time;
  // Pages of the data area backed by the file. Grows only, by CAS after the
  // grower's posix_fallocate succeeded (release: the new pages are backed).
  std::atomic<std::uint64_t> committed_pages;
  // Processes attached; a clean detach decrements. Non-zero with nobody
  // holding lock byte 0 means a process died attached (a stale heap).
  std::atomic<std::uint32_t> attached;
  std::atomic<std::uint32_t> flags;                   // HeaderFlags
  std::atomic<std::uint64_t> page_hint;               // where page searches start (hint)
  std::atomic<std::uint64_t> class_cursor[kClasses];  // adoption scan start (hint)
  // Tiny lock for creating/removing roots: 0 or slot+1; recovery releases a
  // dead holder's. Not used by the allocator.
  std::atomic<std::uint32_t> root_lock;
  // L6. Incremented (release RMW) by whoever retires a superblock; read by
  // recovery to notice a retire under it. Wraps: 2^32 retires do not fit in
  // one recovery's look at one owner word.
  std::atomic<std::uint32_t> retire_epoch;
  std::atomic<std::uint64_t> reserved_words[32];  // for layers above (epochs); zero at create
  RootEntry roots[kRoots];
};

constexpr std::uint64_t round_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

struct Geometry {
  std::uint64_t slots_off, pagemap_off, data_off, max_pages;
};
constexpr Geometry geometry(std::uint64_t slot_count, std::uint64_t max_size) {
  Geometry g{};
  g.slots_off = round_up(sizeof(Header), kPageSize);
  g.pagemap_off = round_up(g.slots_off + slot_count * sizeof(Slot), kPageSize);
  g.max_pages = max_size / kPageSize;
  g.data_off = round_up(g.pagemap_off + g.max_pages * 8, kDataAlign);
  return g;
}

// Changes whenever a structure, constant or class table changes shape.
constexpr std::uint64_t abi_fingerprint() {
  std::uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::uint64_t v) {
    h ^= v;
    h *= 1099511628211ull;
  };
  mix(kLayoutVersion);
  mix(sizeof(Header));
  mix(sizeof(Slot));
  mix(sizeof(Superblock));
  mix(sizeof(RootEntry));
  mix(kPageSize);
  mix(kSbSize);
  mix(kClasses);
  for (auto s : kClassSize) mix(s);
  mix(kCacheMax);
  mix(sizeof(void*));
  mix(alignof(std::max_align_t));
  mix(static_cast<std::uint64_t>(std::endian::native == std::endian::little));
  return h;
}

}  // namespace troupe::shm::detail
