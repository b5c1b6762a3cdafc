// troupe/shm/objects.hpp: shared objects (values, strings, bytes, tuples,
// lists, dicts, records) stored in a shared heap and changed by transactions.
//
// Owns: troupe::shm::Value (a dynamic value held by this process), the
// handles List, Dict and Record (an Offset naming a shared container and its
// creation stamp; used inside transactions, possibly later ones than the one
// that made them, V2), named roots holding a Value, and the reference counts
// and stamps of containers (V2).
//
// Encoding of a value in shared memory: a *cell* of two words {tag, payload}.
//   tag = kind | (inline length + 1) << 8   (inline strings/bytes of <= 8 bytes)
//   payload = the bool/int64/double bits, the inline bytes, or the Offset of
//   the value's block: blob {len, bytes} for strings/bytes, {n, n cells} for
//   tuples (whose items may be containers: each such item is a reference),
//   and the container blocks below, whose word 3 is the reference count and
//   whose stamp word (V2) is a random non-zero value chosen at creation.
//   list   {len, cap, items, refs, stamp, 0}   items = cap cells
//   dict   {count, nbuckets, buckets, refs, stamp, 0}   buckets = nbuckets
//          entry offsets; entry {next, hash, key cell, value cell} (chained
//          hashing)
//   record {schema, nfields, stamp, refs, nfields cells}   schema = tuple of
//          field names
// Invariants:
//   V1. Every mutable word (container fields, cells, links) is read and
//       written only through Tx (T1 of tx.hpp). Blobs, tuples and a record's
//       schema and field count are immutable after their transaction
//       commits: they are written with atomic stores before it (T9) and
//       peeked afterwards, each use after Tx::settled() (T8), since their
//       block may be freed and reused under a reader (a container a tuple
//       holds is not immutable: only its offset in the tuple is).
//   V2. Blobs and tuples have exactly one owner (the cell or tuple item
//       that holds them): storing a value copies strings, bytes and tuples,
//       and overwriting or removing it retires its copy. Lists, dicts and
//       records are shared and reference-counted: a container's refs word
//       counts the cells, tuple items and roots in shared memory that name
//       it. Storing it anywhere adds one; overwriting, erasing, popping or
//       clearing a cell, or retiring a tuple that names it, drops one. The
//       count is an ordinary word of the transaction's write set, so an
//       abort or retry rolls it back and a killed process's transaction
//       changes it wholly or not at all (X3 of tx_layout.hpp). A container
//       whose count is zero when its transaction commits (dropped to zero,
//       or created and never stored) is retired then (T7 of tx.hpp): its
//       cells drop their references in turn, and its blocks are freed when
//       that transaction commits, after their stripes are bumped (X5 of
//       tx_layout.hpp): a transaction still reading them fails its next
//       check, so nobody waits for readers.
//       Within the transaction a count may pass through zero: a container
//       dropped and stored again survives.
//       Handles (List, Dict, Record, Value) are an offset and the
//       container's stamp: they hold no reference and never write a count.
//       Every container gets a fresh random non-zero stamp when it is created
//       (never written again while it lives; zeroed in the transaction that
//       retires it), and a handle copies it when it is made (decoded from a
//       cell, a tuple item or a root, or returned by new_*). Every handle
//       method, and storing a handle anywhere, first reads the stamp word
//       through Tx::read (validated, and in the read set: a free of the
//       container after that aborts the transaction at its next check, and
//       the retry reads the stamp anew). So a handle may be kept and used in
//       any later transaction: while its container lives it works as in the
//       transaction that made it; once the container is freed (its count
//       dropped to zero, or it was created and never stored) every use
//       throws Error(not_found, "stale list handle ...") and never returns
//       or changes the words of whatever reuses its block. Read the handle
//       again from a root then. Residual risks: a block reused as a blob or
//       tuple holds arbitrary bytes, so a stale handle wrongly passes with
//       probability 2^-64 per use (a new container always draws a new
//       stamp); a container allocated by an attempt that aborted or threw is
//       freed by the layer without its stamp being zeroed, so a handle that
//       escaped such an attempt is not protected. Handles built from a raw
//       offset (List(Offset), Value::ref(k, off)) carry stamp 0 and are not
//       checked: they are valid only while the container lives.
//       Cycles (a.append(b); b.append(a), or a.append(a)) keep their counts
//       above zero and are never freed once unreachable, as in Python
//       without its cycle collector: break them (clear a cell) before
//       dropping the last outside reference.
//   V3. Dict keys are int (bigint too), bool, string, bytes or tuples of those; the hash of
//       a key depends only on its value, so every process finds it.
//   V4. A cell's tag word is written only together with its payload word, in
//       the same transaction: whoever holds the payload word's stripe (a
//       single-word atomic operation, tx.hpp) sees the cell's kind fixed.
//   V5. What a container's words say of its shape is checked before it sizes
//       an allocation, bounds a write or ends a walk: a list length past its
//       capacity or a capacity past the heap, a dict bucket count that is not
//       a power of two or past the heap, a chain with more entries than the
//       dict counts (or than the heap holds: a cycle) are Errc::bad_segment,
//       like a forged length of a blob, tuple or record (memory another
//       program scribbled over; fuzz/heap_fuzz.cpp forges them).
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "troupe/shm/tx.hpp"

