"""given/when/then scenarios fail when they should and pass when they should."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from eventvault import Aggregate, DomainError, applies
from eventvault.testing import given


@dataclass(frozen=True)
class Lit:
    pass


class AlreadyLit(DomainError):
    pass


class Lamp(Aggregate):
    lit: bool = False

    @classmethod
    def install(cls) -> Lamp:
        return cls("lamp")

    def light(self) -> None:
        if self.lit:
            raise AlreadyLit("the lamp is already lit")
        self.record(Lit())

    @applies(Lit)
    def _lit(self, _: Lit) -> None:
        self.lit = True


def test_then_passes_on_the_expected_events() -> None:
    """then() returns the aggregate after the command when the events match."""
    lamp = given(Lamp).when(lambda a: a.light()).then(Lit())
    assert lamp.lit


def test_then_fails_on_other_events() -> None:
    """then() fails when the command recorded something else."""
    with pytest.raises(AssertionError, match="other events than expected"):
        given(Lamp).when(lambda a: a.light()).then()


def test_then_raises_passes_on_the_error() -> None:
    """then_raises() checks the error class and message."""
    err = given(Lamp, Lit()).when(lambda a: a.light()).then_raises(AlreadyLit, match="already lit")
    assert isinstance(err, AlreadyLit)


def test_then_raises_fails_when_nothing_is_raised() -> None:
    """then_raises() fails when the command succeeds."""
    with pytest.raises(AssertionError, match="expected AlreadyLit"):
        given(Lamp).when(lambda a: a.light()).then_raises(AlreadyLit)


def test_then_raises_fails_on_another_message() -> None:
    """then_raises() fails when the message does not match."""
    with pytest.raises(AssertionError, match="does not match"):
        given(Lamp, Lit()).when(lambda a: a.light()).then_raises(AlreadyLit, match="broken")


def test_creation_commands_use_the_returned_aggregate() -> None:
    """A factory command's new aggregate is what then() checks."""
    given(Lamp).when(lambda _: Lamp.install()).then_nothing()


def test_when_is_required() -> None:
    """A scenario without a command is a mistake in the test."""
    with pytest.raises(AssertionError, match="when"):
        given(Lamp).then()
