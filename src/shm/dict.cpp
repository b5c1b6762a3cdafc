// src/shm/dict.cpp: Dict, a chained hash table in shared memory:
// {count, nbuckets, buckets, refs, stamp}, entries {next, hash, key cell,
// value cell}, rechained into 4x the buckets when it holds twice as many
// entries. Keeps V1-V3 (objects.hpp: keys hashable, never containers) and
// V5 (a forged bucket count or a chain cycle is a typed error).
#include <fmt/format.h>

#include <bit>
#include <vector>

#include "shm/objects_private.hpp"
#include "shm/tx_private.hpp"
#include "troupe/shm/objects.hpp"

namespace troupe::shm {

using namespace detail;

namespace {

bool key_equals(Tx& tx, Offset cell_at, const Value& key) {
  if (auto s = encode_inline(key))
    return tx.read(cell_at) == s->tag && tx.read(cell_at + 8) == s->payload;
  Cell s = read_cell(tx, cell_at);
  if (kind_of(s.tag) != key.kind() || inline_len_plus1(s.tag) != 0) return false;
  return decode(tx, s) == key;
}

// The chain walk of Dict::find for any reader R (Tx, or SnapshotOp: a read
// that returns 0 ends the walk, SO1 of tx_private.hpp). `link` gets the word
// that points at the entry found, or the chain's last next word.
// With `check_hash` false, `equals` alone decides (an inline key's cell is
// the whole key: one read fewer per entry than the hash and then the cell).
// `after_nb(nb)` runs after the first read of the header, with the bucket
// count read (false: stop, null).
// V5: a bucket count that is not a power of two, or a chain longer than the
// heap could hold entries (a cycle), is corruption: a typed error, not a
// bucket past the array or a walk without end. The chain bound is looked at
// every kChainCheck steps, so a healthy walk pays one test a step.
constexpr std::uint64_t kChainCheck = 4096;
void check_chain(const Heap& heap, Offset dict, std::uint64_t steps) {
  if (steps > heap.committed_bytes() / 48) corrupt("dict chain", dict, steps);
}
void check_buckets(const Heap& heap, Offset dict, std::uint64_t nb) {
  if (!std::has_single_bit(nb) || nb >= heap.committed_bytes() / 8)
    corrupt("dict buckets", dict, nb);
}

template <class R, class Eq, class After>
Offset find_entry(R& r, const Heap& heap, Offset dict, std::uint64_t h, Offset* link,
                  bool check_hash, Eq&& equals, After&& after_nb) {
  std::uint64_t nb = r.read(dict + 8);
  if (!after_nb(nb)) return null_offset;
  Offset at = r.read(dict + 16) + 8 * (h & (nb - 1));
  std::uint64_t steps = 0;
  for (Offset e = r.read(at); e; e = r.read(at)) {
    if ((!check_hash || r.read(e + 8) == h) && equals(e + 16)) {
      if (link) *link = at;
      return e;
    }
    at = e;  // the entry's next word
    if (++steps % kChainCheck == 0) check_chain(heap, dict, steps);  // V5
  }
  if (link) *link = at;
  return null_offset;
}

}  // namespace

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
  return find_entry(
      tx, tx.heap(), off_, h, link, true, [&](Offset cell) { return key_equals(tx, cell, key); },
      [&](std::uint64_t nb) {
        if (!std::has_single_bit(nb)) corrupt("dict buckets", off_, nb);  // V5
        return true;
      });
}

std::optional<Value> Dict::get(Tx& tx, const Value& key) const {
  live(tx);
  Offset e = find(tx, key, key.hash(), nullptr);
  if (!e) return std::nullopt;
  return decode(tx, read_cell(tx, e + 32));
}

bool Dict::contains(Tx& tx, const Value& key) const {
  live(tx);
  return find(tx, key, key.hash(), nullptr) != null_offset;
}

