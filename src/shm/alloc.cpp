// src/shm/alloc.cpp: the shared-heap allocator and its crash recovery.
//
// Owns: size-class lookup, per-slot caches, superblocks (claim, adopt,
// create, retire), page runs (claim, build, dismantle), recovery of dead
// slots' tags, statistics and the structural check.
//
// Algorithm. Small blocks: a thread allocates from its slot's cache (a plain
// array in shared memory, touched only by that thread); an empty cache is
// refilled by claiming half a cache of tag-0 blocks from the slot's current
// superblock, eight owner bytes per compare-exchange (the owner bytes double
// as the superblock's free bitmap, so "free" and "claimed" are one atomic
// transition, L1 of layout.hpp). A full cache releases half its blocks with
// one fetch_and each. No lists link free blocks, so nothing can be torn by a
// kill: recovery only rewrites tags (L2). Page runs: a first-fit scan of the
// page map claims pages one compare-exchange at a time (kPending, tagged),
// then writes the head and the tails (L4). There is no allocator-wide lock:
// superblocks are held by one slot at a time (L3), pages and blocks are
// claimed by CAS.
// Invariants (besides layout.hpp's L1-L6):
//   A1. A slot's cache holds only blocks tagged with that slot, at most
//       cache_cap(cls) of them, all of class cls.
//   A2. Superblock fields other than nfree/owner are read only after an
//       acquire load of the page-map head that says SB.
//   A3. A superblock's geometry comes from kSbGeom by the class in its
//       page-map head (checked < kClasses where the head is read), never
//       from its plain fields, which lie in memory anyone may scribble on.
#include <fcntl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "shm/fault.hpp"
#include "shm/heap_state.hpp"

