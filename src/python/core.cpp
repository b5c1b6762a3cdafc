// src/python/core.cpp: troupe._core, the extension module under the Python
// package (python/troupe/). It owns the crossing between Python objects and
// the C++ runtime: calls to worker processes and their completion, Python
// objects hosted as actors (in this process on the pool or an event loop's
// thread, and in worker processes), and a worker's serving loop. What a call
// carries is opaque bytes here; pickling is the Python side's (_serial.py).
//
// Invariants:
//   PY1. No C++ thread of the runtime (the proc layer's IO thread, pool
//       threads between behaviours) ever waits for the GIL while it holds a
//       runtime lock or while other work waits on it. Replies are stored in
//       their CallState and handed to the completer thread, which alone takes
//       the GIL to deliver them, in batches (one GIL acquisition per batch).
//   PY2. A Python reference held by C++ (PyRef) may be dropped on any thread:
//       with the GIL it is released at once, without it is parked in the
//       graveyard and released by the next thread here that holds the GIL.
//       Nothing drops a reference after the interpreter has finalized.
//   PY3. A CallState is completed once (by its reply or its failure, node.hpp
//       ND1) and delivered to its Python future at most once: whoever wins
//       claim() (the completer thread, or a thread waiting on the call)
//       delivers; the other skips it.
//   PY4. A thread that waits on a call releases the GIL and waits in slices of
//       at most 100 ms, returning to Python in between so that signal
//       handlers (KeyboardInterrupt) run. A thread that belongs to a
//       scheduler (a single-threaded worker's loop, a pool thread) helps it
//       instead (scheduler.hpp SC3), so nested calls in a worker keep it
//       serving.
//   PY5. Python code on an actor runs under NoNestedRuns (cown.hpp CW11):
//       what it sends never runs nested inside it, since its waits (a
//       future's result(), PY4) are ones the runtime cannot check (CW7).
#include <fmt/core.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <climits>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>

#include "troupe/actor.hpp"
#include "troupe/detail/platform.hpp"
#include "troupe/proc/process.hpp"
#include "troupe/runtime.hpp"
#include "troupe/sched/loop.hpp"
#include "troupe/shm/tx.hpp"
#include "troupe/trace.hpp"
#include "troupe/when.hpp"

namespace nb = nanobind;

namespace troupe::py {

void bind_shm(nb::module_& m);  // shm.cpp

// ------------------------------------------------------------------ PY2
namespace {
std::mutex graveyard_mu;
std::vector<PyObject*> graveyard;  // graveyard_mu
std::atomic<bool> graveyard_full{false};
}  // namespace

// GIL held: releases what other threads parked.
void drain_graveyard() {
  if (!graveyard_full.load(std::memory_order_relaxed)) return;  // a late one waits for the next
  std::vector<PyObject*> dead;
  {
    std::lock_guard lock(graveyard_mu);
    dead.swap(graveyard);
    graveyard_full.store(false, std::memory_order_relaxed);
  }
  for (PyObject* p : dead) Py_DECREF(p);
}

void release_anywhere(PyObject* p) noexcept {
  if (!p || !Py_IsInitialized()) return;  // after finalization: leak, never touch Python
  if (PyGILState_Check()) {
    Py_DECREF(p);
    return;
  }
  std::lock_guard lock(graveyard_mu);
  graveyard.push_back(p);
  graveyard_full.store(true, std::memory_order_relaxed);
}

// One owned reference to a Python object, droppable on any thread (PY2).
class PyRef {
 public:
  PyRef() = default;
  explicit PyRef(nb::handle h) : p_(h.inc_ref().ptr()) {}  // GIL held
  PyRef(PyRef&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  PyRef& operator=(PyRef&& o) noexcept {
    if (this != &o) release_anywhere(std::exchange(p_, std::exchange(o.p_, nullptr)));
    return *this;
  }
  PyRef(const PyRef&) = delete;
  PyRef& operator=(const PyRef&) = delete;
  ~PyRef() { release_anywhere(p_); }
  nb::handle get() const noexcept { return p_; }  // GIL held to use it
  explicit operator bool() const noexcept { return p_ != nullptr; }

 private:
  PyObject* p_ = nullptr;
};

// Calls fn(args...) under the GIL, reporting (not raising) a Python error:
// for callbacks that have nobody to raise to.
template <class... A>
void call_reporting(nb::handle fn, A&&... args) {
  try {
    fn(std::forward<A>(args)...);
  } catch (nb::python_error& e) {
    e.restore();
    PyErr_WriteUnraisable(fn.ptr());
  } catch (const std::exception& e) {  // a cast that failed: report, never unwind a runtime thread
    PyErr_SetString(PyExc_RuntimeError, e.what());
    PyErr_WriteUnraisable(fn.ptr());
  }
}

// ------------------------------------------------------------------ calls
// What a call to a worker process came back with. Fields are written by the
// thread that completes the call before `done` is set (release) and read by
// the deliverer after it saw it set (acquire); PY3.
struct CallState : std::enable_shared_from_this<CallState> {
  enum Kind { pending, bytes_reply, created, error };
  std::atomic<std::uint32_t> done{0};  // futex word: 1 once the outcome is written
  std::atomic<bool> claimed{false};    // PY3
  std::atomic<int> waiting{0};         // threads in Call::wait (PY3: they deliver, not the completer)
  std::atomic<sched::Scheduler*> helper{nullptr};  // a scheduler thread waiting (PY4)
  std::uint64_t id = 0;                            // the proc layer's call id (cancel)
  Kind kind = pending;
  std::string blob;
  std::vector<proc::Fd> fds;
  std::uint32_t worker = 0;
  std::uint64_t object = 0;
  int code = 0;
  std::string message;
  PyRef future;  // the Python future delivered to (PY3)

