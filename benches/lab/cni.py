#!/usr/bin/env python3
"""ADD and DEL latency of the CNI plugins: what users feel as pod start time.

userbridge's plugin (against its daemon, host port cni0) and the reference
`bridge` plugin (kernel bridge cni0), same conflist but `type`, host-local
IPAM, in one sitting, ROUNDS rounds alternating. Each round on a fresh node
namespace: one ADD/DEL to warm up, then
  - serial: 20 ADDs one after another, then their 20 DELs;
  - parallel: 40 ADDs at once, then 40 DELs at once.
Each call is the plugin process run in the node's namespace (nsenter), timed
from spawn to exit. Prints p50/p99 per plugin and phase, in milliseconds.

    python3 benches/lab/cni.py            (as root, from the repository)
Env: ROUNDS (default 3).
"""
import json
import os
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
BIN = os.path.join(ROOT, "target/release/userbridge")
TAG = f"ubcb{os.getpid() % 100000}"


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def conf(plugin, net, sock):
    c = {"cniVersion": "1.0.0", "name": net, "type": plugin, "bridge": "cni0", "isGateway": True,
         "isDefaultGateway": True, "ipMasq": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]}}
    if plugin == "userbridge":
        c["socket"] = sock
    return json.dumps(c).encode()


def call(node, plugin, cmd, cid, pod, stdin):
    exe = BIN if plugin == "userbridge" else "/usr/lib/cni/bridge"
    env = dict(os.environ, CNI_COMMAND=cmd, CNI_CONTAINERID=cid, CNI_IFNAME="eth0",
               CNI_PATH="/usr/lib/cni", CNI_NETNS=f"/run/netns/{pod}")
    t = time.monotonic()
    p = subprocess.run(["nsenter", f"--net=/run/netns/{node}", exe], input=stdin, env=env, capture_output=True)
    ms = (time.monotonic() - t) * 1000
    if p.returncode != 0:
        raise RuntimeError(f"{plugin} {cmd} {cid}: {p.stdout.decode()}{p.stderr.decode()}")
    return ms


def parallel(fn, items):
    out = [None] * len(items)
    errs = []

    def run(i, x):
        try:
            out[i] = fn(x)
        except Exception as e:  # noqa: BLE001 - reported below
            errs.append(e)

    ts = [threading.Thread(target=run, args=(i, x)) for i, x in enumerate(items)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise errs[0]
    return out


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def one_round(plugin, r, results):
    node = f"{TAG}{plugin[0]}{r}"
    net = node
    sock = f"/tmp/{node}.sock"
    pods = [f"{node}p{i}" for i in range(41)]
    daemon = None
    try:
        sh("ip", "netns", "add", node)
        sh("ip", "netns", "exec", node, "ip", "link", "set", "lo", "up")
        for p in pods:
            sh("ip", "netns", "add", p)
        if plugin == "userbridge":
            daemon = subprocess.Popen(["ip", "netns", "exec", node, BIN, "run", "--host-port", "cni0", "--socket", sock,
                                       "--state-dir", f"{sock}.state"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            for _ in range(500):
                if os.path.exists(sock):
                    break
                time.sleep(0.01)
        c = conf(plugin, net, sock)
        call(node, plugin, "ADD", "warm", pods[40], c)
        call(node, plugin, "DEL", "warm", pods[40], c)
        serial_add = [call(node, plugin, "ADD", f"s{i}", pods[i], c) for i in range(20)]
        serial_del = [call(node, plugin, "DEL", f"s{i}", pods[i], c) for i in range(20)]
        par_add = parallel(lambda i: call(node, plugin, "ADD", f"p{i}", pods[i], c), list(range(40)))
        par_del = parallel(lambda i: call(node, plugin, "DEL", f"p{i}", pods[i], c), list(range(40)))
        for k, v in [("serial ADD", serial_add), ("serial DEL", serial_del), ("40 parallel ADD", par_add),
                     ("40 parallel DEL", par_del)]:
            results.setdefault((plugin, k), []).extend(v)
    finally:
        if daemon:
            daemon.terminate()
            daemon.wait()
        for p in pods + [node]:
            sh("ip", "netns", "del", p, check=False)
        sh("rm", "-rf", sock, f"{sock}.state", f"/var/lib/cni/networks/{net}", check=False)


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    results = {}
    for r in range(ROUNDS):
        for plugin in ("bridge", "userbridge"):
            one_round(plugin, r, results)
    print(f"{'plugin':<11} {'phase':<16} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for (plugin, phase), v in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{plugin:<11} {phase:<16} {len(v):>4} {pct(v, 50):>8.1f} {pct(v, 99):>8.1f} {statistics.mean(v):>8.1f}")


if __name__ == "__main__":
    sys.exit(main())
