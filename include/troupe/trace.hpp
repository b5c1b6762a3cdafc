// troupe/trace.hpp: a timeline of what the runtime ran, as a Chrome trace /
// Perfetto JSON file (load it in ui.perfetto.dev or chrome://tracing).
//
// Recorded while tracing is on, in every layer of this process:
//   behaviours     one complete event per behaviour: the actors (cowns) it
//                  held, the thread, its start and duration (cat "actor");
//   acquisitions   for a behaviour that names several actors, an async slice
//                  from its `when` to the moment it holds all of them
//                  (cat "acquire", one id per behaviour);
//   remote calls   from the call to its reply: the function or method, the
//                  worker's pid (cat "proc");
//   transactions   each commit with its duration from begin, reads and
//                  writes (cat "tx", name "commit"), each abort (name "abort").
//
// Turning it on: TROUPE_TRACE=path.json in the environment (read when the
// program starts; the file is written when it exits normally), or
// trace::start(path) / trace::stop() around the part of interest. A worker
// process that inherits TROUPE_TRACE writes path with ".<pid>" before the
// extension, so every process leaves its own file.
//
// Cost: off, one relaxed load and a branch per behaviour, transaction and
// remote call. On, an event is appended to a buffer of the recording thread
// (its own lock, never contended except by stop()); at most kMaxEvents per
// thread are kept, later ones are counted in the file's "dropped" field.
//
// Invariants:
//   TR1. Events are kept per thread; only stop() reads another thread's
//        buffer, under that buffer's lock, so recording never waits for
//        another recording thread.
//   TR2. One recording at a time per process: start() while on throws
//        Error(invalid_argument); stop() writes every event recorded since
//        the matching start() and clears the buffers.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace troupe::trace {

inline constexpr std::size_t kMaxEvents = std::size_t{1} << 20;  // per thread

// Starts recording; the file is written by stop() (or at normal exit).
void start(const std::string& path);
// Stops recording and writes the file. Returns the number of events written
// (0, writing nothing, if not recording). Throws Error(system) if the file
// cannot be written.
std::size_t stop();
bool active() noexcept;

}  // namespace troupe::trace

namespace troupe::detail::trace {

inline std::atomic<bool> g_on{false};
inline bool on() noexcept { return g_on.load(std::memory_order_relaxed); }

std::uint64_t now_ns() noexcept;  // steady clock, nanoseconds
// A behaviour that ran from start to end holding `n` cowns (their addresses).
void behaviour(const void* const* cowns, std::uint32_t n, std::uint64_t start,
               std::uint64_t end) noexcept;
// An async slice: begin and end may be recorded by different threads.
void async_begin(const char* cat, const char* name, const void* id, std::uint64_t at) noexcept;
void async_end(const char* cat, const char* name, const void* id, std::uint64_t at) noexcept;
// A complete event on this thread. `args` is a JSON object's body (the
// caller escapes strings with json_string), may be empty.
void complete(const char* cat, std::string_view name, std::uint64_t start, std::uint64_t end,
              std::string args = {}) noexcept;
void instant(const char* cat, std::string_view name, std::string args = {}) noexcept;
std::string json_string(std::string_view s);  // a quoted, escaped JSON string

}  // namespace troupe::detail::trace
