//! The Docker network driver against Docker's built-in `bridge` driver:
//! real Docker 20.10 (a private dockerd per test, in a namespace of the
//! test's own: scripts/docker-setup.sh installs it and makes the image),
//! two containers on a network of each driver, the same connectivity
//! asserted; then the lifecycle (stop, start, restart, disconnect, connect,
//! rm, network rm) leaves exactly the ports and veths that should exist,
//! restarts of the driver, the daemon and dockerd lose nothing, and what
//! the driver cannot do is refused with a message Docker shows.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const DOCKER: &str = "/usr/bin/docker";
const DOCKERD: &str = "/usr/sbin/dockerd";
/// The userbridge network's subnet and gateway (the host port gets it).
const SUBNET: &str = "10.213.1.0/24";
const GATEWAY: &str = "10.213.1.1";
/// The built-in bridge driver's network, for the differential.
const BRIDGE_SUBNET: &str = "10.213.2.0/24";
const BRIDGE_GATEWAY: &str = "10.213.2.1";

/// The image tarball (scripts/docker-setup.sh), made once per machine.
fn image_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/docker-setup.sh");
        let o = Command::new("bash").arg(script).output().expect("running scripts/docker-setup.sh");
        assert!(o.status.success(), "docker setup: {}", String::from_utf8_lossy(&o.stderr));
        PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or_default().trim())
    })
}

/// A node: a namespace with a userbridge daemon (host port `ubgw0`), the
/// driver as `-d NAME` (a name unique to the test), and a private dockerd.
/// Dropping it removes the containers and networks, stops dockerd, the
/// driver and the daemon, and removes their files and the namespace.
struct Node {
    name: String,
    dir: PathBuf,
    exec_root: PathBuf,
    dockerd: Option<Child>,
    driver: Option<Child>,
    daemon: Option<Daemon>,
    /// Last: everything above runs in it.
    ns: TestNs,
}

