// troupe/shm/heap.hpp: a heap in shared memory that unrelated processes map,
// allocate from and free into, and that survives any of them being killed.
//
// Owns: troupe::shm::Heap (a segment, its process slots and its allocator),
// Offset (a 64-bit handle: bytes from the start of the segment, 0 = null),
// the create/open options and the inspection types.
//
// Model. Each process maps the segment wherever it likes; shared data holds
// Offsets, never pointers (ptr() translates). Each thread that allocates takes
// a process slot, whose liveness the kernel tracks (an OFD lock on the segment
// file, released when the process dies, whatever its PID becomes). A block is
// the responsibility of the slot that allocated it until it is published
// (publish(), or by a layer above linking it into shared data); when a process
// dies or closes the heap, every block its slots held and had not published is
// freed by whoever recovers the slots (recover(), also run on open, on slot
// claim and before reporting out_of_memory). Once a process installed a
// recovery hook (set_recovery_hook: a layer above, e.g. transactions), a
// process without one leaves dead slots to one with it, unless it needs
// them (no other slot free, the heap full): src/shm/slots.cpp S2.
// Invariants:
//   H1. Every Offset handed out is inside the committed data area and 16-byte
//       aligned; free/publish/usable_size reject any other with an Error.
//   H2. A Heap object is used by one process: after fork() the child opens the
//       heap again (by name, or open_fd(fd)) instead of using the parent's
//       object, and leaves through _exit() or after closing its own.
//   H3. close() (or the destructor) must not race with other threads of the
//       same process still using this Heap object.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "troupe/error.hpp"

namespace troupe::shm {

using Offset = std::uint64_t;
inline constexpr Offset null_offset = 0;

namespace detail {
struct HeapState;
}

struct CreateOptions {
  // Segment name: "" picks an unguessable one ("/troupe.<128 random bits>").
  // A name without a second '/' is a POSIX shm name (/dev/shm); a path in
  // `directory` is used when that is set.
  std::string name;
  // Create the file in this directory (e.g. a tmpfs mount) instead of /dev/shm.
  std::string directory;
  // memfd: no name at all; other processes get the fd (open_fd).
  bool anonymous = false;
  // Keep the segment when the last process leaves (remove() deletes it).
  bool keep = false;
  std::size_t initial_size = std::size_t{1} << 20;  // data bytes backed at create
  std::size_t max_size = std::size_t{1} << 30;      // data bytes it may grow to
  unsigned slots = 128;          // process slots (threads attached at once), <= 254
  void* address_hint = nullptr;  // map here if free (tests: different addresses)
};

struct OpenOptions {
  void* address_hint = nullptr;
};

// Who is responsible for a block (see layout.hpp, "Ownership tags").
struct Owner {
  enum Kind { free, slot, published } kind;
  unsigned slot_index;  // when kind == slot
};

struct SlotInfo {
  unsigned index;
  bool attached;  // its state word says attached
  bool alive;     // a process holds its kernel lock (or it is ours)
  bool ours;      // held by this Heap object
  int pid;        // informational: PIDs are reused
  std::uint64_t generation;
};

struct RecoveryReport {
  std::vector<unsigned> slots;   // dead slots recovered
  std::size_t blocks_freed = 0;  // small blocks returned
  std::size_t pages_freed = 0;   // pages of large runs / half-built runs returned
};

// Byte accounting of the data area. Exact only while no thread allocates or
// frees (the test harness calls it at quiescence).
struct Stats {
  std::size_t committed = 0;    // data bytes backed by the file
  std::size_t free_pages = 0;   // bytes in free pages
  std::size_t free_blocks = 0;  // bytes in tag-0 small blocks
  std::size_t cached = 0;       // bytes in slot caches (free, reserved by a slot)
  std::size_t published = 0;    // bytes in published blocks and runs
  std::size_t unpublished = 0;  // bytes allocated by a slot and not published
  std::size_t overhead = 0;     // superblock headers and tails
  std::size_t superblocks = 0;
  std::size_t free_bytes() const { return free_pages + free_blocks + cached; }
  std::size_t live_bytes() const { return published + unpublished; }
};

struct StaleHeap {
  std::string name;        // path of the segment file
  std::uint64_t bytes;     // file size
  std::uint32_t attached;  // processes that were attached when they died
};

class Heap {
 public:
  static Heap create(const CreateOptions& options = {});
  static Heap open(std::string_view name, const OpenOptions& options = {});
  // Opens the heap behind fd (e.g. received over a Unix socket). The fd is not
  // taken: the heap reopens the file through /proc/self/fd, so that this
  // process's slot locks belong to its own open file description.
  static Heap open_fd(int fd, const OpenOptions& options = {});

