// src/shm/heap.cpp: segments (create, open, map, grow, close, stale removal),
// process slots and their liveness, named roots, and the public Heap.
//
// Liveness. Lock bytes on the segment file, taken with fcntl F_OFD_SETLK
// (open-file-description locks: the kernel drops them when the last fd of the
// description closes, i.e. when the process dies, whatever PID it had):
//   byte 0      read-locked by every attached process, write-locked by a
//               creator while it initialises, and by whoever removes the name
//   byte 1 + i  write-locked by the process that holds slot i
// Invariants:
//   S1. A slot's state is kSlotAttached only while someone holds, or held
//       until it died, lock byte 1 + i. Whoever takes the lock of an attached
//       slot owns its recovery (recover_tags) before reusing or freeing it.
//   S2. Every Heap object opens its own open file description (open, or reopen
//       through /proc/self/fd), so two Heap objects never share locks.
//   S3. The name is removed only by a holder of the write lock on byte 0,
//       which first sets kFlagUnlinked; an opener that gets its read lock
//       afterwards sees the flag and fails with not_found.
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <unordered_map>

#include "shm/fault.hpp"
#include "shm/heap_state.hpp"

namespace troupe::shm {
namespace detail {
namespace {

std::string random_hex(std::size_t bytes) {
  unsigned char buf[32];
  std::size_t got = 0;
  while (got < bytes) {
    ssize_t r = ::getrandom(buf + got, bytes - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw errno_error(Errc::system, errno, "getrandom");
    }
    got += static_cast<std::size_t>(r);
  }
  std::string out;
  for (std::size_t i = 0; i < bytes; ++i) out += fmt::format("{:02x}", buf[i]);
  return out;
}

// ---- process-local registry: which HeapStates are open (thread exit) --------
std::mutex g_registry_mu;
std::unordered_map<std::uint64_t, HeapState*> g_registry;
std::atomic<std::uint64_t> g_serial{1};

// Threads' slots, handed back to their heap's idle pool when the thread exits.
struct ThreadSlots {
  std::vector<ThreadBinding> entries;
  ~ThreadSlots() {
    std::lock_guard<std::mutex> reg(g_registry_mu);
    for (auto& e : entries) {
      auto it = g_registry.find(e.serial);
      if (it == g_registry.end()) continue;
      std::lock_guard<std::recursive_mutex> lk(it->second->mu);
      it->second->idle_slots.push_back(e.slot);
    }
  }
};
thread_local ThreadSlots tls_slots;

bool is_path_name(std::string_view name) {
  return name.size() > 1 && name.find('/', 1) != std::string_view::npos;
}

template <class T>
T field(const unsigned char* buf, std::size_t off) {
  T v;
  std::memcpy(&v, buf + off, sizeof v);
  return v;
}

#define TROUPE_FIELD(buf, T, member) field<T>(buf, offsetof(Header, member))

// Checks a header read with pread (never through a mapping, so a truncated
// file cannot SIGBUS us). Throws the error that names what is wrong (I5).
void validate_header(const unsigned char* buf, std::uint64_t file_size, const std::string& name) {
  if (std::memcmp(buf, kMagic, sizeof kMagic) != 0) {
    bool zero = true;
    for (std::size_t i = 0; i < sizeof kMagic; ++i) zero = zero && buf[i] == 0;
    throw Error(Errc::bad_segment,
                zero ? fmt::format("heap '{}' was never initialised (its creator died while "
                                   "creating it)",
                                   name)
                     : fmt::format("'{}' is not a troupe heap: wrong magic", name));
  }
  auto version = TROUPE_FIELD(buf, std::uint32_t, layout_version);
  if (version != kLayoutVersion)
    throw Error(
        Errc::version_mismatch,
        fmt::format("heap '{}' has layout version {}, this build of troupe reads version {}", name,
                    version, kLayoutVersion));
  auto abi = TROUPE_FIELD(buf, std::uint64_t, abi);
  auto hbytes = TROUPE_FIELD(buf, std::uint32_t, header_bytes);
  if (abi != abi_fingerprint() || hbytes != sizeof(Header))
    throw Error(Errc::version_mismatch,
                fmt::format("heap '{}' was built with an incompatible ABI (fingerprint {:#x}, "
                            "header {} bytes; this build: {:#x}, {} bytes)",
                            name, abi, hbytes, abi_fingerprint(), sizeof(Header)));
  auto slots = TROUPE_FIELD(buf, std::uint64_t, slot_count);
  auto max_size = TROUPE_FIELD(buf, std::uint64_t, max_size);
  if (slots == 0 || slots > kMaxSlots || max_size == 0 || max_size % kSbSize != 0 ||
      max_size > (std::uint64_t{32} << 30))
    throw Error(Errc::bad_segment,
                fmt::format("heap '{}' has a corrupt header: {} slots, max size {}", name, slots,
                            max_size));
  Geometry g = geometry(slots, max_size);
  if (TROUPE_FIELD(buf, std::uint64_t, slots_off) != g.slots_off ||
      TROUPE_FIELD(buf, std::uint64_t, pagemap_off) != g.pagemap_off ||
      TROUPE_FIELD(buf, std::uint64_t, data_off) != g.data_off ||
      TROUPE_FIELD(buf, std::uint64_t, max_pages) != g.max_pages)
    throw Error(Errc::bad_segment,
                fmt::format("heap '{}' has a corrupt header: its layout offsets do not follow "
                            "from {} slots and max size {}",
                            name, slots, max_size));
  auto committed = TROUPE_FIELD(buf, std::uint64_t, committed_pages);
  if (committed > g.max_pages)
    throw Error(Errc::bad_segment,
                fmt::format("heap '{}' has a corrupt header: {} pages committed, "
                            "at most {} allowed",
                            name, committed, g.max_pages));
  std::uint64_t need = g.data_off + committed * kPageSize;
  if (file_size < need)
    throw Error(Errc::bad_segment,
                fmt::format("heap '{}' is truncated: its header says {} bytes, the file has {}",
                            name, need, file_size));
}

void lock_wait(int fd, std::uint64_t byte, short type) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(byte);
  fl.l_len = 1;
  while (::fcntl(fd, F_OFD_SETLKW, &fl) != 0) {
    if (errno != EINTR) throw errno_error(Errc::system, errno, "fcntl(F_OFD_SETLKW)");
  }
}

std::unique_ptr<HeapState> map_heap(int fd, std::string name, bool is_path, bool anonymous) {
  auto st = std::make_unique<HeapState>();
  st->fd = fd;
  st->name = std::move(name);
  st->is_path = is_path;
  st->anonymous = anonymous;
  return st;
}

// Reserves the address range and maps the header, slots and page map plus
// the committed data. Reads geometry from `buf` (already validated).
void map_segment(HeapState& st, const unsigned char* buf, void* hint) {
  std::uint64_t max_size = TROUPE_FIELD(buf, std::uint64_t, max_size);
  std::uint64_t slots = TROUPE_FIELD(buf, std::uint64_t, slot_count);
  Geometry g = geometry(slots, max_size);
  st.reserved = g.data_off + max_size;
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  void* r = MAP_FAILED;
  if (hint) r = ::mmap(hint, st.reserved, PROT_NONE, flags | MAP_FIXED_NOREPLACE, -1, 0);
  if (r == MAP_FAILED) r = ::mmap(nullptr, st.reserved, PROT_NONE, flags, -1, 0);
  if (r == MAP_FAILED)
    throw errno_error(Errc::out_of_memory, errno, "cannot reserve address space for heap");
  st.base = static_cast<char*>(r);
  // P1: the file over the whole reservation, so growth needs no remap and a
  // run that starts below what we knew was committed is mapped to its end.
  // Pages past the end of the file are never touched: offsets handed out lie
  // in committed pages, which posix_fallocate backed first (grow).
  if (::mmap(st.base, st.reserved, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, st.fd, 0) ==
      MAP_FAILED) {
    int e = errno;
    ::munmap(st.base, st.reserved);
    st.base = nullptr;
    throw errno_error(Errc::system, e, "cannot map heap");
  }
  std::uint64_t committed = TROUPE_FIELD(buf, std::uint64_t, committed_pages);
  // Relaxed: nobody else sees st yet.
  st.mapped.store(g.data_off + committed * kPageSize, std::memory_order_relaxed);  // P1
  st.hdr = reinterpret_cast<Header*>(st.base);
  st.slots = reinterpret_cast<Slot*>(st.base + g.slots_off);
  st.pagemap = reinterpret_cast<std::atomic<std::uint64_t>*>(st.base + g.pagemap_off);
  st.data_off = g.data_off;
  st.max_pages = g.max_pages;
  st.slot_count = static_cast<std::uint32_t>(slots);
}

void register_state(HeapState& st) {
  st.serial = g_serial.fetch_add(1, std::memory_order_relaxed);  // unique is all we need
  std::lock_guard<std::mutex> reg(g_registry_mu);
  g_registry[st.serial] = &st;
}

// Opens an already created segment on a fresh open file description (S2).
std::unique_ptr<HeapState> attach(int fd, std::string name, bool is_path, bool anonymous,
                                  void* hint) {
  auto st = map_heap(fd, std::move(name), is_path, anonymous);
  std::vector<unsigned char> buf(sizeof(Header));
  for (int attempt = 0;; ++attempt) {
    lock_wait(fd, 0, F_RDLCK);
    struct stat sb {};
    if (::fstat(fd, &sb) != 0) {
      int e = errno;
      ::close(fd);
      throw errno_error(Errc::system, e, "fstat");
    }
    std::uint64_t size = static_cast<std::uint64_t>(sb.st_size);
    bool fresh = size == 0;
    if (!fresh && size >= sizeof(Header)) {
      if (::pread(fd, buf.data(), buf.size(), 0) != static_cast<ssize_t>(buf.size())) {
        int e = errno;
        ::close(fd);
        throw errno_error(Errc::system, e, "pread");
      }
      fresh = std::all_of(buf.begin(), buf.begin() + 8, [](unsigned char c) { return c == 0; });
    }
    // A creator between its O_EXCL open and its lock: give it a moment.
    if (fresh && attempt < 20) {
      unlock_byte(fd, 0);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    try {
      if (size < sizeof(Header))
        throw Error(Errc::bad_segment,
                    fmt::format("heap '{}' is truncated: the file has {} bytes, a heap header "
                                "needs {}",
                                st->name, size, sizeof(Header)));
      validate_header(buf.data(), size, st->name);
      if (TROUPE_FIELD(buf.data(), std::uint32_t, flags) & kFlagUnlinked)
        throw Error(Errc::not_found,
                    fmt::format("heap '{}' was removed by its last process", st->name));
      map_segment(*st, buf.data(), hint);
    } catch (...) {
      ::close(fd);
      st->fd = -1;
      throw;
    }
    break;
  }
  // Relaxed: a counter only compared with the lock state by list_stale.
  st->hdr->attached.fetch_add(1, std::memory_order_relaxed);
  register_state(*st);
  return st;
}

}  // namespace

// TROUPE_TLS_HOT (heap_state.hpp): initial-exec unless built to be dlopen()ed.
TROUPE_TLS_HOT thread_local ThreadBinding tls_binding{0, 0};

bool try_lock_byte(int fd, std::uint64_t byte, short type) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(byte);
  fl.l_len = 1;
  for (;;) {
    if (::fcntl(fd, F_OFD_SETLK, &fl) == 0) return true;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EACCES) return false;
    throw errno_error(Errc::system, errno, "fcntl(F_OFD_SETLK)");
  }
}

