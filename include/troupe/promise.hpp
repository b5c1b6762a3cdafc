// troupe/promise.hpp: Promise<T>, the one future type of the runtime, and
// Resolver<T>, the right to fulfil it.
//
// A Promise is a cheap copyable handle on a shared state that is fulfilled
// once, with a value or an error. It can be waited on (get: inside a
// scheduler's thread the wait runs other work), chained (then), combined
// (when_all, when_any) and used in `when` like an actor: the block runs once
// the value is there, with the value.
//
// Invariants:
//   PR1. A state is fulfilled at most once: the value (or error) is written
//       before `word` is closed (kClosed, with kErrorBit for an error) by
//       publish's one exchange (acq_rel), and read only after an acquire
//       load sees kClosed.
//   PR2. Continuations pushed on `word`'s list before fulfilment run exactly
//       once, in the order they were added, on the fulfilling thread; pushed
//       after, they run at once on the pushing thread. The exchange that
//       closes the word takes the list, so fulfilment and the switch are
//       one locked instruction (they were two: a fetch_or of the state, an
//       exchange of the list; 2 of a joined transfer's 7 RMWs).
//   PR8. A thread of no scheduler that blocks in wait() sets kSleeperBit
//       (compare-exchange, only while open) and sleeps on `wake` while it is
//       0; publish, seeing the bit in what its exchange returned, sets
//       `wake` and wakes it. One of the two sees the other's write.
//   PR3. Refcount: each handle, resolver and pending continuation that may
//       touch the state holds one reference; the last release destroys it.
//
// Help-while-wait: get() on a pool thread runs other work until the value is
// there, so nested waits never park a worker nor add threads. The work it runs
// sits on top of the waiting frame on the same stack, so a behaviour holding
// actor A that waits must not wait (directly or through what it waits on) for
// a block that needs A: that block could be helped in above it and never get A.
// The same holds for any design without stackful coroutines (oneTBB's
// isolation exists for this); prefer `when(promise, ...)` over get() inside
// behaviours. On a thread of no scheduler, get() first lets the blocking
// poller (scheduler.hpp SC4) receive the value if one is installed (the worker
// processes' rings: the reply is taken on the waiting thread), then sleeps.
//
//   PR4. A Resolver destroyed unfulfilled breaks its promise (Errc::broken_promise):
//       a waiter never hangs on a producer that is gone.
//   PR5. A helping wait (get() on a scheduler's thread) returns only after the
//       wake-up it armed has run: ready() turns true before the publisher
//       runs the continuations, and that one names the waiter's frame and
//       its scheduler (a LoopScheduler may live on the waiter's stack).
//   PR6. when_all over a vector keeps one continuation attached, on the
//       first promise not yet fulfilled (`at`): every promise before `at`
//       is fulfilled (its value or error taken, in order, and its handle
//       dropped), so it is fulfilled once `at` reaches the end, with no
//       counter that the fulfilling threads share. A continuation node is
//       on one promise's list at a time: it is attached again only after
//       it fired (the fulfiller read its `next` first) or was refused.
//   PR7. A reference count of 1 seen by a holder (acquire) is final: no
//       other reference exists to copy, so release() then destroys without
//       the locked decrement, and a state not yet shared sets its count
//       with a store. Both save a locked RMW (~20 cycles even uncontended)
//       on every fire-and-forget behaviour and every promise handed on once.
//   PR9. A count of 0 (kImmortal) marks a state that is never counted and
//       never freed: ready_void_state(), fulfilled with no value before any
//       handle sees it. add_ref and release read the count first and leave
//       such a state alone, so handles on it from many threads share its
//       line read-only. when() hands it out for a Promise<void> whose
//       behaviour already succeeded when when() returns (when.hpp WN8).
//   PR10. A state no handle has left its thread for (tl_unseen: when()
//       sets it to its behaviour's state around starting it, so only a run
//       inside that call, on that thread, sees it) can have no
//       continuation, no sleeper and no other holder: publish_unseen
//       fulfils it with a plain store, and the runtime's reference is
//       dropped with a store (2 -> 1). A transfer run nested (CW11) then
//       takes 4 locked instructions, as a pair of mutexes does.
#pragma once

#include <atomic>
#include <climits>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "troupe/detail/platform.hpp"
#include "troupe/detail/refcount.hpp"
#include "troupe/detail/small_alloc.hpp"
#include "troupe/error.hpp"
#include "troupe/sched/scheduler.hpp"

