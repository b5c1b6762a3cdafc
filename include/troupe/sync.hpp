// troupe/sync.hpp: sync objects, things that wrap a whenable (usually an
// actor) to change how a block runs on it, through the `when` protocol of
// troupe/when.hpp. They compose: only_if(notify(a, cb), pred).
//
//   only_if(w, pred)     run the block only if pred(args...) holds when it
//                        would run (decided then, with the actor held);
//                        otherwise the result fails with Errc::condition_false
//   notify(w, cb)        after the block returned, call cb() (still inside the
//                        behaviour); or fulfil a Resolver<void>
//   after(promise, w)    enqueue on w only once promise is fulfilled; the
//                        block receives w's arguments; the promise's error
//                        becomes the result's error
//
// Invariants:
//   SY1. A sync object changes only the hooks it names; every other hook is
//       forwarded unchanged to the wrapped whenable (SyncObject).
#pragma once

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "troupe/when.hpp"

namespace troupe {

// Base for sync objects: forwards the whole protocol to `inner` (SY1).
template <class Inner>
class SyncObject {
 public:
  explicit SyncObject(Inner inner) : inner(std::move(inner)) {}
  static constexpr std::size_t when_cown_count = Inner::when_cown_count;
  template <class Sink>
  void when_cowns(Sink& s) {
    inner.when_cowns(s);
  }
  template <class K>
  void when_await(K&& k) {
    inner.when_await(std::forward<K>(k));
  }
  void when_enter(const WhenKey& k) { inner.when_enter(k); }
  auto when_args(const WhenKey& k) { return inner.when_args(k); }
  void when_exit(const WhenKey& k) { inner.when_exit(k); }

 protected:
  Inner inner;
};

template <class Inner, class Pred>
class OnlyIf : public SyncObject<Inner> {
 public:
  OnlyIf(Inner in, Pred p) : SyncObject<Inner>(std::move(in)), pred_(std::move(p)) {}
  void when_enter(const WhenKey& k) {
    this->inner.when_enter(k);
    if (!std::apply(pred_, this->inner.when_args(k)))
      throw Error(Errc::condition_false, "only_if: the condition was false; the block was skipped");
  }

 private:
  Pred pred_;
};

template <class W, class Pred>
auto only_if(W&& w, Pred pred) {
  using In = detail::whenable_t<W>;
  return OnlyIf<In, Pred>(detail::as_whenable(std::forward<W>(w)), std::move(pred));
}

template <class Inner, class Callback>
class Notify : public SyncObject<Inner> {
 public:
  Notify(Inner in, Callback cb) : SyncObject<Inner>(std::move(in)), cb_(std::move(cb)) {}
  void when_exit(const WhenKey& k) {
    this->inner.when_exit(k);
    if constexpr (std::is_same_v<Callback, Resolver<void>>)
      cb_.set_value();
    else
      cb_();
  }

 private:
  Callback cb_;
};

template <class W, class Callback>
auto notify(W&& w, Callback cb) {
  using In = detail::whenable_t<W>;
  return Notify<In, Callback>(detail::as_whenable(std::forward<W>(w)), std::move(cb));
}

template <class Inner, class T>
class After : public SyncObject<Inner> {
 public:
  After(Promise<T> p, Inner in) : SyncObject<Inner>(std::move(in)), p_(std::move(p)) {}
  template <class K>
  void when_await(K k) {
    p_.when_await([this, k = std::move(k)]() mutable { this->inner.when_await(std::move(k)); });
  }
  void when_enter(const WhenKey& k) {
    p_.when_enter(k);
    this->inner.when_enter(k);
  }

 private:
  Promise<T> p_;
};

template <class T, class W>
auto after(Promise<T> p, W&& w) {
  using In = detail::whenable_t<W>;
  return After<In, T>(std::move(p), detail::as_whenable(std::forward<W>(w)));
}

}  // namespace troupe