impl Node {
    fn new(tag: &str) -> Node {
        let tar = image_tar();
        let name = unique(tag);
        let ns = TestNs::new(&name);
        let dir = PathBuf::from(format!("/var/tmp/{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let exec_root = PathBuf::from(format!("/run/{name}"));
        let mut node = Node { name, dir, exec_root, dockerd: None, driver: None, daemon: None, ns };
        node.start_daemon();
        node.start_driver();
        node.start_dockerd();
        node.docker_ok(&[
            "import",
            "-c",
            "CMD [\"/bin/sh\"]",
            "-c",
            "ENV PATH=/bin",
            tar.to_str().unwrap(),
            "bb:latest",
        ]);
        node
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("ub.sock")
    }

    fn start_daemon(&mut self) {
        let socket = self.socket();
        self.daemon = Some(Daemon::start_in(&self.ns.0, socket.to_str().unwrap(), &["--host-port", "ubgw0"]));
    }

    fn plugin_socket(&self) -> PathBuf {
        PathBuf::from(format!("/run/docker/plugins/{}.sock", self.name))
    }

    fn start_driver(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("driver.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.0, BIN, "docker-plugin", "--name", &self.name, "--log-level", "debug"])
            .arg("--socket")
            .arg(self.socket())
            .arg("--state")
            .arg(self.dir.join("driver.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting the driver");
        self.driver = Some(child);
        let sock = self.plugin_socket();
        wait_until("the driver's socket", Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
    }

    fn stop_driver(&mut self) {
        terminate(self.driver.take(), "the driver", Duration::from_secs(10));
    }

    fn docker_host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    fn start_dockerd(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("dockerd.log")).unwrap();
        // Its own configuration, so that nothing lands in /etc/docker (the
        // identity key dockerd makes on first start goes here instead).
        let conf = self.dir.join("daemon.json");
        let key = self.dir.join("key.json");
        std::fs::write(&conf, serde_json::json!({ "deprecated-key-path": key }).to_string()).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns.0))
            .arg(DOCKERD)
            .arg("--config-file")
            .arg(&conf)
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(&self.exec_root)
            .arg("--pidfile")
            .arg(self.dir.join("dockerd.pid"))
            .args(["-H", &self.docker_host()])
            .args(["--bridge", "none", "--iptables=false", "--ip-forward=false", "--ip-masq=false"])
            // Containers stopped with dockerd: SIGKILL after 1 s, not 10.
            .args(["--shutdown-timeout", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        self.dockerd = Some(child);
        wait_until("dockerd to answer", Duration::from_secs(60), || self.docker(&["version"]).status.success());
    }

    /// SIGTERM to dockerd, and wait (it stops its containers first).
    fn stop_dockerd(&mut self) {
        terminate(self.dockerd.take(), "dockerd", Duration::from_secs(60));
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .args(["-H", &self.docker_host()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running docker")
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The driver's log, for failure messages.
    fn logs(&self) -> String {
        let d = std::fs::read_to_string(self.dir.join("driver.log")).unwrap_or_default();
        let tail: Vec<&str> = d.lines().rev().take(30).collect();
        format!("driver log (last lines, newest first):\n{}", tail.join("\n"))
    }

    fn network(&self, driver: &str, net: &str, subnet: &str, gateway: &str) {
        self.docker_ok(&["network", "create", "-d", driver, "--subnet", subnet, "--gateway", gateway, net]);
    }

    fn run(&self, c: &str, net: &str) {
        self.docker_ok(&["run", "-d", "--name", c, "--network", net, "bb", "sleep", "100000"]);
    }

    fn pings(&self, c: &str, dst: &str) -> bool {
        self.docker(&["exec", c, "ping", "-c", "1", "-W", "3", dst]).status.success()
    }

    fn ip_of(&self, c: &str, net: &str) -> String {
        let f = format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}");
        self.docker_ok(&["inspect", "-f", &f, c]).trim().to_string()
    }

    /// Who reaches whom on network `net` (containers a and b, gateway gw):
    /// by address and by name (Docker's embedded DNS), the gateway, and
    /// the node (this namespace) reaching each.
    fn connectivity(&self, net: &str, a: &str, b: &str, gw: &str) -> Vec<(String, bool)> {
        let (ia, ib) = (self.ip_of(a, net), self.ip_of(b, net));
        vec![
            ("a -> b by address".into(), self.pings(a, &ib)),
            ("b -> a by address".into(), self.pings(b, &ia)),
            ("a -> b by name".into(), self.pings(a, b)),
            ("b -> a by name".into(), self.pings(b, a)),
            ("a -> gateway".into(), self.pings(a, gw)),
            ("node -> a".into(), ping(&self.ns.0, &ia, 1)),
            ("node -> b".into(), ping(&self.ns.0, &ib, 1)),
        ]
    }

    /// The switch's pod ports (the driver's `ubd…`), sorted.
    fn ports(&self) -> Vec<String> {
        let v = self.daemon.as_ref().unwrap().query(&["port", "list"]);
        let mut p: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .filter(|n| n.starts_with("ubd"))
            .map(String::from)
            .collect();
        p.sort();
        p
    }

    /// The node's veth ends the driver made: (`ubd…` host ends, `ubc…`
    /// container ends still on the node).
    fn veths(&self) -> (usize, usize) {
        let out = ns_ok(&self.ns.0, &["ip", "-o", "link", "show"]);
        let names: Vec<&str> =
            out.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap()).collect();
        (names.iter().filter(|n| n.starts_with("ubd")).count(), names.iter().filter(|n| n.starts_with("ubc")).count())
    }

    /// Waits until the switch has `n` pod ports and the node `n` veths.
    fn expect_ports(&self, n: usize, after: &str) {
        let t = Instant::now();
        while (self.ports().len(), self.veths()) != (n, (n, 0)) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "after {after}: ports {:?}, veths {:?}, want {n}\n{}",
                self.ports(),
                self.veths(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn host_addresses(&self) -> String {
        ns_ok(&self.ns.0, &["ip", "-o", "addr", "show", "dev", "ubgw0"])
    }
}

/// SIGTERM to `child`, if there is one, and wait for it to exit.
fn terminate(child: Option<Child>, what: &str, limit: Duration) {
    if let Some(mut c) = child {
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        wait_until(&format!("{what} to exit"), limit, || matches!(c.try_wait(), Ok(Some(_))));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.dockerd.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
            let nets = self.docker(&["network", "ls", "-q", "--filter", "type=custom"]);
            for id in String::from_utf8_lossy(&nets.stdout).split_whitespace() {
                let _ = self.docker(&["network", "rm", id]);
            }
            self.stop_dockerd();
        }
        self.stop_driver();
        let _ = std::fs::remove_file(self.plugin_socket());
        self.daemon.take();
        // Anything dockerd left mounted under its directories.
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(self.dir.to_str().unwrap()) || m.starts_with(self.exec_root.to_str().unwrap()))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.exec_root);
    }
}

#[test]
fn containers_connect_as_on_the_bridge_driver_and_leave_nothing_behind() {
    let node = Node::new("dk");
    let ub = format!("{}-ub", node.name);
    let br = format!("{}-br", node.name);
    node.network(&node.name, &ub, SUBNET, GATEWAY);
    node.network("bridge", &br, BRIDGE_SUBNET, BRIDGE_GATEWAY);
    assert!(
        node.host_addresses().contains(&format!("{GATEWAY}/24")),
        "the gateway on the host port: {}",
        node.host_addresses()
    );
    for (net, p) in [(&ub, "u"), (&br, "b")] {
        node.run(&format!("{p}1"), net);
        node.run(&format!("{p}2"), net);
    }
    node.expect_ports(2, "two containers");
    let theirs = node.connectivity(&br, "b1", "b2", BRIDGE_GATEWAY);
    let ours = node.connectivity(&ub, "u1", "u2", GATEWAY);
    assert_eq!(ours, theirs, "userbridge driver vs bridge driver\n{}", node.logs());
    assert!(ours.iter().all(|(_, ok)| *ok), "the bridge driver's outcome is full connectivity: {ours:?}");
    // The container's MAC is the bridge driver's (02:42 and its address).
    let mac = node.docker_ok(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{ub}\").MacAddress}}}}"),
        "u1",
    ]);
    let ip: std::net::Ipv4Addr = node.ip_of("u1", &ub).parse().unwrap();
    let o = ip.octets();
    assert_eq!(mac.trim(), format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]));
    // Each port carries its endpoint and network.
    let v = node.daemon.as_ref().unwrap().query(&["port", "list"]);
    let net_id = node.docker_ok(&["network", "inspect", "-f", "{{.Id}}", &ub]).trim().to_string();
    let metas: Vec<&Value> =
        v.as_array().unwrap().iter().filter(|p| p["name"].as_str().unwrap().starts_with("ubd")).collect();
    assert!(
        metas.iter().all(|p| p["meta"]["network"] == net_id.as_str() && p["meta"]["endpoint"].is_string()),
        "{metas:?}"
    );
    // tcpdump on the host port sees the containers' traffic, as on docker0.
    let (i1, i2) = (node.ip_of("u1", &ub), node.ip_of("u2", &ub));
    let dump = Tcpdump::start_on(&node.ns.0, "ubgw0", &[], "icmp");
    assert!(node.pings("u1", &i2));
    let seen = dump.finish_when("u1 <-> u2 on the host port", |l| {
        l.iter().any(|l| l.contains(&format!("{i1} > {i2}: ICMP echo request")))
            && l.iter().any(|l| l.contains(&format!("{i2} > {i1}: ICMP echo reply")))
    });
    assert!(seen.iter().any(|l| l.contains("echo reply")), "{seen:?}");

