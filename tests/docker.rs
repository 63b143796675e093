//! The Docker network driver against Docker's built-in `bridge` driver:
//! real Docker 20.10 (a private dockerd per test, in a namespace of the
//! test's own, with its iptables on and `--userland-proxy=false`, as on a
//! node: scripts/docker-setup.sh installs it and makes the image), the same
//! scenario on a network of each driver and the same outcome asserted:
//! connectivity, published ports from everywhere, masquerade, `--internal`,
//! isolation between networks and `enable_icc`; then the lifecycle leaves
//! exactly the ports, veths, bridges and rules that should exist,
//! docker-compose projects come and go, restarts of the driver, the daemon
//! and dockerd (kill -9 too) and a firewall flush lose nothing and
//! duplicate no rule, and what the driver cannot do is refused with a
//! message Docker shows.

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

/// The node's address on its link to the "outside" namespace.
const NODE_IP: &str = "192.168.200.1";
const OUTSIDE_IP: &str = "192.168.200.2";

/// A node: a namespace with a userbridge daemon (no bridge until the driver
/// makes one per network), the driver as `-d NAME` (a name unique to the
/// test), a private dockerd, and an "outside" namespace behind a veth
/// (192.168.200.0/24, no route to the containers). Dropping it removes the
/// containers and networks, stops dockerd, the driver and the daemon, and
/// removes their files and the namespaces.
struct Node {
    name: String,
    dir: PathBuf,
    exec_root: PathBuf,
    dockerd: Option<Child>,
    driver: Option<Child>,
    daemon: Option<Daemon>,
    /// The driver's `--check-rules` (0: only at SIGHUP).
    check_rules: u32,
    outside: TestNs,
    /// Last: everything above runs in it.
    ns: TestNs,
}

