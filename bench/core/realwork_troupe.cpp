// bench/core/realwork_troupe.cpp: troupe's side of bench_realwork, written the
// way a user of the library would write it, with the public API only.
//
//   bfs:     one actor per partition of the vertices (at most 4 x threads),
//            owning its vertices' levels. A driver (the main thread) runs one
//            level at a time: it asks every partition to expand its frontier
//            and waits for all of them (when_all(...).get()). A partition
//            settles the neighbours it owns itself and sends each other
//            partition the neighbours that partition owns as a batch (a
//            vector of vertex ids, flushed at kBfsFlush and at the end of the
//            level), one `when` on the owner per batch; its expand's promise
//            is fulfilled once every batch it sent was applied, so the
//            driver's when_all is the level's barrier.
//   service: 10 000 client actors, 100 server actors (accounts). Each client
//            sends its next request only once the reply to the previous one
//            came (a closed loop): `when(read(server), f)` for a query,
//            `when(server, f)` for a move, `when(from, to, f)` for a
//            cross-server transfer, atomic over both servers; the reply
//            promise is awaited by `when(reply, client, f)`, which issues the
//            next request. A client that is done reports to a sink actor,
//            which fulfils the driver's promise when the last one did.
//
// Invariants:
//   RA1. A partition's frontier for level L is lists[L % 2]; every vertex
//       discovered during level L (by its own expand or by a batch applied to
//       it) goes to lists[(L + 1) % 2] with level L + 1. The frontier is not
//       written during its level and is cleared at the end of its expand, so
//       a batch of level L that arrives before the partition's own expand of
//       level L is kept for level L + 1.
//   RA2. Level L + 1's expands are sent only after every expand of level
//       L and every batch they sent were applied (the driver's when_all over
//       promises flattened through each expand's when_all of its batches).
//   RA3. A client has at most one request outstanding; its counters are
//       written only by its own behaviours.
//   RA4. The context every client points to (request list, server
//       handles, sink) lives on the driver's stack until the sink fulfilled
//       the driver's promise, after the last client's last behaviour used it.
#include <span>
#include <troupe/troupe.hpp>
#include <utility>
#include <vector>

#include "realwork.hpp"

namespace tr = troupe;

