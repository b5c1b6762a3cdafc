// troupe/proc/process.hpp: worker processes that look like local actors and
// local calls, returning the same Promise<R> as `when`.
//
//   int main(int argc, char** argv) {
//     troupe::proc::init(argc, argv);             // a worker serves here, never returns
//     auto c = troupe::proc::spawn<Counter>(10).get();   // a Counter in a worker
//     int v = c.call<&Counter::add>(5).get();     // a method, by registered name
//     auto s = troupe::proc::call<&checksum>(troupe::proc::Fd(fd)).get();  // fds cross too
//   }
//
// Workers are this executable started again (posix_spawn of /proc/self/exe),
// on demand, reused, retired after an idle timeout, and counted against one
// machine-wide budget (default: the number of cores) held as byte locks on a
// file in /dev/shm that the kernel releases when a worker dies. Work that a
// worker submits goes through the root, so nesting never adds processes;
// except that a worker's calls to an actor in another worker go over a
// direct channel between the two, set up through the root on the first such
// call (it starts no process; src/proc/node_private.hpp N11).
//
// Arguments and results are serialised with msgpack-cxx: standard containers,
// strings, numbers, and user types declaring MSGPACK_DEFINE(fields...);
// proc::Fd and proc::SharedBytes cross as descriptors.
//
// Errors (troupe::Error): Errc::worker_lost ("worker 3 (pid 812) exited with
// signal 9 (Killed) while running &Counter::add"), Errc::remote_exception
// (user code threw; RemoteException carries the type name), Errc::bad_message
// (also: the worker was at its fd limit and the call's descriptors were
// truncated), Errc::timeout, Errc::cancelled, Errc::system (no worker could be
// started: "cannot start a worker for fn add: budget file ...: ...").
//
// Invariants:
//   PS1. Everything callable across processes is registered by name at static
//       initialisation (detail/registry.hpp); calls name it, never an address.
//   PS2. A RemoteActor's object lives until the last handle to it in the root
//       process is dropped (handles inside workers do not keep it alive).
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "troupe/actor.hpp"
#include "troupe/proc/detail/node.hpp"
#include "troupe/proc/detail/registry.hpp"
#include "troupe/proc/fd.hpp"
#include "troupe/promise.hpp"
#include "troupe/when.hpp"

namespace troupe::proc {

struct Options {
  std::size_t budget = 0;  // worker processes machine-wide; 0: the number of cores
  std::chrono::milliseconds idle_timeout{2000};
  std::size_t worker_threads = 1;  // threads of each worker's pool
  std::string budget_file;         // default /dev/shm/troupe-budget-<uid>
  // The program a worker runs, with its arguments (argv[0] is the path).
  // Empty: this executable (/proc/self/exe) with init's argv. An embedder
  // whose workers are another program (the Python package starts
  // `python -m troupe._worker`) names it here; that program must call init
  // first, as main does. Workers of every command share one budget.
  std::vector<std::string> worker_command;
  // The timeout of every call and spawn this program makes whose
  // CallOptions name none (0: none; Errc::timeout at the deadline).
  std::chrono::milliseconds call_timeout{0};
  // The budget is machine-wide and fair: while another troupe program waits
  // for a slot of the budget file, a worker of this one that has been idle
  // (no call, no actor) this long is retired, giving its slot back.
  std::chrono::milliseconds give_back_after{100};
  // A worker's calls to the methods of an actor in another worker go over a
  // direct channel between the two (set up on the first one; in order per
  // caller). false: the root relays them, as it does every other call a
  // worker makes (a spawn, a free function).
  bool direct_calls = true;
};

// Call first thing in main. In a worker: serves calls, then exits. In the
// program: records the options (workers start on first use). A call, spawn
// or isolated submit made before init fails with Errc::invalid_argument
// saying so: without it a worker would run the whole program again.
void init(int argc, char** argv, const Options& options = {});
bool is_worker() noexcept;
// Replaces Options::worker_command for workers started from now on (the
// running ones keep theirs).
void set_worker_command(std::vector<std::string> command);
// Replaces Options::direct_calls for the direct channels asked for from now
// on (a pair of workers already connected, or already told to relay, keeps
// what it has).
void set_direct_calls(bool on);
// Stops the root's IO thread, asks every worker to leave (killing those
// that do not within 1 s) and fails every pending call with Errc::shutdown.
// Later calls fail with Errc::shutdown. Idempotent; a no-op in a worker.
// An embedder calls it before its own runtime ends (the Python package, at
// interpreter exit); a C++ program need not (static destruction does it).
void shutdown();

struct Stats {
  std::size_t alive = 0;      // worker processes running now
  std::size_t started = 0;    // ever started
  std::size_t max_alive = 0;  // most at once
  std::size_t lost = 0;       // died while in use
  // Replies handled by a thread that was waiting (src/proc/node_private.hpp
  // N8: its own reply or, while it waits, other calls' replies from the same
  // worker) rather than by the runtime's IO thread.
  std::size_t replies_to_waiters = 0;
  // Calls waiting now for a worker to start or free up (node_private.hpp N5),
  // and how long the oldest of them has waited.
  std::size_t waiting = 0;
  std::chrono::milliseconds longest_wait{0};
  // Idle workers retired early because another program waited for a slot.
  std::size_t given_back = 0;
  // Calls of one worker to another that the root relayed, and the direct
  // channels it set up between two workers (Options::direct_calls).
  std::size_t relayed = 0;
  std::size_t direct_channels = 0;
};
Stats stats();
std::vector<pid_t> worker_pids();
// Retires every idle worker now (tests; they also retire by themselves).
void retire_idle_workers();

// An exception thrown by user code in a worker.
class RemoteException : public Error {
 public:
  RemoteException(std::string type, std::string what, const std::string& message)
      : Error(Errc::remote_exception, message), type_(std::move(type)), what_(std::move(what)) {}
  const std::string& type() const noexcept { return type_; }
  const std::string& remote_what() const noexcept { return what_; }