void unlock_byte(int fd, std::uint64_t byte) {
  struct flock fl {};
  fl.l_type = F_UNLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(byte);
  fl.l_len = 1;
  ::fcntl(fd, F_OFD_SETLK, &fl);
}

void ensure_mapped(HeapState& st, std::uint64_t end) {
  // Acquire: pairs with the release CAS below: the pages under the bound
  // were seen committed (backed by the file) by whoever raised it.
  std::uint64_t cur = st.mapped.load(std::memory_order_acquire);
  if (end <= cur) return;
  // Acquire: pairs with the grower's release CAS: the pages are backed.
  std::uint64_t want =
      st.data_off + st.hdr->committed_pages.load(std::memory_order_acquire) * kPageSize;
  if (end > want)
    throw Error(Errc::invalid_argument,
                fmt::format("offset {:#x} is beyond the committed size {} of heap '{}'", end - 1,
                            want, st.name));
  // P1: raise the bound, never lower it (committed_pages only grows, and the
  // whole reservation is already mapped, so there is nothing to map).
  while (cur < want && !st.mapped.compare_exchange_weak(cur, want, std::memory_order_release,
                                                        std::memory_order_relaxed)) {
  }
}

namespace {

// Takes a slot for this Heap object: an idle one of ours, or a free (or dead,
// after recovering it) slot whose kernel lock we win (S1).
unsigned acquire_slot(HeapState& st) {
  for (int round = 0; round < 2; ++round) {
    {
      std::lock_guard<std::recursive_mutex> lk(st.mu);  // P3
      if (!st.idle_slots.empty()) {
        unsigned s = st.idle_slots.back();
        st.idle_slots.pop_back();
        return s;
      }
      for (unsigned i = 0; i < st.slot_count; ++i) {
        if (st.own[i].load(std::memory_order_relaxed)) continue;  // under mu
        if (st.recovering[i]) continue;                           // P4: an outer frame recovers it
        if (!try_lock_byte(st.fd, 1 + i, F_WRLCK)) continue;
        Slot& slot = st.slots[i];
        // Acquire: pairs with the release store of the state by the last
        // owner (or its recoverer).
        if (slot.state.load(std::memory_order_acquire) == kSlotAttached) {
          TagSet dead;
          dead[i + 1] = true;
          RecoveryReport rep;
          st.recovering[i] = true;  // P4: the hook may allocate
          try {
            if (st.hook) {
              std::span<std::atomic<std::uint64_t>> words(slot.user, kSlotUserWords);
              st.hook(*st.hook_heap, i, words);
            }
            recover_tags(st, dead, rep);
          } catch (...) {
            st.recovering[i] = false;
            unlock_byte(st.fd, 1 + i);  // still attached: recovered later (S1)
            throw;
          }
          st.recovering[i] = false;
        }
        for (auto& w : slot.user) w.store(0, std::memory_order_relaxed);  // ours now
        slot.pid.store(::getpid(), std::memory_order_relaxed);            // informational
        slot.generation.fetch_add(1, std::memory_order_relaxed);
        // Release: our slot's fields are initialised before it reads attached.
        slot.state.store(kSlotAttached, std::memory_order_release);
        st.own[i].store(true, std::memory_order_relaxed);
        return i;
      }
    }
    if (recover_dead(st).slots.empty()) break;
  }
  throw Error(Errc::out_of_memory,
              fmt::format("heap '{}': all {} process slots are held by live threads", st.name,
                          st.slot_count));
}

}  // namespace

