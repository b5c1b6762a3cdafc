// src/shm/objects_private.hpp: what the shared-objects files share
// (encoding.cpp, value.cpp, list.cpp, dict.cpp, record.cpp, roots.cpp): the
// cell a value is stored in ({tag, payload}), the tags, the layouts of the
// container blocks, and the encoding's entry points (encoding.cpp). Keeps
// V4 (objects.hpp: write_cell is the only writer of a tag). Private: not
// installed.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "troupe/shm/objects.hpp"

namespace troupe::shm::detail {

struct Cell {
  std::uint64_t tag = 0;
  std::uint64_t payload = 0;
};

constexpr std::uint64_t make_tag(Kind k, unsigned inline_plus1 = 0) {
  return static_cast<std::uint64_t>(k) | std::uint64_t{inline_plus1} << 8;
}
static_assert(make_tag(Kind::integer) == detail::kIntCellTag);  // V4
inline Kind kind_of(std::uint64_t tag) { return static_cast<Kind>(tag & 0xff); }
inline unsigned inline_len_plus1(std::uint64_t tag) {
  return static_cast<unsigned>(tag >> 8 & 0xff);
}

inline Cell read_cell(Tx& tx, Offset at) { return {tx.read(at), tx.read(at + 8)}; }
// V4: the only writer of a cell's tag, always with its payload.
inline void write_cell(Tx& tx, Offset at, Cell s) {
  tx.write(at, s.tag);
  tx.write(at + 8, s.payload);
}

// T9 of tx.hpp: words of a fresh block are stored atomically (relaxed: the
// publishing commit's release orders them), since a transaction holding a
// stale offset to the block's previous incarnation may be peeking at them.
inline void put(std::uint64_t* p, std::uint64_t v) {
  std::atomic_ref(*p).store(v, std::memory_order_relaxed);
}
inline void put_zeros(std::uint64_t* p, std::size_t words) {
  for (std::size_t i = 0; i < words; ++i) put(p + i, 0);
}

inline bool is_container(Kind k) { return k == Kind::list || k == Kind::dict || k == Kind::record; }

// V2: word 3 of every container block is its reference count.
constexpr Offset kRefsWord = 24;
constexpr Offset kRecordCells = 32;       // record {schema, nfields, stamp, refs, cells}
constexpr std::size_t kHeaderBytes = 48;  // list/dict {.., refs, stamp, 0}

// V2: where a container keeps its creation stamp (never written while it
// lives: its own stripe, so reading it conflicts only with the container's
// free).
constexpr Offset stamp_word(Kind k) { return k == Kind::record ? 16 : 32; }

// ---- encoding.cpp ----
std::uint64_t fresh_stamp();
// V5 (objects.hpp), T8/T10: a length, count or chain read from the heap that
// no sound container could have is corruption: a typed error, never a huge
// allocation or a walk without end.
[[noreturn]] void corrupt(const char* what, Offset b, std::uint64_t n);
void check_live(Tx& tx, Kind k, Offset b, std::uint64_t stamp);
std::pair<Offset, std::uint64_t> record_header(Tx& tx, Offset r);
void fresh_container(Tx& tx, Kind k, Offset b);
std::uint64_t init_header(Tx& tx, Kind k, Offset b, std::uint64_t capacity, Offset array);
std::optional<Cell> encode_inline(const Value& v);
Cell encode(Tx& tx, const Value& v);
void encode_into(Tx& tx, std::uint64_t* dst, const Value& v);
Value decode(Tx& tx, Cell s);
std::vector<Cell> read_tuple(Tx& tx, Offset b);
Value decode_block(Tx& tx, Kind k, Offset b);
bool blob_equals(Tx& tx, Offset b, std::string_view s);
void retire_cell(Tx& tx, Cell s);
void store_cell(Tx& tx, Offset at, const Value& v);
std::uint64_t mix(std::uint64_t x);
std::uint64_t fnv(std::string_view s, std::uint64_t seed);

}  // namespace troupe::shm::detail