 private:
  std::string type_, what_;
};

// Cancels a pending call: its promise fails with Errc::cancelled at once, and
// the worker skips it if it has not started.
class CancelToken {
 public:
  CancelToken() : state_(std::make_shared<State>()) {}
  void cancel() const {
    state_->cancelled.store(true);
    if (std::uint64_t id = state_->id.load()) detail::cancel_call(id);
  }
  struct State {
    std::atomic<std::uint64_t> id{0};
    std::atomic<bool> cancelled{false};
  };
  std::shared_ptr<State> state_;
};

// Where proc::spawn_with puts an actor (spawn: spread).
class Placement {
 public:
  // The default: a worker hosting the fewest actors, a new one while the
  // budget allows, so that actors of one program share no process (and no
  // core) until the budget is spent.
  static Placement spread() { return Placement(detail::PlacementRule::spread, {}, 0); }
  // A worker that hosts no other actor (an idle one, or a new one). Fails at
  // once (Errc::invalid_argument) when every worker this program may run
  // hosts actors.
  static Placement fresh() { return Placement(detail::PlacementRule::fresh, {}, 0); }
  // Actors of one group share a worker: the first goes where spread() would,
  // the others join it (anew if it has died).
  static Placement group(std::string name) {
    if (name.empty()) throw Error(Errc::invalid_argument, "Placement::group needs a name");
    return Placement(detail::PlacementRule::in_group, std::move(name), 0);
  }
  // In the worker of `other` (Errc::worker_lost if it is gone).
  template <class A>
  static Placement next_to(const A& other) {
    if (other.worker() == 0) throw Error(Errc::invalid_argument, "Placement::next_to an empty handle");
    return Placement(detail::PlacementRule::spread, {}, other.worker());
  }

  const detail::PlacementRule& rule() const noexcept { return rule_; }
  std::uint32_t worker() const noexcept { return worker_; }

