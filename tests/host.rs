//! The host port: the pods' gateway, as `cni0` is on a node. The daemon
//! runs in a "node" namespace the test makes (never the machine's own), the
//! pods' veths in the lab's switch namespace (`--netns`), and the host port
//! appears in the node. Also: tcpdump on it, masquerade to an "outside"
//! namespace, deletion under the daemon, restarts with run-time ports.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// A node namespace for lab `lab`, and a host port name unique to it.
fn node(lab: &Lab) -> (TestNs, String) {
    let ns = TestNs::new(&format!("{}-node", lab.name));
    // IFNAMSIZ: 15 bytes at most.
    let n = lab.name.trim_start_matches("ubt");
    let host = format!("ubh{}", &n[n.len().saturating_sub(10)..]);
    (ns, host)
}

fn socket(lab: &Lab) -> String {
    format!("/tmp/{}.sock", lab.name)
}

/// The daemon in `node`, pods' ports in the lab, host port `host` at 10.0.0.254/24.
fn daemon(lab: &Lab, node: &TestNs, host: &str, extra: &[&str]) -> Daemon {
    let sw = lab.switch_ns();
    let mut args = vec!["--netns", &sw, "--host-port", host, "--address", "10.0.0.254/24"];
    args.extend_from_slice(extra);
    let ports = lab.ports();
    for p in &ports {
        args.extend(["--port", p]);
    }
    Daemon::start_in(&node.0, &socket(lab), &args)
}

fn link_exists(ns: &str, name: &str) -> bool {
    ns_exec(ns, &["ip", "link", "show", name]).status.success()
}

fn mac_of(ns: &str, name: &str) -> String {
    ns_ok(ns, &["cat", &format!("/sys/class/net/{name}/address")]).trim().to_string()
}

#[test]
fn the_host_port_is_the_pods_gateway_and_keeps_its_mac_across_restarts() {
    let lab = lab("gw", 2);
    let (node, host) = node(&lab);
    let d = daemon(&lab, &node, &host, &["--address", "fd00:10::1/64"]);
    // In the node, as cni0 would be: up, both addresses.
    let addrs = ns_ok(&node.0, &["ip", "-br", "addr", "show", &host]);
    assert!(addrs.contains("10.0.0.254/24") && addrs.contains("fd00:10::1/64"), "{addrs}");
    assert!(!link_exists(&lab.switch_ns(), &host), "the host port belongs in the node, not with the pods");
    let list = d.query(&["port", "list"]);
    let p = Daemon::port(&list, &host);
    assert_eq!((p["kind"].as_str(), p["state"].as_str()), (Some("host"), Some("up")));
    let readers = std::fs::read_dir(format!("/proc/{}/task", d.child.id()))
        .unwrap()
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(&format!("rx-{host}"))))
        .count();
    // One queue per CPU (`auto`, at most 8), served by one thread while quiet.
    let queues = ns_ok(&node.0, &["ls", &format!("/sys/class/net/{host}/queues")]);
    let cpus = std::thread::available_parallelism().unwrap().get().min(8);
    assert_eq!(queues.split_whitespace().filter(|q| q.starts_with("rx-")).count(), cpus, "{queues}");
    assert_eq!(readers, 1);
    // Its MAC is a static entry: never ages, never moves.
    let mac = mac_of(&node.0, &host);
    let fdb = d.query(&["fdb", "show"]);
    let e = fdb.as_array().unwrap().iter().find(|e| e["mac"] == mac.as_str()).expect("the host's MAC in the FDB");
    assert_eq!((e["port"].as_str(), e["state"].as_str()), (Some(host.as_str()), Some("static")));
    // Pods and node reach each other.
    assert!(ping(&lab.pods[0].ns, "10.0.0.254", 2), "pod -> gateway");
    assert!(ping(&node.0, "10.0.0.2", 2), "node -> pod");
    // TCP with the pods' default offloads, both ways.
    for reverse in [false, true] {
        tcp_100_mb(&lab.pods[0].ns, &node.0, "10.0.0.254", reverse);
    }
    // A clean stop leaves the host port, as a kernel bridge stays when its
    // ports go: the same interface, with its addresses and the routes others
    // put on it. The next start takes it back, with the same MAC, so the
    // pods' ARP caches stay right.
    let ifindex = ns_ok(&node.0, &["cat", &format!("/sys/class/net/{host}/ifindex")]);
    ns_ok(&node.0, &["ip", "route", "add", "10.99.0.0/24", "dev", &host]);
    drop(d);
    assert!(link_exists(&node.0, &host), "the host port went with its daemon");
    let d = daemon(&lab, &node, &host, &["--remove-bridges"]);
    assert_eq!(ns_ok(&node.0, &["cat", &format!("/sys/class/net/{host}/ifindex")]), ifindex, "not the same interface");
    assert_eq!(mac_of(&node.0, &host), mac);
    assert!(ns_ok(&node.0, &["ip", "route", "show", "dev", &host]).contains("10.99.0.0/24"), "the route went");
    let arp = ns_ok(&lab.pods[0].ns, &["ip", "neigh", "show", "10.0.0.254"]);
    assert!(arp.contains(&mac), "the pod's ARP entry for the gateway: {arp}");
    assert!(ping(&lab.pods[0].ns, "10.0.0.254", 1));
    // --remove-bridges: a clean stop deletes it.
    drop(d);
    assert!(!link_exists(&node.0, &host), "--remove-bridges left the host port");
}

