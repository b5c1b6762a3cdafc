// troupe/exec/executor.hpp: one Executor, opt-in isolation (seed 004).
//
//   troupe::exec::Executor ex;
//   Promise<int> a = ex.submit(f, 1, 2);                          // the thread pool
//   Promise<int> b = ex.submit(troupe::exec::isolated<&f>, 1, 2); // a worker process
//   Promise<std::vector<int>> c = ex.map(f, inputs);              // pool, one task each
//   Promise<std::vector<int>> d = ex.map(troupe::exec::isolated<&f>, inputs);
//
// The same Promise type either way; an isolated call's failure modes are the
// worker's (troupe/proc/process.hpp): worker_lost, remote_exception, timeout.
//
// Invariants:
//   EX1. submit never blocks: the work is queued (pool) or sent (worker).
//   EX2. map keeps input order in its result.
#pragma once

#include <type_traits>
#include <utility>
#include <vector>

#include "troupe/promise.hpp"
#include "troupe/proc/process.hpp"

namespace troupe::exec {

template <auto F>
struct Isolated {};
// Marks a call to run in a worker process instead of the thread pool.
template <auto F>
inline constexpr Isolated<F> isolated{};

class Executor {
 public:
  template <class F, class... A>
  auto submit(F f, A... args) {
    using R = std::decay_t<std::invoke_result_t<F&, A&...>>;
    auto [promise, res] = make_promise<R>();
    troupe::detail::run_task([f = std::move(f), res = std::move(res), ... a = std::move(args)]() mutable {
      try {
        if constexpr (std::is_void_v<R>) {
          f(a...);
          res.set_value();
        } else {
          res.set_value(f(a...));
        }
      } catch (...) {
        res.set_exception(std::current_exception());
      }
    });
    return std::move(promise);
  }

  template <auto F, class... A>
  auto submit(Isolated<F>, A&&... args) {
    return proc::call<F>(std::forward<A>(args)...);
  }
  template <auto F, class... A>
  auto submit_with(Isolated<F>, const proc::CallOptions& opt, A&&... args) {
    return proc::call_with<F>(opt, std::forward<A>(args)...);
  }

  template <class F, class Range>
  auto map(F f, const Range& inputs) {
    using In = std::decay_t<decltype(*std::begin(inputs))>;
    using R = decltype(std::declval<Executor&>().submit(f, std::declval<In>()).get());
    std::vector<Promise<std::decay_t<R>>> ps;
    for (const auto& x : inputs) ps.push_back(submit(f, x));
    return when_all(std::move(ps));  // EX2
  }
};

}  // namespace troupe::exec