namespace troupe {

template <class T>
class Promise;
template <class T>
class Resolver;

namespace detail {

class PromiseBase;
// The behaviour whose block runs on this thread now (null: none); set by
// Behaviour::run (when.hpp), read by PromiseBase::wait to refuse a wait that
// can never end (cown.cpp).
inline thread_local const struct BehaviourBase* tl_running_behaviour = nullptr;
// cown.hpp CW11: while this thread runs a behaviour nested in another's
// block, that other one (its caller), which holds its cowns meanwhile.
inline thread_local const struct BehaviourBase* tl_nested_caller = nullptr;
// PR10: the state of the behaviour whose when() is starting it on this
// thread (its one handle has not left the call yet).
inline thread_local const class PromiseBase* tl_unseen = nullptr;
// CW11: a block waits while nested in a caller: no more nesting for a while.
void nested_wait_seen() noexcept;
// cown.hpp BP5 (src/core/backpressure.cpp): a running behaviour is about to
// block in wait() / is done waiting.
void behaviour_wait_begins();
void behaviour_wait_ends() noexcept;
// Throws Error(invalid_argument) if `p` is the promise of a behaviour queued
// behind the running one on an actor the running one holds: it cannot run
// before the running one ends, so waiting for it would never return.
// `caller`: `running` is the caller a behaviour runs nested in (CW11).
void refuse_wait_on_held(const BehaviourBase& running, const PromiseBase* p, bool caller = false);

// A continuation waiting on a promise. fire() runs it and, if it was
// allocated for this (ContFn), frees it.
struct ContNode {
  ContNode* next = nullptr;  // owned by the promise's list until fired (PR2)
  void (*fire)(ContNode*) = nullptr;
};

// From the small-object heap: a continuation is allocated by the thread
// that chains it and freed by the one that fulfils the promise, the pattern
// glibc's arenas serve worst (when_all over 50 000 promises spent ~40 % of
// its time in malloc and free).
template <class F>
struct ContFn final : ContNode, SmallObject {
  explicit ContFn(F f) : fn(std::move(f)) {
    fire = [](ContNode* n) {
      auto* self = static_cast<ContFn*>(n);
      self->fn();
      delete self;
    };
  }
  F fn;
};

class PromiseBase {
 public:
  // How publish() fulfils: with the value, or with the error.
  static constexpr std::uint32_t kValue = 1, kError = 2;

  PromiseBase() = default;
  PromiseBase(const PromiseBase&) = delete;
  PromiseBase& operator=(const PromiseBase&) = delete;

  // acquire: pairs with publish's exchange (PR1).
  bool ready() const noexcept { return (word_.load(std::memory_order_acquire) & kClosed) != 0; }
  bool failed() const noexcept {
    return (word_.load(std::memory_order_acquire) & (kClosed | kErrorBit)) ==
           (kClosed | kErrorBit);
  }

  // True if the caller holds the only reference: no handle exists and none
  // can appear, so nobody will ever observe the result. acquire: pairs with
  // the release of the handles that were dropped.
  bool unobserved() const noexcept { return refs_.load(std::memory_order_acquire) == 1; }

  // relaxed: taking a reference needs no ordering, we already hold one (PR3);
  // an immortal state's count is never written (PR9).
  void add_ref() noexcept {
    if (refs_.load(std::memory_order_relaxed) != kImmortal)
      refs_.fetch_add(1, std::memory_order_relaxed);
  }
  // PR7: sets the count of a state no other thread can see yet, in place of
  // add_ref()s (a plain store, not a locked RMW).
  void set_refs_unshared(std::uint32_t n) noexcept { refs_.store(n, std::memory_order_relaxed); }
  // PR7 (refcount.hpp RC1): the last releaser sees every other holder's
  // writes; the sole holder (count 1) destroys without the RMW. An
  // immortal state is left alone (PR9).
  void release() noexcept {
    const std::uint32_t r = refs_.load(std::memory_order_acquire);
    if (r != kImmortal && drop_seen_ref(refs_, r)) destroy_(this);
  }
  // PR9: from now on the state is never counted nor freed. Only before any
  // other thread can see it.
  void make_immortal() noexcept { refs_.store(kImmortal, std::memory_order_relaxed); }
  // Fulfilled with a value (not an error). acquire: as ready().
  bool succeeded() const noexcept {
    return (word_.load(std::memory_order_acquire) & (kClosed | kErrorBit)) == kClosed;
  }

