// showcase: the main job. Exercises every layer that exists on real work and
// prints what it did and how fast:
//   1. a bank of 1000 account actors under random two- and three-party
//      transfers (multi-actor `when`), with read-only audits that see the total
//      conserved mid-run;
//   2. a word-count pipeline graph of actors (source -> tokenizers -> count
//      shards and a length histogram -> sink), checked against a sequential run;
//   3. fork-join fib(27) on TaskGroup;
//   4. an epoll loop that the program owns driving actors on a LoopScheduler,
//      fed from pool actors;
//   5. worker processes: word counting as isolated calls through the
//      Executor, a remote actor fed by them and then called one call at a time
//      (the round trip), a pipe handed to a worker, and a
//      worker that crashes without taking the program down;
//   6. a shared-memory heap handed to worker processes by descriptor: they
//      allocate and fill blocks that this process reads at its own mapping
//      address, and a worker killed in the middle of allocating leaks nothing
//      once the survivors recover its slot;
//   7. shared objects: a dict of accounts in shared memory changed by
//      transactions from several worker processes at once, audited here while
//      they run, one worker killed in the middle of its transfers.
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <fmt/core.h>

#include "troupe/exec/executor.hpp"
#include "troupe/proc/process.hpp"
#include "troupe/shm/heap.hpp"
#include "troupe/shm/objects.hpp"
#include "troupe/shm/tx.hpp"
#include "troupe/troupe.hpp"

using namespace troupe;
using Clock = std::chrono::steady_clock;

