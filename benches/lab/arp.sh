#!/usr/bin/env bash
# ARP suppression: frames delivered to the pods that were not asked, per ARP
# resolution, with neigh_suppress off and on (docs/policies.md has the rules).
#   bash benches/lab/arp.sh [PODS] [RESOLUTIONS]    (as root; default 100 10)
#
# PODS pods on one daemon with a host port (10.0.0.254/24, in a namespace of
# its own, as a node's gateway). Each resolution is one `arping -c 1` with an
# empty cache, from the host port and from pod 1, to another pod; the
# figure is the sum of every other pod's received-frame counter over it.
# "on": every pod port has neigh_suppress and is told its pod's MAC and
# address (what the CNI plugin does); the host port has not.
set -euo pipefail
cd "$(dirname "$0")/../.."
PODS=${1:-100}
ROUNDS=${2:-10}
BIN=${BIN:-target/release/userbridge}
[ -x "$BIN" ] || cargo build --release --quiet
NAME=ubarp$$
SOCK=/tmp/$NAME.sock
HOST=$NAME-h
cleanup() {
  [ -n "${DPID:-}" ] && kill -TERM "$DPID" 2>/dev/null
  wait 2>/dev/null || true
  "$BIN" lab down --name "$NAME" >/dev/null 2>&1 || true
  ip netns del "$HOST" 2>/dev/null || true
}
trap cleanup EXIT
"$BIN" lab up --pods "$PODS" --name "$NAME" >/dev/null
ip netns add "$HOST"
args=(); for i in $(seq 1 "$PODS"); do args+=(--port "ubp$i"); done
ip netns exec "$HOST" "$BIN" run --netns "$NAME-sw" --host-port ubh0 --address 10.0.0.254/24 \
  "${args[@]}" --socket "$SOCK" --log-level warn &
DPID=$!
for _ in $(seq 200); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { echo "arp: the daemon did not start"; exit 1; }
# Only ARP moves during a resolution: no IPv6 chatter in the pods.
for i in $(seq 1 "$PODS"); do
  ip netns exec "$NAME-p$i" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
done
ip netns exec "$HOST" sysctl -qw net.ipv6.conf.all.disable_ipv6=1

# Frames delivered to every pod, as "pod count" lines: what the switch side
# of each pod's veth sent, read in one call.
rx_all() {
  ip -n "$NAME-sw" -s -j link show | python3 -c '
import json, sys
for l in json.load(sys.stdin):
    if l["ifname"].startswith("ubp"):
        print(l["ifname"][3:], l["stats64"]["tx"]["packets"])'
}
# Every pod sends once (to the host port), so the FDB knows them all, as it
# does for any pod that spoke in the last ageing period: ARP suppression
# answers only for stations the FDB has behind a neigh_suppress port.
warm() {
  local pids=()
  for i in $(seq 1 "$PODS"); do
    ip netns exec "$NAME-p$i" busybox arping -c 1 -w 1 -I eth0 10.0.0.254 >/dev/null 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}" || true
}
# Frames the pods other than FROM and TO received while the command ran.
others() {
  local from=$1 to=$2; shift 2
  local before after
  before=$(rx_all)
  "$@" >/dev/null 2>&1 || echo "arp: '$*' got no reply" >&2
  sleep 0.2  # the last flooded copy reaching a pod's counter (not an exact count)
  after=$(rx_all)
  paste <(echo "$before") <(echo "$after") | awk -v f="$from" -v t="$to" '$1 != f && $1 != t { s += $4 - $2 } END { print s + 0 }'
}
measure() {
  local mode=$1 host=0 pod=0 n=0
  warm
  for r in $(seq 1 "$ROUNDS"); do
    t=$(( (r * 37) % (PODS - 1) + 2 ))
    ip -n "$HOST" neigh flush dev ubh0
    host=$(( host + $(others 0 "$t" ip netns exec "$HOST" busybox arping -c 1 -w 1 -I ubh0 "10.0.0.$t") ))
    ip -n "$NAME-p1" neigh flush dev eth0
    pod=$(( pod + $(others 1 "$t" ip netns exec "$NAME-p1" busybox arping -c 1 -w 1 -I eth0 "10.0.0.$t") ))
    n=$((n + 1))
  done
  echo "arp: neigh_suppress $mode, $PODS pods: host port -> pod: $(python3 -c "print(round($host/$n,1))") frames to other pods per resolution; pod -> pod: $(python3 -c "print(round($pod/$n,1))")"
}
measure off
for i in $(seq 1 "$PODS"); do
  mac=$(ip -n "$NAME-p$i" -j link show eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
  "$BIN" port set "ubp$i" --neigh-suppress on --mac "$mac" --ip "10.0.0.$i" --socket "$SOCK" >/dev/null
done
measure on
