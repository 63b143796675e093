#!/usr/bin/env bash
# Scale check: 128 pods on one daemon. Any-to-any ping on a sample of pairs,
# the daemon's RSS, and its idle CPU over 30 s (no traffic).
#   bash benches/lab/scale.sh [PODS]     (as root; default 128)
#   EXTRA='--readers 8' bash benches/lab/scale.sh   (more daemon options)
set -euo pipefail
cd "$(dirname "$0")/../.."
PODS=${1:-128}
BIN=${BIN:-target/release/userbridge}
[ -x "$BIN" ] || cargo build --release --quiet
NAME=ubscale$$
SOCK=/tmp/$NAME.sock
cleanup() { [ -n "${DPID:-}" ] && kill -TERM "$DPID" 2>/dev/null; wait 2>/dev/null || true; "$BIN" lab down --name "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT
t0=$(date +%s.%N)
"$BIN" lab up --pods "$PODS" --name "$NAME" >/dev/null
t1=$(date +%s.%N)
args=(); for i in $(seq 1 "$PODS"); do args+=(--port "ubp$i"); done
# shellcheck disable=SC2086 # EXTRA is words on purpose
"$BIN" run --netns "$NAME-sw" "${args[@]}" --socket "$SOCK" --log-level warn ${EXTRA:-} &
DPID=$!
for _ in $(seq 200); do [ -S "$SOCK" ] && break; sleep 0.1; done
echo "scale: $PODS pods built in $(python3 -c "print(round($t1-$t0,1))") s; daemon up"
ok=0; total=0
for i in $(seq 1 16); do
  a=$(( (i * 37) % PODS + 1 )); b=$(( (i * 91 + 7) % PODS + 1 )); [ "$a" = "$b" ] && b=$(( b % PODS + 1 ))
  total=$((total + 1))
  ip netns exec "$NAME-p$a" ping -c 2 -i 0.2 -W 1 -q "10.0.0.$b" >/dev/null 2>&1 && ok=$((ok + 1))
done
echo "scale: any-to-any ping on $total sampled pairs: $ok ok"
rss=$(awk '/^VmRSS:/{print $2}' /proc/$DPID/status)
echo "scale: daemon RSS $((rss / 1024)) MiB with $PODS ports, $(awk '/^Threads:/{print $2}' /proc/$DPID/status) threads"
hz=$(getconf CLK_TCK)
c0=$(awk '{print $14 + $15}' /proc/$DPID/stat); sleep 30; c1=$(awk '{print $14 + $15}' /proc/$DPID/stat)
echo "scale: idle CPU over 30 s: $(python3 -c "print(round(100 * ($c1 - $c0) / $hz / 30, 2))")% of one core"
[ "$ok" = "$total" ] || { echo "scale: FAILED: some pairs could not ping"; exit 1; }
