//! Operating a running daemon: hot-plug, FDB control, config file and
//! SIGHUP, link re-attach, metrics, mirroring, a hostile control client.

mod common;

use common::*;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Port names in a `port list` or `stats` reply.
fn names(v: &serde_json::Value) -> Vec<String> {
    v.get("ports").unwrap_or(v).as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn hot_add_a_pod_and_ping_it_within_a_second() {
    let mut lab = lab("hot", 2);
    let d = Daemon::start(&lab, &[]);
    let pod = lab.add_pod().unwrap().clone();
    let t = Instant::now();
    d.query(&["port", "add", &pod.port]);
    assert!(ns_exec(&lab.pods[0].ns, &["ping", "-c", "1", "-W", "1", "10.0.0.3"]).status.success());
    assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
    assert!(names(&d.query(&["port", "list"])).contains(&pod.port));
    // Errors are one line and name the problem.
    let o = d.cli(&["port", "add", &pod.port]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("already attached"));
    let o = d.cli(&["port", "add", "nosuch9"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no interface named 'nosuch9'"));
}

#[test]
fn a_low_soft_open_files_limit_is_raised_so_that_every_port_opens() {
    // Six ports with eight readers each hold some 120 descriptors. Under a
    // soft limit of 64 (hard 4096) the daemon must raise its own limit, as
    // it must under systemd (soft 1024, hard 524288) for 110 pods.
    let lab = lab("nofile", 6);
    let d = Daemon::start_wrapped(&lab, &["prlimit", "--nofile=64:4096", "--"], &["--readers", "8"]);
    assert_eq!(names(&d.query(&["port", "list"])).len(), 6);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.child.id())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    assert_eq!(line.split_whitespace().nth(3), Some("4096"), "{line}");
    assert!(ping(&lab.pods[0].ns, "10.0.0.6", 1), "no ping across the last port opened");
}

#[test]
fn removing_a_port_under_load_leaves_another_pairs_tcp_connection_alone() {
    let lab = lab("del", 4);
    let d = Daemon::start(&lab, &[]);
    assert!(ping(&lab.pods[2].ns, "10.0.0.4", 1));
    let _server = Iperf3Server::start(&lab.pods[1].ns, "10.0.0.2");
    let client = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.pods[0].ns, "timeout", "30", "iperf3", "-c", "10.0.0.2", "-t", "4", "-J"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // Detach pods 3 and 4's ports while 1 -> 2 runs.
    d.query(&["port", "del", "ubp3"]);
    d.query(&["port", "del", "ubp4"]);
    let out = client.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.get("error").is_none(), "iperf3 failed: {}", v["error"]);
    let intervals = v["intervals"].as_array().unwrap();
    assert!(intervals.len() >= 4);
    for i in intervals {
        let bps = i["sum"]["bits_per_second"].as_f64().unwrap();
        assert!(bps > 1e8, "an interval dropped to {bps} bit/s: the connection stalled");
    }
    assert_eq!(names(&d.query(&["port", "list"])), vec!["ubp1", "ubp2"]);
    let fdb = d.query(&["fdb", "show"]);
    assert!(fdb.as_array().unwrap().iter().all(|e| e["port"] == "ubp1" || e["port"] == "ubp2"), "{fdb:#}");
}

#[test]
fn fdb_control_statics_flush_and_ageing() {
    let lab = lab("fdbc", 3);
    let d = Daemon::start(&lab, &[]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1));
    // A static entry sends 02:..:02 to pod 3's port instead: pod 2 no longer gets the ICMP.
    d.query(&["fdb", "add", "02:00:00:00:00:02", "ubp3"]);
    let fdb = d.query(&["fdb", "show"]);
    let e = fdb.as_array().unwrap().iter().find(|e| e["mac"] == "02:00:00:00:00:02").unwrap();
    assert_eq!((e["port"].as_str(), e["state"].as_str()), (Some("ubp3"), Some("static")));
    assert!(!ns_exec(&lab.pods[0].ns, &["ping", "-c", "1", "-W", "1", "10.0.0.2"]).status.success());
    d.query(&["fdb", "del", "02:00:00:00:00:02"]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1));
    let st = d.query(&["stats", "--port", "ubp1"]);
    assert_eq!(names(&st), vec!["ubp1"]);
    assert!(st["fdb"]["learned"].as_u64().unwrap() >= 2);
    let flushed = d.query(&["fdb", "flush", "--port", "ubp1"]);
    assert_eq!(flushed["flushed"], 1);
    d.query(&["set", "ageing", "1"]);
    wait_until("entries to age out", Duration::from_secs(5), || {
        d.query(&["fdb", "show"]).as_array().unwrap().is_empty()
    });
    let st = d.query(&["stats"]);
    assert_eq!(st["fdb"]["ageing_secs"], 1.0);
    assert!(st["fdb"]["events"]["aged"].as_u64().unwrap() >= 1);
    for bad in [
        &["fdb", "add", "ff:ff:ff:ff:ff:ff", "ubp1"][..],
        &["fdb", "add", "02:00:00:00:00:09", "nope"],
        &["set", "ageing", "0"],
    ] {
        let o = d.cli(bad);
        assert!(!o.status.success());
        assert_eq!(String::from_utf8_lossy(&o.stderr).trim().lines().count(), 1, "{bad:?}");
    }
}

