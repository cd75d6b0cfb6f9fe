#!/usr/bin/env bash
# Benchmark: a spike of new calls against a full agent, and what it does to the calls up.
#
#   bench/spike.sh CAPACITY                    (e.g. 1000)
#   KEEP=1 bench/spike.sh …                    keeps the state dir, logs and both JSON documents
#   SPIKE_RATE=2000 SPIKE_SECONDS=10 FILL_RATE=200 BEFORE=5 AFTER=10 bench/spike.sh …
#
# Builds `ccedge` and `firmware-sim` in release mode (once) and starts `ccedge agent` on
# loopback with `sip.max_calls = CAPACITY`. A first `firmware-sim calls` process fills it with
# CAPACITY listening calls that send RTP back (50 packets/s each, as real gateways do) and
# records their pacing deviation per second (`--series-ms 1000`, kernel receive timestamps).
# Once every call is up and BEFORE seconds have passed, a second process places
# SPIKE_RATE × SPIKE_SECONDS new calls at SPIKE_RATE calls/s (`--expect-refusals`: the agent
# is full, a 503 is the right answer). The first process holds its calls AFTER seconds past
# the spike's last INVITE.
#
# Prints one JSON line: the spike's 503 count, how many carried Retry-After, its INVITE → 503
# latency (p50/p99/max), its timeouts (should be 0) and other failures; the first process's
# loss, overall pacing and pacing p99/max per second labelled ramp/before/during/after
# (seconds relative to the spike's first INVITE), and the load generator's own CPU while the
# calls were up before the spike. Exits 1 when a listening call failed or a spike INVITE got
# no final response.
set -euo pipefail
cd "$(dirname "$0")/.."
CAPACITY=${1:?usage: bench/spike.sh CAPACITY}
SPIKE_RATE=${SPIKE_RATE:-2000}
SPIKE_SECONDS=${SPIKE_SECONDS:-10}
SPIKE_CALLS=$(( SPIKE_RATE * SPIKE_SECONDS ))
FILL_RATE=${FILL_RATE:-200}
BEFORE=${BEFORE:-5}
AFTER=${AFTER:-10}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p edge -p firmware-sim
BIN="$TARGET_DIR/release"
# CCEDGE_BIN=path/to/ccedge measures another agent binary (same-run before/after pairs).
AGENT_BIN=${CCEDGE_BIN:-$BIN/ccedge}
need_fds=$(( CAPACITY + 600 ))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need_fds" ]; then
  ulimit -n "$need_fds" 2>/dev/null ||
    echo "warning: the agent needs about $need_fds file descriptors; ulimit -n is $(ulimit -n)" >&2
fi
STATE=$(mktemp -d)
AGENT=""; FILL=""; SPIKE=""
cleanup() {
  [ -n "$SPIKE" ] && kill "$SPIKE" 2>/dev/null || true
  [ -n "$FILL" ] && kill "$FILL" 2>/dev/null || true
  bench_stop_agent
  if [ -n "${KEEP:-}" ]; then echo "state, agent log and load generator output kept in $STATE" >&2; else rm -rf "$STATE"; fi
}
trap cleanup EXIT
. bench/lib.sh
bench_start_agent $(( CAPACITY + 200 )) "max_calls = $CAPACITY"
RAMP=$(( CAPACITY / FILL_RATE + 2 ))
# The listening calls are held until at least AFTER seconds past the spike's last INVITE
# (more when the fill took less than RAMP seconds).
HOLD=$(( RAMP + 5 + BEFORE + SPIKE_SECONDS + AFTER ))
"$BIN/firmware-sim" calls --target "$SIP" --calls "$CAPACITY" --concurrency "$CAPACITY" \
  --hold "$HOLD" --rate "$FILL_RATE" --timeout 32 --rtp-back --series-ms 1000 --json \
  >"$STATE/fill.json" 2>"$STATE/fill.err" &
FILL=$!
for _ in $(seq $(( (RAMP + 10) * 10 ))); do
  [ "$(active)" -ge "$CAPACITY" ] && break
  kill -0 "$FILL" 2>/dev/null || break
  sleep 0.1
