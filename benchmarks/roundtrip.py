"""``python -m benchmarks.roundtrip``: export and import a large log, with the memory they take.

Fills a SQLite store with N events (100 per append, across 1,000 streams), then
exports it (gzip), imports the file into a second SQLite store, exports that one
and compares the two files byte for byte. Prints time, rate and the growth of
resident memory over the RSS after the fill, sampled at every progress report
(each page): export and import stream in pages, so it stays flat however large N.

    nice -n 10 .venv/bin/python -m benchmarks.roundtrip --events 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from eventvault import EventRegistry, NewEvent, export_events, import_events
from eventvault.domain import event
from eventvault.store.sqlite import SQLiteEventStore

REGISTRY = EventRegistry()


@event("bench.Noted", registry=REGISTRY)
@dataclass(frozen=True, slots=True)
class Noted:
    """A small event with a little text."""

    n: int
    text: str


def rss_mb() -> float:
    """The process's resident set size now, in MB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Peak:
    """The largest RSS seen by the progress callbacks."""

    def __init__(self) -> None:
        self.mb = rss_mb()

    def __call__(self, _done: int, _total: int | None) -> None:
        """A progress report: sample the RSS."""
        self.mb = max(self.mb, rss_mb())


def digest(path: Path) -> str:
    """The file's SHA-256, read in chunks (the comparison must not hold the files in memory)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


async def fill(store: SQLiteEventStore, events: int) -> None:
    """Append ``events`` events, 100 per append, round-robin over 1,000 streams."""
    per_append, streams = 100, 1000
    n = 0
    version = [0] * streams
    while n < events:
        s = (n // per_append) % streams
        count = min(per_append, events - n)
        batch = [NewEvent(Noted(n + i, f"note {n + i}")) for i in range(count)]
        await store.append(f"note-{s}", batch, expected_version=version[s])
        version[s] += count
        n += count


async def run(events: int, folder: Path) -> dict[str, float]:
    """Fill, export, import, export again; the figures."""
    source = await SQLiteEventStore(str(folder / "source.db"), registry=REGISTRY).open()
    target = await SQLiteEventStore(str(folder / "target.db"), registry=REGISTRY).open()
    try:
        started = time.perf_counter()
        await fill(source, events)
        filled = time.perf_counter() - started
        base = rss_mb()
        peak = Peak()
        first, again = folder / "first.jsonl.gz", folder / "again.jsonl.gz"
        t0 = time.perf_counter()
        exported = await export_events(source, first, progress=peak)
        t1 = time.perf_counter()
        imported = await import_events(target, first, progress=peak)
        t2 = time.perf_counter()
        await export_events(target, again, progress=peak)
        assert imported.imported == exported.events == events  # noqa: S101 - the check itself
        identical = digest(first) == digest(again)
    finally:
        await source.close()
        await target.close()
    return {
        "events": events,
        "fill_s": round(filled, 1),
        "export_s": round(t1 - t0, 1),
        "export_events_per_s": round(events / (t1 - t0)),
        "import_s": round(t2 - t1, 1),
        "import_events_per_s": round(events / (t2 - t1)),
        "file_mb": round(first.stat().st_size / 2**20, 1),
        "rss_before_mb": round(base, 1),
        "rss_growth_mb": round(peak.mb - base, 1),
        "byte_identical": identical,
    }


def main(argv: list[str] | None = None) -> int:
    """Run once; exit 1 if the files differ or RSS grew past --limit-mb."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.roundtrip", description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--limit-mb", type=float, default=100.0, help="Fail if RSS grows more than this.")
    parser.add_argument("--dir", type=Path, default=None, help="Folder for the databases (default: temp).")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="evt-roundtrip-", dir=args.dir) as folder:
        figures = asyncio.run(run(args.events, Path(folder)))
    print(json.dumps(figures))  # noqa: T201 - the report
    ok = figures["byte_identical"] and figures["rss_growth_mb"] < args.limit_mb
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