#[test]
fn pods_reach_beyond_the_node_through_the_gateway_and_masquerade() {
    let lab = lab("masq", 2);
    let (node, host) = node(&lab);
    let _d = daemon(&lab, &node, &host, &[]);
    // An "outside" namespace behind the node, 192.168.200.0/24.
    let outside = TestNs::new(&format!("{}-out", lab.name));
    let (a, b) = (format!("{host}a"), format!("{host}b"));
    ns_ok(&node.0, &["ip", "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &outside.0]);
    ns_ok(&node.0, &["ip", "addr", "add", "192.168.200.1/24", "dev", &a]);
    ns_ok(&node.0, &["ip", "link", "set", &a, "up"]);
    ns_ok(&outside.0, &["ip", "addr", "add", "192.168.200.2/24", "dev", &b]);
    ns_ok(&outside.0, &["ip", "link", "set", &b, "up"]);
    // What the user (or the CNI plugin) adds on a node: forwarding and masquerade.
    ns_ok(&node.0, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    ns_ok(
        &node.0,
        &["iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.0.0.0/24", "!", "-o", &host, "-j", "MASQUERADE"],
    );
    for p in &lab.pods {
        ns_ok(&p.ns, &["ip", "route", "add", "default", "via", "10.0.0.254"]);
    }
    let dump = Tcpdump::start_on(&outside.0, &b, &[], "icmp");
    assert!(ping(&lab.pods[0].ns, "192.168.200.2", 1), "a pod reaches beyond the node");
    let seen =
        dump.finish_when("the echo and its reply", |l| l.iter().any(|l| l.contains("ICMP echo reply"))).join("\n");
    assert!(seen.contains("192.168.200.1 > 192.168.200.2: ICMP echo request"), "not masqueraded: {seen}");
    assert!(!seen.contains("10.0.0.1"), "the pod's own address left the node: {seen}");
}

#[test]
fn tcpdump_on_the_host_port_sees_what_the_switch_forwards_like_on_a_bridge() {
    let lab = lab("tcpd", 2);
    let (node, host) = node(&lab);
    let d = daemon(&lab, &node, &host, &[]);
    let dump = Tcpdump::start_on(&node.0, &host, &[], "arp or icmp");
    let (dr, hr) = (&d, &host);
    let promisc = |on: bool| move || Daemon::port(&dr.query(&["port", "list"]), hr)["promisc"] == on;
    wait_until("the host port to be promiscuous", Duration::from_secs(10), promisc(true));
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 2));
    let lines =
        dump.finish_when("both echo replies", |l| l.iter().filter(|l| l.contains("ICMP echo reply")).count() >= 2);
    let has = |p: &str| lines.iter().any(|l| l.contains(p));
    assert!(has("Request who-has 10.0.0.2 tell 10.0.0.1"), "{lines:#?}");
    assert!(has("Reply 10.0.0.2 is-at 02:00:00:00:00:02"), "{lines:#?}");
    assert!(has("10.0.0.1 > 10.0.0.2: ICMP echo request"), "{lines:#?}");
    assert!(has("10.0.0.2 > 10.0.0.1: ICMP echo reply"), "{lines:#?}");
    // tcpdump gone: the host port gets only what is for the host again.
    wait_until("the host port to leave promiscuous mode", Duration::from_secs(10), promisc(false));
    let before = d.counter(&host, "tx_frames");
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 3));
    d.settled(&lab);
    assert_eq!(d.counter(&host, "tx_frames"), before, "pod-to-pod unicast reached the host port");
}

