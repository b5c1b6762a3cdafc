// troupe/proc/detail/msgpack.hpp: the one place msgpack-cxx is included, with
// the configuration troupe uses (no Boost dependency).
//
// Why msgpack-cxx: it is language-neutral (the Python package and other
// languages read the same bytes), its decoder checks types and bounds and
// reports bad input as exceptions we turn into Errc::bad_message, and it can
// refer into the receive buffer instead of copying.
#pragma once

#ifndef MSGPACK_NO_BOOST
#define MSGPACK_NO_BOOST
#endif
#include <cstring>
#include <msgpack.hpp>
