// src/proc/node_private.hpp: class Node, this process's end of the worker
// network: the root supervisor and the worker server (node.hpp ND1, ND2;
// process.hpp PS1, PS2). Private to src/proc: it declares Node, the records it
// keeps (WorkerRec, Watch, Waiting, PendingEntry) and its constants, and owns
// the invariants below; each part of Node is defined in its own file:
//   node.cpp             the node's lifetime (configure, shut down, ~Node), the
//                        public entry points (init, shutdown, detail::*)
//   node_worker.cpp      worker side: the serving loop (W1, W2)
//   node_peer.cpp        worker side: direct channels to other workers (N11)
//   node_pending.cpp     both sides: the table of pending calls (N1, N5),
//                        cancel and release
//   node_supervisor.cpp  root side: dispatching, spawning, the budget,
//                        deaths, timeouts and retiring (N3-N6)
//   node_io.cpp          root side: the IO loop and the claim holder's
//                        receive (N2, N4, N7), setting up direct channels
//                        between workers (N11)
//   node_wait.cpp        root side: the waiting caller's own receive (N8)
//
// Root: one IO thread waits (epoll) on every worker's channel (its socket and
// its wake eventfd, channel.hpp) and on a wake eventfd of its own; it starts
// workers, sends the calls that waited for one, completes replies, routes
// workers' own calls (but a worker's calls to an actor in another worker go
// over a direct channel between the two, N11), fails the calls of a worker that died, times calls
// out and retires idle workers. Callers send directly from their own thread when a worker is ready
// for them. While calls are outstanding, the IO thread spins briefly on the rings before it sleeps
// (kSpin). A caller that waits for a reply receives it itself for a while (N8): a round trip then
// needs no thread hand-off and no system call when both sides are busy. Worker: the main thread
// receives from the parent and from its direct channels to other workers (N11); calls run on the
// worker's pool (or on their actor), replies are sent from wherever they finish. After each batch
// of messages it spins briefly on its ring before it sleeps.
//
// Invariants (in addition to node.hpp's):
//   N1. mu_ guards workers_, pending_, waiting_, dead_, objects_, unstarted_,
//       stats_, peers_out_, in_calls_ and the id counters. No message is sent and no promise
//       completed while it is held, except spawning a worker and sending
//       `shutdown`.
//   N2. A WorkerRec's channel (socket, eventfds, rings) is closed only when
//       the last shared_ptr to the record goes, so a sender holding one never
//       writes to a reused fd or an unmapped ring.
//   N3. Budget: a worker holds an OFD write lock on one byte of the budget
//       file, through a descriptor only it has; the kernel drops the lock when
//       the worker dies, however it dies.
//   N4. Only the IO thread starts workers, and it ends only after they have
//       gone. A worker's PR_SET_PDEATHSIG follows the *thread* that started
//       it, so it fires when the program ends, never when a caller's
//       short-lived thread does.
//   N5. No thread ever waits for a worker slot. A call that cannot go to a
//       ready worker (one must be started, or none is usable) waits in
//       waiting_ with its pending entry at worker 0, holding its own
//       descriptors; the IO thread sends it when a worker starts, replies or
//       exits (drain_waiting), and fails it with the cause if none can start.
//   N6. Bookkeeping is bounded by live work: dead_ keeps the last kDeadKept
//       workers that hosted objects (only a handle names a worker later);
//       a worker's unstarted_ holds only calls received and not yet started.
//   N9. Placement (proc::Placement) applies to spawns for "any worker": a
//       group's actors go to the worker groups_ names while it lives and is
//       not retiring (else where spread would put them, and groups_ is
//       updated at assignment, under mu_, so two spawns of a group queued
//       together land together); a fresh one goes only to a worker hosting no
//       actor, or waits for a new one, and fails at once when this program's
//       budget is all workers that host actors (it could wait for ever).
//   N10. Fairness of the machine-wide budget: while this program has calls
//       queued because the budget file had no free slot (and its own budget
//       has room), it holds a shared OFD lock on byte kWaitByte of the file
//       (released when it stops waiting, or by the kernel when it dies).
//       Another program's IO thread that has a worker idle (no call, no
//       actor) for Options::give_back_after probes that byte (at most every
//       50 ms) and retires that worker, so the slot goes to the waiter
//       instead of idling until idle_timeout. A probe through our own open
//       file description does not see our own mark.
//   W1. A worker with one thread (the default) runs every call, and every
//       behaviour of the actors it hosts, on the thread that receives them.
//   N7. Every message between root and worker goes through the worker's
//       Channel (channel.hpp C1-C6), which keeps one sender's order across
//       its ring and its socket. In the root only the holder of a worker's
//       claim (WorkerRec::claimed) receives from it, so messages are handled
//       one at a time in order: the IO thread, or a caller waiting (N8); only
//       the worker's main thread receives (worker), from its parent's channel
//       and from its direct channels to other workers (N11, channel.hpp C7).
//   N8. Caller-side receive (root): a thread outside any scheduler that waits
//       on a promise while its last remote call is pending (the blocking
//       poller, scheduler.hpp SC4) claims the channel of the worker that call
//       went to, clears the ring's sleeping word (so the worker's reply costs
//       no eventfd write) and handles what arrives, exactly as the IO thread
//       would, in batches of at most kHelperBatch, until its promise is ready,
//       its call was answered, or kSpin has passed. Leaving, if the IO thread
//       sleeps (io_asleep_) it sets the word again through prepare_sleep and,
//       should that find a frame, wakes the IO thread; then it releases the
//       claim (why no message is left unseen: node_wait.cpp). While a
//       caller holds a claim the IO thread neither spins on that ring nor
//       counts it as expecting a reply; it waits for the claim only to take
//       an event (eventfd, socket) for that worker, first leaving
//       socket_hint so the caller reads the socket too.
//       Deaths (end of stream) are left to the IO thread. A claim is released
//       on every path (an exception from a handler reaches the waiter). The
//       IO thread's own waits never poll (tl_receiving). Continuations of a
//       remote call's promise run on the thread that handled its reply (then
//       and when hand them to the scheduler; a `then` callback that blocked on
//       a remote call would keep the claim, as it kept the IO thread before).
//       ~Node uninstalls the poller and waits for the threads inside it.
//   N9. ~Node (at exit) first drains and stops the default pool, while the
//       IO thread still runs: a behaviour still running there may drop a
//       remote handle, whose release reaches this node's tables.
//   W2. A cancel marks a call in unstarted_ only if it has not started; the
//       entry goes when the call starts (take_cancelled) or is rejected.
//   N11. Direct channels between workers (node_peer.cpp; channel.hpp C7). A
//       worker's call to a method of an actor in another worker B (its
//       OutCall names B, not itself, and is not a spawn) does not go through
//       the root. The first such call sends `connect [B]` to the root and is
//       queued in peers_out_[B] (state connecting, holding dups of its
//       descriptors, node.hpp ND2), and so is every later call to B until the
//       root answers. The root makes a channel and sends its ends to B
//       (`serve`) and then to the caller (`call`), or answers `relay` (
//       Options::direct_calls off, B gone or retiring, the channel could not
//       be made or sent to B): it answers every request. The caller's main
//       thread then sends the queued calls in order over the channel (or to
//       the root), popping each under mu_, and sets the state to direct (or
//       relayed) under mu_ when the queue is empty; a call submitted
//       meanwhile joins the queue. Order per sender: every call to B takes
//       one path, never the root first and the channel after, and each path
//       keeps one sender's order (C1, C2; the root forwards a worker's calls
//       to B in the order it receives them). `relayed` is final.
//       Failures: the caller's pending entry of a queued or direct call names
//       B (PendingEntry::worker). The end of stream on the channel (C5: B
//       died, or dropped the channel) fails each of them with worker_lost
//       naming B, its pid and the method, and makes the state relayed (later
//       calls go through the root, which knows B's fate). The end of stream
//       on B's side (the caller died) drops the channel: calls from it that
//       B received still run, so the actor's state is what they made it, and
//       their replies are dropped. No wait is unbounded: a direct call ends
//       by its reply or the channel's end of stream, which the kernel gives
//       when the peer dies, or by its deadline (CallOptions::timeout, else
//       Options::call_timeout, as the root would have applied: the main
//       thread sleeps at most 10 ms while one is due, then expire_direct);
//       a connect, by the root's answer. B gives each
//       call from a channel an id of its own (kPeerCall bit set; in_calls_
//       maps it to the channel and the caller's id), so that ids of two
//       callers never collide and its reply (send_reply, any thread) goes back
//       where the call came from. Only the worker's main thread receives, from
//       the parent and from every channel (N7), so W1 holds for direct calls:
//       wait_and_serve spins on every ring, then sleeps in one poll over every
//       socket and wake eventfd (C4 for each). Budget: a channel is a socket,
//       two eventfds and 512 KiB of rings in each of the two workers, never a
//       process (N3 counts workers).
#pragma once