#[test]
fn a_host_port_alone_then_pods_added_at_run_time() {
    let lab = lab("alone", 2);
    let (node, host) = node(&lab);
    let sw = lab.switch_ns();
    let d =
        Daemon::start_in(&node.0, &socket(&lab), &["--netns", &sw, "--host-port", &host, "--address", "10.0.0.254/24"]);
    assert_eq!(d.query(&["port", "list"]).as_array().unwrap().len(), 1);
    d.query(&["port", "add", "ubp1"]);
    d.query(&["port", "add", "ubp2"]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1));
    assert!(ping(&lab.pods[1].ns, "10.0.0.254", 1));
    assert_eq!(Daemon::port(&d.query(&["port", "list"]), "ubp1")["origin"], "runtime");
    // Addresses given at run time come and go (a Docker network's gateway);
    // the configured one cannot be taken away.
    let addrs = || ns_ok(&node.0, &["ip", "-o", "addr", "show", "dev", &host]);
    let r = d.request(r#"{"cmd":"host_address","address":"fd00:9::1/64"}"#);
    assert_eq!(r["result"]["added"], true, "{r}");
    assert!(addrs().contains("fd00:9::1/64"));
    let r = d.request(r#"{"cmd":"host_address_del","address":"fd00:9::1/64"}"#);
    assert_eq!(r["result"]["removed"], true, "{r}");
    assert!(!addrs().contains("fd00:9::1/64"), "{}", addrs());
    let r = d.request(r#"{"cmd":"host_address_del","address":"fd00:9::1/64"}"#);
    assert_eq!(r["result"]["removed"], false, "gone already: {r}");
    let r = d.request(r#"{"cmd":"host_address_del","address":"10.0.0.254/24"}"#);
    assert!(r["error"].as_str().unwrap_or_default().contains("configured address"), "{r}");
    assert!(addrs().contains("10.0.0.254/24"));
}

#[test]
fn a_deleted_host_port_is_made_again_while_the_pods_keep_switching() {
    let lab = lab("hdel", 2);
    let (node, host) = node(&lab);
    let d = daemon(&lab, &node, &host, &[]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1));
    let mac = mac_of(&node.0, &host);
    let pinger = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.pods[0].ns, "ping", "-i", "0.01", "-c", "200", "-q", "10.0.0.2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    ns_ok(&node.0, &["ip", "link", "del", &host]);
    wait_until("the host port to be made again", Duration::from_secs(10), || {
        d.query(&["stats"])["links"]["host_recreated"] == 1
    });
    let out = String::from_utf8_lossy(&pinger.wait_with_output().unwrap().stdout).into_owned();
    assert!(out.contains("200 received"), "pods lost frames while the host port was gone: {out}");
    assert_eq!(mac_of(&node.0, &host), mac);
    assert!(ns_ok(&node.0, &["ip", "-br", "addr", "show", &host]).contains("10.0.0.254/24"));
    assert!(ping(&lab.pods[0].ns, "10.0.0.254", 2), "the gateway is back");
}

#[test]
fn host_port_mistakes_are_one_line_and_create_nothing() {
    let lab = lab("hbad", 1);
    let (node, host) = node(&lab);
    let sock = socket(&lab);
    let run = |args: &[&str]| {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &node.0, BIN, "run", "--socket", &sock, "--state-dir", "/tmp/ubt-never-made"])
            .args(args)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args:?} started");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    for (args, says) in [
        (vec!["--host-port", &host, "--address", "10.0.0.1/24", "--address", "10.0.0.1/16"], "given twice"),
        (vec!["--host-port", &host, "--mtu", "50"], "MTU 50: use 68 to 65535"),
        (vec!["--host-port", &host, "--address", "fd00::1/64", "--mtu", "1000"], "IPv6 needs at least 1280"),
        (vec!["--host-port", "much-too-long-name0"], "not a valid interface name"),
    ] {
        let e = run(&args);
        assert_eq!(e.trim_end().lines().count(), 1, "{args:?}: {e}");
        assert!(e.contains(says), "{args:?}: {e}");
    }
    // Not a CIDR: the argument parser names the flag on its first line.
    let e = run(&["--host-port", &host, "--address", "10.0.0.1"]);
    assert!(e.lines().next().unwrap().contains("--address") && e.contains("is not an address"), "{e}");
    assert!(!link_exists(&node.0, &host), "a refused start created the host port");
    // A name taken by something else (a kernel bridge, say) is refused, and left alone.
    ns_ok(&node.0, &["ip", "link", "add", &host, "type", "bridge"]);
    let e = run(&["--host-port", &host]);
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(e.contains(&format!("interface '{host}' already exists (a bridge)")) && e.contains("ip link del"), "{e}");
    assert!(ns_ok(&node.0, &["ip", "-d", "link", "show", &host]).contains("bridge"));
    assert!(!std::path::Path::new("/tmp/ubt-never-made").exists());
}