unsigned thread_slot_slow(HeapState& st) {
  for (auto& e : tls_slots.entries) {
    if (e.serial == st.serial) {
      tls_binding = e;
      return e.slot;
    }
  }
  unsigned s = acquire_slot(st);
  for (auto& e : tls_slots.entries) {
    if (e.serial == st.serial) {
      // A recovery hook run by acquire_slot allocated, which bound this
      // thread to another slot (P4): keep that one, and s for later.
      std::lock_guard<std::recursive_mutex> lk(st.mu);
      st.idle_slots.push_back(s);
      tls_binding = e;
      return e.slot;
    }
  }
  tls_slots.entries.push_back({st.serial, s});
  tls_binding = {st.serial, s};
  return s;
}

RecoveryReport recover_dead(HeapState& st) {
  RecoveryReport rep;
  std::lock_guard<std::recursive_mutex> lk(st.mu);  // P3
  TagSet dead;
  for (unsigned i = 0; i < st.slot_count; ++i) {
    if (st.own[i].load(std::memory_order_relaxed)) continue;
    if (st.recovering[i]) continue;  // P4: an outer frame recovers it
    // Acquire: see acquire_slot.
    if (st.slots[i].state.load(std::memory_order_acquire) != kSlotAttached) continue;
    if (!try_lock_byte(st.fd, 1 + i, F_WRLCK)) continue;  // alive
    if (st.slots[i].state.load(std::memory_order_acquire) != kSlotAttached) {
      unlock_byte(st.fd, 1 + i);  // someone recovered it meanwhile
      continue;
    }
    dead[i + 1] = true;
    rep.slots.push_back(i);
  }
  if (rep.slots.empty()) return rep;
  // P4: the hook may allocate, and so claim a slot for this thread, or
  // recover (out of memory): neither may take the slots we are recovering.
  for (unsigned i : rep.slots) st.recovering[i] = true;
  try {
    for (unsigned i : rep.slots) {
      if (!st.hook) break;
      std::span<std::atomic<std::uint64_t>> words(st.slots[i].user, kSlotUserWords);
      st.hook(*st.hook_heap, i, words);
    }
    recover_tags(st, dead, rep);
  } catch (...) {
    for (unsigned i : rep.slots) {
      st.recovering[i] = false;
      unlock_byte(st.fd, 1 + i);  // still attached: recovered later (S1)
    }
    throw;
  }
  for (unsigned i : rep.slots) {
    st.recovering[i] = false;
    // Release: the recovery's writes happen before the slot reads free (S1).
    st.slots[i].state.store(kSlotFree, std::memory_order_release);
    unlock_byte(st.fd, 1 + i);
  }
  return rep;
}

}  // namespace detail

