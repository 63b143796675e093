#!/usr/bin/env bash
# One sitting, one table: the Linux bridge, Open vSwitch's userspace datapath
# (when ovs-vswitchd is installed) and userbridge on ../shared/lab-bench.sh's
# two-pod lab, back to back, with userbridge's ratios to the bridge.
# userbridge runs three ways: `ub` with no tuning flags (defaults: recvmmsg,
# and the TPACKET_V2 RX slots while a port is busy, a member per CPU per
# port, the port's thread and its helpers pinned where the frames arrive,
# nice -10), `ub-mmsg` the same with recvmmsg alone (`--rx mmsg`: never a
# ring), and `ub-1reader` with one unpinned reader per port at nice 0 (what
# the per-CPU members bought). Then, unless SCALE=0, the 128-pod scale check.
#   bash benches/lab/compare.sh            (as root, from the repository)
# Env: SECS (per test, default 5), SCALE=0 to skip the scale check.
set -euo pipefail
cd "$(dirname "$0")/../.."
LAB=${LAB_BENCH:-../shared/lab-bench.sh}
[ -f "$LAB" ] || { echo "compare.sh: $LAB not found (set LAB_BENCH)"; exit 1; }
cargo build --release --quiet
BIN=target/release/userbridge
out=$(mktemp -d)
run() { echo "== $1" >&2; SECS=${SECS:-5} bash "$LAB" "${@:2}" > "$out/$1" 2>&1 || true; }
run kbridge kbridge
command -v ovs-vswitchd >/dev/null 2>&1 && run ovs ovs
UB="$BIN run --port {P1} --port {P2} --socket /tmp/ub-compare.sock --log-level warn"
run ub cmd "$UB"
run ub-mmsg cmd "$UB --rx mmsg"
run ub-1reader cmd "$UB --readers 1 --reader-nice 0"
python3 - "$out" <<'PY'
import os, re, sys
d = sys.argv[1]
def parse(path):
    t = open(path).read()
    g = lambda pat: (m.group(1) if (m := re.search(pat, t)) else None)
    f = lambda v: float(v) if v not in (None, "FAIL", "inf") else None
    return {
        "ping avg ms": f(g(r"ping_rtt_min/avg/max/mdev_ms: [\d.]+/([\d.]+)/")),
        "TCP Gbit/s": f(g(r"tcp_gbps: ([\d.]+|FAIL)")),
        "64B sent Mpps": f(g(r"udp64_sent_mpps: ([\d.]+)")),
        "64B delivered Mpps": f(g(r"udp64_delivered_mpps: ([\d.]+)")),
        "CPU ns/frame": f(g(r"udp64_system_cpu_ns_per_delivered_frame: (\S+)")),
        "rr p50 us": f(g(r"p50=([\d.]+|FAIL)")),
        "rr p99 us": f(g(r"p99=([\d.]+|FAIL)")),
    }
modes = [m for m in ["kbridge", "ovs", "ub", "ub-mmsg", "ub-1reader"] if os.path.exists(os.path.join(d, m))]
res = {m: parse(os.path.join(d, m)) for m in modes}
keys = list(res["kbridge"].keys())
fmt = lambda v: "-" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")
print("| | " + " | ".join(modes) + " | ub/bridge |")
print("|---" * (len(modes) + 2) + "|")
for k in keys:
    b, u = res["kbridge"][k], res.get("ub", {}).get(k)
    ratio = "-" if not b or u is None else f"{u / b:.2f}x"
    print(f"| {k} | " + " | ".join(fmt(res[m][k]) for m in modes) + f" | {ratio} |")
print()
for m in ("ub", "ub-mmsg", "ub-1reader"):
    sent, got = res.get(m, {}).get("64B sent Mpps"), res.get(m, {}).get("64B delivered Mpps")
    if sent and got is not None:
        print(f"{m}: delivered {100 * got / sent:.1f}% of the 64-byte frames trafgen sent.")
PY
rm -rf "$out"
[ "${SCALE:-1}" = 0 ] && exit 0
bash "$(dirname "$0")/scale.sh"
