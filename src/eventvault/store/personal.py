"""Personal fields sealed per subject (crypto-shredding): key stores and the sealed form.

An event class declares personal fields with :func:`eventvault.domain.personal`.
On append the store replaces them, in the stored JSON, by one ``$sealed``
member: the fields' JSON encrypted with AES-256-GCM under the subject's key,
with the subject, the key's id and the fields' names in the clear::

    {"$sealed":{"v":1,"s":"account-…","k":"<key id>","f":["owner_name"],"c":"<base64>"},"currency":"EUR"}

The rest of the event stays plain JSON. On read the store looks the subjects'
keys up once per read and the event decodes with its fields back; a subject
whose key is gone (forgotten, or a log imported without its keys) reads as
:data:`~eventvault.domain.REDACTED`. The key sits in a table of its own beside
the log (never in it): destroying it is the erasure, and the events are never
rewritten. Additional authenticated data binds the ciphertext to the event
type, the subject and the key id, so a sealed member cannot be moved to
another event or subject unnoticed.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import threading
import time
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, runtime_checkable

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from eventvault.domain import REDACTED, PersonalData
from eventvault.errors import DecodeError, InvalidEvent, SubjectForgotten
from eventvault.store.records import Metadata

if TYPE_CHECKING:
    from eventvault.store.codec import EventCodec

__all__ = [
    "SEALED_PREFIX",
    "KeyRecord",
    "KeyStore",
    "MemoryKeyStore",
    "SubjectKey",
    "UnsealingDecoder",
    "new_key",
    "seal",
    "sealed_subject",
]

SEALED_PREFIX: Final = b'{"$sealed":'
"""How the stored JSON of an event with sealed fields starts (the member is written first)."""

MAX_SUBJECT_LENGTH: Final = 200
_NONCE: Final = 12
_VERSION: Final = 1


class SubjectKey(NamedTuple):
    """A subject's data key: 32 random bytes, and a random id the sealed form names it by."""

    key_id: str
    key: bytes


class KeyRecord(NamedTuple):
    """A row of a key table as it moves between stores (key_id and key None: forgotten)."""

    subject: str
    key_id: str | None
    key: bytes | None
    created_us: int
    forgotten_us: int | None


def new_key() -> SubjectKey:
    """A fresh random key and key id."""
    return SubjectKey(secrets.token_hex(8), AESGCM.generate_key(bit_length=256))


@runtime_checkable
class KeyStore(Protocol):
    """Where a store keeps its subjects' keys: beside the log, never in it.

    A subject has no key until its first personal data is appended, one key
    from then on, and none ever again once forgotten (a forgotten subject is
    remembered as such, without its key, so no new key can make new data of it
    readable under the old name by accident).
    """

    async def keys_of(self, subjects: Collection[str]) -> dict[str, SubjectKey]:
        """The keys of those ``subjects`` that have one (forgotten and unknown ones are left out)."""
        ...

    async def key_for(self, subject: str) -> SubjectKey:
        """The subject's key, made and stored first if it has none; SubjectForgotten if forgotten."""
        ...

    async def forget(self, subject: str) -> bool:
        """Destroy the subject's key and remember it as forgotten; True if a key was destroyed now."""
        ...

    async def is_forgotten(self, subject: str) -> bool:
        """Whether ``subject`` was forgotten."""
        ...

    async def records(self, after: str, limit: int) -> list[KeyRecord]:
        """Up to ``limit`` rows with subjects after ``after``, in subject order (forgotten ones too)."""
        ...

    async def restore(self, records: Collection[KeyRecord]) -> None:
        """Take rows from another store: new subjects as given; a forgotten row forgets; kept keys stay.

        A subject forgotten on either side ends forgotten; a subject with a key
        here keeps it.
        """
        ...


def check_subject(subject: object) -> str:
    """``subject`` if it is a usable subject id (a non-empty str of at most 200 characters)."""
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_LENGTH:
        raise InvalidEvent(
            f"a subject is a non-empty str of at most {MAX_SUBJECT_LENGTH} characters, got {subject!r}"
        )
    return subject


class MemoryKeyStore:
    """Keys in this process's memory (the memory store's; gone with the process, like its log)."""

    def __init__(self) -> None:
        self._keys: dict[str, SubjectKey | None] = {}  # None: forgotten
        self._created: dict[str, int] = {}
        self._forgotten: dict[str, int] = {}
        self._lock = threading.Lock()

    async def keys_of(self, subjects: Collection[str]) -> dict[str, SubjectKey]:
        """The keys of those ``subjects`` that have one."""
        with self._lock:
            return {s: k for s in subjects if (k := self._keys.get(s)) is not None}

    async def key_for(self, subject: str) -> SubjectKey:
        """The subject's key, made first if it has none; SubjectForgotten if forgotten."""
        check_subject(subject)
        with self._lock:
            if subject in self._keys:
                key = self._keys[subject]
                if key is None:
                    raise SubjectForgotten(subject)
                return key
            key = self._keys[subject] = new_key()
            self._created[subject] = time.time_ns() // 1000
            return key

    async def forget(self, subject: str) -> bool:
        """Destroy the subject's key; True if it had one."""
        check_subject(subject)
        with self._lock:
            had = self._keys.get(subject) is not None
            self._keys[subject] = None
            now = time.time_ns() // 1000
            self._created.setdefault(subject, now)
            self._forgotten.setdefault(subject, now)
            return had

    async def is_forgotten(self, subject: str) -> bool:
        """Whether ``subject`` was forgotten."""
        with self._lock:
            return subject in self._keys and self._keys[subject] is None

    async def records(self, after: str, limit: int) -> list[KeyRecord]:
        """Up to ``limit`` rows with subjects after ``after``, in subject order."""
        with self._lock:
            subjects = sorted(s for s in self._keys if s > after)[:limit]
            out = []
            for s in subjects:
                key = self._keys[s]
                created = self._created.get(s, 0)
                if key is None:
                    out.append(KeyRecord(s, None, None, created, self._forgotten.get(s, created)))
                else:
                    out.append(KeyRecord(s, key.key_id, key.key, created, None))
            return out

    async def restore(self, records: Collection[KeyRecord]) -> None:
        """Take rows from another store (a forgotten subject on either side ends forgotten)."""
        with self._lock:
            for r in records:
                check_subject(r.subject)
                if r.key is None or r.key_id is None:
                    self._keys[r.subject] = None
                    self._forgotten.setdefault(r.subject, r.forgotten_us or r.created_us)
                elif r.subject not in self._keys:
                    self._keys[r.subject] = SubjectKey(r.key_id, r.key)
                self._created.setdefault(r.subject, r.created_us)