  void set_error(std::exception_ptr e) {
    error_ = std::move(e);
    publish(kError);
  }
  const std::exception_ptr& error() const noexcept { return error_; }
  // Records the error without publishing it; publish(kError) follows (PR1).
  void set_error_deferred(std::exception_ptr e) noexcept { error_ = std::move(e); }
  void rethrow_if_error() const {
    if (failed()) std::rethrow_exception(error_);
  }

  // Fulfils (PR1), wakes sleepers (PR8), runs continuations (PR2).
  void publish(std::uint32_t how) {
    // acq_rel: release publishes the value (PR1); acquire sees the
    // continuations' contents.
    const std::uintptr_t old = word_.exchange(closed_word(how), std::memory_order_acq_rel);
    if (old & kSleeperBit) {
      wake_.store(1, std::memory_order_release);  // PR8
      futex_wake(&wake_, INT_MAX);
    }
    ContNode* list = reinterpret_cast<ContNode*>(old & ~kFlagBits);
    ContNode* rev = nullptr;  // reverse into insertion order (PR2)
    while (list) {
      ContNode* n = list->next;
      list->next = rev;
      rev = list;
      list = n;
    }
    if (!rev) return;
    // SC5: the work the continuations schedule queues behind what our
    // release granted (restored after, also for nested publishes).
    const bool outer = std::exchange(sched::tl_in_continuations, true);
    struct Restore {
      bool v;
      ~Restore() { sched::tl_in_continuations = v; }
    } restore{outer};
    while (rev) {
      ContNode* n = rev->next;
      rev->fire(rev);
      rev = n;
    }
  }

  // PR10: publish() for a state nobody else sees (tl_unseen == this): no
  // continuation nor sleeper can be there; the handle that when() returns
  // carries it to other threads. Drops the caller's reference of two.
  void publish_unseen(std::uint32_t how) noexcept {
    word_.store(closed_word(how), std::memory_order_relaxed);
    refs_.store(1, std::memory_order_relaxed);
  }

  // Runs n once ready (PR2). fire owns n: it frees a heap-allocated one
  // (ContFn); a node embedded in its owner (when.hpp WN9) is not freed.
  void on_ready(ContNode* n) {
    if (!on_ready_if_pending(n)) n->fire(n);
  }
  // Attaches n and returns true; or, if the promise is fulfilled already,
  // returns false and leaves n to the caller (nothing fired).
  bool on_ready_if_pending(ContNode* n) {
    std::uintptr_t head = word_.load(std::memory_order_acquire);
    do {
      if (head & kClosed) return false;
      n->next = reinterpret_cast<ContNode*>(head & ~kFlagBits);
      // release: publish n's contents to the fulfiller that takes the list.
    } while (!word_.compare_exchange_weak(
        head, reinterpret_cast<std::uintptr_t>(n) | (head & kSleeperBit), std::memory_order_acq_rel,
        std::memory_order_acquire));
    return true;
  }
  template <class F>
  void then_do(F f) {
    on_ready(new ContFn<F>(std::move(f)));
  }

  // Blocks until ready. On a scheduler's thread, runs its work meanwhile.
  void wait() {
    if (ready()) return;
    if (const BehaviourBase* b = tl_running_behaviour) refuse_wait_on_held(*b, this);
    if (const BehaviourBase* c = tl_nested_caller) [[unlikely]] {  // cown.hpp CW11
      refuse_wait_on_held(*c, this, /*caller=*/true);
      nested_wait_seen();
    }
    // cown.hpp BP5: no behaviour stays paused while a behaviour waits here
    // (what it waits for may be queued behind a paused one).
    struct InBehaviour {
      bool on = tl_running_behaviour != nullptr;
      InBehaviour() {
        if (on) behaviour_wait_begins();
      }
      ~InBehaviour() {
        if (on) behaviour_wait_ends();
      }
    } in_behaviour;
    struct W final : sched::Waiter {
      explicit W(PromiseBase* p) : p(p) {}
      bool ready() const noexcept override { return p->ready(); }
      void arm(sched::Scheduler* sch) override {
        armed = true;
        p->then_do([sch, this] {
          sch->wake_helpers();
          fired.store(true, std::memory_order_release);  // the last touch of `this` and `sch`
        });
      }
      PromiseBase* p;
      bool armed = false;
      std::atomic<bool> fired{false};
    } waiter(this);
    if (sched::Scheduler* s = sched::current()) {
      s->help_until(waiter);
      // PR5: the wake-up continuation may still be running on the thread that
      // published; it names this frame and the scheduler, which may end as
      // soon as we return. It is running or about to (ready() was seen).
      if (waiter.armed)
        while (!waiter.fired.load(std::memory_order_acquire)) cpu_relax();
      return;
    }
    if (sched::BlockingPoller poll = sched::blocking_poller(); poll && poll(waiter)) return;  // scheduler.hpp SC4
    // PR8: mark a sleeper while open, then sleep until publish sets `wake`.
    std::uintptr_t w = word_.load(std::memory_order_acquire);
    while (!(w & kClosed)) {
      if (!(w & kSleeperBit)) {
        // acquire on failure too: the fresh value may be the closed one.
        if (!word_.compare_exchange_weak(w, w | kSleeperBit, std::memory_order_acquire,
                                         std::memory_order_acquire))
          continue;
      }
      futex_wait(&wake_, 0);
      w = word_.load(std::memory_order_acquire);
    }
  }

