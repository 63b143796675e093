#!/usr/bin/env bash
# The cost of the node's netfilter on traffic between two pods: a kernel
# bridge with br_netfilter against userbridge (a bridge with a host port,
# --netfilter auto), each with the FORWARD chain empty and with 10 rules
# that match nothing (kube-proxy and Docker put such rules there on every
# node). iperf3 TCP and iperf3 UDP with 64-byte payloads (received
# frames per second), SECS seconds each, ROUNDS rounds alternating.
#   bash benches/lab/netfilter.sh [SECS] [ROUNDS]     (as root; default 5 s, 2 rounds)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-5}
ROUNDS=${2:-2}
BIN=${BIN:-target/release/userbridge}
[ -x "$BIN" ] || cargo build --release --quiet
N=ubnfb$$
X() { ip netns exec "$@"; }
cleanup() {
  [ -n "${DPID:-}" ] && kill -TERM "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  for ns in "$N" "${N}a" "${N}b"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "/tmp/$N.state" "/tmp/$N.sock"
}
trap cleanup EXIT
setup() { # kernel | userbridge
  cleanup
  ip netns add "$N"; X "$N" ip link set lo up
  for p in a b; do
    ip netns add "$N$p"; X "$N$p" ip link set lo up
    ip link add eth0 netns "$N$p" type veth peer name "v$p" netns "$N"
    X "$N$p" ip addr add "10.62.0.$([ $p = a ] && echo 11 || echo 12)/24" dev eth0
    X "$N$p" ip link set eth0 up; X "$N" ip link set "v$p" up
  done
  if [ "$1" = kernel ]; then
    X "$N" ip link add br0 type bridge
    for p in a b; do X "$N" ip link set "v$p" master br0; done
    X "$N" ip addr add 10.62.0.1/24 dev br0; X "$N" ip link set br0 up
    DPID=
  else
    nsenter --net="/run/netns/$N" "$BIN" run --host-port br0 --address 10.62.0.1/24 --port va --port vb \
      --socket "/tmp/$N.sock" --state-dir "/tmp/$N.state" --log-level warn &
    DPID=$!
    for _ in $(seq 100); do [ -S "/tmp/$N.sock" ] && break; sleep 0.1; done
  fi
  for _ in $(seq 50); do X "${N}a" ping -c 1 -W 1 -q 10.62.0.12 >/dev/null 2>&1 && break; done
}
rules() { # 0 | 10
  X "$N" iptables -F FORWARD
  for i in $(seq 1 "$1"); do X "$N" iptables -A FORWARD -s "10.99.$i.0/24" -j DROP; done
  sleep 0.5   # userbridge follows the ruleset within milliseconds; the kernel at once
}
tcp() {
  X "${N}b" iperf3 -s -1 -D >/dev/null; sleep 0.3
  X "${N}a" iperf3 -c 10.62.0.12 -t "$SECS" -J |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9, 2))'
}
udp64() {
  X "${N}b" iperf3 -s -1 -D >/dev/null; sleep 0.3
  X "${N}a" iperf3 -c 10.62.0.12 -u -l 64 -b 0 -t "$SECS" -J |
    python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum"]; print(round((e["packets"]-e["lost_packets"])/e["seconds"]/1e3))'
}
printf '%-6s %-11s %-6s %14s %16s\n' round switch rules "TCP Gbit/s" "UDP 64 B kpps"
for r in $(seq "$ROUNDS"); do
  for sw in kernel userbridge; do
    setup "$sw"
    for n in 0 10; do
      rules "$n"
      way=""
      [ "$sw" = userbridge ] && way=" ($("$BIN" bridge list --socket "/tmp/$N.sock" | grep -o 'netfilter [a-z]*'))"
      printf '%-6s %-11s %-6s %14s %16s%s\n' "$r" "$sw" "$n" "$(tcp)" "$(udp64)" "$way"
    done
  done
done
