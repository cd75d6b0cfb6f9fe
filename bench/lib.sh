# Sourced by the bench scripts: start and stop a release `ccedge agent` on loopback with a
# fresh state directory, and read its figures from /proc.
#
# Needs: STATE (a directory), AGENT_BIN (the binary). Sets AGENT (pid) and SIP (address).

# bench_start_agent PORTS [SIP_LINES]: the agent with PORTS RTP ports from a random base,
# sip.allow = 127.0.0.0/8, the rate limit out of the way (every call of a load generator comes
# from one address), SIP_LINES appended to [sip], and callers that never press a key kept
# listening (no-input timeout 60 s, 9 retries).
bench_start_agent() {
  local ports=$1 sip_lines=${2:-}
  local port_min=$(( 20000 + RANDOM % (65000 - 20000 - ports) ))
  cat > "$STATE/ccedge.toml" <<TOML
[node]
id = "bench"
site = "bench"
state_dir = "$STATE"
[sip]
listen = "127.0.0.1:0"
allow = ["127.0.0.0/8"]
rate_limit_per_source = 100000
$sip_lines
[rtp]
port_min = $port_min
port_max = $(( port_min + ports ))
[ivr]
no_input_timeout_ms = 60000
max_retries = 9
[log]
level = "info"
TOML
  RUST_LOG=info "$AGENT_BIN" agent --config "$STATE/ccedge.toml" 2>"$STATE/agent.log" &
  AGENT=$!
  for _ in $(seq 100); do grep -q "accepting calls" "$STATE/agent.log" 2>/dev/null && break; sleep 0.05; done
  SIP=$(grep -o 'sip=[0-9.:]*' "$STATE/agent.log" | head -1 | cut -d= -f2 || true)
  [ -n "$SIP" ] || { echo "the agent did not start:" >&2; cat "$STATE/agent.log" >&2; exit 1; }
}

# bench_stop_agent: SIGTERM, then SIGKILL after 5 s (a saturated agent may not get to it).
bench_stop_agent() {
  if [ -n "${AGENT:-}" ]; then
    kill "$AGENT" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$AGENT" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$AGENT" 2>/dev/null || true
  fi
}

# CPU ticks (utime + stime) of pid $1; divide by HZ.
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
# Resident memory of pid $1, kB.
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
# The kernel's count of UDP datagrams dropped for full receive buffers (all sockets).
rcvbuf_errors() { awk '/^Udp:/{n++; if(n==1){for(i=1;i<=NF;i++) if($i=="RcvbufErrors") c=i} else print $c}' /proc/net/snmp; }
# Calls up, from the agent's log.
active() { echo $(( $(grep -c 'call.offered' "$STATE/agent.log") - $(grep -c 'call.ended' "$STATE/agent.log") )); }
