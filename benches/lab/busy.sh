#!/usr/bin/env bash
# RX slots only while a port is busy (`--rx busy-slots`, the default): two
# pods on one switch, FLOODS 64-byte trafgen floods of SECS seconds from pod
# a to pod b, each followed by a quiet spell. For each flood: frames sent
# and delivered (exact, from the pods' veth counters), the switch's
# ring_full drops, the daemon's socket mappings during the flood (each RX
# ring, one per receive half, and the TX ring) and after the quiet spell
# (the TX ring alone once the rings are given back), how long that took,
# and the memory they held: the mappings' size and the daemon's RSS during
# the flood. `EXTRA='--rx mmsg'` shows the same floods without rings.
#   bash benches/lab/busy.sh           (as root; FLOODS=2 SECS=3)
# BIN=path picks the binary; EXTRA='--busy-pps 50000' passes more options.
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/lab/pods.sh
FLOODS=${FLOODS:-2}
SECS=${SECS:-3}
BIN=${BIN:-target/release/userbridge}
[ -x "$BIN" ] || cargo build --release --quiet
N=ubbs$$
DPID=""
cleanup() {
  [ -n "$DPID" ] && kill -TERM "$DPID" 2>/dev/null && wait "$DPID" 2>/dev/null
  DPID=""
  for n in a b sw; do ip netns del "$N-$n" 2>/dev/null || true; done
  rm -f "/tmp/$N.sock" "/tmp/$N.trafgen" "/tmp/$N.log"
  rm -rf "/tmp/$N.sock.state"
}
trap cleanup EXIT

two_pods "$N" 10.76.0
# shellcheck disable=SC2086 # EXTRA is a list of options
ip netns exec "$N-sw" "$BIN" run --port pa --port pb --socket "/tmp/$N.sock" ${EXTRA:-} > "/tmp/$N.log" 2>&1 &
DPID=$!
for _ in $(seq 1 50); do [ -S "/tmp/$N.sock" ] && break; sleep 0.1; done
ip netns exec "$N-a" ping -c 3 -W 1 -q 10.76.0.2 > /dev/null
maps() { grep -c 'socket:\[' "/proc/$DPID/maps" || true; }
mapped_mib() { python3 -c 'import re,sys; print(round(sum(int(b, 16) - int(a, 16) for a, b in re.findall(r"^([0-9a-f]+)-([0-9a-f]+) .*socket:", open(sys.argv[1]).read(), re.M)) / 2**20, 1))' "/proc/$DPID/maps"; }
rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$DPID/status"; }
counter() { ip netns exec "$N-$1" cat "/sys/class/net/eth0/statistics/$2"; }
ring_full() { "$BIN" stats --socket "/tmp/$N.sock" -j | python3 -c 'import json,sys; print(sum(p["counters"]["drops"].get("ring_full", 0) for p in json.load(sys.stdin)["ports"]))'; }
cat > "/tmp/$N.trafgen" <<CFG
{ eth(da=$(ip netns exec "$N-b" cat /sys/class/net/eth0/address), sa=$(ip netns exec "$N-a" cat /sys/class/net/eth0/address), type=0x0800), ipv4(saddr=10.76.0.1, daddr=10.76.0.2, ttl=64), udp(sport=9, dport=9), fill(0x00, 18) }
CFG
echo "binary $BIN ${EXTRA:-}; socket mappings before: $(maps)"
for f in $(seq 1 "$FLOODS"); do
  r0=$(counter b rx_packets); t0=$(counter a tx_packets); d0=$(ring_full)
  ip netns exec "$N-a" timeout "$SECS" trafgen -i "/tmp/$N.trafgen" -o eth0 -q > /dev/null 2>&1 &
  sleep "$(python3 -c "print($SECS / 2)")"
  during=$(maps); mib=$(mapped_mib); rss=$(rss_mib)
  wait $! || true
  sleep 0.5
  r1=$(counter b rx_packets); t1=$(counter a tx_packets); d1=$(ring_full)
  waited=0
  while [ "$(maps)" -gt 1 ] && [ $waited -lt 100 ]; do sleep 0.1; waited=$((waited + 1)); done
  echo "flood $f: sent $((t1 - t0)) delivered $((r1 - r0)) ring_full $((d1 - d0));" \
    "socket mappings during $during ($mib MiB, daemon RSS $rss MiB), $(maps) after $((waited * 100 + 500)) ms quiet"
done
grep -E 'RX slots|WARN|ERROR' "/tmp/$N.log" || true
