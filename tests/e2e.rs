//! End-to-end: real pods (namespaces + veth), the real daemon, tcpdump in
//! the pods. Needs root; CI runs these (see .ci/run).

mod common;

use common::*;
use std::time::Duration;
use ub_netlink::NetNs;

fn has(lines: &[String], pat: &str) -> bool {
    lines.iter().any(|l| l.contains(pat))
}

#[test]
fn three_pods_flood_arp_then_unicast_icmp() {
    flood_case(&[]);
}

#[test]
fn three_pods_flood_arp_then_unicast_icmp_with_rx_busy_slots() {
    // Never busy: each half waits on its own wait set, holding its socket.
    flood_case(&["--rx", "busy-slots", "--ring-slots", "256"]);
}

/// One unpinned reader per port at nice 0, as before readers per CPU became
/// the default (which every other test runs with).
const ONE_READER: &[&str] = &["--readers", "1", "--reader-nice", "0"];

#[test]
fn three_pods_flood_arp_then_unicast_icmp_with_one_reader_per_port() {
    flood_case(ONE_READER);
}

fn flood_case(args: &[&str]) {
    let lab = lab("flood", 3);
    let d = Daemon::start(&lab, args);
    let dump2 = Tcpdump::start(&lab.pods[1].ns, "arp or icmp");
    let dump3 = Tcpdump::start(&lab.pods[2].ns, "arp or icmp");
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 3));
    // A marker after the pings: once each tcpdump has it, it has everything before it.
    let m = mark(&lab.pods[0].ns);
    let (seen2, seen3) = (dump2.finish_after(&m), dump3.finish_after(&m));
    assert!(has(&seen2, "Request who-has 10.0.0.2 tell 10.0.0.1"), "pod2: {seen2:#?}");
    assert!(has(&seen2, "ICMP echo request"), "pod2: {seen2:#?}");
    // Pod 3 sees the flooded ARP request, and none of the unicast ICMP.
    assert!(has(&seen3, "Request who-has 10.0.0.2 tell 10.0.0.1"), "pod3: {seen3:#?}");
    assert!(!has(&seen3, "ICMP"), "pod3 saw unicast it should not: {seen3:#?}");
    // Pod 3 speaks once, so every pod is learned on its own port.
    assert!(ping(&lab.pods[2].ns, "10.0.0.1", 1));
    let fdb = d.query(&["fdb", "show"]);
    for p in &lab.pods {
        let e = fdb.as_array().unwrap().iter().find(|e| e["mac"] == p.mac.to_string());
        let e = e.unwrap_or_else(|| panic!("{} not in fdb: {fdb:#}", p.mac));
        assert_eq!(e["port"], p.port.as_str());
        assert_eq!(e["state"], "learned");
        assert_eq!(e["vlan"], 0);
    }
    // The text form is like `bridge fdb show`.
    let o =
        std::process::Command::new(BIN).args(["fdb", "show", "--socket", d.socket.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("02:00:00:00:00:01 dev ubp1 master ub0 vlan 0 age"), "{text}");
}

#[test]
fn counters_match_the_pods_own_counters_exactly() {
    counters_case(&[]);
}

#[test]
fn counters_match_the_pods_own_counters_exactly_with_one_reader_per_port() {
    counters_case(ONE_READER);
}

fn counters_case(args: &[&str]) {
    // With PACKET_IGNORE_OUTGOING a port never re-reads what the switch sent
    // on it, so its RX count is exactly what the pod transmitted.
    let lab = lab("count", 3);
    let d = Daemon::start(&lab, args);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 5));
    // Exactly equal, once nothing is in flight (a port that also counted
    // its own output would never settle).
    d.settled(&lab);
    let st = d.query(&["stats"]);
    let rx = |p: usize| Daemon::port(&st, &lab.pods[p].port)["counters"]["rx_frames"].as_u64().unwrap();
    let tx = |p: usize| Daemon::port(&st, &lab.pods[p].port)["counters"]["tx_frames"].as_u64().unwrap();
    for (i, p) in lab.pods.iter().enumerate() {
        assert_eq!(rx(i), if_stat(&p.ns, "eth0", "tx_packets"), "port {} rx vs pod tx", p.port);
        assert_eq!(tx(i), if_stat(&p.ns, "eth0", "rx_packets"), "port {} tx vs pod rx", p.port);
    }
    assert_eq!(rx(2), 0, "pod 3 said nothing");
    assert_eq!(tx(2), 1, "pod 3 got only the flooded ARP request");
}

#[test]
fn tcp_with_default_offloads_crosses_the_switch() {
    tcp_case(&[]);
}

#[test]
fn tcp_with_default_offloads_crosses_the_switch_with_rx_busy_slots_and_only_its_ack_port_takes_rings() {
    // Busy from 1000 frames/s, but only frames a 2 KiB slot holds count: the
    // ACK port (pod 2's small frames, far over 1000/s) takes a ring within
    // the stream's first 100 ms; the data port, whose frames are 64 KB
    // super-frames that a ring would only copy once more, stays on recvmmsg.
    // 1 GB, about a second of it here: long enough to see which port takes rings.
    let lab = lab("tcpbusy", 2);
    let d = Daemon::start(&lab, &["--rx", "busy-slots", "--ring-slots", "1024", "--busy-pps", "1000"]);
    let _server = Iperf3Server::start(&lab.pods[1].ns, "10.0.0.2");
    // (The pod's namespace guard kills the client if the test fails first.)
    let mut client = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.pods[0].ns, "timeout", "30", "iperf3", "-c", "10.0.0.2", "-n", "1G", "-J"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Which ports hold a ring, looked at every 50 ms while the stream runs (bounded by its timeout).
    let mut seen = std::collections::BTreeSet::new();
    while client.try_wait().unwrap().is_none() {
        seen.extend(ring_ports(&lab, d.child.id(), 1024 * 2048));
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = client.wait_with_output().unwrap();
    assert!(out.status.success(), "1 GB of TCP did not cross within 30 s: {}", String::from_utf8_lossy(&out.stdout));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["end"]["sum_received"]["bytes"].as_f64().unwrap() >= 1e9, "1 GB of TCP crossed");
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["ubp2"], "ports that held an RX ring during the stream");
}

#[test]
fn tcp_with_default_offloads_crosses_the_switch_with_one_reader_per_port() {
    tcp_case(ONE_READER);
}

fn tcp_case(args: &[&str]) {
    let lab = lab("tcp", 2);
    let _d = Daemon::start(&lab, args);
    // Default offloads: the pods' kernels send 64 KB TSO super-frames with partial checksums.
    let k = ns_ok(&lab.pods[0].ns, &["ethtool", "-k", "eth0"]);
    assert!(k.contains("tcp-segmentation-offload: on"), "{k}");
    tcp_100_mb(&lab.pods[0].ns, &lab.pods[1].ns, "10.0.0.2", false);
}

#[test]
fn tap_port_forwards() {
    let lab = lab("tap", 1);
    let tap = "ubtap0";
    let _d = Daemon::start(&lab, &["--tap", tap]);
    // The switch namespace's own stack sits on the TAP, as a VM or host would.
    let sw = lab.switch_ns();
    ns_ok(&sw, &["ip", "addr", "add", "10.0.0.200/24", "dev", tap]);
    ns_ok(&sw, &["ip", "link", "set", tap, "up"]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.200", 3), "pod -> TAP");
    assert!(ping(&sw, "10.0.0.1", 2), "TAP -> pod");
}

#[test]
fn deleting_a_pod_under_traffic_leaves_the_others_served() {
    let lab = lab("churn", 3);
    let mut d = Daemon::start(&lab, &[]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.3", 1));
    let mut flood = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.pods[0].ns, "ping", "-f", "-w", "3", "10.0.0.3"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the flood to run", Duration::from_secs(5), || d.counter("ubp1", "rx_frames") > 100);
    NetNs::delete(&lab.pods[2].ns).unwrap();
    let _ = flood.wait();
    assert!(d.alive(), "daemon died when a port vanished");
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 3), "pods 1 and 2 lost each other");
    let st = d.query(&["port", "list"]);
    assert_eq!(Daemon::port(&st, "ubp3")["state"], "gone");
    assert_eq!(Daemon::port(&st, "ubp1")["state"], "up");
    let fdb = d.query(&["fdb", "show"]);
    assert!(fdb.as_array().unwrap().iter().all(|e| e["port"] != "ubp3"), "entries of the gone port remain: {fdb:#}");
}