  void finish();
  bool claim() noexcept { return !claimed.exchange(true, std::memory_order_acq_rel); }
};

nb::object wrap_call(std::shared_ptr<CallState> st);  // the Python `Call` (below)

// PY1: the one thread that takes the GIL to deliver replies.
class Completer {
 public:
  void push(std::shared_ptr<CallState> c) {
    bool wake;
    {
      std::lock_guard lock(mu_);
      if (stopped_) return;  // shutdown(): the interpreter is ending
      if (!thread_.joinable()) thread_ = std::thread([this] {
        // A done-callback it runs may call a bounded actor: it must not wait
        // there, every remote reply waits behind it (PY1, backpressure.hpp).
        troupe::detail::tl_never_block = true;
        run();
      });
      q_.push_back(std::move(c));
      wake = q_.size() == 1;
    }
    if (wake) cv_.notify_one();
  }
  // The package's deliver(future, call), set once as it is imported (in the
  // program and in workers alike), before any call.
  void set_deliver(nb::handle fn) { deliver_ = PyRef(fn); }
  // GIL released by the caller: lets the thread deliver what is queued, then
  // ends it.
  void stop() {
    std::thread t;
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      t = std::move(thread_);
    }
    cv_.notify_one();
    if (t.joinable()) t.join();
    std::lock_guard lock(mu_);
    stopped_ = true;
    q_.clear();
  }
  nb::handle deliver() const { return deliver_.get(); }

 private:
  void run() {
    std::vector<std::shared_ptr<CallState>> batch;
    for (;;) {
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return !q_.empty() || stopping_; });
        if (q_.empty()) return;  // stopping, nothing left
        batch.assign(std::make_move_iterator(q_.begin()), std::make_move_iterator(q_.end()));
        q_.clear();
      }
      nb::gil_scoped_acquire gil;
      drain_graveyard();
      for (auto& c : batch) {
        if (c->claim() && c->future) call_reporting(deliver_.get(), c->future.get(), wrap_call(c));
      }
      batch.clear();  // their PyRefs go with the GIL held
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<CallState>> q_;  // mu_
  bool stopping_ = false, stopped_ = false;   // mu_
  std::thread thread_;
  PyRef deliver_;  // set once by init, before any call
};

Completer& completer() {
  static Completer* c = new Completer;  // never destroyed: outlives static destruction
  return *c;
}

