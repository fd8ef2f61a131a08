#!/usr/bin/env bash
# W8 under wrk, with the server's CPU per request: where the time goes.
#
#   benchmarks/w8_cpu.sh DB_URL [SECONDS]
#
# Starts `eventvault serve` on DB_URL (a fresh SQLite file, or a PostgreSQL URL
# with ?schema=), opens 32 accounts, warms up, then runs wrk (1 thread, 32
# connections) for SECONDS (default 10) of deposits and SECONDS of GET /healthz,
# printing wrk's result and the CPU the server's main thread and its other
# threads used in each phase (from /proc, in clock ticks).
#
#   WORKER=1   run the projections in a worker process of the server's own
#              (serve --projection-workers 1)
#   SERVE_ARGS="..."  other options for `eventvault serve` instead (such as
#              --no-projections: the requests alone)
#   PROFILE=DIR  also sample the server with py-spy (pip install py-spy) into
#              DIR/deposit.txt and DIR/noop.txt (collapsed stacks, 200 Hz, each
#              under its thread)
#   GIL=1      with PROFILE: sample only the thread that holds the GIL (py-spy
#              --gil), so that a thread waiting for the GIL, or sleeping in C,
#              is not counted as busy: where the Python CPU goes
#   THREADS=1  also print each phase's CPU per thread, by thread name (the
#              names from `py-spy dump` at the end; a pool's numbered threads
#              are summed under one name)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
db=$1
secs=${2:-10}
py=.venv/bin/python
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }

cpu() { # "main other": utime+stime of the main thread and of all the others
  local main=0 other=0 v
  for t in /proc/"$1"/task/*; do
    v=$(awk '{print $14 + $15}' "$t/stat")
    if [ "${t##*/}" = "$1" ]; then main=$v; else other=$((other + v)); fi
  done
  echo "$main $other"
}

ticks() { # "tid ticks" for every thread
  for t in /proc/"$1"/task/*; do echo "${t##*/} $(awk '{print $14 + $15}' "$t/stat")"; done
}

port=$($py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
serve_args=()
[ -n "${WORKER:-}" ] && serve_args=(--projection-workers 1)
[ -n "${SERVE_ARGS:-}" ] && read -r -a serve_args <<<"$SERVE_ARGS"
$py -m eventvault_ledger.cli serve --db "$db" --host 127.0.0.1 --port "$port" "${serve_args[@]}" >/dev/null 2>&1 &
server=$!
tmp=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$tmp"' EXIT
until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do
  kill -0 $server 2>/dev/null || { echo "the server did not start" >&2; exit 1; }
  sleep 0.2
done
ids=()
for i in $(seq 1 32); do
  ids+=("$(curl -sf -X POST -H 'Content-Type: application/json' \
    -d "{\"ownerName\": \"Load $i\", \"currency\": \"EUR\"}" \
    "http://127.0.0.1:$port/api/command/accounts" | $py -c 'import json, sys; print(json.load(sys.stdin)["accountId"])')")
done
load() { wrk -t1 -c32 -d"$1"s -s benchmarks/w8.lua "http://127.0.0.1:$port" -- "$2" "${ids[@]}"; }
load 2 deposit >/dev/null
load 2 noop >/dev/null
for mode in deposit noop; do
  sampler=""
  if [ -n "${PROFILE:-}" ]; then
    mkdir -p "$PROFILE"
    py-spy record ${GIL:+--gil} --nonblocking --threads -r 200 -d "$secs" -f raw -o "$PROFILE/$mode.txt" --pid $server >/dev/null 2>&1 &
    sampler=$!
  fi
  before=$(cpu $server)
  [ -n "${THREADS:-}" ] && ticks $server >"$tmp/$mode.before"
  result=$(load "$secs" $mode | grep W8_WRK_RESULT)
  [ -n "${THREADS:-}" ] && ticks $server >"$tmp/$mode.after"
  after=$(cpu $server)
  [ -n "$sampler" ] && wait $sampler
  echo "$mode ${result#W8_WRK_RESULT } cpu ticks (main other) before $before after $after"
done
if [ -n "${THREADS:-}" ]; then
  spy=$(command -v py-spy || echo "$(dirname $py)/py-spy")
  "$spy" dump --pid $server | sed -n 's/^Thread \([0-9]*\) [^"]*"\(.*\)"$/\1 \2/p' >"$tmp/names"
  for mode in deposit noop; do
    echo "$mode cpu ticks by thread: $(
      $py - "$tmp/names" "$tmp/$mode.before" "$tmp/$mode.after" <<'PY'
import re, sys
names = dict(line.split(" ", 1) for line in open(sys.argv[1]).read().splitlines())
before = dict(line.split() for line in open(sys.argv[2]).read().splitlines())
by: dict[str, int] = {}
for line in open(sys.argv[3]).read().splitlines():
    tid, after = line.split()
    name = re.sub(r"_\d+$", "", names.get(tid, "?")).strip()
    by[name] = by.get(name, 0) + int(after) - int(before.get(tid, 0))
print(", ".join(f"{n} {t}" for n, t in sorted(by.items(), key=lambda kv: -kv[1]) if t))
PY
    )"
  done
fi
