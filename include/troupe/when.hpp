// troupe/when.hpp: `when(w1, ..., wn, f)`, the one way to run code on actors.
//
// The `when` protocol (concept Whenable): anything that offers these members
// can stand where an actor stands. Actors, read(actor), run-time actor sets,
// promises and the sync objects of troupe/sync.hpp all implement it; a user
// type can too (derive from SyncObject to forward what it does not change).
//
//   static constexpr std::size_t when_cown_count;  // cowns it adds, or kDynamicCowns
//   void when_cowns(Sink& s);         // s.add(cown, read_only) for each cown
//   void when_await(K k);             // call k() once preconditions hold (e.g. a
//                                     // promise is fulfilled); actors call it at once
//   void when_enter(const WhenKey&);  // in the behaviour, all cowns held, before
//                                     // the block; throw to skip the block (the
//                                     // exception becomes the result's error)
//   std::tuple<...> when_args(const WhenKey&);  // what the block receives
//   void when_exit(const WhenKey&);   // after the block returned normally
//
// when(...) first awaits every argument (in order), then acquires all their
// cowns atomically (detail/cown.hpp: two-phase, global order, deadlock-free),
// then runs enter hooks, the block with the concatenated args, exit hooks,
// releases the cowns, and fulfils the returned Promise<R> with the block's
// result or exception.
// A `when` on several actors that a behaviour's block sends, and whose actors
// are all free, may run at once, inside the sending block, before `when`
// returns (detail/cown.hpp CW11): it holds what it needs, so the result is
// one of the orders it could have run in anyway. Its block should not wait
// (get()) for a behaviour on an actor the sender holds: that one runs only
// after the sender's block, so such a wait throws Error(invalid_argument)
// (as a wait on one's own successor does, CW7); chain it with
// when(promise, ...) instead.
//
// Invariants:
//   WN1. One allocation per behaviour: requests (for a fixed number of cowns), the
//       arguments, the block and the result promise share one object, taken
//       from the calling thread's small-object heap (detail/small_alloc.hpp).
//   WN2. The block's captures and the arguments are destroyed right after the
//       block ran and the cowns were released, even if the promise lives on;
//       the memory goes when the last Promise handle does.
//   WN3. The cowns are released before the promise is fulfilled, so a waiter
//       that wakes and schedules again on the same actors queues behind no-one.
//   WN4. A block that returns Promise<U> gives Promise<U>, fulfilled when that
//       promise is (flattened); its cowns are released as soon as it returns.
//   WN5. If every Promise handle to a behaviour's result was dropped before it
//       ran, nobody can observe the result and it is not published (no wake,
//       no continuation list): the common fire-and-forget message is cheaper.
//   WN6. Backpressure (detail/cown.hpp BP1-BP7, troupe/backpressure.hpp):
//       when() admits a behaviour before starting it (an outside thread may
//       block, or get Error(overloaded) with nothing enqueued), and a
//       behaviour that sent to an overloaded actor may pause between its
//       block and finish(): WN2, WN3 and WN5 then happen when it resumes.
//   WN7. A behaviour whose arguments are all actors, read(actor)s or actor
//       vectors is scheduled before when() returns, while the caller's
//       handles count; it keeps each actor handle the caller keeps (an
//       lvalue) and names exclusively as a HeldActor (actor.hpp), with no
//       reference of its own: the cown's queue keeps it alive (cown.hpp
//       CW8; in a nested run, the caller's handle, CW12). A message to a
//       busy actor then writes no reference count on either side. A handle passed with std::move is moved in (when()
//       empties it, as before), and read handles and actor
//       vectors stay counted (a reader leaves the queue before it runs);
//       so does every argument of a behaviour that awaits a promise or a
//       sync object first.
//   WN8. A `when` whose block returns nothing and that has already
//       succeeded when when() returns (it ran nested, CW11, or another
//       thread ran it that fast) returns a handle on the one immortal
//       fulfilled state (promise.hpp PR9) and frees its behaviour there, on
//       the thread that allocated it, while its lines are hot: the next
//       behaviour this thread makes reuses them (small_alloc.hpp SA12). A
//       caller that keeps such promises (a teller joining 50 000 transfers)
//       holds 8 bytes per transfer instead of a 192-byte behaviour.
//       Observable only as the promise's identity, which nothing promises.
//   WN9. A behaviour that awaits promises (when(promise, actor, f),
//       then()) awaits each through one continuation node embedded in it,
//       not one allocated per promise (ContFn): the arguments are awaited
//       one after another (start<I> attaches the node for argument I only
//       after argument I - 1 fired it), so one node is on at most one
//       promise's list at a time, and it lives as long as the behaviour,
//       which outlives every await. A request/response round (a client's
//       when on the reply) saves an allocation and a free, most often a
//       remote one (the fulfilling thread frees what the client's allocated).
//   WN10. A `when` on two or more actors named by handles the caller keeps
//       (lvalue Actors: no read(), no vector, no promise, no handle moved
//       in) whose block returns nothing is first tried inline, on the
//       stack (detail::InlineRun, cown.hpp CW13): if every actor is free
//       and the thread may nest (CW11), the block runs at once, with the
//       caller's block object (not a copy) and no behaviour, and when()
//       returns the immortal ready state (WN8), or a fresh failed promise
//       if the block threw. Otherwise nothing was taken and when() goes on
//       as below. So only the order it could have run in anyway is
//       observable, as for any nested run.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <memory>
#include <new>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "troupe/actor.hpp"
#include "troupe/backpressure.hpp"
#include "troupe/detail/small_alloc.hpp"
#include "troupe/promise.hpp"
#include "troupe/trace.hpp"