  Heap() = default;
  Heap(Heap&&) noexcept;
  Heap& operator=(Heap&&) noexcept;
  ~Heap();
  // Frees what this process's slots hold unpublished, releases the slots and,
  // if this was the last process and the heap is not kept, removes the name.
  void close();
  explicit operator bool() const { return state_ != nullptr; }

  // ---- allocation (any thread; the first call of a thread takes a slot) ----
  Offset allocate(std::size_t bytes);  // throws Error(out_of_memory)
  void free(Offset block);             // throws Error(invalid_argument) on bad input
  std::size_t usable_size(Offset block) const;
  void publish(Offset block);    // shared data now owns it: survives our death
  void unpublish(Offset block);  // take it back: freed if we die before free()
  Owner owner(Offset block) const;

  // Translates an offset into this process's mapping (null for null_offset);
  // the whole reservation is mapped, so growth by other processes is seen
  // without remapping; an offset past the committed size throws.
  void* ptr(Offset off) const {
    // Acquire: pairs with the release that raised the bound after its raiser
    // saw the pages committed (backed by the file).
    if (off < mapped_->load(std::memory_order_acquire) && off != 0) [[likely]]
      return base_ + off;
    return ptr_slow(off);
  }
  template <class T>
  T* ptr(Offset off) const {
    return static_cast<T*>(ptr(off));
  }
  Offset offset_of(const void* p) const;

  // ---- named roots (64 names of <= 47 bytes) ----
  Offset root(std::string_view name) const;  // null_offset if absent
  void set_root(std::string_view name, Offset value);
  bool compare_exchange_root(std::string_view name, Offset& expected, Offset desired);
  bool remove_root(std::string_view name);

  // ---- recovery and maintenance ----
  RecoveryReport recover();    // recover every dead slot now
  std::size_t trim();          // retire empty superblocks; returns bytes freed
  void flush_thread_cache();   // return this thread's cached blocks
  void release_thread_slot();  // flush and hand this thread's slot back
  std::vector<SlotInfo> slots() const;
  Stats stats() const;
  // Structural check at quiescence: returns problems found (empty = sound).
  std::vector<std::string> verify() const;
  // Called by the survivor for each dead slot before its blocks are freed,
  // with the slot's user words (for layers above: transaction logs, epochs).
  // It runs on the recovering thread under this Heap's process-local recovery
  // lock (recursive): it may allocate, free and publish (a thread with no
  // slot yet takes another slot than those being recovered); the dead slot's
  // unpublished blocks are still tagged when it runs and freed right after.
  using RecoveryHook =
      std::function<void(Heap&, unsigned slot, std::span<std::atomic<std::uint64_t>> user_words)>;
  void set_recovery_hook(RecoveryHook hook);
  // The user words of the calling thread's slot (takes a slot if needed).
  std::span<std::atomic<std::uint64_t>> slot_words();
  unsigned slot_index();  // the calling thread's slot (takes one if needed)

  int fd() const;
  const std::string& name() const;
  std::size_t committed_bytes() const;
  // Unique per opened Heap in this process and never reused, even when a
  // heap of the same name is mapped at the same address later: a key for
  // caches of what lies in this heap.
  std::uint64_t instance() const;
  std::size_t max_size() const;
  void* base() const;
  void set_keep(bool keep);
  // Space for layers above in the header (32 words, zero at create).
  std::span<std::atomic<std::uint64_t>> header_words() const;

  // ---- segments by name ----
  static void remove(std::string_view name);
  // Heaps in `directory` (troupe.* files) that no process has attached any
  // more and whose last processes died without detaching (or that were never
  // finished by their creator).
  static std::vector<StaleHeap> list_stale(std::string_view directory = "/dev/shm");
  static std::vector<StaleHeap> remove_stale(std::string_view directory = "/dev/shm");

 private:
  explicit Heap(std::unique_ptr<detail::HeapState> s);
  void* ptr_slow(Offset off) const;
  std::unique_ptr<detail::HeapState> state_;
  // Copies of state_->base and &state_->mapped for the inline ptr(); a closed
  // heap points mapped_ at a zero, so ptr() goes to ptr_slow() and throws.
  char* base_ = nullptr;
  const std::atomic<std::size_t>* mapped_ = &kUnmapped;
  static inline const std::atomic<std::size_t> kUnmapped{0};
};

}  // namespace troupe::shm