namespace troupe::shm {

enum class Kind : std::uint8_t {
  none = 0,
  boolean,
  integer,
  real,
  string,
  bytes,
  tuple,
  list,
  dict,
  record,
  bigint,  // an integer outside int64: two's complement, little-endian bytes, as a blob
};
std::string_view to_string(Kind k);

class List;
class Dict;
class Record;

class Value {
 public:
  Value() = default;
  Value(std::nullptr_t) {}
  Value(bool b) : kind_(Kind::boolean), i_(b) {}
  Value(int v) : kind_(Kind::integer), i_(v) {}
  Value(long v) : kind_(Kind::integer), i_(v) {}
  Value(long long v) : kind_(Kind::integer), i_(v) {}
  Value(double d) : kind_(Kind::real), d_(d) {}
  Value(const char* s) : kind_(Kind::string), s_(s) {}
  Value(std::string_view s) : kind_(Kind::string), s_(s) {}
  Value(std::string s) : kind_(Kind::string), s_(std::move(s)) {}
  Value(const List& l);
  Value(const Dict& d);
  Value(const Record& r);
  static Value bytes(std::string_view b);
  // Bytes that are not copied into the Value: `b` must outlive it (and every
  // copy of it). For storing a caller's buffer with one copy, into the heap.
  static Value bytes_ref(std::string_view b);
  // An integer that does not fit int64, as the minimal two's-complement
  // little-endian bytes (Python's int.to_bytes(..., "little", signed=True)).
  static Value bigint(std::string_view twos_complement_le);
  static Value tuple(std::vector<Value> items);
  // list, dict or record; stamp 0 (a raw offset) is not checked (V2)
  static Value ref(Kind k, Offset off, std::uint64_t stamp = 0);

  Kind kind() const { return kind_; }
  bool is_none() const { return kind_ == Kind::none; }
  bool as_bool() const;
  std::int64_t as_int() const;
  double as_double() const;
  const std::string& as_string() const;
  std::string_view as_bytes() const;
  const std::string& as_bigint() const;  // its bytes
  const std::vector<Value>& as_tuple() const;
  List as_list() const;
  Dict as_dict() const;
  Record as_record() const;
  Offset ref() const;  // list/dict/record block, else null_offset
  std::uint64_t stamp() const { return ref() ? stamp_ : 0; }  // V2

  bool hashable() const;
  std::uint64_t hash() const;  // V3; throws Error for unhashable kinds
  bool operator==(const Value& o) const;
  std::string repr() const;

 private:
  void need(Kind k) const;
  Kind kind_ = Kind::none;
  union {
    std::int64_t i_ = 0;
    double d_;
    Offset off_;
  };
  std::uint64_t stamp_ = 0;  // containers: the creation stamp (V2)
  std::string s_;
  std::string_view borrowed_;  // bytes_ref(): the bytes, not in s_
  std::string_view text() const { return borrowed_.data() ? borrowed_ : std::string_view(s_); }
  std::shared_ptr<const std::vector<Value>> t_;
};

// ---- handles (V2: usable in any transaction; stale ones throw) ----

class List {
 public:
  List() = default;
  explicit List(Offset off, std::uint64_t stamp = 0) : off_(off), stamp_(stamp) {}
  Offset offset() const { return off_; }
  std::uint64_t stamp() const { return stamp_; }  // V2; 0: not checked
  std::size_t size(Tx& tx) const;
  Value get(Tx& tx, std::size_t i) const;  // throws Error(invalid_argument) out of range
  void set(Tx& tx, std::size_t i, const Value& v) const;
  void append(Tx& tx, const Value& v) const;
  Value pop(Tx& tx) const;  // the last item; throws when empty
  void clear(Tx& tx) const;
  std::vector<Value> items(Tx& tx) const;
  // Offset of item i's payload word (for TxHeap::fetch_add on an int item).
  Offset payload_word(Tx& tx, std::size_t i) const;

