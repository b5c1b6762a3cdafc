// src/shm/encoding.cpp: how values are stored in shared memory: a cell
// {tag, payload} holds a value inline (none, bool, int, double, strings and
// bytes of up to 8 bytes) or names a block: a blob {len, bytes}, a tuple
// {n, n cells}, or a container (list, dict, record) that the cell counts;
// encoding into fresh blocks, decoding (immutable blocks peeked, T8),
// retiring what a cell owns, replacing a cell's value, reference counts and
// collection at commit (T7), container stamps. Keeps V1, V2 and V4
// (objects.hpp), T8 and T9 (tx.hpp).
#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <random>

#include "shm/objects_private.hpp"
#include "troupe/shm/objects.hpp"

namespace troupe::shm::detail {

// Bytes packed into whole words, the last one padded with zeros (a block's
// usable size is a multiple of 16, so the padding stays inside it).
void put_bytes(std::uint64_t* p, std::string_view s) {
  for (std::size_t i = 0; i < s.size(); i += 8) {
    std::uint64_t w = 0;
    std::memcpy(&w, s.data() + i, std::min<std::size_t>(8, s.size() - i));
    put(p + i / 8, w);
  }
}

// T8 of tx.hpp: immutable blocks are peeked, and what was peeked is used only
// once settled() says the block still held it. A count or length is settled
// before it sizes anything, so a block reused under us never makes a huge
// allocation or a copy past the heap; a settled one that is still absurd is
// corruption.
[[noreturn]] void corrupt(const char* what, Offset b, std::uint64_t n) {
  throw Error(Errc::bad_segment, fmt::format("corrupt {} at {:#x}: length {}", what, b, n));
}
std::uint64_t settled_count(Tx& tx, Offset b, std::uint64_t unit, const char* what) {
  for (;;) {
    std::uint64_t n = tx.peek(b);
    if (!tx.settled(b)) continue;
    if (n >= tx.heap().committed_bytes() / unit) corrupt(what, b, n);
    return n;
  }
}
// A blob {len, bytes}.
std::string read_blob(Tx& tx, Offset b) {
  std::string out;
  std::vector<std::uint64_t> words;
  do {
    std::uint64_t n = settled_count(tx, b, 1, "blob");
    words.resize((n + 7) / 8);
    tx.peek_words(b + 8, words.data(), words.size());
    out.assign(reinterpret_cast<const char*>(words.data()), n);
  } while (!tx.settled(b));
  return out;
}
// Whether blob b holds `s` (no copy).
bool blob_equals(Tx& tx, Offset b, std::string_view s) {
  for (;;) {
    std::uint64_t n = settled_count(tx, b, 1, "blob");
    if (n != s.size()) return false;
    bool same = true;
    for (std::size_t i = 0; i < s.size() && same; i += 8) {
      std::uint64_t w = tx.peek(b + 8 + i), want = 0;
      std::memcpy(&want, s.data() + i, std::min<std::size_t>(8, s.size() - i));
      if (s.size() - i < 8) w &= (std::uint64_t{1} << 8 * (s.size() - i)) - 1;  // little-endian
      same = w == want;
    }
    if (tx.settled(b)) return same;
  }
}

std::uint64_t mix(std::uint64_t x) {  // splitmix64 finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
std::uint64_t fnv(std::string_view s, std::uint64_t seed) {
  std::uint64_t h = 0xcbf29ce484222325ull ^ seed;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return mix(h);
}

// Inline encoding of values that need no block (for writing and for
// comparing keys without allocating).
std::optional<Cell> encode_inline(const Value& v) {
  switch (v.kind()) {
    case Kind::none:
      return Cell{make_tag(Kind::none), 0};
    case Kind::boolean:
      return Cell{make_tag(Kind::boolean), v.as_bool() ? 1u : 0u};
    case Kind::integer:
      return Cell{make_tag(Kind::integer), static_cast<std::uint64_t>(v.as_int())};
    case Kind::real:
      return Cell{make_tag(Kind::real), std::bit_cast<std::uint64_t>(v.as_double())};
    case Kind::string:
    case Kind::bytes: {
      const std::string_view s = v.kind() == Kind::string ? v.as_string() : v.as_bytes();
      if (s.size() > 8) return std::nullopt;
      Cell r{make_tag(v.kind(), static_cast<unsigned>(s.size()) + 1), 0};
      std::memcpy(&r.payload, s.data(), s.size());
      return r;
    }
    default:
      return std::nullopt;
  }
}

// A random non-zero stamp for a new container: a thread-local generator (no
// shared writes), seeded per thread, with the clock mixed into every draw so
// that processes forked with the same generator state still differ.
std::uint64_t fresh_stamp() {
  thread_local std::uint64_t state = [] {
    int local = 0;
    std::uint64_t seed = reinterpret_cast<std::uintptr_t>(&local);
    try {
      std::random_device rd;
      seed ^= std::uint64_t{rd()} << 32 ^ rd();
    } catch (...) {  // no entropy source: the stack address and the clock below
    }
    return seed;
  }();
  for (;;) {
    state += 0x9E3779B97F4A7C15ull;
    auto now =
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    if (std::uint64_t s = mix(state ^ mix(now))) return s;
  }
}

// V2: a handle made by this process stays usable after its container is freed
// only to be told so: its stamp no longer matches the block's stamp word
// (zeroed by the retiring transaction, or a later owner's word). The read is
// validated and joins the read set, so the container cannot be freed under
// the rest of this transaction without it aborting.
void check_live(Tx& tx, Kind k, Offset b, std::uint64_t stamp) {
  if (b == null_offset)
    throw Error(Errc::invalid_argument, fmt::format("null {} handle", to_string(k)));
  if (stamp == 0) return;  // a raw offset: not checked (V2)
  if (tx.read(b + stamp_word(k)) != stamp)
    throw Error(Errc::not_found,
                fmt::format("stale {0} handle {1:#x}: that {0} was freed (its block may hold "
                            "something else now); read it again from a root",
                            to_string(k), b));
}

// The stamp of the live container a validated cell (or a settled tuple item)
// names, for the handle decoded from it.
Value container_value(Tx& tx, Kind k, Offset b) {
  return Value::ref(k, b, tx.read(b + stamp_word(k)));
}

void retire_block_tree(Tx& tx, Kind k, Offset b);

// A record's schema and field count: immutable words, peeked (T8).
std::pair<Offset, std::uint64_t> record_header(Tx& tx, Offset r) {
  for (;;) {
    Offset schema = tx.peek(r);
    std::uint64_t n = tx.peek(r + 8);
    if (!tx.settled(r)) continue;
    if (n >= tx.heap().committed_bytes() / 16) corrupt("record", r, n);
    return {schema, n};
  }
}

// T7 of tx.hpp: at commit, a container still counted zero is retired (its
// cells drop their references, which may offer more containers).
bool collect_container(Tx& tx, Offset b, std::uint64_t kind) {
  if (tx.read(b + kRefsWord) != 0) return false;
  retire_block_tree(tx, static_cast<Kind>(kind), b);
  return true;
}

// V2: a fresh container is counted zero and offered for collection, so one
// that is never stored is freed when its transaction commits.
void fresh_container(Tx& tx, Kind k, Offset b) {
  tx.collect_at_commit(b, static_cast<std::uint64_t>(k), collect_container);
}

void add_ref(Tx& tx, Offset b) { tx.write(b + kRefsWord, tx.read(b + kRefsWord) + 1); }

void drop_ref(Tx& tx, Kind k, Offset b) {
  std::uint64_t n = tx.read(b + kRefsWord);
  if (n == 0)
    throw Error(Errc::bad_segment,
                fmt::format("the reference count of {} {:#x} is already zero", to_string(k), b));
  tx.write(b + kRefsWord, n - 1);
  if (n == 1) tx.collect_at_commit(b, static_cast<std::uint64_t>(k), collect_container);
}

void encode_into(Tx& tx, std::uint64_t* dst, const Value& v);

// V2: strings, bytes and tuples are copied into fresh blocks; a container
// gains a reference (the cell or tuple item the encoding is stored in).
Cell encode(Tx& tx, const Value& v) {
  if (auto s = encode_inline(v)) return *s;
  Heap& h = tx.heap();
  switch (v.kind()) {
    case Kind::string:
    case Kind::bytes:
    case Kind::bigint: {  // never inline: a bigint has more than 8 bytes
      const std::string_view s = v.kind() == Kind::string  ? v.as_string()
                                 : v.kind() == Kind::bytes ? v.as_bytes()
                                                           : v.as_bigint();
      Offset b = tx.allocate(8 + s.size());
      auto* p = h.ptr<std::uint64_t>(b);  // private until commit (X6); T9
      put(p, s.size());
      put_bytes(p + 1, s);
      return {make_tag(v.kind()), b};
    }
    case Kind::tuple: {
      const auto& items = v.as_tuple();
      Offset b = tx.allocate(8 + 16 * items.size());
      put(h.ptr<std::uint64_t>(b), items.size());  // T9
      for (std::size_t i = 0; i < items.size(); ++i)
        encode_into(tx, h.ptr<std::uint64_t>(b) + 1 + 2 * i, items[i]);
      return {make_tag(Kind::tuple), b};
    }
    case Kind::list:
    case Kind::dict:
    case Kind::record:
      check_live(tx, v.kind(), v.ref(), v.stamp());  // V2: never count a stale handle
      add_ref(tx, v.ref());                          // V2: for the cell we return
      return {make_tag(v.kind()), v.ref()};
    default:
      break;
  }
  throw Error(Errc::invalid_argument, "cannot encode value");
}

void encode_into(Tx& tx, std::uint64_t* dst, const Value& v) {
  Cell s = encode(tx, v);
  put(dst, s.tag);  // T9
  put(dst + 1, s.payload);
}

Value decode_block(Tx& tx, Kind k, Offset b);

Value decode(Tx& tx, Cell s) {
  Kind k = kind_of(s.tag);
  switch (k) {
    case Kind::none:
      return Value();
    case Kind::boolean:
      return Value(s.payload != 0);
    case Kind::integer:
      return Value(static_cast<long long>(s.payload));
    case Kind::real:
      return Value(std::bit_cast<double>(s.payload));
    case Kind::string:
    case Kind::bytes:
      if (unsigned n = inline_len_plus1(s.tag)) {
        std::string str(std::min(n - 1, 8u), '\0');
        std::memcpy(str.data(), &s.payload, str.size());
        return k == Kind::string ? Value(std::move(str)) : Value::bytes(str);
      }
      return decode_block(tx, k, s.payload);
    case Kind::tuple:
    case Kind::bigint:
      return decode_block(tx, k, s.payload);
    case Kind::list:
    case Kind::dict:
    case Kind::record:
      return container_value(tx, k, s.payload);  // V2
  }
  throw Error(Errc::bad_segment, fmt::format("corrupt value tag {:#x}", s.tag));
}

// A tuple's items {n, n cells} (T8: peeked, then settled).
std::vector<Cell> read_tuple(Tx& tx, Offset b) {
  static_assert(sizeof(Cell) == 16);
  std::vector<Cell> items;
  do {
    items.resize(settled_count(tx, b, 16, "tuple"));
    tx.peek_words(b + 8, reinterpret_cast<std::uint64_t*>(items.data()), 2 * items.size());
  } while (!tx.settled(b));
  return items;
}

// V1: blobs and tuples are immutable once reachable; the validated read of
// the cell that named them (T1) happens after their initialisation, and
// they are read through T8 (they may be freed and reused under us).
Value decode_block(Tx& tx, Kind k, Offset b) {
  if (k == Kind::tuple) {
    std::vector<Value> items;
    for (Cell s : read_tuple(tx, b)) {
      Kind ik = kind_of(s.tag);
      if (ik == Kind::tuple || ik == Kind::bigint ||
          ((ik == Kind::string || ik == Kind::bytes) && inline_len_plus1(s.tag) == 0))
        items.push_back(decode_block(tx, ik, s.payload));
      else if (auto n = inline_len_plus1(s.tag)) {
        std::string str(std::min(n - 1, 8u), '\0');
        std::memcpy(str.data(), &s.payload, str.size());
        items.push_back(ik == Kind::string ? Value(std::move(str)) : Value::bytes(str));
      } else if (ik == Kind::integer) {
        items.push_back(Value(static_cast<long long>(s.payload)));
      } else if (ik == Kind::boolean) {
        items.push_back(Value(s.payload != 0));
      } else if (ik == Kind::real) {
        items.push_back(Value(std::bit_cast<double>(s.payload)));
      } else if (ik == Kind::list || ik == Kind::dict || ik == Kind::record) {
        items.push_back(container_value(tx, ik, s.payload));  // counted by the tuple (V2)
      } else {
        items.push_back(Value());
      }
    }
    return Value::tuple(std::move(items));
  }
  std::string str = read_blob(tx, b);
  if (k == Kind::bigint) return Value::bigint(str);
  return k == Kind::string ? Value(std::move(str)) : Value::bytes(str);
}

// V2: retires the blob or tuple the cell owns; a container loses the
// cell's reference.
void retire_cell(Tx& tx, Cell s) {
  Kind k = kind_of(s.tag);
  if (((k == Kind::string || k == Kind::bytes) && inline_len_plus1(s.tag) == 0) ||
      k == Kind::bigint)
    tx.retire(s.payload);
  else if (k == Kind::tuple)
    retire_block_tree(tx, k, s.payload);
  else if (is_container(k))
    drop_ref(tx, k, s.payload);
}

// Retires a tuple with what it owns, or a container no longer counted (V2)
// with its own blocks; the containers its cells name lose a reference.

void retire_block_tree(Tx& tx, Kind k, Offset b) {
  switch (k) {
    case Kind::tuple:
      for (Cell s : read_tuple(tx, b)) retire_cell(tx, s);  // T8
      break;
    case Kind::list: {
      std::uint64_t len = tx.read(b);
      Offset items = tx.read(b + 16);
      for (std::uint64_t i = 0; i < len; ++i) retire_cell(tx, read_cell(tx, items + 16 * i));
      tx.retire(items);
      break;
    }
    case Kind::dict: {
      std::uint64_t nb = tx.read(b + 8);
      Offset buckets = tx.read(b + 16);
      for (std::uint64_t i = 0; i < nb; ++i)
        for (Offset e = tx.read(buckets + 8 * i); e;) {
          Offset next = tx.read(e);
          retire_cell(tx, read_cell(tx, e + 16));
          retire_cell(tx, read_cell(tx, e + 32));
          tx.retire(e);
          e = next;
        }
      tx.retire(buckets);
      break;
    }
    case Kind::record: {
      auto [schema, n] = record_header(tx, b);
      retire_block_tree(tx, Kind::tuple, schema);
      for (std::uint64_t i = 0; i < n; ++i)
        retire_cell(tx, read_cell(tx, b + kRecordCells + 16 * i));
      break;
    }
    default:
      return;
  }
  // V2: a retired container's stamp word is zeroed before the block is freed,
  // so no stale handle (stamps are non-zero) matches it until a later owner
  // writes the word. A block this transaction allocated is private: cleared
  // directly (its buffered writes are dropped when it is retired, T5).
  if (k != Kind::tuple) {
    if (tx.allocated_here(b))
      put(tx.heap().ptr<std::uint64_t>(b + stamp_word(k)), 0);
    else
      tx.write(b + stamp_word(k), 0);
  }
  tx.retire(b);
}

// Replaces the value in the cell at `at` (V2: the new value is counted before
// the old one is dropped). Storing the container the cell already holds
// changes nothing.
void store_cell(Tx& tx, Offset at, const Value& v) {
  if (v.ref() != null_offset) check_live(tx, v.kind(), v.ref(), v.stamp());  // V2
  Cell old = read_cell(tx, at);
  if (v.ref() != null_offset && old.tag == make_tag(v.kind()) && old.payload == v.ref()) return;
  Cell fresh = encode(tx, v);
  retire_cell(tx, old);
  write_cell(tx, at, fresh);
}

// Fills the fresh list or dict header at b: {0, capacity, array, refs 0,
// stamp, 0}; returns its stamp (V2).
std::uint64_t init_header(Tx& tx, Kind k, Offset b, std::uint64_t capacity, Offset array) {
  auto* p = tx.heap().ptr<std::uint64_t>(b);
  std::uint64_t stamp = fresh_stamp();
  put(p, 0);
  put(p + 1, capacity);
  put(p + 2, array);
  put(p + 3, 0);  // V2: counted zero until stored
  put(p + 4, stamp);
  put(p + 5, 0);
  fresh_container(tx, k, b);
  return stamp;
}
}  // namespace troupe::shm::detail
