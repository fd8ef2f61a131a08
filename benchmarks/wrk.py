"""W8 with its load from wrk: a C load generator in a process of its own.

The harness's own client is Python on asyncio, in the harness's process: cheap,
but its CPU still competes with the server's on a small machine, and its
per-request overhead is in every latency. wrk (``apt-get install wrk``) costs a
fraction of that, so the server is the bottleneck of both phases. It runs for a
fixed time (``--wrk-seconds``) with one thread and as many connections as W8 has
clients; ``benchmarks/w8.lua`` builds the deposits and prints the result.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["SCRIPT", "WrkResult", "find_wrk", "run_wrk"]

SCRIPT: Final = Path(__file__).with_name("w8.lua")
_MARK: Final = "W8_WRK_RESULT "


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk phase: requests answered, in how long, and the latency quantiles wrk measured."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else float("inf")

    @classmethod
    def combined(cls, slices: Sequence[WrkResult]) -> WrkResult:
        """One phase measured in slices: their requests over their time.

        The p50 is the median of the slices' (the whole's lies between their
        smallest and largest); the p99 the largest slice's, which the whole's
        never exceeds (at most 1 % of each slice is slower than its own p99).
        """
        return cls(
            sum(s.requests for s in slices),
            sum(s.seconds for s in slices),
            statistics.median(s.p50_ms for s in slices),
            max(s.p99_ms for s in slices),
        )


def find_wrk() -> str | None:
    """The wrk program on PATH, or None."""
    return shutil.which("wrk")


async def run_wrk(  # noqa: PLR0913, PLR0917 - the program, the server, and the load
    wrk: str, port: int, mode: str, accounts: list[str], connections: int, seconds: int
) -> WrkResult:
    """Run one wrk phase (``deposit`` or ``noop``) against the server on ``port``; refuse any error."""
    args = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "30s",
        "-s",
        str(SCRIPT),
        f"http://127.0.0.1:{port}",
        "--",
        mode,
        *(accounts if mode == "deposit" else []),
    ]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    text = out.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith(_MARK)]
    if proc.returncode != 0 or not lines:
        why = text[-2000:] + err.decode(errors="replace")
        raise RuntimeError(f"wrk ({mode}) failed with status {proc.returncode}:\n{why}")
    result = json.loads(lines[-1][len(_MARK) :])
    errors = {k: v for k, v in result.items() if k.endswith(("_errors", "timeouts")) and v}
    if errors:
        raise RuntimeError(f"wrk ({mode}) saw errors {errors} in {result['requests']} requests:\n{text}")
    return WrkResult(
        result["requests"], result["duration_us"] / 1e6, result["p50_us"] / 1000, result["p99_us"] / 1000
    )