void CallState::finish() {
  done.store(1);  // seq_cst: against helper's store in Wait::arm (PY4) and waiting (PY3)
  troupe::detail::futex_wake(&done, INT_MAX);
  if (sched::Scheduler* s = helper.load()) s->wake_helpers();
  // PY3: a thread waiting in Call::wait will see `done` and deliver itself
  // (Call::wait's exit re-reads it after leaving `waiting`: whichever of the
  // two stores the other misses, that side acts). Waking the completer too
  // would only make it fight the waiter for the GIL.
  if (waiting.load() == 0) completer().push(shared_from_this());
}

// The proc layer's completion of one call (node.hpp ND1): store and hand on.
struct PyPending final : proc::detail::PendingBase {
  PyPending(std::shared_ptr<CallState> s, bool creates) : st(std::move(s)), creates(creates) {}
  void complete(proc::detail::Message& m) override {
    std::exception_ptr err;
    try {
      auto oh = proc::detail::unpack_body(m.body);
      const msgpack::object* payload = proc::detail::open_reply(oh, name, err);
      if (!payload) return fail(std::move(err));
      if (creates) {
        auto t = payload->as<std::tuple<std::uint32_t, std::uint64_t>>();
        st->worker = std::get<0>(t);
        st->object = std::get<1>(t);
        st->kind = CallState::created;
      } else {
        proc::detail::FdContext saved = proc::detail::fd_context();
        proc::detail::fd_context().in = &m.fds;
        try {
          auto t = payload->as<std::tuple<std::string, std::vector<proc::Fd>>>();
          st->blob = std::move(std::get<0>(t));
          st->fds = std::move(std::get<1>(t));
        } catch (...) {
          proc::detail::fd_context() = saved;
          throw;
        }
        proc::detail::fd_context() = saved;
        st->kind = CallState::bytes_reply;
      }
      st->finish();
    } catch (const std::exception& e) {
      fail(std::make_exception_ptr(Error(
          Errc::bad_message, fmt::format("bad message: the reply to {} is malformed: {}", name,
                                         e.what()))));
    }
  }
  void fail(std::exception_ptr e) override {
    try {
      std::rethrow_exception(e);
    } catch (const Error& err) {
      st->code = static_cast<int>(err.code());
      st->message = err.what();
    } catch (const std::exception& err) {
      st->code = static_cast<int>(Errc::system);
      st->message = err.what();
    }
    st->kind = CallState::error;
    st->finish();
  }
  std::shared_ptr<CallState> st;
  bool creates;
};

// A wait a scheduler's thread can help with (PY4).
struct CallWaiter final : sched::Waiter {
  explicit CallWaiter(CallState& s) : s(s) {}
  bool ready() const noexcept override { return s.done.load(std::memory_order_acquire) != 0; }
  void arm(sched::Scheduler* sch) override { s.helper.store(sch); }  // seq_cst (finish)
  CallState& s;
};

// The Python object `Call`: a handle on a CallState.
struct Call {
  std::shared_ptr<CallState> st;