#[test]
fn a_port_whose_link_is_down_resumes_when_it_comes_up() {
    let lab = lab("down", 2);
    // Pod 2's end down: the host end ubp2 has no carrier.
    ns_ok(&lab.pods[1].ns, &["ip", "link", "set", "eth0", "down"]);
    let d = Daemon::start(&lab, &[]);
    assert_eq!(Daemon::port(&d.query(&["port", "list"]), "ubp2")["state"], "down");
    let state = |want: &str| Daemon::port(&d.query(&["port", "list"]), "ubp2")["state"] == want;
    ns_ok(&lab.pods[1].ns, &["ip", "link", "set", "eth0", "up"]);
    wait_until("ubp2 to come back up", Duration::from_secs(5), || state("up"));
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 2));
    // Down again while running: reported, and back once more.
    ns_ok(&lab.pods[1].ns, &["ip", "link", "set", "eth0", "down"]);
    wait_until("ubp2 going down to be noticed", Duration::from_secs(5), || state("down"));
    ns_ok(&lab.pods[1].ns, &["ip", "link", "set", "eth0", "up"]);
    wait_until("ubp2 to come back up again", Duration::from_secs(5), || state("up"));
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 2));
}

#[test]
fn vlan_tags_taken_off_by_the_kernel_are_put_back() {
    vlan_case(&["--rx", "mmsg"], false);
}

#[test]
fn vlan_tags_taken_off_by_the_kernel_are_put_back_from_a_busy_ports_rx_slots() {
    // The tag of a frame read from a slot is in the slot's header (tp_vlan_tci).
    vlan_case(&["--rx", "busy-slots", "--busy-pps", "1000"], true);
}

fn vlan_case(args: &[&str], busy: bool) {
    // The receiving kernel moves an 802.1Q tag into packet metadata before a
    // packet socket sees the frame; the switch must re-insert it on egress.
    let lab = lab("vlan", 2);
    let d = Daemon::start(&lab, args);
    let (a, b) = (lab.pods[0].mac.0, lab.pods[1].mac.0);
    let tagged = |dst: [u8; 6], src: [u8; 6], vid: u16| {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&(0x6000 | vid).to_be_bytes()); // PCP 3
        f.extend_from_slice(&[0x88, 0xb5]); // local experimental EtherType
        f.resize(64, 0x5a);
        f
    };
    inject(&lab.pods[1].ns, &[tagged([0xff; 6], b, 10)]); // pod 2 announces itself in VLAN 10
    if busy {
        make_busy(&lab, &d);
    }
    let flooded = |st: &serde_json::Value| Daemon::port(st, "ubp1")["counters"]["flooded"].as_u64().unwrap();
    let flooded_before = flooded(&d.query(&["stats"]));
    let dump = Tcpdump::start(&lab.pods[1].ns, "vlan 10");
    {
        // Queued while the daemon is stopped, they leave in one batch of 10:
        // through ubp2's TX ring, the tag spliced into the slot.
        let _stopped = Stopped::stop(d.child.id());
        inject(&lab.pods[0].ns, &vec![tagged(b, a, 10); 10]);
    }
    let seen = dump.finish_after(&mark(&lab.pods[0].ns));
    assert_eq!(seen.iter().filter(|l| l.contains("vlan 10, p 3") && l.contains("0x88b5")).count(), 10, "{seen:#?}");
    assert_eq!(socket_maps(d.child.id()).iter().filter(|&&m| m == 256 << 10).count(), 1, "ubp2's TX ring");
    let fdb = d.query(&["fdb", "show"]);
    let in_vlan = |mac: [u8; 6], port: &str| {
        fdb.as_array()
            .unwrap()
            .iter()
            .any(|e| e["vlan"] == 10 && e["mac"] == ub_wire::Mac(mac).to_string() && e["port"] == port)
    };
    assert!(in_vlan(a, "ubp1") && in_vlan(b, "ubp2"), "{fdb:#}");
    // Pod 2 was known in VLAN 10, so that was unicast, not flooded: pod 1's
    // one flood is the marker.
    assert_eq!(flooded(&d.query(&["stats"])) - flooded_before, 1);
}

#[test]
fn frames_too_big_for_the_egress_port_are_counted() {
    let lab = lab("mtu", 2);
    ns_ok(&lab.switch_ns(), &["ip", "link", "set", "ubp2", "mtu", "1000"]);
    let d = Daemon::start(&lab, &[]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1));
    assert!(
        !ns_exec(&lab.pods[0].ns, &["ping", "-c", "2", "-i", "0.2", "-W", "1", "-s", "1200", "-M", "dont", "10.0.0.2"])
            .status
            .success()
    );
    let st = d.query(&["stats"]);
    assert_eq!(Daemon::port(&st, "ubp2")["counters"]["drops"]["too_big"], 2);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1), "small frames still pass");
}

#[test]
fn hostile_frames_are_dropped_with_reasons_and_not_learned() {
    let lab = lab("bad", 3);
    let d = Daemon::start(&lab, &[]);
    let frame = |dst, src| frame(dst, src, 60);
    let b = [0xff; 6];
    inject(
        &lab.pods[0].ns,
        &[
            frame(b, [0xff; 6]),                                    // broadcast source
            frame(b, [0x01, 0x00, 0x5e, 0, 0, 1]),                  // multicast source
            frame(b, [0; 6]),                                       // all-zero source
            frame([0x01, 0x80, 0xc2, 0, 0, 0], [2, 0, 0, 0, 9, 9]), // STP group: never forwarded
        ],
    );
    wait_until("the four frames to be counted", Duration::from_secs(5), || d.counter("ubp1", "rx_frames") == 4);
    let st = d.query(&["stats"]);
    let drops = &Daemon::port(&st, "ubp1")["counters"]["drops"];
    assert_eq!(drops["invalid_src"], 3, "{drops}");
    assert_eq!(drops["link_local"], 1, "{drops}");
    assert_eq!(st["fdb"]["learned"], 0, "hostile sources were learned");
    assert_eq!(Daemon::port(&st, "ubp2")["counters"]["tx_frames"], 0);
    assert!(ping(&lab.pods[1].ns, "10.0.0.3", 2), "still forwarding for the others");
}