namespace realwork::troupe_side {

void start(std::size_t threads) { tr::init(tr::Options{.threads = threads}); }
void settle() { tr::wait_idle(); }

// ---------------------------------------------------------------- BFS
namespace {
struct Part {
  std::uint32_t index = 0;
  std::uint32_t lo = 0;
  std::vector<std::int32_t> level;      // of vertices [lo, lo + level.size())
  std::vector<std::uint32_t> lists[2];  // RA1
};

struct Net {
  const Graph* g;
  Partitioning by;
  std::vector<tr::Actor<Part>> parts;
};

void discover(Part& p, std::span<const std::uint32_t> vs, std::int32_t level) {
  auto& next = p.lists[level & 1];
  for (std::uint32_t v : vs) {
    std::int32_t& l = p.level[v - p.lo];
    if (l < 0) {
      l = level;
      next.push_back(v);
    }
  }
}

tr::Promise<void> send(const Net& net, std::uint32_t to, std::vector<std::uint32_t> batch,
                       std::int32_t level) {
  return tr::when(net.parts[to],
                  [batch = std::move(batch), level](Part& t) { discover(t, batch, level); });
}

// Expands level `level` of partition p; the promise says how many frontier
// vertices it had, once every batch it sent was applied (RA2).
tr::Promise<std::size_t> expand(const Net& net, Part& p, std::int32_t level) {
  std::vector<std::uint32_t>& frontier = p.lists[level & 1];
  std::vector<std::uint32_t>& next = p.lists[(level + 1) & 1];
  const std::size_t count = frontier.size();
  const std::uint32_t parts = net.by.parts;
  std::vector<std::vector<std::uint32_t>> out(parts);
  std::vector<tr::Promise<void>> sent;
  for (std::uint32_t v : frontier) {
    for (std::uint32_t w : net.g->neighbours(v)) {
      const std::uint32_t q = net.by.owner(w);
      if (q == p.index) {
        std::int32_t& l = p.level[w - p.lo];
        if (l < 0) {
          l = level + 1;
          next.push_back(w);
        }
        continue;
      }
      out[q].push_back(w);
      if (out[q].size() == kBfsFlush) sent.push_back(send(net, q, std::move(out[q]), level + 1));
    }
  }
  for (std::uint32_t q = 0; q < parts; ++q)
    if (!out[q].empty()) sent.push_back(send(net, q, std::move(out[q]), level + 1));
  frontier.clear();  // RA1
  return tr::when_all(std::move(sent)).then([count] { return count; });
}
}  // namespace

double bfs(const Sizes& s, const Graph& g, const std::vector<std::int32_t>& ref) {
  Stopwatch sw;
  Net net{&g, partition(g.n, static_cast<std::uint32_t>(s.threads * s.bfs_parts_per_thread)), {}};
  for (std::uint32_t p = 0; p < net.by.parts; ++p) {
    const std::uint32_t lo = net.by.lo(p, g.n), hi = net.by.hi(p, g.n);
    net.parts.push_back(
        tr::make_actor<Part>(Part{p, lo, std::vector<std::int32_t>(hi - lo, -1), {}}));
  }
  tr::when(net.parts[net.by.owner(kBfsSource)], [](Part& p) {
    const std::uint32_t src = kBfsSource;
    discover(p, std::span<const std::uint32_t>(&src, 1), 0);
  });
  std::int32_t levels = 0;
  for (std::int32_t level = 0;; ++level) {  // RA2: one level at a time
    std::vector<tr::Promise<std::size_t>> expanded;
    for (auto& part : net.parts)
      expanded.push_back(
          tr::when(part, [net = &net, level](Part& p) { return expand(*net, p, level); }));
    std::size_t frontier = 0;
    for (std::size_t n : tr::when_all(std::move(expanded)).get()) frontier += n;
    if (frontier == 0) break;
    levels = level + 1;
  }
  double ms = sw.ms();
  for (auto& part : net.parts)
    tr::when(tr::read(part), [&ref](const Part& p) {
      check_levels("troupe bfs", p.level, ref, p.lo);
    }).get();
  REALWORK_CHECK(levels > 1, "troupe bfs: {} levels", levels);
  return ms;
}

// ---------------------------------------------------------------- service
namespace {
struct Sink {
  std::uint32_t clients_left = 0;
  std::uint64_t replies = 0;
  tr::Resolver<std::uint64_t> done;
};

struct Context {  // RA4
  const Sizes* sizes;
  const std::vector<Request>* requests;
  std::vector<tr::Actor<Server>> servers;
  tr::Actor<Sink> sink;
};

struct Client {
  const Context* ctx = nullptr;
  std::uint32_t id = 0;
  std::uint32_t next = 0;  // index of the next request among this client's
  std::uint64_t replies = 0;
  std::uint64_t receipts = 0;  // xor of the receipts received
};

tr::Promise<Reply> ask(const Context& x, const Request& q) {
  const int rounds = x.sizes->work_rounds;
  switch (q.kind) {
    case Kind::query:
      return tr::when(tr::read(x.servers[q.src_server]),
                      [&q, rounds](const Server& s) { return query(s, q, rounds); });
    case Kind::move:
      return tr::when(x.servers[q.src_server],
                      [&q, rounds](Server& s) { return move_within(s, q, rounds); });
    case Kind::transfer:
      break;
  }
  return tr::when(x.servers[q.src_server], x.servers[q.dst_server],
                  [&q, rounds](Server& from, Server& to) { return transfer(from, to, q, rounds); });
}

// Sends client c's next request, or reports to the sink once all were answered.
void issue(const tr::Actor<Client>& self, Client& c) {
  const Context& x = *c.ctx;
  const std::uint32_t per = x.sizes->requests_per_client;
  if (c.next == per) {
    tr::when(x.sink, [replies = c.replies](Sink& k) {
      k.replies += replies;
      if (--k.clients_left == 0) k.done.set_value(k.replies);
    });
    return;
  }
  const Request& q = (*x.requests)[static_cast<std::size_t>(c.id) * per + c.next++];
  tr::when(ask(x, q), self, [self](const Reply& r, Client& me) {  // RA3
    ++me.replies;
    me.receipts ^= r.receipt;
    issue(self, me);
  });
}
}  // namespace

double service(const Sizes& s, const std::vector<Request>& reqs, const ServiceResult& ref) {
  Stopwatch sw;
  auto [done, resolver] = tr::make_promise<std::uint64_t>();
  Context ctx{&s, &reqs, {}, tr::make_actor<Sink>(Sink{s.clients, 0, std::move(resolver)})};
  for (std::uint32_t i = 0; i < s.servers; ++i)
    ctx.servers.push_back(tr::make_actor<Server>(make_server(s)));
  std::vector<tr::Actor<Client>> clients;
  clients.reserve(s.clients);
  for (std::uint32_t c = 0; c < s.clients; ++c) {
    clients.push_back(tr::make_actor<Client>(Client{&ctx, c, 0, 0, 0}));
    tr::when(clients.back(), [self = clients.back()](Client& me) { issue(self, me); });
  }
  const std::uint64_t replies = done.get();
  double ms = sw.ms();
  ServiceResult got = tr::when(tr::read(ctx.servers), [](std::span<const Server*> ss) {
                        ServiceResult r;
                        for (const Server* sv : ss) {
                          for (const Account& a : sv->accounts) r.balances.push_back(a.balance);
                          r.handled += sv->handled;
                        }
                        return r;
                      }).get();
  got.replies = replies;
  check_service("troupe service", s, reqs, got, ref);
  return ms;
}

}  // namespace realwork::troupe_side