namespace troupe::shm::detail {
namespace {

constexpr std::uint64_t kNone = ~std::uint64_t{0};

constexpr std::array<std::uint8_t, kMaxSmall / 16 + 1> make_class_table() {
  std::array<std::uint8_t, kMaxSmall / 16 + 1> t{};
  unsigned c = 0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    std::size_t bytes = i * 16;
    while (kClassSize[c] < bytes) ++c;
    t[i] = static_cast<std::uint8_t>(c);
  }
  return t;
}
constexpr auto kClassOf = make_class_table();

inline unsigned class_of(std::size_t bytes) { return kClassOf[(bytes + 15) >> 4]; }
inline std::uint8_t tag_of(unsigned slot) { return static_cast<std::uint8_t>(slot + 1); }
inline std::uint8_t byte_at(std::uint64_t w, unsigned b) {
  return static_cast<std::uint8_t>(w >> (8 * b));
}

std::string describe_tag(std::uint8_t v) {
  if (v == 0) return "free";
  if (v == kPublished) return "published";
  return fmt::format("held by slot {}", v - 1);
}

// Error paths stay out of line so the hot paths build no strings.
[[noreturn, gnu::cold, gnu::noinline]] void bad_block(const HeapState& st, Offset off,
                                                      const char* why) {
  throw Error(Errc::invalid_argument,
              fmt::format("offset {:#x} is not a block of heap '{}': {}", off, st.name, why));
}
[[noreturn, gnu::cold, gnu::noinline]] void bad_tag(const HeapState& st, Offset off,
                                                    const char* what, std::uint8_t v) {
  throw Error(Errc::invalid_argument, fmt::format("offset {:#x} of heap '{}': {}: it is {}", off,
                                                  st.name, what, describe_tag(v)));
}

std::uint64_t committed_pages(const HeapState& st) {
  // Acquire: pairs with the grower's release CAS, so pages below are backed.
  return st.hdr->committed_pages.load(std::memory_order_acquire);
}

// ---- page runs ------------------------------------------------------------

// Claims n free pages (start aligned to `align`) as kPending(tag). Returns the
// first page or kNone. First fit from the shared hint.
std::uint64_t claim_pages(HeapState& st, std::uint64_t n, std::uint64_t align, std::uint8_t tag) {
  const std::uint64_t end = committed_pages(st);
  if (n > end) return kNone;
  auto* pm = st.pagemap;
  // Relaxed: the hint only picks where to look.
  std::uint64_t start = st.hdr->page_hint.load(std::memory_order_relaxed);
  if (start >= end) start = 0;
  start = start / align * align;
  for (int pass = 0; pass < 2; ++pass) {
    std::uint64_t lo = pass == 0 ? start : 0;
    std::uint64_t hi = pass == 0 ? end : std::min(end, start + n);
    std::uint64_t i = lo;
    while (i + n <= hi) {
      // Relaxed loads: a candidate is confirmed by the CAS below.
      std::uint64_t w = st.pagemap[i].load(std::memory_order_relaxed);
      if (w != 0) {
        std::uint64_t step = pm_kind(w) == kHead ? std::max<std::uint64_t>(pm_len(w), 1) : 1;
        i = (i + step + align - 1) / align * align;
        continue;
      }
      std::uint64_t j = 1;
      while (j < n && pm[i + j].load(std::memory_order_relaxed) == 0) ++j;
      if (j < n) {
        i = (i + j + 1 + align - 1) / align * align;
        continue;
      }
      std::uint64_t k = 0;
      for (; k < n; ++k) {
        std::uint64_t zero = 0;
        // Acquire: pairs with the release store of 0 by the page's last
        // owner, so its writes to the page happen before ours (L4).
        if (!pm[i + k].compare_exchange_strong(zero, pm_pending(tag), std::memory_order_acquire,
                                               std::memory_order_relaxed))
          break;
      }
      if (k < n) {
        // Lost a race: give back what we took (we are responsible, L1).
        for (std::uint64_t m = 0; m < k; ++m) pm[i + m].store(0, std::memory_order_release);
        i = (i + k + 1 + align - 1) / align * align;
        continue;
      }
      st.hdr->page_hint.store(i + n, std::memory_order_relaxed);  // hint only
      return i;
    }
  }
  return kNone;
}

// Grows the committed data area by at least `need` pages. posix_fallocate
// backs the pages before anyone can be handed an offset in them, so a full
// file system fails here, not with SIGBUS later.
bool grow(HeapState& st, std::uint64_t need) {
  std::uint64_t c = committed_pages(st);
  if (c + need > st.max_pages) return false;
  std::uint64_t step = std::max<std::uint64_t>({need, c / 2, 256});
  std::uint64_t target = std::min(st.max_pages, c + step);
  target = (target + kSbPages - 1) / kSbPages * kSbPages;
  if (target > st.max_pages) target = st.max_pages;
  int r = posix_fallocate(st.fd, static_cast<off_t>(st.page_offset(c)),
                          static_cast<off_t>((target - c) * kPageSize));
  if (r == ENOSPC && target > c + need) {
    target = c + need;
    r = posix_fallocate(st.fd, static_cast<off_t>(st.page_offset(c)),
                        static_cast<off_t>((target - c) * kPageSize));
  }
  if (r != 0) {
    throw errno_error(r == ENOSPC ? Errc::out_of_memory : Errc::system, r,
                      fmt::format("cannot grow heap '{}' to {} bytes: posix_fallocate", st.name,
                                  st.page_offset(target)));
  }
  fault_point("grow.after_fallocate");
  // Release: the pages are backed before anyone sees them committed. A failed
  // CAS means someone else grew; our extra fallocated bytes are harmless.
  st.hdr->committed_pages.compare_exchange_strong(c, target, std::memory_order_release,
                                                  std::memory_order_relaxed);
  return true;
}

// Claims a run, growing or recovering when the heap is full.
std::uint64_t alloc_pages(HeapState& st, std::uint64_t n, std::uint64_t align, std::uint8_t tag) {
  bool retired = false, recovered = false;
  std::string grow_error;
  for (;;) {
    std::uint64_t p = claim_pages(st, n, align, tag);
    if (p != kNone) {
      ensure_mapped(st, st.page_offset(p + n));
      return p;
    }
    if (!retired) {
      retired = true;
      if (retire_empty(st, tag, false) > 0) continue;
    }
    bool grew = false;
    try {
      grew = grow(st, n + align - 1);
    } catch (const Error& e) {
      if (recovered) throw;  // the file system is full even after recovery
      grow_error = e.what();
    }
    if (grew) continue;
    if (!recovered) {
      recovered = true;
      RecoveryReport rep = recover_dead(st, /*force=*/true);  // slots.cpp S2
      if (!rep.slots.empty()) continue;
      if (retire_empty(st, tag, true) > 0) continue;
    }
    if (!grow_error.empty()) throw Error(Errc::out_of_memory, grow_error);
    throw Error(Errc::out_of_memory,
                fmt::format("heap '{}' is full: no run of {} free pages in {} bytes (max {} bytes)",
                            st.name, n, committed_pages(st) * kPageSize, st.max_pages * kPageSize));
  }
}

// Turns claimed kPending(tag) pages into a large run owned by tag (L4: head
// first, then tails).
void build_run(HeapState& st, std::uint64_t p, std::uint64_t n, std::uint8_t tag) {
  // Release on every page-map store: a recoverer must see these steps in
  // program order (L4), and the final zeroes publish the pages' contents.
  st.pagemap[p].store(pm_large(tag, n), std::memory_order_release);
  fault_point("alloc.large.after_head");
  for (std::uint64_t k = 1; k < n; ++k) st.pagemap[p + k].store(kTail, std::memory_order_release);
}

// Dismantles a large run whose head carries `tag` (our responsibility):
// tails back to kPending(tag), then the head, then everything to 0 (L4).
void free_run(HeapState& st, std::uint64_t p, std::uint8_t tag) {
  auto* pm = st.pagemap;
  std::uint64_t n = pm_len(pm[p].load(std::memory_order_relaxed));
  // A head whose length runs past the page map is corrupt memory, not a
  // state any crash leaves (found by fuzz/heap_fuzz.cpp): refuse it rather
  // than write past the map.
  if (n == 0 || n > st.max_pages || p + n > st.max_pages)
    throw Error(Errc::bad_segment,
                fmt::format("heap '{}': the run at page {} claims {} pages, past the heap's {}",
                            st.name, p, n, st.max_pages));
  for (std::uint64_t k = n; k-- > 1;) {
    pm[p + k].store(pm_pending(tag), std::memory_order_release);
    if (k == n / 2) fault_point("free.large.mid");
  }
  pm[p].store(pm_pending(tag), std::memory_order_release);
  // Release: pairs with the next claimer's acquire CAS (claim_pages).
  for (std::uint64_t k = 0; k < n; ++k) pm[p + k].store(0, std::memory_order_release);
}

// ---- superblocks ------------------------------------------------------------

std::uint64_t new_superblock(HeapState& st, unsigned cls, std::uint8_t tag) {
  std::uint64_t p = alloc_pages(st, kSbPages, kSbPages, tag);
  build_run(st, p, kSbPages, tag);  // a crash from here on frees a large run
  fault_point("alloc.sb.after_pages");
  Superblock* sb = st.sb_at(p);
  const SbGeom& g = kSbGeom[cls];
  const std::uint32_t n = g.nblocks;
  sb->cls = cls;
  sb->block_size = g.size;
  sb->nblocks = n;
  sb->first = g.first;
  sb->reciprocal = g.reciprocal;
  sb->unused = 0;
  // Relaxed: published by the release store of the SB head below (A2).
  sb->nfree.store(static_cast<std::int32_t>(n), std::memory_order_relaxed);
  for (std::uint32_t w = 0; w < (n + 7) / 8; ++w) sb->owner[w].store(0, std::memory_order_relaxed);
  fault_point("alloc.sb.after_init");
  // Release: the fields above are visible to whoever reads the SB head (A2).
  // We are its holder from the start (L3).
  st.pagemap[p].store(pm_sb(cls, tag), std::memory_order_release);
  return p;
}

// Finds a superblock of class cls with no holder and (by its hint) free
// blocks, and becomes its holder (L3).
std::uint64_t adopt_superblock(HeapState& st, unsigned cls, std::uint8_t tag) {
  std::uint64_t end = committed_pages(st) / kSbPages * kSbPages;
  if (end == 0) return kNone;
  ensure_mapped(st, st.page_offset(end));
  // Relaxed: a hint for where to start.
  std::uint64_t start = st.hdr->class_cursor[cls].load(std::memory_order_relaxed);
  start = start / kSbPages * kSbPages;
  if (start >= end) start = 0;
  std::uint64_t i = start;
  do {
    // Relaxed: the CAS below decides; A2's acquire is on the CAS.
    std::uint64_t w = st.pagemap[i].load(std::memory_order_relaxed);
    if (w == pm_sb(cls)) {
      // Acquire: pairs with the last holder's release detach and with the
      // creator's release of the head (A2).
      if (st.pagemap[i].compare_exchange_strong(w, pm_sb(cls, tag), std::memory_order_acquire,
                                                std::memory_order_relaxed)) {
        // Ours now, so the superblock cannot be retired under us (L3).
        // Relaxed: nfree is a hint.
        if (st.sb_at(i)->nfree.load(std::memory_order_relaxed) > 0) {
          st.hdr->class_cursor[cls].store(i, std::memory_order_relaxed);  // hint
          return i;
        }
        st.pagemap[i].store(pm_sb(cls), std::memory_order_release);  // detach again
      }
    }
    i += kSbPages;
    if (i >= end) i = 0;
  } while (i != start);
  return kNone;
}

// Claims up to `want` tag-0 blocks of the held superblock p into `out`.
unsigned claim_blocks(HeapState& st, std::uint64_t p, Slot& slot, unsigned cls, std::uint8_t tag,
                      unsigned want, std::uint32_t* out) {
  Superblock* sb = st.sb_at(p);
  const SbGeom& g = kSbGeom[cls];
  const std::uint32_t n = g.nblocks;
  const std::uint32_t nw = (n + 7) / 8;
  const std::uint64_t block0 = st.page_offset(p) + g.first;
  unsigned got = 0;
  std::uint32_t i = slot.cursor[cls] < nw ? slot.cursor[cls] : 0;
  for (std::uint32_t scanned = 0; got < want && scanned < nw;) {
    // Relaxed: the CAS below confirms.
    std::uint64_t w = sb->owner[i].load(std::memory_order_relaxed);
    std::uint64_t desired = w;
    unsigned k = 0;
    std::uint32_t picked[8];
    for (unsigned b = 0; b < 8 && got + k < want; ++b) {
      std::uint32_t idx = i * 8 + b;
      if (idx >= n) break;
      if (byte_at(w, b) == 0) {
        desired |= std::uint64_t{tag} << (8 * b);
        picked[k++] = idx;
      }
    }
    if (k > 0) {
      // Acquire: pairs with the release fetch_and of whoever freed these
      // blocks, so their last writes happen before ours (L1).
      if (!sb->owner[i].compare_exchange_weak(w, desired, std::memory_order_acquire,
                                              std::memory_order_relaxed))
        continue;  // reread the same word
      for (unsigned m = 0; m < k; ++m)
        out[got++] =
            static_cast<std::uint32_t>((block0 + std::uint64_t{picked[m]} * g.size) >> 4);
    }
    ++scanned;
    if (++i == nw) i = 0;
  }
  slot.cursor[cls] = i;
  if (got) sb->nfree.fetch_sub(static_cast<std::int32_t>(got), std::memory_order_relaxed);  // hint
  return got;
}

void refill(HeapState& st, unsigned s, unsigned cls) {
  Slot& slot = st.slots[s];
  const std::uint8_t tag = tag_of(s);
  const unsigned want = std::max<unsigned>(cache_cap(cls) / 2, 1);
  std::uint32_t got_blocks[kCacheMax];
  for (;;) {
    if (slot.cur_sb[cls] != 0) {
      std::uint64_t p = slot.cur_sb[cls] - 1;
      unsigned got = claim_blocks(st, p, slot, cls, tag, want, got_blocks);
      if (got > 0) {
        fault_point("alloc.refill.after_claim");
        SlotCache& c = slot.cache[cls];
        std::memcpy(c.e + c.n, got_blocks, got * sizeof(std::uint32_t));
        c.n += got;
        return;
      }
      // Exhausted: detach. Release: pairs with the next holder's acquire.
      st.pagemap[p].store(pm_sb(cls), std::memory_order_release);
      slot.cur_sb[cls] = 0;
    }
    std::uint64_t p = adopt_superblock(st, cls, tag);
    if (p == kNone) p = new_superblock(st, cls, tag);
    slot.cur_sb[cls] = static_cast<std::uint32_t>(p + 1);
    slot.cursor[cls] = 0;
  }
}

// Returns the older half of the cache to the superblocks.
void flush_half(HeapState& st, Slot& slot, unsigned cls, bool all) {
  SlotCache& c = slot.cache[cls];
  std::uint32_t k = all ? c.n : c.n / 2;
  for (std::uint32_t m = 0; m < k; ++m) {
    std::uint64_t rel = (std::uint64_t{c.e[m]} << 4) - st.data_off;
    std::uint64_t p = (rel >> kPageShift) & ~std::uint64_t{kSbPages - 1};
    Superblock* sb = st.sb_at(p);
    const SbGeom& g = kSbGeom[cls];  // A1: the block is of class cls
    std::uint32_t idx =
        static_cast<std::uint32_t>(((rel - p * kPageSize - g.first) * g.reciprocal) >> 32);
    // nfree first: after the tag is 0 the superblock may be retired and its
    // memory reused, so we must not touch it any more (L3). Relaxed: a hint.
    sb->nfree.fetch_add(1, std::memory_order_relaxed);
    // Release: our writes to the block happen before the next claimer's.
    sb->owner[idx >> 3].fetch_and(~(std::uint64_t{0xff} << (8 * (idx & 7))),
                                  std::memory_order_release);
    if (m == 0) fault_point("free.flush.mid");
  }
  std::memmove(c.e, c.e + k, (c.n - k) * sizeof(std::uint32_t));
  c.n -= k;
}

struct Located {
  bool large;
  std::uint64_t page;  // run head or superblock page
  Superblock* sb;
  std::uint32_t idx;
  unsigned cls;  // small blocks: the class, from the page-map head (A3)
};

[[gnu::always_inline]] inline Located locate(HeapState& st, Offset off) {
  // Bytes under `mapped` are committed (committed only grows, P1), so one
  // compare bounds the offset; past it, learn the committed size or reject.
  if (off - st.data_off >= st.mapped.load(std::memory_order_acquire) - st.data_off) [[unlikely]] {
    if (off == 0) bad_block(st, off, "null offset");
    if (off < st.data_off) bad_block(st, off, "inside the heap's header");
    if ((off - st.data_off) >> kPageShift >= committed_pages(st))
      bad_block(st, off, "beyond the committed size");
    ensure_mapped(st, off + 1);
  }
  if ((off & 15) != 0) [[unlikely]]
    bad_block(st, off, "not 16-byte aligned");
  const std::uint64_t rel = off - st.data_off;
  const std::uint64_t page = rel >> kPageShift;
  const std::uint64_t p = page & ~std::uint64_t{kSbPages - 1};
  // Acquire: A2 / a run's head was written before the run was handed out.
  const std::uint64_t h = st.pagemap[p].load(std::memory_order_acquire);
  if (!pm_is_sb(h)) [[unlikely]] {
    // Only page-aligned offsets can start a large run.
    std::uint64_t w = p == page ? h : st.pagemap[page].load(std::memory_order_acquire);
    if (pm_is_large(w) && (rel & (kPageSize - 1)) == 0) return {true, page, nullptr, 0, 0};
    bad_block(st, off,
              pm_kind(w) == kTail || pm_is_large(w) ? "inside a large block"
                                                    : "its page is not allocated");
  }
  const unsigned cls = pm_class(h);
  if (cls >= kClasses) [[unlikely]]
    bad_block(st, off, "its superblock's page-map head names no size class");
  const SbGeom& g = kSbGeom[cls];  // A3
  std::uint64_t d = rel - p * kPageSize;
  if (d < g.first) [[unlikely]]
    bad_block(st, off, "inside a superblock header");
  d -= g.first;
  std::uint32_t idx = static_cast<std::uint32_t>((d * g.reciprocal) >> 32);
  if (idx >= g.nblocks || std::uint64_t{idx} * g.size != d) [[unlikely]]
    bad_block(st, off, "not at the start of a block");
  return {false, p, st.sb_at(p), idx, cls};
}

bool is_own_tag(const HeapState& st, std::uint8_t v) {
  // Relaxed: own[] of a slot we use was set by this process before (P2).
  return v != 0 && v != kPublished && st.own[v - 1].load(std::memory_order_relaxed);
}

// Moves a small block's tag from `from` to `to` by CAS; false if the tag was
// not `from` any more.
bool retag(std::atomic<std::uint64_t>& word, unsigned b, std::uint8_t from, std::uint8_t to) {
  std::uint64_t w = word.load(std::memory_order_relaxed);
  for (;;) {
    if (byte_at(w, b) != from) return false;
    std::uint64_t desired =
        (w & ~(std::uint64_t{0xff} << (8 * b))) | (std::uint64_t{to} << (8 * b));
    // acq_rel: the block changes hands; its contents written by the previous
    // party happen before the new party's use, and ours before theirs.
    if (word.compare_exchange_weak(w, desired, std::memory_order_acq_rel,
                                   std::memory_order_relaxed))
      return true;
  }
}

}  // namespace

