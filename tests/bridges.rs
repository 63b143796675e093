//! Many bridges in one daemon, each an L2 domain of its own as each kernel
//! bridge is: bridges made and deleted at run time with their own
//! interface (host port), which outlives the daemon; every port in one
//! bridge; a frame of one bridge never on another (the same scenario on two
//! kernel bridges beside it); run-time bridges across kill -9 and SIGHUP;
//! a state file of the release before bridges. The daemon runs in a "node"
//! namespace the test makes (never the machine's own), the pods' veths in
//! the lab's switch namespace (`--netns`).

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// A node namespace for lab `lab`, and the daemon's socket.
fn node(lab: &Lab) -> (TestNs, String) {
    (TestNs::new(&format!("{}-node", lab.name)), format!("/tmp/{}.sock", lab.name))
}

fn link_exists(ns: &str, name: &str) -> bool {
    ns_exec(ns, &["ip", "link", "show", name]).status.success()
}

fn ifindex(ns: &str, name: &str) -> String {
    ns_ok(ns, &["cat", &format!("/sys/class/net/{name}/ifindex")]).trim().to_string()
}

/// A client command that must fail: its one line of error.
fn refused(d: &Daemon, args: &[&str]) -> String {
    let o = d.cli(args);
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{args:?} should fail: {}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(e.trim_end().lines().count(), 1, "one line expected: {e}");
    e
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array().unwrap().iter().map(|b| b[key].as_str().unwrap().to_string()).collect()
}