fn run_err(args: &[&str]) -> String {
    let o = std::process::Command::new(BIN).args(args).output().unwrap();
    assert!(!o.status.success(), "{args:?} should fail");
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(e.trim_end().lines().count(), 1, "one line expected: {e}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

#[test]
fn user_errors_are_one_line_with_the_fix() {
    let lab = lab("err", 2);
    let sw = lab.switch_ns();
    let sock = format!("/tmp/{}.sock", lab.name);
    let e = run_err(&["run", "--netns", &sw, "--port", "nosuch0", "--socket", &sock]);
    assert!(e.contains("no interface named 'nosuch0'"), "{e}");
    let e = run_err(&["run", "--netns", &sw, "--port", "bad/name", "--socket", &sock]);
    assert!(e.contains("not a valid interface name"), "{e}");
    let e = run_err(&["run", "--netns", "no-such-ns-xyz", "--port", "ubp1", "--socket", &sock]);
    assert!(e.contains("no-such-ns-xyz"), "{e}");
    // Out-of-range numbers are refused by the argument parser, naming the flag.
    for (flag, bad) in [("--readers", "0"), ("--readers", "65"), ("--readers", "many"), ("--reader-nice", "-21")] {
        let o = std::process::Command::new(BIN).args(["run", "--port", "ubp1", flag, bad]).output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.lines().next().is_some_and(|l| l.contains(flag)), "{flag} {bad}: {e}");
    }
    let e = run_err(&["run", "--bridge", "much-too-long-name0", "--socket", &sock]);
    assert!(e.contains("--bridge: bridge name: 'much-too-long-name0' is not a valid interface name"), "{e}");
    let e = run_err(&["fdb", "show", "--socket", "/tmp/nobody-listens-here.sock"]);
    assert!(e.contains("is `userbridge run` running?"), "{e}");
    // A port still on a kernel bridge would loop: refused.
    ns_ok(&sw, &["ip", "link", "add", "br0", "type", "bridge"]);
    ns_ok(&sw, &["ip", "link", "set", "ubp1", "master", "br0"]);
    let e = run_err(&["run", "--netns", &sw, "--port", "ubp1", "--socket", &sock]);
    assert!(e.contains("already has a master (br0)") && e.contains("nomaster"), "{e}");
    ns_ok(&sw, &["ip", "link", "set", "ubp1", "nomaster"]);
    // A second daemon on the same socket is refused, and the first keeps running.
    let mut d = Daemon::start(&lab, &[]);
    let e = run_err(&["run", "--netns", &sw, "--port", "ubp2", "--socket", d.socket.to_str().unwrap()]);
    assert!(e.contains("in use"), "{e}");
    assert!(d.alive());
    // Malformed requests get an error reply, not a crash.
    assert_eq!(d.request("this is not json")["ok"], false);
    assert_eq!(d.request("{\"cmd\":\"self_destruct\"}")["ok"], false);
    assert!(d.alive());
}

/// CPUs in a kernel list such as "0-3,6".
fn cpu_list(s: &str) -> Vec<usize> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => v.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => v.push(part.parse().unwrap()),
        }
    }
    v
}

fn status_field(path: &str, key: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("{key} not in {path}")).trim().to_string()
}

/// The reader threads of port `name` in process `pid`: (comm, allowed CPUs,
/// nice, scheduling class: 0 SCHED_OTHER, 3 SCHED_BATCH).
fn reader_threads(pid: u32, name: &str) -> Vec<(String, Vec<usize>, i32, u32)> {
    let mut readers = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        // Short-lived threads (a control connection's, a helper ending) may end while we look.
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else { continue };
        let comm = comm.trim().to_string();
        if comm == format!("rx-{name}") || comm.starts_with(&format!("rx-{name}/")) {
            let (Ok(status), Ok(stat)) =
                (std::fs::read_to_string(dir.join("status")), std::fs::read_to_string(dir.join("stat")))
            else {
                continue;
            };
            let allowed = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim();
            // Fields 19 and 41 of stat are nice and policy; those after the ")" closing comm are 3.. .
            let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
            let (nice, class) = (fields[16].parse().unwrap(), fields[38].parse().unwrap());
            readers.push((comm, cpu_list(allowed), nice, class));
        }
    }
    readers.sort();
    readers
}