 protected:
  ~PromiseBase() = default;
  void (*destroy_)(PromiseBase*) = nullptr;  // set once by the owner at creation

 private:
  // `word_`: the continuation list (a Treiber stack of ContNodes, 8-byte
  // aligned) in the high bits while open; kClosed (with kErrorBit) once
  // fulfilled (PR1, PR2); kSleeperBit while open (PR8).
  static constexpr std::uintptr_t kClosed = 1, kErrorBit = 2, kSleeperBit = 4, kFlagBits = 7;
  static constexpr std::uint32_t kImmortal = 0;  // PR9
  // What `word_` holds once fulfilled as `how` says (PR1).
  static constexpr std::uintptr_t closed_word(std::uint32_t how) noexcept {
    return kClosed | (how == kError ? kErrorBit : 0);
  }
  static_assert(alignof(ContNode) >= 8, "a ContNode's address leaves PromiseBase's flag bits free");

  std::atomic<std::uint32_t> refs_{1};  // PR3
  std::atomic<std::uint32_t> wake_{0};  // PR8: the futex word of outside waiters
  std::atomic<std::uintptr_t> word_{0};  // PR1, PR2, PR8
  std::exception_ptr error_;                    // written once before publish(kError)
};

template <class T>
class PromiseState : public PromiseBase {
 public:
  PromiseState() {
    destroy_ = [](PromiseBase* p) { delete static_cast<PromiseState*>(p); };
  }
  ~PromiseState() {
    if (has_value_) value_.~T();
  }
  template <class... A>
  void emplace(A&&... a) {  // before publish (PR1)
    ::new (static_cast<void*>(&value_)) T(std::forward<A>(a)...);
    has_value_ = true;
  }
  template <class... A>
  void set_value(A&&... a) {
    emplace(std::forward<A>(a)...);
    publish(kValue);
  }
  T& value() noexcept { return value_; }

 protected:
  // For owners that embed the state in a larger allocation.
  struct EmbeddedTag {};
  explicit PromiseState(EmbeddedTag) {}

 private:
  union {
    T value_;
  };
  bool has_value_ = false;  // written once, before publish
};

template <>
class PromiseState<void> : public PromiseBase {
 public:
  PromiseState() {
    destroy_ = [](PromiseBase* p) { delete static_cast<PromiseState*>(p); };
  }
  void emplace() noexcept {}
  void set_value() { publish(kValue); }

 protected:
  struct EmbeddedTag {};
  explicit PromiseState(EmbeddedTag) {}
};

// Fulfils st from a callable's result (value or exception), without publishing
// the value yet: returns how to publish. Lets the caller release resources
// first and publish last.
template <class R, class F>
std::uint32_t capture_result(PromiseState<R>& st, F&& f) noexcept {
  try {
    if constexpr (std::is_void_v<R>) {
      std::forward<F>(f)();
    } else {
      st.emplace(std::forward<F>(f)());
    }
    return PromiseBase::kValue;
  } catch (...) {
    // error_ is written now; the caller publishes later (PR1).
    st.set_error_deferred(std::current_exception());
    return PromiseBase::kError;
  }
}

template <class T>
PromiseState<T>* state_of(const Promise<T>& p) noexcept;

}  // namespace detail

// The consumer side: copyable, shares one state.
template <class T>
class Promise {
 public:
  using value_type = T;