 private:
  void live(Tx& tx) const;  // V2: throws Error(not_found) for a stale handle
  Offset off_ = null_offset;
  std::uint64_t stamp_ = 0;
};

class Dict {
 public:
  Dict() = default;
  explicit Dict(Offset off, std::uint64_t stamp = 0) : off_(off), stamp_(stamp) {}
  Offset offset() const { return off_; }
  std::uint64_t stamp() const { return stamp_; }  // V2; 0: not checked
  std::size_t size(Tx& tx) const;
  std::optional<Value> get(Tx& tx, const Value& key) const;
  bool contains(Tx& tx, const Value& key) const;
  std::int64_t get_int(Tx& tx, const Value& key, std::int64_t otherwise = 0) const;
  void set(Tx& tx, const Value& key, const Value& v) const;
  bool erase(Tx& tx, const Value& key) const;
  // Adds delta to an int value (absent counts as 0); returns the new value.
  std::int64_t add(Tx& tx, const Value& key, std::int64_t delta) const;
  // add() as one atomic operation of its own: outside a transaction, a lookup
  // at a snapshot without a transaction's logs, then a single-word add on the
  // value that checks the lookup still holds (SO1-SO2 of src/shm/tx_private.hpp;
  // linearizable with transactions); an absent key, a key not stored inline
  // (V3) or a lookup that keeps meeting writers runs add() in a transaction
  // instead. Inside a transaction on txh it is add(tx, ...).
  std::int64_t increment(TxHeap& txh, const Value& key, std::int64_t delta = 1) const;
  void for_each(Tx& tx, const std::function<void(const Value& key, const Value& value)>& f) const;
  std::vector<Value> keys(Tx& tx) const;
  // Offset of key's payload word (for TxHeap::fetch_add); null if absent.
  // Valid while the key is not erased.
  Offset payload_word(Tx& tx, const Value& key) const;

 private:
  Offset find(Tx& tx, const Value& key, std::uint64_t h, Offset* link) const;
  void live(Tx& tx) const;  // V2: throws Error(not_found) for a stale handle
  Offset off_ = null_offset;
  std::uint64_t stamp_ = 0;
};

class Record {
 public:
  Record() = default;
  explicit Record(Offset off, std::uint64_t stamp = 0) : off_(off), stamp_(stamp) {}
  Offset offset() const { return off_; }
  std::uint64_t stamp() const { return stamp_; }  // V2; 0: not checked
  std::vector<std::string> fields(Tx& tx) const;
  Value get(Tx& tx, std::string_view field) const;  // throws Error(not_found)
  void set(Tx& tx, std::string_view field, const Value& v) const;
  Offset payload_word(Tx& tx, std::string_view field) const;  // stable while the record lives

 private:
  std::size_t index(Tx& tx, std::string_view field) const;
  void live(Tx& tx) const;  // V2: throws Error(not_found) for a stale handle
  Offset off_ = null_offset;
  std::uint64_t stamp_ = 0;
};

// ---- creating containers and roots ----

List new_list(Tx& tx, std::size_t capacity = 4);
Dict new_dict(Tx& tx, std::size_t buckets = 16);
Record new_record(Tx& tx, std::initializer_list<std::string_view> fields);
Record new_record(Tx& tx, const std::vector<std::string>& fields);

// Named roots: the heap's root `name` names a published cell holding a Value
// cell (created on first use, never freed). Reading an absent root gives none.
Value get_root(Tx& tx, std::string_view name);
void set_root(Tx& tx, std::string_view name, const Value& v);
// The dict at root `name`, created (with `buckets`) if the root is none.
Dict root_dict(TxHeap& txh, std::string_view name, std::size_t buckets = 16);

}  // namespace troupe::shm
