#!/usr/bin/env bash
# Benchmark: N concurrent announcement calls from `firmware-sim calls` against the agent.
#
#   bench/loadgen.sh [CALLS] [HOLD_SECONDS] [RATE]     (defaults: 1000 calls, 60 s, 200 calls/s)
#   KEEP=1 bench/loadgen.sh …                          keeps the state dir and logs
#   MEDIA_RT=10 bench/loadgen.sh …                     media plane threads at SCHED_FIFO 10
#   RTP_BACK=0 bench/loadgen.sh …                      callers send no RTP (default 1: every
#                                                      call sends 50 packets/s back, as real
#                                                      gateways do)
#
# Builds `ccedge` and `firmware-sim` in release mode (once), starts `ccedge agent` on
# loopback with a fresh state dir, and lets `firmware-sim calls --script listen` place CALLS
# calls at RATE calls/s, all held HOLD_SECONDS, every one up at the same time. While all calls
# are up it samples the agent's (and the load generator's) /proc/<pid>/stat utime+stime and
# the agent's VmRSS, and the kernel's UDP receive-buffer drop counter (/proc/net/snmp), so a
# loss can be told apart from the load generator's own socket overflow. Prints one JSON line:
# the agent figures, then the load generator's summary (setup latency, 503 refusals, RTP loss,
# pacing deviation from kernel receive timestamps, the RTP it sent back).
# docs/BENCHMARKS.md explains the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${1:-1000}
HOLD=${2:-60}
RATE=${3:-200}
RTP_BACK=${RTP_BACK:-1}
BACK_FLAG=()
[ "$RTP_BACK" = 0 ] || BACK_FLAG=(--rtp-back)
TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p edge -p firmware-sim
BIN="$TARGET_DIR/release"
# CCEDGE_BIN=path/to/ccedge measures another agent binary (same-run before/after pairs).
AGENT_BIN=${CCEDGE_BIN:-$BIN/ccedge}
# The agent holds one descriptor per call (its RTP socket), plus a few of its own.
need_fds=$(( CALLS + 100 ))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need_fds" ]; then
  ulimit -n "$need_fds" 2>/dev/null ||
    echo "warning: the agent needs about $need_fds file descriptors (one per call); ulimit -n is $(ulimit -n): expect refused calls near $(( $(ulimit -n) - 100 ))" >&2
fi
STATE=$(mktemp -d)
AGENT=""; LOADGEN=""
cleanup() {
  [ -n "$LOADGEN" ] && kill "$LOADGEN" 2>/dev/null || true
  bench_stop_agent
  if [ -n "${KEEP:-}" ]; then echo "state, agent log and load generator output kept in $STATE" >&2; else rm -rf "$STATE"; fi
}
trap cleanup EXIT
. bench/lib.sh
bench_start_agent $(( CALLS + 200 ))
# MEDIA_RT=N: give the agent's media plane threads (ccedge-media-*) real-time priority N
# (SCHED_FIFO, `chrt`), as a unit with CPUSchedulingPolicy=fifo would; needs CAP_SYS_NICE.
if [ -n "${MEDIA_RT:-}" ]; then
  for t in /proc/"$AGENT"/task/*; do
    if grep -q '^ccedge-media' "$t/comm" 2>/dev/null; then chrt -f -p "$MEDIA_RT" "$(basename "$t")" >/dev/null; fi
  done
fi
if [ -n "${MEDIA_NICE:-}" ]; then
  for t in /proc/"$AGENT"/task/*; do
    if grep -q '^ccedge-media' "$t/comm" 2>/dev/null; then renice -n "$MEDIA_NICE" -p "$(basename "$t")" >/dev/null; fi
  done
fi
IDLE_RSS=$(rss_kb "$AGENT")
E0=$(rcvbuf_errors)
"$BIN/firmware-sim" calls --target "$SIP" --calls "$CALLS" --concurrency "$CALLS" \
  --hold "$HOLD" --rate "$RATE" --timeout 32 "${BACK_FLAG[@]}" --json \
  >"$STATE/loadgen.json" 2>"$STATE/loadgen.err" &
LOADGEN=$!
# All calls are up CALLS/RATE s after the first INVITE; measure in the middle of the hold.
RAMP=$(( CALLS / RATE + 3 ))
WINDOW=$(( HOLD - RAMP - 5 ))
[ "$WINDOW" -ge 5 ] || { echo "HOLD_SECONDS too short for $CALLS calls at $RATE/s" >&2; exit 1; }
sleep "$RAMP"
A0=$(active); T0=$(ticks "$AGENT"); L0=$(ticks "$LOADGEN"); W0=$(date +%s.%N)
sleep "$WINDOW"
T1=$(ticks "$AGENT"); L1=$(ticks "$LOADGEN"); W1=$(date +%s.%N); A1=$(active)
RSS=$(rss_kb "$AGENT")
echo "active calls at window start/end: $A0 / $A1" >&2
CODE=0
wait "$LOADGEN" || CODE=$?
LOADGEN=""
E1=$(rcvbuf_errors)
# Per-socket drops of the agent's SIP socket (the last column of /proc/net/udp).
SIP_PORT_HEX=$(printf '%04X' "${SIP##*:}")
SIP_DROPS=$(awk -v p=":$SIP_PORT_HEX" '$2 ~ p"$" {print $NF}' /proc/net/udp | head -1)
echo "agent SIP socket drops: ${SIP_DROPS:-unknown (agent gone)}" >&2
[ "$CODE" -eq 0 ] || echo "firmware-sim calls exited $CODE" >&2
python3 - "$CALLS" "$T0" "$T1" "$L0" "$L1" "$W0" "$W1" "$HZ" "$IDLE_RSS" "$RSS" "$A0" "$A1" \
  "$(( E1 - E0 ))" "$STATE/loadgen.json" <<'PY'
import json, sys
(calls, t0, t1, l0, l1, w0, w1, hz, idle, rss, a0, a1, rcvbuf, path) = sys.argv[1:]
calls = int(calls); hz = int(hz); wall = float(w1) - float(w0)
cpu_s = (float(t1) - float(t0)) / hz
lg_cpu_s = (float(l1) - float(l0)) / hz
core_pct = 100 * cpu_s / wall
try:
    lg = json.load(open(path))
except Exception as e:  # the load generator died: report what the agent did anyway
    lg = {"error": str(e)}
print(json.dumps({
  "calls": calls, "window_s": round(wall, 2), "active_at_window": [int(a0), int(a1)],
  "agent_cpu_s": round(cpu_s, 3), "agent_core_percent": round(core_pct, 2),
  "core_percent_per_call": round(core_pct / calls, 4),
  "cpu_ms_per_call_second": round(1000 * cpu_s / (calls * wall), 4),
  "idle_rss_kb": int(idle), "rss_kb": int(rss),
  "rss_kb_per_call": round((int(rss) - int(idle)) / calls, 1),
  "loadgen_core_percent": round(100 * lg_cpu_s / wall, 2),
  "udp_rcvbuf_errors": int(rcvbuf),
  "loadgen": {k: lg.get(k) for k in ("answered", "refused_503", "failed", "failures",
              "ended_by_agent", "peak_concurrent", "setup_ms", "rtp", "jitter_ms", "timestamps",
              "timestamps_fallback", "rtp_back", "ok", "error") if k in lg},
}))
PY