namespace {

double secs(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int failures = 0;
void check(bool ok, const std::string& what) {
  fmt::print("  [{}] {}\n", ok ? "ok" : "FAIL", what);
  if (!ok) ++failures;
}

// ---------------------------------------------------------------- 1. bank
struct Account {
  long balance = 1000;
};

void bank() {
  constexpr int kAccounts = 1000, kTransfers = 500000;
  fmt::print("\n## 1. bank: {} account actors, {} random transfers\n", kAccounts, kTransfers);
  std::vector<Actor<Account>> acc;
  for (int i = 0; i < kAccounts; ++i) acc.push_back(make_actor<Account>());
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> pick(0, kAccounts - 1);
  std::vector<Promise<long>> audits;
  auto t0 = Clock::now();
  for (int t = 0; t < kTransfers; ++t) {
    auto& a = acc[static_cast<std::size_t>(pick(rng))];
    auto& b = acc[static_cast<std::size_t>(pick(rng))];
    if (t % 100000 == 50000) {  // audit in the middle of the run
      audits.push_back(when(acc, [](std::span<Account*> xs) {
        long s = 0;
        for (Account* x : xs) s += x->balance;
        return s;
      }));
    } else if (t % 4 == 0) {
      auto& c = acc[static_cast<std::size_t>(pick(rng))];
      when(a, b, c, [](Account& x, Account& y, Account& z) {  // split a payment
        long m = x.balance / 20;
        x.balance -= 2 * m, y.balance += m, z.balance += m;
      });
    } else {
      int amount = pick(rng) % 50;
      when(a, b, [amount](Account& x, Account& y) { x.balance -= amount, y.balance += amount; });
    }
  }
  troupe::wait_idle();
  double dt = secs(t0);
  long total = when(acc, [](std::span<Account*> xs) {
                 long s = 0;
                 for (Account* x : xs) s += x->balance;
                 return s;
               }).get();
  fmt::print("  {} transfers in {:.3f} s: {:.2f} M transfers/s\n", kTransfers, dt,
             kTransfers / dt / 1e6);
  bool audits_ok = true;
  for (auto& p : audits) audits_ok &= p.get() == 1000L * kAccounts;
  check(audits_ok, fmt::format("{} audits during the run saw the total conserved", audits.size()));
  check(total == 1000L * kAccounts, fmt::format("total after the run: {}", total));
}

// ---------------------------------------------------------------- 2. pipeline
// Word counting over 200 000 lines, three ways, all checked against each
// other: one plain loop on one thread; a graph of actors fed one line per
// message; the same graph fed chunks of lines. The loop and the chunked
// tokenizers count with the same function (count_words), so the chunked
// run's extra work is exactly the routing to shards and the messages.
using WordCounts = std::unordered_map<std::string_view, long>;
using LengthCounts = std::map<std::size_t, long>;

struct Shard {
  std::unordered_map<std::string, long> counts;
};
struct Histogram {
  LengthCounts by_length;
};
struct Sink {
  long lines = 0, words = 0;
};
struct Tokenizer {
  long lines = 0;
};

const char* kWords[] = {"actor", "when", "promise", "cown", "steal", "queue", "behaviour",
                        "reader", "writer", "pool", "loop", "shard", "fork", "join"};

std::string make_line(std::mt19937& rng) {
  std::string s;
  int n = 4 + static_cast<int>(rng() % 12);
  for (int i = 0; i < n; ++i) {
    if (i) s += ' ';
    s += kWords[rng() % std::size(kWords)];
  }
  return s;
}

// Counts the words of `lines` (split on ' ') into `words` and their lengths
// into `lengths`; returns how many words it saw. The keys view `lines`.
long count_words(std::span<const std::string> lines, WordCounts& words, LengthCounts& lengths) {
  long n = 0;
  for (const std::string& l : lines) {
    std::string_view rest = l;
    while (!rest.empty()) {
      std::size_t end = std::min(rest.find(' '), rest.size());
      words[rest.substr(0, end)]++;
      lengths[end]++;
      ++n;
      rest.remove_prefix(std::min(end + 1, rest.size()));
    }
  }
  return n;
}

struct Graph {
  std::vector<Actor<Tokenizer>> toks;
  std::vector<Actor<Shard>> shards;
  Actor<Histogram> hist = make_actor<Histogram>();
  Actor<Sink> sink = make_actor<Sink>();

  Graph(int tokenizers, int nshards) {
    for (int i = 0; i < nshards; ++i) shards.push_back(make_actor<Shard>());
    for (int i = 0; i < tokenizers; ++i) toks.push_back(make_actor<Tokenizer>());
    // Bounded mailboxes (troupe/backpressure.hpp): the source (this thread)
    // blocks, and a tokenizer pauses, while the actor it feeds has 256
    // messages queued. Unbounded, the source queued all 200 000 lines at
    // once and the per-line run was 1.5-1.8x slower (memory grown, caches
    // cold).
    for (auto& t : toks) t.set_mailbox_limit(256);
    for (auto& sh : shards) sh.set_mailbox_limit(256);
    hist.set_mailbox_limit(256);
    sink.set_mailbox_limit(256);
  }

  // Sends what a tokenizer counted to the shards (by hash of the word), the
  // histogram and the sink.
  void emit(const WordCounts& words, LengthCounts lengths, long lines, long nwords) const {
    std::vector<std::vector<std::pair<std::string, long>>> per(shards.size());
    for (auto& [w, c] : words) per[std::hash<std::string_view>{}(w) % shards.size()].emplace_back(w, c);
    for (std::size_t s = 0; s < shards.size(); ++s)
      if (!per[s].empty())
        when(shards[s], [ws = std::move(per[s])](Shard& sh) mutable {
          for (auto& [w, c] : ws) sh.counts[std::move(w)] += c;
        });
    when(hist, [lengths = std::move(lengths)](Histogram& h) {
      for (auto [l, c] : lengths) h.by_length[l] += c;
    });
    when(sink, [lines, nwords](Sink& k) { k.lines += lines, k.words += nwords; });
  }

  bool check_against(const WordCounts& ref, const LengthCounts& ref_hist, long ref_words,
                     long nlines, const char* what) const {
    std::unordered_map<std::string, long> got, want;
    for (auto& s : shards)
      for (auto& [w, c] : when(read(s), [](const Shard& sh) { return sh.counts; }).get()) got[w] += c;
    for (auto& [w, c] : ref) want[std::string(w)] = c;
    auto totals = when(read(sink), [](const Sink& k) { return std::make_pair(k.lines, k.words); }).get();
    auto hist_got = when(read(hist), [](const Histogram& h) { return h.by_length; }).get();
    bool ok = got == want && totals.first == nlines && totals.second == ref_words && hist_got == ref_hist;
    check(ok, fmt::format("{}: word counts, histogram, lines and words equal the loop's", what));
    return ok;
  }
};

void pipeline() {
  constexpr int kLines = 200000, kTokenizers = 4, kShards = 8, kChunk = 1000;
  fmt::print("\n## 2. pipeline graph: source -> {} tokenizers -> {} count shards + histogram -> sink\n",
             kTokenizers, kShards);
  std::mt19937 rng(11);
  std::vector<std::string> lines;
  for (int i = 0; i < kLines; ++i) lines.push_back(make_line(rng));

  // The same counting as one plain loop on one thread: the reference.
  // Best of 3 runs, so that the actors are compared with the loop at its
  // fastest.
  WordCounts ref;
  LengthCounts ref_hist;
  long ref_words = 0;
  double dt_seq = 1e9;
  for (int run = 0; run < 3; ++run) {
    ref.clear(), ref_hist.clear();
    auto t1 = Clock::now();
    ref_words = count_words(lines, ref, ref_hist);
    dt_seq = std::min(dt_seq, secs(t1));
  }
  fmt::print("  one plain loop on one thread (best of 3): {} lines, {} words in {:.3f} s, {:.2f} M words/s\n",
             kLines, ref_words, dt_seq, ref_words / dt_seq / 1e6);

  // (a) One message per line: each line costs a tokenizer behaviour, one per
  // shard it touches, one for the histogram and one for the sink (about 11
  // behaviours for 10 words), so this measures the runtime's cost per
  // message more than the counting.
  {
    Graph g(kTokenizers, kShards);
    const auto bp0 = backpressure_stats();
    const auto run0 = troupe::stats().run;
    auto t0 = Clock::now();
    for (int i = 0; i < kLines; ++i) {
      const std::string* line = &lines[static_cast<std::size_t>(i)];
      when(g.toks[static_cast<std::size_t>(i % kTokenizers)], [line, &g](Tokenizer& t) {
        t.lines++;
        WordCounts words;
        LengthCounts lengths;
        long n = count_words({line, 1}, words, lengths);
        g.emit(words, std::move(lengths), 1, n);
      });
    }
    troupe::wait_idle();
    double dt = secs(t0);
    const auto bp = backpressure_stats();
    fmt::print("  (a) one message per line: {:.3f} s, {:.2f} M words/s, {:.2f}x the loop "
               "({} behaviours; the source blocked {} times, tokenizers paused {} times)\n",
               dt, ref_words / dt / 1e6, dt_seq / dt, troupe::stats().run - run0, bp.blocked - bp0.blocked,
               bp.paused - bp0.paused);
    g.check_against(ref, ref_hist, ref_words, kLines, "(a)");
  }

  // (b) One message per chunk of lines: the way a pipeline over a file is
  // written when each message should carry microseconds of work. A
  // tokenizer counts its chunk with count_words and sends each shard only
  // the totals of its words.
  {
    Graph g(kTokenizers, kShards);
    const auto run0 = troupe::stats().run;
    auto t0 = Clock::now();
    std::span<const std::string> all = lines;
    for (std::size_t i = 0, c = 0; i < all.size(); i += kChunk, ++c) {
      auto chunk = all.subspan(i, std::min<std::size_t>(kChunk, all.size() - i));
      when(g.toks[c % kTokenizers], [chunk, &g](Tokenizer& t) {
        t.lines += static_cast<long>(chunk.size());
        WordCounts words;
        LengthCounts lengths;
        long n = count_words(chunk, words, lengths);
        g.emit(words, std::move(lengths), static_cast<long>(chunk.size()), n);
      });
    }
    troupe::wait_idle();
    double dt = secs(t0);
    fmt::print("  (b) one message per {} lines: {:.3f} s, {:.2f} M words/s, {:.2f}x the loop ({} "
               "behaviours)\n",
               kChunk, dt, ref_words / dt / 1e6, dt_seq / dt, troupe::stats().run - run0);
    g.check_against(ref, ref_hist, ref_words, kLines, "(b)");
  }
}

// ---------------------------------------------------------------- 3. fork-join
long fib(long n) {
  if (n < 2) return n;
  long x = 0, y = 0;
  TaskGroup g;
  g.run([&] { x = fib(n - 1); });
  g.run([&] { y = fib(n - 2); });
  g.wait();
  return x + y;
}

void fork_join() {
  fmt::print("\n## 3. fork-join: fib(27), one task per call, no cutoff\n");
  auto t0 = Clock::now();
  long v = fib(27);
  double dt = secs(t0);
  fmt::print("  {} tasks in {:.3f} s: {:.1f} M tasks/s\n", 2 * 317810 - 1, dt,
             (2 * 317810 - 1) / dt / 1e6);
  check(v == 196418, fmt::format("fib(27) = {}", v));
}

// ---------------------------------------------------------------- 4. event loop
struct Ticker {
  long events = 0;
  std::thread::id thread;
};

void event_loop() {
  constexpr int kProducers = 50, kPer = 2000;
  fmt::print("\n## 4. an epoll loop the program owns drives actors ({} pool actors send {} events each)\n",
             kProducers, kPer);
  sched::LoopScheduler loop;
  auto ticker = make_actor_on<Ticker>(loop);
  auto t0 = Clock::now();
  for (int p = 0; p < kProducers; ++p) {
    auto src = make_actor<int>(p);
    when(src, [ticker](int&) {
      for (int i = 0; i < kPer; ++i)
        when(ticker, [](Ticker& t) {
          t.events++;
          t.thread = std::this_thread::get_id();
        });
    });
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  epoll_ctl(ep, EPOLL_CTL_ADD, loop.fd(), &ev);
  std::size_t ran = 0, wakeups = 0;
  while (ran < static_cast<std::size_t>(kProducers * kPer)) {
    epoll_event out;
    if (epoll_wait(ep, &out, 1, 2000) != 1) break;
    ++wakeups;
    ran += loop.run_pending();
  }
  close(ep);
  double dt = secs(t0);
  sched::Scheduler* prev = sched::set_current(&loop);
  auto [events, thread] =
      when(read(ticker), [](const Ticker& t) { return std::make_pair(t.events, t.thread); }).get();
  sched::set_current(prev);
  fmt::print("  {} events in {:.3f} s over {} epoll wake-ups: {:.2f} M events/s\n", events, dt,
             wakeups, events / dt / 1e6);
  check(events == kProducers * kPer, "every event reached the loop actor");
  check(thread == std::this_thread::get_id(), "loop actors ran on the loop's own thread");
}

// ---------------------------------------------------------------- 5. processes
std::map<std::string, long> count_chunk(std::vector<std::string> lines) {
  std::map<std::string, long> counts;
  for (auto& l : lines) {
    std::size_t start = 0;
    while (start < l.size()) {
      std::size_t end = l.find(' ', start);
      if (end == std::string::npos) end = l.size();
      counts[l.substr(start, end - start)]++;
      start = end + 1;
    }
  }
  return counts;
}

struct Tally {  // lives in a worker process
  std::map<std::string, long> total;
  long chunks = 0;
  long merge(std::map<std::string, long> part) {
    for (auto& [w, c] : part) total[w] += c;
    return ++chunks;
  }
  std::map<std::string, long> result() const { return total; }
  long merged() const { return chunks; }
};

long count_lines_from(proc::Fd fd) {
  long lines = 0;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd.get(), buf, sizeof buf)) > 0)
    for (ssize_t i = 0; i < n; ++i) lines += buf[i] == '\n';
  return lines;
}

