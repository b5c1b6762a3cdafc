// bench/core/savina_caf.cpp: CAF 0.17's side of bench_savina, written as CAF's
// manual and examples write actors: dynamically typed, event-based,
// function-based actors (stateful_actor<State> where they keep state), atoms
// as message tags, `self->send` between actors, `request(...).then` and
// response promises for request/reply, `delegate` to forward a request, a
// scoped_actor (or anon_send) to drive a case from main. The shape of each
// case follows Savina's actor implementations. One actor_system for the whole
// program, its scheduler.max-threads set to the thread count.
//
// Invariants:
//   SF1. A case's scoped_actor and every handle it made are gone when the case
//       returns; actors that keep handles to each other in a cycle (ring, big)
//       get an exit message first. settle() then waits for all to terminate.
#include <caf/all.hpp>

#include <memory>
#include <vector>

#include "savina.hpp"

namespace savina::caf_side {

namespace {

using start_atom = caf::atom_constant<caf::atom("start")>;
using ping_atom = caf::atom_constant<caf::atom("ping")>;
using pong_atom = caf::atom_constant<caf::atom("pong")>;
using inc_atom = caf::atom_constant<caf::atom("inc")>;
using get_atom = caf::atom_constant<caf::atom("get")>;
using work_atom = caf::atom_constant<caf::atom("work")>;
using done_atom = caf::atom_constant<caf::atom("done")>;
using wait_atom = caf::atom_constant<caf::atom("wait")>;
using next_atom = caf::atom_constant<caf::atom("next")>;
using token_atom = caf::atom_constant<caf::atom("token")>;
using meet_atom = caf::atom_constant<caf::atom("meet")>;
using change_atom = caf::atom_constant<caf::atom("change")>;
using leave_atom = caf::atom_constant<caf::atom("leave")>;
using faded_atom = caf::atom_constant<caf::atom("faded")>;
using peers_atom = caf::atom_constant<caf::atom("peers")>;
using transfer_atom = caf::atom_constant<caf::atom("transfer")>;
using credit_atom = caf::atom_constant<caf::atom("credit")>;
using ok_atom = caf::atom_constant<caf::atom("ok")>;

std::unique_ptr<caf::actor_system_config> g_cfg;  // main thread only
std::unique_ptr<caf::actor_system> g_sys;

caf::actor_system& sys() { return *g_sys; }

// Blocks the driver on a request and returns its int64 reply; aborts on error.
std::int64_t ask(caf::scoped_actor& self, const caf::actor& dest, caf::message msg) {
  std::int64_t out = 0;
  self->request(dest, caf::infinite, std::move(msg))
      .receive([&](std::int64_t v) { out = v; },
               [&](caf::error& e) {
                 SAVINA_CHECK(false, "CAF request failed: {}", caf::to_string(e));
               });
  return out;
}

// --- ping-pong -------------------------------------------------------------
struct pinger_state {
  std::int64_t pongs = 0;
  std::int64_t rounds = 0;
  caf::response_promise done;
};

caf::behavior ponger() {
  return {
      // The result goes back to the sender, as CAF's ping-pong examples do.
      [](ping_atom, std::int64_t left) { return caf::make_message(pong_atom::value, left); },
  };
}

caf::behavior pinger(caf::stateful_actor<pinger_state>* self, caf::actor pong) {
  return {
      [=](start_atom, std::int64_t rounds) -> caf::result<std::int64_t> {
        self->state.rounds = rounds;
        self->state.done = self->make_response_promise();
        self->send(pong, ping_atom::value, rounds);
        return self->state.done;
      },
      [=](pong_atom, std::int64_t left) {
        ++self->state.pongs;
        if (left > 1)
          self->send(pong, ping_atom::value, left - 1);
        else
          self->state.done.deliver(self->state.pongs);
      },
  };
}

// --- counting --------------------------------------------------------------
caf::behavior counter(caf::stateful_actor<std::int64_t>* self) {
  return {
      [=](inc_atom) { ++self->state; },
      [=](get_atom) { return self->state; },
  };
}

caf::behavior producer(caf::event_based_actor* self, caf::actor count) {
  return {
      [=](start_atom, std::int64_t n) -> caf::result<std::int64_t> {
        for (std::int64_t i = 0; i < n; ++i) self->send(count, inc_atom::value);
        auto rp = self->make_response_promise();
        self->request(count, caf::infinite, get_atom::value).then([=](std::int64_t c) mutable {
          rp.deliver(c);
        });
        return rp;
      },
  };
}

// --- fork-join throughput --------------------------------------------------
struct fj_state {
  std::int64_t count = 0;
  double acc = 0;
};

caf::behavior fj_worker(caf::stateful_actor<fj_state>* self) {
  return {
      [=](work_atom) { self->state.acc += fj_work(++self->state.count); },
      [=](get_atom) { return self->state.count; },
  };
}

// --- fork-join create ------------------------------------------------------
struct fjc_sink_state {
  std::int64_t expected = 0;
  std::int64_t done = 0;
  double acc = 0;
  caf::response_promise waiter;
};

caf::behavior fjc_sink(caf::stateful_actor<fjc_sink_state>* self, std::int64_t expected) {
  self->state.expected = expected;
  return {
      [=](done_atom, double v) {
        auto& st = self->state;
        st.acc += v;
        if (++st.done == st.expected && st.waiter.pending()) st.waiter.deliver(st.done);
      },
      [=](wait_atom) -> caf::result<std::int64_t> {
        auto& st = self->state;
        if (st.done == st.expected) return st.done;
        st.waiter = self->make_response_promise();
        return st.waiter;
      },
  };
}

caf::behavior fjc_worker(caf::event_based_actor* self, caf::actor sink) {
  return {
      [=](work_atom, std::int64_t i) {
        self->send(sink, done_atom::value, fj_work(i));
        self->quit();
      },
  };
}

// --- thread ring -----------------------------------------------------------
struct ring_state {
  caf::actor next;
  std::int64_t tokens = 0;
};

caf::behavior ring_node(caf::stateful_actor<ring_state>* self) {
  return {
      [=](next_atom, caf::actor next) { self->state.next = std::move(next); },
      [=](token_atom, std::int64_t hops) -> caf::result<caf::message> {
        ++self->state.tokens;
        if (hops == 0) return caf::make_message(hops);
        return self->delegate(self->state.next, token_atom::value, hops - 1);
      },
      [=](get_atom) { return self->state.tokens; },
  };
}

// --- chameneos -------------------------------------------------------------
struct mall_state {
  std::int64_t left = 0;
  std::int64_t chameneos = 0;
  caf::actor waiting;
  std::int64_t faded = 0;
  std::int64_t sum = 0;
  caf::response_promise done;
};

struct chameneo_state {
  int color = 0;
  std::int64_t meetings = 0;
};

caf::behavior chameneo(caf::stateful_actor<chameneo_state>* self, caf::actor mall, int color) {
  self->state.color = color;
  auto me = caf::actor_cast<caf::actor>(self);
  self->send(mall, meet_atom::value, me, color);
  return {
      // Another chameneo arrived while this one waited at the mall.
      [=](meet_atom, const caf::actor& guest, int guest_color) {
        auto& st = self->state;
        st.color = complement(st.color, guest_color);
        ++st.meetings;
        self->send(guest, change_atom::value, st.color);
        self->send(mall, meet_atom::value, caf::actor_cast<caf::actor>(self), st.color);
      },
      [=](change_atom, int c) {
        auto& st = self->state;
        st.color = c;
        ++st.meetings;
        self->send(mall, meet_atom::value, caf::actor_cast<caf::actor>(self), st.color);
      },
      [=](leave_atom) {
        self->send(mall, faded_atom::value, self->state.meetings);
        self->quit();
      },
  };
}

caf::behavior mall(caf::stateful_actor<mall_state>* self, std::int64_t meetings,
                   std::int64_t chameneos) {
  self->state.left = meetings;
  self->state.chameneos = chameneos;
  return {
      [=](start_atom) -> caf::result<std::int64_t> {
        self->state.done = self->make_response_promise();
        auto me = caf::actor_cast<caf::actor>(self);
        for (std::int64_t i = 0; i < self->state.chameneos; ++i)
          self->spawn(chameneo, me, static_cast<int>(i % 3));
        return self->state.done;
      },
      [=](meet_atom, caf::actor who, int color) {
        auto& st = self->state;
        if (st.left == 0) {
          self->send(who, leave_atom::value);
        } else if (!st.waiting) {
          st.waiting = std::move(who);
        } else {
          --st.left;
          self->send(st.waiting, meet_atom::value, who, color);
          st.waiting = nullptr;
        }
      },
      [=](faded_atom, std::int64_t meetings_of_one) {
        auto& st = self->state;
        st.sum += meetings_of_one;
        if (++st.faded == st.chameneos) {
          st.done.deliver(st.sum);
          self->quit();
        }
      },
  };
}

// --- big -------------------------------------------------------------------
struct big_state {
  std::uint32_t index = 0;
  std::int64_t pings_left = 0;
  std::uint64_t rng = 0;
  caf::actor sink;
  std::vector<caf::actor> peers;  // a cycle: the driver sends exits (SF1)
  std::int64_t answered = 0;
};

void big_send_ping(caf::stateful_actor<big_state>* self) {
  auto& st = self->state;
  self->send(st.peers[xorshift(st.rng) % st.peers.size()], ping_atom::value, st.index);
}

caf::behavior big_node(caf::stateful_actor<big_state>* self, std::uint32_t index,
                       std::int64_t pings, caf::actor sink) {
  auto& st = self->state;
  st.index = index;
  st.pings_left = pings;
  st.rng = 0x9E3779B97F4A7C15ull * (index + 1);
  st.sink = std::move(sink);
  return {
      [=](peers_atom, const std::vector<caf::actor>& peers) { self->state.peers = peers; },
      [=](start_atom) { big_send_ping(self); },
      [=](ping_atom, std::uint32_t from) {
        ++self->state.answered;
        self->send(self->state.peers[from], pong_atom::value);
      },
      [=](pong_atom) {
        if (--self->state.pings_left > 0)
          big_send_ping(self);
        else
          self->send(self->state.sink, done_atom::value);
      },
      [=](get_atom) { return self->state.answered; },
  };
}

struct big_sink_state {
  std::int64_t actors = 0;
  std::int64_t done = 0;
  caf::response_promise waiter;
};

caf::behavior big_sink(caf::stateful_actor<big_sink_state>* self, std::int64_t actors) {
  self->state.actors = actors;
  return {
      [=](done_atom) {
        auto& st = self->state;
        if (++st.done == st.actors && st.waiter.pending()) st.waiter.deliver(st.done);
      },
      [=](wait_atom) -> caf::result<std::int64_t> {
        auto& st = self->state;
        if (st.done == st.actors) return st.done;
        st.waiter = self->make_response_promise();
        return st.waiter;
      },
  };
}

// --- banking (Savina: teller -> source account -> destination, replies) ----
struct account_state {
  std::int64_t balance = 0;
  std::int64_t transfers = 0;
};

caf::behavior account(caf::stateful_actor<account_state>* self, std::int64_t initial) {
  self->state.balance = initial;
  return {
      // Source side: debit, ask the destination to credit (request/reply),
      // then answer the teller.
      [=](transfer_atom, std::int64_t amount, const caf::actor& dest) -> caf::result<ok_atom> {
        self->state.balance -= amount;
        ++self->state.transfers;
        auto rp = self->make_response_promise();
        self->request(dest, caf::infinite, credit_atom::value, amount).then([=](ok_atom) mutable {
          rp.deliver(ok_atom::value);
        });
        return rp;
      },
      [=](credit_atom, std::int64_t amount) {
        self->state.balance += amount;
        ++self->state.transfers;
        return ok_atom::value;
      },
      [=](get_atom) { return caf::make_message(self->state.balance, self->state.transfers); },
  };
}

struct teller_state {
  std::int64_t done = 0;
  caf::response_promise finished;
};

caf::behavior teller(caf::stateful_actor<teller_state>* self, std::vector<caf::actor> accounts,
                     const std::vector<Transfer>* transfers) {
  // As Savina's teller: every transfer goes out as one message; the source
  // account's response promise answers with an ok message, counted here. (Not
  // request().then: CAF 0.17 keeps pending .then handlers in a flat map with
  // linear lookup, quadratic for 50 000 outstanding requests in one actor.)
  return {
      [=](start_atom) -> caf::result<std::int64_t> {
        self->state.finished = self->make_response_promise();
        for (const Transfer& t : *transfers)
          self->send(accounts[t.src], transfer_atom::value, t.amount, accounts[t.dst]);
        return self->state.finished;
      },
      [=](ok_atom) {
        if (++self->state.done == static_cast<std::int64_t>(transfers->size()))
          self->state.finished.deliver(self->state.done);
      },
  };
}

// --- skynet ----------------------------------------------------------------
struct sky_state {
  std::int64_t sum = 0;
  int pending = 0;
};

caf::behavior skynet_node(caf::stateful_actor<sky_state>* self, caf::actor parent,
                          std::int64_t num, std::int64_t size) {
  if (size == 1) {
    self->send(parent, num);
    self->quit();
    return {};
  }
  const std::int64_t sub = size / 10;
  auto me = caf::actor_cast<caf::actor>(self);
  for (int i = 0; i < 10; ++i) self->spawn(skynet_node, me, num + i * sub, sub);
  self->state.pending = 10;
  return {
      [=](std::int64_t v) {
        self->state.sum += v;
        if (--self->state.pending == 0) {
          self->send(parent, self->state.sum);
          self->quit();
        }
      },
  };
}

}  // namespace

void start(std::size_t threads) {
  g_cfg = std::make_unique<caf::actor_system_config>();
  g_cfg->set("scheduler.max-threads", threads);
  g_sys = std::make_unique<caf::actor_system>(*g_cfg);
}

void stop() {
  g_sys.reset();
  g_cfg.reset();
}

void settle() { sys().await_all_actors_done(); }

double pingpong(const Sizes& s) {
  caf::scoped_actor self{sys()};
  Stopwatch sw;
  auto pong = sys().spawn(ponger);
  auto ping = sys().spawn(pinger, pong);
  std::int64_t pongs = ask(self, ping, caf::make_message(start_atom::value,
                                                         s.pingpong_round_trips));
  double ms = sw.ms();
  SAVINA_CHECK(pongs == s.pingpong_round_trips, "CAF pingpong: {} pongs, expected {}", pongs,
               s.pingpong_round_trips);
  return ms;
}

double counting(const Sizes& s) {
  caf::scoped_actor self{sys()};
  Stopwatch sw;
  auto count = sys().spawn(counter);
  auto prod = sys().spawn(producer, count);
  std::int64_t got = ask(self, prod, caf::make_message(start_atom::value, s.counting_messages));
  double ms = sw.ms();
  SAVINA_CHECK(got == s.counting_messages, "CAF counting: counted {}, expected {}", got,
               s.counting_messages);
  return ms;
}

double fjthrput(const Sizes& s) {
  caf::scoped_actor self{sys()};
  Stopwatch sw;
  std::vector<caf::actor> workers;
  for (std::int64_t k = 0; k < s.fj_actors; ++k) workers.push_back(sys().spawn(fj_worker));
  for (std::int64_t m = 0; m < s.fj_messages; ++m)
    for (auto& w : workers) caf::anon_send(w, work_atom::value);
  std::vector<std::int64_t> got;
  for (auto& w : workers) got.push_back(ask(self, w, caf::make_message(get_atom::value)));
  double ms = sw.ms();
  for (std::int64_t c : got)
    SAVINA_CHECK(c == s.fj_messages, "CAF fjthrput: an actor got {} messages, expected {}", c,
                 s.fj_messages);
  return ms;
}

double fjcreate(const Sizes& s) {
  caf::scoped_actor self{sys()};
  Stopwatch sw;
  auto sink = sys().spawn(fjc_sink, s.fjc_actors);
  for (std::int64_t i = 0; i < s.fjc_actors; ++i)
    caf::anon_send(sys().spawn(fjc_worker, sink), work_atom::value, i);
  std::int64_t got = ask(self, sink, caf::make_message(wait_atom::value));
  double ms = sw.ms();
  SAVINA_CHECK(got == s.fjc_actors, "CAF fjcreate: {} reports, expected {}", got, s.fjc_actors);
  return ms;
}

double threadring(const Sizes& s) {
  caf::scoped_actor self{sys()};
  Stopwatch sw;
  std::vector<caf::actor> nodes;
  for (std::int64_t i = 0; i < s.ring_actors; ++i) nodes.push_back(sys().spawn(ring_node));
  for (std::size_t i = 0; i < nodes.size(); ++i)
    caf::anon_send(nodes[i], next_atom::value, nodes[(i + 1) % nodes.size()]);
  std::int64_t last = ask(self, nodes[0], caf::make_message(token_atom::value, s.ring_hops));
  double ms = sw.ms();
  std::int64_t tokens = 0;
  for (auto& n : nodes) tokens += ask(self, n, caf::make_message(get_atom::value));
  for (auto& n : nodes) caf::anon_send_exit(n, caf::exit_reason::user_shutdown);  // SF1
  SAVINA_CHECK(last == 0 && tokens == s.ring_hops + 1,
               "CAF threadring: {} token arrivals, expected {}", tokens, s.ring_hops + 1);
  return ms;
}

double chameneos(const Sizes& s) {
  caf::scoped_actor self{sys()};
  Stopwatch sw;
  auto m = sys().spawn(mall, s.chameneos_meetings, s.chameneos);
  std::int64_t sum = ask(self, m, caf::make_message(start_atom::value));
  double ms = sw.ms();
  SAVINA_CHECK(sum == 2 * s.chameneos_meetings, "CAF chameneos: {} meetings counted, expected {}",
               sum, 2 * s.chameneos_meetings);
  return ms;
}

double big(const Sizes& s) {
  caf::scoped_actor self{sys()};
  Stopwatch sw;
  auto sink = sys().spawn(big_sink, s.big_actors);
  std::vector<caf::actor> nodes;
  for (std::int64_t i = 0; i < s.big_actors; ++i)
    nodes.push_back(sys().spawn(big_node, static_cast<std::uint32_t>(i), s.big_pings, sink));
  // Every node learns its peers before any node starts pinging.
  for (auto& n : nodes) caf::anon_send(n, peers_atom::value, nodes);
  for (auto& n : nodes) caf::anon_send(n, start_atom::value);
  std::int64_t got = ask(self, sink, caf::make_message(wait_atom::value));
  double ms = sw.ms();
  std::int64_t answered = 0;
  for (auto& n : nodes) answered += ask(self, n, caf::make_message(get_atom::value));
  for (auto& n : nodes) caf::anon_send_exit(n, caf::exit_reason::user_shutdown);  // SF1
  SAVINA_CHECK(got == s.big_actors && answered == s.big_actors * s.big_pings,
               "CAF big: {} done, {} pings answered, expected {} and {}", got, answered,
               s.big_actors, s.big_actors * s.big_pings);
  return ms;
}

double banking(const Sizes& s, const std::vector<Transfer>& transfers) {
  caf::scoped_actor self{sys()};
  Stopwatch sw;
  std::vector<caf::actor> accounts;
  for (std::int64_t i = 0; i < s.bank_accounts; ++i)
    accounts.push_back(sys().spawn(account, s.bank_initial_balance));
  auto t = sys().spawn(teller, accounts, &transfers);
  std::int64_t done = ask(self, t, caf::make_message(start_atom::value));
  double ms = sw.ms();
  std::int64_t total = 0, count = 0;
  for (auto& a : accounts)
    self->request(a, caf::infinite, get_atom::value)
        .receive(
            [&](std::int64_t balance, std::int64_t transfers_seen) {
              total += balance;
              count += transfers_seen;
            },
            [&](caf::error& e) {
              SAVINA_CHECK(false, "CAF banking: get failed: {}", caf::to_string(e));
            });
  SAVINA_CHECK(done == s.bank_transfers, "CAF banking: {} replies, expected {}", done,
               s.bank_transfers);
  SAVINA_CHECK(total == s.bank_initial_balance * s.bank_accounts,
               "CAF banking: total {} not conserved", total);
  SAVINA_CHECK(count == 2 * s.bank_transfers, "CAF banking: {} account updates, expected {}",
               count, 2 * s.bank_transfers);
  return ms;
}

double skynet(const Sizes& s) {
  caf::scoped_actor self{sys()};
  Stopwatch sw;
  self->spawn(skynet_node, caf::actor_cast<caf::actor>(self), std::int64_t{0}, s.skynet_leaves);
  std::int64_t sum = 0;
  self->receive([&](std::int64_t v) { sum = v; });
  double ms = sw.ms();
  const std::int64_t expected = s.skynet_leaves * (s.skynet_leaves - 1) / 2;
  SAVINA_CHECK(sum == expected, "CAF skynet: sum {}, expected {}", sum, expected);
  return ms;
}

}  // namespace savina::caf_side