/// Packets transmitted and received, from ping's summary.
fn ping_counts(out: &str) -> (u64, u64) {
    let num = |what: &str| -> u64 {
        out.split(what)
            .next()
            .and_then(|s| s.rsplit(char::is_whitespace).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (num(" packets transmitted"), num(" received"))
}

#[test]
fn run_time_ports_survive_a_kill_and_the_pods_traffic_resumes() {
    let mut lab = lab("rst", 3);
    let (node, host) = node(&lab);
    let sw = lab.switch_ns();
    let args = ["--netns", sw.as_str(), "--host-port", host.as_str(), "--address", "10.0.0.254/24"];
    let d = Daemon::start_in(&node.0, &socket(&lab), &args);
    for p in ["ubp1", "ubp2", "ubp3"] {
        d.query(&["port", "add", p]);
    }
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1));
    let pinger = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.pods[0].ns, "ping", "-i", "0.01", "-c", "400", "-q", "10.0.0.2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the pings to flow", Duration::from_secs(5), || d.counter("ubp1", "rx_frames") > 20);
    let t_kill = Instant::now();
    d.kill9();
    let d = Daemon::start_in(&node.0, &socket(&lab), &args);
    let down = t_kill.elapsed();
    let out = String::from_utf8_lossy(&pinger.wait_with_output().unwrap().stdout).into_owned();
    let (sent, got) = ping_counts(&out);
    let lost = Duration::from_millis(10 * (sent - got));
    eprintln!("restart: {down:?} without a daemon; {} pings lost ({lost:?} of traffic)", sent - got);
    assert!(sent >= 300, "{out}");
    assert!(lost < down + Duration::from_secs(1), "lost {lost:?}, more than the {down:?} restart and 1 s: {out}");
    let list = d.query(&["port", "list"]);
    for p in ["ubp1", "ubp2", "ubp3"] {
        assert_eq!(Daemon::port(&list, p)["origin"], "runtime", "{p} not restored");
    }
    // A port whose interface went while no daemon ran is dropped, with a line in the log.
    lab.remove_last_pod().unwrap();
    wait_until("ubp3 to go", Duration::from_secs(5), || !link_exists(&sw, "ubp3"));
    let sd = d.state_dir.clone().unwrap();
    d.kill9();
    let d = Daemon::start_in(&node.0, &socket(&lab), &args);
    let names: Vec<String> = d
        .query(&["port", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec![host.clone(), "ubp1".into(), "ubp2".into()]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1));
    let log = d.stop();
    assert!(log.contains("ubp3") && log.contains("not restored"), "{log}");
    // A corrupt state file: one line, and the daemon starts with what it can prove.
    std::fs::create_dir_all(&sd).unwrap();
    std::fs::write(sd.join(format!("{}.state.json", lab.name)), "{\"version\": 1, \"ports\": [{\"na").unwrap();
    let d = Daemon::start_in(&node.0, &socket(&lab), &args);
    assert_eq!(d.query(&["port", "list"]).as_array().unwrap().len(), 1, "only the host port");
    let log = d.stop();
    let line: Vec<&str> = log.lines().filter(|l| l.contains("state file")).collect();
    assert_eq!(line.len(), 1, "{log}");
    assert!(line[0].contains("unreadable") && line[0].contains("configured bridges and ports only"), "{log}");
    let _ = std::fs::remove_dir_all(&sd);
}