int crash(int) {
  volatile int* p = nullptr;
  return *p;
}

void processes() {
  constexpr int kLines = 100000, kChunk = 5000;
  fmt::print("\n## 5. worker processes: {} lines counted in {} isolated calls, merged by a remote actor\n",
             kLines, kLines / kChunk);
  std::mt19937 rng(5);
  std::vector<std::string> lines;
  for (int i = 0; i < kLines; ++i) lines.push_back(make_line(rng));
  std::map<std::string, long> ref;
  for (auto& [w, c] : count_chunk(lines)) ref[w] = c;

  auto t0 = Clock::now();
  exec::Executor ex;
  auto tally = proc::spawn<Tally>().get();
  std::vector<Promise<long>> merged;
  for (int i = 0; i < kLines; i += kChunk) {
    std::vector<std::string> chunk(lines.begin() + i, lines.begin() + i + kChunk);
    // Counted in some worker, merged in the worker that holds the Tally.
    merged.push_back(ex.submit(exec::isolated<&count_chunk>, std::move(chunk))
                         .then([tally](const std::map<std::string, long>& part) {
                           return tally.call<&Tally::merge>(part);
                         }));
  }
  when_all(std::move(merged)).get();
  auto total = tally.call<&Tally::result>().get();
  double dt = secs(t0);
  auto st = proc::stats();
  fmt::print("  {} chunks in {:.3f} s over {} worker processes (budget-limited, max {} at once)\n",
             kLines / kChunk, dt, st.started, st.max_alive);
  check(total == ref, "word counts from workers equal the in-process count");
  // One call at a time: the caller takes each reply from the shared-memory ring.
  constexpr int kTrips = 5000;
  bool same = true;
  std::size_t before = proc::stats().replies_to_waiters;
  auto t1 = Clock::now();
  for (int i = 0; i < kTrips; ++i)
    same = tally.call<&Tally::merged>().get() == kLines / kChunk && same;
  fmt::print("  {} calls to the remote actor one after another: {:.1f} µs per round trip, "
             "{} replies taken from the ring by the waiting caller itself\n",
             kTrips, secs(t1) / kTrips * 1e6, proc::stats().replies_to_waiters - before);
  check(same, "every round trip returned the actor's state");

  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  proc::Fd rd(p[0]), wr(p[1]);
  auto counted = proc::call<&count_lines_from>(std::move(rd));
  for (int i = 0; i < 1000; ++i) {
    std::string l = lines[static_cast<std::size_t>(i)] + "\n";
    if (::write(wr.get(), l.data(), l.size()) < 0) break;
  }
  wr.reset();
  check(counted.get() == 1000, "a pipe handed to a worker carried 1000 lines");

  try {
    proc::call<&crash>(0).get();
    check(false, "a crashing worker reported");
  } catch (const Error& e) {
    fmt::print("  a crash is an error, not the end: {}\n", e.what());
    check(e.code() == Errc::worker_lost, "the crash came back as Errc::worker_lost");
  }
  check(ex.submit(exec::isolated<&count_chunk>, std::vector<std::string>{"a b a"}).get().at("a") == 2,
        "the budget replaced the dead worker");
}

