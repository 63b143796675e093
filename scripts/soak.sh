#!/usr/bin/env bash
# Soak: one daemon under mixed load for SECS seconds (default 600): TCP
# (iperf3, default offloads) between pods 1 and 2, 64-byte UDP bursts
# (trafgen) from pod 3 to pod 4, and churn: a pod created, hot-added, pinged,
# removed, its namespace deleted, over and over; meanwhile pods 5 and 6, not
# part of any load, ping each other. The daemon's RSS, open fds and threads
# are sampled every second into a CSV; the run fails if, after a 10 s
# warm-up, RSS outside the packet rings grows by more than 16 MiB (a busy
# port takes rings of 16-64 MiB and gives them back seconds after its load
# stops: whether the last sample holds one is timing, not a leak) or the fd
# or thread count ends above where it started, or if pods 5 and 6 lose more
# than 1% of their pings.
#   bash scripts/soak.sh [SECS]      (as root; BIN=path/to/userbridge to pick a build)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
BIN=${BIN:-target/release/userbridge}
[ -x "$BIN" ] || BIN=target/debug/userbridge
NAME=ubsoak$$
SOCK=/tmp/$NAME.sock
# The daemon's state file goes here, not to /run/userbridge, and with the rest at exit.
STATE=/tmp/$NAME.state
# The samples stay where CSV says; without CSV, they go with the rest.
KEEP_CSV=${CSV:+yes}
CSV=${CSV:-/tmp/$NAME.csv}
X() { ip netns exec "$@"; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${DPID:-}" ] && kill -TERM "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null || true
  # What those loops had started inside the pods (the iperf3 server, a
  # client or trafgen mid-run) would keep its namespace alive, unnamed.
  for ns in $(ip netns list | awk -v p="$NAME-" 'index($1, p) == 1 {print $1}'); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
  done
  ip netns del "$NAME-c" 2>/dev/null || true
  "$BIN" lab down --name "$NAME" >/dev/null 2>&1 || true
  # Whatever the binary could not remove (a build replaced it meanwhile, say).
  for ns in $(ip netns list | awk -v p="$NAME-" 'index($1, p) == 1 {print $1}'); do ip netns del "$ns" 2>/dev/null || true; done
  rm -f /tmp/$NAME.trafgen /tmp/$NAME.ping
  rm -rf "$STATE"
  [ -n "$KEEP_CSV" ] || rm -f "$CSV"
}
trap cleanup EXIT

"$BIN" lab up --pods 6 --name "$NAME" >/dev/null
"$BIN" run --netns "$NAME-sw" --port ubp1 --port ubp2 --port ubp3 --port ubp4 --port ubp5 --port ubp6 --socket "$SOCK" --state-dir "$STATE" --log-level warn &
DPID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { echo "soak: daemon did not start"; exit 1; }

