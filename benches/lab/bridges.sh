#!/usr/bin/env bash
# Many bridges on one daemon: B bridges of P pods each (default 32 x 4), every
# bridge with its own host port (the pods' gateway) in a node namespace. Every
# pod pings each pod of its bridge and its gateway; then the daemon's RSS,
# threads and idle CPU over 30 s, to set beside scale.sh's one bridge.
#   bash benches/lab/bridges.sh [BRIDGES] [PODS_PER_BRIDGE]     (as root)
set -euo pipefail
cd "$(dirname "$0")/../.."
BRIDGES=${1:-32}
PER=${2:-4}
PODS=$((BRIDGES * PER))
BIN=${BIN:-target/release/userbridge}
[ -x "$BIN" ] || cargo build --release --quiet
NAME=ubbrs$$
SOCK=/tmp/$NAME.sock
STATE=/tmp/$NAME.state
cleanup() {
  [ -n "${DPID:-}" ] && kill -TERM "$DPID" 2>/dev/null
  wait 2>/dev/null || true
  "$BIN" lab down --name "$NAME" >/dev/null 2>&1 || true
  ip netns del "$NAME-node" 2>/dev/null || true
  rm -rf "$STATE" "$SOCK"
}
trap cleanup EXIT
"$BIN" lab up --pods "$PODS" --name "$NAME" >/dev/null
ip netns add "$NAME-node"
ip netns exec "$NAME-node" "$BIN" run --netns "$NAME-sw" --socket "$SOCK" --state-dir "$STATE" \
  --remove-bridges --log-level warn ${EXTRA:-} &
DPID=$!
for _ in $(seq 200); do [ -S "$SOCK" ] && break; sleep 0.1; done
ub() { "$BIN" "$@" --socket "$SOCK" >/dev/null; }
# Bridge k (0-based) is ubr<k>, gateway 10.1.k.254/24; its pods j = k*PER+1..
# take 10.1.k.1.. on their eth0.
t0=$(date +%s.%N)
for k in $(seq 0 $((BRIDGES - 1))); do
  ub bridge add "ubr$k" --address "10.1.$k.254/24"
  for m in $(seq 1 "$PER"); do
    j=$((k * PER + m))
    ub port add "ubp$j" master "ubr$k"
    ip -n "$NAME-p$j" addr flush dev eth0
    ip -n "$NAME-p$j" addr add "10.1.$k.$m/24" dev eth0
  done
done
t1=$(date +%s.%N)
echo "bridges: $BRIDGES bridges of $PER pods made in $(python3 -c "print(round($t1-$t0,1))") s"
# Every pod: each other pod of its bridge, and its gateway (in parallel, a pod at a time each).
results=$(mktemp)
pids=()
for k in $(seq 0 $((BRIDGES - 1))); do
  for m in $(seq 1 "$PER"); do
    j=$((k * PER + m))
    (
      for t in $(seq 1 "$PER") 254; do
        [ "$t" = "$m" ] && continue
        if ip netns exec "$NAME-p$j" ping -c 1 -W 2 -q "10.1.$k.$t" >/dev/null 2>&1; then echo ok; else echo "lost p$j->10.1.$k.$t"; fi
      done >>"$results"
    ) &
    pids+=($!)
  done
done
wait "${pids[@]}"
ok=$(grep -c '^ok$' "$results" || true)
echo "bridges: $ok of $((PODS * PER)) pings answered (each pod to its bridge's $((PER - 1)) others and its gateway)"
grep -v '^ok$' "$results" | head -5 || true
rm -f "$results"
rss=$(awk '/^VmRSS:/{print $2}' /proc/$DPID/status)
echo "bridges: daemon RSS $((rss / 1024)) MiB with $BRIDGES bridges, $PODS pods and $BRIDGES host ports, $(awk '/^Threads:/{print $2}' /proc/$DPID/status) threads"
hz=$(getconf CLK_TCK)
# New interfaces solicit routers and report multicast for their first minute:
# idle is measured after that (SETTLE seconds).
sleep "${SETTLE:-60}"
c0=$(awk '{print $14 + $15}' /proc/$DPID/stat); sleep 30; c1=$(awk '{print $14 + $15}' /proc/$DPID/stat)
echo "bridges: idle CPU over 30 s: $(python3 -c "print(round(100 * ($c1 - $c0) / $hz / 30, 2))")% of one core"
[ "$ok" = $((PODS * PER)) ] || { echo "bridges: FAILED: some pings were not answered"; exit 1; }