// ---------------------------------------------------------------- 6. shared heap
// In a worker: fills `count` blocks of `size` bytes with `seed`-derived bytes,
// publishes them and returns their offsets (valid in every process's mapping).
std::vector<std::uint64_t> fill_blocks(proc::Fd heap_fd, int count, int size, int seed) {
  shm::Heap heap = shm::Heap::open_fd(heap_fd.get());
  std::vector<std::uint64_t> out;
  for (int i = 0; i < count; ++i) {
    shm::Offset o = heap.allocate(static_cast<std::size_t>(size));
    auto* p = heap.ptr<unsigned char>(o);
    for (int b = 0; b < size; ++b) p[b] = static_cast<unsigned char>(seed + i + b);
    heap.publish(o);
    out.push_back(o);
  }
  return out;
}

// In a worker: allocates without publishing, then dies (kill -9 of itself).
int allocate_and_die(proc::Fd heap_fd, int count) {
  shm::Heap heap = shm::Heap::open_fd(heap_fd.get());
  for (int i = 0; i < count; ++i) heap.allocate(256);
  ::kill(::getpid(), SIGKILL);
  return 0;
}

void shared_heap() {
  constexpr int kWorkers = 4, kBlocks = 20000, kSize = 96;
  fmt::print("\n## 6. shared-memory heap: {} isolated calls each fill {} blocks in one heap\n", kWorkers,
             kBlocks);
  shm::CreateOptions opt;
  opt.anonymous = true;  // a memfd: reached only through the descriptor we hand out
  opt.max_size = std::size_t{256} << 20;
  shm::Heap heap = shm::Heap::create(opt);
  std::size_t live_before = heap.stats().live_bytes();
  auto t0 = Clock::now();
  std::vector<Promise<std::vector<std::uint64_t>>> parts;
  for (int w = 0; w < kWorkers; ++w)
    parts.push_back(proc::call<&fill_blocks>(proc::Fd(::fcntl(heap.fd(), F_DUPFD_CLOEXEC, 0)), kBlocks, kSize, w * 7));
  bool ok = true;
  std::size_t blocks = 0;
  for (int w = 0; w < kWorkers; ++w) {
    auto offs = parts[static_cast<std::size_t>(w)].get();
    for (std::size_t i = 0; i < offs.size(); ++i) {
      auto* p = heap.ptr<unsigned char>(offs[i]);
      ok &= p[0] == static_cast<unsigned char>(w * 7 + static_cast<int>(i)) &&
            p[kSize - 1] == static_cast<unsigned char>(w * 7 + static_cast<int>(i) + kSize - 1);
      heap.free(offs[i]);
      ++blocks;
    }
  }
  double dt = secs(t0);
  fmt::print("  {} blocks written in workers, read and freed here, in {:.3f} s ({:.2f} M blocks/s)\n",
             blocks, dt, blocks / dt / 1e6);
  check(ok && blocks == static_cast<std::size_t>(kWorkers * kBlocks),
        "every block holds what its worker wrote, seen at this process's own address");
  try {
    proc::call<&allocate_and_die>(proc::Fd(::fcntl(heap.fd(), F_DUPFD_CLOEXEC, 0)), 1000).get();
  } catch (const Error& e) {
    fmt::print("  a worker died holding 1000 unpublished blocks: {}\n", e.what());
  }
  auto report = heap.recover();
  fmt::print("  recovery of {} dead slot(s) returned {} blocks\n", report.slots.size(), report.blocks_freed);
  heap.trim();
  check(heap.verify().empty(), "the heap verifies clean after recovery");
  check(heap.stats().live_bytes() == live_before, "no byte leaked: live bytes are back where they started");
}