#include <fmt/core.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "proc/channel.hpp"
#include "troupe/proc/process.hpp"
#include "troupe/runtime.hpp"

namespace troupe::proc::detail {

using Clock = std::chrono::steady_clock;
// How long a receiver that expects traffic spins on its ring before sleeping.
constexpr std::chrono::microseconds kSpin{50};
// N8: the most messages a waiting caller handles between two looks at its
// own promise and the time.
constexpr std::size_t kHelperBatch = 16;
// epoll data: a worker's id, with this bit for its channel's wake eventfd.
constexpr std::uint64_t kWakeEvent = std::uint64_t{1} << 32;
// N11: a worker's own id for a call that came over a direct channel.
constexpr std::uint64_t kPeerCall = std::uint64_t{1} << 63;
// N11: the role a connect message from the root gives its receiver.
enum class PeerRole : std::uint8_t { call = 0, serve = 1, relay = 2 };

struct WorkerRec {
  std::uint32_t id = 0;
  pid_t pid = -1;
  std::unique_ptr<detail::Channel> chan;  // N2, N7
  bool retiring = false;
  std::size_t outstanding = 0;
  std::size_t objects = 0;
  Clock::time_point last_used = Clock::now();
  // N7, N8: the right to receive from chan. Acquire/release: the channel's
  // receiving state passes from one holder to the next.
  std::atomic<bool> claimed{false};
  // N8: the IO thread saw the socket readable while a caller held the claim.
  std::atomic<bool> socket_hint{false};