 private:
  Placement(detail::PlacementRule::Kind k, std::string g, std::uint32_t w)
      : rule_{k, std::move(g)}, worker_(w) {}
  detail::PlacementRule rule_;
  std::uint32_t worker_ = 0;  // next_to
};

struct CallOptions {
  // 0: none (then Options::call_timeout). Enforced by the root process's IO
  // thread; a call made from inside a worker times out only if it goes to an
  // actor in another worker (the calling worker keeps its deadline; a call it
  // relays gets Options::call_timeout of the root). Its CancelToken works
  // everywhere.
  std::chrono::milliseconds timeout{0};
  const CancelToken* cancel = nullptr;
};

namespace detail {

template <class F>
struct fn_traits;
template <class R, class... A>
struct fn_traits<R (*)(A...)> {
  using result = R;
  using args = std::tuple<std::decay_t<A>...>;
};
template <class R, class C, class... A>
struct fn_traits<R (C::*)(A...)> {
  using result = R;
  using cls = C;
  using args = std::tuple<std::decay_t<A>...>;
};
template <class R, class C, class... A>
struct fn_traits<R (C::*)(A...) const> : fn_traits<R (C::*)(A...)> {};

// Packs f's result (or the exception it throws) as a reply body and sends it.
template <class F>
void reply_with(std::uint64_t id, F&& f) {
  std::string body;
  std::vector<int> fds;
  using R = std::decay_t<decltype(f())>;
  std::optional<std::conditional_t<std::is_void_v<R>, int, R>> keep;  // fds borrowed until sent
  try {
    msgpack::sbuffer b;
    msgpack::packer<msgpack::sbuffer> pk(b);
    if constexpr (std::is_void_v<R>) {
      f();
      pk.pack_array(2);
      pk.pack(0);
      pk.pack_nil();
    } else {
      keep.emplace(f());
      FdContext saved = fd_context();
      fd_context().out = &fds;
      pk.pack_array(2);
      pk.pack(0);
      try {
        pk.pack(*keep);
      } catch (...) {
        fd_context() = saved;
        throw;
      }
      fd_context() = saved;
    }
    body.assign(b.data(), b.size());
  } catch (const Error& e) {
    fds.clear();
    body = pack_error(e.code(), e.what());
  } catch (const std::exception& e) {
    fds.clear();
    body = pack_exception(current_exception_type(), e.what());
  } catch (...) {
    fds.clear();
    body = pack_exception(current_exception_type(), "(not a std::exception)");
  }
  send_reply(id, body, fds);
}

// Decodes args into a tuple of the parameter types (throws on mismatch).
template <class Tuple>
std::shared_ptr<Tuple> decode_args(const msgpack::object& args) {
  if (args.type != msgpack::type::ARRAY || args.via.array.size != std::tuple_size_v<Tuple>)
    throw msgpack::type_error();
  auto t = std::make_shared<Tuple>();
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (args.via.array.ptr[I].convert(std::get<I>(*t)), ...);
  }
  (std::make_index_sequence<std::tuple_size_v<Tuple>>{});
  return t;
}

template <auto F>
void invoke_function(const msgpack::object& args, std::uint64_t, std::uint64_t id) {
  using Tr = fn_traits<decltype(F)>;
  auto t = decode_args<typename Tr::args>(args);
  troupe::detail::run_task([t, id] {
    if (take_cancelled(id))
      return send_reply(id, pack_error(Errc::cancelled, "cancelled before it started"));
    reply_with(id, [&] { return std::apply(F, std::move(*t)); });
  });
}

template <auto M>
void invoke_method(const msgpack::object& args, std::uint64_t object, std::uint64_t id) {
  using Tr = fn_traits<decltype(M)>;
  using T = typename Tr::cls;
  auto holder = std::static_pointer_cast<Actor<T>>(find_object(object, type_name<T>()));
  auto t = decode_args<typename Tr::args>(args);
  when(*holder, [t, id](T& self) {
    if (take_cancelled(id))
      return send_reply(id, pack_error(Errc::cancelled, "cancelled before it started"));
    reply_with(id, [&] {
      return std::apply([&](auto&&... a) { return (self.*M)(std::move(a)...); }, std::move(*t));
    });
  });
}

template <class T, class... A>
void invoke_new(const msgpack::object& args, std::uint64_t, std::uint64_t id) {
  auto t = decode_args<std::tuple<A...>>(args);
  troupe::detail::run_task([t, id] {
    if (take_cancelled(id))  // also ends the worker's record of the call
      return send_reply(id, pack_error(Errc::cancelled, "cancelled before it started"));
    reply_with(id, [&] {
      auto actor =
          std::apply([](auto&&... a) { return make_actor<T>(std::move(a)...); }, std::move(*t));
      std::uint64_t object =
          add_object(type_name<T>(), std::make_shared<Actor<T>>(std::move(actor)));
      return std::make_tuple(self_worker_id(), object, static_cast<std::int32_t>(::getpid()));
    });
  });
}

template <auto F>
struct FunctionEntry {
  static std::string name() { return "fn " + std::string(symbol_name<F>()); }
  static inline const bool registered = registry().add(name(), &invoke_function<F>);  // PS1
};
template <auto M>
struct MethodEntry {
  static std::string name() { return "method " + std::string(symbol_name<M>()); }
  static inline const bool registered = registry().add(name(), &invoke_method<M>);
};
template <class T, class... A>
struct NewEntry {
  static std::string name() {
    std::string n = "new " + std::string(type_name<T>()) + "(";
    ((n += std::string(type_name<A>()) + ","), ...);
    return n + ")";
  }
  static inline const bool registered = registry().add(name(), &invoke_new<T, A...>);
};

template <class R>
struct PendingCall final : PendingBase {
  explicit PendingCall(Resolver<R> r) : res(std::move(r)) {}
  void complete(Message& m) override;
  void fail(std::exception_ptr e) override { res.set_exception(std::move(e)); }
  Resolver<R> res;
};

// Decodes a reply body: returns its payload, or nullptr with `err` set to the
// remote error (built with make_exception_ptr, never thrown here, so the only
// owners of the error object are exception_ptrs). Throws msgpack::type_error
// if the body is malformed.
const msgpack::object* open_reply(const msgpack::object_handle& oh, const std::string& name,
                                  std::exception_ptr& err);

template <class R>
void PendingCall<R>::complete(Message& m) {
  std::exception_ptr err;
  try {
    auto oh = unpack_body(m.body);
    const msgpack::object* payload = open_reply(oh, name, err);
    if (!payload) return res.set_exception(std::move(err));
    if constexpr (std::is_void_v<R>) {
      return res.set_value();
    } else {
      FdContext saved = fd_context();
      fd_context().in = &m.fds;
      std::optional<R> value;
      try {
        value.emplace(payload->as<R>());
      } catch (...) {
        fd_context() = saved;
        throw;
      }
      fd_context() = saved;
      return res.set_value(std::move(*value));
    }
  } catch (const msgpack::type_error&) {
    err = std::make_exception_ptr(
        Error(Errc::bad_message, "bad message: the result of " + name + " has the wrong type"));
  } catch (const std::exception& e) {
    err = std::make_exception_ptr(Error(
        Errc::bad_message, "bad message: the reply to " + name + " is malformed: " + e.what()));
  }
  res.set_exception(std::move(err));
}

// Packs [worker, object, name, args...] and submits it; a spawn says where
// (`placement`, for worker 0).
template <class R, class... A>
Promise<R> send_call(std::uint32_t worker, std::uint64_t object, std::string name,
                     const CallOptions& opt, PlacementRule placement, A&&... args) {
  auto [promise, resolver] = make_promise<R>();
  OutCall call;
  call.worker = worker;
  call.placement = std::move(placement);
  call.name = name;
  call.timeout = opt.timeout;
  {
    msgpack::sbuffer b;
    msgpack::packer<msgpack::sbuffer> pk(b);
    FdContext saved = fd_context();
    fd_context().out = &call.fds;
    try {
      pk.pack_array(4);
      pk.pack(worker);
      pk.pack(object);
      pk.pack(name);
      pk.pack_array(sizeof...(A));
      (pk.pack(args), ...);
    } catch (const msgpack::type_error&) {
      fd_context() = saved;  // every error the library reports is a troupe::Error
      throw Error(Errc::invalid_argument,
                  name + ": an argument cannot be sent to a worker (an empty or closed "
                         "proc::Fd, or a value its msgpack adaptor rejects)");
    } catch (...) {
      fd_context() = saved;
      throw;
    }
    fd_context() = saved;
    call.body.assign(b.data(), b.size());
  }
  if (opt.cancel && opt.cancel->state_->cancelled.load()) {
    resolver.set_exception(
        std::make_exception_ptr(Error(Errc::cancelled, name + " was cancelled")));
    return std::move(promise);
  }
  auto p = std::make_unique<PendingCall<R>>(std::move(resolver));
  p->name = name;
  std::uint64_t id = submit_call(std::move(call), std::move(p));
  if (opt.cancel) {
    opt.cancel->state_->id.store(id);
    if (opt.cancel->state_->cancelled.load()) cancel_call(id);
  }
  return std::move(promise);
}

struct RemoteOwner {
  RemoteOwner(std::uint32_t w, std::uint64_t o) : worker(w), object(o) {}
  ~RemoteOwner() { release_object(worker, object); }
  std::uint32_t worker;
  std::uint64_t object;
};

}  // namespace detail