done
UP=$(date +%s.%N)
echo "calls up before the spike: $(active) of $CAPACITY" >&2
L0=$(ticks "$FILL"); W0=$(date +%s.%N)
sleep "$BEFORE"
L1=$(ticks "$FILL"); W1=$(date +%s.%N)
"$BIN/firmware-sim" calls --target "$SIP" --calls "$SPIKE_CALLS" --concurrency "$SPIKE_CALLS" \
  --hold 1 --rate "$SPIKE_RATE" --timeout 32 --expect-refusals --json \
  >"$STATE/spike.json" 2>"$STATE/spike.err" &
SPIKE=$!
SPIKE_CODE=0
wait "$SPIKE" || SPIKE_CODE=$?
SPIKE=""
echo "calls up after the spike: $(active) of $CAPACITY" >&2
FILL_CODE=0
wait "$FILL" || FILL_CODE=$?
FILL=""
[ "$SPIKE_CODE" -eq 0 ] || echo "the spike's firmware-sim calls exited $SPIKE_CODE" >&2
[ "$FILL_CODE" -eq 0 ] || echo "the listening calls' firmware-sim calls exited $FILL_CODE" >&2
python3 - "$CAPACITY" "$SPIKE_RATE" "$SPIKE_CALLS" "$UP" "$L0" "$L1" "$W0" "$W1" "$HZ" \
  "$STATE/fill.json" "$STATE/spike.json" "$FILL_CODE" "$SPIKE_CODE" <<'PY'
import json, sys
(cap, rate, spike_calls, up, l0, l1, w0, w1, hz, fill_path, spike_path, fill_code,
 spike_code) = sys.argv[1:]
def load(path):
    try:
        return json.load(open(path))
    except Exception as e:  # a process died: report what the other one saw
        return {"error": str(e)}
fill, spike = load(fill_path), load(spike_path)
up = float(up)
s0 = spike.get("started_unix_s")
s1 = s0 + int(spike_calls) / float(rate) if s0 is not None else None
series = []
phases = {}
t0 = fill.get("started_unix_s")
for w in ((fill.get("pacing_series") or {}).get("windows") or []):
    if t0 is None or s0 is None:
        break
    start = t0 + w["t_s"]
    end = start + fill["pacing_series"]["window_ms"] / 1000
    phase = ("ramp" if start < up else "before" if end <= s0 else
             "after" if start >= s1 else "during")
    series.append({"t_s": round(start - s0, 1) + 0.0, "phase": phase, "p99": w["p99"],
                   "max": w["max"], "samples": w["samples"]})
    if w["samples"]:
        p = phases.setdefault(phase, {"worst_p99": 0.0, "max": 0.0, "windows": 0})
        p["worst_p99"] = max(p["worst_p99"], w["p99"]); p["max"] = max(p["max"], w["max"])
        p["windows"] += 1
wall = float(w1) - float(w0)
refused = spike.get("refused_503") or {}
print(json.dumps({
  "capacity": int(cap), "spike_rate_cps": float(rate), "spike_invites": int(spike_calls),
  "spike": {
    "refused_503": refused.get("count"),
    "with_retry_after": refused.get("with_retry_after"),
    "retry_after_max_s": refused.get("retry_after_max_s"),
    "invite_to_503_ms": refused.get("latency_ms"),
    "answered": spike.get("answered"),
    "timeouts": (spike.get("failures") or {}).get("timeout", 0) if "error" not in spike else None,
    "failures": spike.get("failures"), "duration_s": spike.get("duration_s"),
    "ok": spike.get("ok"), "exit": int(spike_code), **({"error": spike["error"]} if "error" in spike else {}),
  },
  "listening": {
    "answered": fill.get("answered"), "failed": fill.get("failed"),
    "refused_503": (fill.get("refused_503") or {}).get("count"),
    "ended_by_agent": fill.get("ended_by_agent"),
    "rtp": fill.get("rtp"), "jitter_ms": fill.get("jitter_ms"),
    "timestamps": fill.get("timestamps"), "timestamps_fallback": fill.get("timestamps_fallback"),
    "rtp_back": fill.get("rtp_back"),
    "loadgen_core_percent": round(100 * (float(l1) - float(l0)) / int(hz) / wall, 2) if wall > 0 else None,
    "ok": fill.get("ok"), "exit": int(fill_code), **({"error": fill["error"]} if "error" in fill else {}),
  },
  "pacing_by_phase": phases,
  "pacing_p99_per_second": series,
}))
PY
timeouts=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("failures",{}).get("timeout",0))' "$STATE/spike.json" 2>/dev/null || echo 1)
[ "$FILL_CODE" -eq 0 ] && [ "$timeouts" -eq 0 ]
