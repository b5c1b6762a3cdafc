// src/shm/record.cpp: Record, a fixed set of named fields in shared
// memory: {schema, nfields, stamp, refs, cells}, the schema an immutable
// tuple of the field names (V1 of objects.hpp: peeked, T8). Keeps V1 and V2.
#include <fmt/format.h>

#include <cstring>

#include "shm/objects_private.hpp"
#include "troupe/shm/objects.hpp"

namespace troupe::shm {

using namespace detail;

// ---- Record: {schema, nfields, stamp, refs, cells} -----------------------------------

Record new_record(Tx& tx, const std::vector<std::string>& fields) {
  std::vector<Value> names;
  for (auto& f : fields) names.emplace_back(f);
  Cell schema = encode(tx, Value::tuple(std::move(names)));
  Offset b = tx.allocate(kRecordCells + 16 * fields.size());
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

// The schema's names are inline cells or blobs, all immutable (T8).
std::size_t Record::index(Tx& tx, std::string_view field) const {
  std::vector<Cell> names = read_tuple(tx, record_header(tx, off_).first);
  for (std::size_t i = 0; i < names.size(); ++i) {
    Cell s = names[i];
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
  return decode(tx, read_cell(tx, off_ + kRecordCells + 16 * index(tx, field)));
}

void Record::set(Tx& tx, std::string_view field, const Value& v) const {
  live(tx);
  store_cell(tx, off_ + kRecordCells + 16 * index(tx, field), v);  // V2
}

Offset Record::payload_word(Tx& tx, std::string_view field) const {
  live(tx);
  return off_ + kRecordCells + 16 * index(tx, field) + 8;
}
}  // namespace troupe::shm