using namespace detail;

// ---- Heap: create / open / close -------------------------------------------------

Heap::Heap(std::unique_ptr<detail::HeapState> s)
    : state_(std::move(s)), base_(state_->base), mapped_(&state_->mapped) {}
Heap::Heap(Heap&& o) noexcept : state_(std::move(o.state_)), base_(o.base_), mapped_(o.mapped_) {
  o.base_ = nullptr;
  o.mapped_ = &kUnmapped;
  if (state_) state_->hook_heap = this;
}
Heap& Heap::operator=(Heap&& o) noexcept {
  if (this != &o) {
    close();
    state_ = std::move(o.state_);
    base_ = o.base_;
    mapped_ = o.mapped_;
    o.base_ = nullptr;
    o.mapped_ = &kUnmapped;
    if (state_) state_->hook_heap = this;
  }
  return *this;
}
Heap::~Heap() { close(); }

Heap Heap::create(const CreateOptions& o) {
  if (o.slots == 0 || o.slots > kMaxSlots)
    throw Error(Errc::invalid_argument,
                fmt::format("a heap has 1 to {} slots, not {}", kMaxSlots, o.slots));
  std::uint64_t max_size = round_up(o.max_size, kSbSize);
  if (max_size > (std::uint64_t{32} << 30))
    throw Error(Errc::invalid_argument, fmt::format("max_size {} is above 32 GiB", o.max_size));
  std::uint64_t initial = std::min<std::uint64_t>(
      round_up(std::max<std::size_t>(o.initial_size, 1), kSbSize), max_size);
  std::string name;
  bool is_path = false;
  int fd = -1;
  if (o.anonymous) {
    fd = ::memfd_create("troupe-heap", MFD_CLOEXEC);
    if (fd < 0) throw errno_error(errno, "memfd_create");
  } else if (!o.directory.empty()) {
    std::string base = o.name.empty() ? "troupe." + random_hex(16) : o.name;
    while (!base.empty() && base.front() == '/') base.erase(0, 1);
    name = o.directory + "/" + base;
    is_path = true;
    fd = ::open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) throw errno_error(errno, fmt::format("cannot create heap '{}'", name));
  } else {
    name = o.name.empty() ? "/troupe." + random_hex(16) : o.name;
    if (name.front() != '/') name.insert(name.begin(), '/');
    if (is_path_name(name))
      throw Error(Errc::invalid_argument,
                  fmt::format("heap name '{}' may not contain '/' (use directory)", name));
    fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) throw errno_error(errno, fmt::format("cannot create heap '{}'", name));
  }
  auto remove_name = [&] {
    if (is_path)
      ::unlink(name.c_str());
    else if (!o.anonymous)
      ::shm_unlink(name.c_str());
  };
  std::unique_ptr<HeapState> st;
  try {
    ::fchmod(fd, 0600);         // exactly 0600, whatever the umask did
    lock_wait(fd, 0, F_WRLCK);  // I5: openers wait until the magic is written
    Geometry g = geometry(o.slots, max_size);
    int r = ::posix_fallocate(fd, 0, static_cast<off_t>(g.data_off + initial));
    if (r != 0)
      throw errno_error(r, fmt::format("cannot reserve {} bytes for heap '{}': posix_fallocate",
                                       g.data_off + initial, name));
    st = map_heap(fd, name, is_path, o.anonymous);
    std::vector<unsigned char> buf(sizeof(Header), 0);
    auto put = [&buf](std::size_t off, auto v) { std::memcpy(buf.data() + off, &v, sizeof v); };
    put(offsetof(Header, max_size), max_size);
    put(offsetof(Header, slot_count), std::uint64_t{o.slots});
    put(offsetof(Header, committed_pages), initial / kPageSize);
    map_segment(*st, buf.data(), o.address_hint);
    Header* h = st->hdr;
    h->layout_version = kLayoutVersion;
    h->header_bytes = sizeof(Header);
    h->abi = abi_fingerprint();
    h->max_size = max_size;
    h->slot_count = o.slots;
    h->slots_off = g.slots_off;
    h->pagemap_off = g.pagemap_off;
    h->data_off = g.data_off;
    h->max_pages = g.max_pages;
    h->create_time = static_cast<std::uint64_t>(::time(nullptr));
    // Relaxed: the segment is private to us until the magic is written and
    // the write lock released (I5); the lock orders these for openers.
    h->committed_pages.store(initial / kPageSize, std::memory_order_relaxed);
    h->attached.store(1, std::memory_order_relaxed);
    h->flags.store(o.keep ? std::uint32_t{kFlagKeep} : 0u, std::memory_order_relaxed);
    std::memcpy(h->magic, kMagic, sizeof kMagic);
    // Downgrade to the attached read lock (atomic in the kernel).
    lock_wait(fd, 0, F_RDLCK);
  } catch (...) {
    if (st) {
      if (st->base) ::munmap(st->base, st->reserved);
      st->fd = -1;
    }
    remove_name();
    ::close(fd);
    throw;
  }
  register_state(*st);
  Heap heap(std::move(st));
  heap.state_->hook_heap = &heap;
  return heap;
}

