"""Decision models fold a query's events per projection and guard the append; scenarios check handlers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from eventvault import (
    NO_STREAM,
    AppendConditionFailed,
    AppendResult,
    DCBNotSupported,
    DomainError,
    EventRegistry,
    EventStore,
    InvalidInput,
    NewEvent,
    Query,
    event,
)
from eventvault.decisions import Projection, build_decision_model
from eventvault.store.memory import MemoryEventStore
from eventvault.testing import given_events

REGISTRY = EventRegistry()


@event("test.CourseDefined", registry=REGISTRY)
@dataclass(frozen=True)
class CourseDefined:
    course_id: str
    capacity: int


@event("test.StudentSubscribed", registry=REGISTRY)
@dataclass(frozen=True)
class StudentSubscribed:
    student_id: str
    course_id: str


class CourseFull(DomainError):
    pass


class TooManyCourses(DomainError):
    pass


def course_capacity(course_id: str) -> Projection[int]:
    return Projection(0, {CourseDefined: lambda _, e: e.capacity}, tags=[f"course:{course_id}"])


def course_seats_taken(course_id: str) -> Projection[int]:
    return Projection(0, {StudentSubscribed: lambda n, _: n + 1}, tags=[f"course:{course_id}"])


def student_courses(student_id: str) -> Projection[int]:
    return Projection(0, {StudentSubscribed: lambda n, _: n + 1}, tags=[f"student:{student_id}"])


def subscribed(student_id: str, course_id: str) -> NewEvent:
    return NewEvent(
        StudentSubscribed(student_id, course_id), tags=[f"student:{student_id}", f"course:{course_id}"]
    )


def defined(course_id: str, capacity: int) -> NewEvent:
    return NewEvent(CourseDefined(course_id, capacity), tags=[f"course:{course_id}"])


async def subscribe(store: EventStore, student_id: str, course_id: str) -> AppendResult:
    """The course-subscription command handler, written with a decision model of three projections."""
    model = await build_decision_model(
        store,
        capacity=course_capacity(course_id),
        taken=course_seats_taken(course_id),
        courses=student_courses(student_id),
    )
    if model["taken"] >= model["capacity"]:
        raise CourseFull(course_id)
    if model["courses"] >= 2:
        raise TooManyCourses(student_id)
    return await store.append_events([subscribed(student_id, course_id)], condition=model.condition)


@pytest.fixture
async def store() -> Any:
    async with MemoryEventStore(registry=REGISTRY) as s:
        yield s


async def test_each_projection_folds_only_its_own_events(store: EventStore) -> None:
    """A subscription of another student to the course counts for the course, not for the student."""
    for e in (defined("c1", 3), defined("c2", 3), subscribed("s1", "c1"), subscribed("s2", "c1")):
        await store.append_events([e])
    await store.append_events([subscribed("s2", "c2")])
    model = await build_decision_model(
        store, capacity=course_capacity("c1"), taken=course_seats_taken("c1"), courses=student_courses("s2")
    )
    assert dict(model.states) == {"capacity": 3, "taken": 2, "courses": 2}
    assert model.condition.after == (await store.head()).position
    assert len(model.condition.fail_if_events_match.items) == 3


async def test_the_condition_fails_on_what_the_model_read_and_only_on_that(store: EventStore) -> None:
    """An event any projection would fold fails the model's condition; an unrelated one does not."""
    await store.append_events([defined("c1", 5)])
    model = await build_decision_model(store, taken=course_seats_taken("c1"), courses=student_courses("s1"))
    await store.append_events([subscribed("s9", "c2")])  # another course, another student
    await store.append_events([defined("c3", 1)])
    result = await store.append_events([subscribed("s1", "c1")], condition=model.condition)
    stale = await build_decision_model(store, courses=student_courses("s1"))
    await store.append_events([subscribed("s1", "c3")])
    with pytest.raises(AppendConditionFailed) as failed:
        await store.append_events([subscribed("s1", "c4")], condition=stale.condition)
    assert failed.value.position == result.position + 1


