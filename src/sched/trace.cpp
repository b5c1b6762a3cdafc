// src/sched/trace.cpp: the trace recorder (troupe/trace.hpp): per-thread
// event buffers, start/stop, the Chrome trace JSON writer, and TROUPE_TRACE
// (a recording from static initialisation to normal exit). Keeps TR1, TR2.
#include "troupe/trace.hpp"

#include <fmt/format.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "troupe/error.hpp"

namespace troupe {

namespace detail::trace {

namespace {

struct Event {
  char ph;  // 'X' complete, 'b'/'e' async begin/end, 'i' instant
  const char* cat;
  std::string name;
  std::uint64_t ts, dur;
  const void* id;  // async slices
  std::string args;
};

// TR1: one per recording thread, owned jointly by the thread and the list.
struct Buffer {
  std::mutex mu;
  std::vector<Event> events;
  std::uint64_t dropped = 0;
  long tid = 0;
};

// Never destroyed: threads still running at exit may record.
struct Registry {
  std::mutex mu;  // guards the rest (TR2)
  std::vector<std::shared_ptr<Buffer>> buffers;
  std::string path;
  std::uint64_t epoch_ns = 0;
};
Registry& reg() {
  static Registry* r = new Registry;
  return *r;
}

Buffer& my_buffer() {
  thread_local std::shared_ptr<Buffer> b = [] {
    auto fresh = std::make_shared<Buffer>();
    fresh->tid = static_cast<long>(::syscall(SYS_gettid));
    std::lock_guard lk(reg().mu);
    reg().buffers.push_back(fresh);
    return fresh;
  }();
  return *b;
}

void record(Event&& e) noexcept {
  // A behaviour or call that began while recording may end after stop():
  // its event is not kept (it would wait for the next start()).
  if (!g_on.load(std::memory_order_relaxed)) return;
  try {
    Buffer& b = my_buffer();
    std::lock_guard lk(b.mu);
    if (b.events.size() >= troupe::trace::kMaxEvents) {
      ++b.dropped;
      return;
    }
    b.events.push_back(std::move(e));
  } catch (...) {  // out of memory while tracing: lose the event, not the program
  }
}

}  // namespace

std::uint64_t now_ns() noexcept {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(static_cast<unsigned char>(c)));
        else
          out += c;
    }
  }
  out += '"';
  return out;
}

void behaviour(const void* const* cowns, std::uint32_t n, std::uint64_t start,
               std::uint64_t end) noexcept {
  try {
    std::string args = "\"actors\":[";
    for (std::uint32_t i = 0; i < n; ++i)
      fmt::format_to(std::back_inserter(args), "{}\"{}\"", i ? "," : "", cowns[i]);
    args += ']';
    record({'X', "actor", n > 1 ? "when (several actors)" : "behaviour", start, end - start,
            nullptr, std::move(args)});
  } catch (...) {
  }
}

void async_begin(const char* cat, const char* name, const void* id, std::uint64_t at) noexcept {
  try {
    record({'b', cat, name, at, 0, id, {}});
  } catch (...) {
  }
}

void async_end(const char* cat, const char* name, const void* id, std::uint64_t at) noexcept {
  try {
    record({'e', cat, name, at, 0, id, {}});
  } catch (...) {
  }
}

void complete(const char* cat, std::string_view name, std::uint64_t start, std::uint64_t end,
              std::string args) noexcept {
  try {
    record({'X', cat, std::string(name), start, end - start, nullptr, std::move(args)});
  } catch (...) {
  }
}

void instant(const char* cat, std::string_view name, std::string args) noexcept {
  try {
    record({'i', cat, std::string(name), now_ns(), 0, nullptr, std::move(args)});
  } catch (...) {
  }
}

}  // namespace detail::trace

