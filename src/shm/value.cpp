// src/shm/value.cpp: Value, a value outside shared memory (what is read
// from, and written into, a cell): its constructors, accessors, equality,
// hashing (V3 of objects.hpp: the hash of a key, the same in every process)
// and repr; the containers' liveness checks (V2).
#include <fmt/format.h>

#include <bit>
#include <cstring>

#include "shm/objects_private.hpp"
#include "troupe/shm/objects.hpp"

namespace troupe::shm {

using namespace detail;

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
}  // namespace troupe::shm