namespace troupe {

namespace detail {
// Stands for the continuation `when` passes to when_await, so the concept
// checks that member too (a type without it fails here, not deep inside).
struct AwaitProbe {
  void operator()() const noexcept {}
};
}  // namespace detail

template <class W>
concept Whenable = requires(W& w, const WhenKey& k, detail::CownSink& s) {
  { W::when_cown_count } -> std::convertible_to<std::size_t>;
  w.when_cowns(s);
  w.when_await(detail::AwaitProbe{});
  w.when_enter(k);
  w.when_args(k);
  w.when_exit(k);
};

namespace detail {

template <class V>
struct is_actor_vector : std::false_type {};
template <class T>
struct is_actor_vector<std::vector<Actor<T>>> : std::true_type {
  using element = T;
};

// WN7: arguments whose when_await runs its continuation at once.
template <class D>
struct awaits_nothing : is_actor_vector<D> {};
template <class T>
struct awaits_nothing<Actor<T>> : std::true_type {};
template <class T>
struct awaits_nothing<ReadOnly<T>> : std::true_type {};
template <class T, bool R>
struct awaits_nothing<BasicActorSet<T, R>> : std::true_type {};

template <class D>
struct is_actor : std::false_type {};
template <class T>
struct is_actor<Actor<T>> : std::true_type {};

// Lifts what the user passed into a Whenable (a vector of actors becomes an
// ActorSet; an actor handle the caller keeps, of a behaviour scheduled at
// once (kHeld), a HeldActor (WN7); everything else is taken as it is, so a
// handle passed with std::move is moved into the behaviour).
template <bool kHeld = false, class W>
auto as_whenable(W&& w) {
  using D = std::decay_t<W>;
  if constexpr (is_actor_vector<D>::value) {
    return ActorSet<typename is_actor_vector<D>::element>(std::forward<W>(w));
  } else if constexpr (kHeld && is_actor<D>::value && std::is_lvalue_reference_v<W>) {
    return HeldActor<typename D::element_type>(w);
  } else {
    return D(std::forward<W>(w));
  }
}

template <class W, bool kHeld = false>
using whenable_t = decltype(as_whenable<kHeld>(std::declval<W>()));

template <class W>
using args_of = decltype(std::declval<W&>().when_args(std::declval<const WhenKey&>()));

template <class T>
using is_promise = is_promise_t<T>;  // promise.hpp

template <class F, class... Ws>
using when_result_t = std::decay_t<decltype(std::apply(
    std::declval<F&>(), std::tuple_cat(std::declval<args_of<Ws>>()...)))>;

constexpr std::size_t static_cown_count(std::initializer_list<std::size_t> counts) {
  std::size_t n = 0;
  for (std::size_t c : counts) {
    if (c == kDynamicCowns) return kDynamicCowns;
    n += c;
  }
  return n;
}

// Names `b`'s cowns in `reqs` (the whenables' order), then sorts them; the
// behaviour runs where the first cown named lives (nullptr: default).
template <class... Ws>
[[gnu::always_inline]] inline void name_cowns(BehaviourBase& b, Request* reqs, Ws&... ws) {
  CownSink sink{reqs};
  (ws.when_cowns(sink), ...);
  b.requests = reqs;
  b.sched = sink.n > 0 ? reqs[0].cown->sched : nullptr;
  b.nrequests = sink.n > 1 ? sort_and_merge(reqs, sink.n) : sink.n;
}

// The block with the whenables' arguments, between their enter and exit
// hooks (the `when` protocol). Only the runtime calls it: it makes the
// WhenKey (AC2).
template <class Raw, class F, class... Ws>
[[gnu::always_inline]] inline Raw call_block(F& f, Ws&... ws) {
  const WhenKey key;
  (ws.when_enter(key), ...);
  auto args = std::tuple_cat(ws.when_args(key)...);
  if constexpr (std::is_void_v<Raw>) {
    std::apply(f, args);
    (ws.when_exit(key), ...);
  } else {
    Raw r = std::apply(f, args);
    (ws.when_exit(key), ...);
    return r;
  }
}

// While a behaviour's block runs on this thread: cown.hpp CW7 (a wait in
// the block checks what it holds) and, if kTraced, trace.hpp (the
// behaviour's event, and the end of its acquisition). An inline run
// (WN10) is never traced: it is not tried while tracing is on.
template <bool kTraced>
struct RunningScope {
  const BehaviourBase* self;
  const BehaviourBase* prev;
  std::uint64_t t0 = 0;
  explicit RunningScope(const BehaviourBase* b)
      : self(b), prev(std::exchange(tl_running_behaviour, b)) {
    if constexpr (kTraced)
      if (trace::on()) [[unlikely]] {
        t0 = trace::now_ns();
        if (b->nrequests > 1) trace::async_end("acquire", "acquire", b, t0);
      }
  }
  ~RunningScope() {
    tl_running_behaviour = prev;
    if constexpr (kTraced)
      if (t0 != 0) [[unlikely]] {
        const void* cowns[16];
        std::uint32_t n = std::min<std::uint32_t>(self->nrequests, 16);
        for (std::uint32_t i = 0; i < n; ++i) cowns[i] = self->requests[i].cown;
        trace::behaviour(cowns, n, t0, trace::now_ns());
      }
  }
  RunningScope(const RunningScope&) = delete;
  RunningScope& operator=(const RunningScope&) = delete;
};

template <std::size_t N, class R, class F, class... Ws>
struct Behaviour final : BehaviourBase, PromiseState<R>, SmallObject {
  using Closure = std::tuple<F, Ws...>;
  static constexpr std::size_t kInline = (N == kDynamicCowns || N == 0) ? 1 : N;

