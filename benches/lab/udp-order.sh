#!/usr/bin/env bash
# One UDP flow whose sender moves between CPUs: how many of its datagrams
# arrive out of order through the kernel bridge and through userbridge.
# First N numbered 64-byte datagrams from a thread that moves between CPU 0
# and CPU 1 every MOVE datagrams, from a connected socket (the kernel gives
# its datagrams a flow hash) and from an unconnected one (no hash); then
# iperf3 -u (1400-byte datagrams, 5 s) at each of RATES, with iperf3's own
# loss and out-of-order counts.
#   bash benches/lab/udp-order.sh       (as root; N=50000 MOVE=50 RATES="500M 1G")
# BIN picks the userbridge binary (default target/release/userbridge);
# ROUNDS repeats the whole (default 1).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-50000}
MOVE=${MOVE:-50}
RATES=${RATES:-500M 1G}
ROUNDS=${ROUNDS:-1}
BIN=${BIN:-target/release/userbridge}
[ -x "$BIN" ] || cargo build --release --quiet
NAME=ubord$$
SOCK=/tmp/$NAME.sock
SW=$NAME-sw P1=$NAME-p1 P2=$NAME-p2
stop_switch() {
  if [ -n "${DPID:-}" ]; then kill -TERM "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; DPID=; fi
  ip -n "$SW" link del ordbr 2>/dev/null || true
}
cleanup() {
  stop_switch
  "$BIN" lab down --name "$NAME" >/dev/null 2>&1 || true
  rm -f "/tmp/$NAME.out" "/tmp/$NAME.json"
}
trap cleanup EXIT
"$BIN" lab up --pods 2 --name "$NAME" >/dev/null

SEND='
import os, socket, struct, sys
mode, n, move = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if mode == "connected":
    s.connect(("10.0.0.2", 7777))
for i in range(n):
    if i % move == 0:
        os.sched_setaffinity(0, {(i // move) % 2})
    b = struct.pack("!I", i) + b"x" * 60
    if mode == "connected":
        s.send(b)
    else:
        s.sendto(b, ("10.0.0.2", 7777))
'
RECV='
import socket, struct
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: nothing lost at the socket
r.bind(("10.0.0.2", 7777))
r.settimeout(3.0)
got = []
try:
    while True:
        got.append(struct.unpack("!I", r.recv(100)[:4])[0])
except socket.timeout:
    pass
print(len(got), sum(1 for a, b in zip(got, got[1:]) if b <= a))
'

# Waits (at most 10 s) until PORT/PROTO (udp|tcp) is bound in pod 2.
bound() {
  for _ in $(seq 100); do
    ip netns exec "$P2" ss -Hln --"$2" "sport = :$1" | grep -q . && return 0
    sleep 0.1
  done
  echo "udp-order: nothing listens on $2 port $1 in pod 2"; exit 1
}

measure() {
  local label=$1
  ip netns exec "$P2" ping -c 1 -W 2 -q 10.0.0.1 >/dev/null # both stations known: unicast, not flooded
  for mode in connected unconnected; do
    ip netns exec "$P2" python3 -c "$RECV" > "/tmp/$NAME.out" & R=$!
    bound 7777 udp
    ip netns exec "$P1" python3 -c "$SEND" "$mode" "$N" "$MOVE"
    wait "$R"
    read -r got ooo < "/tmp/$NAME.out"
    echo "$label $mode socket: received $got of $N, $ooo out of order"
  done
  for rate in $RATES; do
    ip netns exec "$P2" timeout 30 iperf3 -s -1 -B 10.0.0.2 -J > "/tmp/$NAME.json" 2>&1 & S=$!
    bound 5201 tcp
    ip netns exec "$P1" iperf3 -u -c 10.0.0.2 -b "$rate" -l 1400 -t 5 >/dev/null 2>&1 || true
    wait "$S" || true
    python3 - "/tmp/$NAME.json" "$label" "$rate" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["end"]["sum"]
p, lost = s["packets"], s["lost_packets"]
ooo = sum(st["udp"].get("out_of_order", 0) for st in d["end"]["streams"])
print(f"{sys.argv[2]} iperf3 -u -b {sys.argv[3]}: sent {p}, delivered {p - lost} ({100 * lost / p:.1f}% lost), {ooo} out of order")
PY
  done
}

for r in $(seq 1 "$ROUNDS"); do
  [ "$ROUNDS" -gt 1 ] && echo "## round $r"
  ip -n "$SW" link add ordbr type bridge
  for p in ubp1 ubp2; do ip -n "$SW" link set "$p" master ordbr; done
  ip -n "$SW" link set ordbr up
  measure kbridge
  stop_switch
  ip netns exec "$SW" "$BIN" run --port ubp1 --port ubp2 --socket "$SOCK" --log-level warn ${EXTRA:-} & DPID=$!
  for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
  [ -S "$SOCK" ] || { echo "udp-order: the daemon did not start"; exit 1; }
  measure userbridge
  stop_switch
done
