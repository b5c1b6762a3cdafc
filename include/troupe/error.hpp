// troupe/error.hpp: the one error type users catch, shared by every layer.
//
// Owns: troupe::Errc (what went wrong, as a code a program can branch on) and
// troupe::Error (that code plus a message naming the cause, e.g. "worker 3
// exited with signal 9 while running Account::deposit").
// Invariants:
//   ER1. Every error a layer reports across its public API is a troupe::Error
//       (or derives from it); user exceptions thrown inside behaviours are
//       carried unchanged.
//   ER2. what() always names the cause; the code alone never has to be decoded.
#pragma once

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

namespace troupe {

enum class Errc {
  broken_promise = 1,   // the producer went away without a value
  condition_false,      // a sync object (only_if) decided not to run the block
  cancelled,            // the caller cancelled the work
  timeout,              // a wait ran past its deadline
  shutdown,             // the runtime was shutting down
  invalid_argument,     // a caller passed something unusable
  // shared memory
  bad_segment,          // wrong magic, truncated or corrupt segment
  version_mismatch,     // segment built by an incompatible layout/ABI
  out_of_memory,        // the segment (or the file system behind it) is full
  permission_denied,    // the segment belongs to someone else
  not_found,            // no such named object or segment
  system,               // an OS call failed (message carries errno text)
  // processes
  worker_lost,          // the worker running the call died
  bad_message,          // truncated, forged or mistyped message
  remote_exception,     // user code in another process threw
  // actors
  overloaded,           // an actor's queue is over its limit (troupe/backpressure.hpp)
};

inline std::string_view to_string(Errc c) noexcept {
  switch (c) {
    case Errc::broken_promise: return "broken_promise";
    case Errc::condition_false: return "condition_false";
    case Errc::cancelled: return "cancelled";
    case Errc::timeout: return "timeout";
    case Errc::shutdown: return "shutdown";
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::overloaded: return "overloaded";
    case Errc::bad_segment: return "bad_segment";
    case Errc::version_mismatch: return "version_mismatch";
    case Errc::out_of_memory: return "out_of_memory";
    case Errc::permission_denied: return "permission_denied";
    case Errc::not_found: return "not_found";
    case Errc::system: return "system";
    case Errc::worker_lost: return "worker_lost";
    case Errc::bad_message: return "bad_message";
    case Errc::remote_exception: return "remote_exception";
  }
  return "unknown";
}

class Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  Errc code() const noexcept { return code_; }

 private:
  Errc code_;
};

// The code for a failed system call's errno: EACCES/EPERM permission_denied,
// ENOENT not_found, ENOSPC/ENOMEM out_of_memory, anything else system.
inline Errc errc_of_errno(int err) noexcept {
  switch (err) {
    case EACCES:
    case EPERM:
      return Errc::permission_denied;
    case ENOENT:
      return Errc::not_found;
    case ENOSPC:
    case ENOMEM:
      return Errc::out_of_memory;
    default:
      return Errc::system;
  }
}

// The Error for a failed system call (ER2): "what: " and the system's words
// for `err` (read errno into `err` right after the call). Every errno the
// library reports goes through here.
[[nodiscard]] inline Error errno_error(Errc code, int err, std::string_view what) {
  return Error(code, std::string(what) + ": " + std::strerror(err));
}
[[nodiscard]] inline Error errno_error(int err, std::string_view what) {
  return errno_error(errc_of_errno(err), err, what);
}

}  // namespace troupe
