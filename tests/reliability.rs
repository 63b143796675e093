//! What no pod can do to the switch: hostile frames, MAC flooding, loops,
//! churn; and the daemon with only the capabilities it needs.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn proc_status(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find_map(|l| l.strip_prefix(key)).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn spoofing_and_self_addressed_frames() {
    let lab = lab("spoof", 3);
    let d = Daemon::start(&lab, &[]);
    let [a, b, c] = [lab.pods[0].mac.0, lab.pods[1].mac.0, lab.pods[2].mac.0];
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1));
    // Source equal to destination: learned on its port, then dropped as same-port.
    inject(&lab.pods[2].ns, &[frame(c, c, 60)]);
    wait_until("ubp3's frame to be counted", Duration::from_secs(5), || d.counter("ubp3", "rx_frames") == 1);
    assert_eq!(d.counter("ubp3", "same_port"), 1);
    // Pod 3 claims pod 2's MAC: like a bridge, the station moves, and it is counted.
    inject(&lab.pods[2].ns, &[frame([0xff; 6], b, 60)]);
    wait_until("ubp3's second frame", Duration::from_secs(5), || d.counter("ubp3", "rx_frames") == 2);
    assert_eq!(d.query(&["stats"])["fdb"]["events"]["moved"], 1);
    // A static entry is what protects a station: then the spoof moves nothing.
    d.query(&["fdb", "add", &ub_wire::Mac(b).to_string(), "ubp2"]);
    inject(&lab.pods[2].ns, &[frame([0xff; 6], b, 60), frame(a, b, 60)]);
    wait_until("ubp3's spoofs", Duration::from_secs(5), || d.counter("ubp3", "rx_frames") == 4);
    let fdb = d.query(&["fdb", "show"]);
    let e = fdb.as_array().unwrap().iter().find(|e| e["mac"] == ub_wire::Mac(b).to_string()).unwrap();
    assert_eq!((e["port"].as_str(), e["state"].as_str()), (Some("ubp2"), Some("static")));
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 2), "pods 1 and 2 still talk");
}

#[test]
fn a_million_random_source_macs_cannot_evict_or_see_the_others() {
    let lab = lab("macflood", 3);
    let mut d = Daemon::start(&lab, &["--fdb-max-per-port", "1000", "--fdb-max", "5000"]);
    let pid = d.child.id();
    assert!(ping(&lab.pods[1].ns, "10.0.0.3", 1));
    let rss0 = proc_status(pid, "VmRSS:");
    let dump = Tcpdump::start(&lab.pods[0].ns, "icmp");
    // Pod 1 floods: unknown destination, locally administered random sources.
    let cfg = TempFile(format!("/tmp/{}.trafgen", lab.name));
    std::fs::write(&cfg.0, "{ 0x02,0x00,0x00,0x00,0x99,0x99, 0x02, drnd(5), c16(0x0800), fill(0x00, 46) }\n").unwrap();
    let mut attack = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.pods[0].ns,
            "timeout",
            "60",
            "trafgen",
            "-i",
            &cfg.0,
            "-o",
            "eth0",
            "-n",
            "1000000",
            "-q",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Pods 2 and 3 keep talking through it.
    let ok = ping(&lab.pods[1].ns, "10.0.0.3", 5);
    assert!(attack.wait().unwrap().success(), "trafgen failed");
    assert!(ok, "pods 2 and 3 lost each other during the flood");
    assert!(ping(&lab.pods[1].ns, "10.0.0.3", 2));
    let seen = dump.finish_after(&mark(&lab.pods[1].ns));
    assert!(!seen.iter().any(|l| l.contains("10.0.0.2") || l.contains("10.0.0.3")), "the attacker saw: {seen:#?}");
    let st = d.query(&["stats"]);
    let p1 = &Daemon::port(&st, "ubp1")["counters"];
    let sent = if_stat(&lab.pods[0].ns, "eth0", "tx_packets");
    assert!(sent >= 1_000_000, "trafgen sent {sent}");
    eprintln!(
        "flood: {sent} frames sent, {} received by the switch, {} ring drops",
        p1["rx_frames"], p1["drops"]["ring_full"]
    );
    assert_eq!(Daemon::port(&st, "ubp1")["fdb_learned"], 1000, "the attacker's port is at its cap");
    assert!(st["fdb"]["events"]["refused"].as_u64().unwrap() > 10_000);
    // The others' entries are still there, on their ports (ubp2 also
    // learned the marker's source).
    let fdb = d.query(&["fdb", "show"]);
    for p in &lab.pods[1..] {
        let on = fdb.as_array().unwrap().iter().any(|e| e["mac"] == p.mac.to_string() && e["port"] == p.port.as_str());
        assert!(on, "{} lost its entry: {fdb:#}", p.port);
    }
    assert_eq!(Daemon::port(&st, "ubp3")["fdb_learned"], 1);
    assert!(p1["drops"]["storm_unknown"].as_u64().unwrap() > 0, "storm control did not limit the flood");
    // The flood made ubp1 busy: its RX slots (2 × 32 MiB, in the RSS) are
    // given back 2 s after it; the table stays bounded all along.
    let rss1 = proc_status(pid, "VmRSS:");
    eprintln!("RSS {rss0} kB -> {rss1} kB right after the flood");
    wait_until(&format!("RSS back within 16 MiB of {rss0} kB (now {rss1} kB)"), Duration::from_secs(15), || {
        proc_status(pid, "VmRSS:") < rss0 + 16 * 1024
    });
    assert!(d.alive());
}

