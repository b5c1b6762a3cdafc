// tests/sanitizers.hpp: whether this test binary runs under a sanitizer
// (ThreadSanitizer or AddressSanitizer), for tests that scale their work
// down there (everything runs 5-20x slower) but assert the same things.
#pragma once

namespace troupe_tests {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
}  // namespace troupe_tests
