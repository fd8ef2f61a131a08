"""The store's options: its own (``schema``, the pool's sizes, ...) and libpq's, from a URL or keywords."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg.conninfo import make_conninfo

from eventvault.errors import InvalidStoreURL

_SCHEMA_NAME = re.compile(r"(?!pg_)[a-z_][a-z0-9_]{0,62}")

# "replication" would turn the session into a walsender that cannot run SQL.
_REFUSED_LIBPQ_KEYS: Final = frozenset({"replication"})


@dataclass(frozen=True, slots=True)
class Options:
    """The store's own options, validated."""

    schema: str = "eventvault"
    pool_min: int = 1
    pool_max: int = 10
    pool_timeout: float = 5.0
    poll_interval: float = 1.0
    notify: bool = True
    notify_debounce: float = 0.005
    append_concurrency: int = 2


OWN_KEYS: Final = frozenset(Options.__dataclass_fields__)


def _is_libpq_key(key: str) -> bool:
    """Whether libpq knows ``key`` as a connection parameter (asked through psycopg's conninfo parser)."""
    if key in _REFUSED_LIBPQ_KEYS or not key.isidentifier():
        return False
    try:
        make_conninfo("", **{key: "0"})
    except psycopg.ProgrammingError:
        return False
    return True


def _as_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise InvalidStoreURL(f"option {name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidStoreURL(f"option {name} must be an integer, got {value!r}")
    if value < minimum:
        raise InvalidStoreURL(f"option {name} must be >= {minimum}, got {value}")
    return value


def _as_float(name: str, value: object, *, positive: bool) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InvalidStoreURL(f"option {name} must be a number of seconds, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidStoreURL(f"option {name} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not (seconds > 0 if positive else seconds >= 0) or seconds == float("inf"):
        bound = "> 0" if positive else ">= 0"
        raise InvalidStoreURL(f"option {name} must be a finite number of seconds {bound}, got {value!r}")
    return seconds


def _as_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise InvalidStoreURL(f"option {name} must be true or false, got {value!r}")


def parse_options(options: Mapping[str, Any]) -> tuple[Options, dict[str, Any]]:
    """The store's options, and the libpq parameters passed through (as strings)."""
    libpq_keys = {k for k in options if k not in OWN_KEYS and _is_libpq_key(k)}
    unknown = sorted(k for k in options if k not in OWN_KEYS and k not in libpq_keys)
    if unknown:
        raise InvalidStoreURL(
            f"unknown postgresql:// option(s) {unknown}; this store takes {sorted(OWN_KEYS)} "
            "and libpq connection parameters"
        )
    libpq: dict[str, Any] = {}
    for key in libpq_keys:
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise InvalidStoreURL(f"libpq option {key} must be a str or an int, got {value!r}")
        libpq[key] = str(value)
    defaults = Options()
    schema = options.get("schema", defaults.schema)
    if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
        raise InvalidStoreURL(
            "option schema must be a lower-case SQL identifier of at most 63 characters "
            f"(letters, digits, '_'; not starting with a digit or 'pg_'), got {schema!r}"
        )
    parsed = Options(
        schema=schema,
        pool_min=_as_int("pool_min", options.get("pool_min", defaults.pool_min), 0),
        pool_max=_as_int("pool_max", options.get("pool_max", defaults.pool_max), 1),
        pool_timeout=_as_float(
            "pool_timeout", options.get("pool_timeout", defaults.pool_timeout), positive=True
        ),
        poll_interval=_as_float(
            "poll_interval", options.get("poll_interval", defaults.poll_interval), positive=True
        ),
        notify=_as_bool("notify", options.get("notify", defaults.notify)),
        notify_debounce=_as_float(
            "notify_debounce", options.get("notify_debounce", defaults.notify_debounce), positive=False
        ),
        append_concurrency=_as_int(
            "append_concurrency", options.get("append_concurrency", defaults.append_concurrency), 1
        ),
    )
    if parsed.pool_min > parsed.pool_max:
        raise InvalidStoreURL(
            f"option pool_min ({parsed.pool_min}) must not exceed pool_max ({parsed.pool_max})"
        )
    return parsed, libpq