impl Node {
    fn new(tag: &str) -> Node {
        let tar = image_tar();
        let name = unique(tag);
        let ns = TestNs::new(&name);
        let outside = TestNs::new(&format!("{name}o"));
        let o = Command::new("ip")
            .args(["link", "add", "up0", "netns", &ns.0, "type", "veth", "peer", "name", "up1", "netns", &outside.0])
            .output()
            .unwrap();
        assert!(o.status.success(), "the outside link: {}", String::from_utf8_lossy(&o.stderr));
        ns_ok(&ns.0, &["ip", "addr", "add", &format!("{NODE_IP}/24"), "dev", "up0"]);
        ns_ok(&ns.0, &["ip", "link", "set", "up0", "up"]);
        ns_ok(&outside.0, &["ip", "addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "up1"]);
        ns_ok(&outside.0, &["ip", "link", "set", "up1", "up"]);
        let dir = PathBuf::from(format!("/var/tmp/{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let exec_root = PathBuf::from(format!("/run/{name}"));
        let mut node =
            Node { name, dir, exec_root, dockerd: None, driver: None, daemon: None, check_rules: 5, outside, ns };
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
        self.daemon = Some(Daemon::start_in(&self.ns.0, socket.to_str().unwrap(), &[]));
    }

    fn plugin_socket(&self) -> PathBuf {
        PathBuf::from(format!("/run/docker/plugins/{}.sock", self.name))
    }

    fn start_driver(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("driver.log")).unwrap();
        // In the node's mount namespace, as dockerd (`Daemon::start_in` says why).
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns.0))
            .args([BIN, "docker-plugin", "--name", &self.name, "--log-level", "debug"])
            .arg("--socket")
            .arg(self.socket())
            .arg("--state")
            .arg(self.dir.join("driver.json"))
            .args(["--check-rules", &self.check_rules.to_string()])
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
            // As on a node: the bridge driver publishes, masquerades and
            // isolates, here in the node's own tables.
            .args(["--bridge", "none", "--iptables=true", "--ip-forward=true", "--ip-masq=true"])
            .arg("--userland-proxy=false")
            // Containers stopped with dockerd: SIGKILL after 1 s, not 10.
            .args(["--shutdown-timeout", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        self.dockerd = Some(child);
        let up = ub_lab::wait::poll_until(Duration::from_secs(60), || self.docker(&["version"]).status.success());
        if !up {
            let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!("dockerd did not answer within 60 s; its log, newest first:\n{}", tail.join("\n"));
        }
    }

    /// SIGKILL to dockerd, and wait until its containerd is gone too: a
    /// dockerd started while the old containerd's pid is still there (a
    /// zombie until init reaps it) waits for it and never starts.
    fn kill9_dockerd(&mut self) {
        if let Some(mut c) = self.dockerd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let pidfile = self.exec_root.join("containerd/containerd.pid");
        if let Ok(pid) = std::fs::read_to_string(&pidfile) {
            let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
            wait_until("dockerd's containerd to be gone", Duration::from_secs(30), || !proc.exists());
        }
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

    /// The driver's state file: its networks, endpoints and published ports.
    fn driver_state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("driver.json")).unwrap()).unwrap()
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

    /// The bridge a network of the driver is on (`ub-` and its id's first 12).
    fn bridge_of(&self, net: &str) -> String {
        let id = self.docker_ok(&["network", "inspect", "-f", "{{.Id}}", net]);
        format!("ub-{}", &id.trim()[..12])
    }

    /// The addresses of interface `dev` of the node ("" if there is none).
    fn host_addresses(&self, dev: &str) -> String {
        String::from_utf8_lossy(&ns_exec(&self.ns.0, &["ip", "-o", "addr", "show", "dev", dev]).stdout).into_owned()
    }

    /// The daemon's bridges.
    fn bridges(&self) -> Vec<String> {
        let v = self.daemon.as_ref().unwrap().query(&["bridge", "list"]);
        v.as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap().to_string()).collect()
    }

    /// The driver's rules in the node's tables, as `iptables -S` lists them.
    fn our_rules(&self) -> Vec<String> {
        let mut v = Vec::new();
        for t in ["filter", "nat"] {
            let out = ns_ok(&self.ns.0, &["iptables", "-t", t, "-S"]);
            v.extend(out.lines().filter(|l| l.contains("UB-DOCKER")).map(|l| format!("{t} {l}")));
        }
        v.sort();
        v
    }

    /// The driver's rules without what names one container (its endpoint's
    /// id, its address): a container restarted by dockerd's own restart
    /// gets a new endpoint, and perhaps another address.
    fn rule_shapes(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .our_rules()
            .into_iter()
            .map(|r| {
                r.split(' ')
                    .map(|w| match w.strip_prefix(SUBNET.trim_end_matches("0/24")) {
                        Some(host) if host.ends_with("/32") || host.contains(':') => {
                            format!("CONTAINER{}", &host[host.find(['/', ':']).unwrap_or(host.len())..])
                        }
                        _ if w.len() == 13 && w.ends_with('"') => "ID\"".to_string(),
                        _ => w.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        v.sort();
        v
    }

    /// A web server in a new container `c` on `net` answering its name,
    /// with `ports` published (`-p` values).
    fn web(&self, c: &str, net: &str, ports: &[&str]) {
        let mut args = vec!["run", "-d", "--name", c, "--network", net];
        for p in ports {
            args.extend(["-p", p]);
        }
        let serve = format!("mkdir -p /www && echo {c} > /www/index.html && httpd -f -p 80 -h /www");
        args.extend(["bb", "sh", "-c", &serve]);
        self.docker_ok(&args);
    }

    /// What an HTTP GET of `addr:port` from container `c` answers ("" for nothing).
    fn fetch_in(&self, c: &str, addr: &str, port: u16) -> String {
        let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {addr} {port}");
        let o = self.docker(&["exec", c, "sh", "-c", &get]);
        String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or("").trim().to_string()
    }

    /// The container's PID (its network namespace is /proc/PID/ns/net).
    fn pid_of(&self, c: &str) -> String {
        self.docker_ok(&["inspect", "-f", "{{.State.Pid}}", c]).trim().to_string()
    }
}

/// What an HTTP GET of `addr:port` from namespace `ns` answers ("" for nothing).
fn fetch(ns: &str, addr: &str, port: u16) -> String {
    let o = ns_exec(ns, &["curl", "-s", "-m", "3", &format!("http://{addr}:{port}/")]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A UDP echo server on `port` inside container `pid`'s network namespace
/// (a process of the test's, not of the container); killed on drop.
struct UdpEcho(Child);

impl UdpEcho {
    fn start(pid: &str, port: u16) -> UdpEcho {
        let code = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{port}))\nprint('ready',flush=True)\nwhile True:\n d,a=s.recvfrom(2048)\n s.sendto(d,a)\n"
        );
        let mut child = Command::new("nsenter")
            .args(["-t", pid, "-n", "python3", "-c", &code])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 in the container's namespace");
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line);
        assert_eq!(line.trim(), "ready");
        UdpEcho(child)
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a datagram from namespace `ns` to `addr:port` comes back.
fn udp_echoes(ns: &str, addr: &str, port: u16) -> bool {
    let code = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\ns.sendto(b'u',('{addr}',{port}))\nprint(s.recvfrom(64)[0].decode())\n"
    );
    ns_exec(ns, &["python3", "-c", &code]).status.success()
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
    // The network is a bridge of the daemon's, named as the bridge driver
    // names its devices, with the gateway on its interface.
    let bridge = node.bridge_of(&ub);
    assert_eq!(node.bridges(), std::slice::from_ref(&bridge));
    assert!(
        node.host_addresses(&bridge).contains(&format!("{GATEWAY}/24")),
        "the gateway on the network's bridge: {}",
        node.host_addresses(&bridge)
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
    let dump = Tcpdump::start_on(&node.ns.0, &bridge, &[], "icmp");
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
    assert!(node.bridges().is_empty(), "network rm leaves its bridge: {:?}", node.bridges());
    assert!(node.host_addresses(&bridge).is_empty(), "network rm leaves its bridge's interface");
    assert_eq!(node.our_rules(), Vec::<String>::new(), "the last network took the driver's rules with it");
    let state = node.driver_state();
    assert_eq!((state["networks"].as_object().unwrap().len(), state["endpoints"].as_object().unwrap().len()), (0, 0));
}

#[test]
fn what_the_driver_cannot_do_is_refused_with_a_message() {
    let node = Node::new("dr");
    let ub = format!("{}-ub", node.name);
    node.network(&node.name, &ub, SUBNET, GATEWAY);
    // A second network is a second bridge; a bridge name taken is refused.
    let second = format!("{}-2", node.name);
    node.docker_ok(&[
        "network",
        "create",
        "-d",
        &node.name,
        "-o",
        "com.docker.network.bridge.name=ubsec0",
        "--subnet",
        "10.213.3.0/24",
        &second,
    ]);
    assert!(node.bridges().contains(&"ubsec0".to_string()), "{:?}", node.bridges());
    let o = node.docker(&[
        "network",
        "create",
        "-d",
        &node.name,
        "-o",
        "com.docker.network.bridge.name=ubsec0",
        "--subnet",
        "10.213.5.0/24",
        "third",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("bridge ubsec0 already carries network"), "{err}");
    // An option the driver does not know; a name no interface can have.
    let o =
        node.docker(&["network", "create", "-d", &node.name, "-o", "foo=bar", "--subnet", "10.213.4.0/24", "fourth"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("unknown option -o foo"), "{err}");
    let o = node.docker(&[
        "network",
        "create",
        "-d",
        &node.name,
        "-o",
        "com.docker.network.bridge.name=a-far-too-long-name",
        "fifth",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("not a valid interface name"), "{err}");
    // Nothing half-made: two networks, two bridges.
    assert_eq!(node.driver_state()["networks"].as_object().unwrap().len(), 2);
    assert_eq!(node.bridges().len(), 2, "{:?}", node.bridges());
    // A host port already published: refused, as the bridge driver refuses it.
    node.web("p1", &ub, &["18080:80"]);
    let o =
        node.docker(&["run", "-d", "--name", "p2", "-p", "18080:80", "--network", &second, "bb", "sleep", "100000"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("Bind for 0.0.0.0:18080 failed: port is already allocated"), "{err}");
    // -p on an --internal network: Docker asks no driver to publish it, and
    // the container starts; the port answers on neither driver's network.
    for (driver, tag, sub, port) in [(node.name.as_str(), "u", 6, 18081), ("bridge", "b", 7, 18082)] {
        let internal = format!("{}-{tag}in", node.name);
        let subnet = format!("10.213.{sub}.0/24");
        node.docker_ok(&["network", "create", "-d", driver, "--internal", "--subnet", &subnet, &internal]);
        node.web(&format!("{tag}p3"), &internal, &[&format!("{port}:80")]);
        assert_eq!(fetch(&node.outside.0, NODE_IP, port), "", "{driver}: a port published on an --internal network");
        assert_eq!(fetch(&node.ns.0, NODE_IP, port), "", "{driver}: a port published on an --internal network");
        node.docker_ok(&["rm", "-f", &format!("{tag}p3")]);
        node.docker_ok(&["network", "rm", &internal]);
    }
    node.docker_ok(&["rm", "-f", "p1"]);
    node.docker_ok(&["network", "rm", &second, &ub]);
    assert!(node.bridges().is_empty(), "{:?}", node.bridges());
    // Dual stack: the IPv6 gateway goes on the network's bridge too.
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
    let bridge = node.bridge_of(&v6);
    assert!(node.host_addresses(&bridge).contains("fd00:213::1/64"), "{}", node.host_addresses(&bridge));
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
    assert!(node.host_addresses(&bridge).is_empty(), "{}", node.host_addresses(&bridge));
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

/// Who reaches container `c`'s published ports (TCP `tcp` on all addresses,
/// `local` on 127.0.0.1, UDP `udp`) and from where: outside the node, the
/// node itself, another container `other` of its network, and `c` itself
/// through the node's address (hairpin).
fn published_reach(node: &Node, c: &str, other: &str, tcp: u16, local: u16, udp: u16) -> Vec<(String, bool)> {
    let _echo = UdpEcho::start(&node.pid_of(c), 9000);
    let answers = |got: String| got == c;
    vec![
        ("outside -> node".into(), answers(fetch(&node.outside.0, NODE_IP, tcp))),
        ("node -> node address".into(), answers(fetch(&node.ns.0, NODE_IP, tcp))),
        ("node -> 127.0.0.1".into(), answers(fetch(&node.ns.0, "127.0.0.1", local))),
        ("outside -> 127.0.0.1 port".into(), answers(fetch(&node.outside.0, NODE_IP, local))),
        ("another container -> node".into(), answers(node.fetch_in(other, NODE_IP, tcp))),
        ("itself -> node (hairpin)".into(), answers(node.fetch_in(c, NODE_IP, tcp))),
        ("udp outside -> node".into(), udp_echoes(&node.outside.0, NODE_IP, udp)),
    ]
}

#[test]
fn published_ports_answer_from_everywhere_as_on_the_bridge_driver() {
    let node = Node::new("pub");
    let (ub, br) = (format!("{}-ub", node.name), format!("{}-br", node.name));
    node.network(&node.name, &ub, SUBNET, GATEWAY);
    node.network("bridge", &br, BRIDGE_SUBNET, BRIDGE_GATEWAY);
    node.web("bw", &br, &["18180:80", "127.0.0.1:18181:80", "18182:9000/udp"]);
    node.web("uw", &ub, &["18280:80", "127.0.0.1:18281:80", "18282:9000/udp"]);
    node.run("bo", &br);
    node.run("uo", &ub);
    let theirs = published_reach(&node, "bw", "bo", 18180, 18181, 18182);
    let ours = published_reach(&node, "uw", "uo", 18280, 18281, 18282);
    assert_eq!(ours, theirs, "userbridge driver vs bridge driver\n{}", node.logs());
    let want: Vec<bool> = theirs.iter().map(|(_, ok)| *ok).collect();
    assert_eq!(want, [true, true, true, false, true, true, true], "the bridge driver's outcome: {theirs:?}");
    // A container on two networks publishes once, on one of them.
    let second = format!("{}-2", node.name);
    node.docker_ok(&["network", "create", "-d", &node.name, "--subnet", "10.213.3.0/24", &second]);
    node.docker_ok(&["network", "connect", &second, "uw"]);
    let holders = || -> usize {
        let state = node.driver_state();
        let eps = state["endpoints"].as_object().unwrap().values();
        eps.filter(|e| e["published"].as_array().is_some_and(|p| p.iter().any(|p| p["host_port"] == 18280))).count()
    };
    assert_eq!(holders(), 1, "endpoints publishing 18280 with uw on two networks");
    wait_until("uw's port with uw on two networks", Duration::from_secs(10), || {
        fetch(&node.outside.0, NODE_IP, 18280) == "uw"
    });
    node.docker_ok(&["network", "disconnect", &second, "uw"]);
    assert_eq!(holders(), 1, "endpoints publishing 18280 after the disconnect");
    assert_eq!(fetch(&node.outside.0, NODE_IP, 18280), "uw", "after the disconnect");
    node.docker_ok(&["network", "rm", &second]);
    // -P: a host port the driver picks, and it answers. (Docker 20.10 shows
    // no remote driver's mappings in `docker port`: the driver's state does.)
    node.docker_ok(&[
        "run",
        "-d",
        "--name",
        "ua",
        "-P",
        "--expose",
        "80",
        "--network",
        &ub,
        "bb",
        "sh",
        "-c",
        "mkdir -p /www && echo ua > /www/index.html && httpd -f -p 80 -h /www",
    ]);
    let state = node.driver_state();
    let published: Vec<u64> = state["endpoints"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|e| e["published"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["port"] == 80 && p["host_ip"].is_null())
        .filter_map(|p| p["host_port"].as_u64())
        .filter(|p| *p != 18280)
        .collect();
    assert_eq!(published.len(), 1, "{state}");
    let picked = u16::try_from(published[0]).unwrap();
    wait_until("the picked port to answer", Duration::from_secs(10), || {
        fetch(&node.outside.0, NODE_IP, picked) == "ua"
    });
    // Rules once each; gone with the containers.
    let rules = node.our_rules();
    let mut unique = rules.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(rules.len(), unique.len(), "a rule twice: {rules:?}");
    node.docker_ok(&["rm", "-f", "uw", "ua"]);
    assert!(!node.our_rules().iter().any(|r| r.contains("DNAT --to")), "{:?}", node.our_rules());
    assert_eq!(fetch(&node.outside.0, NODE_IP, 18280), "", "a removed container's port still answers");
}

#[test]
fn masquerade_internal_isolation_and_icc_as_on_the_bridge_driver() {
    let node = Node::new("msq");
    let outcome = |driver: &str, tag: &str, base: u8| -> Vec<(String, bool)> {
        let net = |n: &str, sub: u8, opts: &[&str]| -> String {
            let name = format!("{}-{tag}{n}", node.name);
            let mut args = vec!["network".to_string(), "create".into(), "-d".into(), driver.into()];
            args.extend(opts.iter().map(|o| o.to_string()));
            args.extend(["--subnet".into(), format!("10.{base}.{sub}.0/24"), name.clone()]);
            node.docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
            name
        };
        let plain = net("plain", 1, &[]);
        let nomasq = net("nomasq", 2, &["-o", "com.docker.network.bridge.enable_ip_masquerade=false"]);
        let internal = net("int", 3, &["--internal"]);
        let noicc = net("noicc", 4, &["-o", "com.docker.network.bridge.enable_icc=false"]);
        let c = |n: &str, net: &str| {
            let name = format!("{tag}{n}");
            node.run(&name, net);
            name
        };
        let (p1, p2, m1, i1, i2, n1, n2) = (
            c("p1", &plain),
            c("p2", &plain),
            c("m1", &nomasq),
            c("i1", &internal),
            c("i2", &internal),
            c("n1", &noicc),
            c("n2", &noicc),
        );
        let ip = |c: &str, net: &str| node.ip_of(c, net);
        let gw = |sub: u8| format!("10.{base}.{sub}.1");
        vec![
            ("plain -> outside".into(), node.pings(&p1, OUTSIDE_IP)),
            ("plain -> plain".into(), node.pings(&p1, &ip(&p2, &plain))),
            ("no masquerade -> outside".into(), node.pings(&m1, OUTSIDE_IP)),
            ("internal -> outside".into(), node.pings(&i1, OUTSIDE_IP)),
            ("internal -> internal".into(), node.pings(&i1, &ip(&i2, &internal))),
            ("internal -> its gateway".into(), node.pings(&i1, &gw(3))),
            ("no icc -> no icc".into(), node.pings(&n1, &ip(&n2, &noicc))),
            ("no icc -> its gateway".into(), node.pings(&n1, &gw(4))),
            ("plain -> another network".into(), node.pings(&p1, &ip(&n1, &noicc))),
            ("another network -> plain".into(), node.pings(&n2, &ip(&p2, &plain))),
            ("node -> plain".into(), ping(&node.ns.0, &ip(&p1, &plain), 1)),
        ]
    };
    let theirs = outcome("bridge", "b", 214);
    let ours = outcome(&node.name, "u", 215);
    assert_eq!(ours, theirs, "userbridge driver vs bridge driver\n{}", node.logs());
    // And across drivers: a bridge-driver network and ours are isolated too.
    let cross = node.pings("up1", &node.ip_of("bp1", &format!("{}-bplain", node.name)));
    assert!(!cross, "a container on the driver's network reached one on a bridge-driver network");
}

#[test]
fn docker_compose_projects_come_up_and_go_down_leaving_nothing() {
    let node = Node::new("cmp");
    let dir = node.dir.join("compose");
    std::fs::create_dir_all(&dir).unwrap();
    let file = format!(
        "version: \"2.4\"\nservices:\n  web:\n    image: bb\n    command: sh -c 'mkdir -p /www && echo web-${{WEB_PORT}} > /www/index.html && httpd -f -p 80 -h /www'\n    ports:\n      - \"${{WEB_PORT}}:80\"\n  client:\n    image: bb\n    command: sleep 100000\nnetworks:\n  default:\n    driver: {}\n",
        node.name
    );
    std::fs::write(dir.join("docker-compose.yml"), file).unwrap();
    let compose = |project: &str, port: &str, args: &[&str]| {
        let o = Command::new("docker-compose")
            .current_dir(&dir)
            .env("DOCKER_HOST", node.docker_host())
            .env("WEB_PORT", port)
            .args(["-p", project])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("docker-compose (scripts/test.sh installs it)");
        assert!(o.status.success(), "docker-compose {args:?}: {}{}", String::from_utf8_lossy(&o.stderr), node.logs());
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let (a, b) = (format!("{}a", node.name), format!("{}b", node.name));
    compose(&a, "18380", &["up", "-d"]);
    compose(&b, "18381", &["up", "-d"]);
    assert_eq!(node.bridges().len(), 2, "a bridge per project's network: {:?}", node.bridges());
    for (project, port) in [(&a, 18380), (&b, 18381)] {
        // By name, on the project's own network.
        let want = format!("web-{port}");
        let got = compose(
            project,
            &port.to_string(),
            &["exec", "-T", "client", "sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 web 80"],
        );
        assert!(got.contains(&want), "{project}: client -> web by name: {got}");
        wait_until(&format!("{project}'s published port"), Duration::from_secs(10), || {
            fetch(&node.outside.0, NODE_IP, port) == want
        });
    }
    compose(&a, "18380", &["down"]);
    compose(&b, "18381", &["down"]);
    assert!(node.bridges().is_empty(), "{:?}", node.bridges());
    node.expect_ports(0, "compose down");
    assert_eq!(node.our_rules(), Vec::<String>::new(), "compose down left rules");
}

#[test]
fn kill_9_of_driver_daemon_and_dockerd_and_a_firewall_flush_lose_nothing_and_duplicate_no_rule() {
    let mut node = Node::new("k9");
    let ub = format!("{}-ub", node.name);
    node.network(&node.name, &ub, SUBNET, GATEWAY);
    node.docker_ok(&[
        "run",
        "-d",
        "--restart",
        "always",
        "--name",
        "kw",
        "-p",
        "18480:80",
        "--network",
        &ub,
        "bb",
        "sh",
        "-c",
        "mkdir -p /www && echo kw > /www/index.html && httpd -f -p 80 -h /www",
    ]);
    node.docker_ok(&["run", "-d", "--restart", "always", "--name", "ko", "--network", &ub, "bb", "sleep", "100000"]);
    let works = |node: &Node, what: &str| {
        let up = ub_lab::wait::poll_until(Duration::from_secs(20), || fetch(&node.outside.0, NODE_IP, 18480) == "kw");
        assert!(up, "the published port after {what}: {}\n{}", node.docker_ok(&["ps", "-a"]), node.logs());
        assert!(node.pings("ko", OUTSIDE_IP), "ko -> outside after {what}\n{}", node.logs());
    };
    works(&node, "the start");
    let rules = node.rule_shapes();
    let kill9 = |c: Option<Child>| {
        if let Some(mut c) = c {
            let _ = c.kill();
            let _ = c.wait();
        }
    };
    // The driver dies and comes back: it holds its ports again, its rules stay as they were.
    kill9(node.driver.take());
    node.start_driver();
    works(&node, "the driver's kill -9");
    assert_eq!(node.rule_shapes(), rules, "the driver's restart changed its rules");
    // The daemon dies: the bridge (its interface) stays, the ports come back.
    node.daemon.take().unwrap().kill9();
    node.start_daemon();
    works(&node, "the daemon's kill -9");
    assert_eq!(node.rule_shapes(), rules);
    // dockerd dies: the containers (restart always) come back, with the port.
    node.kill9_dockerd();
    node.start_dockerd();
    works(&node, "dockerd's kill -9");
    assert_eq!(node.rule_shapes(), rules, "rules after dockerd's restart");
    // All three, the other way round.
    node.kill9_dockerd();
    node.daemon.take().unwrap().kill9();
    kill9(node.driver.take());
    node.start_driver();
    node.start_daemon();
    node.start_dockerd();
    works(&node, "all three killed");
    assert_eq!(node.rule_shapes(), rules, "rules after all three");
    // A firewall flush of the driver's chains: put back within seconds.
    for (t, c) in [("filter", "UB-DOCKER-FWD"), ("nat", "UB-DOCKER-DNAT"), ("nat", "UB-DOCKER-POST")] {
        ns_ok(&node.ns.0, &["iptables", "-t", t, "-F", c]);
    }
    works(&node, "a firewall flush");
    assert_eq!(node.rule_shapes(), rules);
    // With no periodic check, SIGHUP alone puts them back.
    node.check_rules = 0;
    node.stop_driver();
    node.start_driver();
    ns_ok(&node.ns.0, &["iptables", "-t", "nat", "-F", "UB-DOCKER-DNAT"]);
    assert_eq!(fetch(&node.outside.0, NODE_IP, 18480), "", "the flush did not take the port away");
    let pid = node.driver.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    works(&node, "SIGHUP");
    assert_eq!(node.rule_shapes(), rules);
}