#[test]
fn one_reader_per_idle_port_and_pinned_helpers_while_every_cpu_keeps_it_busy() {
    let Some((lab, d, pid, cpus)) = per_cpu_lab("percpu") else { return };
    // Quiet: one thread per port, however many CPUs (and sockets) it has, at
    // nice -10; unpinned, or pinned where the pods' own first frames arrived.
    let readers = reader_threads(pid, "ubp1");
    assert_eq!(readers.len(), 1, "{readers:?}");
    let (comm, allowed, nice, _) = &readers[0];
    assert_eq!((comm.as_str(), *nice), ("rx-ubp1", -10));
    assert!(allowed == &cpus || allowed.len() == 1, "{readers:?}");
    // Frames sent on each CPU (each member of the fanout group) are forwarded.
    for c in &cpus {
        let o = ns_exec(
            &lab.pods[0].ns,
            &["taskset", "-c", &c.to_string(), "ping", "-c", "2", "-i", "0.2", "-W", "2", "-q", "10.0.0.2"],
        );
        assert!(o.status.success(), "ping sent on CPU {c}: {}", String::from_utf8_lossy(&o.stdout));
    }
    // Small frames sent on every CPU (trafgen forks one sender per CPU) keep the
    // port's thread busy: it keeps one CPU's member, pinned there, and a helper
    // per other CPU, pinned there, takes that CPU's member.
    let file = TempFile(format!("/tmp/{}.trafgen", lab.name));
    let cfg = file.0.as_str();
    let mac1 = ns_ok(&lab.pods[1].ns, &["cat", "/sys/class/net/eth0/address"]);
    let dst: Vec<String> = mac1.trim().split(':').map(|b| format!("0x{b}")).collect();
    std::fs::write(cfg, format!("{{ {}, 0x02,0,0,0,0x77,0x01, c16(0x88b5), fill(0x00, 46) }}\n", dst.join(",")))
        .unwrap();
    let load = Running::start(&lab.pods[0].ns, &["trafgen", "-i", cfg, "-o", "eth0", "-q"]);
    // Settled: the port's thread moves home before it starts a helper, and
    // a helper pins itself once it runs.
    let one_per_cpu = |b: &Vec<(String, Vec<usize>, i32, u32)>| {
        let mut on: Vec<usize> = b.iter().filter(|t| t.1.len() == 1).map(|t| t.1[0]).collect();
        on.sort_unstable();
        on == cpus
    };
    let busy = sample_until(Duration::from_secs(15), || reader_threads(pid, "ubp1"), one_per_cpu);
    let helpers = d.query(&["stats"])["daemon"]["reader_helpers"].as_u64();
    drop(load);
    assert_eq!(busy.len(), cpus.len(), "a thread per CPU while each CPU sends: {busy:?}");
    assert!(helpers >= Some(1), "stats counts the helpers: {helpers:?}");
    let mut pinned: Vec<usize> = busy
        .iter()
        .map(|(comm, allowed, nice, _)| {
            assert_eq!((allowed.len(), *nice), (1, -10), "{comm} is pinned, at the readers' nice");
            if let Some(i) = comm.strip_prefix("rx-ubp1/") {
                assert_eq!(
                    allowed[0],
                    cpus[i.parse::<usize>().unwrap()],
                    "{comm} runs where its member's frames arrive"
                );
            }
            allowed[0]
        })
        .collect();
    pinned.sort_unstable();
    assert_eq!(pinned, cpus, "one thread on each CPU");
    // Quiet again: the helpers give their members back and end.
    wait_until("the helpers to end", Duration::from_secs(10), || reader_threads(pid, "ubp1").len() == 1);
    assert_eq!(d.query(&["stats"])["daemon"]["reader_helpers"], 0);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1));
    // Detached while its helpers run: the port's thread stops them and is joined.
    let load = Running::start(&lab.pods[0].ns, &["trafgen", "-i", cfg, "-o", "eth0", "-q"]);
    wait_until("helpers again", Duration::from_secs(15), || reader_threads(pid, "ubp1").len() > 1);
    let out = d.cli(&["port", "del", "ubp1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(reader_threads(pid, "ubp1"), vec![], "port del joins every reader thread of the port");
    assert_eq!(d.query(&["stats"])["daemon"]["reader_helpers"], 0);
    drop(load);
}

/// Two pods on a daemon with its defaults, the daemon's PID and the CPUs it
/// may use; `None` where a port does not get one member per CPU (fewer than
/// 2 CPUs, or more than `auto`'s 8).
/// Two CPUs this test may use. The per-CPU tests run the daemon on just
/// those two (taskset), so they check the same thing on any machine with
/// two or more; on a machine with one, the test says it is skipped and why.
fn two_cpus(test: &str) -> Option<[usize; 2]> {
    let cpus = cpu_list(&status_field("/proc/self/status", "Cpus_allowed_list:"));
    match cpus[..] {
        [a, b, ..] => Some([a, b]),
        _ => {
            eprintln!("{test}: SKIPPED: it needs two CPUs and may use only {cpus:?}");
            None
        }
    }
}

/// A two-pod lab and a daemon on two CPUs: one receive half per CPU,
/// pinned; its pid and the two CPUs.
fn per_cpu_lab(tag: &str) -> Option<(Lab, Daemon, u32, Vec<usize>)> {
    let [a, b] = two_cpus(tag)?;
    let lab = lab(tag, 2);
    let d = Daemon::start_wrapped(&lab, &["taskset", "-c", &format!("{a},{b}")], &[]);
    let pid = d.child.id();
    Some((lab, d, pid, vec![a, b]))
}

#[test]
fn an_idle_ports_thread_follows_a_pinging_process_to_its_cpu_within_a_few_frames() {
    // A ping every 2 ms wakes the port's thread for every frame. When the
    // sender moves to another CPU, the thread moves there on its second
    // wake-up, not at the end of a 20 ms window: the frames in between would
    // each wake an idle CPU (docs/benchmarks-history.md, where a ping's time goes).
    let Some((lab, _daemon, pid, cpus)) = per_cpu_lab("follow") else { return };
    for c in [cpus[0], cpus[1], cpus[0], cpus[1]] {
        // The thread moves at most once per 20 ms window, so that frames
        // from two CPUs by turns cannot bounce it: each move here is the
        // first since more than a window.
        std::thread::sleep(Duration::from_millis(40));
        let o = ns_exec(
            &lab.pods[0].ns,
            &["taskset", "-c", &c.to_string(), "ping", "-c", "4", "-i", "0.002", "-W", "2", "-q", "10.0.0.2"],
        );
        assert!(o.status.success(), "ping from CPU {c}: {}", String::from_utf8_lossy(&o.stdout));
        // Read at once: the window would move the thread too, but only at the
        // next wake-up 20 ms after the window began (here: the next phase, or
        // the housekeeping a second later).
        let readers = reader_threads(pid, "ubp1");
        assert_eq!(readers.len(), 1, "{readers:?}");
        assert_eq!(readers[0].1, vec![c], "4 pings from CPU {c}: the port's thread runs there");
    }
}

#[test]
fn a_port_with_steady_frames_from_two_cpus_gets_a_helper_on_the_second_without_being_busy() {
    // Two pingers in one pod, one per CPU, 2000 frames a second each: the
    // port's thread sleeps most of the time (not busy), but the frames of
    // the CPU it does not run on would each wake it across CPUs. The second
    // CPU's member goes to a helper pinned there, and comes back when quiet.
    let Some((lab, d, pid, cpus)) = per_cpu_lab("active") else { return };
    let pinger = |c: usize| {
        Running::start(
            &lab.pods[0].ns,
            &["taskset", "-c", &c.to_string(), "ping", "-q", "-i", "0.0005", "-c", "40000", "10.0.0.2"],
        )
    };
    let (p0, p1) = (pinger(cpus[0]), pinger(cpus[1]));
    let seen = sample_until(Duration::from_secs(10), || reader_threads(pid, "ubp1"), |s| s.len() >= 2);
    let helpers = d.query(&["stats"])["daemon"]["reader_helpers"].as_u64();
    drop((p0, p1));
    assert_eq!(seen.len(), 2, "a helper while two CPUs send steadily: {seen:?}");
    assert!(helpers >= Some(1), "{helpers:?}");
    let mut on: Vec<usize> = seen.iter().map(|(_, allowed, _, _)| allowed[0]).collect();
    on.sort_unstable();
    assert_eq!(on, cpus[..2], "one thread on each sending CPU: {seen:?}");
    wait_until("the helper to end", Duration::from_secs(10), || reader_threads(pid, "ubp1").len() == 1);
}

#[test]
fn a_thread_carrying_tcp_super_frames_stops_preempting_and_its_small_frame_twin_does_not() {
    // With the pods' default offloads a TCP stream crosses the switch as GSO
    // super-frames of up to 64 KiB. The data port's thread runs SCHED_BATCH
    // while it carries them (no preemption of the process whose CPU it wakes
    // on, nice kept); the ACK port's, with small frames, stays SCHED_OTHER;
    // when the stream ends, the data port's goes back (docs/benchmarks-history.md).
    const OTHER: u32 = 0;
    const BATCH: u32 = 3;
    let lab = lab("bulk", 2);
    let d = Daemon::start(&lab, &[]);
    let pid = d.child.id();
    let (data, acks) = (&lab.pods[0].port, &lab.pods[1].port);
    for pod in &lab.pods {
        // No IPv6 chatter (router solicitations, MLD) from the pods: a small
        // frame after the stream would end a window and hide a thread left
        // in the bulk class.
        ns_ok(&pod.ns, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    }
    let _server = Iperf3Server::start(&lab.pods[1].ns, "10.0.0.2");
    let client = Running::start(&lab.pods[0].ns, &["iperf3", "-c", "10.0.0.2", "-t", "20"]);
    let (on_data, on_acks) = sample_until(
        Duration::from_secs(15),
        || (reader_threads(pid, data), reader_threads(pid, acks)),
        |(d, _)| d.iter().any(|r| r.3 == BATCH),
    );
    drop(client);
    let batch: Vec<_> = on_data.iter().filter(|r| r.3 == BATCH).collect();
    assert!(!batch.is_empty(), "a thread of the data port runs SCHED_BATCH during the stream: {on_data:?}");
    assert!(batch.iter().all(|r| r.2 == -10), "at the readers' nice still: {batch:?}");
    assert!(on_acks.iter().all(|r| r.3 == OTHER), "the ACK port's threads stay SCHED_OTHER: {on_acks:?}");
    // Quiet, the thread wakes for its housekeeping a second later, and goes
    // back before it sleeps until the next frame. The deadline sits between
    // that second and the pods' next frame of their own (5 s after the
    // stream, measured), which would end a window too and hide a thread
    // left in the bulk class.
    wait_until("the data port's threads back in SCHED_OTHER", Duration::from_secs(3), || {
        reader_threads(pid, data).iter().all(|r| r.3 == OTHER)
    });
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1));
}

#[test]
fn a_receive_that_empties_the_socket_says_so_and_a_full_one_does_not() {
    // The reader waits at once after a batch that emptied the socket, instead
    // of one more receive that finds nothing: `drained` must be true exactly
    // when `recvmmsg` returned fewer frames than it has slots.
    use std::os::fd::AsRawFd;
    use ub_port::PortRx;
    use ub_port::afpacket::MMSG_SLOTS;
    let lab = lab("drained", 2);
    let sw = lab.switch_ns();
    // `recvmmsg` itself (a busy-slots half waits on an epoll set, not on its socket).
    let mmsg = ub_port::afpacket::RxConfig { mode: ub_port::afpacket::RxMode::Mmsg, ..Default::default() };
    let mut rxs = NetNs::open(&sw).unwrap().run(|| ub_port::afpacket::open("ubp1", mmsg).unwrap().0).unwrap();
    assert_eq!(rxs.len(), 1, "one receive half by default");
    let rx = &mut rxs[0];
    // What the socket holds, in bytes (`Rmem` in the namespace's
    // /proc/net/packet), so a batch is read only once every frame is queued.
    let link = std::fs::read_link(format!("/proc/self/fd/{}", rx.wait_fd().unwrap().as_raw_fd())).unwrap();
    let inode = link.to_string_lossy().trim_start_matches("socket:[").trim_end_matches(']').to_string();
    let queued = || -> u64 {
        let table = ns_ok(&sw, &["cat", "/proc/net/packet"]);
        let row = table.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|c| c.get(8) == Some(&&*inode));
        row.and_then(|c| c.get(6)?.parse().ok()).expect("our socket in /proc/net/packet")
    };
    let f = frame([2, 0, 0, 0, 0x77, 2], [2, 0, 0, 0, 0x77, 1], 60);
    let receive = |rx: &mut ub_port::afpacket::AfPacketRx| {
        let mut frames = Vec::new();
        rx.recv_batch(&mut frames).unwrap();
        let n = frames.len();
        drop(frames);
        (n, rx.drained())
    };
    // One frame: what one costs the socket's queue.
    inject(&lab.pods[0].ns, std::slice::from_ref(&f));
    wait_until("one frame queued", Duration::from_secs(5), || queued() > 0);
    let one = queued();
    assert_eq!(receive(rx), (1, true));
    // More than a batch, all queued before the first receive.
    let sent = MMSG_SLOTS + 8;
    inject(&lab.pods[0].ns, &vec![f; sent]);
    wait_until("every frame queued", Duration::from_secs(5), || queued() >= one * sent as u64);
    assert_eq!(receive(rx), (MMSG_SLOTS, false), "a full batch: more may wait");
    assert_eq!(receive(rx), (8, true), "the rest: the socket is empty");
    assert_eq!(receive(rx), (0, true));
}

