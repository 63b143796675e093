//! The node's netfilter on the traffic between pods, against a kernel
//! bridge with br_netfilter (the specification; this machine has
//! `bridge-nf-call-iptables = 1` in every namespace): the same node, pods
//! and rules on a kernel bridge and on userbridge, the same outcome, and
//! the kernel's own counters and conntrack entries to prove the verdicts
//! are its own. Rules are added and removed while the switch runs.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const GATEWAY: &str = "10.61.0.1";
/// The pods' addresses: A, B, C.
const POD: [&str; 3] = ["10.61.0.11", "10.61.0.12", "10.61.0.13"];

/// A node namespace with three pods on a switch whose host port (or kernel
/// bridge) is `br0` with the gateway: a kernel bridge, or userbridge.
struct Node {
    daemon: Option<Daemon>,
    pods: Vec<TestNs>,
    ns: TestNs,
}

#[derive(Clone, Copy, Debug)]
enum Switch {
    Kernel,
    Userbridge,
}

impl Node {
    fn new(tag: &str, sw: Switch, extra: &[&str]) -> Node {
        let name = unique(tag);
        let ns = TestNs::new(&name);
        let mut pods = Vec::new();
        for (i, ip) in POD.iter().enumerate() {
            let pod = TestNs::new(&format!("{name}p{i}"));
            let v = format!("v{i}");
            let o = Command::new("ip")
                .args(["link", "add", "eth0", "netns", &pod.0, "type", "veth", "peer", "name", &v, "netns", &ns.0])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            ns_ok(&pod.0, &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            ns_ok(&pod.0, &["ip", "link", "set", "eth0", "up"]);
            ns_ok(&pod.0, &["ip", "route", "add", "default", "via", GATEWAY]);
            ns_ok(&ns.0, &["ip", "link", "set", &v, "up"]);
            pods.push(pod);
        }
        let daemon = match sw {
            Switch::Kernel => {
                ns_ok(&ns.0, &["ip", "link", "add", "br0", "type", "bridge"]);
                for i in 0..POD.len() {
                    ns_ok(&ns.0, &["ip", "link", "set", &format!("v{i}"), "master", "br0"]);
                }
                ns_ok(&ns.0, &["ip", "addr", "add", &format!("{GATEWAY}/24"), "dev", "br0"]);
                ns_ok(&ns.0, &["ip", "link", "set", "br0", "up"]);
                None
            }
            Switch::Userbridge => {
                let sock = format!("/tmp/{name}.sock");
                let mut args = vec!["--host-port", "br0", "--address", "10.61.0.1/24", "--port", "v0", "--port", "v1"];
                args.extend(["--port", "v2"]);
                args.extend(extra);
                Some(Daemon::start_in(&ns.0, &sock, &args))
            }
        };
        let node = Node { daemon, pods, ns };
        for i in 0..POD.len() {
            wait_until("a pod to reach its gateway", Duration::from_secs(10), || ping(&node.pods[i].0, GATEWAY, 1));
        }
        node
    }

    fn node(&self, args: &[&str]) -> String {
        ns_ok(&self.ns.0, args)
    }

    fn pings(&self, from: usize, to: usize) -> bool {
        ping(&self.pods[from].0, POD[to], 1)
    }

    /// Whether a TCP connection from pod `from` to pod `to`'s `port` opens.
    fn connects(&self, from: usize, to: usize, port: u16) -> bool {
        let code = format!("import socket\nsocket.create_connection(('{}', {port}), 2).close()", POD[to]);
        ns_exec(&self.pods[from].0, &["python3", "-c", &code]).status.success()
    }

    /// The packets iptables counted on the FORWARD rule matching `needle`.
    fn counted(&self, needle: &str) -> u64 {
        let out = self.node(&["iptables", "-L", "FORWARD", "-v", "-n", "-x"]);
        out.lines()
            .filter(|l| l.contains(needle))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// Waits until the switch follows the node's rules (userbridge: a
    /// notification away; the kernel at once).
    fn settle(&self, want_on: bool) {
        if let Some(d) = &self.daemon {
            wait_until("the switch to follow the node's rules", Duration::from_secs(5), || {
                let v = d.query(&["bridge", "list"]);
                v[0]["netfilter"].as_str().unwrap_or("off") == if want_on { "on" } else { "off" }
            });
        }
    }
}

/// TCP listeners on `ports` in pod namespace `ns`, each answering a
/// connection with the address it came from; killed on drop.
struct Listeners(Child);

impl Listeners {
    fn start(ns: &str, ports: &[u16]) -> Listeners {
        let code = format!(
            "import socket,select\nss=[]\nfor p in {ports:?}:\n s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('0.0.0.0',p)); s.listen(64); ss.append(s)\nprint('ready',flush=True)\nwhile True:\n r,_,_=select.select(ss,[],[])\n for s in r:\n  c,a=s.accept(); c.send(a[0].encode()); c.close()\n"
        );
        let mut c = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", &code])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(c.stdout.take().unwrap()), &mut line);
        assert_eq!(line.trim(), "ready");
        Listeners(c)
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `scenario` on a kernel bridge and on userbridge; both outcomes.
fn both<T>(tag: &str, scenario: impl Fn(&Node) -> T) -> (T, T) {
    let k = scenario(&Node::new(&format!("{tag}k"), Switch::Kernel, &[]));
    let u = scenario(&Node::new(&format!("{tag}u"), Switch::Userbridge, &[]));
    (k, u)
}

#[test]
fn a_drop_between_two_pods_added_and_removed_at_run_time() {
    let (k, u) = both("nfd", |n| {
        let before = n.pings(0, 1);
        n.node(&["iptables", "-I", "FORWARD", "-s", POD[0], "-d", POD[1], "-j", "DROP"]);
        n.settle(true);
        let blocked = !n.pings(0, 1);
        let other = n.pings(0, 2);
        let counted = n.counted(POD[1]) > 0;
        n.node(&["iptables", "-D", "FORWARD", "-s", POD[0], "-d", POD[1], "-j", "DROP"]);
        n.settle(false);
        let after = n.pings(0, 1);
        vec![before, blocked, other, counted, after]
    });
    assert_eq!(k, [true, true, true, true, true], "the kernel bridge");
    assert_eq!(u, k, "userbridge");
}

#[test]
fn a_stateful_policy_lets_replies_back_and_stops_new_connections_the_other_way() {
    let (k, u) = both("nfs", |n| {
        let _a = Listeners::start(&n.pods[0].0, &[7000]);
        let _b = Listeners::start(&n.pods[1].0, &[7000]);
        n.node(&["iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]);
        n.node(&["iptables", "-A", "FORWARD", "-s", POD[1], "-d", POD[0], "-j", "DROP"]);
        n.settle(true);
        let a_to_b = n.connects(0, 1, 7000);
        let b_to_a = n.connects(1, 0, 7000);
        // The flow is the kernel's: conntrack lists A -> B:7000.
        let ct = n.node(&["conntrack", "-L", "-p", "tcp", "--dport", "7000"]);
        let tracked = ct.contains(&format!("src={} dst={}", POD[0], POD[1]));
        vec![a_to_b, b_to_a, tracked]
    });
    assert_eq!(k, [true, false, true], "the kernel bridge");
    assert_eq!(u, k, "userbridge");
}

#[test]
fn an_nft_inet_rule_a_port_rule_an_ipset_and_statistic_act_as_on_the_bridge() {
    let (k, u) = both("nfn", |n| {
        let _b = Listeners::start(&n.pods[1].0, &[80, 81]);
        // nft inet: A -> C dropped (so are A's replies to C).
        n.node(&["nft", "add", "table", "inet", "ubt"]);
        n.node(&["nft", "add chain inet ubt ubforward { type filter hook forward priority 0; }"]);
        n.node(&[
            "nft",
            "add",
            "rule",
            "inet",
            "ubt",
            "ubforward",
            "ip",
            "saddr",
            POD[0],
            "ip",
            "daddr",
            POD[2],
            "drop",
        ]);
        // A port: TCP to B:80 dropped, B:81 allowed.
        n.node(&["iptables", "-A", "FORWARD", "-d", POD[1], "-p", "tcp", "--dport", "80", "-j", "DROP"]);
        n.settle(true);
        let inet = (!n.pings(0, 2), n.pings(2, 0));
        let ports = (n.connects(0, 1, 80), n.connects(0, 1, 81));
        n.node(&["nft", "delete", "table", "inet", "ubt"]);
        n.node(&["iptables", "-F", "FORWARD"]);
        // A kube-router-shaped policy: B's own chain, its allowed sources an ipset.
        let set = format!("ubt{}", std::process::id());
        n.node(&["ipset", "create", &set, "hash:ip"]);
        n.node(&["ipset", "add", &set, POD[0]]);
        n.node(&["iptables", "-N", "UBT-POD-B"]);
        n.node(&["iptables", "-A", "FORWARD", "-d", POD[1], "-j", "UBT-POD-B"]);
        n.node(&["iptables", "-A", "UBT-POD-B", "-m", "set", "--match-set", &set, "src", "-j", "ACCEPT"]);
        n.node(&["iptables", "-A", "UBT-POD-B", "-j", "DROP"]);
        let ipset = (n.pings(0, 1), n.pings(2, 1));
        n.node(&["iptables", "-F", "FORWARD"]);
        n.node(&["iptables", "-F", "UBT-POD-B"]);
        n.node(&["iptables", "-X", "UBT-POD-B"]);
        // Every second ICMP echo of A -> B dropped (`-m statistic --mode nth`).
        let nth = ["-s", POD[0], "-d", POD[1], "-p", "icmp", "-m", "statistic", "--mode", "nth", "--every", "2"];
        let mut rule = vec!["iptables", "-A", "FORWARD"];
        rule.extend(nth);
        rule.extend(["--packet", "0", "-j", "DROP"]);
        n.node(&rule);
        let o = ns_exec(&n.pods[0].0, &["ping", "-c", "10", "-i", "0.05", "-W", "1", "-q", POD[1]]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let received = out.split(", ").find(|s| s.ends_with("received")).map(str::to_string).unwrap_or_default();
        n.node(&["iptables", "-F", "FORWARD"]);
        n.node(&["ipset", "destroy", &set]);
        vec![format!("{inet:?}"), format!("{ports:?}"), format!("{ipset:?}"), received]
    });
    assert_eq!(k, ["(true, false)", "(false, true)", "(true, false)", "5 received"], "the kernel bridge");
    assert_eq!(u, k, "userbridge");
}

/// A same-node Service (kube-proxy's DNAT, with one of its FORWARD rules):
/// the backend's reply passes the node's conntrack, which gives it the
/// Service's address back, so it works without masquerade, and the backend
/// sees the client pod's own address. With `--netfilter off` it does not.
#[test]
fn a_same_node_service_works_without_masquerade_and_the_backend_sees_the_client() {
    let service = |n: &Node| -> String {
        let _b = Listeners::start(&n.pods[1].0, &[7000]);
        n.node(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let to = format!("{}:7000", POD[1]);
        n.node(
            &["iptables", "-t", "nat", "-A", "PREROUTING", "-d", "10.96.0.10/32", "-p", "tcp", "--dport", "80"]
                .into_iter()
                .chain(["-j", "DNAT", "--to-destination", &to])
                .collect::<Vec<_>>(),
        );
        n.node(&["iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]);
        n.settle(n.daemon.as_ref().is_some_and(|d| d.query(&["bridge", "list"])[0]["netfilter"].is_string()));
        let code = "import socket\nc=socket.create_connection(('10.96.0.10', 80), 3)\nprint(c.recv(64).decode())";
        let o = ns_exec(&n.pods[0].0, &["python3", "-c", code]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let (k, u) = both("nfv", service);
    assert_eq!(k, POD[0], "the kernel bridge: the backend sees the client");
    assert_eq!(u, k, "userbridge");
    let off = service(&Node::new("nfw", Switch::Userbridge, &["--netfilter", "off"]));
    assert_eq!(off, "", "with --netfilter off the reply bypasses conntrack and the Service fails");
}

#[test]
fn no_forward_rule_keeps_the_direct_path_on_takes_the_kernel_anyway_off_never_does() {
    // No rule: the direct path (the kernel's rule counters see nothing of it).
    let n = Node::new("nfo", Switch::Userbridge, &[]);
    let d = n.daemon.as_ref().unwrap();
    assert_eq!(d.query(&["bridge", "list"])[0]["netfilter"], "off");
    // The way's port is the bridge's own: in `stats`, not among the stations.
    let sent = || d.query(&["stats"])["netfilter"]["counters"]["tx_frames"].as_u64().expect("the netfilter port");
    assert!(
        d.query(&["port", "list"]).as_array().unwrap().iter().all(|p| !p["name"].as_str().unwrap().starts_with("ubnf"))
    );
    let before = sent();
    assert!(n.pings(0, 1));
    assert_eq!(sent(), before, "a frame went through the kernel with no rule");
    // A rule: the same ping goes through it.
    n.node(&["iptables", "-I", "FORWARD", "-s", "10.99.99.99", "-j", "DROP"]);
    n.settle(true);
    assert!(n.pings(0, 1));
    assert!(sent() >= before + 2, "the ping and its reply went to the kernel");
    // --netfilter on: through the kernel with no rule too.
    drop(n);
    let n = Node::new("nfa", Switch::Userbridge, &["--netfilter", "on"]);
    let d = n.daemon.as_ref().unwrap();
    n.settle(true);
    let before = d.query(&["stats"])["netfilter"]["counters"]["tx_frames"].as_u64().unwrap();
    assert!(n.pings(0, 1));
    assert!(d.query(&["stats"])["netfilter"]["counters"]["tx_frames"].as_u64().unwrap() >= before + 2);
    // --netfilter off: a rule is not enforced, deliberately.
    drop(n);
    let n = Node::new("nfx", Switch::Userbridge, &["--netfilter", "off"]);
    n.node(&["iptables", "-I", "FORWARD", "-s", POD[0], "-d", POD[1], "-j", "DROP"]);
    let d = n.daemon.as_ref().unwrap();
    assert!(n.pings(0, 1), "--netfilter off enforced a rule");
    assert!(d.query(&["bridge", "list"])[0]["netfilter"].is_null(), "no way through the kernel with --netfilter off");
}

/// The pods of a second bridge, `br1` with gateway 10.62.0.1: two of them.
const POD2: [&str; 2] = ["10.62.0.11", "10.62.0.12"];

impl Node {
    /// Adds bridge `br1` (a second kernel bridge, or a second bridge of
    /// the same daemon) with the pods of [`POD2`]; their namespaces.
    fn second_bridge(&self) -> Vec<TestNs> {
        let mut pods = Vec::new();
        for (i, ip) in POD2.iter().enumerate() {
            let pod = TestNs::new(&format!("{}q{i}", self.ns.0));
            let v = format!("w{i}");
            let o = Command::new("ip")
                .args(["link", "add", "eth0", "netns", &pod.0, "type", "veth", "peer", "name", &v, "netns", &self.ns.0])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            ns_ok(&pod.0, &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            ns_ok(&pod.0, &["ip", "link", "set", "eth0", "up"]);
            ns_ok(&pod.0, &["ip", "route", "add", "default", "via", "10.62.0.1"]);
            self.node(&["ip", "link", "set", &v, "up"]);
            pods.push(pod);
        }
        match &self.daemon {
            None => {
                self.node(&["ip", "link", "add", "br1", "type", "bridge"]);
                for i in 0..POD2.len() {
                    self.node(&["ip", "link", "set", &format!("w{i}"), "master", "br1"]);
                }
                self.node(&["ip", "addr", "add", "10.62.0.1/24", "dev", "br1"]);
                self.node(&["ip", "link", "set", "br1", "up"]);
            }
            Some(d) => {
                d.query(&["bridge", "add", "br1", "--address", "10.62.0.1/24"]);
                for i in 0..POD2.len() {
                    d.query(&["port", "add", &format!("w{i}"), "master", "br1"]);
                }
            }
        }
        for p in &pods {
            wait_until("a pod to reach its gateway", Duration::from_secs(10), || ping(&p.0, "10.62.0.1", 1));
        }
        pods
    }
}

/// Pods on two bridges of one daemon (each with its own way into the
/// node's netfilter) against two kernel bridges: a rule between two pods of
/// one bridge acts there and not on the other bridge, and traffic between
/// the bridges, routed by the node, passes FORWARD as it does there.
#[test]
fn pods_on_two_bridges_of_one_daemon_as_on_two_kernel_bridges() {
    let (k, u) = both("nf2", |n| {
        n.node(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let q = n.second_bridge();
        let q_pings = |from: usize, to: &str| ping(&q[from].0, to, 1);
        n.node(&["iptables", "-I", "FORWARD", "-s", POD2[0], "-d", POD2[1], "-j", "DROP"]);
        if let Some(d) = &n.daemon {
            wait_until("both bridges to follow the node's rules", Duration::from_secs(5), || {
                d.query(&["bridge", "list"]).as_array().unwrap().iter().all(|b| b["netfilter"] == "on")
            });
        }
        let blocked = !q_pings(0, POD2[1]);
        let counted = n.counted(POD2[1]) > 0;
        let other_bridge = n.pings(0, 1);
        let across = q_pings(0, POD[0]) && n.pings(1, 2) && ping(&n.pods[0].0, POD2[1], 1);
        n.node(&["iptables", "-I", "FORWARD", "-s", POD[0], "-d", POD2[1], "-j", "DROP"]);
        let across_blocked = !ping(&n.pods[0].0, POD2[1], 1);
        vec![blocked, counted, other_bridge, across, across_blocked]
    });
    assert_eq!(k, [true, true, true, true, true], "two kernel bridges");
    assert_eq!(u, k, "two bridges of one userbridge");
}

/// A bridge that filters VLANs keeps its direct path, as br_netfilter lets
/// a VLAN-filtering kernel bridge's traffic (tagged inside the bridge) pass
/// unjudged while `bridge-nf-filter-vlan-tagged` is 0 (this kernel has no
/// bridge VLAN filtering to run the same scenario on): the way goes off
/// when filtering goes on, and back with it, and the log says why.
#[test]
fn a_bridge_that_filters_vlans_stays_direct_and_says_so() {
    let n = Node::new("nfv", Switch::Userbridge, &[]);
    n.node(&["iptables", "-I", "FORWARD", "-s", POD[0], "-d", POD[1], "-j", "DROP"]);
    n.settle(true);
    assert!(!n.pings(0, 1), "the rule acts");
    let d = n.daemon.as_ref().unwrap();
    d.query(&["set", "vlan-filtering", "on"]);
    assert_eq!(d.query(&["bridge", "list"])[0]["netfilter"], "off");
    d.query(&["set", "vlan-filtering", "off"]);
    assert_eq!(d.query(&["bridge", "list"])[0]["netfilter"], "on");
    assert!(!n.pings(0, 1), "the rule acts again");
    let mut n = n;
    let log = n.daemon.take().unwrap().stop();
    assert!(log.contains("the bridge filters VLANs"), "{log}");
}

/// Unknown unicast through the node's rules keeps the sender's port policy
/// and storm control: pods A and B isolated (`isolated on`), C not; A sends
/// to a MAC nobody has. The kernel bridge floods it to C and not to B; so
/// must userbridge, though the frame comes back from its way into the
/// kernel, not from A's port.
#[test]
fn unknown_unicast_through_the_rules_reaches_only_whom_the_senders_policy_lets() {
    let (k, u) = both("nfi", |n| {
        for v in ["v0", "v1"] {
            match &n.daemon {
                None => n.node(&["bridge", "link", "set", "dev", v, "isolated", "on"]),
                Some(d) => d.query(&["port", "set", v, "--isolated", "on"]).to_string(),
            };
        }
        n.node(&["iptables", "-I", "FORWARD", "-s", "10.99.99.99", "-j", "DROP"]);
        n.settle(true);
        // A's neighbour entry for an address nobody has, behind a MAC no port has.
        let pod_a = &n.pods[0].0;
        ns_ok(pod_a, &["ip", "neigh", "replace", "10.61.0.99", "lladdr", "02:00:00:00:09:99", "dev", "eth0"]);
        let rx = |i: usize| if_stat(&n.pods[i].0, "eth0", "rx_packets");
        let before = [rx(1), rx(2)];
        let send = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor _ in range(20): s.sendto(b'x',('10.61.0.99',9))";
        ns_ok(pod_a, &["python3", "-c", send]);
        wait_until("C to get the flood", Duration::from_secs(5), || rx(2) >= before[1] + 20);
        // B would have had them by now (they came to C).
        vec![rx(1) - before[0] >= 20, rx(2) - before[1] >= 20]
    });
    assert_eq!(k, [false, true], "the kernel bridge: C gets A's unknown unicast, isolated B does not");
    assert_eq!(u, k, "userbridge");
}