fn write_config(path: &str, lab: &Lab, ports: &[&str], extra: &str) {
    let list: Vec<String> = ports.iter().map(|p| format!("\"{p}\"")).collect();
    let socket = format!("/tmp/{}.sock", lab.name);
    let text = format!(
        "socket = \"{socket}\"\nstate_dir = \"{}\"\nnetns = \"{}\"\nlog_level = \"warn\"\nports = [{}]\n{extra}",
        state_dir_of(std::path::Path::new(&socket)).display(),
        lab.switch_ns(),
        list.join(", ")
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn config_file_sighup_applies_the_difference_and_links_come_back() {
    let mut lab = lab("cfg", 3);
    let file = TempFile(format!("/tmp/{}.toml", lab.name));
    let path = file.0.clone();
    write_config(&path, &lab, &["ubp1", "ubp2"], "[fdb]\nageing_secs = 200\n");
    let ok = std::process::Command::new(BIN).args(["check-config", &path]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let d = Daemon::start_raw(format!("/tmp/{}.sock", lab.name).into(), &["--config", &path]);
    assert_eq!(d.query(&["stats"])["fdb"]["ageing_secs"], 200.0);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1));
    // Keep a ping running on 1 <-> 2 across the reload: unchanged ports must not drop it.
    let flood = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.pods[0].ns, "ping", "-i", "0.01", "-c", "200", "-q", "10.0.0.2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    write_config(&path, &lab, &["ubp1", "ubp2", "ubp3"], "[fdb]\nageing_secs = 100\n");
    d.signal("HUP");
    wait_until("the reload", Duration::from_secs(5), || d.query(&["stats"])["daemon"]["reloads"] == 1);
    assert_eq!(names(&d.query(&["port", "list"])), vec!["ubp1", "ubp2", "ubp3"]);
    assert_eq!(d.query(&["stats"])["fdb"]["ageing_secs"], 100.0);
    let out = String::from_utf8_lossy(&flood.wait_with_output().unwrap().stdout).into_owned();
    assert!(out.contains("200 received"), "pings lost across SIGHUP: {out}");
    assert!(ping(&lab.pods[0].ns, "10.0.0.3", 1));
    // A pod restarted in place (same names): its port follows.
    lab.recreate_pod(3).unwrap();
    wait_until("ubp3 to be re-attached", Duration::from_secs(5), || {
        d.query(&["stats"])["links"]["reattached"].as_u64() == Some(1)
    });
    assert!(ping(&lab.pods[0].ns, "10.0.0.3", 2));
    // A broken edit is refused with its line; the running switch is untouched.
    std::fs::write(&path, "ports = [\"ubp1\"]\n[fdb]\nageing_secs = -5\n").unwrap();
    let bad = std::process::Command::new(BIN).args(["check-config", &path]).output().unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains(&format!("{path}:3:")),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    d.signal("HUP");
    wait_until("the refused reload", Duration::from_secs(5), || d.query(&["stats"])["daemon"]["reload_errors"] == 1);
    assert_eq!(names(&d.query(&["port", "list"])).len(), 3);
    assert_eq!(d.query(&["stats"])["daemon"]["reloads"], 1);
}

#[test]
fn a_reload_leaves_ports_added_at_run_time_alone() {
    // The sequence seen in a run: the file lists p1 and p2, p3 is added at
    // run time, then SIGHUP. p3 belongs to whoever added it (soon: the CNI
    // plugin, one per pod); the reload must not detach it.
    let lab = lab("rtport", 3);
    let path = TempFile(format!("/tmp/{}.toml", lab.name));
    write_config(&path.0, &lab, &["ubp1", "ubp2"], "");
    let d = Daemon::start_raw(format!("/tmp/{}.sock", lab.name).into(), &["--config", &path.0]);
    d.query(&["port", "add", "ubp3"]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.3", 1));
    let pinger = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.pods[0].ns, "ping", "-i", "0.01", "-c", "150", "-q", "10.0.0.3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    d.signal("HUP");
    wait_until("the reload", Duration::from_secs(5), || d.query(&["stats"])["daemon"]["reloads"] == 1);
    let list = d.query(&["port", "list"]);
    assert_eq!(names(&list), vec!["ubp1", "ubp2", "ubp3"]);
    assert_eq!(Daemon::port(&list, "ubp3")["origin"], "runtime");
    assert_eq!(Daemon::port(&list, "ubp3")["state"], "up");
    assert_eq!(Daemon::port(&list, "ubp1")["origin"], "config");
    let out = String::from_utf8_lossy(&pinger.wait_with_output().unwrap().stdout).into_owned();
    assert!(out.contains("150 received"), "pod 3 lost pings across SIGHUP: {out}");
    // The file still owns its own ports: dropping p2 from it detaches p2 only.
    write_config(&path.0, &lab, &["ubp1"], "");
    d.signal("HUP");
    wait_until("the second reload", Duration::from_secs(5), || d.query(&["stats"])["daemon"]["reloads"] == 2);
    assert_eq!(names(&d.query(&["port", "list"])), vec!["ubp1", "ubp3"]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.3", 1));
}

#[test]
fn a_second_daemon_cannot_claim_a_port_another_one_holds() {
    let lab = lab("claim", 2);
    let d = Daemon::start(&lab, &[]);
    let other = format!("/tmp/{}-other.sock", lab.name);
    let o = std::process::Command::new(BIN)
        .args(["run", "--netns", &lab.switch_ns(), "--port", "ubp1", "--port", "ubp2", "--socket", &other])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the second daemon started: {e}");
    assert_eq!(e.trim_end().lines().count(), 1, "one line expected: {e}");
    let holder = format!("pid {}, socket {}", d.child.id(), d.socket.display());
    assert!(e.contains("'ubp1' is already a port of another userbridge") && e.contains(&holder), "{e}");
    // The first daemon still switches alone: no duplicates.
    let out = ns_ok(&lab.pods[0].ns, &["ping", "-c", "4", "-i", "0.2", "-W", "2", "10.0.0.2"]);
    assert!(out.contains("4 received") && !out.contains("duplicates"), "{out}");
    // A port added at run time is claimed too.
    let e = String::from_utf8_lossy(
        &std::process::Command::new(BIN)
            .args(["run", "--netns", &lab.switch_ns(), "--port", "ubp2", "--socket", &other])
            .output()
            .unwrap()
            .stderr,
    )
    .into_owned();
    assert!(e.contains("'ubp2' is already a port of another userbridge"), "{e}");
    // Once the first lets go of a port, another may take it.
    d.query(&["port", "del", "ubp2"]);
    let args = ["--netns", &lab.switch_ns(), "--port", "ubp2", "--socket", &other, "--log-level", "warn"];
    let second = Daemon::start_raw(other.clone().into(), &args);
    assert_eq!(names(&second.query(&["port", "list"])), vec!["ubp2"]);
}

#[test]
fn metrics_match_stats() {
    let lab = lab("met", 2);
    // Port 0: the kernel picks a free one; the log says which, so ask for a fixed free port instead.
    let port = 20000 + (std::process::id() % 20000) as u16;
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start(&lab, &["--metrics", &addr]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 3));
    d.settled(&lab);
    let st = d.query(&["stats"]);
    let body = String::from_utf8(
        std::process::Command::new("curl").args(["-sf", &format!("http://{addr}/metrics")]).output().unwrap().stdout,
    )
    .unwrap();
    let metric = |line: &str| -> u64 {
        body.lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("{line} missing in:\n{body}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    for p in ["ubp1", "ubp2"] {
        let c = &Daemon::port(&st, p)["counters"];
        assert_eq!(
            metric(&format!("userbridge_port_rx_frames_total{{bridge=\"ub0\",port=\"{p}\"}}")),
            c["rx_frames"].as_u64().unwrap()
        );
        assert_eq!(
            metric(&format!("userbridge_port_tx_frames_total{{bridge=\"ub0\",port=\"{p}\"}}")),
            c["tx_frames"].as_u64().unwrap()
        );
        assert_eq!(metric(&format!("userbridge_port_up{{bridge=\"ub0\",port=\"{p}\"}}")), 1);
    }
    assert_eq!(metric("userbridge_fdb_entries{bridge=\"ub0\"}"), st["fdb"]["entries"].as_u64().unwrap());
    assert_eq!(metric("userbridge_fdb_events_total{bridge=\"ub0\",event=\"learned\"}"), 2);
    assert_eq!(metric("userbridge_bridges"), 1);
    assert!(body.contains("userbridge_port_drops_total{bridge=\"ub0\",port=\"ubp1\",reason=\"runt\"} 0"));
}

#[test]
fn the_metrics_endpoint_caps_its_connections_and_refuses_an_oversized_head_and_goes_on() {
    use std::io::Read;
    use std::net::TcpStream;
    let lab = lab("metcap", 2);
    let port = 20000 + ((std::process::id() + 7) % 20000) as u16;
    let addr = format!("127.0.0.1:{port}");
    let _d = Daemon::start(&lab, &["--metrics", &addr]);
    let scrape = || {
        let url = format!("http://{addr}/metrics");
        let o = std::process::Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url]).output();
        String::from_utf8(o.unwrap().stdout).unwrap()
    };
    assert_eq!(scrape(), "200");
    // Four connections that send nothing hold every slot (the cap is 4)...
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let mut fifth = TcpStream::connect(&addr).unwrap();
    fifth.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = String::new();
    let _ = fifth.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 503"), "a fifth connection: {reply:?}");
    // ... and free them when they go (or time out, 2 s).
    drop(idle);
    wait_until("a scrape served again", Duration::from_secs(5), || scrape() == "200");
    // A head larger than 8 KiB: refused, and the endpoint goes on.
    let mut big = TcpStream::connect(&addr).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = big.write_all(format!("GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "x".repeat(20_000)).as_bytes());
    let mut reply = String::new();
    let _ = big.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 431"), "an oversized head: {reply:?}");
    assert_eq!(scrape(), "200");
}

#[test]
fn every_configuration_example_in_the_docs_passes_check_config() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut files: Vec<std::path::PathBuf> =
        std::fs::read_dir(format!("{root}/docs")).unwrap().flatten().map(|e| e.path()).collect();
    files.push(format!("{root}/README.md").into());
    files.sort();
    let mut checked = 0;
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "md")) {
        let text = std::fs::read_to_string(f).unwrap();
        for rest in text.split("```toml\n").skip(1) {
            let block = rest.split("\n```").next().unwrap();
            let tmp = TempFile(format!("/tmp/ubt-doc-{}-{checked}.toml", std::process::id()));
            std::fs::write(&tmp.0, block).unwrap();
            let o = std::process::Command::new(BIN).args(["check-config", &tmp.0]).output().unwrap();
            assert!(
                o.status.success(),
                "a configuration example in {} does not pass check-config: {}{block}",
                f.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            checked += 1;
        }
        // A configuration example not marked toml would escape the check.
        for (i, block) in text.split("```").enumerate().filter(|(i, _)| i % 2 == 1) {
            let looks_like_config =
                block.lines().any(|l| l.starts_with("[fdb]") || l.starts_with("[[port]]") || l.starts_with("ports ="));
            assert!(
                !looks_like_config || block.starts_with("toml"),
                "{} block {i} is configuration, not marked toml",
                f.display()
            );
        }
    }
    eprintln!("check-config passed {checked} configuration examples in docs/ and README.md");
    assert!(checked >= 2, "the examples in operations.md and policies.md were found ({checked})");
}

#[test]
fn removed_receive_modes_are_refused_in_one_line_naming_what_replaces_them() {
    for (args, says) in [
        (&["--rx", "ring"][..], "`busy-slots` (the default) takes RX slots while a port is busy"),
        (&["--rx", "slots"], "`busy-slots` (the default) takes the same RX slots"),
        (&["--block-kib", "256"], "set the TPACKET_V3 ring, which was removed"),
    ] {
        let o = std::process::Command::new(BIN).args(["run", "--port", "ubt-nosuch0"]).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn mirror_to_pcap_is_readable_by_tcpdump() {
    let lab = lab("mir", 3);
    let d = Daemon::start(&lab, &[]);
    let pcap = format!("/tmp/{}.pcap", lab.name);
    d.query(&["mirror", "add", "--from", "ubp2", "--pcap", &pcap]);
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 3));
    let list = d.query(&["mirror", "list"]);
    assert_eq!(list[0]["from"], "ubp2");
    wait_until("frames written", Duration::from_secs(3), || {
        d.query(&["mirror", "list"])[0]["written"].as_u64().unwrap() >= 8
    });
    let o = std::process::Command::new("tcpdump").args(["-r", &pcap, "-nn", "-e", "icmp"]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    // Both directions of pod 2's traffic: 3 requests it received, 3 replies it sent.
    assert_eq!(text.lines().filter(|l| l.contains("ICMP echo request")).count(), 3, "{text}");
    assert_eq!(text.lines().filter(|l| l.contains("ICMP echo reply")).count(), 3, "{text}");
    d.query(&["mirror", "del", "--from", "ubp2"]);
    // Mirror to a port: pod 3 sees pod 1's unicast now.
    d.query(&["mirror", "add", "--from", "ubp1", "--to", "ubp3"]);
    let dump = Tcpdump::start(&lab.pods[2].ns, "icmp");
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 2));
    let seen = dump.finish_when("4 ICMP echoes", |l| l.iter().filter(|l| l.contains("ICMP echo")).count() >= 4);
    assert!(seen.iter().filter(|l| l.contains("ICMP echo")).count() >= 4, "{seen:#?}");
    let _ = std::fs::remove_file(&pcap);
}

