// src/shm/segment.cpp: the segment file of a heap: create, open (by name or
// by fd), check its header, map it, close it (the last process removes the
// name), remove it by name, and find or remove stale segments; the kernel lock
// bytes on the file. Keeps S2 and S3 (below), P1 (heap_state.hpp: the
// mapping) and L5 (layout.hpp: openers wait until the creator wrote the magic).
//
// Liveness. Lock bytes on the segment file, taken with fcntl F_OFD_SETLK
// (open-file-description locks: the kernel drops them when the last fd of the
// description closes, i.e. when the process dies, whatever PID it had):
//   byte 0      read-locked by every attached process, write-locked by a
//               creator while it initialises, and by whoever removes the name
//   byte 1 + i  write-locked by the process that holds slot i (slots.cpp, S1)
// Invariants:
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
// file cannot SIGBUS us). Throws the error that names what is wrong (L5).
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

// Opens an already created segment on a fresh open file description (S2).
std::unique_ptr<HeapState> attach(int fd, std::string name, bool is_path, bool anonymous,
                                  void* hint) {
  auto st = map_heap(fd, std::move(name), is_path, anonymous);
  std::vector<unsigned char> buf(sizeof(Header));
  for (int attempt = 0;; ++attempt) {
    lock_wait(fd, 0, F_RDLCK);
    // The header first, then the file's size: a grower extends the file
    // before it raises committed_pages (alloc.cpp), so a size read after
    // the header covers what the header says, whoever grows meanwhile.
    ssize_t got = ::pread(fd, buf.data(), buf.size(), 0);
    if (got < 0) {
      int e = errno;
      ::close(fd);
      throw errno_error(Errc::system, e, "pread");
    }
    struct stat sb {};
    if (::fstat(fd, &sb) != 0) {
      int e = errno;
      ::close(fd);
      throw errno_error(Errc::system, e, "fstat");
    }
    std::uint64_t size = static_cast<std::uint64_t>(sb.st_size);
    bool fresh = size == 0;
    if (!fresh && size >= sizeof(Header))  // a header not yet all there: a creator at work
      fresh = got < static_cast<ssize_t>(buf.size()) ||
              std::all_of(buf.begin(), buf.begin() + 8, [](unsigned char c) { return c == 0; });
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
    lock_wait(fd, 0, F_WRLCK);  // L5: openers wait until the magic is written
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
    // the write lock released (L5); the lock orders these for openers.
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
  unregister_state(st);
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