#[test]
fn frames_the_host_sends_on_a_port_are_not_forwarded() {
    // The port's own sockets must ignore outgoing frames, also in a fanout
    // group (PACKET_FANOUT_FLAG_IGNORE_OUTGOING): what the switch namespace's
    // own stack sends out of ubp1 goes to pod 1 only, never to pod 2.
    let lab = lab("outgoing", 2);
    let d = Daemon::start(&lab, &[]);
    let sw = lab.switch_ns();
    ns_ok(&sw, &["ip", "addr", "add", "10.0.0.254/24", "dev", "ubp1"]);
    let dump1 = Tcpdump::start(&lab.pods[0].ns, "arp");
    let dump2 = Tcpdump::start(&lab.pods[1].ns, "arp");
    // ARP requests for an absent address leave the host through ubp1.
    let _ = ns_exec(&sw, &["ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", "ubp1", "10.0.0.99"]);
    let seen1 = dump1.finish_when("the host's ARP request", |l| has(l, "who-has 10.0.0.99 tell 10.0.0.254"));
    // Pod 1's marker, after the host's frames: once pod 2 has it, anything
    // switched from ubp1 before it would be in pod 2's capture too.
    let seen2 = dump2.finish_after(&mark(&lab.pods[0].ns));
    assert!(has(&seen1, "who-has 10.0.0.99 tell 10.0.0.254"), "pod1: {seen1:#?}");
    assert!(!has(&seen2, "10.0.0.254"), "the host's own frames were switched: {seen2:#?}");
    // Counted just after it was sent on: a frame of the host's read by the
    // switch would have been read before it.
    wait_until("the marker to be counted", Duration::from_secs(5), || d.counter("ubp1", "rx_frames") >= 1);
    assert_eq!(d.counter("ubp1", "rx_frames"), 1, "ubp1 received only pod 1's marker");
}

/// A process stopped with SIGSTOP, continued when this is dropped (panics
/// included), so the daemon's own guard can stop it afterwards.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        assert!(std::process::Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap().success());
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

/// The sizes of `pid`'s shared mappings of sockets (a packet socket's ring).
fn socket_maps(pid: u32) -> Vec<u64> {
    socket_mappings(pid).into_iter().map(|(len, _)| len).collect()
}

/// The daemon `pid`'s mappings of sockets (its RX and TX rings): each
/// one's length in bytes and its socket's inode.
fn socket_mappings(pid: u32) -> Vec<(u64, String)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter_map(|l| {
            let inode = l.split("socket:[").nth(1)?.strip_suffix(']')?;
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            Some((u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?, inode.to_string()))
        })
        .collect()
}

/// The ports of `lab` on which the daemon `pid` has an RX ring of `len`
/// bytes mapped: each such mapping names its socket's inode, which
/// `/proc/net/packet` ties to an interface.
fn ring_ports(lab: &Lab, pid: u32, len: u64) -> Vec<String> {
    let rings: Vec<String> =
        socket_mappings(pid).into_iter().filter(|(l, _)| *l == len).map(|(_, inode)| inode).collect();
    lab.ports().into_iter().filter(|p| packet_socket_inodes(lab, p).iter().any(|i| rings.contains(i))).collect()
}

/// Datagram `seq` of a burst: its number, then `len - 4` bytes that
/// depend on it.
fn datagram(seq: u32, len: usize) -> Vec<u8> {
    let mut p = seq.to_be_bytes().to_vec();
    p.extend((4..len).map(|k| (seq as usize * 7 + k).to_le_bytes()[0]));
    p
}

/// A UDP socket in pod 2 on 10.0.0.2:7777 with room for a burst (the
/// default buffer holds about a hundred datagrams), and one in pod 1 to
/// send to it.
fn udp_ends(lab: &Lab) -> (std::net::UdpSocket, std::net::UdpSocket) {
    use std::net::UdpSocket;
    let rx = NetNs::open(&lab.pods[1].ns).unwrap().run(|| UdpSocket::bind("10.0.0.2:7777").unwrap()).unwrap();
    rustix::net::sockopt::set_socket_recv_buffer_size_force(&rx, 32 << 20).unwrap();
    let tx = NetNs::open(&lab.pods[0].ns).unwrap().run(|| UdpSocket::bind("10.0.0.1:0").unwrap()).unwrap();
    (rx, tx)
}

/// Sends small datagrams from pod 1 to pod 2, to a port nobody listens on,
/// 2000 a second, until ubp1's receive halves hold RX slots (rings of 2
/// MiB or more: 1024 slots hold 100 ms of that rate, where the TX ring is
/// 256 KiB), for at most 10 s; the test then has 2 s (the quiet spell
/// after which the port gives them back) to use them, or stops the daemon
/// first.
fn make_busy(lab: &Lab, d: &Daemon) {
    let (_rx, tx) = udp_ends(lab);
    let rings = || socket_maps(d.child.id()).iter().filter(|&&len| len >= 2 << 20).count();
    let t = std::time::Instant::now();
    while rings() == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "ubp1 took no RX slots in 10 s: {:?}",
            socket_maps(d.child.id())
        );
        for _ in 0..20 {
            tx.send_to(&[0u8; 16], "10.0.0.2:9").unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Two pods whose links, both ends, take jumbo frames (MTU 9000).
fn jumbo_lab(tag: &str) -> Lab {
    let lab = lab(tag, 2);
    for p in &lab.pods {
        ns_ok(&p.ns, &["ip", "link", "set", "eth0", "mtu", "9000"]);
        ns_ok(&lab.switch_ns(), &["ip", "link", "set", &p.port, "mtu", "9000"]);
    }
    lab
}

/// Sends datagrams `payload(0..n)` from pod 1 to pod 2 while the daemon is
/// stopped, so they queue on ubp1 and its reader takes them in full
/// batches; runs `after_send` once the daemon goes on; waits until ubp2 has
/// sent them all, and only then reads pod 2's socket: every datagram must
/// be there, unchanged and in order.
fn burst_through_stopped_daemon(
    lab: &Lab,
    d: &Daemon,
    n: u32,
    payload: impl Fn(u32) -> Vec<u8>,
    after_send: impl FnOnce(),
) {
    let (rx, tx) = udp_ends(lab);
    let before = d.counter("ubp2", "tx_frames");
    // One CPU sends: an unconnected socket's datagrams carry no flow hash,
    // so the port's fanout group places them by CPU, and a sender that
    // moves between CPUs mid-burst splits it over two receive halves, which
    // the port's thread then reads one after the other (the kernel bridge
    // keeps such a sender's order no better: one backlog per CPU).
    let mut one_cpu = rustix::thread::CpuSet::new();
    one_cpu.set(0);
    rustix::thread::sched_setaffinity(None, &one_cpu).unwrap();
    {
        let _stopped = Stopped::stop(d.child.id());
        for seq in 0..n {
            tx.send_to(&payload(seq), "10.0.0.2:7777").unwrap();
        }
    }
    after_send();
    wait_until(&format!("{n} datagrams through ubp2"), Duration::from_secs(10), || {
        d.counter("ubp2", "tx_frames") >= before + u64::from(n)
    });
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 65_536];
    let (mut bad, mut out_of_order, mut last) = (Vec::new(), 0, None);
    for _ in 0..n {
        let len = rx.recv(&mut buf).expect("a datagram within 5 s");
        let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
        if buf[..len] != payload(seq)[..] {
            bad.push(seq);
        }
        if last.is_some_and(|l| seq <= l) {
            out_of_order += 1;
        }
        last = Some(seq);
    }
    assert!(bad.is_empty(), "{} of {n} datagrams arrived changed, first {:?}", bad.len(), &bad[..bad.len().min(10)]);
    assert_eq!(out_of_order, 0, "datagrams out of order");
}

