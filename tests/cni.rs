//! The CNI plugin against the reference `bridge` plugin: the same scenario
//! on two nodes (network namespaces), one whose conflist says
//! `"type": "bridge"`, one `"type": "userbridge"`, and the same outcome
//! asserted. Real podman 4.3.1 (CNI backend) runs real containers where a
//! runtime matters; direct plugin calls where the result JSON and error
//! codes are compared. scripts/podman-setup.sh prepares podman.
//!
//! Between the two conflists only `type` differs, and `socket` (each
//! userbridge node has its own daemon); the network `name` differs too, as
//! host-local keeps leases per name and the two nodes run side by side.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const SUBNET: &str = "10.244.1.0/24";
const GATEWAY: &str = "10.244.1.1";
const OUTSIDE: &str = "192.168.200.2";
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plugin {
    Bridge,
    Userbridge,
}

impl Plugin {
    fn kind(self) -> &'static str {
        match self {
            Plugin::Bridge => "bridge",
            Plugin::Userbridge => "userbridge",
        }
    }
}

/// Podman's private configuration (scripts/podman-setup.sh), made once per
/// test binary, with this build's userbridge installed as a CNI plugin.
fn podman_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/podman-setup.sh");
        let o = Command::new("bash").arg(script).output().expect("running scripts/podman-setup.sh");
        assert!(o.status.success(), "podman setup: {}", String::from_utf8_lossy(&o.stderr));
        let conf = PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or_default().trim());
        let dir = conf.parent().unwrap().to_path_buf();
        let o = Command::new(BIN).args(["cni", "install", "--dir"]).arg(dir.join("bin")).output().unwrap();
        assert!(o.status.success(), "cni install: {}", String::from_utf8_lossy(&o.stderr));
        dir
    })
}

/// A node: a namespace with the network's switch (the reference plugin's
/// `cni0` bridge, or a userbridge daemon with host port `cni0`), an
/// "outside" namespace behind it (192.168.200.0/24, no route back to the
/// pods), and a CNI configuration directory with the conflist. Dropping it
/// removes its containers, the conflist, the leases and the namespaces.
struct Node {
    plugin: Plugin,
    net: String,
    conf_dir: PathBuf,
    conf: Value,
    daemon: Option<Daemon>,
    /// Networks beyond the first (`add_network`), whose leases go with the node.
    more: std::cell::RefCell<Vec<String>>,
    /// Held for its guard: the outside namespace goes with the node.
    _out: TestNs,
    ns: TestNs,
}

impl Node {
    fn new(tag: &str, plugin: Plugin) -> Node {
        Self::with(tag, plugin, |_| {})
    }

    /// A node whose plugin configuration `edit` changes first.
    fn with(tag: &str, plugin: Plugin, edit: impl FnOnce(&mut Value)) -> Node {
        Self::build(tag, plugin, edit, &["--host-port", "cni0"])
    }