    // The lifecycle: exactly the ports and veths that should exist.
    node.docker_ok(&["stop", "-t", "0", "u1"]);
    node.expect_ports(1, "docker stop u1");
    node.docker_ok(&["start", "u1"]);
    node.expect_ports(2, "docker start u1");
    assert!(node.pings("u1", "u2"), "u1 -> u2 after start\n{}", node.logs());
    node.docker_ok(&["restart", "-t", "0", "u2"]);
    node.expect_ports(2, "docker restart u2");
    assert!(node.pings("u2", "u1"), "u2 -> u1 after restart");
    node.docker_ok(&["network", "disconnect", &ub, "u2"]);
    node.expect_ports(1, "network disconnect");
    node.docker_ok(&["network", "connect", &ub, "u2"]);
    node.expect_ports(2, "network connect");
    assert!(node.pings("u1", "u2"), "u1 -> u2 by name after connect");
    node.docker_ok(&["rm", "-f", "u1"]);
    node.expect_ports(1, "rm -f u1");
    node.docker_ok(&["rm", "-f", "u2"]);
    node.expect_ports(0, "rm -f u2");
    node.docker_ok(&["network", "rm", &ub]);
    assert!(!node.host_addresses().contains(GATEWAY), "network rm takes the gateway back: {}", node.host_addresses());
    let state: Value = serde_json::from_slice(&std::fs::read(node.dir.join("driver.json")).unwrap()).unwrap();
    assert_eq!((state["networks"].as_object().unwrap().len(), state["endpoints"].as_object().unwrap().len()), (0, 0));
}