Heap Heap::open(std::string_view name_in, const OpenOptions& o) {
  std::string name(name_in);
  if (name.empty()) throw Error(Errc::invalid_argument, "empty heap name");
  bool is_path = is_path_name(name);
  if (!is_path && name.front() != '/') name.insert(name.begin(), '/');
  int fd = is_path ? ::open(name.c_str(), O_RDWR | O_CLOEXEC) : ::shm_open(name.c_str(), O_RDWR, 0);
  if (fd < 0) {
    int e = errno;
    if (e == EACCES)
      throw Error(Errc::permission_denied,
                  fmt::format("cannot open heap '{}': permission denied (it belongs to another "
                              "user, mode 0600)",
                              name));
    throw errno_error(e, fmt::format("cannot open heap '{}'", name));
  }
  Heap heap(attach(fd, name, is_path, false, o.address_hint));
  heap.state_->hook_heap = &heap;
  heap.recover();  // a survivor recovers what the dead left
  return heap;
}

Heap Heap::open_fd(int fd, const OpenOptions& o) {
  std::string proc = fmt::format("/proc/self/fd/{}", fd);
  char link[512];
  ssize_t n = ::readlink(proc.c_str(), link, sizeof link - 1);
  if (n < 0) throw errno_error(Errc::invalid_argument, errno, fmt::format("fd {} is not open", fd));
  std::string target(link, static_cast<std::size_t>(n));
  int own = ::open(proc.c_str(), O_RDWR | O_CLOEXEC);  // S2: our own description
  if (own < 0) {
    int e = errno;
    if (e == EACCES)
      throw Error(Errc::permission_denied,
                  fmt::format("cannot open heap from fd {} ({}): permission denied (it belongs to "
                              "another user)",
                              fd, target));
    throw errno_error(e, fmt::format("cannot reopen fd {} ({})", fd, target));
  }
  bool anonymous = target.rfind("/memfd:", 0) == 0;
  bool deleted = target.size() > 10 && target.compare(target.size() - 10, 10, " (deleted)") == 0;
  Heap heap(attach(own, anonymous || deleted ? std::string() : target, !anonymous && !deleted,
                   anonymous || deleted, o.address_hint));
  if (heap.state_->name.empty()) heap.state_->name = target;
  heap.state_->hook_heap = &heap;
  heap.recover();
  return heap;
}

