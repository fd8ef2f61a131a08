"""The codec: exact money, typed decoding, upcasting on read, clear errors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from eventvault import DecodeError, EventRegistry, EventTypeError, InvalidEvent, Metadata, UnknownEventType
from eventvault.store.codec import EventCodec


@dataclass(frozen=True)
class Paid:
    amount: Decimal
    at: datetime


class Noted(msgspec.Struct, frozen=True):
    text: str


@pytest.fixture
def codec() -> EventCodec:
    reg = EventRegistry()
    reg.register(Paid, "Paid")
    reg.register(Noted, "Noted")
    reg.register(Plain, "Plain")
    reg.register(PlainStruct, "PlainStruct")
    return EventCodec(reg)


def test_decimal_is_a_string_and_exact(codec: EventCodec) -> None:
    """Money is written as a decimal string and read back with the same digits."""
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    name, version, payload = codec.encode_event(Paid(Decimal("0.10"), at))
    assert (name, version) == ("Paid", 1)
    assert b'"amount":"0.10"' in payload
    back = codec.decode_event(name, version, payload)
    assert back == Paid(Decimal("0.10"), at)
    assert str(back.amount) == "0.10"


def test_structs_are_events_too(codec: EventCodec) -> None:
    """Msgspec Structs encode and decode like dataclasses."""
    assert codec.decode_event(*codec.encode_event(Noted("hé 👋"))) == Noted("hé 👋")


def test_wrong_field_type_is_refused_at_encode(codec: EventCodec) -> None:
    """A float where the class says Decimal is caught before it is stored."""
    with pytest.raises(InvalidEvent, match="does not match its own field types"):
        codec.encode_event(Paid(0.1, datetime.now(UTC)))  # type: ignore[arg-type]


def test_unregistered_event_is_refused(codec: EventCodec) -> None:
    """Only registered classes can be encoded."""

    @dataclass
    class Other:
        x: int

    with pytest.raises(InvalidEvent, match="not a registered event type"):
        codec.encode_event(Other(1))


def test_unknown_type_on_read(codec: EventCodec) -> None:
    """Reading a type no class is registered for raises UnknownEventType."""
    with pytest.raises(UnknownEventType):
        codec.decode_event("Gone", 1, b"{}")


def test_upcast_on_read() -> None:
    """Stored v1 data is brought to the v2 class through its upcaster; bytes stay as stored."""
    reg = EventRegistry()

    @dataclass(frozen=True)
    class PaidV2:
        amount: Decimal
        currency: str

    reg.register(PaidV2, "Paid", version=2)

    def add_currency(d: dict[str, Any]) -> dict[str, Any]:
        return {**d, "currency": "EUR"}

    reg.add_upcaster("Paid", 1, add_currency)
    c = EventCodec(reg)
    assert c.decode_event("Paid", 1, b'{"amount":"2.50"}') == PaidV2(Decimal("2.50"), "EUR")


def test_broken_stored_data_is_a_decode_error(codec: EventCodec) -> None:
    """Garbage or mismatched stored bytes raise DecodeError naming the type."""
    with pytest.raises(DecodeError, match="'Paid'"):
        codec.decode_event("Paid", 1, b"not json")
    with pytest.raises(DecodeError, match="does not fit"):
        codec.decode_event("Paid", 1, b'{"amount": "1"}')


def test_failing_upcaster_is_a_decode_error() -> None:
    """An upcaster that raises on odd old data gives a DecodeError with the cause."""
    reg = EventRegistry()
    reg.register(Noted, "Noted", version=2)
    reg.add_upcaster("Noted", 1, lambda d: {"text": d["missing"]})
    with pytest.raises(DecodeError, match="upcasting stored 'Noted' from v1 failed"):
        EventCodec(reg).decode_event("Noted", 1, b"{}")


def test_newer_stored_version_is_refused(codec: EventCodec) -> None:
    """Data written by newer code is not misread by older code."""
    with pytest.raises(EventTypeError, match="newer than this code"):
        codec.decode_event("Noted", 2, b'{"text":"x"}')


def test_metadata_round_trip(codec: EventCodec) -> None:
    """Metadata keeps every field; empty metadata is stored as {}."""
    meta = Metadata(correlation_id="c", causation_id="d", actor="a", request_id="r", extra={"k": "v"})
    assert codec.decode_metadata(codec.encode_metadata(meta)) == meta
    assert codec.encode_metadata(Metadata()) == b"{}"
    assert codec.decode_metadata(None) == Metadata()


def test_bad_metadata_bytes_are_a_decode_error(codec: EventCodec) -> None:
    """Stored metadata that is not valid raises DecodeError."""
    with pytest.raises(DecodeError):
        codec.decode_metadata(b'{"actor": 5}')


def test_a_float_is_refused_even_when_exact(codec: EventCodec) -> None:
    """Money never passes through a float, even one like 0.5 that would survive."""
    with pytest.raises(InvalidEvent, match="where a Decimal belongs"):
        codec.encode_event(Paid(0.5, datetime.now(UTC)))  # type: ignore[arg-type]


def test_an_int_in_a_decimal_field_is_stored_as_a_decimal_string(codec: EventCodec) -> None:
    """Exact ints are accepted and stored in the field's own form."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    _, _, payload = codec.encode_event(Paid(2, at))  # type: ignore[arg-type]
    assert b'"amount":"2"' in payload