// ---- public entry points -------------------------------------------------------

Offset allocate(HeapState& st, std::size_t bytes) {
  if (bytes == 0) bytes = 1;
  const unsigned s = thread_slot(st);
  if (bytes <= kMaxSmall) [[likely]] {
    const unsigned cls = class_of(bytes);
    SlotCache& c = st.slots[s].cache[cls];
    if (c.n == 0) [[unlikely]]
      refill(st, s, cls);
    Offset off = Offset{c.e[--c.n]} << 4;
    fault_point("alloc.after_pop");  // A1: still tagged s, so recovery frees it
    return off;
  }
  if (bytes > st.max_pages * kPageSize)
    throw Error(Errc::out_of_memory, fmt::format("cannot allocate {} bytes from heap '{}': larger "
                                                 "than its max size {}",
                                                 bytes, st.name, st.max_pages * kPageSize));
  std::uint64_t n = (bytes + kPageSize - 1) >> kPageShift;
  std::uint64_t p = alloc_pages(st, n, 1, tag_of(s));
  fault_point("alloc.large.after_claim");
  build_run(st, p, n, tag_of(s));
  return st.page_offset(p);
}

void free_block(HeapState& st, Offset off) {
  Located at = locate(st, off);
  const unsigned s = thread_slot(st);
  const std::uint8_t tag = tag_of(s);
  if (at.large) {
    std::uint64_t w = st.pagemap[at.page].load(std::memory_order_relaxed);
    std::uint8_t v = pm_tag(w);
    if (v != tag) {
      if (v != kPublished && !is_own_tag(st, v))
        bad_tag(st, off, "cannot free a run of another process", v);
      // acq_rel: the run changes hands (see retag).
      if (!st.pagemap[at.page].compare_exchange_strong(w, pm_large(tag, pm_len(w)),
                                                       std::memory_order_acq_rel))
        bad_block(st, off, "freed twice concurrently");
      fault_point("free.after_take");
    }
    free_run(st, at.page, tag);
    return;
  }
  Superblock* sb = at.sb;
  auto& word = sb->owner[at.idx >> 3];
  const unsigned b = at.idx & 7;
  // Relaxed: if the tag is ours, we wrote it on this thread (L1).
  std::uint8_t v = byte_at(word.load(std::memory_order_relaxed), b);
  if (v != tag) {
    if (v == 0) bad_block(st, off, "already free (double free)");
    if (v != kPublished && !is_own_tag(st, v))
      bad_tag(st, off, "cannot free an unpublished block of another process", v);
    if (!retag(word, b, v, tag)) bad_block(st, off, "freed twice concurrently");
    fault_point("free.after_take");
  }
  Slot& slot = st.slots[s];
  const unsigned cls = at.cls;
  SlotCache& c = slot.cache[cls];
  if (c.n >= kCacheCap[cls]) [[unlikely]]
    flush_half(st, slot, cls, false);
  c.e[c.n++] = static_cast<std::uint32_t>(off >> 4);
}