// A handle to a T living in a worker process. Copyable; can be passed as an
// argument to other workers' calls (arbitrary graphs across processes).
template <class T>
class RemoteActor {
 public:
  RemoteActor() = default;
  RemoteActor(std::uint32_t worker, std::uint64_t object, bool owning, pid_t pid = 0)
      : worker_(worker), object_(object), pid_(pid) {
    if (owning) owner_ = std::make_shared<detail::RemoteOwner>(worker, object);
  }

  template <auto M, class... A>
  auto call(A&&... args) const {
    return call_with<M>(CallOptions{}, std::forward<A>(args)...);
  }
  template <auto M, class... A>
  auto call_with(const CallOptions& opt, A&&... args) const {
    using Tr = detail::fn_traits<decltype(M)>;
    static_assert(std::is_same_v<typename Tr::cls, T>, "method of another type");
    (void)detail::MethodEntry<M>::registered;  // PS1
    using R = std::decay_t<typename Tr::result>;
    return detail::send_call<R>(worker_, object_, detail::MethodEntry<M>::name(), opt, {},
                                std::forward<A>(args)...);
  }

  std::uint32_t worker() const noexcept { return worker_; }
  std::uint64_t object() const noexcept { return object_; }
  // The process the actor lives in (0 for a default-constructed handle).
  pid_t pid() const noexcept { return pid_; }