  bool is_done() const noexcept { return st->done.load(std::memory_order_acquire) != 0; }
  // GIL released by the binding (PY4). True once the outcome is there: the
  // caller then claims and delivers it (PY3).
  bool wait(double timeout_s) {
    if (is_done()) return true;
    st->waiting.fetch_add(1);  // seq_cst (finish)
    bool got;
    try {
      got = wait_here(timeout_s);
    } catch (...) {
      st->waiting.fetch_sub(1);
      throw;
    }
    st->waiting.fetch_sub(1);    // seq_cst, then:
    return got || is_done();     // a finish that saw us waiting is seen here
  }
  bool wait_here(double timeout_s) {
    CallWaiter w(*st);
    if (sched::Scheduler* s = sched::current()) {
      s->help_until(w);  // a worker's loop or a pool thread keeps running its work
      return true;
    }
    if (sched::BlockingPoller poll = sched::blocking_poller(); poll && poll(w)) return true;
    double slice = timeout_s < 0 ? 0.1 : std::min(timeout_s, 0.1);
    troupe::detail::futex_wait_for(&st->done, 0, static_cast<std::int64_t>(slice * 1e9));
    return is_done();
  }
  bool claim() noexcept { return st->claim(); }
  void cancel() {
    if (st->id != 0 && !is_done()) proc::detail::cancel_call(st->id);
  }
  // After a claim: ("ok", bytes, [fd...]) | ("created", worker, object) |
  // ("error", code, message). The descriptors are the caller's to close.
  // Drops the state's reference to its future: the future holds this Call,
  // and a cycle through C++ is one Python's collector cannot see.
  nb::tuple outcome() {
    st->future = PyRef();
    switch (st->kind) {
      case CallState::bytes_reply: {
        nb::list fds;
        for (auto& f : st->fds) fds.append(f.release());
        st->fds.clear();
        nb::bytes b(st->blob.data(), st->blob.size());
        std::string().swap(st->blob);
        return nb::make_tuple("ok", b, fds);
      }
      case CallState::created:
        return nb::make_tuple("created", st->worker, st->object);
      case CallState::error:
        return nb::make_tuple("error", static_cast<int>(st->code), st->message);
      default:
        return nb::make_tuple("pending", nb::none(), nb::none());
    }
  }
};

nb::object wrap_call(std::shared_ptr<CallState> st) { return nb::cast(Call{std::move(st)}); }

// ------------------------------------------------------------------ worker side
namespace {
PyRef call_handler, actor_handler;  // set by serve_worker, before serving
}

using Reply = std::tuple<std::string, std::vector<proc::Fd>>;

// GIL held: turns the handler's (bytes, [fd...]) into a reply that owns the
// descriptors (sent, then closed, by the proc layer).
Reply reply_from(nb::handle r) {
  nb::tuple t = nb::cast<nb::tuple>(r);
  nb::bytes b = nb::cast<nb::bytes>(t[0]);
  Reply out;
  std::get<0>(out).assign(b.c_str(), b.size());
  for (nb::handle fd : nb::cast<nb::list>(t[1])) std::get<1>(out).emplace_back(nb::cast<int>(fd));
  return out;
}

nb::list fd_list(std::vector<proc::Fd>& fds) {
  nb::list l;
  for (auto& f : fds) l.append(f.release());
  return l;
}

// An isolated call: registered once, so every Python function travels
// through this one name (process.hpp PS1); what to run is in the bytes.
Reply py_function(std::string blob, std::vector<proc::Fd> fds) {
  nb::gil_scoped_acquire gil;
  drain_graveyard();
  return reply_from(call_handler.get()(nb::bytes(blob.data(), blob.size()), fd_list(fds)));
}

// A Python object hosted in a worker. The object lives in `cell`, a list the
// Python side fills on its first call (construction), so that creating the
// C++ actor cannot fail and the constructor's exception travels like any
// method's.
struct PyActor {
  PyActor() = default;
  PyActor(PyActor&& o) noexcept : cell(std::move(o.cell)) {}
  Reply invoke(std::string blob, std::vector<proc::Fd> fds) {
    nb::gil_scoped_acquire gil;
    drain_graveyard();
    if (!cell) cell = PyRef(nb::list());
    return reply_from(
        actor_handler.get()(cell.get(), nb::bytes(blob.data(), blob.size()), fd_list(fds)));
  }
  PyRef cell;  // PY2: the actor may be released by a thread without the GIL
};

[[noreturn]] void serve_worker(nb::handle on_call, nb::handle on_actor) {
  if (!std::getenv("TROUPE_WORKER"))
    throw Error(Errc::invalid_argument,
                "troupe._worker must be started by troupe (TROUPE_WORKER is not set)");
  call_handler = PyRef(on_call);
  actor_handler = PyRef(on_actor);
  std::vector<std::string> args;
  for (nb::handle a : nb::cast<nb::list>(nb::module_::import_("sys").attr("argv")))
    args.push_back(nb::cast<std::string>(a));
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  nb::gil_scoped_release nogil;  // the loop takes it per call
  proc::init(static_cast<int>(argv.size()), argv.data());  // serves, then _exit
  std::abort();                                            // unreachable: TROUPE_WORKER is set
}