# TCP 1 -> 2, restarted as each run ends.
X "$NAME-p2" iperf3 -s -B 10.0.0.2 >/dev/null 2>&1 & pids+=($!)
sleep 0.5
( end=$((SECONDS + SECS)); while [ $SECONDS -lt $end ]; do X "$NAME-p1" iperf3 -c 10.0.0.2 -t 5 >/dev/null 2>&1 || true; done ) & pids+=($!)
# 64-byte UDP bursts 3 -> 4: 1 s on, 1 s off.
MAC4=$(X "$NAME-p4" cat /sys/class/net/eth0/address); MAC3=$(X "$NAME-p3" cat /sys/class/net/eth0/address)
echo "{ eth(da=$MAC4, sa=$MAC3, type=0x0800), ipv4(saddr=10.0.0.3, daddr=10.0.0.4, ttl=64), udp(sport=9, dport=9), fill(0x00, 18) }" > /tmp/$NAME.trafgen
( end=$((SECONDS + SECS)); while [ $SECONDS -lt $end ]; do X "$NAME-p3" timeout 1 trafgen -i /tmp/$NAME.trafgen -o eth0 -q >/dev/null 2>&1 || true; sleep 1; done ) & pids+=($!)
# Churn: pod c comes and goes.
(
  end=$((SECONDS + SECS)); n=0
  while [ $SECONDS -lt $end ]; do
    ip netns add "$NAME-c"
    ip link add ubc netns "$NAME-sw" type veth peer name eth0 netns "$NAME-c"
    X "$NAME-sw" ip link set ubc up
    X "$NAME-c" ip addr add 10.0.0.99/24 dev eth0; X "$NAME-c" ip link set eth0 up
    "$BIN" port add ubc --socket "$SOCK" >/dev/null
    X "$NAME-c" ping -c 1 -W 1 10.0.0.1 >/dev/null || echo "soak: churn pod unreachable (round $n)"
    if [ $((n % 2)) = 0 ]; then "$BIN" port del ubc --socket "$SOCK" >/dev/null; fi
    ip netns del "$NAME-c"
    # Deleted under the daemon: wait for the port to go, then detach it.
    if [ $((n % 2)) = 1 ]; then sleep 0.3; "$BIN" port del ubc --socket "$SOCK" >/dev/null || true; fi
    for _ in $(seq 50); do X "$NAME-sw" ip link show ubc >/dev/null 2>&1 || break; sleep 0.05; done
    n=$((n + 1))
  done
  echo "soak: $n churn rounds"
) & pids+=($!)
# Pods 5 and 6, bystanders, ping each other all along.
X "$NAME-p5" ping -i 0.05 -w "$SECS" -q 10.0.0.6 > /tmp/$NAME.ping 2>&1 & PINGPID=$!; pids+=($PINGPID)

# The resident KiB of the packet sockets' rings (mappings of a socket).
rings() { awk '/^[0-9a-f]+-[0-9a-f]+ / { sock = ($0 ~ /socket:\[/) } /^Rss:/ { if (sock) s += $2 } END { print s + 0 }' /proc/$DPID/smaps; }
sample() {
  rss=$(awk '/^VmRSS:/{print $2}' /proc/$DPID/status)
  thr=$(awk '/^Threads:/{print $2}' /proc/$DPID/status)
  fds=$(ls /proc/$DPID/fd | wc -l)
  echo "$1,$rss,$(rings),$fds,$thr" >> "$CSV"
}
echo "t,rss_kib,ring_kib,fds,threads" > "$CSV"
for t in $(seq 1 "$SECS"); do
  sleep 1
  kill -0 "$DPID" 2>/dev/null || { echo "soak: the daemon died at ${t}s"; exit 1; }
  sample "$t"
done
wait "$PINGPID" || true
sleep 2   # let the last churn round and control clients finish
sample "$((SECS + 2))"
"$BIN" stats --socket "$SOCK" | sed -n "/^ubp1:/,\$p" | grep -v "^    TX"
python3 - "$CSV" "$(cat /tmp/$NAME.ping | tail -2 | head -1)" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
warm = next((r for r in rows if int(r["t"]) >= 10), rows[0])
last = rows[-1]
rss = [int(r["rss_kib"]) for r in rows]
heap = lambda r: int(r["rss_kib"]) - int(r["ring_kib"])
print(f"soak: {len(rows)} samples; RSS KiB start {rss[0]} at-10s {warm['rss_kib']} max {max(rss)} end {last['rss_kib']}; "
      f"outside the rings at-10s {heap(warm)} end {heap(last)}; "
      f"fds at-10s {warm['fds']} end {last['fds']}; threads at-10s {warm['threads']} end {last['threads']}")
print("soak: pods 5<->6:", sys.argv[2])
bad = []
if heap(last) > heap(warm) + 16 * 1024: bad.append("RSS outside the rings grew")
if int(last["fds"]) > int(warm["fds"]): bad.append("fds grew")
if int(last["threads"]) > int(warm["threads"]): bad.append("threads grew")
if " 0% packet loss" not in sys.argv[2] and ", 0% packet loss" not in sys.argv[2]:
    loss = sys.argv[2].split("% packet loss")[0].split()[-1] if "% packet loss" in sys.argv[2] else "100"
    if float(loss) > 1.0: bad.append(f"pods 5 and 6 lost {loss}% of pings")
if bad:
    print("soak: FAILED:", ", ".join(bad)); sys.exit(1)
print("soak: ok")
PY
