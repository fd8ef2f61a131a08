"""Server settings and bearer tokens."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from eventvault.errors import InvalidInput

__all__ = ["SCOPES", "Settings", "Token", "is_loopback", "parse_metrics_token", "parse_tokens", "token_id"]

SCOPES: Final = frozenset({"read", "write", "admin"})
_TOKEN: Final = re.compile(r"[A-Za-z0-9._~+/=-]{16,256}")
_SUBJECT: Final = re.compile(r"[A-Za-z0-9._@:-]{1,100}")


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer token, who it stands for, and what it may do.

    ``id`` is derived from the secret alone: it names the token wherever the
    server keeps something per caller (Idempotency-Keys), so two tokens never
    share that, even with the same subject, and reordering the token file
    changes nothing. A token given without a subject is known by it as well.
    """

    secret: str
    subject: str
    scopes: frozenset[str]
    id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", token_id(self.secret))


def token_id(secret: str) -> str:
    """A stable, public name for the token ``secret``: a prefix of a hash of it, never the secret."""
    return "token-" + hashlib.sha256(b"eventvault token id\x00" + secret.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server needs to start; the CLI fills it from its options."""

    db: str = "sqlite:///var/eventvault.db"
    tokens: tuple[Token, ...] = ()
    run_projections: bool = True
    demo: bool = False
    consistency_timeout: float = 5.0
    """How long a query with consistentWith waits for the read model."""
    max_body_bytes: int = 64 * 1024
    body_timeout: float = 30.0
    """Seconds a request body may take to arrive whole (408 after that)."""
    metrics_token: str | None = None
    """A bearer token good for /metrics only (an admin token is good too)."""
    cors_origins: tuple[str, ...] = ()
    command_retries: int = 50
    """Conflicts retried inside the server for commands without If-Match."""
    account_cache: int = 10_000
    """Accounts whose latest state the server keeps in memory (0: none). A command
    starts from that state and reads only the events recorded after it, so other
    processes writing the same store are still seen; a few hundred bytes each."""
    idempotency_ttl: float = 86_400.0
    """Seconds an Idempotency-Key and its answer are kept at least (0: forever).
    Expired keys are removed within a quarter of this (at most an hour) after."""
    static_dir: Path | None = None
    """The built dashboard, served at / when present."""
    sse_keepalive: float = 15.0
    extra: dict[str, str] = field(default_factory=dict)


def parse_tokens(spec: str) -> tuple[Token, ...]:
    """Tokens from a file (one per line) or an inline spec (entries separated by ``;``).

    An entry is ``TOKEN:SCOPES[:SUBJECT]`` with SCOPES a comma-separated subset of
    read, write, admin; in a file, blank lines and ``#`` comments are ignored.
    Tokens are at least 16 characters.
    """
    path = Path(spec)
    try:
        is_file = path.is_file()
    except OSError:
        is_file = False
    if is_file:
        lines = path.read_text(encoding="utf-8").splitlines()
        entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        where = f"token file {spec}"
    else:
        entries = [e.strip() for e in spec.split(";") if e.strip()]
        where = "--tokens"
    tokens: list[Token] = []
    for n, entry in enumerate(entries, start=1):
        parts = entry.split(":")
        if len(parts) not in (2, 3):
            raise InvalidInput(f"{where}, entry {n}: expected TOKEN:SCOPES[:SUBJECT]")
        secret, scopes_text = parts[0], parts[1]
        subject = parts[2] if len(parts) == 3 else token_id(secret)
        if not _TOKEN.fullmatch(secret):
            raise InvalidInput(f"{where}, entry {n}: a token is 16-256 URL-safe characters")
        if not _SUBJECT.fullmatch(subject):
            raise InvalidInput(f"{where}, entry {n}: a subject is 1-100 of letters, digits and ._@:-")
        scopes = frozenset(s.strip() for s in scopes_text.split(",") if s.strip())
        if not scopes or not scopes <= SCOPES:
            raise InvalidInput(f"{where}, entry {n}: scopes are a comma-separated subset of read,write,admin")
        tokens.append(Token(secret, subject, scopes))
    if not tokens:
        raise InvalidInput(f"{where} holds no token")
    if len({t.secret for t in tokens}) != len(tokens):
        raise InvalidInput(f"{where}: the same token appears twice")
    return tuple(tokens)


def parse_metrics_token(spec: str) -> str:
    """The metrics token: the first line of the file ``spec`` names, or ``spec`` itself."""
    path = Path(spec)
    try:
        is_file = path.is_file()
    except OSError:
        is_file = False
    secret = path.read_text(encoding="utf-8").strip() if is_file else spec.strip()
    if not _TOKEN.fullmatch(secret):
        raise InvalidInput("--metrics-token: a token is 16-256 URL-safe characters")
    return secret


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only listens on, or comes from, this machine."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1, as a dual-stack socket reports 127.0.0.1
    return address.is_loopback
