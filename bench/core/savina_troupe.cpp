// bench/core/savina_troupe.cpp: troupe's side of bench_savina, written the way
// a troupe user would: actors are plain structs made active, a message is a
// `when` on the receiving actor sent from a behaviour of the sender, replies
// are behaviours sent back (or the Promise a `when` returns), and a driver
// waits on a promise that the last behaviour fulfils. No batching: one `when`
// per Savina message, as CAF's side sends one message each.
//
// Invariants:
//   ST1. A Resolver lives in exactly one place (an actor's state or a closure
//       that moves it along) and is fulfilled once, by the behaviour that
//       sees the end of the case.
//   ST2. Actors that refer to each other in a cycle (ring neighbours, big's
//       peer table) have the cycle cut by a last behaviour once the case is
//       done, so every actor is freed (actor.hpp AC1).
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include <troupe/troupe.hpp>

#include "savina.hpp"

namespace tr = troupe;

namespace savina::troupe_side {

void start(std::size_t threads) { tr::init(tr::Options{.threads = threads}); }
void settle() { tr::wait_idle(); }

// --- ping-pong: two actors bounce a ball; the pinger counts the round trips.
namespace pp {
struct Pinger {
  std::int64_t pongs = 0;
  tr::Resolver<std::int64_t> done;  // ST1
};
struct Ponger {
  std::int64_t pings = 0;
};

void serve(tr::Actor<Pinger> pinger, tr::Actor<Ponger> ponger, std::int64_t left) {
  tr::when(ponger, [pinger = std::move(pinger), ponger, left](Ponger& p) mutable {
    ++p.pings;
    tr::when(pinger, [pinger, ponger = std::move(ponger), left](Pinger& q) mutable {
      ++q.pongs;
      if (left > 1)
        serve(std::move(pinger), std::move(ponger), left - 1);
      else
        q.done.set_value(q.pongs);
    });
  });
}
}  // namespace pp

double pingpong(const Sizes& s) {
  Stopwatch sw;
  auto [done, res] = tr::make_promise<std::int64_t>();
  auto pinger = tr::make_actor<pp::Pinger>(pp::Pinger{0, std::move(res)});
  auto ponger = tr::make_actor<pp::Ponger>();
  pp::serve(pinger, ponger, s.pingpong_round_trips);
  std::int64_t pongs = done.get();
  double ms = sw.ms();
  std::int64_t pings = tr::when(tr::read(ponger), [](const pp::Ponger& p) { return p.pings; }).get();
  SAVINA_CHECK(pongs == s.pingpong_round_trips && pings == pongs,
               "troupe pingpong: {} pongs, {} pings, expected {}", pongs, pings,
               s.pingpong_round_trips);
  return ms;
}

// --- counting: a producer actor sends N increments to a counter, then asks it
// for the count.
namespace count {
struct Counter {
  std::int64_t n = 0;
};
struct Producer {};
}  // namespace count

double counting(const Sizes& s) {
  Stopwatch sw;
  auto counter = tr::make_actor<count::Counter>();
  auto producer = tr::make_actor<count::Producer>();
  auto reply = tr::when(producer, [counter, n = s.counting_messages](count::Producer&) {
    for (std::int64_t i = 0; i < n; ++i) tr::when(counter, [](count::Counter& c) { ++c.n; });
    return tr::when(tr::read(counter), [](const count::Counter& c) { return c.n; });
  });
  std::int64_t got = reply.get();  // when() flattens the returned promise
  double ms = sw.ms();
  SAVINA_CHECK(got == s.counting_messages, "troupe counting: counted {}, expected {}", got,
               s.counting_messages);
  return ms;
}

// --- fork-join throughput: the driver sends M messages to each of K actors,
// round-robin; each does trivial work per message; then the driver asks each
// for its count.
namespace fj {
struct Worker {
  std::int64_t count = 0;
  double acc = 0;
};
}  // namespace fj

double fjthrput_limited(const Sizes& s, std::uint32_t mailbox_limit) {
  Stopwatch sw;
  std::vector<tr::Actor<fj::Worker>> workers;
  for (std::int64_t k = 0; k < s.fj_actors; ++k) {
    workers.push_back(tr::make_actor<fj::Worker>());
    if (mailbox_limit) workers.back().set_mailbox_limit(mailbox_limit);
  }
  for (std::int64_t m = 0; m < s.fj_messages; ++m)
    for (auto& w : workers) tr::when(w, [](fj::Worker& x) { x.acc += fj_work(++x.count); });
  std::vector<tr::Promise<std::int64_t>> counts;
  for (auto& w : workers)
    counts.push_back(tr::when(tr::read(w), [](const fj::Worker& x) { return x.count; }));
  std::vector<std::int64_t> got = tr::when_all(std::move(counts)).get();
  double ms = sw.ms();
  for (std::int64_t c : got)
    SAVINA_CHECK(c == s.fj_messages, "troupe fjthrput: an actor got {} messages, expected {}", c,
                 s.fj_messages);
  return ms;
}

double fjthrput(const Sizes& s) { return fjthrput_limited(s, 0); }

// The same with each worker's mailbox bounded at 1000 (troupe/backpressure.hpp):
// the sending thread blocks instead of queueing all 6 M messages at once.
double fjthrput_bounded(const Sizes& s) { return fjthrput_limited(s, 1000); }

// --- fork-join create: N actors, each made for one message: it does trivial
// work and reports to a sink, which fulfils the driver's promise at N.
namespace fjc {
struct Sink {
  std::int64_t expected = 0;
  std::int64_t done = 0;
  double acc = 0;
  tr::Resolver<std::int64_t> res;  // ST1
};
struct Worker {
  double v = 0;
};
}  // namespace fjc

double fjcreate(const Sizes& s) {
  Stopwatch sw;
  auto [done, res] = tr::make_promise<std::int64_t>();
  auto sink = tr::make_actor<fjc::Sink>(fjc::Sink{s.fjc_actors, 0, 0.0, std::move(res)});
  for (std::int64_t i = 0; i < s.fjc_actors; ++i) {
    auto w = tr::make_actor<fjc::Worker>();
    tr::when(w, [sink, i](fjc::Worker& x) {
      x.v = fj_work(i);
      tr::when(sink, [v = x.v](fjc::Sink& k) {
        k.acc += v;
        if (++k.done == k.expected) k.res.set_value(k.done);
      });
    });
  }
  std::int64_t got = done.get();
  double ms = sw.ms();
  SAVINA_CHECK(got == s.fjc_actors, "troupe fjcreate: {} reports, expected {}", got, s.fjc_actors);
  return ms;
}

// --- thread ring: a token goes round a ring of actors, hops times; each node
// knows its successor; the node that gets the token at 0 fulfils the driver's
// promise, which travels with the token.
namespace ring {
struct Node {
  tr::Actor<Node> next;  // cut after the run (ST2)
  std::int64_t tokens = 0;
};

void pass(const tr::Actor<Node>& to, std::int64_t hops, tr::Resolver<std::int64_t> res) {
  tr::when(to, [hops, res = std::move(res)](Node& n) mutable {
    ++n.tokens;
    if (hops == 0)
      res.set_value(hops);
    else
      pass(n.next, hops - 1, std::move(res));
  });
}
}  // namespace ring

double threadring(const Sizes& s) {
  Stopwatch sw;
  std::vector<tr::Actor<ring::Node>> nodes;
  for (std::int64_t i = 0; i < s.ring_actors; ++i) nodes.push_back(tr::make_actor<ring::Node>());
  for (std::size_t i = 0; i < nodes.size(); ++i)
    tr::when(nodes[i], [next = nodes[(i + 1) % nodes.size()]](ring::Node& n) { n.next = next; });
  auto [done, res] = tr::make_promise<std::int64_t>();
  ring::pass(nodes[0], s.ring_hops, std::move(res));
  done.get();
  double ms = sw.ms();
  std::int64_t tokens = tr::when(nodes, [](std::span<ring::Node*> ns) {
                          std::int64_t t = 0;
                          for (ring::Node* n : ns) {
                            t += n->tokens;
                            n->next = {};  // ST2
                          }
                          return t;
                        }).get();
  SAVINA_CHECK(tokens == s.ring_hops + 1, "troupe threadring: {} token arrivals, expected {}",
               tokens, s.ring_hops + 1);
  return ms;
}

// --- chameneos (Savina): chameneos meet at a mall (the broker). The mall keeps
// the one waiting; when a second arrives, it sends the pair off to meet: the
// waiting one takes the complement colour and tells the arriving one, and
// both come back to the mall. After the last meeting the mall sends each
// arrival away; it reports its meetings to the mall and fades.
namespace cham {
struct Chameneo {
  int color = 0;
  std::int64_t meetings = 0;
};
struct Mall {
  std::int64_t left = 0;  // meetings still to hold
  std::int64_t chameneos = 0;
  tr::Actor<Chameneo> waiting;
  std::int64_t faded = 0;
  std::int64_t sum = 0;
  tr::Resolver<std::int64_t> res;  // ST1
};

void meet(tr::Actor<Mall> mall, tr::Actor<Chameneo> host, tr::Actor<Chameneo> guest, int color);

void leave(tr::Actor<Mall> mall, const tr::Actor<Chameneo>& me) {
  tr::when(me, [mall = std::move(mall)](Chameneo& c) {
    tr::when(mall, [k = c.meetings](Mall& m) {
      m.sum += k;
      if (++m.faded == m.chameneos) m.res.set_value(m.sum);
    });
  });
}

void arrive(tr::Actor<Mall> mall, tr::Actor<Chameneo> me, int color) {
  tr::when(mall, [mall, me = std::move(me), color](Mall& m) mutable {
    if (m.left == 0) return leave(std::move(mall), me);
    if (!m.waiting) {
      m.waiting = std::move(me);
      return;
    }
    --m.left;
    meet(std::move(mall), std::exchange(m.waiting, {}), std::move(me), color);
  });
}

// host waited at the mall; guest arrived with colour `color`.
void meet(tr::Actor<Mall> mall, tr::Actor<Chameneo> host, tr::Actor<Chameneo> guest, int color) {
  tr::when(host, [mall = std::move(mall), host, guest = std::move(guest), color](
                     Chameneo& h) mutable {
    h.color = complement(h.color, color);
    ++h.meetings;
    const int c = h.color;
    tr::when(guest, [mall, guest, c](Chameneo& g) mutable {
      g.color = c;
      ++g.meetings;
      arrive(std::move(mall), std::move(guest), c);
    });
    arrive(std::move(mall), std::move(host), c);
  });
}
}  // namespace cham

double chameneos(const Sizes& s) {
  Stopwatch sw;
  auto [done, res] = tr::make_promise<std::int64_t>();
  auto mall = tr::make_actor<cham::Mall>(
      cham::Mall{s.chameneos_meetings, s.chameneos, {}, 0, 0, std::move(res)});
  for (std::int64_t i = 0; i < s.chameneos; ++i) {
    const int color = static_cast<int>(i % 3);
    cham::arrive(mall, tr::make_actor<cham::Chameneo>(cham::Chameneo{color, 0}), color);
  }
  std::int64_t sum = done.get();
  double ms = sw.ms();
  SAVINA_CHECK(sum == 2 * s.chameneos_meetings, "troupe chameneos: {} meetings counted, expected {}",
               sum, 2 * s.chameneos_meetings);
  return ms;
}

// --- big (Savina): N actors; each sends M pings, one at a time, to random
// peers; a ping is answered with a pong; after its M-th pong an actor tells
// the sink, which fulfils the driver's promise when all N are done.
namespace bg {
struct Sink {
  std::int64_t actors = 0;
  std::int64_t done = 0;
  tr::Resolver<std::int64_t> res;  // ST1
};
struct Node;
using Peers = std::vector<tr::Actor<Node>>;
struct Node {
  std::uint32_t index = 0;
  std::int64_t pings_left = 0;
  std::uint64_t rng = 0;
  tr::Actor<Sink> sink;
  std::shared_ptr<const Peers> peers;  // cut after the run (ST2)
  std::int64_t answered = 0;
};

void on_pong(Node& n);

void send_ping(Node& n) {
  const Peers& peers = *n.peers;
  const tr::Actor<Node>& to = peers[xorshift(n.rng) % peers.size()];
  tr::when(to, [from = n.index](Node& t) {
    ++t.answered;
    tr::when((*t.peers)[from], [](Node& f) { on_pong(f); });
  });
}

void on_pong(Node& n) {
  if (--n.pings_left > 0) return send_ping(n);
  tr::when(n.sink, [](Sink& k) {
    if (++k.done == k.actors) k.res.set_value(k.done);
  });
}
}  // namespace bg

double big(const Sizes& s) {
  Stopwatch sw;
  auto [done, res] = tr::make_promise<std::int64_t>();
  auto sink = tr::make_actor<bg::Sink>(bg::Sink{s.big_actors, 0, std::move(res)});
  auto peers = std::make_shared<bg::Peers>();
  for (std::int64_t i = 0; i < s.big_actors; ++i) {
    auto index = static_cast<std::uint32_t>(i);
    peers->push_back(tr::make_actor<bg::Node>(
        bg::Node{index, s.big_pings, 0x9E3779B97F4A7C15ull * (index + 1), sink, nullptr, 0}));
  }
  std::shared_ptr<const bg::Peers> shared = peers;
  // Every node learns its peers before any node starts pinging.
  for (auto& a : *shared) tr::when(a, [shared](bg::Node& n) { n.peers = shared; });
  for (auto& a : *shared) tr::when(a, [](bg::Node& n) { bg::send_ping(n); });
  std::int64_t got = done.get();
  double ms = sw.ms();
  std::int64_t answered = tr::when(*shared, [](std::span<bg::Node*> ns) {
                            std::int64_t t = 0;
                            for (bg::Node* n : ns) {
                              t += n->answered;
                              n->peers.reset();  // ST2
                            }
                            return t;
                          }).get();
  SAVINA_CHECK(got == s.big_actors && answered == s.big_actors * s.big_pings,
               "troupe big: {} done, {} pings answered, expected {} and {}", got, answered,
               s.big_actors, s.big_actors * s.big_pings);
  return ms;
}

// --- banking: a teller actor issues every transfer as one multi-actor `when`
// over the two accounts (atomic, deadlock-free), and waits for all of them.
namespace bank {
struct Account {
  std::int64_t balance = 0;
  std::int64_t transfers = 0;
};
struct Teller {};
using Accounts = std::vector<tr::Actor<Account>>;

Accounts open(const Sizes& s) {
  Accounts accounts;
  for (std::int64_t i = 0; i < s.bank_accounts; ++i)
    accounts.push_back(tr::make_actor<Account>(Account{s.bank_initial_balance, 0}));
  return accounts;
}

// One transfer: atomic over both accounts.
tr::Promise<void> transfer(const Accounts& accounts, const Transfer& x) {
  return tr::when(accounts[x.src], accounts[x.dst],
                  [amount = x.amount](Account& a, Account& b) {
                    a.balance -= amount;
                    b.balance += amount;
                    ++a.transfers;
                    ++b.transfers;
                  });
}

// The total balance and the number of account updates, read over every
// account at once; checked against what `name`'s run must have left.
void audit(const Sizes& s, const Accounts& accounts, const char* name) {
  auto [total, count] = tr::when(accounts, [](std::span<Account*> as) {
                          std::int64_t sum = 0, c = 0;
                          for (Account* a : as) {
                            sum += a->balance;
                            c += a->transfers;
                          }
                          return std::pair{sum, c};
                        }).get();
  SAVINA_CHECK(total == s.bank_initial_balance * s.bank_accounts, "troupe {}: total {} not conserved",
               name, total);
  SAVINA_CHECK(count == 2 * s.bank_transfers, "troupe {}: {} account updates, expected {}", name,
               count, 2 * s.bank_transfers);
}
}  // namespace bank

double banking(const Sizes& s, const std::vector<Transfer>& transfers) {
  Stopwatch sw;
  bank::Accounts accounts = bank::open(s);
  auto teller = tr::make_actor<bank::Teller>();
  auto all = tr::when(teller, [accounts, &transfers](bank::Teller&) {
    std::vector<tr::Promise<void>> replies;
    replies.reserve(transfers.size());
    for (const Transfer& t : transfers) replies.push_back(bank::transfer(accounts, t));
    return tr::when_all(std::move(replies));
  });
  all.get();  // flattened: done when every transfer is
  double ms = sw.ms();
  bank::audit(s, accounts, "banking");
  return ms;
}

double banking_tellers(const Sizes& s, const std::vector<Transfer>& transfers) {
  Stopwatch sw;
  bank::Accounts accounts = bank::open(s);
  const std::size_t t = s.threads;
  std::vector<tr::Promise<void>> tellers;
  for (std::size_t k = 0; k < t; ++k)
    tellers.push_back(
        tr::when(tr::make_actor<bank::Teller>(), [&accounts, &transfers, k, t](bank::Teller&) {
          for (std::size_t i = k; i < transfers.size(); i += t) bank::transfer(accounts, transfers[i]);
        }));
  tr::when_all(std::move(tellers)).get();
  // Every transfer is queued on its accounts now: the audit runs after them
  // (and is timed: it is how this program learns that they are done).
  bank::audit(s, accounts, "banking-tellers");
  return sw.ms();
}

// --- skynet: every actor makes 10 children and sums their replies; the 10^6
// leaves reply with their number.
namespace sky {
struct Node {
  tr::Actor<Node> parent;  // empty at the root
  std::int64_t sum = 0;
  int pending = 0;
  tr::Resolver<std::int64_t> root;  // the root's only (ST1)
};

void report(Node& n, std::int64_t v) {
  if (!n.parent) return n.root.set_value(v);
  tr::when(n.parent, [v](Node& p) {
    p.sum += v;
    if (--p.pending == 0) report(p, p.sum);
  });
}

void spawn_children(const tr::Actor<Node>& me, Node& n, std::int64_t num, std::int64_t size);

void spawn(tr::Actor<Node> parent, std::int64_t num, std::int64_t size) {
  auto me = tr::make_actor<Node>(Node{std::move(parent), 0, 0, {}});
  tr::when(me, [me, num, size](Node& n) {
    if (size == 1) return report(n, num);
    spawn_children(me, n, num, size);
  });
}

void spawn_children(const tr::Actor<Node>& me, Node& n, std::int64_t num, std::int64_t size) {
  n.pending = 10;
  const std::int64_t sub = size / 10;
  for (int i = 0; i < 10; ++i) spawn(me, num + i * sub, sub);
}
}  // namespace sky

double skynet(const Sizes& s) {
  Stopwatch sw;
  auto [done, res] = tr::make_promise<std::int64_t>();
  auto root = tr::make_actor<sky::Node>(sky::Node{{}, 0, 0, std::move(res)});
  tr::when(root, [root, size = s.skynet_leaves](sky::Node& n) {
    sky::spawn_children(root, n, 0, size);
  });
  std::int64_t sum = done.get();
  double ms = sw.ms();
  const std::int64_t expected = s.skynet_leaves * (s.skynet_leaves - 1) / 2;
  SAVINA_CHECK(sum == expected, "troupe skynet: sum {}, expected {}", sum, expected);
  return ms;
}

// --- fib: one TaskGroup task per call, no cutoff.
namespace {
std::int64_t fib_tasks(int n) {
  if (n < 2) return n;
  std::int64_t x = 0, y = 0;
  tr::TaskGroup g;
  g.run([&] { x = fib_tasks(n - 1); });
  g.run([&] { y = fib_tasks(n - 2); });
  g.wait();
  return x + y;
}
}  // namespace

double fib(const Sizes& s) {
  static const std::int64_t expected = fib_serial(s.fib_n);
  Stopwatch sw;
  std::int64_t got = fib_tasks(s.fib_n);
  double ms = sw.ms();
  SAVINA_CHECK(got == expected, "troupe fib({}) = {}, expected {}", s.fib_n, got, expected);
  return ms;
}

}  // namespace savina::troupe_side
