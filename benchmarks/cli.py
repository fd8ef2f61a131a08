"""``python -m benchmarks`` (also ``eventvault bench``): run, then print a table or JSON lines."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from benchmarks.backends import open_backend
from benchmarks.plan import Sizes
from benchmarks.results import CONTENDERS, Results, TargetResult
from benchmarks.runner import DEFAULT_WORKLOADS, SOURCERY_MISSING, WORKLOADS, Config, run_backend
from benchmarks.wrk import find_wrk

__all__ = ["main"]

_POSTGRES_ENV = "EVENTVAULT_BENCH_POSTGRES"


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Measure eventvault against the eventsourcing library (the peer), Python Event Sourcery "
            "(the second peer) and the raw driver (the limit), in one run, on SQLite (synchronous=FULL) "
            "and PostgreSQL."
        ),
    )
    p.add_argument(
        "--backend",
        action="append",
        choices=("sqlite", "postgresql"),
        help="a backend to run (repeatable; default: sqlite, and postgresql when a server is given)",
    )
    p.add_argument(
        "--postgres",
        metavar="URL",
        default=os.environ.get(_POSTGRES_ENV),
        help=f"a PostgreSQL server (postgresql://user@host:port/db; default ${_POSTGRES_ENV}); "
        "a database is created on it for the run and dropped after",
    )
    p.add_argument(
        "--workload", action="append", choices=WORKLOADS, help="a workload to run (repeatable; default W1-W8)"
    )
    p.add_argument(
        "--runs", type=int, default=3, help="runs of each workload; medians are reported (default 3)"
    )
    p.add_argument(
        "--dcb",
        action="store_true",
        help="also run W9: conditional appends at 20,000 and 1,000,000 stored events (minutes)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per line instead of a table")
    p.add_argument("--tiny", action="store_true", help="tiny sizes: a smoke run of every code path")
    p.add_argument(
        "--growth", action="store_true", help="also check cost growth with 1,000,000 events stored (minutes)"
    )
    p.add_argument("--growth-only", action="store_true", help="run only the cost-growth check")
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where SQLite files and server logs go (default: a new directory in the system temp dir); "
        "it must be on a real disk, not tmpfs, for synchronous=FULL to mean anything",
    )
    p.add_argument("--keep", action="store_true", help="keep the databases and the work directory")
    p.add_argument(
        "--no-wrk",
        action="store_true",
        help="W8 with the harness's own client only (default: also with wrk, when it is on PATH)",
    )
    p.add_argument(
        "--no-second-peer",
        action="store_true",
        help="leave the second peer out (its W1 takes minutes per run); its column stays empty",
    )
    defaults = Sizes()
    for f in dataclasses.fields(Sizes):
        p.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=int,
            default=None,
            metavar="N",
            help=f"(default {getattr(defaults, f.name):,})",
        )
    return p


def _workloads(asked: list[str] | None, *, dcb: bool) -> tuple[str, ...]:
    """The workloads to run: those asked for (default W1-W8), and W9 with ``--dcb``."""
    chosen = list(asked or DEFAULT_WORKLOADS)
    if dcb and "W9" not in chosen:
        chosen.append("W9")
    return tuple(chosen)


def _filesystem(path: Path) -> str:
    """The file system type holding ``path`` (from /proc/mounts; '' if unknown)."""
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    best, kind = "", ""
    resolved = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) < 3 or len(parts[1]) < len(best):
            continue
        if resolved == parts[1] or resolved.startswith(parts[1].rstrip("/") + "/"):
            best, kind = parts[1], parts[2]
    return kind


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def _say(*parts: object, file: TextIO | None = None) -> None:
    """One line of output (a report is what this program is for)."""
    (file or sys.stdout).write(" ".join(str(p) for p in parts) + "\n")
    (file or sys.stdout).flush()


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value >= 100 else f"{value:,.3g}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def print_table(results: Results, out: TextIO, *, judged: bool = True) -> None:
    """The medians as a table, then the targets (``judged`` as in :func:`print_targets`)."""
    rows = results.rows()
    header = ("workload", "backend", "unit", *CONTENDERS, "ev/peer", "ev/sourcery", "ev/limit")
    lines = [header]
    lines.extend(
        (
            r["workload"],
            r["backend"],
            r["unit"],
            *(_fmt(r[c]) for c in CONTENDERS),
            *(
                (
                    _ratio(r["eventvault"], r["peer"]),
                    _ratio(r["eventvault"], r["sourcery"]),
                    _ratio(r["eventvault"], r["limit"]),
                )
                if r["unit"] != "ms"
                else ("", "", "")
            ),
        )
        for r in rows
    )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        cells = [
            str(c).ljust(w) if i < 3 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        _say("  ".join(cells), file=out)
        if n == 0:
            _say("  ".join("-" * w for w in widths), file=out)
    for check in results.checks:
        _say(json.dumps(check), file=out)
    _say(file=out)
    print_targets(results.targets(), out, judged=judged)


NOT_JUDGED = (
    "the targets are set for the default sizes, and this run used others (--tiny or a size option): "
    "its ratios are shown, not judged"
)


def print_targets(targets: list[TargetResult], out: TextIO, *, judged: bool = True) -> None:
    """Each target: the median ratio of this run, and whether it holds.

    ``judged=False`` (a run at other sizes than the defaults) shows each verdict
    in parentheses, under a line saying the targets do not apply.
    """
    if not targets:
        return
    if judged:
        _say("targets (median of per-run ratios):", file=out)
    else:
        _say(f"targets (median of per-run ratios), NOT JUDGED: {NOT_JUDGED}", file=out)
    for t in targets:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t.met]
        if not judged and t.met is not None:
            verdict = f"({verdict.lower()})"
        ratio = "-" if t.ratio is None else f"{t.ratio:.2f}"
        _say(f"  [{t.backend}] {t.target:<48} {ratio:>8} {t.comparison} {t.required:g}  {verdict}", file=out)


def main(argv: Sequence[str] | None = None, prog: str = "python -m benchmarks") -> int:
    """Run the benchmark; 0 when it ran (targets are reported, not enforced), 2 on bad usage.

    ``prog`` is the command's name in the help and usage lines.
    """
    parser = _parser(prog)
    args = parser.parse_args(argv)
    base = Sizes.tiny() if args.tiny else Sizes()
    overrides = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(Sizes) if getattr(args, f.name) is not None
    }
    if any(v < 1 for v in overrides.values()) or args.runs < 1:
        parser.error("sizes and --runs must be at least 1")
    sizes = dataclasses.replace(base, **overrides)
    backends = args.backend or (["sqlite", "postgresql"] if args.postgres else ["sqlite"])
    if "postgresql" in backends and not args.postgres:
        parser.error(f"the postgresql backend needs --postgres URL (or ${_POSTGRES_ENV})")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="eventvault-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    fs = _filesystem(workdir)
    if fs in ("tmpfs", "ramfs"):
        _say(
            f"warning: {workdir} is on {fs}: fsync costs nothing there, so durability is not measured",
            file=sys.stderr,
        )
    config = Config(
        sizes=sizes,
        workloads=() if args.growth_only else _workloads(args.workload, dcb=args.dcb),
        runs=args.runs,
        workdir=workdir,
        keep=args.keep,
        growth=args.growth or args.growth_only,
        wrk=None if args.no_wrk else find_wrk(),
        second_peer=not args.no_second_peer,
    )
    if "W8" in config.workloads and not args.no_wrk and config.wrk is None:
        _say(
            "warning: wrk is not on PATH (apt-get install wrk): W8 runs with the harness's own client only",
            file=sys.stderr,
        )
    _say(
        f"eventvault benchmark: {machine()}; work directory {workdir} ({fs or 'unknown fs'})", file=sys.stderr
    )
    if SOURCERY_MISSING is not None:
        _say(
            f"warning: the second peer (python-event-sourcery, the bench extra) is not installed "
            f"({SOURCERY_MISSING}): its column stays empty",
            file=sys.stderr,
        )
    results = Results()
    started = time.perf_counter()
    try:
        for name in backends:
            backend = open_backend(name, workdir, args.postgres)
            try:
                run_backend(backend, config, results)
            finally:
                backend.close()
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    _say(f"benchmark finished in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    _report(results, as_json=args.json, judged=sizes == Sizes())
    return 0


def _report(results: Results, *, as_json: bool, judged: bool) -> None:
    """The results on stdout: JSON lines, or the table and the targets."""
    if not judged:
        _say(f"note: {NOT_JUDGED}", file=sys.stderr)
    if as_json:
        for row in results.rows():
            _say(json.dumps(row))
        for check in results.checks:
            _say(json.dumps(check))
        for target in results.targets():
            _say(json.dumps(target.as_json()))
    else:
        print_table(results, sys.stdout, judged=judged)