  template <class FF, class... WW>
  explicit Behaviour(FF&& f, WW&&... ws)
      : BehaviourBase(&Behaviour::run_fn),
        PromiseState<R>(typename PromiseState<R>::EmbeddedTag{}) {
    this->destroy_ = [](PromiseBase* p) { delete static_cast<Behaviour*>(p); };
    this->promise_at = static_cast<std::int32_t>(  // cown.hpp CW7
        reinterpret_cast<char*>(static_cast<PromiseBase*>(this)) -
        reinterpret_cast<char*>(static_cast<BehaviourBase*>(this)));
    ::new (static_cast<void*>(&closure_)) Closure(std::forward<FF>(f), std::forward<WW>(ws)...);
    try {
      collect_cowns();
    } catch (...) {  // e.g. an empty Actor handle: nothing was enqueued yet
      closure_.~Closure();
      throw;
    }
  }

  void collect_cowns() {
    Request* reqs = inline_requests_;
    if constexpr (N == kDynamicCowns) {
      CownCounter counter;
      std::apply([&](auto&, auto&... w) { (w.when_cowns(counter), ...); }, closure_);
      if (counter.n > kInline) {
        dynamic_requests_.reset(new Request[counter.n]);
        reqs = dynamic_requests_.get();
      }
    }
    std::apply([&](auto&, auto&... w) { name_cowns(*this, reqs, w...); }, closure_);
  }

