// tests/shm/bank_util.hpp: what the bank tests and their worker
// program share: the control block (raw heap root "bank.ctl"), the accounts
// dict (root "accounts") and the transfer/audit loop.
// Invariants:
//   B1. The sum of all balances is kAccountStart * accounts at every
//       transaction boundary; audits (read-only transactions) check it from
//       inside the block, so a half-applied transfer would be counted.
#pragma once

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <troupe/shm/objects.hpp>
#include <vector>

extern char** environ;

namespace bank {

using namespace troupe::shm;

inline constexpr std::int64_t kAccountStart = 1000;

struct Ctl {
  std::atomic<std::uint64_t> stop;        // parent: 1 = workers finish
  std::atomic<std::uint64_t> violations;  // anyone: B1 broken
  std::atomic<std::uint64_t> transfers;   // statistics
  std::atomic<std::uint64_t> audits;
  std::atomic<std::uint64_t> accounts;  // parent, before any worker
};

inline Ctl& ctl(Heap& h) { return *h.ptr<Ctl>(h.root("bank.ctl")); }

// Parent: a heap with `accounts` accounts of kAccountStart each.
inline void init_bank(Heap& h, std::uint64_t accounts) {
  Offset c = h.allocate(sizeof(Ctl));
  auto* p = h.ptr<Ctl>(c);
  new (p) Ctl{};
  p->accounts.store(accounts);
  h.publish(c);
  h.set_root("bank.ctl", c);
  TxHeap& l = TxHeap::attach(h);
  Dict d = root_dict(l, "accounts", accounts);
  for (std::uint64_t i = 0; i < accounts; i += 512)
    atomically(l, [&](Tx& tx) {
      for (std::uint64_t k = i; k < std::min(accounts, i + 512); ++k)
        d.set(tx, static_cast<long long>(k), kAccountStart);
    });
}

inline std::int64_t total(Heap& h) {
  TxHeap& l = TxHeap::attach(h);
  return atomically(l, [&](Tx& tx) {
    Dict d = get_root(tx, "accounts").as_dict();
    std::int64_t sum = 0;
    d.for_each(tx, [&](const Value&, const Value& v) { sum += v.as_int(); });
    return sum;
  });
}

// One thread's loop: transfers, and every 10th operation an audit (B1).
inline void run_bank(Heap& h, std::uint64_t seed, std::uint64_t max_ops = ~0ull) {
  TxHeap& l = TxHeap::attach(h);
  Ctl& c = ctl(h);
  const auto n = static_cast<long long>(c.accounts.load());
  const std::int64_t expect = kAccountStart * n;
  Dict d = atomically(l, [&](Tx& tx) { return get_root(tx, "accounts").as_dict(); });
  std::mt19937_64 rng(seed);
  const std::uint64_t audit_every = n <= 64 ? 10 : 200;  // big audits read every account
  for (std::uint64_t op = 0; op < max_ops && !c.stop.load(std::memory_order_relaxed); ++op) {
    if (op % audit_every == audit_every - 1) {
      // Read-only audit of every account; B1 must hold inside the block.
      atomically(l, [&](Tx& tx) {
        std::int64_t sum = 0;
        d.for_each(tx, [&](const Value&, const Value& v) { sum += v.as_int(); });
        if (sum != expect) c.violations.fetch_add(1);
      });
      c.audits.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    long long a = static_cast<long long>(rng() % n), b = static_cast<long long>(rng() % n);
    std::int64_t amt = static_cast<std::int64_t>(rng() % 50);
    atomically(l, [&](Tx& tx) {
      d.add(tx, a, -amt);
      d.add(tx, b, amt);
    });
    c.transfers.fetch_add(1, std::memory_order_relaxed);
  }
}

// Churn (allocation and reclamation under kills): root "churn" is a dict of
// kChurnKeys int keys whose values are long strings made of one letter,
// 'a' + key % 26 (C1), or records shared with root "churn.pool", a dict of
// kChurnRecords records {s: a long string of one capital letter} (C2);
// transactions replace, erase and re-insert values, store pool records in
// the churn dict and replace pool records (dropping references: the old
// record is freed once no churn value names it); now and then one replaces
// every key at once, a transaction whose log outgrows the first one (X9 of
// tx_layout.hpp). Read-only ones check C1
// and that each record's reference count is the number of values naming it
// (C3), from inside the block.
inline constexpr long kChurnKeys = 64;
inline constexpr long kChurnRecords = 8;

inline Record churn_record(Tx& tx, long k, std::size_t len) {
  Record r = new_record(tx, {"s"});
  r.set(tx, "s", std::string(9 + len % 200, static_cast<char>('A' + k % 26)));
  return r;
}

inline void init_churn(Heap& h) {
  Offset c = h.allocate(sizeof(Ctl));
  new (h.ptr<Ctl>(c)) Ctl{};
  h.publish(c);
  h.set_root("bank.ctl", c);
  TxHeap& l = TxHeap::attach(h);
  root_dict(l, "churn", 16);
  Dict pool = root_dict(l, "churn.pool", 16);
  atomically(l, [&](Tx& tx) {
    for (long k = 0; k < kChurnRecords; ++k) pool.set(tx, k, churn_record(tx, k, 0));
  });
}

// Violations of C1-C3 seen in one snapshot.
inline std::uint64_t churn_audit(Tx& tx, Dict d, Dict pool) {
  std::uint64_t bad = 0;
  std::map<Offset, std::uint64_t> refs;
  d.for_each(tx, [&](const Value& key, const Value& v) {
    if (v.kind() == Kind::record) {
      ++refs[v.ref()];
      return;
    }
    char want = static_cast<char>('a' + key.as_int() % 26);
    for (char ch : v.as_string())
      if (ch != want) {
        ++bad;
        break;
      }
  });
  pool.for_each(tx, [&](const Value&, const Value& v) { ++refs[v.ref()]; });
  for (auto [rec, n] : refs) {
    std::string s = Record(rec).get(tx, "s").as_string();
    bad += s.find_first_not_of(s[0]) != std::string::npos;  // C2
    bad += tx.read(rec + 24) != n;                          // C3 (objects.hpp: word 3)
  }
  return bad;
}

inline void run_churn(Heap& h, std::uint64_t seed, std::uint64_t max_ops = ~0ull) {
  TxHeap& l = TxHeap::attach(h);
  Ctl& c = ctl(h);
  Dict d = atomically(l, [&](Tx& tx) { return get_root(tx, "churn").as_dict(); });
  Dict pool = atomically(l, [&](Tx& tx) { return get_root(tx, "churn.pool").as_dict(); });
  std::mt19937_64 rng(seed);
  for (std::uint64_t op = 0; op < max_ops && !c.stop.load(std::memory_order_relaxed); ++op) {
    long k = static_cast<long>(rng() % kChurnKeys);
    std::size_t len = 9 + rng() % 300;
    if (op % 97 == 48) {  // one transaction over every key: grows the log past 64 entries (X9)
      atomically(l, [&](Tx& tx) {
        for (long j = 0; j < kChurnKeys; ++j)
          d.set(tx, j, std::string(len, static_cast<char>('a' + j % 26)));
      });
    } else if (op % 10 == 9) {
      if (std::uint64_t bad = atomically(l, [&](Tx& tx) { return churn_audit(tx, d, pool); }))
        c.violations.fetch_add(bad);
      c.audits.fetch_add(1, std::memory_order_relaxed);
    } else if (op % 7 == 3) {
      atomically(l, [&](Tx& tx) { d.erase(tx, k); });
    } else if (op % 7 == 5) {
      atomically(l, [&](Tx& tx) { d.set(tx, k, *pool.get(tx, k % kChurnRecords)); });
    } else if (op % 14 == 6) {
      atomically(l, [&](Tx& tx) {
        pool.set(tx, k % kChurnRecords, churn_record(tx, k, len));
        if (op % 4 == 0) new_list(tx).append(tx, *pool.get(tx, k % kChurnRecords));  // dropped
      });
    } else {
      atomically(l, [&](Tx& tx) {
        d.set(tx, k, std::string(len, static_cast<char>('a' + k % 26)));
        if (op % 5 == 0)
          d.set(tx, (k + 1) % kChurnKeys,
                std::string(len / 2 + 9, static_cast<char>('a' + (k + 1) % kChurnKeys % 26)));
      });
      c.transfers.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

// Bytes reachable from the churn roots (quiescent): cells, dicts, buckets,
// entries, value blobs, and each record once with its schema and blob.
inline std::size_t churn_bytes(Heap& h) {
  TxHeap& l = TxHeap::attach(h);
  std::size_t n = h.usable_size(h.root("churn")) + h.usable_size(h.root("churn.pool")) +
                  h.usable_size(h.root("bank.ctl"));
  return n + atomically(l, [&](Tx& tx) {
           std::vector<Offset> records;
           auto dict_bytes = [&](Dict d) {
             std::size_t b = h.usable_size(d.offset()) + h.usable_size(tx.read(d.offset() + 16));
             std::uint64_t nb = tx.read(d.offset() + 8);
             for (std::uint64_t i = 0; i < nb; ++i)
               for (Offset e = tx.read(tx.read(d.offset() + 16) + 8 * i); e; e = tx.read(e)) {
                 b += h.usable_size(e);
                 std::uint64_t tag = tx.read(e + 32);
                 if (static_cast<Kind>(tag & 0xff) == Kind::record)
                   records.push_back(tx.read(e + 40));
                 else if ((tag >> 8 & 0xff) == 0)
                   b += h.usable_size(tx.read(e + 40));
               }
             return b;
           };
           std::size_t b = dict_bytes(get_root(tx, "churn").as_dict()) +
                           dict_bytes(get_root(tx, "churn.pool").as_dict());
           std::sort(records.begin(), records.end());
           records.erase(std::unique(records.begin(), records.end()), records.end());
           // Record {schema, nfields, 0, refs, slot "s" at 32}; the schema tuple
           // holds one inline name.
           for (Offset r : records)
             b += h.usable_size(r) + h.usable_size(tx.read(r)) + h.usable_size(tx.read(r + 40));
           return b;
         });
}

#ifdef BANK_WORKER_PATH
inline pid_t spawn(const std::vector<std::string>& args, const std::string& fault = "") {
  std::vector<char*> argv;
  std::string path = BANK_WORKER_PATH;
  argv.push_back(path.data());
  std::vector<std::string> a = args;
  for (auto& s : a) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string s(*e);
    if (s.rfind("TROUPE_SHM_FAULT=", 0) == 0) continue;
    env.push_back(s);
  }
  if (!fault.empty()) env.push_back("TROUPE_SHM_FAULT=" + fault);
  std::vector<char*> envp;
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  pid_t pid = -1;
  int r = posix_spawn(&pid, path.c_str(), nullptr, nullptr, argv.data(), envp.data());
  return r == 0 ? pid : -1;
}
#endif

inline int wait_status(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
  }
  return status;
}

}  // namespace bank
