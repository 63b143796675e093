#!/usr/bin/env bash
# Many pods at once (issue #13): PAIRS pod pairs on one switch, all talking
# at the same time, the Linux bridge and userbridge alternating, ROUNDS
# rounds. First iperf3 TCP on every pair (pods' default offloads), then
# 64-byte UDP from trafgen on every pair. Prints each pair's share and the
# aggregate, so a starved pair shows.
#   bash benches/lab/pairs.sh            (as root; PAIRS=8 SECS=5 ROUNDS=3)
# MODES="kbridge userbridge" and TESTS="tcp udp64" choose a subset (one
# switch's TCP alone, to profile it); EXTRA='--rx mmsg' passes more
# options to the daemon.
set -euo pipefail
cd "$(dirname "$0")/../.."
PAIRS=${PAIRS:-8}
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}
MODES=${MODES:-kbridge userbridge}
TESTS=${TESTS:-tcp udp64}
BIN=${BIN:-target/release/userbridge}
[ -x "$BIN" ] || cargo build --release --quiet
N=ubpr$$
SW=$N-sw
DPID=""
cleanup() {
  [ -n "$DPID" ] && kill -TERM "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  DPID=""
  for i in $(seq 1 "$PAIRS"); do
    ip netns del "$N-a$i" 2>/dev/null || true
    ip netns del "$N-b$i" 2>/dev/null || true
  done
  ip netns del "$SW" 2>/dev/null || true
  rm -rf /tmp/$N-*
}
trap cleanup EXIT

# Pods a1..aN (10.78.0.i) and b1..bN (10.78.0.100+i), host ends in $SW.
build() {
  ip netns add "$SW"
  ip -n "$SW" link set lo up
  for i in $(seq 1 "$PAIRS"); do
    for side in a b; do
      ns=$N-$side$i
      ip netns add "$ns"
      ip -n "$ns" link set lo up
      ip link add eth0 netns "$ns" type veth peer name "p$side$i" netns "$SW"
      ip -n "$SW" link set "p$side$i" up
      if [ $side = a ]; then addr=10.78.0.$i; else addr=10.78.0.$((100 + i)); fi
      ip -n "$ns" addr add "$addr/24" dev eth0
      ip -n "$ns" link set eth0 up
    done
  done
}

switch_up() {
  case $1 in
    kbridge)
      ip -n "$SW" link add br0 type bridge
      for i in $(seq 1 "$PAIRS"); do
        ip -n "$SW" link set "pa$i" master br0
        ip -n "$SW" link set "pb$i" master br0
      done
      ip -n "$SW" link set br0 up ;;
    userbridge)
      args=()
      for i in $(seq 1 "$PAIRS"); do args+=(--port "pa$i" --port "pb$i"); done
      # shellcheck disable=SC2086 # EXTRA is words on purpose
      ip netns exec "$SW" "$BIN" run "${args[@]}" --socket "/tmp/$N-ub.sock" --state-dir "/tmp/$N-state" --log-level warn ${EXTRA:-} &
      DPID=$!
      for _ in $(seq 100); do [ -S "/tmp/$N-ub.sock" ] && break; sleep 0.1; done ;;
  esac
  # Every pair resolved before anything is timed.
  for i in $(seq 1 "$PAIRS"); do
    ok=0
    for _ in $(seq 20); do
      ip netns exec "$N-a$i" ping -c 1 -W 1 -q "10.78.0.$((100 + i))" >/dev/null 2>&1 && { ok=1; break; }
    done
    [ $ok = 1 ] || { echo "pairs: pair $i cannot ping on $1"; exit 1; }
  done
}

switch_down() {
  if [ -n "$DPID" ]; then kill -TERM "$DPID"; wait "$DPID" 2>/dev/null || true; DPID=""; fi
  ip -n "$SW" link del br0 2>/dev/null || true
}

