// fuzz/heap_fuzz.cpp: libFuzzer target for a shared heap whose header is
// valid and whose body is not: what a process meets when it opens a segment
// that another program (or a bug, or a bit flip) scribbled over. The heap
// layer (segment, slots, page map, allocator, recovery) and the transaction
// layer (table, stripe locks, records, objects) must reject such memory with
// a troupe::Error, not crash, and not loop for ever.
// Built and run by scripts/fuzz.sh (FUZZ_TARGET=heap).
//
// A template heap is made once per process: an anonymous segment (memfd)
// holding a root dict of ints, strings, bytes, tuples, a nested list and a
// record, and a queue of capacity 4 holding two items. Each input is a list
// of 12-byte patches {u32 offset, u64 xor}: the template's bytes are copied
// to a fresh memfd, each patch XORs 8 bytes of the
// body (past the header, 8-aligned), and the copy is opened (open_fd runs the
// recovery of the slots it finds dead: every slot, since no process holds
// this file), attached, read through (every key, value, nested item, bounded)
// and written (a set, an erase) in transactions; the queue is opened, and an
// item taken and one put.
//
// Invariants the target checks (a violation is a crash libFuzzer reports):
//   G1. Every rejection is a troupe::Error; anything else escapes and aborts.
//       ASan/UBSan catch memory errors and UB; -timeout catches a loop.
//   G2. No descriptor leaks: each input's memfd is closed again.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "troupe/error.hpp"
#include "shm/layout.hpp"
#include "troupe/shm/heap.hpp"
#include "troupe/shm/objects.hpp"
#include "troupe/shm/queue.hpp"
#include "troupe/shm/tx.hpp"

namespace {

using namespace troupe::shm;

std::string read_all(int fd) {
  std::string out;
  char buf[1 << 16];
  for (off_t at = 0;;) {
    ssize_t n = ::pread(fd, buf, sizeof buf, at);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    at += n;
  }
  return out;
}

// The template image, made once.
const std::string& image() {
  static const std::string img = [] {
    CreateOptions o;
    o.anonymous = true;
    o.initial_size = 256 << 10;
    o.max_size = 4 << 20;
    o.slots = 8;
    Heap h = Heap::create(o);
    auto& txh = TxHeap::attach(h);
    Dict d = root_dict(txh, "d");
    atomically(txh, [&](Tx& tx) {
      for (long i = 0; i < 24; ++i) d.set(tx, Value(i), Value(i * 1000));
      d.set(tx, Value("name"), Value(std::string(40, 'n')));
      d.set(tx, Value::bytes("k"), Value::bytes(std::string(30, '\x01')));
      d.set(tx, Value(100L), Value::tuple({Value(1L), Value("two"), Value(3.0)}));
      List l = new_list(tx);
      for (long i = 0; i < 10; ++i) l.append(tx, Value(i));
      d.set(tx, Value("list"), Value(l));
      Record r = new_record(tx, {"a", "b"});
      r.set(tx, "a", Value(7L));
      r.set(tx, "b", Value("bee"));
      d.set(tx, Value("rec"), Value(r));
    });
    Queue q = Queue::create(h, "q", 4);
    q.try_put(Value(1L));
    q.try_put(Value(std::string(20, 'q')));
    std::string img = read_all(h.fd());
    TxHeap::detach(h);
    h.close();
    return img;
  }();
  return img;
}

constexpr std::size_t kHeaderBytes = sizeof(detail::Header);

// Reads a value through, bounded in depth and items (a corrupt count must
// not make a walk long: the objects layer checks it, and this bound keeps a
// check that fails from hiding behind a slow test).
void walk(Tx& tx, const Value& v, int depth, std::size_t& budget) {
  if (depth > 4 || budget == 0) return;
  --budget;
  switch (v.kind()) {
    case Kind::tuple:
      for (const Value& i : v.as_tuple()) walk(tx, i, depth + 1, budget);
      break;
    case Kind::list:
      for (const Value& i : v.as_list().items(tx)) walk(tx, i, depth + 1, budget);
      break;
    case Kind::dict:
      v.as_dict().for_each(tx, [&](const Value& k, const Value& x) {
        walk(tx, k, depth + 1, budget);
        walk(tx, x, depth + 1, budget);
      });
      break;
    case Kind::record: {
      Record r = v.as_record();
      for (const std::string& f : r.fields(tx)) walk(tx, r.get(tx, f), depth + 1, budget);
      break;
    }
    default:
      (void)v.repr();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& img = image();
  if (img.size() <= kHeaderBytes + 8) return 0;
  std::string copy = img;
  const std::size_t body = copy.size() - kHeaderBytes;
  for (std::size_t at = 0; at + 12 <= size && at < 12 * 32; at += 12) {
    std::uint32_t off;
    std::uint64_t x;
    std::memcpy(&off, data + at, 4);
    std::memcpy(&x, data + at + 4, 8);
    std::size_t pos = (kHeaderBytes + off % body) & ~std::size_t{7};
    if (pos < kHeaderBytes || pos + 8 > copy.size()) continue;
    std::uint64_t w;
    std::memcpy(&w, copy.data() + pos, 8);
    w ^= x;
    std::memcpy(copy.data() + pos, &w, 8);
  }
  int fd = ::memfd_create("troupe-heap-fuzz", MFD_CLOEXEC);
  if (fd < 0) std::abort();
  if (::pwrite(fd, copy.data(), copy.size(), 0) != static_cast<ssize_t>(copy.size())) std::abort();
  try {
    Heap h = Heap::open_fd(fd);
    auto& txh = TxHeap::attach(h);
    try {
      atomically(txh, [&](Tx& tx) {
        Value root = get_root(tx, "d");
        std::size_t budget = 2000;
        walk(tx, root, 0, budget);
        if (root.kind() == Kind::dict) {
          Dict d = root.as_dict();
          d.set(tx, Value(999L), Value("x"));
          d.erase(tx, Value(1L));
        }
      });
    } catch (const troupe::Error&) {  // G1: rejected with a typed error
    }
    try {
      Queue q = Queue::open(h, "q");
      (void)q.try_get();
      (void)q.try_put(Value(5L));
      (void)q.size();
    } catch (const troupe::Error&) {  // G1
    }
    TxHeap::detach(h);
    h.close();
  } catch (const troupe::Error&) {  // G1
  }
  ::close(fd);  // G2
  return 0;
}