  template <class Packer>
  void msgpack_pack(Packer& pk) const {
    pk.pack_array(3);
    pk.pack(worker_);
    pk.pack(object_);
    pk.pack(static_cast<std::int32_t>(pid_));
  }
  void msgpack_unpack(const msgpack::object& o) {
    if (o.type != msgpack::type::ARRAY || o.via.array.size != 3) throw msgpack::type_error();
    worker_ = o.via.array.ptr[0].as<std::uint32_t>();
    object_ = o.via.array.ptr[1].as<std::uint64_t>();
    pid_ = o.via.array.ptr[2].as<std::int32_t>();
    owner_.reset();
  }

 private:
  std::uint32_t worker_ = 0;
  std::uint64_t object_ = 0;
  pid_t pid_ = 0;
  std::shared_ptr<detail::RemoteOwner> owner_;  // PS2 (root only)
};

// Creates a T in a worker from args, placed by `where`; the promise gives
// its handle.
template <class T, class... A>
Promise<RemoteActor<T>> spawn_with(const Placement& where, A&&... args) {
  using Entry = detail::NewEntry<T, std::decay_t<A>...>;
  (void)Entry::registered;  // PS1
  using Id = std::tuple<std::uint32_t, std::uint64_t, std::int32_t>;
  auto raw = detail::send_call<Id>(where.worker(), 0, Entry::name(), CallOptions{}, where.rule(),
                                   std::forward<A>(args)...);
  bool owning = !is_worker();
  return raw.then([owning](const Id& id) {
    return RemoteActor<T>(std::get<0>(id), std::get<1>(id), owning, std::get<2>(id));
  });
}
// The same, spread (Placement::spread()).
template <class T, class... A>
Promise<RemoteActor<T>> spawn(A&&... args) {
  return spawn_with<T>(Placement::spread(), std::forward<A>(args)...);
}

// Runs the free function F in a worker (an isolated call).
template <auto F, class... A>
auto call_with(const CallOptions& opt, A&&... args) {
  using Tr = detail::fn_traits<decltype(F)>;
  (void)detail::FunctionEntry<F>::registered;  // PS1
  using R = std::decay_t<typename Tr::result>;
  return detail::send_call<R>(0, 0, detail::FunctionEntry<F>::name(), opt, {},
                              std::forward<A>(args)...);
}
template <auto F, class... A>
auto call(A&&... args) {
  return call_with<F>(CallOptions{}, std::forward<A>(args)...);
}

}  // namespace troupe::proc
