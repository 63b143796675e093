#!/usr/bin/env bash
# The Docker driver against Docker's bridge driver, same sitting: a node
# namespace with the daemon, the driver and a private dockerd (iptables on,
# --userland-proxy=false, as on a node), an "outside" namespace behind a
# veth. On a network of each driver: container to container (iperf3 TCP,
# ping at 500/s as lab-bench.sh), and a published port from outside (iperf3
# TCP through -p). iperf3 and ping run from the host's binaries inside the
# containers' namespaces (the image is busybox). ROUNDS rounds alternate
# the drivers.
#   bash benches/lab/docker.sh [SECS] [ROUNDS]          (as root; default 5 s, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-5}
ROUNDS=${2:-3}
BIN=${BIN:-target/release/userbridge}
[ -x "$BIN" ] || cargo build --release --quiet
TAR=$(bash scripts/docker-setup.sh)
N=ubdkb$$
W=/var/tmp/$N
D=(/usr/bin/docker -H "unix://$W/docker.sock")
cleanup() {
  if [ -S "$W/docker.sock" ]; then
    "${D[@]}" rm -f $("${D[@]}" ps -aq) >/dev/null 2>&1 || true
    for n in $("${D[@]}" network ls -q --filter type=custom 2>/dev/null); do "${D[@]}" network rm "$n" >/dev/null 2>&1 || true; done
  fi
  [ -f "$W/dockerd.pid" ] && kill "$(cat "$W/dockerd.pid")" 2>/dev/null
  for p in ${DRV:-} ${DPID:-}; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  grep -E " ($W|/run/$N)" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  ip netns del "$N" 2>/dev/null || true
  ip netns del "${N}o" 2>/dev/null || true
  rm -rf "$W" "/run/$N" "/run/docker/plugins/$N.sock"
}
trap cleanup EXIT
mkdir -p "$W"
ip netns add "$N"; ip -n "$N" link set lo up
ip netns add "${N}o"; ip -n "${N}o" link set lo up
ip link add up0 netns "$N" type veth peer name up1 netns "${N}o"
ip -n "$N" addr add 192.168.200.1/24 dev up0; ip -n "$N" link set up0 up
ip -n "${N}o" addr add 192.168.200.2/24 dev up1; ip -n "${N}o" link set up1 up
enter=(nsenter "--net=/run/netns/$N")
"${enter[@]}" "$BIN" run --socket "$W/ub.sock" --state-dir "$W/state" --log-level warn &
DPID=$!
for _ in $(seq 100); do [ -S "$W/ub.sock" ] && break; sleep 0.1; done
"${enter[@]}" "$BIN" docker-plugin --name "$N" --socket "$W/ub.sock" --state "$W/driver.json" --log-level warn &
DRV=$!
for _ in $(seq 100); do [ -S "/run/docker/plugins/$N.sock" ] && break; sleep 0.1; done
echo "{\"deprecated-key-path\": \"$W/key.json\"}" > "$W/daemon.json"
"${enter[@]}" /usr/sbin/dockerd --config-file "$W/daemon.json" --data-root "$W/data" --exec-root "/run/$N" \
  --pidfile "$W/dockerd.pid" -H "unix://$W/docker.sock" --bridge none --iptables=true --ip-forward=true \
  --ip-masq=true --userland-proxy=false > "$W/dockerd.log" 2>&1 &
for _ in $(seq 60); do "${D[@]}" version >/dev/null 2>&1 && break; sleep 1; done
"${D[@]}" import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' "$TAR" bb:latest >/dev/null

# A network of each driver: a server container (publishing 5201) and a client.
"${D[@]}" network create -d bridge --subnet 10.214.1.0/24 br >/dev/null
"${D[@]}" network create -d "$N" --subnet 10.214.2.0/24 ub >/dev/null
for net in br ub; do
  port=$([ $net = br ] && echo 15201 || echo 15202)
  "${D[@]}" run -d --name "$net-s" -p "$port:5201" --network $net bb sleep 1d >/dev/null
  "${D[@]}" run -d --name "$net-c" --network $net bb sleep 1d >/dev/null
done
pid() { "${D[@]}" inspect -f '{{.State.Pid}}' "$1"; }
ip_of() { "${D[@]}" inspect -f "{{(index .NetworkSettings.Networks \"$2\").IPAddress}}" "$1"; }
iperf() { # NSENTER-ARGS... -- ADDR PORT: Gbit/s
  local args=() ; while [ "$1" != -- ]; do args+=("$1"); shift; done; shift
  "${args[@]}" iperf3 -c "$1" -p "$2" -t "$SECS" -J 2>/dev/null |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9, 2))'
}
# A one-off server per measurement (-1): it exits after its client.
restart_server() { nsenter -t "$(pid "$1-s")" -n iperf3 -s -D -1 >/dev/null 2>&1 || true; sleep 0.3; }
rtt() { nsenter -t "$(pid "$1-c")" -n ping -q -c 1000 -i 0.002 "$(ip_of "$1-s" "$1")" | awk -F/ '/^rtt/ {print $5 * 1000}'; }
printf '%-8s %-6s %22s %18s %26s\n' round driver "c->c TCP Gbit/s" "c->c ping avg µs" "outside->-p TCP Gbit/s"
for r in $(seq "$ROUNDS"); do
  for net in br ub; do
    port=$([ $net = br ] && echo 15201 || echo 15202)
    restart_server $net
    cc=$(iperf nsenter -t "$(pid $net-c)" -n -- "$(ip_of $net-s $net)" 5201)
    lat=$(rtt $net)
    restart_server $net
    pub=$(iperf ip netns exec "${N}o" -- 192.168.200.1 "$port")
    name=$([ $net = br ] && echo bridge || echo userbridge)
    printf '%-8s %-10s %18s %18s %26s\n' "$r" "$name" "$cc" "$lat" "$pub"
  done
done