  // Awaits every whenable in order, then enqueues on the cowns. WN9: a
  // promise is awaited through the node embedded here, not an allocated
  // continuation.
  template <std::size_t I = 0>
  void start() {
    if constexpr (I == sizeof...(Ws)) {
      BehaviourBase::schedule();
    } else if constexpr (kAwaitsByNode<std::tuple_element_t<I, std::tuple<Ws...>>>) {
      await_.owner = this;
      await_.fire = [](ContNode* n) { static_cast<AwaitNode*>(n)->owner->template start<I + 1>(); };
      std::get<I + 1>(closure_).when_await_node(&await_);
    } else {
      std::get<I + 1>(closure_).when_await([this] { this->template start<I + 1>(); });
    }
  }

  static void run_fn(sched::Work* w) {
    // Work is the first member of the standard-layout BehaviourBase.
    auto* self = static_cast<Behaviour*>(reinterpret_cast<BehaviourBase*>(w));
    self->run();
  }

  // What the block itself returns: R, or Promise<R> (then flattened, WN4).
  using Raw = when_result_t<F, Ws...>;

  Raw invoke_block() {
    RunningScope<true> running(this);
    return std::apply([](F& f, Ws&... ws) -> Raw { return call_block<Raw>(f, ws...); }, closure_);
  }

  void run() {
    BehaviourBase::prefetch_successors();
    if constexpr (is_promise<Raw>::value) {
      std::optional<Raw> inner;
      std::exception_ptr err;
      Cown* outer = std::exchange(tl_mute_target, nullptr);
      try {
        inner.emplace(invoke_block());
      } catch (...) {
        err = std::current_exception();
      }
      if (Cown* target = std::exchange(tl_mute_target, outer)) target->release();  // BP3: not paused
      BehaviourBase::release_cowns();                               // WN3
      closure_.~Closure();                                          // WN2
      if (err || !inner->valid()) {
        this->set_error_deferred(
            err ? err
                : std::make_exception_ptr(
                      Error(Errc::broken_promise, "when: the block returned an empty Promise")));
        this->publish(PromiseBase::kError);
        this->PromiseBase::release();
        return;
      }
      // WN4: fulfilled when the returned promise is; the runtime's reference
      // moves to the continuation.
      state_of(*inner)->then_do([this, p = *inner] {
        if (p.failed()) {
          this->set_error_deferred(p.error());
          this->publish(PromiseBase::kError);
        } else {
          if constexpr (!std::is_void_v<R>) this->emplace(state_of(p)->value());
          this->publish(PromiseBase::kValue);
        }
        this->PromiseBase::release();
      });
    } else {
      // cown.hpp BP3: the mute target is this run's own (a behaviour run
      // nested in a wait of an outer one on this thread keeps the outer's).
      Cown* outer = std::exchange(tl_mute_target, nullptr);
      std::uint32_t how = capture_result<R>(*this, [&]() -> R { return invoke_block(); });
      Cown* target = std::exchange(tl_mute_target, outer);
      // It sent to an overloaded actor: paused, the rest of this run is
      // finish_fn, called by whoever resumes it.
      if (target) [[unlikely]]
        if (try_pause(this, target, how, &Behaviour::finish_fn)) return;
      finish(how);
    }
  }

