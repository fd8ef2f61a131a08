"""The SQLite store's options (URL query or keyword arguments) and its checks of text."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from eventvault.errors import InvalidInput, InvalidStoreURL, InvalidStreamId

if TYPE_CHECKING:
    from eventvault.store.records import Query

SYNCHRONOUS: Final = ("FULL", "EXTRA", "NORMAL")
WRITERS: Final = ("auto", "thread")
MAX_READERS: Final = 64
MAX_BUSY_TIMEOUT: Final = 3600.0
OPTIONS: Final = ("busy_timeout", "read_models", "readers", "synchronous", "writer")


class Options(NamedTuple):
    """The options of one store, checked."""

    synchronous: str
    busy_timeout: float
    readers: int
    writer: str
    read_models: str | None
    """The read models' own file, as given (None: the store's file)."""


def parse_options(options: dict[str, Any]) -> Options:
    """Check ``options`` (values may be their text from a URL); InvalidStoreURL names a bad one."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InvalidStoreURL(
            f"unknown SQLite store option(s) {', '.join(map(repr, unknown))}; "
            f"the options are {', '.join(OPTIONS)}"
        )
    sync = options.get("synchronous", "FULL")
    if not isinstance(sync, str) or sync.upper() not in SYNCHRONOUS:
        raise InvalidStoreURL(
            f"synchronous must be one of {', '.join(SYNCHRONOUS)} (OFF is refused: it can lose "
            f"acknowledged events), got {sync!r}"
        )
    timeout = options.get("busy_timeout", 5.0)
    seconds = _as_number(timeout, float)
    if not 0 <= seconds <= MAX_BUSY_TIMEOUT:  # also refuses NaN
        raise InvalidStoreURL(
            f"busy_timeout is a number of seconds from 0 to {MAX_BUSY_TIMEOUT:g}, got {timeout!r}"
        )
    readers = options.get("readers", 4)
    count = -1 if isinstance(readers, float) else _as_number(readers, int)
    if not 0 <= count <= MAX_READERS:
        raise InvalidStoreURL(f"readers is an int from 0 to {MAX_READERS}, got {readers!r}")
    writer = options.get("writer", "auto")
    if writer not in WRITERS:
        raise InvalidStoreURL(f"writer must be one of {', '.join(WRITERS)}, got {writer!r}")
    read_models = options.get("read_models")
    if isinstance(read_models, os.PathLike):
        read_models = os.fspath(read_models)
    if read_models is not None and (
        not isinstance(read_models, str) or not read_models.strip() or read_models == ":memory:"
    ):
        raise InvalidStoreURL(
            "read_models is the path of a SQLite file for the read models (relative to the "
            f"store's folder), got {read_models!r}"
        )
    return Options(sync.upper(), seconds, int(count), writer, read_models)


def _as_number(value: object, kind: type[float | int]) -> float:
    """``value`` (a number, or its text from a URL) as ``kind``; NaN when it is neither."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return math.nan
    try:
        return kind(value)
    except ValueError:
        return math.nan


def check_text(what: str, text: str, error: type[InvalidInput] = InvalidStreamId) -> None:
    """SQLite stores text as UTF-8: a lone surrogate can be neither stored nor looked up."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise error(f"{what} must be valid Unicode (no lone surrogates): {text!r}") from None


def check_query_text(query: Query) -> None:
    """The event types of ``query`` as check_text wants them (InvalidInput; tags are checked when made)."""
    for item in query.items:
        for t in item.types:
            check_text("an event type", t, InvalidInput)