  Promise() = default;  // invalid (no state) until assigned
  Promise(const Promise& o) noexcept : st_(o.st_) {
    if (st_) st_->add_ref();
  }
  Promise(Promise&& o) noexcept : st_(std::exchange(o.st_, nullptr)) {}
  Promise& operator=(Promise o) noexcept {
    std::swap(st_, o.st_);
    return *this;
  }
  ~Promise() {
    if (st_) st_->release();
  }

  bool valid() const noexcept { return st_ != nullptr; }
  // An empty Promise (default-constructed or moved from) is never ready;
  // waiting on it, or using it in when/then, throws Errc::invalid_argument.
  bool ready() const noexcept { return st_ && st_->ready(); }
  bool failed() const noexcept { return st_ && st_->failed(); }
  void wait() const { state("wait()")->wait(); }

  // Waits, then returns the value or rethrows the error.
  decltype(auto) get() const& {
    state("get()")->wait();
    st_->rethrow_if_error();
    if constexpr (!std::is_void_v<T>) return static_cast<const T&>(st_->value());
  }
  // On a temporary: a copy; for a move-only T (an Fd, a unique_ptr) the value
  // is moved out, and other handles to the same promise see it moved-from.
  T get() && {
    state("get()")->wait();
    st_->rethrow_if_error();
    if constexpr (std::is_void_v<T>) {
      return;
    } else if constexpr (std::is_copy_constructible_v<T>) {
      return T(st_->value());
    } else {
      return T(std::move(st_->value()));
    }
  }
  std::exception_ptr error() const {
    state("error()")->wait();
    return st_->failed() ? st_->error() : nullptr;
  }

  // Runs f(value) once fulfilled; returns f's result as a promise. An error
  // skips f and passes through. If f returns Promise<U>, the result is
  // Promise<U>, fulfilled when that one is (flattened). It is when(*this, f)
  // (troupe/when.hpp, which defines it): one behaviour, one flattening.
  template <class F>
  auto then(F f) const;

  // --- the `when` protocol (see troupe/when.hpp): no cowns; the block waits
  // for the value and receives it as `const T&` (nothing for void) ---
  static constexpr std::size_t when_cown_count = 0;
  template <class Sink>
  void when_cowns(Sink&) const {
    state("when()");  // checked here, before anything is enqueued
  }
  template <class K>
  void when_await(K k) const {
    st_->then_do(std::move(k));  // the behaviour holds this promise (PR3)
  }
  // when_await with a node the caller owns (when.hpp WN9): fired once
  // fulfilled, never freed here. The behaviour holds this promise (PR3).
  void when_await_node(detail::ContNode* n) const { st_->on_ready(n); }
  template <class Key>
  void when_enter(const Key&) const {
    st_->rethrow_if_error();
  }
  template <class Key>
  auto when_args(const Key&) const {
    if constexpr (std::is_void_v<T>)
      return std::tuple<>();
    else
      return std::tuple<const T&>(st_->value());
  }
  template <class Key>
  void when_exit(const Key&) const noexcept {}

 private:
  friend detail::PromiseState<T>* detail::state_of<T>(const Promise<T>&) noexcept;
  template <class U>
  friend class Resolver;
  template <class U>
  friend Promise<U> adopt_promise(detail::PromiseState<U>* st) noexcept;
  explicit Promise(detail::PromiseState<T>* st) noexcept : st_(st) {}
  detail::PromiseState<T>* state(const char* use) const {
    if (!st_)
      throw Error(Errc::invalid_argument,
                  std::string(use) + " on an empty Promise (default-constructed or moved from)");
    return st_;
  }
  detail::PromiseState<T>* st_ = nullptr;
};

// Wraps a state the caller already holds a reference to (runtime internal).
template <class T>
Promise<T> adopt_promise(detail::PromiseState<T>* st) noexcept {
  return Promise<T>(st);
}

namespace detail {
template <class T>
PromiseState<T>* state_of(const Promise<T>& p) noexcept {
  return p.st_;
}
}  // namespace detail

// The producer side: move-only; fulfil once. Dropping it unfulfilled breaks
// the promise (PR4).
template <class T>
class Resolver {
 public:
  Resolver() = default;
  Resolver(Resolver&& o) noexcept : st_(std::exchange(o.st_, nullptr)) {}
  Resolver& operator=(Resolver&& o) noexcept {
    if (this != &o) {
      abandon();
      st_ = std::exchange(o.st_, nullptr);
    }
    return *this;
  }
  ~Resolver() { abandon(); }