#[test]
fn a_takeover_keeps_the_host_port_and_run_time_ports_and_loses_no_ping_to_the_gateway() {
    // `userbridge upgrade`: the daemon starts itself again with --takeover,
    // in the namespace it started in (the host port's); the host port's TAP
    // queues and the run-time ports' sockets travel, so the gateway keeps its
    // ifindex and a pod pinging it at 200/s across the handover loses nothing.
    let lab = lab("tkh", 2);
    let (node, host) = node(&lab);
    let sw = lab.switch_ns();
    let args = ["--netns", sw.as_str(), "--host-port", host.as_str(), "--address", "10.0.0.254/24"];
    let mut old = Daemon::start_in(&node.0, &socket(&lab), &args);
    for p in ["ubp1", "ubp2"] {
        old.query(&["port", "add", p]);
    }
    assert!(ping(&lab.pods[0].ns, "10.0.0.254", 1));
    let ifindex = || ns_ok(&node.0, &["cat", &format!("/sys/class/net/{host}/ifindex")]).trim().to_string();
    let before = ifindex();
    let pinger = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.pods[0].ns, "ping", "-i", "0.005", "-c", "600", "-q", "10.0.0.254"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the pings to flow", Duration::from_secs(5), || old.counter("ubp1", "rx_frames") > 50);
    let up = old.query(&["upgrade", "--timeout", "20"]);
    let new = Adopted::new(up["pid"].as_u64().unwrap(), old.state_dir.take());
    assert_eq!(old.child.wait().unwrap().code(), Some(0), "the old daemon hands over and exits 0");
    let out = String::from_utf8_lossy(&pinger.wait_with_output().unwrap().stdout).into_owned();
    let (sent, got) = ping_counts(&out);
    assert_eq!((sent, got), (600, 600), "pings to the gateway lost across the takeover: {out}");
    assert_eq!(ifindex(), before, "the host port is the same interface");
    assert!(new.alive(), "the daemon that took over runs");
    let list = old.query(&["port", "list"]);
    for p in ["ubp1", "ubp2"] {
        assert_eq!(Daemon::port(&list, p)["origin"], "runtime", "{p} not kept");
    }
    assert!(ping(&lab.pods[1].ns, "10.0.0.1", 1));
}
