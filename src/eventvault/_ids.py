"""Time-ordered UUIDs (version 7, RFC 9562), made with the standard library only."""

from __future__ import annotations

import os
import struct
import threading
import time
import uuid
from typing import Final

_lock = threading.Lock()
_last_ms = 0
_counter = 0
# Random bits are read from the OS a few kilobytes at a time: one syscall per
# 512 ids instead of one per id (about half the cost of an id otherwise), and
# turned into 64-bit ints all at once.
_POOL_SIZE: Final = 512
_UNPACK: Final = struct.Struct(f">{_POOL_SIZE}Q").unpack
_pool: tuple[int, ...] = ()
_pool_at = _POOL_SIZE

_SAFE_UNKNOWN: Final = uuid.SafeUUID.unknown
_new = object.__new__
_set = object.__setattr__


def uuid7() -> uuid.UUID:
    """A new UUIDv7: 48 bits of Unix milliseconds, then a 12-bit counter and random bits.

    Ids made in one process are strictly increasing, even within one millisecond
    (the counter of RFC 9562 §6.2, method 1), so B-tree inserts stay at the right edge.
    """
    global _last_ms, _counter, _pool, _pool_at  # noqa: PLW0603 - process-wide monotonic clock state
    with _lock:
        if _pool_at == _POOL_SIZE:
            _pool, _pool_at = _UNPACK(os.urandom(8 * _POOL_SIZE)), 0
        rand_bits = _pool[_pool_at]
        _pool_at += 1
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
    return uuid_from_int((ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand)


def _after_fork_in_child() -> None:
    # A forked child must not reuse the parent's random bits (its ids would repeat
    # the parent's), nor a lock another thread of the parent held at the fork.
    global _lock, _pool_at  # noqa: PLW0603
    _lock = threading.Lock()
    _pool_at = _POOL_SIZE


os.register_at_fork(after_in_child=_after_fork_in_child)


def uuid_from_int(value: int) -> uuid.UUID:
    """The UUID of a 128-bit int known to be valid, without UUID.__init__'s argument parsing."""
    u = _new(uuid.UUID)
    _set(u, "int", value)
    _set(u, "is_safe", _SAFE_UNKNOWN)
    return u


def uuid_from_bytes(raw: bytes) -> uuid.UUID:
    """The UUID of 16 stored bytes (as ``UUID(bytes=raw)``, at a third of the cost)."""
    if len(raw) != 16:
        raise ValueError(f"a UUID is 16 bytes, got {len(raw)}")
    return uuid_from_int(int.from_bytes(raw, "big"))