  template <class... A>
  void set_value(A&&... a) {
    auto* st = take();
    st->set_value(std::forward<A>(a)...);
    st->release();
  }
  void set_exception(std::exception_ptr e) {
    auto* st = take();
    st->set_error(std::move(e));
    st->release();
  }
  bool valid() const noexcept { return st_ != nullptr; }

 private:
  template <class U>
  friend std::pair<Promise<U>, Resolver<U>> make_promise();
  explicit Resolver(detail::PromiseState<T>* st) noexcept : st_(st) {}
  detail::PromiseState<T>* take() {
    if (!st_) throw Error(Errc::invalid_argument, "Resolver used after it was fulfilled or moved");
    return std::exchange(st_, nullptr);
  }
  void abandon() noexcept {
    if (auto* st = std::exchange(st_, nullptr)) {
      st->set_error(std::make_exception_ptr(
          Error(Errc::broken_promise, "promise broken: its Resolver was destroyed unfulfilled")));
      st->release();
    }
  }
  detail::PromiseState<T>* st_ = nullptr;
};

template <class T>
std::pair<Promise<T>, Resolver<T>> make_promise() {
  auto* st = new detail::PromiseState<T>();
  st->set_refs_unshared(2);  // PR7: one for the promise, one for the resolver
  return {adopt_promise(st), Resolver<T>(st)};
}

// A promise already fulfilled with v.
template <class T>
Promise<std::decay_t<T>> ready_promise(T&& v) {
  auto [p, r] = make_promise<std::decay_t<T>>();
  r.set_value(std::forward<T>(v));
  return p;
}
inline Promise<void> ready_promise() {
  auto [p, r] = make_promise<void>();
  r.set_value();
  return p;
}

namespace detail {
// PR9: the one immortal state, fulfilled with no value (never freed, so a
// handle may outlive every static of the program).
inline PromiseState<void>* ready_void_state() noexcept {
  static PromiseState<void>* const st = [] {
    auto* s = new PromiseState<void>();
    s->set_value();
    s->make_immortal();
    return s;
  }();
  return st;
}
}  // namespace detail

namespace detail {
template <class X>
struct is_promise_t : std::false_type {
  using inner = X;
};
template <class U>
struct is_promise_t<Promise<U>> : std::true_type {
  using inner = U;
};

// Runs f on the default scheduler as one task, fulfilling res with its result.
template <class F>
void run_task(F f);
}  // namespace detail

namespace detail {
template <class F>
struct TaskWork final : sched::Work, SmallObject {
  explicit TaskWork(F f) : sched::Work(&TaskWork::run_fn), fn(std::move(f)) {}
  static void run_fn(sched::Work* w) {
    auto* self = static_cast<TaskWork*>(w);
    self->fn();
    delete self;
  }
  F fn;
};
template <class F>
void run_task(F f) {
  sched::default_scheduler().schedule(new TaskWork<F>(std::move(f)));
}
}  // namespace detail

// Fulfilled with every value, in order, once all are; or with the first error.
template <class T>
auto when_all(std::vector<Promise<T>> ps) {
  using Out = std::conditional_t<std::is_void_v<T>, void, std::vector<T>>;
  for (const Promise<T>& p : ps)
    if (!p.valid())
      throw Error(Errc::invalid_argument,
                  "when_all on an empty Promise (default-constructed or moved from)");
  auto [out, res] = make_promise<Out>();
  if (ps.empty()) {
    if constexpr (std::is_void_v<T>)
      res.set_value();
    else
      res.set_value(Out{});
    return std::move(out);
  }
  // PR6: one continuation at a time, on the first promise not yet
  // fulfilled; when it fires, the join skips every promise fulfilled
  // meanwhile and waits on the next one. No counter shared by the threads
  // that fulfil the promises (a counter decremented by each of them took a
  // cache-line transfer per promise: with the shared_ptr and the
  // continuation per promise, a quarter of the samples of bench_savina's
  // banking, 50 000 transfers joined this way), and no allocation per
  // promise.
  struct Join final : detail::ContNode {
    std::vector<Promise<T>> ps;
    Resolver<Out> res;
    std::size_t at = 0;        // every promise before it is fulfilled, taken and dropped
    std::exception_ptr error;  // the first error, in order
    [[no_unique_address]] std::conditional_t<std::is_void_v<T>, std::tuple<>, Out> values;

    static void step(ContNode* n) {
      auto* j = static_cast<Join*>(n);
      for (;;) {
        while (j->at < j->ps.size() && j->ps[j->at].ready()) j->take(j->ps[j->at++]);
        if (j->at == j->ps.size()) return j->finish();
        if (detail::state_of(j->ps[j->at])->on_ready_if_pending(j)) return;
      }
    }
    // PR6: a fulfilled promise is read once, while its line is at hand, and
    // dropped (the state of a behaviour nobody else holds is freed here, not
    // in a second walk over them all). Nothing may escape: a copy of a
    // value that throws fails the join instead.
    void take(Promise<T>& p) noexcept {
      if (!error) {
        if (p.failed()) {
          error = p.error();
        } else if constexpr (!std::is_void_v<T>) {
          try {
            values.push_back(detail::state_of(p)->value());
          } catch (...) {
            error = std::current_exception();
          }
        }
      }
      p = Promise<T>();
    }
    // Runs inside the publish of the promise that fired it (or in when_all).
    void finish() noexcept {
      std::unique_ptr<Join> self(this);
      if (error) return res.set_exception(error);
      if constexpr (std::is_void_v<T>)
        res.set_value();
      else
        res.set_value(std::move(values));
    }
  };
  auto join = std::make_unique<Join>();
  join->fire = &Join::step;
  if constexpr (!std::is_void_v<T>) join->values.reserve(ps.size());
  join->ps = std::move(ps);
  join->res = std::move(res);
  Join::step(join.release());
  return std::move(out);
}

// Variadic form: Promise<std::tuple<Ts...>> (non-void Ts).
template <class... Ts>
requires(sizeof...(Ts) > 1 &&
         (!std::is_void_v<Ts> && ...)) Promise<std::tuple<Ts...>> when_all(Promise<Ts>... ps) {
  auto [out, res] = make_promise<std::tuple<Ts...>>();
  struct Join {
    std::tuple<Promise<Ts>...> ps;
    Resolver<std::tuple<Ts...>> res;
    std::atomic<std::size_t> left{sizeof...(Ts)};
  };
  auto join = std::make_shared<Join>();
  join->ps = std::tuple<Promise<Ts>...>(ps...);
  join->res = std::move(res);
  auto arrive = [join] {
    if (join->left.fetch_sub(1, std::memory_order_acq_rel) != 1) return;  // as above
    std::exception_ptr err;
    std::apply([&](auto&... q) { ((err = err ? err : (q.failed() ? q.error() : nullptr)), ...); },
               join->ps);
    if (err) return join->res.set_exception(err);
    join->res.set_value(std::apply(
        [](auto&... q) { return std::tuple<Ts...>(detail::state_of(q)->value()...); }, join->ps));
  };
  (detail::state_of(ps)->then_do(arrive), ...);
  return std::move(out);
}

// Fulfilled by the first promise to finish: its index and value (index only
// for void), or its error.
template <class T>
auto when_any(std::vector<Promise<T>> ps) {
  using Out = std::conditional_t<std::is_void_v<T>, std::size_t, std::pair<std::size_t, T>>;
  if (ps.empty()) throw Error(Errc::invalid_argument, "when_any of no promises");
  auto [out, res] = make_promise<Out>();
  struct Race {
    Resolver<Out> res;
    std::atomic<bool> won{false};
  };
  auto race = std::make_shared<Race>();
  race->res = std::move(res);
  for (std::size_t i = 0; i < ps.size(); ++i) {
    detail::state_of(ps[i])->then_do([race, i, p = ps[i]] {
      // acq_rel: exactly one winner; it alone touches res.
      if (race->won.exchange(true, std::memory_order_acq_rel)) return;
      if (p.failed()) return race->res.set_exception(p.error());
      if constexpr (std::is_void_v<T>)
        race->res.set_value(i);
      else
        race->res.set_value(Out{i, detail::state_of(p)->value()});
    });
  }
  return std::move(out);
}

}  // namespace troupe

// Promise::then is when(*this, f): defined there, after Promise is complete.
#include "troupe/when.hpp"  // NOLINT(misc-header-include-cycle)
