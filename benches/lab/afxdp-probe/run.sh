#!/usr/bin/env bash
# Build the AF_XDP probe and measure it on ../shared/lab-bench.sh's lab, then
# check what it does to a checksum-offloaded UDP datagram. As root, from the
# repository. Not part of the test suite. See README.md.
set -euo pipefail
cd "$(dirname "$0")"
missing=(); for p in libxdp-dev libbpf-dev clang; do dpkg -s $p >/dev/null 2>&1 || missing+=($p); done
if [ ${#missing[@]} -gt 0 ]; then apt-get update -qq; apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; fi
clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c steer.bpf.c -o /tmp/afxdp-steer.o
gcc -O2 -Wall -o /tmp/afxdp-probe afxdp-probe.c -lxdp -lbpf -lpthread
LAB=$(realpath ${LAB_BENCH:-../../../../shared/lab-bench.sh})
SECS=${SECS:-5} TESTS=${TESTS:-"ping udp64 rr"} bash "$LAB" cmd "/tmp/afxdp-probe /tmp/afxdp-steer.o {P1} {P2} ${MODE:-}"
grep -v '^libxdp' /tmp/lb-switch.log || true

# One UDP datagram from a pod with the veth's default checksum offload.
A=afxdp-h1-$$; B=afxdp-h2-$$; C=afxdp-sw-$$; SW=""
cleanup() { [ -n "$SW" ] && kill "$SW" 2>/dev/null; for n in $A $B $C; do ip netns del $n 2>/dev/null; done; true; }
trap cleanup EXIT
for n in $A $B $C; do ip netns add $n; ip -n $n link set lo up; done
ip link add h1 netns $A type veth peer name p1 netns $C
ip link add h2 netns $B type veth peer name p2 netns $C
ip -n $C link set p1 up; ip -n $C link set p2 up
ip -n $A addr add 10.78.0.1/24 dev h1; ip -n $A link set h1 up
ip -n $B addr add 10.78.0.2/24 dev h2; ip -n $B link set h2 up
ip netns exec $C /tmp/afxdp-probe /tmp/afxdp-steer.o p1 p2 ${MODE:-} 2>/dev/null & SW=$!
sleep 1.5
ip netns exec $A ping -c 2 -i 0.2 -q 10.78.0.2 | tail -1
ip netns exec $B timeout 3 tcpdump -i h2 -nn -vv -c 1 udp port 5555 2>/dev/null &
sleep 0.5
ip netns exec $A python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"hello", ("10.78.0.2", 5555))'
sleep 2.6