void Heap::close() {
  if (!state_) return;
  HeapState& st = *state_;
  {
    std::lock_guard<std::mutex> reg(g_registry_mu);
    g_registry.erase(st.serial);
  }
  if (st.base) {
    // Leaving is dying politely: everything our slots hold unpublished is
    // freed, and the slots are released (H3: no other thread uses us now).
    std::lock_guard<std::recursive_mutex> lk(st.mu);
    TagSet mine;
    std::vector<unsigned> ours;
    for (unsigned i = 0; i < st.slot_count; ++i)
      if (st.own[i].load(std::memory_order_relaxed)) {
        mine[i + 1] = true;
        ours.push_back(i);
      }
    if (!ours.empty()) {
      RecoveryReport rep;
      try {
        recover_tags(st, mine, rep);
      } catch (...) {
      }
      for (unsigned i : ours) {
        st.slots[i].state.store(kSlotFree, std::memory_order_release);  // see recover_dead
        st.own[i].store(false, std::memory_order_relaxed);
        unlock_byte(st.fd, 1 + i);
      }
    }
    // Relaxed: see attach.
    st.hdr->attached.fetch_sub(1, std::memory_order_relaxed);
    unlock_byte(st.fd, 0);
    if (try_lock_byte(st.fd, 0, F_WRLCK)) {
      // Nobody else is attached (S3).
      if (!st.anonymous && !(st.hdr->flags.load(std::memory_order_relaxed) & kFlagKeep)) {
        st.hdr->flags.fetch_or(kFlagUnlinked, std::memory_order_relaxed);  // under the lock
        if (st.is_path)
          ::unlink(st.name.c_str());
        else
          ::shm_unlink(st.name.c_str());
      }
      unlock_byte(st.fd, 0);
    }
    ::munmap(st.base, st.reserved);
    st.base = nullptr;
  }
  if (st.fd >= 0) ::close(st.fd);
  if (tls_binding.serial == st.serial) tls_binding = {0, 0};
  state_.reset();
  base_ = nullptr;
  mapped_ = &kUnmapped;
}

// ---- allocation ---------------------------------------------------------------

static HeapState& need(const std::unique_ptr<HeapState>& s) {
  if (!s) throw Error(Errc::invalid_argument, "use of a closed troupe::shm::Heap");
  return *s;
}

Offset Heap::allocate(std::size_t bytes) { return detail::allocate(need(state_), bytes); }
void Heap::free(Offset block) { detail::free_block(need(state_), block); }
std::size_t Heap::usable_size(Offset block) const {
  return detail::usable_size(need(state_), block);
}
void Heap::publish(Offset block) { detail::publish(need(state_), block, true); }
void Heap::unpublish(Offset block) { detail::publish(need(state_), block, false); }
Owner Heap::owner(Offset block) const { return detail::owner_of(need(state_), block); }

void* Heap::ptr_slow(Offset off) const {
  HeapState& st = need(state_);
  if (off == 0) return nullptr;
  ensure_mapped(st, off + 1);  // throws if beyond the committed size
  return st.base + off;
}

Offset Heap::offset_of(const void* p) const {
  HeapState& st = need(state_);
  if (p == nullptr) return 0;
  auto c = static_cast<const char*>(p);
  if (c < st.base || c >= st.base + st.reserved)
    throw Error(Errc::invalid_argument,
                fmt::format("pointer {} is not inside heap '{}'", p, st.name));
  return static_cast<Offset>(c - st.base);
}

// ---- roots ------------------------------------------------------------------------

