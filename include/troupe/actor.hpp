// troupe/actor.hpp: Actor<T>, an object made active.
//
// make_actor<T>(args...) builds a T inside a cown (the queue of behaviours
// that own it, detail/cown.hpp) and returns a handle. The handle is a cheap,
// copyable reference; the T is reachable only inside a behaviour (`when`), so
// exactly one behaviour at a time touches it, or any number of readers
// (read(a)). An existing object is activated by moving it in (activate).
//
// Invariants:
//   AC1. A T lives as long as any handle refers to its cown or a behaviour
//       is queued on it (Cown::refs, cown.hpp CW8), and is destroyed exactly
//       once, by the last of them.
//   AC2. The T is only reachable through when_args, which needs a WhenKey, and
//       only the runtime makes WhenKeys, inside a running behaviour.
//   AC3. Idle cost: sizeof(Cown) (64 bytes on 64-bit) + sizeof(T), rounded
//       up to the small-object heap's size class (128 bytes for a T of up
//       to 64), one cache-line-aligned allocation per actor: the cown's
//       line and the T's never share a line.
#pragma once

#include <cstddef>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "troupe/detail/cown.hpp"
#include "troupe/detail/small_alloc.hpp"
#include "troupe/error.hpp"

namespace troupe {

namespace detail {
template <class Raw, class F, class... Ws>
Raw call_block(F& f, Ws&... ws);

// From the small-object heap (small_alloc.hpp): a cache-line-aligned block
// (SA5) of 64 bytes + sizeof(T) rounded up to the next size class, so the
// cown's one line (the queue tail senders swap, the settings they read) and
// the T the running behaviour writes never share a line (AC3).
template <class T>
struct CownBox final : Cown, SmallObject {
  template <class... A>
  explicit CownBox(sched::Scheduler* s, A&&... a)
      : Cown(s, [](Cown* c) { delete static_cast<CownBox*>(c); }), value(std::forward<A>(a)...) {}
  T value;
};

// Collects the cowns a `when` needs, in the order its arguments name them.
struct CownSink {
  Request* requests;
  std::uint32_t n = 0;
  void add(Cown* c, bool read) noexcept {
    requests[n].cown = c;
    requests[n].read = read;
    ++n;
  }
};
struct CownCounter {
  std::uint32_t n = 0;
  void add(Cown*, bool) noexcept { ++n; }
};
}  // namespace detail

// Proof that the caller runs inside a behaviour (AC2). Only the runtime can
// make one; sync objects receive it and pass it on to what they wrap.
class WhenKey {
 public:
  WhenKey(const WhenKey&) = delete;
  WhenKey& operator=(const WhenKey&) = delete;

 private:
  WhenKey() = default;
  template <class Raw, class F, class... Ws>
  friend Raw detail::call_block(F& f, Ws&... ws);
};

inline constexpr std::size_t kDynamicCowns = static_cast<std::size_t>(-1);

namespace detail {
// The `when` protocol (troupe/when.hpp) of one actor held exclusively, for
// Actor<T> and HeldActor<T>: Self::box() is the actor's CownBox<T>, or
// nullptr for an empty handle.
template <class Self, class T>
class ExclusiveWhenable {
 public:
  static constexpr std::size_t when_cown_count = 1;
  template <class Sink>
  void when_cowns(Sink& s) const {
    if (!self().box())
      throw Error(Errc::invalid_argument, "when() on an empty Actor handle (moved from?)");
    s.add(self().box(), false);
  }
  template <class K>
  void when_await(K&& k) const {
    k();
  }
  void when_enter(const WhenKey&) const noexcept {}
  std::tuple<T&> when_args(const WhenKey&) const noexcept { return {self().box()->value}; }
  void when_exit(const WhenKey&) const noexcept {}

 private:
  const Self& self() const noexcept { return static_cast<const Self&>(*this); }
};
}  // namespace detail

template <class T>
class Actor : public detail::ExclusiveWhenable<Actor<T>, T> {
 public:
  using element_type = T;