  void finish(std::uint32_t how) {
    BehaviourBase::release_cowns();  // WN3
    closure_.~Closure();             // WN2
    // PR10: run inside its own when() (nested, CW11): the one handle has
    // not left it, so nothing to wake and no count to share.
    if (tl_unseen == static_cast<PromiseBase*>(this)) return this->publish_unseen(how);
    // WN5: a fire-and-forget behaviour (its Promise dropped) skips publishing.
    if (!this->unobserved()) this->publish(how);
    this->PromiseBase::release();  // the runtime's reference
  }
  static void finish_fn(BehaviourBase* b, std::uint32_t how) {
    static_cast<Behaviour*>(b)->finish(how);
  }

  // when() could not send it (cown.hpp BP2): nothing was enqueued.
  void discard() {
    closure_.~Closure();
    this->PromiseBase::release();  // the only reference
  }

  ~Behaviour() {}  // closure_ was destroyed by run() (WN2)

  // WN9: one node serves every such argument: they are awaited one after
  // another, and each fires once.
  template <class W>
  static constexpr bool kAwaitsByNode = requires(W& w, ContNode* n) { w.when_await_node(n); };
  struct AwaitNode : ContNode {
    Behaviour* owner = nullptr;
  };
  struct NoAwaitNode {};

  struct NoRequests {};
  [[no_unique_address]] std::conditional_t<(kAwaitsByNode<Ws> || ...), AwaitNode, NoAwaitNode>
      await_;
  Request inline_requests_[kInline];
  // Only a run-time set of actors may need more requests than kInline.
  [[no_unique_address]] std::conditional_t<N == kDynamicCowns, std::unique_ptr<Request[]>,
                                           NoRequests>
      dynamic_requests_;
  union {
    Closure closure_;  // alive from construction until run() ends (WN2)
  };
};

// WN10: a `when` on N actors the caller holds handles to (no promise, no
// read), whose block returns nothing, tried at once on the stack: if every
// actor is free and the thread may nest (cown.hpp CW13), the block runs
// here, with no behaviour allocated; else when() goes on as usual.
template <std::size_t N, class F, class... Ws>
struct InlineRun final : BehaviourBase {
  template <class... WW>
  explicit InlineRun(F& f, WW&&... ws)
      : BehaviourBase(&InlineRun::run_fn), f_(f), ws_(std::forward<WW>(ws)...) {
    // May throw (an empty handle): nothing was taken yet.
    std::apply([&](auto&... w) { name_cowns(*this, reqs_, w...); }, ws_);
  }
  // The block's error, if it threw (valid after run_inline() returned true).
  std::exception_ptr error;

 private:
  static void run_fn(sched::Work* w) {
    // Work is the first member of the standard-layout BehaviourBase.
    static_cast<InlineRun*>(reinterpret_cast<BehaviourBase*>(w))->run();
  }
  void run() {
    {
      RunningScope<false> running(this);
      try {
        std::apply([&](Ws&... ws) { call_block<void>(f_, ws...); }, ws_);
      } catch (...) {
        error = std::current_exception();
      }
    }
    release_cowns();  // WN3
  }