# iperf3 on every pair at once: per-pair Gbit/s, then the sum.
tcp() {
  local pids=()
  for i in $(seq 1 "$PAIRS"); do
    ip netns exec "$N-b$i" timeout $((SECS + 15)) iperf3 -s -1 -B "10.78.0.$((100 + i))" >/dev/null 2>&1 &
  done
  sleep 0.5
  for i in $(seq 1 "$PAIRS"); do
    ip netns exec "$N-a$i" timeout $((SECS + 10)) iperf3 -c "10.78.0.$((100 + i))" -t "$SECS" -J > "/tmp/$N-tcp$i.json" 2>/dev/null &
    pids+=($!)
  done
  wait "${pids[@]}" || true
  for i in $(seq 1 "$PAIRS"); do
    python3 -c 'import json,sys
try: print(round(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e9,2))
except Exception: print(0)' "/tmp/$N-tcp$i.json"
  done
}

# Datagrams pod NS's stack took in, to a port or to none (trafgen's go to
# port 9, where nothing listens): only the flood's frames, where the veth's
# rx_packets counted every frame (a round once showed more delivered than sent).
udp_in() {
  ip netns exec "$1" awk '/^Udp:/ && $2 ~ /^[0-9]+$/ {print $2 + $3}' /proc/net/snmp
}

# trafgen 64-byte UDP on every pair at once: per-pair delivered Mpps.
udp64() {
  local pids=() r0=() t0=()
  for i in $(seq 1 "$PAIRS"); do
    da=$(ip netns exec "$N-b$i" cat /sys/class/net/eth0/address)
    sa=$(ip netns exec "$N-a$i" cat /sys/class/net/eth0/address)
    echo "{ eth(da=$da, sa=$sa, type=0x0800), ipv4(saddr=10.78.0.$i, daddr=10.78.0.$((100 + i)), ttl=64), udp(sport=9, dport=9), fill(0x00, 18) }" > "/tmp/$N-tg$i.cfg"
    r0+=("$(udp_in "$N-b$i")")
    t0+=("$(ip netns exec "$N-a$i" cat /sys/class/net/eth0/statistics/tx_packets)")
  done
  for i in $(seq 1 "$PAIRS"); do
    ip netns exec "$N-a$i" timeout "$SECS" trafgen -i "/tmp/$N-tg$i.cfg" -o eth0 -q >/dev/null 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}" || true
  sleep 0.5  # the last frames in flight reach the counters (rates, not exact counts)
  for i in $(seq 1 "$PAIRS"); do
    r1=$(udp_in "$N-b$i")
    t1=$(ip netns exec "$N-a$i" cat /sys/class/net/eth0/statistics/tx_packets)
    echo "$(python3 -c "print(round(($r1 - ${r0[$((i - 1))]})/$SECS/1e6,3), round(($t1 - ${t0[$((i - 1))]})/$SECS/1e6,3))")"
  done
}

summary() {  # label, test, values (one per pair; udp64: "delivered sent")
  python3 - "$@" <<'PY'
import sys
label, test, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
if test == "tcp":
    v = [float(x) for x in rest]
    print(f"{label} tcp Gbit/s: aggregate {sum(v):.2f}, per pair {' '.join(f'{x:.2f}' for x in v)}, min share {min(v)/sum(v)*len(v):.2f} of fair" if sum(v) else f"{label} tcp: FAIL")
else:
    d = [float(x) for x in rest[0::2]]; s = [float(x) for x in rest[1::2]]
    print(f"{label} udp64 Mpps delivered: aggregate {sum(d):.3f} of {sum(s):.3f} sent, per pair {' '.join(f'{x:.3f}' for x in d)}, min share {min(d)/sum(d)*len(d):.2f} of fair" if sum(d) else f"{label} udp64: FAIL")
PY
}

for t in $TESTS; do case $t in tcp|udp64) ;; *) echo "pairs: unknown test $t (tcp, udp64)" >&2; exit 2 ;; esac; done
for m in $MODES; do case $m in kbridge|userbridge) ;; *) echo "pairs: unknown mode $m (kbridge, userbridge)" >&2; exit 2 ;; esac; done
build
for r in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    switch_up "$mode"
    for t in $TESTS; do
      case $t in
        # shellcheck disable=SC2046
        tcp) summary "round $r $mode" tcp $(tcp) ;;
        # shellcheck disable=SC2046
        udp64) summary "round $r $mode" udp64 $(udp64) ;;
      esac
    done
    switch_down
  done
done