  bool try_claim() noexcept {
    return !claimed.load(std::memory_order_relaxed) &&
           !claimed.exchange(true, std::memory_order_acquire);
  }
  // IO thread: a caller holds the claim for about kSpin plus one batch of
  // messages it handles (kHelperBatch), so this does not wait long.
  void claim() noexcept {
    detail::Spin spin;  // no deadline
    while (!try_claim()) spin.step();
  }
  void unclaim() noexcept { claimed.store(false, std::memory_order_release); }
};

// N8: the call this thread sent last to a worker (0: none), whose reply a
// wait on this thread may receive itself (its pending entry names the
// worker); and whether this thread is receiving now (a continuation run by a
// reply it handles must not start receiving again).
inline thread_local std::uint64_t tl_expect = 0;
inline thread_local bool tl_receiving = false;

// N8: what a waiting caller receives for: the reply to call `id`.
struct Watch {
  std::uint64_t id = 0;
  bool done = false;  // its reply was handled
};

// A call waiting for a worker (N5): its pending entry has worker 0.
struct Waiting {
  std::uint64_t id = 0;
  Clock::time_point since = Clock::now();  // stats().longest_wait
  std::string body;
  std::vector<Fd> fds;  // dups, owned: the caller's were borrowed (node.hpp ND2)
};

struct PendingEntry {
  std::unique_ptr<PendingBase> p;
  std::uint32_t worker = 0;
  Clock::time_point deadline = Clock::time_point::max();
  bool spawns_object = false;
  PlacementRule placement;  // a spawn's (N9)
};

// N11, worker side: a direct channel to another worker.
struct PeerChan {
  std::uint32_t peer = 0;  // the other worker's id
  pid_t pid = 0;
  bool caller = false;  // this worker calls through it (else it serves the peer's calls)
  std::unique_ptr<detail::Channel> chan;
  std::atomic<bool> closed{false};  // end of stream seen: dropped (main thread sets it)
};

// N11: this worker's calls to one other worker.
struct PeerOut {
  enum State : std::uint8_t { connecting, direct, relayed } state = connecting;
  std::shared_ptr<PeerChan> chan;  // direct (and while the queue is sent)
  std::deque<Waiting> queued;      // connecting: in the order they were made
};

// N11: a call that came over a direct channel, by this worker's id for it.
struct InCall {
  std::shared_ptr<PeerChan> from;
  std::uint64_t id = 0;  // the caller's id
};

class Node;
Node& node();

class Node {
 public:
  // node.cpp: lifetime and configuration.
  ~Node();
  void configure(const Options& o);
  void set_worker_command(std::vector<std::string> command);
  void shut_down();
  Stats stats();
  detail::TableSizes table_sizes();
  std::vector<pid_t> pids();

