"""The rule "an owner holds at most three open accounts per currency", kept across accounts.

Each account is its own stream, so no stream's expected version can keep this
rule. It is a dynamic consistency boundary (``docs/dcb.md``): AccountOpened
and AccountClosed carry the tags ``owner-sha256:<hash of the name>`` and
``currency:<code>`` (:meth:`Account.tags_of`), and so does the ``$StreamDeleted``
event of an account stream deleted by an operator (a delete carries its
stream's tags, decision 35); :func:`open_account` reads the events of those
types carrying both, counts the accounts opened and neither closed nor
deleted, and appends the new account's AccountOpened under the condition
that none of those events was stored since. Of eight requests racing for the
last place, one lands; the others read again and are refused. A delete that
lands meanwhile fails the condition too, and the open is decided again.

Events from before the tags carry none: an account opened then does not count
(see decision 31). Accounts tagged ``owner:<name>`` in the clear, before
decision 33 made the tag a hash, still count (the query matches that tag too).
A delete made before decision 35 carries no tags: its account still counts
until its stream is scavenged (a tombstone of it now carries them).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Final

from eventvault import (
    NO_STREAM,
    STREAM_DELETED,
    AppendCondition,
    AppendConditionFailed,
    AppendResult,
    EventStore,
    Metadata,
    NewEvent,
    Query,
    RecordedEvent,
    StreamDeletedEvent,
    uuid7,
)
from eventvault_ledger.domain import (
    Account,
    AccountClosed,
    AccountOpened,
    currency_tag,
    legacy_owner_tag,
    owner_tag,
)
from eventvault_ledger.errors import TooManyOpenAccounts

__all__ = ["MAX_OPEN_ACCOUNTS", "open_account", "open_accounts", "open_accounts_query"]

MAX_OPEN_ACCOUNTS: Final = 3
"""How many open accounts one owner may hold in one currency."""

_RETRIES: Final = 10


def open_accounts_query(owner_name: str, currency: str) -> Query:
    """The events the rule decides on: openings, closings and deletes of the owner's accounts in ``currency``.

    Those tagged with the owner's hash, and those tagged the way accounts were
    before (``owner:<name>``, decision 33), so an upgrade loosens no limit. A
    delete's ``$StreamDeleted`` carries the tags of its stream's events, so it
    matches the item its account's opening matched.
    """
    types = [AccountOpened.__name__, AccountClosed.__name__, STREAM_DELETED]
    query = Query.of(types=types, tags=[owner_tag(owner_name), currency_tag(currency)])
    legacy = legacy_owner_tag(owner_name)
    if legacy is None:
        return query
    return query | Query.of(types=types, tags=[legacy, currency_tag(currency)])


def open_accounts(events: Sequence[RecordedEvent]) -> frozenset[str]:
    """The decision model: the streams of the accounts among ``events`` opened, and not closed or deleted."""
    open_streams: set[str] = set()
    for e in events:
        if isinstance(e.data, AccountOpened):
            open_streams.add(e.stream_id)
        elif isinstance(e.data, AccountClosed | StreamDeletedEvent):
            open_streams.discard(e.stream_id)
    return frozenset(open_streams)


async def open_account(
    store: EventStore,
    account: Account,
    *,
    metadata: Metadata | None = None,
    event_id: uuid.UUID | None = None,
    limit: int = MAX_OPEN_ACCOUNTS,
) -> AppendResult:
    """Append the opening of ``account`` (new, from :meth:`Account.open`) if the owner may hold it.

    Raises TooManyOpenAccounts if the owner holds ``limit`` open accounts in its
    currency. A condition that fails because another account of the owner and
    currency landed meanwhile is decided again on the new state.
    """
    [opened] = account.pending_events
    query = open_accounts_query(account.owner_name, account.currency)
    new = NewEvent(
        opened,
        Metadata() if metadata is None else metadata,
        uuid7() if event_id is None else event_id,
        tags=account.tags_of(opened),
    )
    attempt = 0
    while True:
        seen = await store.read(query)
        model = open_accounts(seen.events)
        # Already among them: a retry of an open that landed (the store answers with its result).
        if account.stream_id not in model and len(model) >= limit:
            raise TooManyOpenAccounts(account.owner_name, account.currency, limit)
        try:
            result = await store.append_events(
                [new],
                condition=AppendCondition(query, after=seen.head),
                stream_id=account.stream_id,
                expected_version=NO_STREAM,
            )
        except AppendConditionFailed:
            if attempt == _RETRIES:
                raise
            attempt += 1
            continue
        account.mark_saved()
        return result