void publish(HeapState& st, Offset off, bool make_published) {
  Located at = locate(st, off);
  const std::uint8_t tag = tag_of(thread_slot(st));
  if (at.large) {
    std::uint64_t w = st.pagemap[at.page].load(std::memory_order_relaxed);
    std::uint8_t v = pm_tag(w);
    std::uint8_t to = make_published ? kPublished : tag;
    if (v == to) return;
    if (make_published ? !is_own_tag(st, v) : v != kPublished)
      bad_tag(st, off, make_published ? "cannot publish" : "cannot unpublish", v);
    // acq_rel: see retag.
    if (!st.pagemap[at.page].compare_exchange_strong(w, pm_large(to, pm_len(w)),
                                                     std::memory_order_acq_rel))
      bad_block(st, off, "changed concurrently");
  } else {
    auto& word = at.sb->owner[at.idx >> 3];
    const unsigned b = at.idx & 7;
    std::uint8_t v = byte_at(word.load(std::memory_order_relaxed), b);
    std::uint8_t to = make_published ? kPublished : tag;
    if (v == to) return;
    if (make_published ? !is_own_tag(st, v) : v != kPublished)
      bad_tag(st, off, make_published ? "cannot publish" : "cannot unpublish", v);
    if (!retag(word, b, v, to)) bad_block(st, off, "changed concurrently");
  }
  if (make_published) fault_point("publish.after");
}

