#!/usr/bin/env bash
# Where a ping's time goes (issue #13, target 1): the round-trip time of a
# ping every 2 ms between two pods, through the Linux bridge and through
# each userbridge binary given, alternating, ROUNDS rounds. Prints
# percentiles, not only the average: a wake-up on another, halted CPU shows
# as a second mode.
#   bash benches/lab/ping.sh [BIN...]      (as root; default target/release/userbridge)
#   ROUNDS=6 COUNT=1000 TRACE=1 bash benches/lab/ping.sh /tmp/a /tmp/b
# An argument with a space is a command run in the switch's namespace, its
# ports named {P1} and {P2}, e.g. '/tmp/relay poll {P1} {P2}'
# (benches/lab/relay-probe/).
# PING_CPU=N runs the pinging process on CPU N only.
# For each switch other than the bridge it also prints the CPU time its
# process spent per round trip (`perf stat -e task-clock` during the ping:
# both hops, the answering pod's softirq included, as it runs in the thread
# that sends into its veth).
# TRACE=1 also records scheduler and xmit events with `perf` during each
# userbridge round and splits every round trip into its two hops through
# the switch: the time from the pod's send to the switch's send on the other
# port (hop 1), then to the switch's send of the answer (hop 2), by whether
# the port's thread ran on the CPU its frame came from.
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/lab/pods.sh
ROUNDS=${ROUNDS:-3}
COUNT=${COUNT:-1000}
TRACE=${TRACE:-0}
PIN=(); [ -z "${PING_CPU:-}" ] || PIN=(taskset -c "$PING_CPU")
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=(target/release/userbridge)
[ -x target/release/userbridge ] || [ "${BINS[0]}" != target/release/userbridge ] || cargo build --release --quiet
N=ubping$$
SOCK=/tmp/$N.sock
DPID=""
down() {
  if [ -n "$DPID" ]; then kill -TERM "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; fi
  DPID=""
  for n in a b sw; do ip netns del "$N-$n" 2>/dev/null || true; done
  rm -f "$SOCK" "/tmp/$N.perf" "/tmp/$N.stat"
}
trap down EXIT

# Pods a (10.79.0.1) and b (10.79.0.2), host ends pa and pb in $N-sw, joined
# by the bridge or by BIN.
up() {
  two_pods "$N" 10.79.0
  if [ "$1" = bridge ]; then
    ip -n "$N-sw" link add br0 type bridge
    ip -n "$N-sw" link set pa master br0
    ip -n "$N-sw" link set pb master br0
    ip -n "$N-sw" link set br0 up
  elif [[ "$1" == *" "* ]]; then
    local cmd=${1//\{P1\}/pa}
    ip netns exec "$N-sw" bash -c "exec ${cmd//\{P2\}/pb}" &
    DPID=$!
  else
    ip netns exec "$N-sw" "$1" run --port pa --port pb --socket "$SOCK" --log-level warn &
    DPID=$!
    for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
    [ -S "$SOCK" ] || { echo "ping.sh: $1 did not start"; exit 1; }
  fi
  for _ in $(seq 10); do ip netns exec "$N-a" ping -c 1 -W 1 -q 10.79.0.2 >/dev/null && break; done
  ip netns exec "$N-a" ping -c 3 -W 2 -q 10.79.0.2 >/dev/null || { echo "ping.sh: no first ping through $1"; exit 1; }
}

percentiles() {
  python3 -c '
import re, sys
a = sorted(float(m.group(1)) for m in re.finditer(r"time=([\d.]+)", sys.stdin.read()))
n = len(a)
if n == 0: sys.exit("no replies")
print("replies %d  p10 %.0f  p50 %.0f  p75 %.0f  p90 %.0f  avg %.0f us" % (n, 1e3*a[n//10], 1e3*a[n//2], 1e3*a[n*3//4], 1e3*a[n*9//10], 1e3*sum(a)/n))'
}

# Each round trip from the trace: pod a's send on eth0, the switch's send on
# pb (hop 1), its send of the answer on pa (hop 2), with their CPUs.
hops() {
  perf script -i "/tmp/$N.perf" -F comm,cpu,time,event,trace 2>/dev/null | python3 -c '
import re, statistics, sys
ev = []
for l in sys.stdin:
    m = re.match(r"\s*(\S+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s+(.*)", l)
    if m and m.group(4) == "net:net_dev_xmit":
        dev = re.search(r"dev=(\S+)", m.group(5)).group(1)
        ev.append((m.group(1), int(m.group(2)), float(m.group(3)), dev))
kinds = {}
cpus = []
for i, (comm, cpu, t, dev) in enumerate(ev):
    if comm != "ping" or dev != "eth0":
        continue
    cpus.append(cpu)
    h1 = next((e for e in ev[i+1:i+20] if e[3] == "pb"), None)
    h2 = h1 and next((e for e in ev[i+1:i+20] if e[3] == "pa" and e[2] >= h1[2]), None)
    if h2:
        k = ("hop 1 " + ("same CPU" if h1[1] == cpu else "other CPU"), "hop 2 " + ("same CPU" if h2[1] == h1[1] else "other CPU"))
        kinds.setdefault(k[0], []).append(1e6 * (h1[2] - t))
        kinds.setdefault(k[1], []).append(1e6 * (h2[2] - h1[2]))
for k in sorted(kinds):
    v = kinds[k]
    print("    %-16s %5d round trips, median %5.1f us" % (k, len(v), statistics.median(v)))
print("    the pinging process moved CPU %d times in %d round trips" % (sum(a != b for a, b in zip(cpus, cpus[1:])), len(cpus)))'
}

for r in $(seq 1 "$ROUNDS"); do
  for b in bridge "${BINS[@]}"; do
    up "$b"
    if [ "$TRACE" = 1 ] && [ "$b" != bridge ]; then
      perf record -q -a -e sched:sched_switch,net:net_dev_xmit -o "/tmp/$N.perf" -- \
        ip netns exec "$N-a" "${PIN[@]}" ping -c "$COUNT" -i 0.002 10.79.0.2 2>/dev/null | percentiles | sed "s|^|round $r $b: |"
      hops
    elif [ "$b" != bridge ]; then
      perf stat -x, -e task-clock -p "$DPID" -o "/tmp/$N.stat" -- \
        ip netns exec "$N-a" "${PIN[@]}" ping -c "$COUNT" -i 0.002 10.79.0.2 | percentiles | sed "s|^|round $r $b: |" | tr -d '\n'
      awk -F, -v n="$COUNT" '$3 == "task-clock" { cpu = sprintf("  switch CPU %.1f us per round trip", 1000 * $1 / n) } END { print cpu }' "/tmp/$N.stat"
    else
      ip netns exec "$N-a" "${PIN[@]}" ping -c "$COUNT" -i 0.002 10.79.0.2 | percentiles | sed "s|^|round $r $b: |"
    fi
    down
  done
done