  F& f_;
  std::tuple<Ws...> ws_;
  Request reqs_[N];
};

}  // namespace detail

// when(w1, ..., wn, f): see the file comment. Returns Promise<R>, R being
// what f returns.
// (clang-format 14 mangles a requires-clause and an immediately invoked lambda)
// clang-format off
template <class... Args>
  requires(sizeof...(Args) >= 2)
auto when(Args&&... args) {
  auto all = std::forward_as_tuple(std::forward<Args>(args)...);
  constexpr std::size_t n = sizeof...(Args) - 1;
  return [&]<std::size_t... I>(std::index_sequence<I...>) {
    using F = std::decay_t<std::tuple_element_t<n, std::tuple<Args...>>>;
    using Tup = std::tuple<Args...>;
    // WN7: scheduled before when() returns, so actors need not be counted.
    constexpr bool kHeld =
        (detail::awaits_nothing<std::decay_t<std::tuple_element_t<I, Tup>>>::value && ...);
    static_assert((Whenable<detail::whenable_t<std::tuple_element_t<I, Tup>, kHeld>> && ...),
                  "every argument of when() but the last must be Whenable (actor, read(actor), "
                  "vector of actors, promise or sync object)");
    using R = typename detail::is_promise<
        detail::when_result_t<F, detail::whenable_t<std::tuple_element_t<I, Tup>, kHeld>...>>::inner;
    constexpr std::size_t N = detail::static_cown_count(
        {detail::whenable_t<std::tuple_element_t<I, Tup>, kHeld>::when_cown_count...});
    // WN10: actors the caller holds (lvalue handles), a block that returns nothing.
    // (The block's own result, not R: a block returning Promise<void> flattens, WN4.)
    constexpr bool kInline =
        n >= 2 &&
        std::is_void_v<detail::when_result_t<
            F, detail::whenable_t<std::tuple_element_t<I, Tup>, kHeld>...>> &&
        ((detail::is_actor<std::decay_t<std::tuple_element_t<I, Tup>>>::value &&
          std::is_lvalue_reference_v<std::tuple_element_t<I, Tup>>) &&
         ...);
    if constexpr (kInline) {
      detail::InlineRun<N, std::remove_reference_t<std::tuple_element_t<n, Tup>>,
                        detail::whenable_t<std::tuple_element_t<I, Tup>, kHeld>...>
          run(std::get<n>(all), detail::as_whenable<kHeld>(std::get<I>(all))...);
      if (run.run_inline()) {
        if (!run.error) return adopt_promise<void>(detail::ready_void_state());  // WN8
        auto [p, r] = make_promise<void>();
        r.set_exception(run.error);
        return p;
      }
    }
    using B = detail::Behaviour<N, R, F, detail::whenable_t<std::tuple_element_t<I, Tup>, kHeld>...>;
    auto* b = new B(std::forward<std::tuple_element_t<n, Tup>>(std::get<n>(all)),
                    detail::as_whenable<kHeld>(std::forward<std::tuple_element_t<I, Tup>>(
                        std::get<I>(all)))...);
    try {
      detail::admit_if_bounded(*b);  // cown.hpp BP2: may block or throw
    } catch (...) {
      b->discard();
      throw;
    }
    b->set_refs_unshared(2);  // PR7: one for the returned handle, one for the runtime
    Promise<R> result = adopt_promise<R>(b);
    {
      struct Unseen {  // PR10: until `result` leaves this call
        const detail::PromiseBase* outer;
        ~Unseen() { detail::tl_unseen = outer; }
      } unseen{std::exchange(detail::tl_unseen, b)};
      b->start();
    }
    if constexpr (std::is_void_v<R>) {
      // WN8: only `result` still counts (the runtime dropped its reference
      // after publishing; acquire, PR7), and the block succeeded.
      if (b->unobserved() && b->succeeded()) return adopt_promise<void>(detail::ready_void_state());
    }
    return result;
  }(std::make_index_sequence<n>{});
}
// clang-format on

template <class T>
template <class F>
auto Promise<T>::then(F f) const {
  return when(*this, std::move(f));
}

}  // namespace troupe