namespace trace {

using namespace detail::trace;

void start(const std::string& path) {
  Registry& g = reg();
  std::lock_guard lk(g.mu);
  if (g_on.load(std::memory_order_relaxed))
    throw Error(Errc::invalid_argument,
                fmt::format("trace::start('{}'): already recording into '{}'", path, g.path));
  for (auto& b : g.buffers) {  // what an earlier recording left (TR2)
    std::lock_guard bl(b->mu);
    b->events.clear();
    b->dropped = 0;
  }
  g.path = path;
  g.epoch_ns = now_ns();
  g_on.store(true, std::memory_order_relaxed);
}

bool active() noexcept { return g_on.load(std::memory_order_relaxed); }

std::size_t stop() {
  Registry& g = reg();
  std::unique_lock lk(g.mu);
  if (!g_on.load(std::memory_order_relaxed)) return 0;
  g_on.store(false, std::memory_order_relaxed);
  const long pid = static_cast<long>(::getpid());
  std::string out = "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n";
  std::size_t count = 0;
  std::uint64_t dropped = 0;
  auto us = [&](std::uint64_t ns) {
    return static_cast<double>(ns >= g.epoch_ns ? ns - g.epoch_ns : 0) / 1000.0;
  };
  fmt::format_to(std::back_inserter(out),
                 "{{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":{},\"tid\":0,"
                 "\"args\":{{\"name\":\"troupe {}\"}}}}",
                 pid, pid);
  // Async slices begun in this recording: an end whose begin came before
  // start() (not recorded) is left out, so every slice in the file is whole
  // at its start.
  std::unordered_set<const void*> begun;
  for (auto& b : g.buffers) {
    std::lock_guard bl(b->mu);  // TR1
    for (const Event& e : b->events)
      if (e.ph == 'b' && e.ts >= g.epoch_ns) begun.insert(e.id);
  }
  for (auto& b : g.buffers) {
    std::lock_guard bl(b->mu);  // TR1
    dropped += b->dropped;
    for (const Event& e : b->events) {
      if (e.ts < g.epoch_ns) continue;  // recorded by a thread that saw the flag late
      if (e.ph == 'e' && !begun.contains(e.id)) continue;
      fmt::format_to(std::back_inserter(out),
                     ",\n{{\"ph\":\"{}\",\"cat\":\"{}\",\"name\":{},\"ts\":{:.3f},\"pid\":{},"
                     "\"tid\":{}",
                     e.ph, e.cat, json_string(e.name), us(e.ts), pid, b->tid);
      if (e.ph == 'X') fmt::format_to(std::back_inserter(out), ",\"dur\":{:.3f}", e.dur / 1000.0);
      if (e.ph == 'b' || e.ph == 'e')
        fmt::format_to(std::back_inserter(out), ",\"id\":\"{}\"", e.id);
      if (e.ph == 'i') out += ",\"s\":\"t\"";
      if (!e.args.empty()) fmt::format_to(std::back_inserter(out), ",\"args\":{{{}}}", e.args);
      out += '}';
      ++count;
    }
    b->events.clear();
    b->events.shrink_to_fit();
    b->dropped = 0;
  }
  // Buffers of threads that have ended: only the list holds them now.
  std::erase_if(g.buffers, [](const std::shared_ptr<Buffer>& b) { return b.use_count() == 1; });
  fmt::format_to(std::back_inserter(out), "\n],\"dropped\":{}}}\n", dropped);
  std::string path = g.path;
  lk.unlock();
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) throw errno_error(errno, fmt::format("trace: cannot write '{}'", path));
  const bool ok = std::fwrite(out.data(), 1, out.size(), f) == out.size();
  const int err = errno;
  if (std::fclose(f) != 0 || !ok)
    throw errno_error(ok ? errno : err, fmt::format("trace: writing '{}' failed", path));
  return count;
}

}  // namespace trace

namespace {

// TROUPE_TRACE: recording from static initialisation to normal exit. A
// process that inherited the variable from its parent writes its own file:
// the first process marks itself in TROUPE_TRACE_ROOT.
struct EnvTrace {
  EnvTrace() {
    const char* p = std::getenv("TROUPE_TRACE");
    if (!p || !*p) return;
    std::string path = p;
    const std::string me = std::to_string(::getpid());
    const char* root = std::getenv("TROUPE_TRACE_ROOT");
    if (!root) {
      ::setenv("TROUPE_TRACE_ROOT", me.c_str(), 1);
    } else if (me != root) {
      auto dot = path.rfind('.');
      auto slash = path.rfind('/');
      if (dot == std::string::npos || (slash != std::string::npos && dot < slash))
        dot = path.size();
      path.insert(dot, "." + me);
    }
    try {
      troupe::trace::start(path);
    } catch (const Error&) {
    }
  }
  ~EnvTrace() {
    try {
      troupe::trace::stop();
    } catch (const Error& e) {
      std::fprintf(stderr, "troupe: %s\n", e.what());
    }
  }
} g_env_trace;

}  // namespace

}  // namespace troupe
