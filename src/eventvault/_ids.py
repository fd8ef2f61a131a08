"""Time-ordered UUIDs (version 7, RFC 9562), made with the standard library only."""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> uuid.UUID:
    """A new UUIDv7: 48 bits of Unix milliseconds, then a 12-bit counter and random bits.

    Ids made in one process are strictly increasing, even within one millisecond
    (the counter of RFC 9562 §6.2, method 1), so B-tree inserts stay at the right edge.
    """
    global _last_ms, _counter  # noqa: PLW0603 - process-wide monotonic clock state
    rand_bits = int.from_bytes(os.urandom(8), "big")
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = rand_bits >> 54  # 10 random bits: leaves room to count up
        else:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        counter = _counter
    rand = rand_bits & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    # Skip UUID.__init__'s argument parsing: the int is already a valid v7 UUID.
    u = object.__new__(uuid.UUID)
    object.__setattr__(u, "int", value)
    object.__setattr__(u, "is_safe", uuid.SafeUUID.unknown)
    return u
