#!/usr/bin/env python3
# fuzz/make_seeds.py: writes the seed corpus of fuzz/wire_fuzz.cpp into
# fuzz/corpus/: real datagrams as troupe sends them (wire.hpp: a 24-byte
# Header, then a msgpack body), valid and truncated. Hand-encoded msgpack so
# that no Python package is needed. Run from the repository root.
# The Header is 24 bytes: 4 bytes of padding sit before the 64-bit id.
import os
import struct

MAGIC = 0x31505254  # "TRP1"
CALL, REPLY, CANCEL, RELEASE, SHUTDOWN = 1, 2, 3, 4, 5
BODY_IN_FD = 1


def header(kind, body_len, call_id, nfds=0, flags=0):
    return struct.pack("<IBBHI4xQ", MAGIC, kind, flags, nfds, body_len, call_id)


def mp_str(s):
    b = s.encode()
    assert len(b) < 32
    return bytes([0xA0 | len(b)]) + b


def mp_int(i):
    assert 0 <= i < 128
    return bytes([i])


def mp_array(*items):
    assert len(items) < 16
    return bytes([0x90 | len(items)]) + b"".join(items)


def mp_fd(index):  # fixext 4, type 1: a descriptor by index (fd.hpp)
    return bytes([0xD6, 0x01]) + struct.pack("<I", index)


def msg(kind, body, call_id=7, nfds=0):
    return header(kind, len(body), call_id, nfds) + body


call_add = mp_array(mp_int(0), mp_int(0), mp_str("fn add"), mp_array(mp_int(1), mp_int(2)))
call_method = mp_array(mp_int(1), mp_int(3), mp_str("method &Noop::noop"), mp_array())
call_fd = mp_array(mp_int(0), mp_int(0), mp_str("fn read_all"), mp_array(mp_fd(0)))
reply_ok = mp_array(mp_int(0), mp_int(42))
reply_error = mp_array(mp_int(2), mp_array(mp_int(14), mp_str("bad message: x")))
reply_exc = mp_array(mp_int(1), mp_array(mp_str("std::invalid_argument"), mp_str("no")))
reply_vec = mp_array(mp_int(0), bytes([0x93, 0xCB]) + struct.pack(">d", 1.5) + b"\x02\x03")

seeds = {
    "call_add": msg(CALL, call_add),
    "call_method": msg(CALL, call_method),
    "reply_ok": msg(REPLY, reply_ok),
    "reply_error": msg(REPLY, reply_error),
    "reply_exception": msg(REPLY, reply_exc),
    "reply_vector": msg(REPLY, reply_vec),
    "release": msg(RELEASE, mp_array(mp_int(1), mp_int(3)), 0),
    "cancel": msg(CANCEL, b""),
    "shutdown": msg(SHUTDOWN, b"", 0),
    # the datagram cut short: the header's length no longer matches
    "call_truncated_datagram": msg(CALL, call_add)[:-3],
    # lengths agree but the msgpack body itself is cut short
    "call_truncated_body": header(CALL, len(call_add) - 3, 7) + call_add[:-3],
    "header_only_truncated": msg(CALL, call_add)[:20],
    # body in a memfd (the target attaches the bytes after the header as one),
    # with one more descriptor that the argument refers to by index
    "call_fd_body_in_memfd": header(CALL, len(call_fd), 9, nfds=2, flags=BODY_IN_FD) + call_fd,
    # K1 (wire_fuzz.cpp): a 5-byte body announcing an array of 2^32 - 1
    # elements; unlimited msgpack::unpack asked for 128 GiB (regression seed)
    "k1_array32_huge": msg(CALL, bytes([0xDD, 0xFF, 0xFF, 0xFF, 0xFF])),
}
os.makedirs("fuzz/corpus", exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join("fuzz/corpus", name), "wb") as f:
        f.write(data)
print(f"make_seeds: {len(seeds)} seeds in fuzz/corpus/")