// ------------------------------------------------------------------ root side
const std::string& registered_function() {
  (void)proc::detail::FunctionEntry<&py_function>::registered;  // process.hpp PS1
  static const std::string name = proc::detail::FunctionEntry<&py_function>::name();
  return name;
}
const std::string& registered_method() {
  (void)proc::detail::MethodEntry<&PyActor::invoke>::registered;
  static const std::string name = proc::detail::MethodEntry<&PyActor::invoke>::name();
  return name;
}
const std::string& registered_new() {
  (void)proc::detail::NewEntry<PyActor>::registered;
  static const std::string name = proc::detail::NewEntry<PyActor>::name();
  return name;
}

enum class CallKind { function = 0, method = 1, create = 2 };

// Sends one call; the reply reaches `future` through the completer (PY1, PY3)
// unless a waiting thread claims it first.
Call submit(int kind_int, std::uint32_t worker, std::uint64_t object, std::string display,
            nb::bytes blob, std::vector<int> fds, double timeout_s, nb::handle future,
            int placement, std::string group) {
  auto kind = static_cast<CallKind>(kind_int);
  auto st = std::make_shared<CallState>();
  st->future = PyRef(future);
  proc::detail::OutCall call;
  call.worker = worker;
  // A create's placement (process.hpp Placement; `worker` names next_to's).
  using Rule = proc::detail::PlacementRule;
  if (placement < Rule::spread || placement > Rule::in_group)
    throw Error(Errc::invalid_argument, fmt::format("{}: placement {}", display, placement));
  if (placement == Rule::in_group && group.empty())
    throw Error(Errc::invalid_argument, fmt::format("{}: a placement group needs a name", display));
  call.placement = Rule{static_cast<Rule::Kind>(placement), std::move(group)};
  call.name = kind == CallKind::function ? registered_function()
              : kind == CallKind::method ? registered_method()
                                         : registered_new();
  call.timeout = std::chrono::milliseconds(timeout_s > 0 ? static_cast<long>(timeout_s * 1000) : 0);
  {
    msgpack::sbuffer b(blob.size() + 64);
    msgpack::packer<msgpack::sbuffer> pk(b);
    pk.pack_array(4);
    pk.pack(worker);
    pk.pack(object);
    pk.pack(call.name);
    if (kind == CallKind::create) {
      pk.pack_array(0);
    } else {
      pk.pack_array(2);
      pk.pack_bin(static_cast<std::uint32_t>(blob.size()));
      pk.pack_bin_body(blob.c_str(), static_cast<std::uint32_t>(blob.size()));
      pk.pack_array(static_cast<std::uint32_t>(fds.size()));
      for (std::uint32_t i = 0; i < fds.size(); ++i) {  // fd.hpp: ext 1 = index in the list
        pk.pack_ext(sizeof i, proc::detail::kFdExt);
        pk.pack_ext_body(reinterpret_cast<const char*>(&i), sizeof i);
      }
    }
    call.body.assign(b.data(), b.size());
  }
  for (int fd : fds) {
    if (fd < 0) throw Error(Errc::invalid_argument, fmt::format("{}: descriptor {}", display, fd));
    call.fds.push_back(fd);  // borrowed until submit_call returns (node.hpp ND2)
  }
  auto p = std::make_unique<PyPending>(st, kind == CallKind::create);
  p->name = std::move(display);
  if (call.body.size() > (64u << 10)) {  // a large body may wait on a socket: not with the GIL
    nb::gil_scoped_release nogil;
    st->id = proc::detail::submit_call(std::move(call), std::move(p));
  } else {
    st->id = proc::detail::submit_call(std::move(call), std::move(p));
  }
  return Call{st};
}