async def test_racing_for_the_last_seat_one_student_gets_it(store: EventStore) -> None:
    """Eight handlers race for a one-seat course: one lands, the others fail or find it full."""
    await store.append_events([defined("c1", 1)])
    outcomes = await asyncio.gather(
        *(subscribe(store, f"s{i}", "c1") for i in range(8)), return_exceptions=True
    )
    assert sum(isinstance(o, AppendResult) for o in outcomes) == 1
    assert all(isinstance(o, AppendResult | AppendConditionFailed | CourseFull) for o in outcomes)


async def test_a_scenario_passes_on_the_expected_events_and_tags() -> None:
    """then() returns the appended events when their data and tags are the expected ones."""
    [e] = await (
        given_events(defined("c1", 2), registry=REGISTRY)
        .when(lambda store: subscribe(store, "s1", "c1"))
        .then(subscribed("s1", "c1"))
    )
    assert e.tags == ("student:s1", "course:c1")


async def test_a_scenario_fails_on_other_tags() -> None:
    """then() fails when the data matches but the tags do not."""
    scenario = given_events(defined("c1", 2), registry=REGISTRY).when(
        lambda store: subscribe(store, "s1", "c1")
    )
    with pytest.raises(AssertionError, match="other events than expected"):
        await scenario.then(StudentSubscribed("s1", "c1"))


async def test_a_scenario_sees_the_rule_refuse() -> None:
    """then_raises() passes when the handler refuses, and fails when it appends instead."""
    full = (defined("c1", 1), subscribed("s1", "c1"))
    await (
        given_events(*full, registry=REGISTRY)
        .when(lambda s: subscribe(s, "s2", "c1"))
        .then_raises(CourseFull)
    )
    courses = (defined("c1", 5), defined("c2", 5), defined("c3", 5))
    busy = (*courses, subscribed("s1", "c1"), subscribed("s1", "c2"))
    await (
        given_events(*busy, registry=REGISTRY)
        .when(lambda s: subscribe(s, "s1", "c3"))
        .then_raises(TooManyCourses, match="s1")
    )
    with pytest.raises(AssertionError, match="expected CourseFull, but the handler appended"):
        await (
            given_events(defined("c1", 2), registry=REGISTRY)
            .when(lambda s: subscribe(s, "s2", "c1"))
            .then_raises(CourseFull)
        )


async def test_a_scenario_needs_a_handler() -> None:
    """then() without when() is a clear error, not a pass."""
    with pytest.raises(AssertionError, match="when"):
        await given_events(registry=REGISTRY).then()


async def test_bad_projections_are_refused(store: EventStore) -> None:
    """A projection without handlers, with a bad tag, or none at all, raises InvalidInput."""
    with pytest.raises(InvalidInput, match="handlers"):
        Projection(0, {})
    with pytest.raises(InvalidInput, match="tag"):
        Projection(0, {CourseDefined: lambda s, _: s}, tags=[""])
    with pytest.raises(InvalidInput, match="at least one"):
        await build_decision_model(store)


class MemoryStoreWithoutDCB(MemoryEventStore):
    """A store of a backend without DCB support (every backend of eventvault has it)."""

    supports_dcb = False


async def test_a_backend_without_dcb_says_so_and_writes_nothing() -> None:
    """Without DCB: query reads, conditional appends and tagged stream appends raise DCBNotSupported."""
    async with MemoryStoreWithoutDCB(registry=REGISTRY) as store:
        with pytest.raises(DCBNotSupported, match="memory"):
            await store.read(Query.all())
        with pytest.raises(DCBNotSupported, match="memory"):
            await store.append_events([defined("c1", 1)])
        with pytest.raises(NotImplementedError):
            await store.append("course-1", [defined("c1", 1)], expected_version=NO_STREAM)
        assert (await store.head()).position == 0
        await store.append("course-1", [CourseDefined("c1", 1)], expected_version=NO_STREAM)
        assert (await store.head()).position == 1
