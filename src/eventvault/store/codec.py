"""Typed, fast JSON for event data and metadata (msgspec).

Encoding checks each event against its own class by decoding the bytes back
once, so an event whose fields hold the wrong types (a float where the class
says Decimal) is refused at append time instead of becoming unreadable later.
Events whose fields are all plain ``str``, ``int``, ``bool`` or ``Decimal`` are
checked faster, by the exact type of each value: such an
event reads back as itself exactly when those hold, and anything else takes the
round trip.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

import msgspec

from eventvault.domain import EventRegistry, PersonalData, default_registry, personal_data_of
from eventvault.errors import DecodeError, EventTypeError, InvalidEvent
from eventvault.store.records import EMPTY_METADATA, Metadata, RawEvent

__all__ = ["EMPTY_METADATA_JSON", "EventCodec"]

EMPTY_METADATA_JSON: Final = b"{}"
"""The stored JSON of empty metadata."""


class EventCodec:
    """Turns registered event objects into (type name, schema version, JSON) and back."""

    def __init__(self, registry: EventRegistry | None = None, *, validate: bool = True) -> None:
        self.registry = default_registry if registry is None else registry
        self.validate = validate
        self._encoder = msgspec.json.Encoder(decimal_format="string")
        self._decoders: dict[type, msgspec.json.Decoder[Any]] = {}
        self._meta_decoder = msgspec.json.Decoder(Metadata)
        # Per event class: its name, schema version, decoder and exact-type check.
        self._encoding: dict[type, tuple[str, int, msgspec.json.Decoder[Any], Callable[[object], bool]]] = {}
        # Per type name: its registered schema version and decoder, for the common read of
        # an event stored at its current version (one lookup). Valid while the registry
        # has not changed (a reloaded module may register a name again).
        self._current: dict[str, tuple[int, msgspec.json.Decoder[Any]]] = {}
        self._current_of = -1
        self._personal: dict[str, PersonalData] = {}
        self._personal_of = -1

    def personal_types(self) -> dict[str, PersonalData]:
        """The registered type names with personal fields, and what they declare (often none)."""
        registry = self.registry
        if self._personal_of != registry.changes:
            self._personal = {
                entry.name: spec for entry in registry if (spec := personal_data_of(entry.cls)) is not None
            }
            self._personal_of = registry.changes
        return self._personal

    def _encode_raw(self, raw: RawEvent) -> tuple[str, int, bytes]:
        try:
            known = self.registry.of_name(raw.event_type)
        except EventTypeError:
            return raw.event_type, 1, raw.payload
        raise InvalidEvent(
            f"{raw.event_type!r} is the registered type {known.cls.__qualname__}: append that class, "
            "not a raw event"
        )

    def _decoder(self, cls: type) -> msgspec.json.Decoder[Any]:
        dec = self._decoders.get(cls)
        if dec is None:
            dec = self._decoders[cls] = msgspec.json.Decoder(cls)
        return dec

    def encode_event(self, obj: object) -> tuple[str, int, bytes]:
        """The registered name, current schema version and JSON bytes of ``obj``."""
        cls = type(obj)
        how = self._encoding.get(cls)
        if how is None:
            if cls is RawEvent:
                return self._encode_raw(obj)  # type: ignore[arg-type] # checked just above
            entry = self.registry.of_class(cls)
            how = (entry.name, entry.version, self._decoder(entry.cls), _exact_types(cls))
            self._encoding[cls] = how
        name, version, decoder, exact = how
        try:
            payload = self._encoder.encode(obj)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise InvalidEvent(f"{name} cannot be encoded: {exc}") from None
        if self.validate and not exact(obj):
            try:
                back = decoder.decode(payload)
            except msgspec.ValidationError as exc:
                raise InvalidEvent(f"{name} does not match its own field types: {exc}") from None
            # Decoding is lenient (a JSON number may become a Decimal), so check that
            # the event reads back as itself: bytes equal is the fast, common case.
            canonical = self._encoder.encode(back)
            if canonical != payload:
                problem = _mismatch(obj, back)
                if problem:
                    raise InvalidEvent(f"{name} does not match its own field types: {problem}")
                payload = canonical  # e.g. an int in a Decimal field is stored as "2"
        return name, version, payload

    def decode_event(self, name: str, schema_version: int, payload: bytes) -> Any:
        """The event stored as ``payload`` under ``name`` at ``schema_version``, upcast."""
        registry = self.registry
        if self._current_of != registry.changes:
            self._current.clear()
            self._current_of = registry.changes
        current = self._current.get(name)
        if current is None:
            entry = registry.of_name(name)
            current = self._current[name] = (entry.version, self._decoder(entry.cls))
        try:
            if schema_version == current[0]:
                return current[1].decode(payload)
            entry = registry.of_name(name)
            data = msgspec.json.decode(payload)
            if not isinstance(data, dict):
                raise DecodeError(f"stored {name!r} v{schema_version} is not a JSON object")
            data = registry.upcast(name, schema_version, data)
            return msgspec.convert(data, entry.cls)
        except msgspec.ValidationError as exc:
            entry = registry.of_name(name)
            if payload.startswith(b'{"$sealed":'):
                raise DecodeError(
                    f"stored {name!r} has sealed personal fields: read it through its store, "
                    "which holds the keys"
                ) from None
            raise DecodeError(
                f"stored {name!r} v{schema_version} does not fit {entry.cls.__qualname__}"
                f" v{entry.version}: {exc}"
            ) from None
        except msgspec.DecodeError as exc:
            raise DecodeError(f"stored {name!r} is not valid JSON: {exc}") from None
        except EventTypeError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise DecodeError(f"upcasting stored {name!r} from v{schema_version} failed: {exc!r}") from exc

    def decode_stored(self, name: str, payload: bytes) -> Any:
        """The stored JSON ``payload`` of a ``name`` event as Python values (not upcast)."""
        if payload.startswith(b'{"$sealed":'):
            raise DecodeError(
                f"stored {name!r} has sealed personal fields: read it through its store, which holds the keys"
            )
        try:
            return msgspec.json.decode(payload)
        except msgspec.DecodeError as exc:
            raise DecodeError(f"stored {name!r} is not valid JSON: {exc}") from None

    def decode_data(self, name: str, schema_version: int, data: dict[str, Any]) -> Any:
        """The event whose stored JSON object (at ``schema_version``) is ``data``, upcast."""
        entry = self.registry.of_name(name)
        try:
            if schema_version != entry.version:
                data = self.registry.upcast(name, schema_version, data)
            return msgspec.convert(data, entry.cls)
        except msgspec.ValidationError as exc:
            raise DecodeError(
                f"stored {name!r} v{schema_version} does not fit {entry.cls.__qualname__}"
                f" v{entry.version}: {exc}"
            ) from None
        except EventTypeError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise DecodeError(f"upcasting stored {name!r} from v{schema_version} failed: {exc!r}") from exc

    def encode_metadata(self, meta: Metadata) -> bytes:
        """JSON of ``meta`` (``{}`` when empty)."""
        if meta is EMPTY_METADATA:
            return EMPTY_METADATA_JSON
        return self._encoder.encode(meta)

    def decode_metadata(self, raw: bytes | None) -> Metadata:
        """Metadata from its stored JSON."""
        if not raw or raw == EMPTY_METADATA_JSON:
            return EMPTY_METADATA
        try:
            return self._meta_decoder.decode(raw)
        except msgspec.MsgspecError as exc:
            raise DecodeError(f"stored metadata is not valid: {exc}") from None

    def encode_value(self, value: object) -> bytes:
        """JSON of any msgspec-encodable value (snapshots use this)."""
        return self._encoder.encode(value)


_PLAIN: Final = (  # an unconstrained msgspec type, and the one Python type that reads back as itself
    (msgspec.inspect.StrType(), str),
    (msgspec.inspect.IntType(), int),
    (msgspec.inspect.BoolType(), bool),
    (msgspec.inspect.DecimalType(), Decimal),
)


def _never(_obj: object) -> bool:
    return False


def _plain(t: msgspec.inspect.Type) -> type | None:
    return next((py for spec, py in _PLAIN if spec == t), None)


def _exact_types(cls: type) -> Callable[[object], bool]:
    """A check that ``obj`` of ``cls`` reads back as itself, by its values' exact types.

    Only for classes whose fields are all unconstrained str, int, bool or
    Decimal; for any other class it always answers False (take the round trip).
    """
    try:
        info = msgspec.inspect.type_info(cls)
    except (TypeError, ValueError):
        return _never
    if not isinstance(info, msgspec.inspect.StructType | msgspec.inspect.DataclassType) or not info.fields:
        return _never
    types = tuple(_plain(f.type) for f in info.fields)
    if None in types:
        return _never
    values = operator.attrgetter(*(f.name for f in info.fields), "__class__")  # a tuple, even of one field
    expected = (*types, type(cls))

    def exact(obj: object) -> bool:
        return tuple(map(type, values(obj))) == expected

    return exact


def _mismatch(given: object, read_back: object) -> str | None:
    """What makes ``given`` read back other than itself, or None if that is harmless.

    A float in a Decimal field is refused even when its value survives (0.5):
    money must never pass through a float. An int read back as a float is fine.
    """
    names = getattr(given, "__struct_fields__", None) or [
        f.name
        for f in dataclasses.fields(given)  # type: ignore[arg-type]
    ]
    for name in names:
        a, b = getattr(given, name), getattr(read_back, name)
        if isinstance(b, Decimal) and (isinstance(a, bool) or not isinstance(a, Decimal | int)):
            return f"field {name!r} holds {a!r} ({type(a).__name__}) where a Decimal belongs"
        if a != b:
            return f"field {name!r} holds {a!r} ({type(a).__name__}), which is stored as {b!r}"
    return None