// A handle on an object in a worker; the owning one (made in the root)
// releases the object when dropped (process.hpp PS2).
struct RemoteRef {
  RemoteRef(std::uint32_t w, std::uint64_t o, bool owning) : worker(w), object(o) {
    if (owning && !proc::is_worker()) owner = std::make_shared<proc::detail::RemoteOwner>(w, o);
  }
  std::uint32_t worker;
  std::uint64_t object;
  std::shared_ptr<proc::detail::RemoteOwner> owner;
};

// ------------------------------------------------------------------ local actors
// A Python object made an actor in this process: its behaviours run one at a
// time on the pool (or on an event loop's thread), each under the GIL.
struct PyCell {
  explicit PyCell(PyRef o) : obj(std::move(o)) {}
  PyRef obj;
};

// An event loop's scheduler (sched/loop.hpp): asyncio watches fd() and calls
// run_pending(); loop-bound actors run there, and post() hands it callables
// (the completer uses it to reach a loop in batches).
struct LoopBridge {
  sched::LoopScheduler sched;
  struct Posted {
    sched::Work work{&Posted::run};
    PyRef fn;
    static void run(sched::Work* w) {
      std::unique_ptr<Posted> self(reinterpret_cast<Posted*>(w));  // work is the first member
      nb::gil_scoped_acquire gil;
      drain_graveyard();
      call_reporting(self->fn.get());
    }
  };
  void post(nb::handle fn) {
    auto p = std::make_unique<Posted>();
    p->fn = PyRef(fn);
    sched.schedule(&p.release()->work);
  }
};

static_assert(std::is_standard_layout_v<LoopBridge::Posted>);  // Posted::run's cast

struct LocalActor {
  Actor<PyCell> actor;
};

LocalActor make_local(nb::handle obj, LoopBridge* bridge) {
  if (bridge) return {make_actor_on<PyCell>(&bridge->sched, PyRef(obj))};
  return {make_actor<PyCell>(PyRef(obj))};
}

// when() on a bounded actor may block this thread (backpressure.hpp): never
// with the GIL held (PY1), or the actor's behaviour, which takes the GIL,
// could not drain it. The closure's PyRefs may be dropped without the GIL
// (PY2) if when() refuses the send.
// A thread running an asyncio loop never waits there (it would stall the
// loop, or wait for itself when the actor is served on it): it sends at
// once, as a pool thread does.
template <class Send>
void send_releasing_gil(bool bounded, Send&& send) {
  if (!bounded) return send();
  static nb::object& running_loop = *new nb::object(  // leaked: PY2
      nb::module_::import_("asyncio.events").attr("_get_running_loop"));
  const bool on_loop = !running_loop().is_none();
  nb::gil_scoped_release nogil;
  const bool before = std::exchange(troupe::detail::tl_never_block,
                                    troupe::detail::tl_never_block || on_loop);
  try {
    send();
  } catch (...) {
    troupe::detail::tl_never_block = before;
    throw;
  }
  troupe::detail::tl_never_block = before;
}

// Runs job(obj) as a behaviour of `a` (the job sets its own future).
void post(LocalActor& a, nb::handle job) {
  send_releasing_gil(a.actor.mailbox_limit() != 0, [&, j = PyRef(job)]() mutable {
    when(a.actor, [j = std::move(j)](PyCell& c) {
      {
        // Its sends are not nested (cown.hpp CW11): Python code may wait on
        // anything, as below.
        troupe::detail::NoNestedRuns no_nesting;
        nb::gil_scoped_acquire gil;
        drain_graveyard();
        call_reporting(j.get(), c.obj.get());
      }
      // Python code may wait on anything (a future's result()): never
      // paused (cown.hpp BP3, BP5).
      troupe::detail::drop_mute_target();
    });
  });
}

// Runs job(obj1, obj2, ...) holding every actor at once (when.hpp: one
// global order, no deadlock; an actor named twice is held once).
void post_many(std::vector<LocalActor*> actors, nb::handle job) {
  std::vector<Actor<PyCell>> v;
  bool bounded = false;
  for (auto* a : actors) {
    v.push_back(a->actor);
    bounded |= a->actor.mailbox_limit() != 0;
  }
  send_releasing_gil(bounded, [&, j = PyRef(job)]() mutable {
    when(std::move(v), [j = std::move(j)](std::span<PyCell*> cells) {
      {
        troupe::detail::NoNestedRuns no_nesting;  // as post()
        nb::gil_scoped_acquire gil;
        drain_graveyard();
        nb::list objs;
        for (PyCell* c : cells) objs.append(c->obj.get());
        call_reporting(j.get(), *nb::tuple(objs));
      }
      troupe::detail::drop_mute_target();  // as post()
    });
  });
}