// ---------------------------------------------------------------- 7. shared objects
constexpr int kBankAccounts = 256;
constexpr long kBankStart = 1000;

// In a worker: `count` random transfers between accounts of the shared dict,
// each one transaction; with `die`, kill -9 itself half way.
long bank_transfers(proc::Fd heap_fd, int count, int seed, bool die) {
  shm::Heap heap = shm::Heap::open_fd(heap_fd.get());
  shm::TxHeap& txh = shm::TxHeap::attach(heap);
  shm::Dict accounts =
      shm::atomically(txh, [](shm::Tx& tx) { return shm::get_root(tx, "accounts").as_dict(); });
  std::mt19937 rng(static_cast<unsigned>(seed));
  for (int i = 0; i < count; ++i) {
    if (die && i == count / 2) ::kill(::getpid(), SIGKILL);
    long a = static_cast<long>(rng() % kBankAccounts), b = static_cast<long>(rng() % kBankAccounts);
    long amount = static_cast<long>(rng() % 100);
    shm::atomically(txh, [&](shm::Tx& tx) {
      accounts.add(tx, a, -amount);
      accounts.add(tx, b, amount);
    });
  }
  shm::TxHeap::detach(heap);
  return count;
}

void shared_objects() {
  constexpr int kWorkers = 3, kTransfers = 20000;
  fmt::print("\n## 7. shared objects: {} accounts in a shared dict, {} worker processes x {} transfer "
             "transactions, audited meanwhile, one more worker killed half way\n",
             kBankAccounts, kWorkers, kTransfers);
  shm::CreateOptions opt;
  opt.anonymous = true;
  opt.max_size = std::size_t{256} << 20;
  shm::Heap heap = shm::Heap::create(opt);
  shm::TxHeap& txh = shm::TxHeap::attach(heap);
  shm::atomically(txh, [](shm::Tx& tx) {
    shm::Dict d = shm::new_dict(tx, 64);
    for (long k = 0; k < kBankAccounts; ++k) d.set(tx, k, kBankStart);
    shm::set_root(tx, "accounts", d);
  });
  auto total = [&] {
    return shm::atomically(txh, [](shm::Tx& tx) {  // read-only: writes no shared memory
      long sum = 0;
      shm::get_root(tx, "accounts").as_dict().for_each(tx, [&](const shm::Value&, const shm::Value& v) {
        sum += v.as_int();
      });
      return sum;
    });
  };
  auto dup = [&] { return proc::Fd(::fcntl(heap.fd(), F_DUPFD_CLOEXEC, 0)); };
  auto t0 = Clock::now();
  std::vector<Promise<long>> runs;
  for (int w = 0; w < kWorkers; ++w) runs.push_back(proc::call<&bank_transfers>(dup(), kTransfers, w + 1, false));
  auto doomed = proc::call<&bank_transfers>(dup(), kTransfers, 99, true);
  int audits = 0, bad_audits = 0;
  while (!std::all_of(runs.begin(), runs.end(), [](auto& p) { return p.ready(); })) {
    ++audits;
    bad_audits += total() != kBankStart * kBankAccounts;
  }
  long done = 0;
  for (auto& p : runs) done += p.get();
  double dt = secs(t0);
  bool killed = false;
  try {
    doomed.get();
  } catch (const Error& e) {
    killed = e.code() == Errc::worker_lost;
  }
  heap.recover();  // the dead worker's slot: its transaction wholly applied or wholly absent
  fmt::print("  {} transfers committed by {} workers in {:.3f} s ({:.0f} k transactions/s), {} audits meanwhile\n",
             done, kWorkers, dt, done / dt / 1e3, audits);
  check(killed, "the killed worker was reported lost");
  check(bad_audits == 0, fmt::format("every audit during the run saw the total conserved ({} audits)", audits));
  check(total() == kBankStart * kBankAccounts, "total conserved after recovering the killed worker");
  check(txh.stuck_locks() == 0, "no lock left held by the dead process");
  shm::TxHeap::detach(heap);
}

}  // namespace

int main(int argc, char** argv) {
  proc::init(argc, argv);  // a worker process serves here and never returns
  fmt::print("# troupe showcase: {} worker threads\n", sched::default_scheduler().concurrency());
  auto t0 = Clock::now();
  bank();
  pipeline();
  fork_join();
  event_loop();
  processes();
  shared_heap();
  shared_objects();
  Stats rt = troupe::stats();
  proc::Stats ps = proc::stats();
  fmt::print("\n## runtime statistics (troupe::stats(), proc::stats())\n");
  fmt::print("  pool: {} threads ran {} behaviours and tasks, {} of them stolen; "
             "{} sleeps, {} wake-ups\n",
             rt.threads, rt.run, rt.stolen, rt.sleeps, rt.wakes);
  fmt::print("  worker processes: {} started, at most {} at once, {} lost; {} replies taken by "
             "the waiting caller itself\n",
             ps.started, ps.max_alive, ps.lost, ps.replies_to_waiters);
  troupe::shutdown();
  fmt::print("\nall done in {:.2f} s: {}\n", secs(t0), failures ? "FAILURES" : "every check passed");
  return failures ? 1 : 0;
}