    /// A node whose userbridge daemon starts with `args` (none: no bridge,
    /// the plugin makes them).
    fn build(tag: &str, plugin: Plugin, edit: impl FnOnce(&mut Value), args: &[&str]) -> Node {
        let name = format!("{}{}", unique(tag), &plugin.kind()[..1]);
        let ns = TestNs::new(&name);
        let out = TestNs::new(&format!("{name}o"));
        let o = Command::new("ip")
            .args(["link", "add", "up0", "netns", &name, "type", "veth", "peer", "name", "up1", "netns"])
            .arg(&out.0)
            .output()
            .unwrap();
        assert!(o.status.success(), "outside link: {}", String::from_utf8_lossy(&o.stderr));
        ns_ok(&name, &["ip", "addr", "add", "192.168.200.1/24", "dev", "up0"]);
        ns_ok(&name, &["ip", "link", "set", "up0", "up"]);
        ns_ok(&out.0, &["ip", "addr", "add", &format!("{OUTSIDE}/24"), "dev", "up1"]);
        ns_ok(&out.0, &["ip", "link", "set", "up1", "up"]);
        let conf_dir = PathBuf::from(format!("/tmp/{name}.net.d"));
        std::fs::create_dir_all(&conf_dir).unwrap();
        let socket = conf_dir.join("ub.sock");
        let mut conf = json!({
            "cniVersion": "1.0.0",
            "name": name,
            "type": plugin.kind(),
            "bridge": "cni0",
            "isGateway": true,
            "isDefaultGateway": true,
            "ipMasq": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]]}
        });
        if plugin == Plugin::Userbridge {
            conf["socket"] = json!(socket);
        }
        edit(&mut conf);
        let more = std::cell::RefCell::new(Vec::new());
        let mut node = Node { plugin, net: name.clone(), conf_dir, conf, daemon: None, more, _out: out, ns };
        if plugin == Plugin::Userbridge {
            node.daemon = Some(Daemon::start_in(&name, socket.to_str().unwrap(), args));
        }
        node.write_conflist();
        node
    }

    fn write_conflist(&self) {
        self.write_conflist_of(&self.net, &self.conf);
    }

    fn write_conflist_of(&self, net: &str, conf: &Value) {
        self.write_chain_of(net, conf, &[]);
    }

    /// The network's conflist with `then` chained after the switch's plugin.
    fn write_chain_of(&self, net: &str, conf: &Value, then: &[Value]) {
        let mut plugin = conf.clone();
        let version = plugin.as_object_mut().unwrap().remove("cniVersion").unwrap();
        plugin.as_object_mut().unwrap().remove("name");
        let mut plugins = vec![plugin];
        plugins.extend_from_slice(then);
        let list = json!({"cniVersion": version, "name": net, "plugins": plugins});
        std::fs::write(self.conf_dir.join(format!("{net}.conflist")), list.to_string()).unwrap();
    }

    /// A second network on this node: the first's configuration on bridge
    /// `bridge` and `subnet`. Returns its name.
    fn add_network(&self, suffix: &str, bridge: &str, subnet: &str) -> String {
        let net = format!("{}{suffix}", self.net);
        let mut conf = self.conf.clone();
        conf["name"] = json!(net);
        conf["bridge"] = json!(bridge);
        conf["ipam"] = json!({"type": "host-local", "ranges": [[{"subnet": subnet}]]});
        self.write_conflist_of(&net, &conf);
        self.more.borrow_mut().push(net.clone());
        net
    }

    /// Container `i` on network `net`.
    fn run_on(&self, i: usize, net: &str) {
        let c = self.container(i);
        self.podman_ok(&["run", "-d", "--name", &c, "--network", net, "localhost/ub-busybox", "sleep", "100000"]);
    }

    fn name(&self) -> &str {
        &self.ns.0
    }

    /// `podman ARGS` run on this node (its network namespace; /sys as is,
    /// which podman's cgroup handling needs and `ip netns exec` would hide).
    fn podman(&self, args: &[&str]) -> Output {
        let dir = podman_dir();
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.name()))
            .arg("podman")
            .arg("--network-config-dir")
            .arg(&self.conf_dir)
            .args(args)
            .env("CONTAINERS_CONF", dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"))
            .stdin(Stdio::null())
            .output()
            .expect("running podman")
    }

    fn podman_ok(&self, args: &[&str]) -> String {
        let o = self.podman(args);
        assert!(
            o.status.success(),
            "podman {args:?} on {:?}: {}{}",
            self.plugin,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn container(&self, i: usize) -> String {
        format!("{}-c{i}", self.net)
    }

    fn run(&self, i: usize) {
        self.podman_ok(&[
            "run",
            "-d",
            "--name",
            &self.container(i),
            "--network",
            &self.net,
            "localhost/ub-busybox",
            "sleep",
            "100000",
        ]);
    }

    /// The container's IPv4 address on eth0, if it has one.
    fn ip_of(&self, i: usize) -> Option<String> {
        let o = self.podman(&["exec", &self.container(i), "ip", "-4", "-o", "addr", "show", "eth0"]);
        let s = String::from_utf8_lossy(&o.stdout);
        let f: Vec<&str> = s.split_whitespace().collect();
        f.iter().position(|w| *w == "inet").and_then(|p| f.get(p + 1)).map(|a| a.split('/').next().unwrap().to_string())
    }

    /// One ping from container `i` (busybox's ping) to `dst`.
    fn pings(&self, i: usize, dst: &str) -> bool {
        self.podman(&["exec", &self.container(i), "ping", "-c", "1", "-W", "3", dst]).status.success()
    }

    /// Who reaches whom among containers `ids`: every pair, each its
    /// gateway and the outside (through masquerade), the node each.
    fn connectivity(&self, ids: &[usize]) -> BTreeMap<String, bool> {
        let ips: BTreeMap<usize, String> =
            ids.iter().map(|&i| (i, self.ip_of(i).unwrap_or_else(|| panic!("c{i} has no address")))).collect();
        let mut m = BTreeMap::new();
        for &i in ids {
            for &j in ids {
                if i != j {
                    m.insert(format!("c{i} -> c{j}"), self.pings(i, &ips[&j]));
                }
            }
            m.insert(format!("c{i} -> gateway"), self.pings(i, GATEWAY));
            m.insert(format!("c{i} -> outside"), self.pings(i, OUTSIDE));
            m.insert(format!("node -> c{i}"), ping(self.name(), &ips[&i], 1));
        }
        m
    }

    /// What is left of the network's containers on the node: host-side
    /// veths (the outside link and the bridge's own way through netfilter,
    /// `ubnf…`, aside), the daemon's run-time ports with their containers,
    /// and the IPAM leases.
    fn leftovers(&self) -> (usize, Vec<String>, BTreeSet<String>) {
        let links = ns_ok(self.name(), &["ip", "-o", "link", "show", "type", "veth"]);
        let veths = links.lines().filter(|l| !l.contains(" up0@") && !l.contains(": ubnf")).count();
        let ports = match &self.daemon {
            Some(d) => d
                .query(&["port", "list"])
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["meta"]["container_id"].as_str().map(String::from))
                .collect(),
            None => Vec::new(),
        };
        (veths, ports, self.leases())
    }

    fn leases(&self) -> BTreeSet<String> {
        std::fs::read_dir(format!("/var/lib/cni/networks/{}", self.net))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The name of container `i`'s network namespace (`cni-…` in /run/netns).
    fn netns_of(&self, i: usize) -> String {
        let key = self.podman_ok(&["inspect", "--format", "{{.NetworkSettings.SandboxKey}}", &self.container(i)]);
        key.trim().trim_start_matches("/run/netns/").to_string()
    }

    fn id_of(&self, i: usize) -> String {
        self.podman_ok(&["inspect", "--format", "{{.Id}}", &self.container(i)]).trim().to_string()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let o = self.podman(&["ps", "-a", "--format", "{{.Names}}"]);
        for c in String::from_utf8_lossy(&o.stdout).lines().filter(|c| c.starts_with(&format!("{}-c", self.net))) {
            let _ = self.podman(&["rm", "-f", "-t", "0", c]);
        }
        let _ = std::fs::remove_dir_all(&self.conf_dir);
        for net in std::iter::once(&self.net).chain(self.more.borrow().iter()) {
            let _ = std::fs::remove_dir_all(format!("/var/lib/cni/networks/{net}"));
        }
    }
}

/// Runs `f` on a node of each plugin, side by side; the reference's outcome first.
fn both<T: Send>(f: impl Fn(Plugin) -> T + Sync) -> (T, T) {
    std::thread::scope(|s| {
        let k = s.spawn(|| f(Plugin::Bridge));
        let u = s.spawn(|| f(Plugin::Userbridge));
        (
            k.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            u.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
        )
    })
}

fn all_true(what: &str, m: &BTreeMap<String, bool>) {
    let failed: Vec<&String> = m.iter().filter(|(_, ok)| !**ok).map(|(k, _)| k).collect();
    assert!(failed.is_empty(), "{what}: these failed: {failed:?}");
}

#[test]
fn three_containers_reach_each_other_their_gateway_the_node_and_the_outside() {
    let (kernel, user) = both(|p| {
        let node = Node::new("cn", p);
        for i in 1..=3 {
            node.run(i);
        }
        node.connectivity(&[1, 2, 3])
    });
    all_true("the reference bridge plugin", &kernel);
    assert_eq!(user, kernel, "userbridge differs from the reference plugin");
}

#[test]
fn podman_lifecycle_keeps_connectivity_and_rm_leaves_nothing() {
    let (kernel, user) = both(|p| {
        let node = Node::new("lc", p);
        node.run(1);
        node.run(2);
        let mut seen: Vec<(String, BTreeMap<String, bool>)> = Vec::new();
        let mut step = |what: &str, args: &[&str], ids: &[usize]| {
            node.podman_ok(args);
            seen.push((what.to_string(), node.connectivity(ids)));
        };
        let c1 = node.container(1);
        step("stop", &["stop", "-t", "0", &c1], &[2]);
        // A stopped container holds no veth, port or lease.
        let (veths, ports, leases) = node.leftovers();
        let stopped = (veths, ports.len(), leases.len());
        step("start", &["start", &c1], &[1, 2]);
        step("restart", &["restart", "-t", "0", &c1], &[1, 2]);
        let before = node.ip_of(1);
        step("network reload", &["network", "reload", &c1], &[1, 2]);
        let kept_ip = node.ip_of(1) == before;
        step("network disconnect", &["network", "disconnect", &node.net, &c1], &[2]);
        let no_eth0 = node.ip_of(1).is_none();
        step("network connect", &["network", "connect", &node.net, &c1], &[1, 2]);
        let id1 = node.id_of(1);
        node.podman_ok(&["rm", "-f", "-t", "0", &c1]);
        let (veths, ports, leases) = node.leftovers();
        let after_rm = (veths, ports.contains(&id1), leases.len());
        seen.push(("rm".into(), node.connectivity(&[2])));
        (seen, stopped, kept_ip, no_eth0, after_rm)
    });
    for (what, m) in &kernel.0 {
        all_true(&format!("reference plugin after {what}"), m);
    }
    assert_eq!(user.0, kernel.0, "connectivity after each step differs");
    // One container left running: one veth, one lease; no port for the stopped one.
    assert_eq!(kernel.1, (1, 0, 1), "the reference plugin after stop");
    assert_eq!(user.1, (1, 1, 1), "userbridge after stop: one veth, one port (c2's), one lease");
    assert!(kernel.2 && user.2, "network reload keeps the address (CNI_ARGS IP=)");
    assert!(kernel.3 && user.3, "network disconnect removes eth0");
    assert_eq!(kernel.4, (1, false, 1), "the reference plugin after rm");
    assert_eq!(user.4, (1, false, 1), "userbridge after rm: c2's veth and lease only, no port for c1");
}

/// Runs a plugin directly on `node` (in its namespace) for pod namespace `pod`.
fn plugin_call(node: &str, plugin: Plugin, cmd: &str, cid: &str, pod: Option<&str>, conf: &[u8]) -> (i32, Value) {
    let exe = match plugin {
        Plugin::Bridge => format!("{REFERENCE_PLUGINS}/bridge"),
        Plugin::Userbridge => BIN.to_string(),
    };
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{node}"))
        .arg(exe)
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", REFERENCE_PLUGINS)
        .env_remove("CNI_NETNS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = pod {
        c.env("CNI_NETNS", format!("/run/netns/{p}"));
    }
    let mut child = c.spawn().expect("running the plugin");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), conf).unwrap();
    let o = child.wait_with_output().unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o.status.code().unwrap_or(-1), v)
}