  Actor() = default;  // empty handle
  Actor(const Actor& o) noexcept : c_(o.c_) {
    if (c_) c_->add_ref();
  }
  Actor(Actor&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  Actor& operator=(Actor o) noexcept {
    std::swap(c_, o.c_);
    return *this;
  }
  ~Actor() {
    if (c_) c_->release();
  }

  explicit operator bool() const noexcept { return c_ != nullptr; }
  bool operator==(const Actor& o) const noexcept { return c_ == o.c_; }
  // An identity usable as a map key; stable for the actor's life.
  const void* id() const noexcept { return c_; }

  // The `when` protocol: one cown, exclusive (detail::ExclusiveWhenable).

  // troupe/backpressure.hpp: the number of behaviours queued on this actor
  // beyond which senders are slowed down (0: none). Starts at the process's
  // default (set_backpressure). Takes effect for later sends.
  void set_mailbox_limit(std::uint32_t n) const {
    if (!c_) throw Error(Errc::invalid_argument, "set_mailbox_limit on an empty Actor handle");
    c_->limit.store(n, std::memory_order_relaxed);  // a setting (BP1)
  }
  std::uint32_t mailbox_limit() const noexcept {
    return c_ ? c_->limit.load(std::memory_order_relaxed) : 0;
  }
  // Behaviours queued on it now, approximately (0 unless it has a limit).
  std::uint32_t backlog() const noexcept { return c_ && mailbox_limit() ? c_->backlog() : 0; }

  // For the runtime and sync objects: the cown under the handle.
  detail::Cown* cown() const noexcept { return c_; }
  T& unsafe_get(const WhenKey&) const noexcept { return c_->value; }

 private:
  template <class U, class... A>
  friend Actor<U> make_actor_on(sched::Scheduler* s, A&&... a);
  friend class detail::ExclusiveWhenable<Actor, T>;
  explicit Actor(detail::CownBox<T>* c) noexcept : c_(c) {}
  detail::CownBox<T>* box() const noexcept { return c_; }
  detail::CownBox<T>* c_ = nullptr;  // AC1
};

// Builds a T as an actor whose behaviours run on scheduler s (nullptr: the
// default scheduler, looked up when each behaviour becomes runnable).
template <class T, class... A>
Actor<T> make_actor_on(sched::Scheduler* s, A&&... a) {
  return Actor<T>(new detail::CownBox<T>(s, std::forward<A>(a)...));
}
template <class T, class... A>
Actor<T> make_actor_on(sched::Scheduler& s, A&&... a) {
  return make_actor_on<T>(&s, std::forward<A>(a)...);
}
template <class T, class... A>
Actor<T> make_actor(A&&... a) {
  return make_actor_on<T>(static_cast<sched::Scheduler*>(nullptr), std::forward<A>(a)...);
}
// Activates an existing object: moves it into a new actor.
template <class T>
Actor<std::decay_t<T>> activate(T&& obj) {
  return make_actor<std::decay_t<T>>(std::forward<T>(obj));
}

// Read-only access to an actor: readers of one actor run at the same time.
template <class T>
class ReadOnly {
 public:
  explicit ReadOnly(Actor<T> a) noexcept : a_(std::move(a)) {}
  static constexpr std::size_t when_cown_count = 1;
  template <class Sink>
  void when_cowns(Sink& s) const {
    if (!a_.cown()) throw Error(Errc::invalid_argument, "when() on read() of an empty Actor handle");
    s.add(a_.cown(), true);
  }
  template <class K>
  void when_await(K&& k) const {
    k();
  }
  void when_enter(const WhenKey&) const noexcept {}
  std::tuple<const T&> when_args(const WhenKey& k) const noexcept { return {a_.unsafe_get(k)}; }
  void when_exit(const WhenKey&) const noexcept {}

 private:
  Actor<T> a_;
};

template <class T>
ReadOnly<T> read(Actor<T> a) {
  return ReadOnly<T>(std::move(a));
}

namespace detail {
// How a behaviour that is scheduled within its when() call names an actor
// exclusively (when.hpp WN7): the cown, without a counted reference. From
// the swap of `last` until the behaviour passes the cown on, the queue
// keeps it alive (cown.hpp CW8); before that, the caller's handle does, and
// so it does for the whole of a nested run (CW11, CW12: the queue takes its
// reference late, or adopts the count if the nested block drops that handle).
template <class T>
class HeldActor : public ExclusiveWhenable<HeldActor<T>, T> {
 public:
  explicit HeldActor(const Actor<T>& a) noexcept : c_(static_cast<CownBox<T>*>(a.cown())) {}

 private:
  friend class ExclusiveWhenable<HeldActor, T>;
  CownBox<T>* box() const noexcept { return c_; }
  CownBox<T>* c_;
};
}  // namespace detail

// A set of actors chosen at run time: the block receives std::span<T*>
// (ActorSet), or std::span<const T*> for read-only access (ReadSet, from
// read(vector): readers of the same actors run at the same time), in the
// order given (an actor named twice appears twice, held once).
template <class T, bool kRead>
class BasicActorSet {
 public:
  using Ptr = std::conditional_t<kRead, const T*, T*>;
  explicit BasicActorSet(std::vector<Actor<T>> v) : actors_(std::move(v)) {}
  static constexpr std::size_t when_cown_count = kDynamicCowns;
  template <class Sink>
  void when_cowns(Sink& s) const {
    for (auto& a : actors_) {
      if constexpr (kRead) {
        if (!a.cown()) throw Error(Errc::invalid_argument, "when() on read() of an empty Actor handle");
        s.add(a.cown(), true);
      } else {
        a.when_cowns(s);
      }
    }
  }
  template <class K>
  void when_await(K&& k) const {
    k();
  }
  void when_enter(const WhenKey& k) {
    ptrs_.clear();
    ptrs_.reserve(actors_.size());
    for (auto& a : actors_) ptrs_.push_back(&a.unsafe_get(k));
  }
  std::tuple<std::span<Ptr>> when_args(const WhenKey&) noexcept { return {std::span<Ptr>(ptrs_)}; }
  void when_exit(const WhenKey&) const noexcept {}

 private:
  std::vector<Actor<T>> actors_;
  std::vector<Ptr> ptrs_;
};
template <class T>
using ActorSet = BasicActorSet<T, false>;
template <class T>
using ReadSet = BasicActorSet<T, true>;

template <class T>
ReadSet<T> read(std::vector<Actor<T>> actors) {
  return ReadSet<T>(std::move(actors));
}

}  // namespace troupe
