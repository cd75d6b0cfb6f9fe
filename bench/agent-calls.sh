#!/usr/bin/env bash
# Benchmark: the agent's CPU and memory with N concurrent announcement calls from sipp.
#
#   bench/agent-calls.sh [CALLS] [CALL_SECONDS]      (defaults: 200 calls of 30 s)
#   CCEDGE_BIN=path/to/ccedge bench/agent-calls.sh …  measures that binary instead (same-run
#                                                      before/after pairs)
#
# Starts a release `ccedge agent` on loopback with a fresh state dir, lets sipp place CALLS
# calls at 50 calls/s that each listen for CALL_SECONDS, and samples the agent's
# /proc/<pid>/stat (utime+stime) and /proc/<pid>/status (VmRSS) while all calls are up.
# Prints one JSON line with the figures; docs/BENCHMARKS.md explains them.
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${1:-200}
SECS=${2:-30}
command -v sipp >/dev/null || { echo "needs sipp (apt-get install sip-tester)" >&2; exit 1; }
if [ -n "${CCEDGE_BIN:-}" ]; then AGENT_BIN=$CCEDGE_BIN; else
  cargo build --release -q -p edge; AGENT_BIN=${CARGO_TARGET_DIR:-target}/release/ccedge; fi
STATE=$(mktemp -d)
AGENT=""
trap 'bench_stop_agent; rm -rf "$STATE"' EXIT
. bench/lib.sh
bench_start_agent $(( CALLS * 2 + 100 ))
IDLE_RSS=$(rss_kb "$AGENT")
fds() { find "/proc/$AGENT/fd" -mindepth 1 2>/dev/null | wc -l; }
IDLE_FDS=$(fds)
sipp "$SIP" -sf bench/listen_media_port.xml -i 127.0.0.1 -m "$CALLS" -l "$CALLS" -r 50 \
  -d $(( SECS * 1000 )) -nostdin -timeout $(( SECS + 60 ))s -rtp_echo >/dev/null 2>"$STATE/sipp.err" &
SIPP=$!
# All calls are up after CALLS/50 s; measure over the middle of the hold time.
RAMP=$(( CALLS / 50 + 2 ))
WINDOW=$(( SECS - RAMP - 4 ))
[ "$WINDOW" -ge 5 ] || { echo "CALL_SECONDS too short for $CALLS calls" >&2; exit 1; }
sleep "$RAMP"
A0=$(active); T0=$(ticks "$AGENT"); W0=$(date +%s.%N)
sleep "$WINDOW"
T1=$(ticks "$AGENT"); W1=$(date +%s.%N); A1=$(active)
echo "active calls at window start/end: $A0 / $A1" >&2
RSS=$(rss_kb "$AGENT")
FDS=$(fds)
wait $SIPP || { echo "sipp reported failed calls:" >&2; tail -5 "$STATE/sipp.err" >&2; }
python3 - "$CALLS" "$T0" "$T1" "$W0" "$W1" "$HZ" "$IDLE_RSS" "$RSS" "$IDLE_FDS" "$FDS" <<'PY'
import json, sys
calls, t0, t1, w0, w1, hz, idle, rss, idle_fds, fds = sys.argv[1:]
calls = int(calls); cpu_s = (float(t1) - float(t0)) / int(hz); wall = float(w1) - float(w0)
core_pct = 100 * cpu_s / wall
print(json.dumps({
  "calls": calls, "window_s": round(wall, 2), "agent_cpu_s": round(cpu_s, 3),
  "agent_core_percent": round(core_pct, 2),
  "core_percent_per_call": round(core_pct / calls, 4),
  "cpu_ms_per_call_second": round(1000 * cpu_s / (calls * wall), 4),
  "idle_rss_kb": int(idle), "rss_kb": int(rss),
  "rss_kb_per_call": round((int(rss) - int(idle)) / calls, 1),
  "idle_fds": int(idle_fds), "fds": int(fds),
  "fds_per_call": round((int(fds) - int(idle_fds)) / calls, 2),
}))
PY