#[test]
fn garbage_and_a_10mb_line_on_the_control_socket_do_not_stop_forwarding() {
    let lab = lab("junk", 2);
    let mut d = Daemon::start(&lab, &[]);
    // Garbage: an error reply, then the connection is closed.
    let r = d.request("\u{1}\u{2} not json at all");
    assert_eq!(r["ok"], false);
    // A 10 MB line: refused after 64 KiB, connection closed.
    let s = UnixStream::connect(&d.socket).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0;
    for _ in 0..10 {
        match (&s).write_all(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(_) => break, // the daemon closed it: expected
        }
    }
    assert!(sent < 10 << 20, "the daemon read a 10 MB line to the end");
    // Silent clients hold no one up: open a few and say nothing.
    let silent: Vec<UnixStream> = (0..4).map(|_| UnixStream::connect(&d.socket).unwrap()).collect();
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 3));
    assert_eq!(d.query(&["port", "list"]).as_array().unwrap().len(), 2);
    drop(silent);
    assert!(d.alive());
    // The socket is private to root.
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&d.socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_failed_request_keeps_the_connection_a_malformed_one_closes_it() {
    use std::io::{BufRead, BufReader};
    let lab = lab("conn", 1);
    let d = Daemon::start(&lab, &[]);
    let s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(&s);
    let mut ask = |line: &str| -> Option<serde_json::Value> {
        (&s).write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut reply = String::new();
        (r.read_line(&mut reply).ok()? > 0).then(|| serde_json::from_str(&reply).unwrap())
    };
    assert_eq!(ask(r#"{"cmd":"port_del","name":"nope"}"#).unwrap()["ok"], false);
    assert_eq!(ask(r#"{"cmd":"fdb_show"}"#).unwrap()["ok"], true, "still open after a failed request");
    assert_eq!(ask(r#"{"cmd":"reboot"}"#).unwrap()["ok"], false);
    assert!(ask(r#"{"cmd":"fdb_show"}"#).is_none(), "still open after an unknown command");
}