namespace {

struct RootLock {
  HeapState& st;
  explicit RootLock(HeapState& s) : st(s) {
    const std::uint32_t tag = thread_slot(st) + 1;
    std::uint32_t stuck = 0;  // checks in a row that saw an impossible holder
    for (int spins = 0;; ++spins) {
      std::uint32_t seen = 0;
      // Acquire/release: a lock; recovery releases a dead holder's (I2).
      if (st.hdr->root_lock.compare_exchange_weak(seen, tag, std::memory_order_acquire,
                                                  std::memory_order_relaxed))
        return;
      if (spins % 64 == 63) {
        recover_dead(st);
        // A holder is a slot that stays attached until it lets go (or its
        // recovery does). Anything else is corruption, or this thread again
        // (a recovery hook using roots): fail instead of spinning forever.
        // Relaxed/acquire: a diagnosis, repeated before it is trusted.
        seen = st.hdr->root_lock.load(std::memory_order_relaxed);
        bool impossible = seen == tag || seen > st.slot_count ||
                          (seen != 0 && st.slots[seen - 1].state.load(std::memory_order_acquire) !=
                                            kSlotAttached);
        stuck = impossible ? stuck + 1 : 0;
        if (stuck >= 16 || seen == tag || seen > st.slot_count)
          throw Error(Errc::bad_segment,
                      seen == tag ? fmt::format("heap '{}': this thread (slot {}) already holds "
                                                "the root lock",
                                                st.name, tag - 1)
                                  : fmt::format("heap '{}' is corrupt: its root lock names slot "
                                                "{}, which is not attached",
                                                st.name, seen - 1));
      }
      std::this_thread::yield();
    }
  }
  ~RootLock() { st.hdr->root_lock.store(0, std::memory_order_release); }
};

void check_root_name(std::string_view name) {
  if (name.empty() || name.size() > kRootName)
    throw Error(Errc::invalid_argument,
                fmt::format("root name '{}' must have 1 to {} bytes", name, kRootName));
}

RootEntry* find_root(HeapState& st, std::string_view name) {
  for (auto& r : st.hdr->roots)
    if (r.used.load(std::memory_order_relaxed) && name == r.name) return &r;  // under RootLock
  return nullptr;
}

}  // namespace

Offset Heap::root(std::string_view name) const {
  HeapState& st = need(state_);
  check_root_name(name);
  RootLock lk(st);
  RootEntry* r = find_root(st, name);
  // Acquire: pairs with the release store in set_root: the object is visible.
  return r ? r->value.load(std::memory_order_acquire) : 0;
}

void Heap::set_root(std::string_view name, Offset value) {
  HeapState& st = need(state_);
  check_root_name(name);
  RootLock lk(st);
  RootEntry* r = find_root(st, name);
  if (!r) {
    for (auto& e : st.hdr->roots)
      if (!e.used.load(std::memory_order_relaxed)) {
        r = &e;
        break;
      }
    if (!r)
      throw Error(Errc::out_of_memory,
                  fmt::format("heap '{}' has no free root entry for '{}' ({} in use)", st.name,
                              name, kRoots));
    std::memset(r->name, 0, sizeof r->name);
    std::memcpy(r->name, name.data(), name.size());
    r->used.store(1, std::memory_order_relaxed);  // under RootLock
  }
  r->value.store(value, std::memory_order_release);  // publishes the object
}

bool Heap::compare_exchange_root(std::string_view name, Offset& expected, Offset desired) {
  HeapState& st = need(state_);
  check_root_name(name);
  {
    RootLock lk(st);
    if (RootEntry* r = find_root(st, name))
      return r->value.compare_exchange_strong(expected, desired, std::memory_order_acq_rel);
  }
  if (expected != 0) {
    expected = 0;
    return false;
  }
  set_root(name, desired);
  return true;
}

bool Heap::remove_root(std::string_view name) {
  HeapState& st = need(state_);
  check_root_name(name);
  RootLock lk(st);
  RootEntry* r = find_root(st, name);
  if (!r) return false;
  r->value.store(0, std::memory_order_relaxed);
  r->used.store(0, std::memory_order_relaxed);  // under RootLock
  return true;
}

// ---- recovery and maintenance -------------------------------------------------------

RecoveryReport Heap::recover() { return recover_dead(need(state_)); }

std::size_t Heap::trim() {
  HeapState& st = need(state_);
  return retire_empty(st, static_cast<std::uint8_t>(thread_slot(st) + 1), true);
}

void Heap::flush_thread_cache() {
  HeapState& st = need(state_);
  flush_slot_caches(st, thread_slot(st));
}

void Heap::release_thread_slot() {
  HeapState& st = need(state_);
  auto& v = tls_slots.entries;
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (it->serial != st.serial) continue;
    unsigned s = it->slot;
    flush_slot_caches(st, s);
    v.erase(it);
    if (tls_binding.serial == st.serial) tls_binding = {0, 0};
    std::lock_guard<std::recursive_mutex> lk(st.mu);
    st.idle_slots.push_back(s);
    return;
  }
}

