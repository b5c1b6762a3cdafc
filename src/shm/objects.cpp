// src/shm/objects.cpp: Value, the encoding of values in shared slots,
// and the List/Dict/Record containers over Tx. Keeps V1-V4 (objects.hpp).
#include "troupe/shm/objects.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace troupe::shm {

namespace {

struct Slot {
  std::uint64_t tag = 0;
  std::uint64_t payload = 0;
};

constexpr std::uint64_t make_tag(Kind k, unsigned inline_plus1 = 0) {
  return static_cast<std::uint64_t>(k) | std::uint64_t{inline_plus1} << 8;
}
static_assert(make_tag(Kind::integer) == detail::kIntSlotTag);  // V4
Kind kind_of(std::uint64_t tag) { return static_cast<Kind>(tag & 0xff); }
unsigned inline_len_plus1(std::uint64_t tag) { return static_cast<unsigned>(tag >> 8 & 0xff); }

Slot read_slot(Tx& tx, Offset at) { return {tx.read(at), tx.read(at + 8)}; }
// V4: the only writer of a slot's tag, always with its payload.
void write_slot(Tx& tx, Offset at, Slot s) {
  tx.write(at, s.tag);
  tx.write(at + 8, s.payload);
}

// T9 of tx.hpp: words of a fresh block are stored atomically (relaxed: the
// publishing commit's release orders them), since a transaction holding a
// stale offset to the block's previous incarnation may be peeking at them.
void put(std::uint64_t* p, std::uint64_t v) {
  std::atomic_ref(*p).store(v, std::memory_order_relaxed);
}
void put_zeros(std::uint64_t* p, std::size_t words) {
  for (std::size_t i = 0; i < words; ++i) put(p + i, 0);
}
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
std::optional<Slot> encode_inline(const Value& v) {
  switch (v.kind()) {
    case Kind::none:
      return Slot{make_tag(Kind::none), 0};
    case Kind::boolean:
      return Slot{make_tag(Kind::boolean), v.as_bool() ? 1u : 0u};
    case Kind::integer:
      return Slot{make_tag(Kind::integer), static_cast<std::uint64_t>(v.as_int())};
    case Kind::real:
      return Slot{make_tag(Kind::real), std::bit_cast<std::uint64_t>(v.as_double())};
    case Kind::string:
    case Kind::bytes: {
      const std::string_view s = v.kind() == Kind::string ? v.as_string() : v.as_bytes();
      if (s.size() > 8) return std::nullopt;
      Slot r{make_tag(v.kind(), static_cast<unsigned>(s.size()) + 1), 0};
      std::memcpy(&r.payload, s.data(), s.size());
      return r;
    }
    default:
      return std::nullopt;
  }
}

bool is_container(Kind k) { return k == Kind::list || k == Kind::dict || k == Kind::record; }

// V2: word 3 of every container block is its reference count.
constexpr Offset kRefsWord = 24;
constexpr Offset kRecordSlots = 32;       // record {schema, nfields, stamp, refs, slots}
constexpr std::size_t kHeaderBytes = 48;  // list/dict {.., refs, stamp, 0}

// V2: where a container keeps its creation stamp (never written while it
// lives: its own stripe, so reading it conflicts only with the container's
// free).
constexpr Offset stamp_word(Kind k) { return k == Kind::record ? 16 : 32; }

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

// The stamp of the live container a validated slot (or a settled tuple item)
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
// slots drop their references, which may offer more containers).
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
// gains a reference (the slot or tuple item the encoding is stored in).
Slot encode(Tx& tx, const Value& v) {
  if (auto s = encode_inline(v)) return *s;
  Heap& h = tx.heap();
  switch (v.kind()) {
    case Kind::string:
    case Kind::bytes:
    case Kind::bigint: {  // never inline: a bigint has more than 8 bytes
      const std::string_view s = v.kind() == Kind::string ? v.as_string()
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
      add_ref(tx, v.ref());                          // V2: for the slot we return
      return {make_tag(v.kind()), v.ref()};
    default:
      break;
  }
  throw Error(Errc::invalid_argument, "cannot encode value");
}

void encode_into(Tx& tx, std::uint64_t* dst, const Value& v) {
  Slot s = encode(tx, v);
  put(dst, s.tag);  // T9
  put(dst + 1, s.payload);
}

Value decode_block(Tx& tx, Kind k, Offset b);

Value decode(Tx& tx, Slot s) {
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

// A tuple's items {n, n slots} (T8: peeked, then settled).
std::vector<Slot> read_tuple(Tx& tx, Offset b) {
  static_assert(sizeof(Slot) == 16);
  std::vector<Slot> items;
  do {
    items.resize(settled_count(tx, b, 16, "tuple"));
    tx.peek_words(b + 8, reinterpret_cast<std::uint64_t*>(items.data()), 2 * items.size());
  } while (!tx.settled(b));
  return items;
}

// V1: blobs and tuples are immutable once reachable; the validated read of
// the slot that named them (T1) happens after their initialisation, and
// they are read through T8 (they may be freed and reused under us).
Value decode_block(Tx& tx, Kind k, Offset b) {
  if (k == Kind::tuple) {
    std::vector<Value> items;
    for (Slot s : read_tuple(tx, b)) {
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

// V2: retires the blob or tuple the slot owns; a container loses the
// slot's reference.
void retire_slot(Tx& tx, Slot s) {
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
// with its own blocks; the containers its slots name lose a reference.

void retire_block_tree(Tx& tx, Kind k, Offset b) {
  switch (k) {
    case Kind::tuple:
      for (Slot s : read_tuple(tx, b)) retire_slot(tx, s);  // T8
      break;
    case Kind::list: {
      std::uint64_t len = tx.read(b);
      Offset items = tx.read(b + 16);
      for (std::uint64_t i = 0; i < len; ++i) retire_slot(tx, read_slot(tx, items + 16 * i));
      tx.retire(items);
      break;
    }
    case Kind::dict: {
      std::uint64_t nb = tx.read(b + 8);
      Offset buckets = tx.read(b + 16);
      for (std::uint64_t i = 0; i < nb; ++i)
        for (Offset e = tx.read(buckets + 8 * i); e;) {
          Offset next = tx.read(e);
          retire_slot(tx, read_slot(tx, e + 16));
          retire_slot(tx, read_slot(tx, e + 32));
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
        retire_slot(tx, read_slot(tx, b + kRecordSlots + 16 * i));
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

// Replaces the value in the slot at `at` (V2: the new value is counted before
// the old one is dropped). Storing the container the slot already holds
// changes nothing.
void store_slot(Tx& tx, Offset at, const Value& v) {
  if (v.ref() != null_offset) check_live(tx, v.kind(), v.ref(), v.stamp());  // V2
  Slot old = read_slot(tx, at);
  if (v.ref() != null_offset && old.tag == make_tag(v.kind()) && old.payload == v.ref()) return;
  Slot fresh = encode(tx, v);
  retire_slot(tx, old);
  write_slot(tx, at, fresh);
}

bool key_equals(Tx& tx, Offset slot_at, const Value& key) {
  if (auto s = encode_inline(key))
    return tx.read(slot_at) == s->tag && tx.read(slot_at + 8) == s->payload;
  Slot s = read_slot(tx, slot_at);
  if (kind_of(s.tag) != key.kind() || inline_len_plus1(s.tag) != 0) return false;
  return decode(tx, s) == key;
}

[[noreturn]] void out_of_range(std::size_t i, std::size_t n) {
  throw Error(Errc::invalid_argument, fmt::format("list index {} out of range (size {})", i, n));
}

}  // namespace

std::string_view to_string(Kind k) {
  switch (k) {
    case Kind::none:
      return "none";
    case Kind::boolean:
      return "bool";
    case Kind::integer:
      return "int";
    case Kind::real:
      return "double";
    case Kind::string:
      return "string";
    case Kind::bytes:
      return "bytes";
    case Kind::bigint:
      return "bigint";
    case Kind::tuple:
      return "tuple";
    case Kind::list:
      return "list";
    case Kind::dict:
      return "dict";
    case Kind::record:
      return "record";
  }
  return "?";
}

// ---- Value --------------------------------------------------------------------

Value::Value(const List& l) : kind_(Kind::list), off_(l.offset()), stamp_(l.stamp()) {}
Value::Value(const Dict& d) : kind_(Kind::dict), off_(d.offset()), stamp_(d.stamp()) {}
Value::Value(const Record& r) : kind_(Kind::record), off_(r.offset()), stamp_(r.stamp()) {}

Value Value::bytes(std::string_view b) {
  Value v;
  v.kind_ = Kind::bytes;
  v.s_ = std::string(b);
  return v;
}
Value Value::bytes_ref(std::string_view b) {
  Value v;
  v.kind_ = Kind::bytes;
  v.borrowed_ = b;
  return v;
}
Value Value::bigint(std::string_view b) {
  if (b.size() <= 8)
    throw Error(Errc::invalid_argument,
                "Value::bigint: an integer of 8 bytes or less is an int64 (Value(long long))");
  Value v;
  v.kind_ = Kind::bigint;
  v.s_ = std::string(b);
  return v;
}
Value Value::tuple(std::vector<Value> items) {
  Value v;
  v.kind_ = Kind::tuple;
  v.t_ = std::make_shared<const std::vector<Value>>(std::move(items));
  return v;
}
Value Value::ref(Kind k, Offset off, std::uint64_t stamp) {
  if (k != Kind::list && k != Kind::dict && k != Kind::record)
    throw Error(Errc::invalid_argument, "Value::ref needs list, dict or record");
  Value v;
  v.kind_ = k;
  v.off_ = off;
  v.stamp_ = stamp;
  return v;
}

void Value::need(Kind k) const {
  if (kind_ != k)
    throw Error(Errc::invalid_argument,
                fmt::format("value is a {}, not a {}", to_string(kind_), to_string(k)));
}
bool Value::as_bool() const {
  need(Kind::boolean);
  return i_ != 0;
}
std::int64_t Value::as_int() const {
  need(Kind::integer);
  return i_;
}
double Value::as_double() const {
  if (kind_ == Kind::integer) return static_cast<double>(i_);
  need(Kind::real);
  return d_;
}
const std::string& Value::as_string() const {
  need(Kind::string);
  return s_;
}
std::string_view Value::as_bytes() const {
  need(Kind::bytes);
  return text();
}
const std::string& Value::as_bigint() const {
  need(Kind::bigint);
  return s_;
}
const std::vector<Value>& Value::as_tuple() const {
  need(Kind::tuple);
  return *t_;
}
List Value::as_list() const {
  need(Kind::list);
  return List(off_, stamp_);
}
Dict Value::as_dict() const {
  need(Kind::dict);
  return Dict(off_, stamp_);
}
Record Value::as_record() const {
  need(Kind::record);
  return Record(off_, stamp_);
}
Offset Value::ref() const {
  return kind_ == Kind::list || kind_ == Kind::dict || kind_ == Kind::record ? off_ : null_offset;
}

bool Value::hashable() const {
  switch (kind_) {
    case Kind::integer:
    case Kind::boolean:
    case Kind::string:
    case Kind::bytes:
    case Kind::bigint:
      return true;
    case Kind::tuple:
      for (auto& v : *t_)
        if (!v.hashable()) return false;
      return true;
    default:
      return false;
  }
}

std::uint64_t Value::hash() const {
  switch (kind_) {
    case Kind::integer:
      return mix(static_cast<std::uint64_t>(i_));
    case Kind::boolean:
      return mix(static_cast<std::uint64_t>(i_) ^ 0xB001);
    case Kind::string:
      return fnv(s_, 1);
    case Kind::bytes:
      return fnv(text(), 2);
    case Kind::bigint:
      return fnv(s_, 3);
    case Kind::tuple: {
      std::uint64_t h = 0x7475706C65ull;
      for (auto& v : *t_) h = mix(h ^ v.hash());
      return h;
    }
    default:
      break;
  }
  throw Error(
      Errc::invalid_argument,
      fmt::format("a {} cannot be a dict key (int, bool, string, bytes, tuple)", to_string(kind_)));
}

bool Value::operator==(const Value& o) const {
  if (kind_ != o.kind_) return false;
  switch (kind_) {
    case Kind::none:
      return true;
    case Kind::boolean:
    case Kind::integer:
      return i_ == o.i_;
    case Kind::real:
      return d_ == o.d_;
    case Kind::string:
    case Kind::bytes:
    case Kind::bigint:
      return text() == o.text();
    case Kind::tuple:
      return *t_ == *o.t_;
    default:  // the same container (a stamp 0, unchecked, matches any, V2)
      return off_ == o.off_ && (stamp_ == o.stamp_ || !stamp_ || !o.stamp_);
  }
}

std::string Value::repr() const {
  switch (kind_) {
    case Kind::none:
      return "None";
    case Kind::boolean:
      return i_ ? "True" : "False";
    case Kind::integer:
      return std::to_string(i_);
    case Kind::real:
      return fmt::format("{}", d_);
    case Kind::string:
      return fmt::format("'{}'", s_);
    case Kind::bytes:
      return fmt::format("b'{}'", text());
    case Kind::bigint:
      return fmt::format("bigint({} bytes)", s_.size());
    case Kind::tuple: {
      std::string r = "(";
      for (std::size_t i = 0; i < t_->size(); ++i) r += (i ? ", " : "") + (*t_)[i].repr();
      return r + (t_->size() == 1 ? ",)" : ")");
    }
    default:
      return fmt::format("<{} {:#x}>", to_string(kind_), off_);
  }
}

void List::live(Tx& tx) const { check_live(tx, Kind::list, off_, stamp_); }
void Dict::live(Tx& tx) const { check_live(tx, Kind::dict, off_, stamp_); }
void Record::live(Tx& tx) const { check_live(tx, Kind::record, off_, stamp_); }

// ---- List: {len, cap, items, refs, stamp} ----------------------------------------------

namespace {
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
}  // namespace

List new_list(Tx& tx, std::size_t capacity) {
  capacity = std::max<std::size_t>(capacity, 1);
  Offset b = tx.allocate(kHeaderBytes);
  Offset items = tx.allocate(16 * capacity);
  put_zeros(tx.heap().ptr<std::uint64_t>(items), 2 * capacity);  // none slots; private (X6), T9
  return List(b, init_header(tx, Kind::list, b, capacity, items));
}

std::size_t List::size(Tx& tx) const {
  live(tx);
  return tx.read(off_);
}

Value List::get(Tx& tx, std::size_t i) const {
  live(tx);
  std::size_t n = tx.read(off_);
  if (i >= n) out_of_range(i, n);
  return decode(tx, read_slot(tx, tx.read(off_ + 16) + 16 * i));
}

Offset List::payload_word(Tx& tx, std::size_t i) const {
  live(tx);
  std::size_t n = tx.read(off_);
  if (i >= n) out_of_range(i, n);
  return tx.read(off_ + 16) + 16 * i + 8;
}

void List::set(Tx& tx, std::size_t i, const Value& v) const {
  live(tx);
  std::size_t n = tx.read(off_);
  if (i >= n) out_of_range(i, n);
  store_slot(tx, tx.read(off_ + 16) + 16 * i, v);  // V2
}

void List::append(Tx& tx, const Value& v) const {
  live(tx);
  Slot fresh = encode(tx, v);  // V2
  std::uint64_t len = tx.read(off_), cap = tx.read(off_ + 8);
  Offset items = tx.read(off_ + 16);
  if (len == cap) {
    std::uint64_t ncap = cap * 2;
    Offset fresh = tx.allocate(16 * ncap);
    auto* p = tx.heap().ptr<std::uint64_t>(fresh);  // private until commit (X6), T9
    for (std::uint64_t i = 0; i < len; ++i) {
      Slot s = read_slot(tx, items + 16 * i);
      put(p + 2 * i, s.tag);
      put(p + 2 * i + 1, s.payload);
    }
    put_zeros(p + 2 * len, 2 * (ncap - len));
    tx.write(off_ + 8, ncap);
    tx.write(off_ + 16, fresh);
    tx.retire(items);
    items = fresh;
  }
  write_slot(tx, items + 16 * len, fresh);
  tx.write(off_, len + 1);
}

Value List::pop(Tx& tx) const {
  live(tx);
  std::uint64_t len = tx.read(off_);
  if (len == 0) throw Error(Errc::invalid_argument, "pop from an empty list");
  Offset at = tx.read(off_ + 16) + 16 * (len - 1);
  Slot s = read_slot(tx, at);
  Value v = decode(tx, s);
  retire_slot(tx, s);  // V2: a popped container not stored again is freed at commit
  write_slot(tx, at, Slot{});
  tx.write(off_, len - 1);
  return v;
}

void List::clear(Tx& tx) const {
  live(tx);
  std::uint64_t len = tx.read(off_);
  Offset items = tx.read(off_ + 16);
  for (std::uint64_t i = 0; i < len; ++i) {
    retire_slot(tx, read_slot(tx, items + 16 * i));
    write_slot(tx, items + 16 * i, Slot{});
  }
  tx.write(off_, 0);
}

std::vector<Value> List::items(Tx& tx) const {
  live(tx);
  std::uint64_t len = tx.read(off_);
  Offset items = tx.read(off_ + 16);
  std::vector<Value> out;
  out.reserve(len);
  for (std::uint64_t i = 0; i < len; ++i) out.push_back(decode(tx, read_slot(tx, items + 16 * i)));
  return out;
}

// ---- Dict: {count, nbuckets, buckets, refs, stamp}, entry {next, hash, key, value} ------

Dict new_dict(Tx& tx, std::size_t buckets) {
  std::size_t nb = 1;
  while (nb < buckets) nb *= 2;
  Offset b = tx.allocate(kHeaderBytes);
  Offset bk = tx.allocate(8 * nb);
  put_zeros(tx.heap().ptr<std::uint64_t>(bk), nb);  // private (X6), T9
  return Dict(b, init_header(tx, Kind::dict, b, nb, bk));
}

std::size_t Dict::size(Tx& tx) const {
  live(tx);
  return tx.read(off_);
}

Offset Dict::find(Tx& tx, const Value& key, std::uint64_t h, Offset* link) const {
  std::uint64_t nb = tx.read(off_ + 8);
  Offset at = tx.read(off_ + 16) + 8 * (h & (nb - 1));
  for (Offset e = tx.read(at); e; e = tx.read(at)) {
    if (tx.read(e + 8) == h && key_equals(tx, e + 16, key)) {
      if (link) *link = at;
      return e;
    }
    at = e;  // the entry's next word
  }
  if (link) *link = at;
  return null_offset;
}

std::optional<Value> Dict::get(Tx& tx, const Value& key) const {
  live(tx);
  Offset e = find(tx, key, key.hash(), nullptr);
  if (!e) return std::nullopt;
  return decode(tx, read_slot(tx, e + 32));
}

bool Dict::contains(Tx& tx, const Value& key) const {
  live(tx);
  return find(tx, key, key.hash(), nullptr) != null_offset;
}

std::int64_t Dict::get_int(Tx& tx, const Value& key, std::int64_t otherwise) const {
  live(tx);
  Offset e = find(tx, key, key.hash(), nullptr);
  if (!e) return otherwise;
  return decode(tx, read_slot(tx, e + 32)).as_int();
}

Offset Dict::payload_word(Tx& tx, const Value& key) const {
  live(tx);
  Offset e = find(tx, key, key.hash(), nullptr);
  return e ? e + 40 : null_offset;
}

void Dict::set(Tx& tx, const Value& key, const Value& v) const {
  live(tx);
  std::uint64_t h = key.hash();
  Offset link = 0;
  if (Offset e = find(tx, key, h, &link)) {
    store_slot(tx, e + 32, v);  // V2
    return;
  }
  Slot fresh = encode(tx, v);  // V2
  Offset e = tx.allocate(48);
  auto* p = tx.heap().ptr<std::uint64_t>(e);  // private until commit (X6), T9
  put(p, 0);
  put(p + 1, h);
  encode_into(tx, p + 2, key);  // V3: hashable, so no container to count
  put(p + 4, fresh.tag);
  put(p + 5, fresh.payload);
  tx.write(link, e);
  std::uint64_t count = tx.read(off_) + 1;
  tx.write(off_, count);
  std::uint64_t nb = tx.read(off_ + 8);
  if (count > 2 * nb) {  // grow: rechain every entry into 4x the buckets
    std::uint64_t nb2 = nb * 4;
    Offset old = tx.read(off_ + 16);
    std::vector<Offset> heads(nb2, 0);
    for (std::uint64_t i = 0; i < nb; ++i)
      for (Offset x = tx.read(old + 8 * i); x;) {
        Offset next = tx.read(x);
        std::uint64_t b = tx.read(x + 8) & (nb2 - 1);
        tx.write(x, heads[b]);
        heads[b] = x;
        x = next;
      }
    Offset fresh = tx.allocate(8 * nb2);
    auto* q = tx.heap().ptr<std::uint64_t>(fresh);  // private (X6), T9
    for (std::uint64_t i = 0; i < nb2; ++i) put(q + i, heads[i]);
    tx.write(off_ + 8, nb2);
    tx.write(off_ + 16, fresh);
    tx.retire(old);
  }
}

std::int64_t Dict::add(Tx& tx, const Value& key, std::int64_t delta) const {
  live(tx);
  Offset e = find(tx, key, key.hash(), nullptr);
  if (!e) {
    set(tx, key, Value(static_cast<long long>(delta)));
    return delta;
  }
  if (kind_of(tx.read(e + 32)) != Kind::integer)
    throw Error(Errc::invalid_argument, fmt::format("dict value of {} is not an int", key.repr()));
  auto v = static_cast<std::int64_t>(tx.read(e + 40)) + delta;
  tx.write(e + 40, static_cast<std::uint64_t>(v));
  return v;
}

bool Dict::erase(Tx& tx, const Value& key) const {
  live(tx);
  Offset link = 0;
  Offset e = find(tx, key, key.hash(), &link);
  if (!e) return false;
  tx.write(link, tx.read(e));
  retire_slot(tx, read_slot(tx, e + 16));
  retire_slot(tx, read_slot(tx, e + 32));
  tx.retire(e);
  tx.write(off_, tx.read(off_) - 1);
  return true;
}

void Dict::for_each(Tx& tx,
                    const std::function<void(const Value& key, const Value& value)>& f) const {
  live(tx);
  std::uint64_t nb = tx.read(off_ + 8);
  Offset buckets = tx.read(off_ + 16);
  for (std::uint64_t i = 0; i < nb; ++i)
    for (Offset e = tx.read(buckets + 8 * i); e; e = tx.read(e))
      f(decode(tx, read_slot(tx, e + 16)), decode(tx, read_slot(tx, e + 32)));
}

std::vector<Value> Dict::keys(Tx& tx) const {
  live(tx);
  std::vector<Value> out;
  for_each(tx, [&](const Value& k, const Value&) { out.push_back(k); });
  return out;
}

// ---- Record: {schema, nfields, stamp, refs, slots} -----------------------------------

Record new_record(Tx& tx, const std::vector<std::string>& fields) {
  std::vector<Value> names;
  for (auto& f : fields) names.emplace_back(f);
  Slot schema = encode(tx, Value::tuple(std::move(names)));
  Offset b = tx.allocate(kRecordSlots + 16 * fields.size());
  auto* p = tx.heap().ptr<std::uint64_t>(b);  // private (X6), T9; schema and nfields never change
  std::uint64_t stamp = fresh_stamp();
  put(p, schema.payload);
  put(p + 1, fields.size());
  put(p + 2, stamp);
  put(p + 3, 0);  // V2: counted zero until stored
  put_zeros(p + 4, 2 * fields.size());
  fresh_container(tx, Kind::record, b);
  return Record(b, stamp);
}

Record new_record(Tx& tx, std::initializer_list<std::string_view> fields) {
  std::vector<std::string> f;
  for (auto s : fields) f.emplace_back(s);
  return new_record(tx, f);
}

std::vector<std::string> Record::fields(Tx& tx) const {
  live(tx);
  std::vector<std::string> out;
  Value schema = decode_block(tx, Kind::tuple, record_header(tx, off_).first);  // T8
  for (auto& v : schema.as_tuple()) out.push_back(v.as_string());
  return out;
}

// The schema's names are inline slots or blobs, all immutable (T8).
std::size_t Record::index(Tx& tx, std::string_view field) const {
  std::vector<Slot> names = read_tuple(tx, record_header(tx, off_).first);
  for (std::size_t i = 0; i < names.size(); ++i) {
    Slot s = names[i];
    bool same;
    if (unsigned n = inline_len_plus1(s.tag))
      same = n - 1 == field.size() && n <= 9 &&
             std::memcmp(&s.payload, field.data(), field.size()) == 0;
    else
      same = blob_equals(tx, s.payload, field);
    if (same) return i;
  }
  throw Error(Errc::not_found, fmt::format("record has no field '{}'", field));
}

Value Record::get(Tx& tx, std::string_view field) const {
  live(tx);
  return decode(tx, read_slot(tx, off_ + kRecordSlots + 16 * index(tx, field)));
}

void Record::set(Tx& tx, std::string_view field, const Value& v) const {
  live(tx);
  store_slot(tx, off_ + kRecordSlots + 16 * index(tx, field), v);  // V2
}

Offset Record::payload_word(Tx& tx, std::string_view field) const {
  live(tx);
  return off_ + kRecordSlots + 16 * index(tx, field) + 8;
}

// ---- roots ------------------------------------------------------------------------

namespace {

std::mutex g_cells_mu;
// Per opened heap (Heap::instance, never reused: a heap closed and created
// again under its name, even at the same address, has other cells).
std::map<std::pair<std::uint64_t, std::string>, Offset> g_cells;

// The cell behind root `name`: a published 16-byte block holding one slot,
// created by the first process that asks (compare_exchange_root), never freed.
Offset root_cell(Heap& h, std::string_view name, bool create) {
  std::pair<std::uint64_t, std::string> key{h.instance(), std::string(name)};
  {
    std::lock_guard<std::mutex> lk(g_cells_mu);
    if (auto it = g_cells.find(key); it != g_cells.end()) return it->second;
  }
  Offset cell = h.root(name);
  if (!cell) {
    if (!create) return null_offset;
    Offset mine = h.allocate(16);
    detail::fresh_block_fence();               // T9 of tx.hpp (as Tx::allocate), then atomic stores
    put_zeros(h.ptr<std::uint64_t>(mine), 2);  // none
    h.publish(mine);
    Offset expected = null_offset;
    if (h.compare_exchange_root(name, expected, mine)) {
      cell = mine;
    } else {
      h.free(mine);
      cell = expected;
    }
  }
  std::lock_guard<std::mutex> lk(g_cells_mu);
  g_cells[key] = cell;
  return cell;
}

}  // namespace

Value get_root(Tx& tx, std::string_view name) {
  Offset cell = root_cell(tx.heap(), name, false);
  if (!cell) return Value();
  return decode(tx, read_slot(tx, cell));
}

void set_root(Tx& tx, std::string_view name, const Value& v) {
  store_slot(tx, root_cell(tx.heap(), name, true), v);  // V2
}

Dict root_dict(TxHeap& layer, std::string_view name, std::size_t buckets) {
  root_cell(layer.heap(), name, true);  // outside the transaction: no retries
  return atomically(layer, [&](Tx& tx) {
    Value v = get_root(tx, name);
    if (v.kind() == Kind::dict) return v.as_dict();
    if (!v.is_none())
      throw Error(Errc::invalid_argument,
                  fmt::format("root '{}' holds a {}, not a dict", name, to_string(v.kind())));
    Dict d = new_dict(tx, buckets);
    set_root(tx, name, d);
    return d;
  });
}

}  // namespace troupe::shm