std::int64_t Dict::get_int(Tx& tx, const Value& key, std::int64_t otherwise) const {
  live(tx);
  Offset e = find(tx, key, key.hash(), nullptr);
  if (!e) return otherwise;
  return decode(tx, read_cell(tx, e + 32)).as_int();
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
    store_cell(tx, e + 32, v);  // V2
    return;
  }
  Cell fresh = encode(tx, v);  // V2
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
    check_buckets(tx.heap(), off_, nb);  // V5: before it sizes a vector
    std::uint64_t nb2 = nb * 4;
    Offset old = tx.read(off_ + 16);
    std::vector<Offset> heads(nb2, 0);
    std::uint64_t steps = 0;
    for (std::uint64_t i = 0; i < nb; ++i)
      for (Offset x = tx.read(old + 8 * i); x;) {
        if (++steps > count) corrupt("dict chain", off_, steps);  // V5: more entries than counted
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

std::int64_t Dict::increment(TxHeap& txh, const Value& key, std::int64_t delta) const {
  auto in_tx = [&] { return atomically(txh, [&](Tx& tx) { return add(tx, key, delta); }); };
  if (current_tx() || off_ == null_offset) return in_tx();  // joins it, or its error
  auto fall_back = [&] {
    increment_fallbacks().fetch_add(1, std::memory_order_relaxed);
    return in_tx();
  };
  const auto cell = encode_inline(key);
  if (!cell) return fall_back();  // its comparison decodes: a transaction's reads
  const std::uint64_t h = key.hash();
  SnapshotOp op(txh);
  for (unsigned n = 0; n < 64; ++n) {
    op.begin();
    // V2: a stale handle is told so by add()'s check, in a transaction. The
    // stamp is peeked (SO1) right after nb's validated read: had that read
    // seen the release of a transaction retiring the dict, the peek would
    // see the stamp it zeroed before; so a match means that transaction
    // locks after our read, releases at a version above rv (X8 b) and SO2
    // refuses the op, while every read before then is the live dict's.
    bool stale = false, odd = false;
    const Offset e = find_entry(
        op, txh.heap(), off_, h, nullptr, false,
        [&](Offset at) {
          return op.peek(at) == cell->tag && op.peek(at + 8) == cell->payload;  // SO1
        },
        [&](std::uint64_t nb) {
          stale = stamp_ != 0 && !op.failed() && op.peek(off_ + stamp_word(Kind::dict)) != stamp_;
          // V5: a bucket count that is not a power of two (a failed read
          // returned 0, SO1) is a stale handle's or corrupt memory: the
          // transaction below tells which, with its typed error.
          odd = nb != 0 && !std::has_single_bit(nb);
          return !stale && !odd;
        });
    if (stale || odd) break;
    if (op.failed()) {
      if (!op.retry(n)) break;
      continue;
    }
    if (!e) break;  // absent: set() in a transaction
    std::int64_t old = 0;
    switch (op.fetch_add(e + 40, delta, &old)) {
      case SnapshotOp::Result::done:
        return old + delta;
      case SnapshotOp::Result::not_int:
        throw Error(Errc::invalid_argument,
                    fmt::format("dict value of {} is not an int", key.repr()));
      case SnapshotOp::Result::conflict:
        if (!op.retry(n)) n = 64;  // to a transaction
        break;
    }
  }
  return fall_back();
}

bool Dict::erase(Tx& tx, const Value& key) const {
  live(tx);
  Offset link = 0;
  Offset e = find(tx, key, key.hash(), &link);
  if (!e) return false;
  tx.write(link, tx.read(e));
  retire_cell(tx, read_cell(tx, e + 16));
  retire_cell(tx, read_cell(tx, e + 32));
  tx.retire(e);
  tx.write(off_, tx.read(off_) - 1);
  return true;
}

void Dict::for_each(Tx& tx,
                    const std::function<void(const Value& key, const Value& value)>& f) const {
  live(tx);
  std::uint64_t count = tx.read(off_), nb = tx.read(off_ + 8);
  check_buckets(tx.heap(), off_, nb);  // V5
  Offset buckets = tx.read(off_ + 16);
  std::uint64_t steps = 0;
  for (std::uint64_t i = 0; i < nb; ++i)
    for (Offset e = tx.read(buckets + 8 * i); e; e = tx.read(e)) {
      // V5: more entries than counted (re-read: f may have added some)
      if (++steps > count && steps > (count = tx.read(off_))) corrupt("dict chain", off_, steps);
      f(decode(tx, read_cell(tx, e + 16)), decode(tx, read_cell(tx, e + 32)));
    }
}

std::vector<Value> Dict::keys(Tx& tx) const {
  live(tx);
  std::vector<Value> out;
  for_each(tx, [&](const Value& k, const Value&) { out.push_back(k); });
  return out;
}
}  // namespace troupe::shm