Owner owner_of(HeapState& st, Offset off) {
  Located at = locate(st, off);
  std::uint8_t v;
  if (at.large)
    v = pm_tag(st.pagemap[at.page].load(std::memory_order_acquire));
  else
    v = byte_at(at.sb->owner[at.idx >> 3].load(std::memory_order_acquire), at.idx & 7);
  if (v == 0) return {Owner::free, 0};
  if (v == kPublished) return {Owner::published, 0};
  return {Owner::slot, static_cast<unsigned>(v - 1)};
}

std::size_t usable_size(HeapState& st, Offset off) {
  Located at = locate(st, off);
  if (at.large) return pm_len(st.pagemap[at.page].load(std::memory_order_relaxed)) * kPageSize;
  return kSbGeom[at.cls].size;
}

void flush_slot_caches(HeapState& st, unsigned s) {
  Slot& slot = st.slots[s];
  for (unsigned cls = 0; cls < kClasses; ++cls) {
    if (slot.cache[cls].n) flush_half(st, slot, cls, true);
    if (slot.cur_sb[cls]) {
      // Release: pairs with the next holder's acquire CAS.
      st.pagemap[slot.cur_sb[cls] - 1].store(pm_sb(cls), std::memory_order_release);
      slot.cur_sb[cls] = 0;
    }
  }
}