#[test]
fn a_loop_between_two_ports_does_not_take_the_switch_down() {
    let lab = lab("loop", 2);
    let d = Daemon::start(&lab, &[]);
    // Two switch ports joined by a veth pair: every flood comes back.
    let sw = lab.switch_ns();
    ns_ok(&sw, &["ip", "link", "add", "loopa", "type", "veth", "peer", "name", "loopb"]);
    ns_ok(&sw, &["ip", "link", "set", "loopa", "up"]);
    ns_ok(&sw, &["ip", "link", "set", "loopb", "up"]);
    d.query(&["port", "add", "loopa"]);
    d.query(&["port", "add", "loopb"]);
    // The first ARP request goes round and round: storm control bounds it,
    // flap detection pins the stations and drops the looping copies, and
    // that starts the loop guard's probes, which find the loop and block one
    // of its two ports. Frames may be lost until then (a kernel bridge
    // without STP would melt down for good); after, the pods talk steadily.
    let t = Instant::now();
    while !ping(&lab.pods[0].ns, "10.0.0.2", 1) {
        assert!(t.elapsed() < Duration::from_secs(10), "pods never reached each other through the loop");
    }
    wait_until("the loop guard to find the loop", Duration::from_secs(5), || {
        d.query(&["stats"])["loops"]["events"]["blocked"] != 0
    });
    let states: Vec<String> = ["loopa", "loopb"]
        .iter()
        .map(|p| Daemon::port(&d.query(&["port", "list"]), p)["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["up", "blocked"], "the higher-numbered loop port is blocked");
    let out = ns_exec(&lab.pods[0].ns, &["ping", "-c", "10", "-i", "0.2", "-W", "1", "10.0.0.2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let received: u32 =
        text.split(" received").next().and_then(|s| s.rsplit(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(
        received >= 9,
        "pods lost each other in the loop: {text}\nfdb: {:#}\nstats: {:#}",
        d.query(&["fdb", "show"]),
        d.query(&["stats"])
    );
    // The daemon answers promptly in the middle of it.
    let t = Instant::now();
    let st = d.query(&["stats"]);
    assert!(t.elapsed() < Duration::from_secs(1), "stats took {:?}", t.elapsed());
    let dropped: u64 = ["loopa", "loopb"]
        .iter()
        .map(|p| {
            let drops = &Daemon::port(&st, p)["counters"]["drops"];
            ["storm_broadcast", "flapping", "loop_blocked"].iter().map(|k| drops[k].as_u64().unwrap()).sum::<u64>()
        })
        .sum();
    eprintln!("loop: storm/flap/blocked drops {dropped}, fdb {}, loops {}", st["fdb"]["events"], st["loops"]["events"]);
    assert!(dropped > 0, "nothing stopped the loop");
    let ev = &st["fdb"]["events"];
    assert!(ev["moved"].as_u64().unwrap() + ev["flaps"].as_u64().unwrap() > 0, "moves not counted: {ev}");
    // Break the loop: the blocked port is unblocked once its probes stop coming back.
    ns_ok(&sw, &["ip", "link", "set", "loopa", "down"]);
    wait_until("loopb to be unblocked after the loop was broken", Duration::from_secs(10), || {
        Daemon::port(&d.query(&["port", "list"]), "loopb")["state"] != "blocked"
    });
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 3));
}

#[test]
fn churn_leaks_no_fd_thread_namespace_or_memory() {
    let mut lab = lab("churn", 2);
    let d = Daemon::start(&lab, &[]);
    let pid = d.child.id();
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1));
    let background = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.pods[0].ns, "ping", "-i", "0.01", "-w", "30", "-c", "3000", "-q", "10.0.0.2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // One round first, so lazily created things (thread stacks, buffers) exist.
    let round = |lab: &mut Lab| {
        let pod = lab.add_pod().unwrap().clone();
        d.query(&["port", "add", &pod.port]);
        assert!(ping(&lab.pods[0].ns, &pod.ip.to_string(), 1), "new pod unreachable");
        if pod.index.is_multiple_of(2) {
            d.query(&["port", "del", &pod.port]);
            lab.remove_last_pod().unwrap();
        } else {
            // Deleted under the daemon's feet instead: the port goes away by itself.
            lab.remove_last_pod().unwrap();
            wait_until("the deleted pod's port to go", Duration::from_secs(5), || {
                Daemon::port(&d.query(&["port", "list"]), &pod.port)["state"] == "gone"
            });
            d.query(&["port", "del", &pod.port]);
        }
    };
    round(&mut lab);
    // Control-client threads end just after their reply: sample once none is left.
    let settle = || {
        wait_until("control clients to end", Duration::from_secs(5), || {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .unwrap()
                .flatten()
                .all(|t| std::fs::read_to_string(t.path().join("comm")).map_or(true, |c| c.trim() != "control-client"))
        })
    };
    settle();
    // A reader checking its link holds a netlink socket for a moment (and
    // a port thread may be closing a deleted port's sockets): count the
    // descriptors that stay, the fewest of ten samples 20 ms apart.
    let steady_fds = || {
        (0..10)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(20));
                fds(pid)
            })
            .min()
            .unwrap()
    };
    let (fd0, th0, rss0) = (steady_fds(), proc_status(pid, "Threads:"), proc_status(pid, "VmRSS:"));
    let t = Instant::now();
    let mut rounds = 0;
    while rounds < 20 && t.elapsed() < Duration::from_secs(25) {
        round(&mut lab);
        rounds += 1;
    }
    settle();
    let fd1 = sample_until(Duration::from_secs(5), steady_fds, |&n| n <= fd0);
    let (th1, rss1) = (proc_status(pid, "Threads:"), proc_status(pid, "VmRSS:"));
    eprintln!("churn: {rounds} rounds; fds {fd0}->{fd1}, threads {th0}->{th1}, RSS {rss0}->{rss1} kB");
    assert_eq!(fd1, fd0, "fds leaked");
    assert_eq!(th1, th0, "threads leaked");
    assert!(rss1 < rss0 + 8 * 1024, "RSS grew {rss0} -> {rss1} kB");
    let leftover: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&lab.name) && !n.ends_with("-sw") && !n.ends_with("-p1") && !n.ends_with("-p2"))
        .collect();
    assert!(leftover.is_empty(), "namespaces left: {leftover:?}");
    let _ = std::process::Command::new("kill").args(["-INT", &background.id().to_string()]).status();
    let out = String::from_utf8_lossy(&background.wait_with_output().unwrap().stdout).into_owned();
    // Stopping ping with SIGINT may catch one echo in flight; nothing else may be lost.
    let count = |what: &str| -> u64 {
        out.split(what)
            .next()
            .and_then(|s| s.rsplit(char::is_whitespace).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (sent, got) = (count(" packets transmitted"), count(" received"));
    assert!(sent > 50 && sent - got <= 1, "pods 1 and 2 lost packets during churn: {out}");
}

#[test]
fn runs_with_only_net_raw_and_net_admin_and_names_a_missing_one() {
    let lab = lab("caps", 2);
    let sock = format!("/tmp/{}.sock", lab.name);
    let run = |caps: &str| {
        let mut cmd = std::process::Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &lab.switch_ns(),
            "setpriv",
            &format!("--bounding-set=-all{caps}"),
            "--",
            BIN,
            "run",
        ]);
        cmd.args(["--port", "ubp1", "--port", "ubp2", "--socket", &sock, "--log-level", "warn", "--state-dir"]);
        cmd.arg(state_dir_of(std::path::Path::new(&sock)));
        cmd
    };
    let out = run(",+net_admin").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("missing capability CAP_NET_RAW"), "{err}");
    let out = run(",+net_raw").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("missing capability CAP_NET_ADMIN"), "{err}");
    let child = run(",+net_raw,+net_admin")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let d = Daemon { child, socket: sock.clone().into(), state_dir: Some(state_dir_of(std::path::Path::new(&sock))) };
    wait_until("the daemon with two capabilities to start", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    assert_eq!(proc_status(d.child.id(), "CapEff:"), 3000, "effective capabilities (hex 0x3000 = NET_ADMIN|NET_RAW)");
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 2));
    // Requests naming paths or interfaces are validated.
    assert_eq!(d.request(r#"{"cmd":"port_add","name":"../../etc"}"#)["ok"], false);
    assert_eq!(d.request(r#"{"cmd":"mirror_add","from":"ubp1","pcap":"relative.pcap"}"#)["ok"], false);
}