  // ---------------------------------------------------------------- worker side
  // node_worker.cpp: the serving loop (W1, W2, N7).
  bool serve_available(bool socket_ready);
  template <class Busy>
  bool wait_and_serve(int extra, Busy&& busy);
  bool handle(Message& m);
  [[noreturn]] void serve(std::unique_ptr<detail::Channel> chan, std::uint32_t id,
                          std::size_t threads);
  class WorkerLoop;
  void serve_call(Message& m);
  void release_local(Message& m);
  void send_reply(std::uint64_t id, std::string_view body, std::span<const int> fds = {});
  bool take_cancelled(std::uint64_t id);
  std::uint64_t add_object(std::string_view type, std::shared_ptr<void> actor);
  std::shared_ptr<void> find_object(std::uint64_t id, std::string_view type);

  // node_peer.cpp: direct channels to other workers (N11).
  bool goes_direct(const detail::OutCall& call) const;
  std::uint64_t submit_direct(detail::OutCall&& call, std::unique_ptr<PendingBase> p);
  void on_connect(Message& m);
  void send_queued(std::uint32_t peer, const std::shared_ptr<PeerChan>& via);
  bool serve_peer(const std::shared_ptr<PeerChan>& pc, bool socket_ready);
  void serve_peer_call(const std::shared_ptr<PeerChan>& pc, Message& m);
  void cancel_from_peer(const PeerChan& pc, std::uint64_t id);
  bool reply_to_peer(std::uint64_t id, std::string_view body, std::span<const int> fds);
  void drop_peer(const std::shared_ptr<PeerChan>& pc);
  void expire_direct();

  // ---------------------------------------------------------------- both sides
  // Below (a template) and node.cpp: a rejected message (wire.hpp WR3).
  template <class Reply>
  bool answer_rejected(const detail::BadMessage& e, Reply&& reply);
  static std::string call_name(std::string_view body);
  void log_failure(const std::exception& e, std::string_view doing);

  // node_pending.cpp: the table of pending calls (N1, N5), cancel, release.
  std::uint64_t submit(detail::OutCall&& call, std::unique_ptr<PendingBase> p);
  std::uint64_t submit_to_parent(detail::OutCall&& call, std::unique_ptr<PendingBase> p);
  void release_remote(std::uint32_t worker, std::uint64_t object);
  void cancel(std::uint64_t id, bool timed_out = false);
  bool complete(Message& m, bool waiter = false);
  void fail_pending(std::uint64_t id, std::exception_ptr e);
  void unassign_locked(const PendingEntry& e, WorkerRec& w);
  void forget_deadline_locked(const PendingEntry& e);
  void forget_waiting_locked(std::uint64_t id, const PendingEntry& e);
  pid_t note_reply_locked(PendingEntry& e, const Message& m);
  // Erases every pending call that went to `worker` and returns them, to be
  // failed once mu_ is released (mu_ held; N1).
  std::vector<std::unique_ptr<PendingBase>> take_pending_of_locked(
      std::uint32_t worker);  // the worker's pid, 0 if gone

  // ---------------------------------------------------------------- root side
  // node_supervisor.cpp: dispatching, spawning, the budget, deaths, timeouts
  // and retiring (N3-N6).
  std::uint64_t dispatch(detail::OutCall&& call, std::unique_ptr<PendingBase> p,
                         bool expect = false);
  std::shared_ptr<WorkerRec> ready_worker_locked(bool spawns, const PlacementRule& rule);
  std::shared_ptr<WorkerRec> place_locked(bool spawns, const PlacementRule& rule, bool& start_new);
  bool fresh_impossible_locked() const;
  static bool busy(const WorkerRec& w, bool spawns);
  bool may_spawn_locked() const;
  void assign_locked(PendingEntry& e, WorkerRec& w);
  void send_call(const WorkerRec& w, std::uint64_t id, std::string_view body,
                 std::span<const int> fds);
  void drain_waiting();
  void fail_waiting_locked(std::unique_lock<std::mutex>& lock, const Error& err);
  std::string lost_worker_locked(std::uint32_t worker) const;
  std::shared_ptr<WorkerRec> pick_locked(bool spawns = false);
  Fd take_budget_slot();
  void mark_waiting_for_budget(bool on);  // N10
  bool other_program_waits();             // N10
  std::shared_ptr<WorkerRec> spawn_locked();
  void on_exit(const std::shared_ptr<WorkerRec>& w);
  void expire_and_retire();
  void retire_idle();
  void shut_down_workers();