std::size_t retire_empty(HeapState& st, std::uint8_t tag, bool exact) {
  std::uint64_t end = committed_pages(st) / kSbPages * kSbPages;
  ensure_mapped(st, st.page_offset(end));
  std::size_t freed = 0;
  for (std::uint64_t p = 0; p < end; p += kSbPages) {
    // Relaxed: the CAS below decides.
    std::uint64_t h = st.pagemap[p].load(std::memory_order_relaxed);
    if (!pm_is_sb(h) || pm_tag(h) != 0) continue;
    const unsigned cls = pm_class(h);
    if (cls >= kClasses) continue;  // corrupt: check() reports it
    // Acquire: pairs with the last holder's release detach (L3) and A2.
    if (!st.pagemap[p].compare_exchange_strong(h, pm_sb(cls, tag), std::memory_order_acquire,
                                               std::memory_order_relaxed))
      continue;
    Superblock* sb = st.sb_at(p);
    const std::uint32_t n = kSbGeom[cls].nblocks, nw = (n + 7) / 8;  // A3
    // Relaxed: a hint, read while we hold the superblock.
    if (!exact && sb->nfree.load(std::memory_order_relaxed) < static_cast<std::int32_t>(n)) {
      st.pagemap[p].store(pm_sb(cls), std::memory_order_release);
      continue;
    }
    std::uint32_t w = 0;
    for (; w < nw; ++w) {
      std::uint64_t mine = 0;
      for (unsigned b = 0; b < 8 && w * 8 + b < n; ++b) mine |= std::uint64_t{tag} << (8 * b);
      std::uint64_t expect = 0;
      // Acquire: pairs with the release of the blocks' last owners.
      if (!sb->owner[w].compare_exchange_strong(expect, mine, std::memory_order_acquire,
                                                std::memory_order_relaxed))
        break;
    }
    if (w < nw) {
      for (std::uint32_t u = 0; u < w; ++u) sb->owner[u].store(0, std::memory_order_release);
      if (exact) {
        std::int32_t z = 0;
        for (std::uint32_t u = 0; u < nw; ++u) {
          std::uint64_t x = sb->owner[u].load(std::memory_order_relaxed);
          for (unsigned b = 0; b < 8 && u * 8 + b < n; ++b) z += byte_at(x, b) == 0;
        }
        sb->nfree.store(z, std::memory_order_relaxed);  // re-sync the hint
      }
      st.pagemap[p].store(pm_sb(cls), std::memory_order_release);  // detach
      continue;
    }
    fault_point("retire.after_claim");
    // Every block is ours: the superblock becomes a plain run of ours (L4).
    st.pagemap[p].store(pm_large(tag, kSbPages), std::memory_order_release);
    // L6: after the head stops saying SB, before the pages can be reused.
    // Release: a recoverer whose acquire load sees the new epoch sees the
    // head above. A crash right here leaks nothing (the run is ours, L2) and
    // a missed increment is harmless: the pages are not freed yet.
    st.hdr->retire_epoch.fetch_add(1, std::memory_order_release);
    free_run(st, p, tag);
    freed += kSbSize;
  }
  return freed;
}