@dataclass(frozen=True)
class Plain:
    """Only plain fields: the codec checks these by their values' exact types."""

    amount: Decimal
    cents: int
    flag: bool
    text: str


class PlainStruct(msgspec.Struct, frozen=True):
    cents: int
    text: str


@pytest.mark.parametrize(
    "obj",
    [
        Plain(Decimal("0.10"), -(2**63), flag=True, text="hé"),
        Plain(Decimal("-0"), 2**100, flag=False, text=""),
        Plain(Decimal("1.000"), -(2**100), flag=False, text="\u2028"),
        Plain(Decimal("1E+2"), 0, flag=False, text="x"),
        PlainStruct(7, "seven"),
    ],
)
def test_plain_events_are_stored_exactly_as_the_round_trip_would(codec: EventCodec, obj: Any) -> None:
    """The exact-type check accepts what the round trip accepts, with the same bytes, and reads back equal."""
    name, version, payload = codec.encode_event(obj)
    checked = EventCodec(codec.registry)
    checked._encoding[type(obj)] = (name, version, checked._decoder(type(obj)), lambda _obj: False)
    assert checked.encode_event(obj) == (name, version, payload)  # the same through the round trip
    assert codec.decode_event(name, version, payload) == obj


@pytest.mark.parametrize(
    ("obj", "words"),
    [
        (Plain(0.5, 1, flag=True, text="x"), "where a Decimal belongs"),  # type: ignore[arg-type]
        (Plain(Decimal(1), cents=True, flag=True, text="x"), "does not match"),  # a bool is not an int
        (Plain(Decimal(1), "1", flag=True, text="x"), "does not match"),  # type: ignore[arg-type]
        (Plain(Decimal(1), 1, flag=1, text="x"), "does not match"),  # type: ignore[arg-type] # an int is not a bool
        (Plain(Decimal(1), 1, flag=True, text=None), "does not match"),  # type: ignore[arg-type]
        (PlainStruct(1.5, "x"), "does not match"),  # type: ignore[arg-type]
    ],
)
def test_plain_events_with_wrong_values_are_refused(codec: EventCodec, obj: Any, words: str) -> None:
    """A value of another type than its field's is refused, not stored."""
    with pytest.raises(InvalidEvent, match=words):
        codec.encode_event(obj)


def test_an_int_in_a_plain_decimal_field_is_stored_as_a_decimal_string(codec: EventCodec) -> None:
    """A value of a near type takes the round trip, which stores the field's own form."""
    _, _, payload = codec.encode_event(Plain(2, 1, flag=True, text="x"))  # type: ignore[arg-type]
    assert b'"amount":"2"' in payload


def test_a_name_registered_again_decodes_as_its_new_registration() -> None:
    """The codec's cache of decoders follows the registry: a reloaded class takes over its name."""
    registry = EventRegistry()

    @dataclass(frozen=True)
    class Noted:
        text: str

    registry.register(Noted, "Noted")
    codec = EventCodec(registry)
    assert type(codec.decode_event("Noted", 1, b'{"text": "a"}')) is Noted

    @dataclass(frozen=True)
    class Noted:  # type: ignore[no-redef]  # the module reloaded: the same qualified name
        text: str
        extra: int = 0

    registry.register(Noted, "Noted")
    decoded = codec.decode_event("Noted", 1, b'{"text": "b", "extra": 3}')
    assert type(decoded) is Noted
    assert dataclasses.asdict(decoded) == {"text": "b", "extra": 3}