/// The keys of a JSON value, recursively: its shape.
fn shape(v: &Value, at: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{at}.{k}");
                out.insert(p.clone());
                shape(x, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                shape(x, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_add_result_has_the_reference_shape_field_by_field() {
    for version in ["0.4.0", "1.0.0"] {
        let (kernel, user) = both(|p| {
            let node = Node::new("rs", p);
            let pod = TestNs::new(&format!("{}p", node.name()));
            let mut conf = node.conf.clone();
            conf["cniVersion"] = json!(version);
            let (code, result) =
                plugin_call(node.name(), p, "ADD", "cid0001", Some(&pod.0), conf.to_string().as_bytes());
            assert_eq!(code, 0, "{p:?} ADD: {result}");
            // Facts to check each value against.
            let mac = |ns: &str, ifname: &str| {
                let o = ns_ok(ns, &["cat", &format!("/sys/class/net/{ifname}/address")]);
                o.trim().to_string()
            };
            let pod_mac = mac(&pod.0, "eth0");
            let veth = result["interfaces"][1]["name"].as_str().unwrap_or_default().to_string();
            let facts = (pod_mac, mac(node.name(), "cni0"), mac(node.name(), &veth));
            let (code, _) = plugin_call(node.name(), p, "DEL", "cid0001", Some(&pod.0), conf.to_string().as_bytes());
            assert_eq!(code, 0);
            (result, facts, pod.0.clone())
        });
        let (k, u) = (&kernel.0, &user.0);
        let (mut ks, mut us) = (BTreeSet::new(), BTreeSet::new());
        shape(k, "", &mut ks);
        shape(u, "", &mut us);
        assert_eq!(us, ks, "{version}: the result's keys differ\nreference {k:#}\nuserbridge {u:#}");
        // Equal: the version, the names of the bridge and the pod's interface,
        // the IPs, gateways and routes (same IPAM, fresh leases), DNS.
        for p in ["/cniVersion", "/interfaces/0/name", "/interfaces/2/name", "/ips", "/routes", "/dns"] {
            assert_eq!(u.pointer(p), k.pointer(p), "{version}: {p}");
        }
        // Differ by nature, each checked against the node: the sandbox path
        // (each its own pod), every MAC, and the host end's name (random in
        // the reference; a hash of container and interface here).
        for (r, facts, pod) in [&kernel, &user] {
            assert_eq!(r["interfaces"][2]["sandbox"], json!(format!("/run/netns/{pod}")));
            assert_eq!(r["interfaces"][2]["mac"], json!(facts.0), "the pod's MAC");
            assert_eq!(r["interfaces"][0]["mac"], json!(facts.1), "the bridge's MAC");
            assert_eq!(r["interfaces"][1]["mac"], json!(facts.2), "the host end's MAC");
            assert!(r["interfaces"][1]["name"].as_str().unwrap().starts_with("veth"));
        }
    }
}

#[test]
fn bad_configurations_give_the_reference_error_codes() {
    /// Changes the configuration, or returns the raw stdin to send instead.
    type Edit = fn(&mut Value) -> Option<String>;
    let cases: [(&str, Edit); 5] = [
        ("truncated JSON", |c| Some(c.to_string()[..40].to_string())),
        ("an unknown ipam.type", |c| {
            c["ipam"]["type"] = json!("no-such-ipam");
            None
        }),
        ("a /33 subnet", |c| {
            c["ipam"]["ranges"] = json!([[{"subnet": "10.244.1.0/33"}]]);
            None
        }),
        ("vlan 5000", |c| {
            c["vlan"] = json!(5000);
            None
        }),
        ("no CNI_NETNS", |_| None),
    ];
    let (kernel, user) = both(|p| {
        let node = Node::new("bc", p);
        let pod = TestNs::new(&format!("{}p", node.name()));
        let mut codes = BTreeMap::new();
        for (i, (what, edit)) in cases.iter().enumerate() {
            let mut conf = node.conf.clone();
            let raw = edit(&mut conf).unwrap_or_else(|| conf.to_string());
            let netns = (*what != "no CNI_NETNS").then_some(pod.0.as_str());
            let cid = format!("bad{i}");
            let (code, err) = plugin_call(node.name(), p, "ADD", &cid, netns, raw.as_bytes());
            assert_eq!(code, 1, "{p:?} {what}: exit code");
            assert!(err["msg"].as_str().is_some_and(|m| !m.is_empty()), "{p:?} {what}: {err}");
            codes.insert(*what, err["code"].as_u64());
        }
        // userbridge leaves nothing of a failed ADD (the reference plugin
        // leaves the pair of an IPAM failure to the runtime's DEL).
        let pod_links = ns_ok(&pod.0, &["ip", "-o", "link"]);
        (codes, node.leftovers(), pod_links.lines().count())
    });
    assert_eq!(user.0, kernel.0, "error codes");
    assert_eq!(kernel.0["truncated JSON"], Some(6));
    assert_eq!(kernel.0["no CNI_NETNS"], Some(4));
    assert_eq!(user.1, (0, vec![], BTreeSet::new()), "userbridge left veths, ports or leases behind");
    assert_eq!(user.2, 1, "userbridge left an interface in the pod (only lo should be there)");
}

/// A same-node Kubernetes Service: a DNAT on the node from a virtual IP to
/// one container, reached from another. The kernel bridge passes the
/// backend's reply through the node's conntrack (br_netfilter, on by
/// default); userbridge cannot, and its plugin masquerades such traffic
/// instead (`serviceMasq`, on with `isGateway`). Without that rule the
/// Service does not answer on userbridge: that is what the rule is for.
#[test]
fn a_same_node_service_answers_on_both_and_needs_the_plugins_rule_on_userbridge() {
    let service = |node: &Node| -> bool {
        node.podman_ok(&[
            "run",
            "-d",
            "--name",
            &node.container(1),
            "--network",
            &node.net,
            "localhost/ub-busybox",
            "sh",
            "-c",
            "echo hello-from-c1 > /www/index.html && exec httpd -f -p 8080 -h /www",
        ]);
        node.run(2);
        let backend = node.ip_of(1).unwrap();
        ns_ok(
            node.name(),
            &[
                "iptables",
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-d",
                "10.96.0.10/32",
                "-p",
                "tcp",
                "--dport",
                "80",
                "-j",
                "DNAT",
                "--to-destination",
                &format!("{backend}:8080"),
            ],
        );
        // The backend listens before the client asks (no fixed sleep).
        wait_until("httpd to listen", Duration::from_secs(10), || {
            node.podman(&["exec", &node.container(1), "sh", "-c", "netstat -ltn | grep -q :8080"]).status.success()
        });
        // busybox-static's wget crashes with -T: its time limit comes from `timeout`.
        let o =
            node.podman(&["exec", &node.container(2), "timeout", "5", "wget", "-q", "-O", "-", "http://10.96.0.10/"]);
        String::from_utf8_lossy(&o.stdout).contains("hello-from-c1")
    };
    let (kernel, user) = both(|p| service(&Node::new("sv", p)));
    assert!(kernel, "the Service through the reference plugin's bridge");
    assert_eq!(user, kernel, "the Service through userbridge (with the plugin's serviceMasq rule)");
    let without = Node::with("sx", Plugin::Userbridge, |c| c["serviceMasq"] = json!(false));
    assert!(!service(&without), "without serviceMasq the reply should bypass conntrack and the Service fail");
}

#[test]
fn forty_parallel_adds_then_dels_leave_nothing_and_the_daemon_as_it_was() {
    let node = Node::new("ch", Plugin::Userbridge);
    let pods: Vec<TestNs> = (0..40).map(|i| TestNs::new(&format!("{}p{i}", node.name()))).collect();
    let pid = node.daemon.as_ref().unwrap().child.id();
    let count = |what: &str| std::fs::read_dir(format!("/proc/{pid}/{what}")).map(|d| d.count()).unwrap_or(0);
    let (threads, fds) = (count("task"), count("fd"));
    let conf = node.conf.to_string();
    let name = node.name().to_string();
    let run_all = |cmd: &str| -> Vec<(i32, Value)> {
        std::thread::scope(|s| {
            let handles: Vec<_> = pods
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let (conf, name) = (&conf, &name);
                    s.spawn(move || {
                        plugin_call(name, Plugin::Userbridge, cmd, &format!("churn{i}"), Some(&p.0), conf.as_bytes())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    for (i, (code, out)) in run_all("ADD").iter().enumerate() {
        assert_eq!(*code, 0, "ADD {i}: {out}");
    }
    let (veths, ports, leases) = node.leftovers();
    assert_eq!((veths, ports.len(), leases.len()), (40, 40, 40));
    let addrs: BTreeSet<String> = leases.iter().cloned().collect();
    assert_eq!(addrs.len(), 40, "40 distinct addresses");
    // Every pod reaches the gateway through the daemon (one ping can be lost
    // on a machine busy with the rest of the suite: retried, with a deadline).
    for p in [&pods[0], &pods[39]] {
        wait_until("a pod to reach the gateway", Duration::from_secs(10), || ping(&p.0, GATEWAY, 1));
    }
    for (i, (code, out)) in run_all("DEL").iter().enumerate() {
        assert_eq!(*code, 0, "DEL {i}: {out}");
    }
    assert_eq!(node.leftovers(), (0, vec![], BTreeSet::new()), "after 40 DELs");
    let nat = ns_ok(node.name(), &["iptables", "-t", "nat", "-S"]);
    assert!(!nat.contains("UB-"), "masquerade chains left after the DELs:\n{nat}");
    wait_until("the daemon's threads and fds to come back", Duration::from_secs(10), || {
        count("task") == threads && count("fd") == fds
    });
}

#[test]
fn adds_racing_an_upgrade_are_each_served_whole_by_one_daemon() {
    // Four runtimes add pods one after another while the daemon upgrades
    // (`userbridge upgrade`: a new process takes over). An ADD that comes
    // during the handover is told to retry and is served by the new one:
    // every ADD succeeds once, every port is there once, nothing half-made.
    let node = Node::new("ug", Plugin::Userbridge);
    const N: usize = 40;
    let pods: Vec<TestNs> = (0..N).map(|i| TestNs::new(&format!("{}p{i}", node.name()))).collect();
    let conf = node.conf.to_string();
    let name = node.name().to_string();
    let t0 = std::time::Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let add = |i: usize| {
        let start = t0.elapsed();
        let (code, out) =
            plugin_call(&name, Plugin::Userbridge, "ADD", &format!("race{i}"), Some(&pods[i].0), conf.as_bytes());
        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (i, code, out, start, t0.elapsed())
    };
    let (calls, upgrade, new) = std::thread::scope(|s| {
        let runtimes: Vec<_> =
            (0..4).map(|r| s.spawn(move || (0..N / 4).map(|k| add(r * N / 4 + k)).collect::<Vec<_>>())).collect();
        // Once the runtimes are under way (a fifth of the ADDs done).
        wait_until("the first ADDs", Duration::from_secs(30), || {
            done.load(std::sync::atomic::Ordering::Relaxed) >= N / 5
        });
        let start = t0.elapsed();
        let up = node.daemon.as_ref().unwrap().query(&["upgrade", "--timeout", "30"]);
        let upgrade = (start, t0.elapsed());
        let calls: Vec<_> = runtimes.into_iter().flat_map(|h| h.join().unwrap()).collect();
        (calls, upgrade, up["pid"].as_u64().unwrap())
    });
    let _new = Adopted::new(new, None);
    for (i, code, out, _, _) in &calls {
        assert_eq!(*code, 0, "ADD {i}: {out}");
    }
    let during = calls.iter().filter(|(_, _, _, from, to)| *from <= upgrade.1 && *to >= upgrade.0).count();
    assert!(during > 0, "no ADD ran while the daemon upgraded ({upgrade:?}): the race was not run");
    let (veths, ports, leases) = node.leftovers();
    assert_eq!((veths, ports.len(), leases.len()), (N, N, N), "ports: {ports:?}");
    assert_eq!(ports.iter().collect::<BTreeSet<_>>().len(), N, "a port twice: {ports:?}");
    for p in [&pods[0], &pods[N - 1]] {
        wait_until("a pod to reach the gateway", Duration::from_secs(10), || ping(&p.0, GATEWAY, 1));
    }
    eprintln!("{during} of {N} ADDs overlapped the upgrade ({:?} to {:?})", upgrade.0, upgrade.1);
    for (i, pod) in pods.iter().enumerate() {
        let (code, out) =
            plugin_call(&name, Plugin::Userbridge, "DEL", &format!("race{i}"), Some(&pod.0), conf.as_bytes());
        assert_eq!(code, 0, "DEL {i}: {out}");
    }
    assert_eq!(node.leftovers(), (0, vec![], BTreeSet::new()), "after the DELs");
}

#[test]
fn del_succeeds_repeated_with_the_netns_gone_and_with_the_daemon_down() {
    let (kernel, user) = both(|p| {
        let node = Node::new("dl", p);
        let conf = node.conf.to_string();
        let pod = TestNs::new(&format!("{}p", node.name()));
        let mut codes = Vec::new();
        codes.push(plugin_call(node.name(), p, "ADD", "d1", Some(&pod.0), conf.as_bytes()).0);
        codes.push(plugin_call(node.name(), p, "DEL", "d1", Some(&pod.0), conf.as_bytes()).0);
        codes.push(plugin_call(node.name(), p, "DEL", "d1", Some(&pod.0), conf.as_bytes()).0);
        // A pod whose namespace is deleted before DEL.
        let gone = TestNs::new(&format!("{}g", node.name()));
        codes.push(plugin_call(node.name(), p, "ADD", "d2", Some(&gone.0), conf.as_bytes()).0);
        let path = gone.0.clone();
        drop(gone);
        codes.push(plugin_call(node.name(), p, "DEL", "d2", Some(&path), conf.as_bytes()).0);
        codes.push(plugin_call(node.name(), p, "DEL", "d3", None, conf.as_bytes()).0);
        (codes, node.leftovers())
    });
    assert_eq!(kernel.0, vec![0; 6]);
    assert_eq!(user.0, kernel.0);
    assert_eq!(user.1, (0, vec![], BTreeSet::new()));

    // With the daemon down, DEL still succeeds and frees the lease; the
    // restarted daemon drops the port whose interface is gone.
    let mut node = Node::new("dd", Plugin::Userbridge);
    let pod = TestNs::new(&format!("{}p", node.name()));
    let conf = node.conf.to_string();
    assert_eq!(plugin_call(node.name(), Plugin::Userbridge, "ADD", "d4", Some(&pod.0), conf.as_bytes()).0, 0);
    let d = node.daemon.take().unwrap();
    let socket = d.socket.clone();
    d.kill9();
    let (code, err) = plugin_call(node.name(), Plugin::Userbridge, "DEL", "d4", Some(&pod.0), conf.as_bytes());
    assert_eq!(code, 0, "{err}");
    assert!(node.leases().is_empty());
    // ADD with the daemon down is "try again later", and leaves nothing.
    let (code, err) = plugin_call(node.name(), Plugin::Userbridge, "ADD", "d5", Some(&pod.0), conf.as_bytes());
    assert_eq!((code, err["code"].as_u64()), (1, Some(11)), "{err}");
    node.daemon = Some(Daemon::start_in(node.name(), socket.to_str().unwrap(), &["--host-port", "cni0"]));
    assert_eq!(node.leftovers(), (0, vec![], BTreeSet::new()));
}

#[test]
fn ports_of_running_containers_survive_a_daemon_restart() {
    let mut node = Node::new("rr", Plugin::Userbridge);
    node.run(1);
    node.run(2);
    let ip2 = node.ip_of(2).unwrap();
    assert!(node.pings(1, &ip2));
    let d = node.daemon.take().unwrap();
    let socket = d.socket.clone();
    d.kill9();
    node.daemon = Some(Daemon::start_in(node.name(), socket.to_str().unwrap(), &["--host-port", "cni0"]));
    let (_, ports, _) = node.leftovers();
    let ids: BTreeSet<String> = [node.id_of(1), node.id_of(2)].into();
    assert_eq!(ports.into_iter().collect::<BTreeSet<_>>(), ids, "both containers' ports, with their metadata");
    // The gateway address the plugin put on the host port came back with it.
    all_true("after the restart", &node.connectivity(&[1, 2]));
    node.podman_ok(&["rm", "-f", "-t", "0", &node.container(1)]);
    let (veths, ports, leases) = node.leftovers();
    assert_eq!((veths, ports.len(), leases.len()), (1, 1, 1));
}

#[test]
fn check_status_and_gc_as_cni_1_1_says() {
    let mut node = Node::new("ck", Plugin::Userbridge);
    let pod = TestNs::new(&format!("{}p", node.name()));
    // ADD and CHECK at 1.0.0 (host-local 1.1.1 speaks no 1.1.0); STATUS and GC at 1.1.0.
    let mut conf = node.conf.clone();
    let (code, result) =
        plugin_call(node.name(), Plugin::Userbridge, "ADD", "k1", Some(&pod.0), conf.to_string().as_bytes());
    assert_eq!(code, 0, "{result}");
    let mut check = conf.clone();
    check["prevResult"] = result.clone();
    let name = node.name().to_string();
    let call = |cmd: &str, c: &Value, cid: &str| {
        plugin_call(&name, Plugin::Userbridge, cmd, cid, Some(&pod.0), c.to_string().as_bytes())
    };
    assert_eq!(call("CHECK", &check, "k1").0, 0, "CHECK right after ADD");
    // CHECK sees an address gone from the pod.
    let addr = result["ips"][0]["address"].as_str().unwrap();
    ns_ok(&pod.0, &["ip", "addr", "del", addr, "dev", "eth0"]);
    let (code, err) = call("CHECK", &check, "k1");
    assert_eq!(code, 1);
    assert!(err["msg"].as_str().unwrap().contains(addr), "{err}");
    ns_ok(&pod.0, &["ip", "addr", "add", addr, "dev", "eth0"]);
    ns_ok(&pod.0, &["ip", "route", "replace", "default", "via", GATEWAY]);
    assert_eq!(call("CHECK", &check, "k1").0, 0, "CHECK after repair");
    conf["cniVersion"] = json!("1.1.0");
    assert_eq!(call("STATUS", &conf, "k1").0, 0, "STATUS with the daemon up");
    // GC keeps what is valid, collects the rest.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "k1", "ifname": "eth0"}]);
    assert_eq!(call("GC", &gc, "k1").0, 0);
    assert_eq!(node.leftovers().1, vec!["k1".to_string()]);
    gc["cni.dev/valid-attachments"] = json!([]);
    assert_eq!(call("GC", &gc, "k1").0, 0);
    let (veths, ports, _) = node.leftovers();
    assert_eq!((veths, ports.len()), (0, 0), "GC detached the port and deleted the pair");
    let bridges = node.daemon.as_ref().unwrap().query(&["bridge", "list"]);
    assert_eq!(bridges[0]["name"], "cni0", "GC deleted a bridge the configuration made: {bridges}");
    let (code, err) = call("CHECK", &check, "k1");
    assert_eq!(code, 1, "CHECK after GC: {err}");
    node.daemon.take().unwrap().stop();
    let (code, err) = call("STATUS", &conf, "k1");
    assert_eq!((code, err["code"].as_u64()), (1, Some(50)), "STATUS with the daemon down: {err}");
}

/// `portIsolation` and `macspoofchk` through both plugins: two pods on
/// isolated ports cannot reach each other but reach their gateway, and a pod
/// that changes its MAC is cut off until it changes it back (the reference
/// plugin's nftables rule; userbridge's locked port). The reference plugin
/// on these machines (1.1.1) predates `portIsolation` and ignores it; what
/// later versions do for it, `bridge link set dev VETH isolated on`, is done
/// here by hand on its node.
#[test]
fn isolation_and_spoof_check_keys_behave_as_the_reference_plugin() {
    let (kernel, user) = both(|p| {
        let node = Node::with("is", p, |c| {
            c["portIsolation"] = json!(true);
            c["macspoofchk"] = json!(true);
        });
        let conf = node.conf.to_string();
        let pods: Vec<TestNs> = (1..=2).map(|i| TestNs::new(&format!("{}p{i}", node.name()))).collect();
        let mut ips = Vec::new();
        for (i, pod) in pods.iter().enumerate() {
            let (code, r) = plugin_call(node.name(), p, "ADD", &format!("iso{i}"), Some(&pod.0), conf.as_bytes());
            assert_eq!(code, 0, "{p:?} ADD: {r}");
            ips.push(r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string());
            if p == Plugin::Bridge {
                let veth = r["interfaces"][1]["name"].as_str().unwrap();
                ns_ok(node.name(), &["bridge", "link", "set", "dev", veth, "isolated", "on"]);
            }
        }
        let mut m = BTreeMap::new();
        m.insert("p1 -> p2 (both isolated)", ping(&pods[0].0, &ips[1], 1));
        m.insert("p1 -> gateway", ping(&pods[0].0, GATEWAY, 1));
        let mac = ns_ok(&pods[0].0, &["cat", "/sys/class/net/eth0/address"]).trim().to_string();
        ns_ok(&pods[0].0, &["ip", "neigh", "flush", "all"]);
        ns_ok(&pods[0].0, &["ip", "link", "set", "eth0", "address", "02:00:00:00:aa:01"]);
        m.insert("p1 -> gateway with a spoofed MAC", ping(&pods[0].0, GATEWAY, 1));
        ns_ok(&pods[0].0, &["ip", "link", "set", "eth0", "address", &mac]);
        ns_ok(&pods[0].0, &["ip", "neigh", "flush", "all"]);
        m.insert("p1 -> gateway with its MAC back", ping(&pods[0].0, GATEWAY, 1));
        for (i, pod) in pods.iter().enumerate() {
            let (code, r) = plugin_call(node.name(), p, "DEL", &format!("iso{i}"), Some(&pod.0), conf.as_bytes());
            assert_eq!(code, 0, "{p:?} DEL: {r}");
        }
        m
    });
    let want: BTreeMap<&str, bool> = [
        ("p1 -> p2 (both isolated)", false),
        ("p1 -> gateway", true),
        ("p1 -> gateway with a spoofed MAC", false),
        ("p1 -> gateway with its MAC back", true),
    ]
    .into();
    assert_eq!(kernel, want, "the reference plugin");
    assert_eq!(user, kernel, "userbridge");
}

/// `vlan` through the plugin (userbridge alone: this kernel's bridge
/// filters no VLANs): pods of VLAN 100 reach each other, not a pod of 200;
/// the daemon filters VLANs from the first such ADD on, and `vlan show`
/// lists the access ports.
#[test]
fn vlan_keys_make_access_ports() {
    let node = Node::with("vl", Plugin::Userbridge, |c| {
        for k in ["isGateway", "isDefaultGateway", "ipMasq", "ipam"] {
            c.as_object_mut().unwrap().remove(k);
        }
    });
    let mut pods = Vec::new();
    for (i, vlan) in [(1, 100), (2, 100), (3, 200)] {
        let pod = TestNs::new(&format!("{}p{i}", node.name()));
        let mut conf = node.conf.clone();
        conf["vlan"] = json!(vlan);
        conf["preserveDefaultVlan"] = json!(false);
        let (code, r) = plugin_call(
            node.name(),
            Plugin::Userbridge,
            "ADD",
            &format!("vl{i}"),
            Some(&pod.0),
            conf.to_string().as_bytes(),
        );
        assert_eq!(code, 0, "ADD: {r}");
        ns_ok(&pod.0, &["ip", "addr", "add", &format!("192.168.77.{i}/24"), "dev", "eth0"]);
        pods.push(pod);
    }
    assert!(ping(&pods[0].0, "192.168.77.2", 1), "same VLAN");
    assert!(!ping(&pods[0].0, "192.168.77.3", 1), "another VLAN");
    let d = node.daemon.as_ref().unwrap();
    assert_eq!(d.query(&["stats"])["vlan_filtering"], true);
    let shown = d.query(&["vlan", "show"]);
    let pvids: BTreeSet<u64> = shown
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["vlans"].as_array().unwrap().iter().filter(|v| v["pvid"] == true).map(|v| v["vid"].as_u64().unwrap())
        })
        .collect();
    assert!(pvids.contains(&100) && pvids.contains(&200), "{shown}");
}

#[test]
fn a_plugin_run_outside_the_daemons_namespace_says_where_to_run_it() {
    // The plugin puts the pod's gateway on the host port the daemon
    // reports, so that port must be this namespace's own: the same name and
    // the same MAC. Run elsewhere, the plugin refuses (code 7) and says
    // where to run it, also where an interface of the same name exists.
    let node = Node::new("where", Plugin::Userbridge);
    let elsewhere = TestNs::new(&format!("{}e", node.name()));
    let pod = TestNs::new(&format!("{}p", node.name()));
    let add = |cid: &str| {
        plugin_call(&elsewhere.0, Plugin::Userbridge, "ADD", cid, Some(&pod.0), node.conf.to_string().as_bytes())
    };
    let (code, err) = add("where1");
    assert_eq!((code, err["code"].as_u64()), (1, Some(7)), "{err}");
    assert!(err["msg"].as_str().unwrap().contains("cni0 is not in this network namespace"), "{err}");
    // A namesake: another cni0, with a MAC of its own.
    ns_ok(&elsewhere.0, &["ip", "link", "add", "cni0", "type", "veth", "peer", "name", "cni0p"]);
    let (code, err) = add("where2");
    assert_eq!((code, err["code"].as_u64()), (1, Some(7)), "{err}");
    assert!(err["msg"].as_str().unwrap().contains("cni0 is not in this network namespace"), "{err}");
    assert_eq!(node.leftovers(), (0, vec![], BTreeSet::new()), "nothing of the refused ADDs");
}

/// Who reaches whom on a node with two networks, A (containers 1 and 2,
/// bridge cni0) and B (3 and 4, cni1): inside each, each its gateway,
/// across (the node routes), the node each.
fn two_networks_reach(node: &Node) -> BTreeMap<String, bool> {
    let ids = [1, 2, 3, 4];
    let ips: BTreeMap<usize, String> =
        ids.iter().map(|&i| (i, node.ip_of(i).unwrap_or_else(|| panic!("c{i} has no address")))).collect();
    let mut m = BTreeMap::new();
    for (i, j) in [(1, 2), (2, 1), (3, 4), (4, 3), (1, 3), (3, 1), (2, 4)] {
        m.insert(format!("c{i} -> c{j}"), node.pings(i, &ips[&j]));
    }
    for (i, gw) in [(1, GATEWAY), (3, "10.244.2.1")] {
        m.insert(format!("c{i} -> gateway {gw}"), node.pings(i, gw));
    }
    for i in ids {
        m.insert(format!("node -> c{i}"), ping(node.name(), &ips[&i], 1));
    }
    m
}

#[test]
fn two_networks_on_two_bridges_of_one_daemon_as_on_two_kernel_bridges() {
    let (kernel, user) = both(|p| {
        // No bridge at start: each network's first ADD makes its bridge.
        let node = Node::build("two", p, |c| c["ipMasq"] = json!(false), &[]);
        let net_b = node.add_network("b", "cni1", "10.244.2.0/24");
        node.run(1);
        node.run(2);
        node.run_on(3, &net_b);
        node.run_on(4, &net_b);
        let reach = two_networks_reach(&node);
        let Some(d) = &node.daemon else {
            for i in 1..=4 {
                node.podman_ok(&["rm", "-f", "-t", "0", &node.container(i)]);
            }
            return (reach, None);
        };
        // Userbridge only: both bridges of the one daemon, made by the plugin,
        // outlive a kill -9 with their ifindex and a route added by hand.
        let list = d.query(&["bridge", "list"]);
        let made: Vec<(String, String)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|b| (b["name"].as_str().unwrap().to_string(), b["network"].as_str().unwrap_or("").to_string()))
            .collect();
        assert_eq!(made, [("cni0".to_string(), node.net.clone()), ("cni1".to_string(), net_b.clone())]);
        let ns = node.name().to_string();
        let index = |br: &str| ns_ok(&ns, &["cat", &format!("/sys/class/net/{br}/ifindex")]);
        let before = (index("cni0"), index("cni1"));
        ns_ok(node.name(), &["ip", "route", "add", "10.99.0.0/24", "dev", "cni1"]);
        let mut node = node;
        let socket = node.daemon.as_ref().unwrap().socket.clone();
        node.daemon.take().unwrap().kill9();
        node.daemon = Some(Daemon::start_in(node.name(), socket.to_str().unwrap(), &[]));
        assert_eq!((index("cni0"), index("cni1")), before, "the bridges' interfaces were made anew");
        let routes = ns_ok(node.name(), &["ip", "route", "show", "dev", "cni1"]);
        assert!(routes.contains("10.99.0.0/24"), "the route added by hand went: {routes}");
        let after_kill = two_networks_reach(&node);
        for i in 1..=4 {
            node.podman_ok(&["rm", "-f", "-t", "0", &node.container(i)]);
        }
        let (veths, ports, _) = node.leftovers();
        (reach, Some((after_kill, veths, ports.len())))
    });
    all_true("two networks of the reference bridge plugin", &kernel.0);
    assert_eq!(user.0, kernel.0, "userbridge's two networks differ from the reference plugin's");
    let (after_kill, veths, ports) = user.1.unwrap();
    assert_eq!(after_kill, kernel.0, "after the daemon's kill -9 and restart");
    assert_eq!((veths, ports), (0, 0), "podman rm left veths or ports");
}

#[test]
fn a_bridge_deleted_while_adds_race_for_it_leaves_nothing_half_made() {
    let node = Node::build("race", Plugin::Userbridge, |c| c["ipMasq"] = json!(false), &[]);
    let d = node.daemon.as_ref().unwrap();
    let pods: Vec<TestNs> = (0..8).map(|i| TestNs::new(&format!("{}p{i}", node.name()))).collect();
    let conf = node.conf.to_string();
    let name = node.name().to_string();
    let adds: Vec<(i32, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (conf, name) = (&conf, &name);
                s.spawn(move || {
                    plugin_call(name, Plugin::Userbridge, "ADD", &format!("race{i}"), Some(&p.0), conf.as_bytes())
                })
            })
            .collect();
        // Meanwhile the bridge is deleted, as often as it is there, a few times.
        for _ in 0..4 {
            let _ = d.cli(&["bridge", "del", "cni0", "--detach"]);
            std::thread::sleep(Duration::from_millis(20));
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let failed = adds.iter().filter(|(code, _)| *code != 0).count();
    let first = adds.iter().find(|(code, _)| *code != 0).map(|(_, out)| out["msg"].to_string());
    eprintln!(
        "{failed} of {} ADDs refused while the bridge was deleted under them; the first said {first:?}",
        adds.len()
    );
    for (i, (code, out)) in adds.iter().enumerate() {
        if *code != 0 {
            let msg = out["msg"].as_str().unwrap_or_default();
            assert!(!msg.is_empty() && !msg.contains('\n'), "ADD {i} failed without one line: {out}");
        }
    }
    for (i, p) in pods.iter().enumerate() {
        let (code, out) =
            plugin_call(&name, Plugin::Userbridge, "DEL", &format!("race{i}"), Some(&p.0), conf.as_bytes());
        assert_eq!(code, 0, "DEL {i}: {out}");
    }
    assert_eq!(node.leftovers(), (0, vec![], BTreeSet::new()), "after the DELs");
    // And the network works again: the next ADD makes the bridge if it has to.
    let (code, out) = plugin_call(&name, Plugin::Userbridge, "ADD", "again", Some(&pods[0].0), conf.as_bytes());
    assert_eq!(code, 0, "{out}");
    wait_until("the pod to reach its gateway", Duration::from_secs(10), || ping(&pods[0].0, GATEWAY, 1));
    plugin_call(&name, Plugin::Userbridge, "DEL", "again", Some(&pods[0].0), conf.as_bytes());
}

#[test]
fn gc_deletes_the_bridge_its_networks_add_made_once_no_port_is_on_it() {
    let node = Node::build("gcb", Plugin::Userbridge, |c| c["cniVersion"] = json!("1.1.0"), &[]);
    let d = node.daemon.as_ref().unwrap();
    let pods: Vec<TestNs> = (1..=2).map(|i| TestNs::new(&format!("{}p{i}", node.name()))).collect();
    let mut add = node.conf.clone();
    add["cniVersion"] = json!("1.0.0");
    let name = node.name().to_string();
    let call = |cmd: &str, c: &Value, cid: &str, pod: &TestNs| {
        plugin_call(&name, Plugin::Userbridge, cmd, cid, Some(&pod.0), c.to_string().as_bytes())
    };
    for (i, pod) in pods.iter().enumerate() {
        let (code, out) = call("ADD", &add, &format!("g{i}"), pod);
        assert_eq!(code, 0, "{out}");
    }
    let list = d.query(&["bridge", "list"]);
    assert_eq!((list[0]["name"].as_str(), list[0]["network"].as_str()), (Some("cni0"), Some(node.net.as_str())));
    // One attachment still valid: its port stays, and so does the bridge.
    let mut gc = node.conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "g0", "ifname": "eth0"}]);
    assert_eq!(call("GC", &gc, "g0", &pods[0]).0, 0);
    assert_eq!(d.query(&["bridge", "list"])[0]["ports"], 1);
    // None valid: the ports go, then the bridge its ADD made, with its interface.
    gc["cni.dev/valid-attachments"] = json!([]);
    assert_eq!(call("GC", &gc, "g0", &pods[0]).0, 0);
    assert_eq!(d.query(&["bridge", "list"]), json!([]));
    assert!(!ns_exec(node.name(), &["ip", "link", "show", "cni0"]).status.success(), "cni0 stayed");
    // DEL after GC succeeds, and the next ADD makes the bridge again.
    assert_eq!(call("DEL", &add, "g0", &pods[0]).0, 0);
    let (code, out) = call("ADD", &add, "g2", &pods[1]);
    assert_eq!(code, 0, "{out}");
    wait_until("the pod to reach its gateway", Duration::from_secs(10), || ping(&pods[1].0, GATEWAY, 1));
    assert_eq!(call("DEL", &add, "g2", &pods[1]).0, 0);
}

/// A pod's who-has for its gateway gets one answer, from the bridge's own
/// MAC, as on the reference plugin's `cni0`: the host end of its veth (an
/// ordinary interface of the node, read by the switch) answers no ARP for
/// the node's addresses, so the pod's traffic goes through the switch to the
/// bridge, never into the node through its own veth.
#[test]
fn a_pods_gateway_answers_from_the_bridges_mac_alone_not_from_its_veth() {
    let (kernel, user) = both(|p| {
        let node = Node::new("gm", p);
        let conf = node.conf.to_string();
        let pods: Vec<TestNs> = (1..=2).map(|i| TestNs::new(&format!("{}p{i}", node.name()))).collect();
        let mut seen = Vec::new();
        for (i, pod) in pods.iter().enumerate() {
            let (code, r) = plugin_call(node.name(), p, "ADD", &format!("gm{i}"), Some(&pod.0), conf.as_bytes());
            assert_eq!(code, 0, "{r}");
            assert!(ping(&pod.0, GATEWAY, 1), "pod {i} -> gateway");
            // Each who-has for the gateway: the MACs that answer it.
            let o = ns_exec(&pod.0, &["busybox", "arping", "-c", "2", "-I", "eth0", GATEWAY]);
            let out = String::from_utf8_lossy(&o.stdout);
            let macs: Vec<String> = out
                .lines()
                .filter_map(|l| l.split('[').nth(1).and_then(|m| m.split(']').next()))
                .map(str::to_string)
                .collect();
            seen.push(macs);
        }
        let bridge = ns_ok(node.name(), &["cat", "/sys/class/net/cni0/address"]).trim().to_string();
        for (i, pod) in pods.iter().enumerate() {
            plugin_call(node.name(), p, "DEL", &format!("gm{i}"), Some(&pod.0), conf.as_bytes());
        }
        seen.into_iter().map(|macs| macs.iter().map(|m| m == &bridge).collect()).collect::<Vec<Vec<bool>>>()
    });
    assert_eq!(kernel, vec![vec![true; 2]; 2], "the reference plugin: one answer per who-has, from cni0's MAC");
    assert_eq!(user, kernel, "userbridge: answers from another MAC (the pod's own veth's?)");
}

/// The reference `firewall` plugin chained after each plugin keeps its
/// meaning: with the node's FORWARD policy DROP (as firewalld and Docker
/// leave it), it lets the network's containers reach each other; without
/// it they cannot. On the reference plugin's bridge through br_netfilter,
/// on userbridge through its way into the node's netfilter.
#[test]
fn the_firewall_plugin_chained_after_keeps_its_meaning() {
    let (kernel, user) = both(|p| {
        let reach = |tag: &str, firewall: bool| {
            let node = Node::new(tag, p);
            ns_ok(node.name(), &["iptables", "-P", "FORWARD", "DROP"]);
            let then: Vec<Value> =
                if firewall { vec![json!({"type": "firewall", "backend": "iptables"})] } else { vec![] };
            node.write_chain_of(&node.net, &node.conf, &then);
            node.run(1);
            node.run(2);
            let ip2 = node.ip_of(2).expect("c2 has an address");
            node.pings(1, &ip2)
        };
        (reach("fw", true), reach("fx", false))
    });
    assert_eq!(kernel, (true, false), "the reference plugin: firewall lets c1 reach c2 past FORWARD DROP");
    assert_eq!(user, kernel, "userbridge");
}

/// TCP bits per second from `client_ns` to a server at `addr` in
/// `server_ns` over `secs` seconds (`reverse`: the server sends).
fn tcp_rate(client_ns: &str, server_ns: &str, addr: &str, reverse: bool, secs: u32) -> f64 {
    let _server = Iperf3Server::start(server_ns, addr);
    let t = secs.to_string();
    let mut args = vec!["timeout", "60", "iperf3", "-c", addr, "-t", &t, "-J"];
    if reverse {
        args.push("-R");
    }
    let o = ns_exec(client_ns, &args);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "iperf3 to {addr}: {out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap()
}

/// The reference `bandwidth` plugin chained after each plugin shapes a
/// container's egress (an ifb redirect on its host veth's tc ingress,
/// which userbridge receives after) and its ingress (a qdisc on the host
/// veth) as after `bridge`, and a rate changed with `tc` at run time
/// applies, also after userbridge restarts: each TCP rate within 10% of the
/// reference's. Each direction has its own rate, so one limit cannot pass
/// for the other.
#[test]
fn the_bandwidth_plugin_chained_after_shapes_both_ways_as_after_bridge() {
    const EGRESS: u64 = 8_000_000;
    const INGRESS: u64 = 16_000_000;
    let rates = |p: Plugin| {
        let mut node = Node::new("bw", p);
        let bw = json!({"type": "bandwidth", "egressRate": EGRESS, "egressBurst": 400_000,
            "ingressRate": INGRESS, "ingressBurst": 400_000});
        node.write_chain_of(&node.net, &node.conf, &[bw]);
        node.run(1);
        let pod = node.netns_of(1);
        let egress = tcp_rate(&pod, node.name(), GATEWAY, false, 4);
        let ingress = tcp_rate(&pod, node.name(), GATEWAY, true, 4);
        // The plugin's ifb carries the container's egress: its rate raised at run time.
        let links = ns_ok(node.name(), &["ip", "-o", "link", "show", "type", "ifb"]);
        let ifb: Vec<&str> = links.lines().filter_map(|l| l.split(": ").nth(1)).collect();
        assert_eq!(ifb.len(), 1, "one ifb for the one container: {links}");
        ns_ok(
            node.name(),
            &[
                "tc", "qdisc", "replace", "dev", ifb[0], "root", "tbf", "rate", "24mbit", "burst", "50kb", "latency",
                "25ms",
            ],
        );
        let raised = tcp_rate(&pod, node.name(), GATEWAY, false, 4);
        // A daemon started after the plugin ran (a crash, an upgrade) finds the qdisc there.
        if let Some(d) = node.daemon.take() {
            let socket = d.socket.clone();
            d.kill9();
            node.daemon = Some(Daemon::start_in(node.name(), socket.to_str().unwrap(), &["--host-port", "cni0"]));
        }
        let restarted = tcp_rate(&pod, node.name(), GATEWAY, false, 4);
        [egress, ingress, raised, restarted]
    };
    let (kernel, user) = both(rates);
    eprintln!("bits/s egress, ingress, egress raised, after a restart: bridge {kernel:?}, userbridge {user:?}");
    for (k, want) in kernel.iter().zip([EGRESS, INGRESS, 24_000_000, 24_000_000]) {
        let want = want as f64;
        assert!((want * 0.7..want * 1.1).contains(k), "the reference shapes to {want}: {kernel:?}");
    }
    for (u, k) in user.iter().zip(kernel) {
        assert!((u - k).abs() <= 0.1 * k, "userbridge {user:?} not within 10% of bridge {kernel:?}");
    }
}