void recover_tags(HeapState& st, const TagSet& dead, RecoveryReport& rep) {
  std::uint64_t end = committed_pages(st);
  ensure_mapped(st, st.page_offset(end));
  auto* pm = st.pagemap;
  bool faulted = false;
  for (std::uint64_t i = 0; i < end;) {
    // Acquire: L6, the epoch before the head; the head: A2.
    const std::uint32_t epoch = st.hdr->retire_epoch.load(std::memory_order_acquire);
    std::uint64_t w = pm[i].load(std::memory_order_acquire);
    switch (pm_kind(w)) {
      case kPending:
        if (dead[pm_tag(w)]) {
          pm[i].store(0, std::memory_order_release);  // L2; release as in free_run
          ++rep.pages_freed;
        }
        ++i;
        break;
      case kHead:
        if (pm_is_large(w)) {
          std::uint64_t n = std::max<std::uint64_t>(pm_len(w), 1);
          if (dead[pm_tag(w)]) {
            free_run(st, i, pm_tag(w));
            rep.pages_freed += n;
          }
          i += n;
        } else {
          // We do not hold this superblock (its holder may be live, and we
          // may have no slot): another slot may retire it (L3) and its pages
          // become someone's data while we read it. So the size comes from
          // the head, not the superblock, and each owner word with a dead
          // tag is checked against the epoch before we write it (L6). If the
          // epoch is unchanged, the word was read while the pages were a
          // superblock, and then its dead bytes are real; a superblock with
          // a dead-tagged block cannot be retired (a retire claims every
          // word from 0, and only we change a dead tag, L1), so it is still
          // one when the fetch_and below lands. (A value the word took after
          // the pages were freed would be later than the increment, which
          // the acquire load of the word orders before our second epoch
          // load: multi-copy atomicity, as on x86 and ARMv8.)
          fault_point("recover.sb.after_head");
          const unsigned cls = pm_class(w);
          if (cls >= kClasses) {  // corrupt: verify() reports it
            i += kSbPages;
            break;
          }
          Superblock* sb = st.sb_at(i);
          const std::uint32_t n = kSbGeom[cls].nblocks, nw = (n + 7) / 8;
          bool retired = false;
          for (std::uint32_t u = 0; u < nw && !retired; ++u) {
            // Acquire: orders the epoch load below after this one (L6). The
            // dead slot's bytes cannot change under us (L1); others' bytes
            // are kept by the masked fetch_and.
            std::uint64_t x = sb->owner[u].load(std::memory_order_acquire);
            if (x == 0) continue;
            std::uint64_t mask = 0;
            std::int32_t cnt = 0;
            for (unsigned b = 0; b < 8 && u * 8 + b < n; ++b) {
              std::uint8_t v = byte_at(x, b);
              if (v != 0 && v != kPublished && dead[v]) {
                mask |= std::uint64_t{0xff} << (8 * b);
                ++cnt;
              }
            }
            if (!mask) continue;
            // Acquire: L6, pairs with the retirer's release increment.
            if (st.hdr->retire_epoch.load(std::memory_order_acquire) != epoch) {
              retired = true;  // maybe retired: look at page i again
              break;
            }
            sb->nfree.fetch_add(cnt, std::memory_order_relaxed);  // hint, before the release
            // Release: the blocks are free for the next claimer (acquire).
            sb->owner[u].fetch_and(~mask, std::memory_order_release);
            rep.blocks_freed += static_cast<std::size_t>(cnt);
          }
          if (retired) continue;  // the for loop: page i, fresh epoch and head
          std::uint8_t h = pm_tag(w);
          if (h != 0 && dead[h])  // a dead holder: nobody else writes this word now (L3)
            pm[i].compare_exchange_strong(w, pm_sb(pm_class(w)), std::memory_order_release,
                                          std::memory_order_relaxed);
          if (!faulted) {
            faulted = true;
            fault_point("recover.mid");
          }
          i += kSbPages;
        }
        break;
      default:
        ++i;
        break;
    }
  }
  std::uint32_t rl = st.hdr->root_lock.load(std::memory_order_relaxed);
  if (rl != 0 && dead[rl])
    st.hdr->root_lock.compare_exchange_strong(rl, 0, std::memory_order_release,
                                              std::memory_order_relaxed);
  for (unsigned s = 0; s < st.slot_count; ++s) {
    if (!dead[tag_of(s)]) continue;
    Slot& slot = st.slots[s];
    for (unsigned cls = 0; cls < kClasses; ++cls) {
      slot.cache[cls].n = 0;
      slot.cur_sb[cls] = 0;
      slot.cursor[cls] = 0;
    }
  }
}

Stats compute_stats(HeapState& st) {
  Stats out;
  std::uint64_t end = committed_pages(st);
  ensure_mapped(st, st.page_offset(end));
  out.committed = end * kPageSize;
  std::unordered_set<std::uint64_t> cached;
  for (unsigned s = 0; s < st.slot_count; ++s) {
    const Slot& slot = st.slots[s];
    if (slot.state.load(std::memory_order_acquire) != kSlotAttached) continue;
    for (unsigned cls = 0; cls < kClasses; ++cls)
      for (std::uint32_t m = 0; m < std::min(slot.cache[cls].n, kCacheMax); ++m)
        cached.insert(std::uint64_t{slot.cache[cls].e[m]} << 4);
  }
  for (std::uint64_t i = 0; i < end;) {
    std::uint64_t w = st.pagemap[i].load(std::memory_order_acquire);
    if (pm_is_sb(w) && pm_class(w) < kClasses) {  // a corrupt class: check() reports it
      Superblock* sb = st.sb_at(i);
      const SbGeom& g = kSbGeom[pm_class(w)];  // A3
      ++out.superblocks;
      out.overhead += kSbSize - std::uint64_t{g.nblocks} * g.size;
      std::uint64_t block0 = st.page_offset(i) + g.first;
      for (std::uint32_t idx = 0; idx < g.nblocks; ++idx) {
        std::uint8_t v = byte_at(sb->owner[idx >> 3].load(std::memory_order_relaxed), idx & 7);
        std::uint64_t off = block0 + std::uint64_t{idx} * g.size;
        if (v == 0)
          out.free_blocks += g.size;
        else if (v == kPublished)
          out.published += g.size;
        else if (cached.count(off))
          out.cached += g.size;
        else
          out.unpublished += g.size;
      }
      i += kSbPages;
    } else if (pm_is_large(w)) {
      std::uint64_t n = std::max<std::uint64_t>(pm_len(w), 1);
      (pm_tag(w) == kPublished ? out.published : out.unpublished) += n * kPageSize;
      i += n;
    } else {
      if (pm_kind(w) == kFree)
        out.free_pages += kPageSize;
      else
        out.unpublished += kPageSize;  // kPending (or a stray tail, a head with a
                                       // corrupt class: verify reports them)
      ++i;
    }
  }
  return out;
}