#[test]
fn a_burst_of_small_frames_leaves_through_the_tx_ring_whole_and_in_order() {
    // A batch of frames that fit a TX ring slot is written into the egress
    // port's PACKET_TX_RING and sent with one `send`, and a slot is written
    // again once its frame is sent. 2000 datagrams of every size (with
    // their checksums left to the receiver, as a pod sends them) go through
    // ubp2's 128 slots, each slot 15 times, and wait in pod 2's socket
    // until all have arrived: each must be there, unchanged, in order. (A
    // veth copies a slot's pages itself before a frame enters a pod, so this
    // cannot tell the whole-frame copy from page fragments; that choice is
    // a measured cost, in docs/benchmarks-history.md.)
    let lab = lab("txring", 2);
    let d = Daemon::start(&lab, &[]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1), "pods resolved and learned");
    assert!(socket_maps(d.child.id()).is_empty(), "no ring before a burst: {:?}", socket_maps(d.child.id()));
    let payload = |seq: u32| -> Vec<u8> { datagram(seq, 4 + (seq as usize * 37) % 1400) };
    burst_through_stopped_daemon(&lab, &d, 2000, payload, || {
        let maps = sample_until(Duration::from_secs(5), || socket_maps(d.child.id()), |m| !m.is_empty());
        assert_eq!(maps, vec![256 << 10], "one 256 KiB TX ring, on ubp2");
    });
    assert_eq!(d.counter("ubp2", "tx_error"), 0);
}

#[test]
fn with_rx_slots_frames_too_big_for_a_slot_arrive_whole_and_in_order_among_small_ones() {
    // A busy port's RX slots: a frame that does not fit its 2 KiB slot gets the slot
    // with its first bytes and TP_STATUS_COPY, and the whole frame is queued
    // on the socket; the reader must match each such slot with the next
    // whole frame from the socket. 600 datagrams, two in three of them
    // 2000-8000 bytes (jumbo frames, MTU 9000), queue while the daemon is
    // stopped, so a walk of the ring meets more of those slots than one
    // `recvmmsg` takes. Each must reach pod 2 unchanged and in order, and
    // none may be cut short.
    let lab = jumbo_lab("slots");
    let d = Daemon::start(&lab, &["--rx", "busy-slots", "--busy-pps", "1000"]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1), "pods resolved and learned");
    make_busy(&lab, &d);
    let payload = |seq: u32| -> Vec<u8> {
        let len =
            if seq.is_multiple_of(3) { 4 + (seq as usize * 37) % 1400 } else { 2000 + (seq as usize * 131) % 6000 };
        datagram(seq, len)
    };
    burst_through_stopped_daemon(&lab, &d, 600, payload, || {});
    assert_eq!(d.counter("ubp1", "truncated"), 0, "frames cut short at ubp1");
    assert_eq!(d.counter("ubp1", "ring_full"), 0, "frames the ring had no slot for");
}

#[test]
fn with_rx_slots_a_link_flap_leaves_the_slots_in_step_with_their_copies() {
    // ubp1 going down and up while frames too big for a slot wait in its
    // ring leaves ENETDOWN pending on its sockets. Had the reader's
    // `recvmmsg` of those frames' copies failed on it, the copies would stay
    // queued and be matched with the next frames' slots: pods would get old
    // frames in place of new ones. Every datagram sent after the flap must
    // reach pod 2 as itself and in order (those sent before may be lost).
    let lab = jumbo_lab("slotflap");
    let sw = lab.switch_ns();
    let d = Daemon::start(&lab, &["--rx", "busy-slots", "--busy-pps", "1000"]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1), "pods resolved and learned");
    make_busy(&lab, &d);
    let (rx, tx) = udp_ends(&lab);
    let payload = |seq: u32| datagram(seq, 3000 + seq as usize * 17);
    {
        let _stopped = Stopped::stop(d.child.id());
        // Sent from the last CPU, so they wait in a member other than the
        // first, whose error the reader's link check clears anyway.
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let mut last = rustix::thread::CpuSet::new();
        last.set(cpus - 1);
        rustix::thread::sched_setaffinity(None, &last).unwrap();
        for seq in 0..40 {
            tx.send_to(&payload(seq), "10.0.0.2:7777").unwrap();
        }
        ns_ok(&sw, &["ip", "link", "set", "ubp1", "down"]);
        ns_ok(&sw, &["ip", "link", "set", "ubp1", "up"]);
    }
    let up = |ns: &str, dev: &str| ns_ok(ns, &["cat", &format!("/sys/class/net/{dev}/operstate")]).trim() == "up";
    wait_until("pod 1's link back up", Duration::from_secs(5), || up(&lab.pods[0].ns, "eth0"));
    wait_until("ubp1 up again in the daemon", Duration::from_secs(5), || {
        Daemon::port(&d.query(&["port", "list"]), "ubp1")["state"] == "up"
    });
    for seq in 40..80 {
        tx.send_to(&payload(seq), "10.0.0.2:7777").unwrap();
    }
    rx.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = vec![0u8; 9000];
    let mut seen = Vec::new();
    while seen.last().is_none_or(|&l| l < 79) {
        let Ok(n) = rx.recv(&mut buf) else { break };
        let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
        assert_eq!(buf[..n], payload(seq)[..], "datagram {seq} arrived changed");
        seen.push(seq);
    }
    assert!(seen.is_sorted(), "out of order: {seen:?}");
    let after: Vec<u32> = seen.iter().copied().filter(|&s| s >= 40).collect();
    assert_eq!(after, (40..80).collect::<Vec<_>>(), "the datagrams sent after the flap; all seen: {seen:?}");
}

#[test]
fn frames_the_tx_ring_could_not_send_are_counted_and_the_ring_goes_on_when_the_link_is_back() {
    // A frame the kernel refuses stays in its slot (link down: `send` fails
    // before taking any). The port must count such frames as failed, give
    // the slots back, and write the next frames where the kernel will look
    // for them, or nothing would leave through the ring again.
    use ub_port::{PortTx, TxFrame};
    let lab = lab("txdown", 2);
    let sw = lab.switch_ns();
    let (_rx, tx, _) =
        NetNs::open(&sw).unwrap().run(|| ub_port::afpacket::open("ubp2", Default::default()).unwrap()).unwrap();
    let f = frame(lab.pods[1].mac.0, [2, 0, 0, 0, 0x78, 1], 60);
    let batch = vec![TxFrame::new(&f, None, None); 20];
    let received = || if_stat(&lab.pods[1].ns, "eth0", "rx_packets");
    let before = received();
    let o = tx.send_batch(&batch);
    assert_eq!((o.sent, o.failed), (20, 0), "link up: the ring sends them all");
    ns_ok(&sw, &["ip", "link", "set", "ubp2", "down"]);
    let o = tx.send_batch(&batch);
    assert_eq!((o.sent, o.failed), (0, 20), "link down: every frame refused and counted");
    ns_ok(&sw, &["ip", "link", "set", "ubp2", "up"]);
    wait_until("ubp2 up", Duration::from_secs(5), || {
        ns_ok(&sw, &["cat", "/sys/class/net/ubp2/operstate"]).trim() == "up"
    });
    for round in 0..10 {
        // More than the ring's slots in all: the kernel's head and ours stay together.
        let o = tx.send_batch(&batch);
        assert_eq!((o.sent, o.failed), (20, 0), "round {round} after the link came back");
    }
    wait_until("pod 2 got the 220 frames sent", Duration::from_secs(5), || received() >= before + 220);
    assert_eq!(received(), before + 220, "and only those");
}

