#!/usr/bin/env bash
# Benchmarks of the CRM path and the node's start-up, each printing one JSON line:
#
#   bench/crm.sh
#
#   outbox_drain               events sequenced while the broker is down, then drained in seq
#                              order once it is back (CCEDGE_BENCH_EVENTS, default 20,000)
#   callback_booking           durable (fsync) callback bookings through the store's thread,
#                              one at a time and 50 at once (CCEDGE_BENCH_BOOKINGS, 2,000;
#                              CCEDGE_BENCH_DIR: put it on the disk the state dir would use)
#   announcement_takes_effect  a retained announcement published → the engine selects it
#                              (CCEDGE_BENCH_ROUNDS, 50), then a call hears the last version
#   event_to_crm               a CallEvent's `at` → the CRM stand-in receives it, 200 calls
#                              (CCEDGE_BENCH_CALLS)
#   start_to_accepting_calls   spawning the agent → its first answered SIP OPTIONS
#                              (CCEDGE_BENCH_STARTS, 20)
#   binary                     the stripped release `ccedge` binary's size
#
# Needs Mosquitto (/usr/sbin/mosquitto) and sipp; everything runs on loopback, release builds.
# docs/BENCHMARKS.md §4 explains the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
for t in /usr/sbin/mosquitto sipp openssl; do
    command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }
done
run() {
    cargo test --release -q -p "$1" "${@:2}" -- --ignored --nocapture --test-threads 1 2>/dev/null \
        | grep -o '{"bench".*'
}
run edge --lib bench_outbox_drain_after_an_outage
run edge --lib bench_callback_booking_latency
run ccedge-tests --test bench_crm
cargo build --release -q -p edge
bytes=$(stat -c %s target/release/ccedge)
printf '{"bench":"binary","path":"target/release/ccedge","bytes":%s,"mib":%s}\n' \
    "$bytes" "$(awk -v b="$bytes" 'BEGIN { printf "%.2f", b / 1048576 }')"