std::vector<std::string> verify_heap(HeapState& st) {
  std::vector<std::string> problems;
  auto report = [&problems](std::string s) {
    if (problems.size() < 50) problems.push_back(std::move(s));
  };
  std::uint64_t end = committed_pages(st);
  ensure_mapped(st, st.page_offset(end));
  TagSet attached;
  for (unsigned s = 0; s < st.slot_count; ++s)
    if (st.slots[s].state.load(std::memory_order_acquire) == kSlotAttached)
      attached[tag_of(s)] = true;
  auto tag_ok = [&](std::uint8_t v) { return v == 0 || v == kPublished || attached[v]; };
  std::unordered_map<std::uint64_t, std::uint8_t> small_tags;  // block -> tag
  for (std::uint64_t i = 0; i < end;) {
    std::uint64_t w = st.pagemap[i].load(std::memory_order_acquire);
    if (pm_kind(w) == kHead) {
      std::uint64_t n = pm_len(w);
      if (n == 0 || i + n > end) {
        report(fmt::format("page {}: run of {} pages overruns {}", i, n, end));
        ++i;
        continue;
      }
      for (std::uint64_t k = 1; k < n; ++k)
        if (st.pagemap[i + k].load(std::memory_order_relaxed) != kTail)
          report(fmt::format("page {}: tail {} of run at {} is not a tail", i + k, k, i));
      if (pm_is_sb(w)) {
        Superblock* sb = st.sb_at(i);
        unsigned cls = pm_class(w);
        if (i % kSbPages != 0 || cls >= kClasses || sb->cls != cls ||
            sb->block_size != kSbGeom[cls].size || sb->nblocks != kSbGeom[cls].nblocks ||
            sb->first != kSbGeom[cls].first || sb->reciprocal != kSbGeom[cls].reciprocal) {
          report(fmt::format("page {}: superblock header does not match class {}", i, cls));
        } else {
          const SbGeom& g = kSbGeom[cls];  // A3
          std::uint8_t h = pm_tag(w);
          if (h != 0 && !attached[h])
            report(fmt::format("superblock at page {} held by unattached slot {}", i, h - 1));
          std::uint64_t block0 = st.page_offset(i) + g.first;
          for (std::uint32_t idx = 0; idx < g.nblocks; ++idx) {
            std::uint8_t v = byte_at(sb->owner[idx >> 3].load(std::memory_order_relaxed), idx & 7);
            if (!tag_ok(v))
              report(fmt::format("block {:#x} tagged with unattached slot {}",
                                 block0 + std::uint64_t{idx} * g.size, v - 1));
            small_tags[block0 + std::uint64_t{idx} * g.size] = v;
          }
        }
      } else if (!tag_ok(pm_tag(w))) {
        report(fmt::format("run at page {} tagged with unattached slot {}", i, pm_tag(w) - 1));
      }
      i += n;
    } else {
      if (pm_kind(w) == kTail) report(fmt::format("page {}: tail without a head", i));
      if (pm_kind(w) == kPending && !attached[pm_tag(w)])
        report(fmt::format("page {}: pending for unattached slot {}", i, pm_tag(w) - 1));
      ++i;
    }
  }
  std::unordered_set<std::uint64_t> seen;
  for (unsigned s = 0; s < st.slot_count; ++s) {
    const Slot& slot = st.slots[s];
    if (slot.state.load(std::memory_order_acquire) != kSlotAttached) continue;
    for (unsigned cls = 0; cls < kClasses; ++cls) {
      const SlotCache& c = slot.cache[cls];
      if (c.n > cache_cap(cls)) {
        report(fmt::format("slot {} class {}: cache holds {} > {}", s, cls, c.n, cache_cap(cls)));
        continue;
      }
      for (std::uint32_t m = 0; m < c.n; ++m) {
        std::uint64_t off = std::uint64_t{c.e[m]} << 4;
        auto it = small_tags.find(off);
        if (it == small_tags.end())
          report(fmt::format("slot {} caches {:#x}, which is not a block", s, off));
        else if (it->second != tag_of(s))
          report(fmt::format("slot {} caches {:#x}, tagged {}", s, off, it->second));
        if (!seen.insert(off).second) report(fmt::format("block {:#x} is cached twice", off));
      }
    }
  }
  return problems;
}

}  // namespace troupe::shm::detail