#[test]
fn what_the_driver_cannot_do_is_refused_with_a_message() {
    let node = Node::new("dr");
    let ub = format!("{}-ub", node.name);
    node.network(&node.name, &ub, SUBNET, GATEWAY);
    // -p: refused, not ignored, and the container is not left attached.
    let o = node.docker(&["run", "-d", "--name", "cp", "-p", "8080:80", "--network", &ub, "bb", "sleep", "100000"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("publishing ports (-p) is not supported"), "{err}");
    node.expect_ports(0, "a refused -p");
    // A second network on the same host port.
    let o = node.docker(&["network", "create", "-d", &node.name, "--subnet", "10.213.3.0/24", "second"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("one network per host port"), "{err}");
    // Nothing half-made: one network, one gateway.
    let state = || -> Value { serde_json::from_slice(&std::fs::read(node.dir.join("driver.json")).unwrap()).unwrap() };
    assert_eq!(state()["networks"].as_object().unwrap().len(), 1);
    assert!(!node.host_addresses().contains("10.213.3."), "{}", node.host_addresses());
    // An option the driver does not know.
    node.docker_ok(&["network", "rm", &ub]);
    let o =
        node.docker(&["network", "create", "-d", &node.name, "-o", "foo=bar", "--subnet", "10.213.4.0/24", "third"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("unknown option -o foo"), "{err}");
    assert_eq!(state()["networks"].as_object().unwrap().len(), 0);
    assert!(!node.host_addresses().contains("10.213."), "{}", node.host_addresses());
    // Dual stack: the IPv6 gateway goes on the host port too, and back.
    let v6 = format!("{}-v6", node.name);
    node.docker_ok(&[
        "network",
        "create",
        "-d",
        &node.name,
        "--subnet",
        SUBNET,
        "--gateway",
        GATEWAY,
        "--ipv6",
        "--subnet",
        "fd00:213::/64",
        "--gateway",
        "fd00:213::1",
        &v6,
    ]);
    assert!(node.host_addresses().contains("fd00:213::1/64"), "{}", node.host_addresses());
    node.run("c6", &v6);
    // The gateway answers the moment the network exists: the daemon puts it
    // on the host port without duplicate address detection (no retry here).
    assert!(
        node.docker(&["exec", "c6", "ping", "-6", "-c", "1", "-W", "2", "fd00:213::1"]).status.success(),
        "c6 -> the IPv6 gateway, at once"
    );
    node.run("d6", &v6);
    let ip6 = node.docker_ok(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{v6}\").GlobalIPv6Address}}}}"),
        "d6",
    ]);
    wait_until("c6 -> d6 over IPv6", Duration::from_secs(10), || {
        node.docker(&["exec", "c6", "ping", "-6", "-c", "1", "-W", "2", ip6.trim()]).status.success()
    });
    node.docker_ok(&["rm", "-f", "c6", "d6"]);
    node.docker_ok(&["network", "rm", &v6]);
    assert!(!node.host_addresses().contains("fd00:213::"), "{}", node.host_addresses());
}

#[test]
fn networks_and_endpoints_survive_restarts_of_the_driver_the_daemon_and_dockerd() {
    let mut node = Node::new("ds");
    let ub = format!("{}-ub", node.name);
    node.network(&node.name, &ub, SUBNET, GATEWAY);
    node.run("ca", &ub);
    node.run("cb", &ub);
    node.expect_ports(2, "two containers");

    // The driver restarts: the datapath never noticed; Docker's next calls
    // (stop: Leave; start: Join) find their networks and endpoints.
    node.stop_driver();
    assert!(node.pings("ca", "cb"), "a -> b with the driver down");
    node.start_driver();
    node.docker_ok(&["stop", "-t", "0", "cb"]);
    node.expect_ports(1, "stop after the driver's restart");
    node.docker_ok(&["start", "cb"]);
    node.expect_ports(2, "start after the driver's restart");
    assert!(node.pings("ca", "cb"), "a -> b after the driver's restart\n{}", node.logs());

    // The daemon restarts: its run-time ports and the gateway come back.
    node.daemon.take().unwrap().stop_for_restart();
    node.start_daemon();
    node.expect_ports(2, "the daemon's restart");
    wait_until("a -> b after the daemon's restart", Duration::from_secs(20), || node.pings("ca", "cb"));
    assert!(node.pings("ca", GATEWAY), "a -> gateway after the daemon's restart");

    // dockerd restarts (it stops the containers, and never replays
    // CreateNetwork): the network still takes containers.
    node.stop_dockerd();
    node.expect_ports(0, "dockerd stopped its containers");
    node.start_dockerd();
    node.docker_ok(&["start", "ca"]);
    node.run("cc", &ub);
    node.expect_ports(2, "a started and c run after dockerd's restart");
    assert!(node.pings("cc", "ca"), "c -> a by name after dockerd's restart\n{}", node.logs());
}