#[test]
fn with_rx_busy_slots_a_stream_takes_rings_and_gives_them_back_every_datagram_in_order() {
    // `--rx busy-slots`: a port receives with recvmmsg until its frames come
    // faster than --busy-pps (here 20 k/s), then sets up a TPACKET_V2 ring
    // per receive half (here at most 1024 slots, 2 MiB) and steers its frames there;
    // after 2 s under a fifth of that rate it steers them back and closes the
    // rings. Twice over, a stream of 50 k datagrams/s goes from pod 1 to pod
    // 2 until ubp1's rings are mapped, and on for 50 000 more; then the rings
    // must be given back.
    // Pod 2 must get every datagram of both streams, in order: across each
    // switch to the rings and back, the frames before it are read first.
    let lab = lab("busyslots", 2);
    let d = Daemon::start(&lab, &["--rx", "busy-slots", "--ring-slots", "1024", "--busy-pps", "20000"]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1), "pods resolved and learned");
    let rings = || socket_maps(d.child.id()).into_iter().filter(|&len| len == 1024 * 2048).count();
    assert_eq!(rings(), 0, "no RX ring before the port is busy");
    let mut stream = Stream::start(&lab);
    for n in 1..=2 {
        stream.paced(500, || rings() > 0, 50_000).unwrap_or_else(|_| panic!("stream {n}: no RX ring in 10 s"));
        wait_until(&format!("stream {n}: the rings given back"), Duration::from_secs(15), || rings() == 0);
    }
    stream.all_arrived_in_order();
    assert_eq!(d.counter("ubp1", "ring_full"), 0, "frames the kernel dropped at ubp1");
}

#[test]
fn a_tc_ingress_qdisc_added_and_removed_under_a_stream_every_datagram_arrives_once() {
    // A port whose interface gets an ingress qdisc (the bandwidth plugin's,
    // a policer) receives IPv4, IPv6 and ARP from sockets bound to those
    // protocols, which the kernel serves after tc ingress, and its
    // ETH_P_ALL sockets (both halves' and their RX rings) leave them out;
    // when the qdisc goes, they take everything again. A stream of 30 k
    // datagrams/s from pod 1 to pod 2, on the rings of a busy port with two
    // receive halves, across both switches: every datagram arrives, none
    // twice, and the switch sent pod 2 what it received from pod 1.
    let lab = lab("tcswitch", 2);
    let d = Daemon::start(&lab, &["--readers", "2", "--busy-pps", "5000"]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1), "pods resolved and learned");
    let (sw, port) = (lab.switch_ns(), lab.ports()[0].clone());
    let rings = || socket_maps(d.child.id()).into_iter().filter(|&len| len >= 2 << 20).count();
    let after_tc = || ns_ok(&sw, &["ss", "-0", "-a"]).contains(&format!("ip:{port}"));
    let mut stream = Stream::start(&lab);
    stream.paced(300, || rings() > 0, 30_000).unwrap_or_else(|_| panic!("no RX ring in 10 s"));
    ns_ok(&sw, &["tc", "qdisc", "add", "dev", &port, "clsact"]);
    stream.paced(300, after_tc, 30_000).unwrap_or_else(|_| panic!("no socket bound to IPv4 on {port} in 10 s"));
    ns_ok(&sw, &["tc", "qdisc", "del", "dev", &port, "clsact"]);
    stream.paced(300, || !after_tc(), 30_000).unwrap_or_else(|_| panic!("the IPv4 socket still there after 10 s"));
    let sent = stream.sent;
    let mut got = stream.finish();
    let in_order = got.windows(2).filter(|w| w[1] > w[0]).count();
    got.sort_unstable();
    let arrived = got.len();
    got.dedup();
    assert_eq!(arrived - got.len(), 0, "datagrams that arrived twice");
    assert_eq!(arrived, sent as usize, "datagrams lost (of {sent})");
    eprintln!("{arrived} datagrams, {} after the one before them", in_order);
    d.settled(&lab);
    let (rx, tx) = (d.counter(&port, "rx_frames"), d.counter(&lab.ports()[1], "tx_frames"));
    assert_eq!(rx, tx, "what the switch received from pod 1 and sent pod 2");
}

/// Whether process `pid` has exited (gone, or a zombie not yet waited for).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
}

#[test]
fn ten_takeovers_in_a_row_under_a_stream_on_busy_ports_lose_and_double_nothing() {
    // `run --takeover` ten times while pod 1 streams 30 k datagrams/s to
    // pod 2, its port busy (RX rings, which a port gives back before it is
    // handed over: their read position cannot travel). Every datagram
    // arrives once and in order, and the tenth daemon holds as many
    // descriptors as the first.
    let lab = lab("tk10", 2);
    let args = ["--busy-pps", "5000"];
    let mut d = Daemon::start(&lab, &args);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1), "pods resolved and learned");
    let rings = |pid: u32| socket_maps(pid).into_iter().filter(|&len| len >= 2 << 20).count();
    let fds = |pid: u32| std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    let mut stream = Stream::start(&lab);
    let first = d.child.id();
    stream.paced(300, || rings(first) > 0, 3000).unwrap_or_else(|_| panic!("no RX ring in 10 s"));
    let first_fds = fds(first);
    let rss = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .map_or(0, |v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0))
    };
    let first_rss = rss(first);
    // A daemon that took over holds one descriptor more than one started
    // afresh (its end of the handover connection): the first to take over
    // is the one the tenth is compared with.
    let mut taken_fds = 0;
    for n in 1..=10 {
        let mut takeover = args.to_vec();
        takeover.push("--takeover");
        let next = Daemon::spawn(&lab, &takeover);
        let old = d.child.id();
        stream.paced(300, || exited(old), 3000).unwrap_or_else(|_| panic!("takeover {n}: the old daemon still runs"));
        assert_eq!(d.child.wait().unwrap().code(), Some(0), "takeover {n}: the old daemon's exit");
        d.state_dir = None;
        d = next;
        let pid = d.child.id();
        stream.paced(300, || rings(pid) > 0, 3000).unwrap_or_else(|_| panic!("takeover {n}: no RX ring in 10 s"));
        if n == 1 {
            taken_fds = fds(pid);
        }
    }
    assert!(d.alive());
    let last_fds = fds(d.child.id());
    eprintln!(
        "fds {first_fds}, {taken_fds} after the first takeover, {last_fds} after the tenth; RSS {first_rss} -> {} KiB",
        rss(d.child.id())
    );
    stream.all_arrived_in_order();
    assert_eq!(last_fds, taken_fds, "descriptors of the tenth daemon against the first that took over");
    assert_eq!(taken_fds, first_fds + 1, "a daemon that took over holds its handover connection, no more");
    assert_eq!(d.counter("ubp1", "ring_full"), 0, "frames the kernel dropped at ubp1");
}

#[test]
fn with_rx_busy_slots_a_port_that_outgrows_its_rings_takes_larger_ones_every_datagram_in_order() {
    // A ring holds 100 ms of the rate that made its port busy: busy from
    // 5 k/s, a stream of 7.5 k datagrams/s gets 1024 slots (2 MiB; 2048 if
    // a reader that fell behind counted it at over 10 k/s). At 30 k/s
    // those hold 34 ms, under a quarter of 100 ms: the port gives them back
    // and takes rings of 4096 or more slots (8 MiB and up). Pod 2 gets
    // every datagram, in order, across both changes and the last giving
    // back. (A jump straight to 100 k/s overflows the small ring within 10 ms
    // of a reader off its CPU before the port can change it: those drops are
    // counted, as `ring_full`, but that is not what this test is about.)
    let lab = lab("outgrow", 2);
    let d = Daemon::start(&lab, &["--rx", "busy-slots", "--busy-pps", "5000"]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1), "pods resolved and learned");
    const MIB: u64 = 1 << 20;
    let rings = |sizes: &[u64]| socket_maps(d.child.id()).into_iter().filter(|len| sizes.contains(len)).count();
    let (small, large) = ([2 * MIB, 4 * MIB], [8 * MIB, 16 * MIB, 32 * MIB]);
    let maps = || format!("the daemon's socket mappings: {:?}", socket_maps(d.child.id()));
    let mut stream = Stream::start(&lab);
    stream.paced(75, || rings(&small) > 0, 7500).unwrap_or_else(|_| panic!("no rings for 7.5 k/s in 10 s; {}", maps()));
    assert_eq!(rings(&large), 0, "rings sized to 7.5 k/s, not to --ring-slots; {}", maps());
    let sent = stream.sent;
    stream.paced(300, || rings(&large) > 0, 30_000).unwrap_or_else(|t| {
        let rate = f64::from(stream.sent - sent) / t.as_secs_f64();
        panic!("no larger rings in 10 s at {rate:.0} datagrams/s; {}", maps())
    });
    wait_until("the rings given back", Duration::from_secs(15), || rings(&small) + rings(&large) == 0);
    assert_eq!(d.counter("ubp1", "ring_full"), 0, "frames the kernel dropped at ubp1");
    stream.all_arrived_in_order();
}