# -- the sealed form -------------------------------------------------------------


class _Sealed(msgspec.Struct, frozen=True):
    v: int
    s: str
    k: str
    f: tuple[str, ...]
    c: str


class _Envelope(msgspec.Struct, frozen=True):
    sealed: _Sealed = msgspec.field(name="$sealed")


_envelope = msgspec.json.Decoder(_Envelope)
_json = msgspec.json.Encoder()


def _aad(event_type: str, subject: str, key_id: str) -> bytes:
    return f"eventvault-sealed\x00{event_type}\x00{subject}\x00{key_id}".encode()


def seal(event_type: str, payload: bytes, spec: PersonalData, subject: str, key: SubjectKey) -> bytes:
    """``payload`` (an event's JSON) with the fields of ``spec`` sealed under ``key``."""
    data = msgspec.json.decode(payload)
    secret = {name: data.pop(name) for name in spec.fields if name in data}
    nonce = os.urandom(_NONCE)
    sealed = nonce + AESGCM(key.key).encrypt(
        nonce, _json.encode(secret), _aad(event_type, subject, key.key_id)
    )
    member = {
        "v": _VERSION,
        "s": subject,
        "k": key.key_id,
        "f": list(secret),
        "c": base64.b64encode(sealed).decode("ascii"),
    }
    return _json.encode({"$sealed": member, **data})


def subject_of(spec: PersonalData, stream_id: str, payload: bytes) -> str:
    """The subject an event of ``spec`` appended to ``stream_id`` belongs to."""
    if spec.subject is None:
        return stream_id
    value = msgspec.json.decode(payload).get(spec.subject)
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"the subject field {spec.subject!r} must hold a non-empty str, got {value!r}")
    return check_subject(value)


def sealed_subject(payload: bytes) -> str | None:
    """The subject of a sealed payload (None if it is not sealed, or not readably so)."""
    if not payload.startswith(SEALED_PREFIX):
        return None
    try:
        return _envelope.decode(payload).sealed.s
    except msgspec.MsgspecError:
        return None


def unseal(event_type: str, payload: bytes, keys: Mapping[str, SubjectKey]) -> dict[str, Any]:
    """The event's JSON object with its sealed fields back, or REDACTED where the key is gone.

    A key that is there but does not open the sealed member (the bytes were
    changed) raises DecodeError: that is damage, not erasure.
    """
    try:
        data = msgspec.json.decode(payload, type=dict[str, Any])
        sealed = msgspec.convert(data.pop("$sealed"), _Sealed)
    except (msgspec.MsgspecError, KeyError) as exc:
        raise DecodeError(f"stored {event_type!r} has an unreadable sealed member: {exc}") from None
    if sealed.v != _VERSION:
        raise DecodeError(f"stored {event_type!r} is sealed in form {sealed.v}, which this code cannot read")
    key = keys.get(sealed.s)
    if key is None or key.key_id != sealed.k:
        # Forgotten, or sealed under a key this store does not hold (a log imported
        # without its keys): the data is unreadable by design.
        for name in sealed.f:
            data[name] = REDACTED
        return data
    try:
        blob = base64.b64decode(sealed.c, validate=True)
        plain = AESGCM(key.key).decrypt(blob[:_NONCE], blob[_NONCE:], _aad(event_type, sealed.s, sealed.k))
        secret = msgspec.json.decode(plain, type=dict[str, Any])
    except (binascii.Error, InvalidTag, ValueError, msgspec.MsgspecError):
        raise DecodeError(
            f"stored {event_type!r} of subject {sealed.s!r}: its key does not open the sealed fields "
            "(the stored bytes were changed)"
        ) from None
    data.update(secret)
    return data


class UnsealingDecoder:
    """Decodes the events of one read with the keys that read found (what a sealed event decodes with)."""

    __slots__ = ("_codec", "_keys")

    def __init__(self, codec: EventCodec, keys: Mapping[str, SubjectKey]) -> None:
        self._codec = codec
        self._keys = keys

    def decode_event(self, name: str, schema_version: int, payload: bytes) -> Any:
        """The event, its sealed fields unsealed (or redacted)."""
        if not payload.startswith(SEALED_PREFIX):
            return self._codec.decode_event(name, schema_version, payload)
        return self._codec.decode_data(name, schema_version, unseal(name, payload, self._keys))

    def decode_metadata(self, raw: bytes | None) -> Metadata:
        """Metadata, as the codec decodes it."""
        return self._codec.decode_metadata(raw)

    def decode_stored(self, name: str, payload: bytes) -> Any:
        """The stored JSON as Python values, the sealed fields opened (or redacted), not upcast."""
        if not payload.startswith(SEALED_PREFIX):
            return self._codec.decode_stored(name, payload)
        return unseal(name, payload, self._keys)