// ------------------------------------------------------------------ lifecycle
void init(std::vector<std::string> worker_command, std::size_t budget, double idle_timeout_s,
          std::string budget_file, double call_timeout_s) {
  proc::Options o;
  if (call_timeout_s > 0)  // 0: none; else at least a millisecond
    o.call_timeout = std::chrono::milliseconds(std::max(1L, static_cast<long>(call_timeout_s * 1000)));
  o.budget_file = std::move(budget_file);
  o.budget = budget;
  o.idle_timeout = std::chrono::milliseconds(static_cast<long>(idle_timeout_s * 1000));
  o.worker_command = std::move(worker_command);
  char name[] = "python";
  char* argv[] = {name, nullptr};
  proc::init(1, argv, o);
}

// Interpreter exit (PY2): pending calls fail with shutdown and are delivered,
// the pool drains, the workers leave; afterwards nothing touches Python.
void shutdown() {
  {
    nb::gil_scoped_release nogil;
    proc::shutdown();
    troupe::wait_idle();
    completer().stop();
  }
  drain_graveyard();
}

}  // namespace troupe::py

NB_MODULE(_core, m) {
  using namespace troupe::py;
  // Objects that module globals still hold at exit are not leaks worth a report.
  nb::set_leak_warnings(false);
  m.doc() = "troupe's C++ runtime, as the Python package uses it (internal: use `troupe`).";

  // troupe::Error -> the package's exception for its code (set_error_types),
  // else troupe._core.Error(code, message). shm::TxConflict -> the package's
  // conflict signal (shm.cpp H1).
  // Leaked on purpose: a static nb::object would be released after the
  // interpreter is gone (PY2).
  static nb::object& error_type = *new nb::object();
  static nb::object& error_types = *new nb::object();
  static nb::object& conflict = *new nb::object();
  error_type = nb::steal(PyErr_NewException("troupe._core.Error", PyExc_RuntimeError, nullptr));
  m.attr("Error") = error_type;
  error_types = nb::dict();
  m.def("set_error_types", [](nb::dict types, nb::handle conflict_type) {
    error_types = types;
    conflict = nb::borrow(conflict_type);
  });
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const troupe::Error& e) {
      nb::object code = nb::int_(static_cast<int>(e.code()));
      nb::dict types = nb::borrow<nb::dict>(error_types);
      if (types.contains(code)) {
        nb::object exc = types[code](nb::str(e.what()));
        PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
      } else {
        nb::object exc = error_type(static_cast<int>(e.code()), e.what());
        PyErr_SetObject(error_type.ptr(), exc.ptr());
      }
    } catch (const troupe::shm::TxConflict&) {
      if (conflict.is_valid())
        PyErr_SetNone(conflict.ptr());
      else
        PyErr_SetString(PyExc_RuntimeError, "transaction conflict outside a transaction body");
    }
  });
  bind_shm(m);

  nb::class_<Call>(m, "Call")
      .def("done", &Call::is_done)
      .def("wait", &Call::wait, nb::arg("timeout"), nb::call_guard<nb::gil_scoped_release>())
      .def("claim", &Call::claim)
      .def("cancel", &Call::cancel, nb::call_guard<nb::gil_scoped_release>())
      .def("outcome", &Call::outcome);

  nb::class_<RemoteRef>(m, "RemoteRef")
      .def(nb::init<std::uint32_t, std::uint64_t, bool>())
      .def_ro("worker", &RemoteRef::worker)
      .def_ro("object", &RemoteRef::object);

  nb::class_<LoopBridge>(m, "LoopBridge")
      .def(nb::init<>())
      .def("fileno", [](LoopBridge& b) { return b.sched.fd(); })
      .def("run_pending", [](LoopBridge& b) { return b.sched.run_pending(); })
      .def("post", &LoopBridge::post);

  nb::class_<LocalActor>(m, "LocalActor")
      .def("__init__",
           [](LocalActor* self, nb::handle obj, LoopBridge* bridge, std::uint32_t limit) {
             new (self) LocalActor(make_local(obj, bridge));
             if (limit) self->actor.set_mailbox_limit(limit);
           },
           nb::arg("obj"), nb::arg("bridge").none() = nb::none(), nb::arg("mailbox_limit") = 0)
      .def("post", &post)
      .def_prop_ro("mailbox_limit", [](LocalActor& a) { return a.actor.mailbox_limit(); })
      .def_prop_ro("backlog", [](LocalActor& a) { return a.actor.backlog(); });
  m.def("set_backpressure", [](std::uint32_t limit, bool fail, double block_for_s) {
    troupe::Backpressure b;
    b.mailbox_limit = limit;
    b.outside = fail ? troupe::Overload::fail : troupe::Overload::block;
    b.block_for = std::chrono::milliseconds(static_cast<long>(block_for_s * 1000));
    troupe::set_backpressure(b);
  });
  m.def("backpressure_stats", [] {
    troupe::BackpressureStats s = troupe::backpressure_stats();
    nb::dict d;
    d["paused"] = s.paused;
    d["resumed_early"] = s.resumed_early;
    d["skipped"] = s.skipped;
    d["blocked"] = s.blocked;
    d["refused"] = s.refused;
    return d;
  });

  m.def("post_many", &post_many);
  m.def("submit", &submit, nb::arg("kind"), nb::arg("worker"), nb::arg("object"), nb::arg("display"),
        nb::arg("blob"), nb::arg("fds"), nb::arg("timeout"), nb::arg("future"),
        nb::arg("placement") = 0, nb::arg("group") = "");
  m.attr("PLACE_SPREAD") = static_cast<int>(troupe::proc::detail::PlacementRule::spread);
  m.attr("PLACE_FRESH") = static_cast<int>(troupe::proc::detail::PlacementRule::fresh);
  m.attr("PLACE_GROUP") = static_cast<int>(troupe::proc::detail::PlacementRule::in_group);
  m.def("init", &troupe::py::init);
  m.def("shutdown", &troupe::py::shutdown);
  m.def("set_deliver", [](nb::handle fn) { completer().set_deliver(fn); });
  m.def("serve_worker", &serve_worker);
  m.def("is_worker", &troupe::proc::is_worker);
  m.def("set_worker_command", &troupe::proc::set_worker_command);
  m.def("worker_pids", &troupe::proc::worker_pids);
  m.def("retire_idle_workers", &troupe::proc::retire_idle_workers);
  m.def("stats", [] {
    auto s = troupe::proc::stats();
    nb::dict d;
    d["alive"] = s.alive;
    d["started"] = s.started;
    d["max_alive"] = s.max_alive;
    d["lost"] = s.lost;
    d["replies_to_waiters"] = s.replies_to_waiters;
    d["waiting"] = s.waiting;
    d["longest_wait_ms"] = static_cast<std::int64_t>(s.longest_wait.count());
    d["given_back"] = s.given_back;
    auto r = troupe::stats();  // the pool's counters (zero before it starts)
    d["threads"] = r.threads;
    d["behaviours_run"] = r.run;
    d["stolen"] = r.stolen;
    d["sleeps"] = r.sleeps;
    d["wakes"] = r.wakes;
    d["queued"] = r.queued;
    return d;
  });
  m.def("trace_start", [](const std::string& path) { troupe::trace::start(path); });
  m.def("trace_stop", [] { return troupe::trace::stop(); },
        nb::call_guard<nb::gil_scoped_release>());
  m.def("trace_active", &troupe::trace::active);
  m.attr("CALL_FUNCTION") = 0;
  m.attr("CALL_METHOD") = 1;
  m.attr("CALL_CREATE") = 2;
}