#[test]
fn bridges_come_and_go_at_run_time_and_mistakes_are_one_line() {
    let lab = lab("brs", 3);
    let (node, sock) = node(&lab);
    let sw = lab.switch_ns();
    // `run` alone: a daemon waiting for bridges.
    let d = Daemon::start_in(&node.0, &sock, &["--netns", &sw]);
    assert_eq!(d.query(&["bridge", "list"]), Value::Array(vec![]));
    let e = refused(&d, &["port", "add", "ubp1"]);
    assert!(e.contains("no bridge yet: make one with `userbridge bridge add NAME`"), "{e}");

    d.query(&["bridge", "add", "cni0", "--address", "10.0.0.254/24"]);
    let list = d.query(&["bridge", "list"]);
    assert_eq!(names(&list, "name"), ["cni0"]);
    assert_eq!(list[0]["host"]["addresses"][0], "10.0.0.254/24");
    // Its own interface, in the node, as `ip link add cni0 type bridge` makes one.
    let link = ns_ok(&node.0, &["ip", "-d", "link", "show", "cni0"]);
    assert!(link.contains("alias userbridge host port"), "{link}");
    assert!(ns_ok(&node.0, &["ip", "-br", "addr", "show", "cni0"]).contains("10.0.0.254/24"));

    let e = refused(&d, &["bridge", "add", "cni0"]);
    assert!(e.contains("bridge 'cni0' exists already"), "{e}");
    // Someone else's interface of that name: refused, and nothing made.
    ns_ok(&node.0, &["ip", "link", "add", "ubv0", "type", "veth", "peer", "name", "ubv1"]);
    let e = refused(&d, &["bridge", "add", "ubv0"]);
    assert!(e.contains("interface 'ubv0' already exists (a veth)"), "{e}");
    let e = refused(&d, &["bridge", "add", "much-too-long-name0"]);
    assert!(e.contains("not a valid interface name"), "{e}");
    let e = refused(&d, &["bridge", "add", "cni5", "--mtu", "10"]);
    assert!(e.contains("bridge 'cni5': host port MTU 10: use 68 to 65535"), "{e}");
    assert!(!link_exists(&node.0, "cni5"), "a refused bridge made its interface");
    assert_eq!(names(&d.query(&["bridge", "list"]), "name"), ["cni0"]);

    // One bridge: a port goes to it without being told.
    d.query(&["port", "add", "ubp1"]);
    d.query(&["bridge", "add", "cni1", "--no-host-port"]);
    assert!(!link_exists(&node.0, "cni1") && !link_exists(&sw, "cni1"), "--no-host-port made an interface");
    let e = refused(&d, &["port", "add", "ubp2"]);
    assert!(e.contains("2 bridges (cni0, cni1): name one"), "{e}");
    d.query(&["port", "add", "ubp2", "master", "cni1"]);
    let ports = d.query(&["port", "list"]);
    assert_eq!(Daemon::port(&ports, "ubp1")["bridge"], "cni0");
    assert_eq!(Daemon::port(&ports, "ubp2")["bridge"], "cni1");
    assert_eq!(names(&d.query(&["port", "list", "br", "cni1"]), "name"), ["ubp2"]);
    let e = refused(&d, &["port", "add", "ubp1", "master", "cni1"]);
    assert!(e.contains("'ubp1' is a port of bridge 'cni0'"), "{e}");
    let e = refused(&d, &["port", "add", "ubp3", "master", "nosuch"]);
    assert!(e.contains("no bridge named 'nosuch'"), "{e}");
    let e = refused(&d, &["bridge", "add", "ubp1"]);
    assert!(e.contains("'ubp1' is a port of bridge 'cni0'"), "{e}");
    let e = refused(&d, &["stats"]);
    assert!(e.contains("2 bridges (cni0, cni1)"), "{e}");
    // A client of the release before bridges says no version and no bridge:
    // its request means the only bridge, and with two it is told their names.
    let r = d.request(r#"{"cmd":"host_info"}"#);
    assert!(r["error"].as_str().unwrap().starts_with("2 bridges (cni0, cni1): name one"), "{r}");
    let r = d.request(r#"{"cmd":"host_info","bridge":"cni0"}"#);
    assert_eq!(r["result"]["name"], "cni0", "{r}");
    // A client of a newer protocol is refused by name, not misread.
    let r = d.request(r#"{"cmd":"bridge_list","v":3}"#);
    assert!(r["error"].as_str().unwrap().contains("protocol version 3 is newer than this daemon's 2"), "{r}");
    assert_eq!(d.request(r#"{"cmd":"version"}"#)["result"]["protocol"], 2);
    assert_eq!(d.query(&["stats", "br", "cni1"])["bridge"], "cni1");
    let e = refused(&d, &["stats", "bridge", "cni1"]);
    assert!(e.contains("expected `br NAME`"), "{e}");

    // Deleting a bridge with ports needs --detach; its interface goes with it.
    let e = refused(&d, &["bridge", "del", "cni1"]);
    assert!(e.contains("bridge 'cni1' has ports (ubp2)") && e.contains("--detach"), "{e}");
    assert_eq!(d.query(&["bridge", "del", "cni1", "--detach"])["detached"][0], "ubp2");
    assert_eq!(names(&d.query(&["port", "list"]), "name"), ["cni0", "ubp1"]);
    d.query(&["bridge", "del", "cni0", "--detach"]);
    assert!(!link_exists(&node.0, "cni0"), "bridge del left its interface");
    let e = refused(&d, &["bridge", "del", "cni0"]);
    assert!(e.contains("no bridge named 'cni0'"), "{e}");
    assert_eq!(d.query(&["port", "list"]), Value::Array(vec![]));
}

/// What two pods with the same MAC and address on two bridges see: each
/// pair's ping, and the broadcasts pod 1 sends as each other pod counts them.
#[derive(Debug, PartialEq, Eq)]
struct Separation {
    pings: (bool, bool),
    broadcasts_seen: BTreeMap<usize, usize>,
}

/// Lab pods 1 and 2 on one bridge, 3 and 4 on another; pod 3 takes pod
/// 1's MAC and address, pod 4 pod 2's. `join` puts the ports on two bridges.
fn separation(lab: &Lab, join: impl FnOnce()) -> Separation {
    let (p1, p3) = (&lab.pods[0], &lab.pods[2]);
    for (p, like) in [(p3, p1), (&lab.pods[3], &lab.pods[1])] {
        ns_ok(&p.ns, &["ip", "link", "set", "eth0", "address", &like.mac.to_string()]);
        ns_ok(&p.ns, &["ip", "addr", "flush", "dev", "eth0"]);
        ns_ok(&p.ns, &["ip", "addr", "add", &format!("{}/24", like.ip), "dev", "eth0"]);
    }
    join();
    // Both pairs at once: on one L2 domain the two stations would fight over the address.
    let pings = std::thread::scope(|s| {
        let a = s.spawn(|| ping(&p1.ns, "10.0.0.2", 5));
        let b = s.spawn(|| ping(&p3.ns, "10.0.0.2", 5));
        (a.join().unwrap(), b.join().unwrap())
    });
    let dumps: Vec<(usize, Tcpdump)> =
        [1, 2, 3].into_iter().map(|i| (i, Tcpdump::start(&lab.pods[i].ns, "icmp and ether broadcast"))).collect();
    let _ = ns_exec(&p1.ns, &["ping", "-b", "-c", "3", "-i", "0.2", "-W", "1", "10.0.0.255"]);
    // A marker into each capture, from its own bridge, once pod 1's broadcasts are out.
    let markers = [mark(&p1.ns), mark(&lab.pods[3].ns), mark(&p3.ns)];
    let broadcasts_seen = dumps
        .into_iter()
        .zip(markers.iter())
        .map(|((i, dump), m)| (i + 1, dump.finish_after(m).iter().filter(|l| l.contains("ICMP echo request")).count()))
        .collect();
    Separation { pings, broadcasts_seen }
}

#[test]
fn two_bridges_are_two_l2_domains_as_two_kernel_bridges_are() {
    let want = Separation { pings: (true, true), broadcasts_seen: BTreeMap::from([(2, 3), (3, 0), (4, 0)]) };
    // The specification: two kernel bridges.
    let klab = lab("sepk", 4);
    let kernel = separation(&klab, || {
        let sw = klab.switch_ns();
        for (br, ports) in [("bra", ["ubp1", "ubp2"]), ("brb", ["ubp3", "ubp4"])] {
            ns_ok(&sw, &["ip", "link", "add", br, "type", "bridge"]);
            for p in ports {
                ns_ok(&sw, &["ip", "link", "set", p, "master", br]);
            }
            ns_ok(&sw, &["ip", "link", "set", br, "up"]);
        }
    });
    assert_eq!(kernel, want, "two kernel bridges");

    let lab = lab("sepu", 4);
    let sock = format!("/tmp/{}.sock", lab.name);
    let d = Daemon::start_raw(sock.clone().into(), &["--netns", &lab.switch_ns(), "--socket", &sock]);
    let user = separation(&lab, || {
        for (br, ports) in [("bra", ["ubp1", "ubp2"]), ("brb", ["ubp3", "ubp4"])] {
            d.query(&["bridge", "add", br, "--no-host-port"]);
            for p in ports {
                d.query(&["port", "add", p, "master", br]);
            }
        }
    });
    assert_eq!(user, kernel, "userbridge's two bridges differ from two kernel bridges");

    // The one MAC, learned once in each bridge, behind each bridge's own port.
    let mac = lab.pods[0].mac.to_string();
    let fdb = d.query(&["fdb", "show"]);
    let mut seen: Vec<(String, String)> = fdb
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["mac"] == mac.as_str())
        .map(|e| (e["bridge"].as_str().unwrap().to_string(), e["port"].as_str().unwrap().to_string()))
        .collect();
    seen.sort();
    assert_eq!(seen, [("bra".to_string(), "ubp1".to_string()), ("brb".to_string(), "ubp3".to_string())]);
    // A flush of one bridge leaves the other's entries.
    let learned = |br: &str| d.query(&["stats", "br", br])["fdb"]["learned"].as_u64().unwrap();
    let before = learned("brb");
    assert!(before >= 2, "brb learned {before}");
    d.query(&["fdb", "flush", "br", "bra"]);
    assert_eq!((learned("bra"), learned("brb")), (0, before));
    // Trace names the bridge, and floods only within it.
    let t = d.query(&["trace", "--in", "ubp3", "--src", &mac, "--dst", "ff:ff:ff:ff:ff:ff"]);
    assert_eq!(t["bridge"], "brb");
    let sent: Vec<&str> = t["egress"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["sent"] == true)
        .map(|e| e["port"].as_str().unwrap())
        .collect();
    assert_eq!(sent, ["ubp4"], "{t}");
}

#[test]
fn a_run_time_bridge_survives_kill_9_and_sighup_with_its_interface_addresses_and_routes() {
    let lab = lab("brk", 2);
    let (node, sock) = node(&lab);
    let sw = lab.switch_ns();
    // A configured bridge too, so SIGHUP has a file to re-read.
    let conf = format!("/tmp/{}.toml", lab.name);
    let text = |ageing: u32| {
        format!(
            "socket = \"{sock}\"\nnetns = \"{sw}\"\nstate_dir = \"{}\"\n\n[fdb]\nageing_secs = {ageing}\n\n[[bridge]]\nname = \"cfg0\"\nhost_port = false\n",
            state_dir_of(std::path::Path::new(&sock)).display()
        )
    };
    let _conf = TempPath::write(&conf, &text(300));
    let d = Daemon::start_in(&node.0, &sock, &["--config", &conf]);
    d.query(&["bridge", "add", "cni0", "--address", "10.0.0.254/24"]);
    for p in ["ubp1", "ubp2"] {
        d.query(&["port", "add", p, "master", "cni0"]);
    }
    ns_ok(&node.0, &["ip", "route", "add", "10.99.0.0/24", "dev", "cni0"]);
    let index = ifindex(&node.0, "cni0");
    assert!(ping(&lab.pods[0].ns, "10.0.0.254", 1) && ping(&lab.pods[0].ns, "10.0.0.2", 1));

    d.kill9();
    // No daemon: the interface stays, without carrier, as a kernel bridge without ports.
    assert_eq!(ifindex(&node.0, "cni0"), index);
    assert!(ns_ok(&node.0, &["ip", "link", "show", "cni0"]).contains("NO-CARRIER"));
    let d = Daemon::start_in(&node.0, &sock, &["--config", &conf]);
    let list = d.query(&["bridge", "list"]);
    assert_eq!(names(&list, "name"), ["cfg0", "cni0"]);
    assert_eq!((list[0]["origin"].as_str(), list[1]["origin"].as_str()), (Some("config"), Some("runtime")));
    assert_eq!(ifindex(&node.0, "cni0"), index, "not the same interface");
    assert!(ns_ok(&node.0, &["ip", "route", "show", "dev", "cni0"]).contains("10.99.0.0/24"), "the route went");
    assert_eq!(names(&d.query(&["port", "list", "br", "cni0"]), "name"), ["cni0", "ubp1", "ubp2"]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.254", 1) && ping(&lab.pods[0].ns, "10.0.0.2", 1));

    // SIGHUP re-reads the file: the run-time bridge and its ports stay.
    std::fs::write(&conf, text(120)).unwrap();
    d.signal("HUP");
    wait_until("the reload", Duration::from_secs(5), || {
        d.query(&["stats", "br", "cfg0"])["fdb"]["ageing_secs"] == 120.0
    });
    assert_eq!(names(&d.query(&["port", "list", "br", "cni0"]), "name"), ["cni0", "ubp1", "ubp2"]);
    assert_eq!(d.query(&["stats", "br", "cni0"])["fdb"]["ageing_secs"], 300.0, "a run-time bridge is not the file's");

    // Deleted, it stays deleted across a restart.
    d.query(&["bridge", "del", "cni0", "--detach"]);
    d.stop_for_restart();
    let d = Daemon::start_in(&node.0, &sock, &["--config", &conf]);
    assert_eq!(names(&d.query(&["bridge", "list"]), "name"), ["cfg0"]);
    assert!(!link_exists(&node.0, "cni0"));
}

#[test]
fn a_state_file_of_the_release_before_bridges_is_restored_into_the_only_bridge() {
    let lab = lab("brv1", 1);
    let (node, sock) = node(&lab);
    let host = format!("ubh{}", &lab.name[lab.name.len().saturating_sub(10)..]);
    let dir = state_dir_of(std::path::Path::new(&sock));
    std::fs::create_dir_all(&dir).unwrap();
    // The fixture, written by the release before bridges, with this lab's port.
    let fixture =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/state-v1.json")).unwrap();
    let file = dir.join(format!("{}.state.json", lab.name));
    std::fs::write(&file, fixture.replace("vfix1", "ubp1")).unwrap();
    let args = ["--netns", &lab.switch_ns(), "--host-port", &host, "--address", "10.0.0.254/24"];
    let d = Daemon::start_in(&node.0, &sock, &args);
    let p = Daemon::port(&d.query(&["port", "list"]), "ubp1").clone();
    assert_eq!((p["bridge"].as_str(), p["origin"].as_str()), (Some(host.as_str()), Some("runtime")));
    assert_eq!((p["policy"]["isolated"].as_bool(), p["meta"]["container_id"].as_str()), (Some(true), Some("c0ffee")));
    let addrs = ns_ok(&node.0, &["ip", "-br", "addr", "show", &host]);
    assert!(addrs.contains("fd88::1/64") && addrs.contains("10.0.0.254/24"), "{addrs}");
    assert!(ping(&lab.pods[0].ns, "10.0.0.254", 1));
    // Converted on this first start: version 2, the bridge named.
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["version"], 2);
    assert_eq!(saved["bridges"][0]["name"], host.as_str());
    assert_eq!(saved["bridges"][0]["ports"][0]["name"], "ubp1");
}

/// A file of a test's own, removed when the guard goes.
struct TempPath(String);

impl TempPath {
    fn write(path: &str, text: &str) -> TempPath {
        std::fs::write(path, text).unwrap();
        TempPath(path.to_string())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
