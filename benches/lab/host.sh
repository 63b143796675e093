#!/usr/bin/env bash
# The host path (issue #10), userbridge against the Linux bridge in one
# sitting, ROUNDS rounds each, modes alternating:
#  - pod -> host TCP: iperf3 from a pod to a server on the gateway address,
#    default offloads; the gateway is a host port (ub) or the bridge device
#    carrying the same address (kbridge);
#  - pod -> host 64-byte UDP: trafgen in the pod to the gateway (sent: the
#    pod's tx_packets; delivered: the gateway interface's rx_packets);
#  - two nodes (`lab up --nodes 2`, VXLAN like flannel), cross-node TCP pod
#    to pod and ping (1000 x 2 ms), with userbridge or kernel bridges;
#  - idle: a daemon with a host port and 8 pods, CPU over 30 s, no traffic.
#   bash benches/lab/host.sh      (as root, from the repository)
# Env: SECS (per test, default 5), ROUNDS (default 3).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${SECS:-5}; ROUNDS=${ROUNDS:-3}
cargo build --release --quiet
BIN=$PWD/target/release/userbridge
NAME=ubhb$$
SOCK=/tmp/$NAME.sock
DPID=""
cleanup() {
  [ -n "$DPID" ] && kill -TERM "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null || true
  for l in "$NAME" "${NAME}n" "${NAME}i"; do "$BIN" lab down --name "$l" >/dev/null 2>&1 || true; done
  rm -rf "$SOCK" "$SOCK.state" /tmp/$NAME.trafgen
}
trap cleanup EXIT

gbps() { python3 -c 'import json,sys;d=json.load(sys.stdin);print(round(d["end"]["sum_received"]["bits_per_second"]/1e9,2))'; }
stat() { ip netns exec "$1" cat "/sys/class/net/$2/statistics/$3"; }

# One round of the pod -> host tests; the gateway is up at 10.0.0.254 in $NAME-sw.
host_round() {
  local mode=$1 gw=$2 sw=$NAME-sw p1=$NAME-p1
  ip netns exec "$sw" timeout $((SECS + 15)) iperf3 -s -1 -B 10.0.0.254 >/dev/null 2>&1 &
  local s=$!; sleep 0.5
  local g; g=$(ip netns exec "$p1" timeout $((SECS + 10)) iperf3 -c 10.0.0.254 -t "$SECS" -J 2>/dev/null | gbps || echo FAIL)
  wait $s 2>/dev/null || true
  local mac; mac=$(ip netns exec "$sw" cat "/sys/class/net/$gw/address")
  echo "{ eth(da=$mac, sa=02:00:00:00:00:01, type=0x0800), ipv4(saddr=10.0.0.1, daddr=10.0.0.254, ttl=64), udp(sport=9, dport=9), fill(0x00, 18) }" > /tmp/$NAME.trafgen
  local r0 t0 r1 t1
  r0=$(stat "$sw" "$gw" rx_packets); t0=$(stat "$p1" eth0 tx_packets)
  ip netns exec "$p1" timeout "$SECS" trafgen -i /tmp/$NAME.trafgen -o eth0 -q >/dev/null 2>&1 || true
  sleep 0.5
  r1=$(stat "$sw" "$gw" rx_packets); t1=$(stat "$p1" eth0 tx_packets)
  echo "$mode host_tcp_gbps=$g udp64_sent_mpps=$(python3 -c "print(round(($t1-$t0)/$SECS/1e6,3))") udp64_delivered_mpps=$(python3 -c "print(round(($r1-$r0)/$SECS/1e6,3))")"
}

host_kbridge() {
  "$BIN" lab up --pods 2 --name "$NAME" >/dev/null
  local sw=$NAME-sw
  ip netns exec "$sw" ip link add ubhbr0 type bridge
  ip netns exec "$sw" ip link set ubp1 master ubhbr0; ip netns exec "$sw" ip link set ubp2 master ubhbr0
  ip netns exec "$sw" ip addr add 10.0.0.254/24 dev ubhbr0; ip netns exec "$sw" ip link set ubhbr0 up
  ip netns exec "$NAME-p1" ping -c 2 -W 1 -q 10.0.0.254 >/dev/null
  host_round kbridge ubhbr0
  "$BIN" lab down --name "$NAME" >/dev/null
}

host_ub() {
  "$BIN" lab up --pods 2 --name "$NAME" >/dev/null
  ip netns exec "$NAME-sw" "$BIN" run --host-port ubh0 --address 10.0.0.254/24 --port ubp1 --port ubp2 \
    --socket "$SOCK" --state-dir "$SOCK.state" --log-level warn &
  DPID=$!
  for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
  ip netns exec "$NAME-p1" ping -c 2 -W 1 -q 10.0.0.254 >/dev/null
  host_round ub ubh0
  kill -TERM "$DPID"; wait "$DPID" 2>/dev/null || true; DPID=""
  "$BIN" lab down --name "$NAME" >/dev/null
}

nodes_round() {
  local mode=$1 l=${NAME}n
  "$BIN" lab up --nodes 2 --pods 1 --name "$l" --bridge "$mode" >/dev/null
  ip netns exec "$l-n1p1" ping -c 2 -W 1 -q 10.244.2.2 >/dev/null
  local r; r=$(ip netns exec "$l-n1p1" ping -c 1000 -i 0.002 -q 10.244.2.2 2>&1 | tail -1)
  ip netns exec "$l-n2p1" timeout $((SECS + 15)) iperf3 -s -1 -B 10.244.2.2 >/dev/null 2>&1 &
  local s=$!; sleep 0.5
  local g; g=$(ip netns exec "$l-n1p1" timeout $((SECS + 10)) iperf3 -c 10.244.2.2 -t "$SECS" -J 2>/dev/null | gbps || echo FAIL)
  wait $s 2>/dev/null || true
  echo "$mode nodes_tcp_gbps=$g nodes_ping_ms=${r#*= }"
  "$BIN" lab down --name "$l" >/dev/null
}

for i in $(seq "$ROUNDS"); do
  echo "== round $i"
  host_kbridge; host_ub
  nodes_round kernel; nodes_round userbridge
done

echo "== idle: host port and 8 pods, no traffic"
"$BIN" lab up --pods 8 --name "${NAME}i" >/dev/null
args=(); for i in $(seq 8); do args+=(--port "ubp$i"); done
ip netns exec "${NAME}i-sw" "$BIN" run --host-port ubh0 --address 10.0.0.254/24 "${args[@]}" \
  --socket "$SOCK" --state-dir "$SOCK.state" --log-level warn &
DPID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
sleep 2
hz=$(getconf CLK_TCK)
c0=$(awk '{print $14 + $15}' /proc/$DPID/stat); sleep 30; c1=$(awk '{print $14 + $15}' /proc/$DPID/stat)
echo "idle: $(python3 -c "print(round(100 * ($c1 - $c0) / $hz / 30, 2))")% of one core over 30 s, $(awk '/^Threads:/{print $2}' /proc/$DPID/status) threads"
