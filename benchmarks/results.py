"""Measurements, their medians, the JSON objects and the targets of the issue."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["CONTENDERS", "Results", "TargetResult"]

CONTENDERS: Final = ("eventvault", "peer", "sourcery", "limit")
"""eventvault, the eventsourcing library, Python Event Sourcery (the second peer), the raw driver."""


@dataclass(slots=True)
class _Series:
    unit: str
    samples: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TargetResult:
    """One target of the issue, as measured in this run."""

    target: str
    backend: str
    ratio: float | None
    required: float
    comparison: str = ">="

    @property
    def met(self) -> bool | None:
        """Whether the target holds (None: not measured in this run)."""
        if self.ratio is None or math.isnan(self.ratio):
            return None
        return self.ratio >= self.required if self.comparison == ">=" else self.ratio < self.required

    def as_json(self) -> dict[str, Any]:
        """The target as one JSON object."""
        return {
            "target": self.target,
            "backend": self.backend,
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "required": f"{self.comparison} {self.required:g}",
            "met": self.met,
        }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratios(a: list[float], b: list[float]) -> list[float]:
    """Per-run ratios: the runs of one workload are paired in the order they ran."""
    return [x / y for x, y in zip(a, b, strict=False) if y > 0]


# The targets: (workload, numerator, denominator workload, denominator, minimum, backends).
_TARGETS: Final = (
    ("W1", "eventvault", "W1", "limit", 0.8, None),
    ("W2", "eventvault", "W2", "limit", 0.7, None),
    ("W3", "eventvault", "W3", "peer", 3.0, None),
    ("W4", "eventvault", "W4", "peer", 2.0, None),
    ("W5", "eventvault", "W5", "peer", 3.0, None),
    ("W5 snapshot", "eventvault", "W5 snapshot", "peer", 1.0, None),
    ("W6", "eventvault", "W6", "limit", 0.5, None),
    ("W7", "eventvault", "W1", "eventvault", 5.0, "sqlite"),
    ("W7", "eventvault", "W1", "eventvault", 3.0, "postgresql"),
    ("W7", "eventvault", "W7", "peer", 2.0, "postgresql"),
    ("W8", "eventvault", "W8", "limit", 0.4, None),
    ("W8 wrk", "eventvault", "W8 wrk", "limit", 0.5, None),
    ("W8 wrk workers", "eventvault", "W8 wrk workers", "limit", 0.5, None),
)


class Results:
    """Every measurement of a run, by workload and backend, in the order they were taken."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], _Series] = {}
        self.checks: list[dict[str, Any]] = []
        """Cost-growth and memory checks (objects of their own, not workloads)."""
        self._check_targets: list[TargetResult] = []

    def add(self, workload: str, backend: str, unit: str, contender: str, value: float) -> None:
        """Record one run of one contender."""
        series = self._series.setdefault((workload, backend), _Series(unit))
        series.samples.setdefault(contender, []).append(value)

    def samples(self, workload: str, backend: str, contender: str) -> list[float]:
        """The runs of one contender, in order."""
        series = self._series.get((workload, backend))
        return [] if series is None else list(series.samples.get(contender, []))

    def add_check(self, check: dict[str, Any], target: TargetResult | None = None) -> None:
        """Record a check (growth, memory) and the target it decides."""
        self.checks.append(check)
        if target is not None:
            self._check_targets.append(target)

    def rows(self) -> list[dict[str, Any]]:
        """One object per workload and backend: the median of each contender's runs."""
        out = []
        for (workload, backend), series in self._series.items():
            row: dict[str, Any] = {"workload": workload, "backend": backend, "unit": series.unit}
            for contender in CONTENDERS:
                value = _median(series.samples.get(contender, []))
                row[contender] = None if value is None else round(value, 3)
            out.append(row)
        return out

    def targets(self) -> list[TargetResult]:
        """The issue's targets as medians of the per-run ratios of this run."""
        backends = sorted({b for _, b in self._series}, key=lambda b: (b != "sqlite", b))
        out = []
        for backend in backends:
            for workload, num, den_workload, den, minimum, only in _TARGETS:
                if only is not None and only != backend:
                    continue
                a = self.samples(workload, backend, num)
                b = self.samples(den_workload, backend, den)
                if not a or not b:
                    continue
                name = f"{workload} {num} / {den_workload} {den}"
                out.append(TargetResult(name, backend, _median(_ratios(a, b)), minimum))
        out.extend(self._check_targets)
        return out