  // node_io.cpp: the IO thread and the claim holder's receive (N2, N4, N7).
  void ensure_io();
  void wake_io();
  void io_loop();
  bool receive_from(const std::shared_ptr<WorkerRec>& w, bool socket_ready, Watch* watch = nullptr);
  struct Forward;
  void send_to(std::uint32_t worker, Kind kind, std::uint64_t id, std::string_view body,
               std::span<const int> fds);
  void route(const std::shared_ptr<WorkerRec>& from, Message& m);
  void connect_workers(const std::shared_ptr<WorkerRec>& from, const Message& m);
  void set_direct_calls(bool on);
  void stop();

  // node_wait.cpp: the waiting caller's own receive (N8).
  bool help_wait(sched::Waiter& wt);

  // A worker: the root's Options::call_timeout (TROUPE_WORKER), for its
  // direct calls (N11).
  void set_call_timeout(std::chrono::milliseconds t) {
    std::lock_guard lock(mu_);
    opts_.call_timeout = t;
  }

  std::vector<std::string> argv_;
  bool worker_mode_ = false;
  std::uint32_t self_id_ = 0;

 private:
  std::mutex mu_;  // N1
  Options opts_;
  std::map<std::uint32_t, std::shared_ptr<WorkerRec>> workers_;
  std::unordered_map<std::uint64_t, PendingEntry> pending_;
  std::map<std::uint32_t, std::string> dead_;    // N6: the last kDeadKept, by worker id
  std::map<std::string, std::uint32_t> groups_;  // N9: placement group -> its worker
  static constexpr std::size_t kDeadKept = 256;
  std::deque<Waiting> waiting_;                        // N5
  std::unordered_map<std::uint64_t, bool> unstarted_;  // W2: call id -> cancelled
  std::unordered_map<std::uint64_t, std::pair<std::string, std::shared_ptr<void>>> objects_;
  std::uint64_t next_call_ = 1, next_object_ = 1;
  std::uint32_t next_worker_ = 1;
  std::size_t deadlines_ = 0;             // pending entries with a deadline (scan only if > 0; mu_)
  Clock::time_point next_expiry_scan_{};  // expire_direct: not before (throttle; mu_)
  bool retire_all_ = false;
  bool initialized_ = false;            // init() was called (mu_)
  std::atomic<bool> shut_{false};       // shutdown() was called: nothing is dispatched
  Clock::time_point next_spawn_try_{};  // back-off after the budget file said no
  Fd budget_probe_;                     // N10: our mark of waiting, and the probe for others'
  bool marked_waiting_ = false;         // N10: IO thread only
  Clock::time_point next_probe_{};      // N10: IO thread only
  Stats stats_;
  std::unique_ptr<detail::Channel> parent_;             // worker mode (N7)
  std::map<std::uint32_t, PeerOut> peers_out_;          // worker mode, N11 (mu_)
  std::unordered_map<std::uint64_t, InCall> in_calls_;  // worker mode, N11 (mu_)
  std::uint64_t next_in_call_ = 0;                      // N11 (mu_)
  // Worker mode, N11: the direct channels the main thread receives from (it
  // alone reads and changes this list, N7).
  std::vector<std::shared_ptr<PeerChan>> peer_chans_;
  std::vector<std::shared_ptr<WorkerRec>> polled_;  // IO thread only: io_loop's snapshot
  Fd epfd_, wake_;
  std::once_flag io_once_;
  std::thread io_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> io_asleep_{false};  // N8
  std::atomic<bool> closing_{false};    // N8: the node is being destroyed
  std::atomic<int> helpers_inside_{0};  // N8: threads in help_wait
};

// A message rejected with its header readable (wire.hpp WR3), on either
// side: a call is answered with the error (through `reply`), a reply fails
// the call it answers; either way the caller learns why instead of waiting.
template <class Reply>
bool Node::answer_rejected(const detail::BadMessage& e, Reply&& reply) {
  std::string what = e.what();
  if (e.kind() == Kind::call) {
    std::string name = call_name(e.body());
    if (!name.empty()) what = fmt::format("{}: {}", name, what);
    if (worker_mode_) what = fmt::format("worker {}: {}", self_id_, what);
    reply(e.id(), detail::pack_error(Errc::bad_message, what));
  } else if (e.kind() == Kind::reply) {
    std::string name;
    {
      std::lock_guard lock(mu_);
      auto it = pending_.find(e.id());
      if (it != pending_.end()) name = it->second.p->name;
    }
    fail_pending(e.id(), std::make_exception_ptr(
                             Error(Errc::bad_message,
                                   fmt::format("the reply to {} was rejected: {}", name, what))));
  } else {
    return false;  // nobody waits on it: the receiver only logs it
  }
  return true;
}

}  // namespace troupe::proc::detail