std::vector<SlotInfo> Heap::slots() const {
  HeapState& st = need(state_);
  std::vector<SlotInfo> out;
  for (unsigned i = 0; i < st.slot_count; ++i) {
    const Slot& s = st.slots[i];
    SlotInfo info{};
    info.index = i;
    // Acquire: see acquire_slot.
    info.attached = s.state.load(std::memory_order_acquire) == kSlotAttached;
    info.ours = st.own[i].load(std::memory_order_relaxed);
    info.pid = s.pid.load(std::memory_order_relaxed);
    info.generation = s.generation.load(std::memory_order_relaxed);
    if (info.ours) {
      info.alive = true;
    } else {
      struct flock fl {};
      fl.l_type = F_WRLCK;
      fl.l_whence = SEEK_SET;
      fl.l_start = static_cast<off_t>(1 + i);
      fl.l_len = 1;
      info.alive = ::fcntl(st.fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    }
    out.push_back(info);
  }
  return out;
}

Stats Heap::stats() const { return compute_stats(need(state_)); }
std::vector<std::string> Heap::verify() const { return verify_heap(need(state_)); }

void Heap::set_recovery_hook(RecoveryHook hook) {
  HeapState& st = need(state_);
  std::lock_guard<std::recursive_mutex> lk(st.mu);
  st.hook = std::move(hook);
  st.hook_heap = this;
}

std::span<std::atomic<std::uint64_t>> Heap::slot_words() {
  HeapState& st = need(state_);
  return {st.slots[thread_slot(st)].user, kSlotUserWords};
}
unsigned Heap::slot_index() { return thread_slot(need(state_)); }

int Heap::fd() const { return need(state_).fd; }
const std::string& Heap::name() const { return need(state_).name; }
std::uint64_t Heap::instance() const { return need(state_).serial; }

std::size_t Heap::committed_bytes() const {
  return need(state_).hdr->committed_pages.load(std::memory_order_relaxed) *
         kPageSize;  // a snapshot
}
std::size_t Heap::max_size() const { return need(state_).max_pages * kPageSize; }
void* Heap::base() const { return need(state_).base; }
void Heap::set_keep(bool keep) {
  HeapState& st = need(state_);
  // Relaxed: read by the last process under the write lock on byte 0.
  if (keep)
    st.hdr->flags.fetch_or(kFlagKeep, std::memory_order_relaxed);
  else
    st.hdr->flags.fetch_and(~std::uint32_t{kFlagKeep}, std::memory_order_relaxed);
}
std::span<std::atomic<std::uint64_t>> Heap::header_words() const {
  return {need(state_).hdr->reserved_words, 32};
}

// ---- segments by name ------------------------------------------------------------------

void Heap::remove(std::string_view name_in) {
  std::string name(name_in);
  bool is_path = is_path_name(name);
  if (!is_path && (name.empty() || name.front() != '/')) name.insert(name.begin(), '/');
  int r = is_path ? ::unlink(name.c_str()) : ::shm_unlink(name.c_str());
  if (r != 0) throw errno_error(errno, fmt::format("cannot remove heap '{}'", name));
}

namespace {

std::vector<StaleHeap> scan_stale(std::string_view directory, bool remove) {
  std::vector<StaleHeap> out;
  std::string dir(directory);
  DIR* d = ::opendir(dir.c_str());
  if (!d) throw errno_error(errno, fmt::format("cannot list '{}'", dir));
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d))
    if (std::string_view(e->d_name).rfind("troupe.", 0) == 0) names.emplace_back(e->d_name);
  ::closedir(d);
  for (auto& n : names) {
    std::string path = dir + "/" + n;
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) continue;  // not ours to judge (another user's, or gone)
    struct stat sb {};
    if (::fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || !try_lock_byte(fd, 0, F_WRLCK)) {
      ::close(fd);  // attached (or being created): alive
      continue;
    }
    unsigned char buf[sizeof(Header)] = {};
    ssize_t got = ::pread(fd, buf, sizeof buf, 0);
    bool has_magic =
        got == static_cast<ssize_t>(sizeof buf) && std::memcmp(buf, kMagic, sizeof kMagic) == 0;
    std::uint32_t attached = has_magic ? TROUPE_FIELD(buf, std::uint32_t, attached) : 0;
    std::uint32_t flags = has_magic ? TROUPE_FIELD(buf, std::uint32_t, flags) : 0;
    bool old = ::time(nullptr) - sb.st_mtime > 2;  // not a creator mid-way
    bool stale = has_magic
                     ? (attached > 0 || (flags & kFlagUnlinked))
                     : (old && (got <= 8 ||
                                std::all_of(buf, buf + 8, [](unsigned char c) { return c == 0; })));
    if (stale) {
      out.push_back({path, static_cast<std::uint64_t>(sb.st_size), attached});
      if (remove) {
        if (has_magic) {
          std::uint32_t f = flags | kFlagUnlinked;  // S3: racing openers see it
          ::pwrite(fd, &f, sizeof f, offsetof(Header, flags));
        }
        ::unlink(path.c_str());
      }
    }
    ::close(fd);
  }
  return out;
}

}  // namespace

std::vector<StaleHeap> Heap::list_stale(std::string_view directory) {
  return scan_stale(directory, false);
}
std::vector<StaleHeap> Heap::remove_stale(std::string_view directory) {
  return scan_stale(directory, true);
}

}  // namespace troupe::shm