#[test]
fn with_rx_busy_slots_an_idle_ports_socket_wakes_its_reader_directly() {
    // Each receive half has a wait set (an epoll of its own, where the ring
    // thread puts a new ring's socket), but its own socket belongs in its
    // reader's epoll: behind the set, every frame's wake-up went through
    // two epoll levels (2-4% more CPU per frame). The reader's epoll is the
    // one that also holds its waker, an eventfd.
    let lab = lab("directwake", 2);
    let d = Daemon::start(&lab, &["--rx", "busy-slots"]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1), "pods resolved and learned");
    let pid = d.child.id();
    let sockets: Vec<String> = packet_socket_inodes(&lab, "ubp1").iter().map(|i| format!("socket:[{i}]")).collect();
    assert!(!sockets.is_empty(), "ubp1 has packet sockets");
    let link = |fd: &str| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).map(|p| p.display().to_string());
    // For each epoll of the daemon, what its registered descriptors are.
    let epolls = || -> Vec<Vec<String>> {
        let fds =
            std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
        fds.iter()
            .filter_map(|e| {
                let fd = e.file_name().to_string_lossy().to_string();
                (link(&fd).ok()? == "anon_inode:[eventpoll]").then_some(fd)
            })
            .map(|ep| {
                let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{ep}")).unwrap_or_default();
                info.lines()
                    .filter_map(|l| l.strip_prefix("tfd:")?.split_whitespace().next().map(str::to_string))
                    .filter_map(|tfd| link(&tfd).ok())
                    .collect()
            })
            .collect()
    };
    wait_until("ubp1's socket in a reader's own epoll", Duration::from_secs(5), || {
        epolls()
            .iter()
            .any(|ep| ep.iter().any(|t| t == "anon_inode:[eventfd]") && ep.iter().any(|t| sockets.contains(t)))
    });
}

/// Numbered datagrams from pod 1 to pod 2 (`udp_ends`, pod 2's buffer 128
/// MiB), and a thread in pod 2 that keeps the numbers that arrive. The
/// sending (test) thread stays on CPU 0: UDP from an unconnected socket
/// carries no flow hash and is spread over a port's halves by CPU, so a
/// sender that moves may be reordered between two readers, rings or not
/// (docs/architecture.md, "Threads").
struct Stream {
    tx: std::net::UdpSocket,
    sent: u32,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    receiver: std::thread::JoinHandle<Vec<u32>>,
}

impl Stream {
    fn start(lab: &Lab) -> Stream {
        let (rx, tx) = udp_ends(lab);
        rustix::net::sockopt::set_socket_recv_buffer_size_force(&rx, 128 << 20).unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let receiver = std::thread::spawn({
            let done = done.clone();
            move || {
                let (mut got, mut buf) = (Vec::new(), [0u8; 64]);
                // Until the sender is done and nothing came for 200 ms (bounded by the sender's end).
                loop {
                    match rx.recv(&mut buf) {
                        Ok(len) if len >= 4 => got.push(u32::from_be_bytes(buf[..4].try_into().unwrap())),
                        Ok(_) => {}
                        Err(_) if done.load(std::sync::atomic::Ordering::Acquire) => return got,
                        Err(_) => {}
                    }
                }
            }
        });
        let mut one_cpu = rustix::thread::CpuSet::new();
        one_cpu.set(0);
        rustix::thread::sched_setaffinity(None, &one_cpu).unwrap();
        Stream { tx, sent: 0, done, receiver }
    }

    /// Sends `per_tick` datagrams every 10 ms until `until` holds, then
    /// `more` datagrams at that pace; `Err(how long)` if `until` did not
    /// hold within 10 s.
    fn paced(&mut self, per_tick: u32, until: impl Fn() -> bool, more: u32) -> Result<(), Duration> {
        let (start, mut end) = (std::time::Instant::now(), None);
        while end.is_none_or(|m| self.sent < m) {
            let tick = std::time::Instant::now();
            for _ in 0..per_tick {
                self.tx.send_to(&datagram(self.sent, 16), "10.0.0.2:7777").unwrap();
                self.sent += 1;
            }
            if end.is_none() && until() {
                end = Some(self.sent + more);
            }
            if end.is_none() && start.elapsed() >= Duration::from_secs(10) {
                return Err(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10).saturating_sub(tick.elapsed()));
        }
        Ok(())
    }

    /// The numbers pod 2 received, in the order it received them, once
    /// nothing came for 200 ms.
    fn finish(self) -> Vec<u32> {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        self.receiver.join().unwrap()
    }

    /// Pod 2 got every datagram sent, in order.
    fn all_arrived_in_order(self) {
        let sent = self.sent;
        let got = self.finish();
        let out_of_order = got.windows(2).filter(|w| w[1] <= w[0]).count();
        assert_eq!(out_of_order, 0, "datagrams out of order");
        assert_eq!(got.len(), sent as usize, "datagrams lost (of {sent})");
    }
}

/// Sends `n` numbered datagrams from a connected UDP socket in pod 1 to pod
/// 2, from a thread that moves between the first two CPUs every 50, as
/// quickly as it can; returns the numbers pod 2 received, in the order it
/// received them.
fn udp_from_a_moving_sender(lab: &Lab, n: u32) -> Vec<u32> {
    // Both stations known first: the stream is known unicast, not a flood.
    assert!(ping(&lab.pods[1].ns, "10.0.0.1", 1), "pod 2 reaches pod 1");
    let (rx, tx) = udp_ends(lab);
    rustix::net::sockopt::set_socket_recv_buffer_size_force(&rx, 64 << 20).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    tx.connect("10.0.0.2:7777").unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from).min(2);
    std::thread::spawn(move || {
        for seq in 0..n {
            if seq % 50 == 0 {
                let mut one = rustix::thread::CpuSet::new();
                one.set((seq / 50) as usize % cpus);
                rustix::thread::sched_setaffinity(None, &one).unwrap();
            }
            tx.send(&datagram(seq, 64)).unwrap();
        }
    })
    .join()
    .unwrap();
    let mut buf = [0u8; 64];
    // Until all came or nothing did for 2 s.
    (0..n).map_while(|_| rx.recv(&mut buf).ok().map(|_| u32::from_be_bytes(buf[..4].try_into().unwrap()))).collect()
}

/// A UDP flow (a connected socket, as iperf3, QUIC and DNS clients use)
/// whose sender moves between CPUs arrives in order, as through the kernel
/// bridge. Spread over a port's halves by CPU, as UDP was, the frames sent
/// on one CPU sat in one half while the next ones, sent on the other, were
/// forwarded from the other half first: some out of order in every run.
#[test]
fn a_udp_flow_whose_sender_moves_between_cpus_arrives_in_order_as_through_the_bridge() {
    const N: u32 = 20_000;
    let out_of_order = |got: &[u32]| got.windows(2).filter(|w| w[1] <= w[0]).count();
    let kernel = {
        let lab = lab("uok", 2);
        kernel_bridge(&lab);
        udp_from_a_moving_sender(&lab, N)
    };
    assert_eq!((kernel.len(), out_of_order(&kernel)), (N as usize, 0), "the kernel bridge: received, out of order");
    let lab = lab("uou", 2);
    let _d = Daemon::start(&lab, &[]);
    let user = udp_from_a_moving_sender(&lab, N);
    assert_eq!(out_of_order(&user), 0, "userbridge: datagrams out of order (of {} received)", user.len());
    assert_eq!(user.len(), N as usize, "userbridge: datagrams lost");
}
