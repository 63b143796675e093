#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). Run as root on
# Debian: installs the packages the end-to-end tests use when they are
# missing, then lints, builds the benches, runs every test (namespace tests
# included) and the demo.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: the namespace tests need root (CAP_NET_ADMIN, CAP_NET_RAW): run it as root" >&2
  exit 1
fi

# command -> Debian package
# (podman, runc, busybox and the reference CNI plugins run real containers
# in tests/cni.rs; scripts/podman-setup.sh configures podman; nft is the
# reference plugin's macspoofchk; curl and python3 are the Docker tests'
# outside clients; conntrack and ipset, tests/netfilter.rs's; systemd, booted in
# namespaces of its own by tests/systemd.rs. docker.io and docker-compose, for tests/docker.rs, are
# installed by scripts/docker-setup.sh: dpkg must not start its services.)
declare -A need=([ip]=iproute2 [tcpdump]=tcpdump [ethtool]=ethtool [iperf3]=iperf3 [ping]=iputils-ping
                 [trafgen]=netsniff-ng [sockperf]=sockperf [iptables]=iptables [nsenter]=util-linux [nft]=nftables
                 [podman]=podman [runc]=runc [curl]=curl [python3]=python3
                 [conntrack]=conntrack [ipset]=ipset [systemctl]=systemd)
missing=()
for cmd in "${!need[@]}"; do command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}"); done
# Packages that are not commands: the image's busybox must be the static one.
for pkg in busybox-static containernetworking-plugins; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -e /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }
bash scripts/docker-setup.sh >/dev/null

# Lints, where the toolchain has them (rustup's minimal profile lacks both).
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all --check; else echo "rustfmt missing: format check skipped"; fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --all-targets --quiet -- -D warnings
else
  echo "clippy missing: lint skipped"
fi
cargo bench --workspace --no-run --quiet
# The README's first command, as a smoke test.
cargo run --quiet -- lab demo --name "ubci$$"
# Unit, property, in-memory datapath and namespace end-to-end tests.
# The soak's one-minute version (docs/reliability.md has the 10-minute one).
bash scripts/soak.sh 60 2>&1 | grep '^soak:'
# The soak leaves nothing behind: no state file, sample or socket of its own.
left=$(ls -d /run/userbridge/ubsoak* /tmp/ubsoak* 2>/dev/null || true)
[ -z "$left" ] || { echo "soak: left behind: $left"; exit 1; }
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
