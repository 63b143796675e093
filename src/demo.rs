//! `userbridge lab up|down|demo`.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use ub_datapath::{Backend, Member, Restart, Switch, spawn_reader_at};
use ub_fdb::FdbConfig;
use ub_lab::{GATEWAY, Lab, Node, NodeLab, POD_MTU, Switching};
use ub_netlink::NetNs;
use ub_wire::{ArpOp, ArpPacket, ETHERTYPE_ARP, ETHERTYPE_IPV4, EthernetFrame};

mod sock;

/// A lab command failed; each says what and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Lab(#[from] ub_lab::LabError),
    #[error(transparent)]
    Netlink(#[from] ub_netlink::Error),
    #[error(transparent)]
    Port(#[from] ub_port::PortError),
    #[error(transparent)]
    Switch(#[from] ub_datapath::SwitchError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("the daemon of {ns} exited ({status}): {log}")]
    DaemonExited { ns: String, status: std::process::ExitStatus, log: String },
    #[error("the daemon of {ns} did not open {} (see {})", sock.display(), log.display())]
    DaemonSilent { ns: String, sock: PathBuf, log: PathBuf },
    #[error("no lab named '{0}' (no namespace {0}-sw, {0}-pN or {0}-nN)")]
    NoLab(String),
    #[error("the demo needs --pods 2 or more")]
    DemoPods,
    #[error("no reply from {0} within 3 s")]
    NoReply(Ipv4Addr),
    #[error("the demo did not see the expected frames")]
    DemoFailed,
}

/// An I/O failure, saying what was being done.
fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> LabError {
    move |source| LabError::Io { what: what.to_string(), source }
}

pub fn lab_up(name: &str, pods: usize) -> Result<(), LabError> {
    let lab = Lab::create(name, pods)?;
    let sw = lab.switch_ns();
    println!("lab '{name}': switch namespace {sw}, {pods} pods");
    for p in &lab.pods {
        println!("  {}  eth0 {} {}  <->  port {} in {sw}", p.ns, p.ip, p.mac, p.port);
    }
    let ports: Vec<String> = lab.ports().iter().map(|p| format!("--port {p}")).collect();
    println!("run the switch:   userbridge run --netns {sw} {}", ports.join(" "));
    println!("then:             userbridge fdb show; userbridge stats");
    println!("try it:           ip netns exec {}-p1 ping 10.0.0.2", name);
    println!("remove the lab:   userbridge lab down --name {name}");
    lab.persist();
    Ok(())
}

/// Where a node lab's daemon of node `i` keeps its socket, state, log and pid.
fn node_files(name: &str, i: usize) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let base = format!("{}/lab-{name}-n{i}", ub_proto::settings::STATE_DIR);
    (
        PathBuf::from(format!("{base}.sock")),
        PathBuf::from(format!("{base}.state")),
        PathBuf::from(format!("{base}.log")),
        PathBuf::from(format!("{base}.pid")),
    )
}

/// `lab up --nodes N`: two nodes joined like flannel's VXLAN backend, each
/// with a userbridge daemon (host port `cni0`) or a kernel bridge.
pub fn nodes_up(name: &str, nodes: usize, pods: usize, switching: Switching) -> Result<(), LabError> {
    let lab = NodeLab::create(name, nodes, pods, switching)?;
    println!("lab '{name}': {nodes} nodes joined by VXLAN (VNI 1, UDP 8472) over underlay ul0, {pods} pods each");
    for n in &lab.nodes {
        let what = match switching {
            Switching::Kernel => "kernel bridge".to_string(),
            Switching::Userbridge => {
                let (sock, state, log, pid) = node_files(name, n.index);
                let d = start_node_daemon(n, &sock, &state, &log)?;
                std::fs::write(&pid, format!("{d}\n")).map_err(io(format!("writing {}", pid.display())))?;
                format!("userbridge pid {d}, socket {}", sock.display())
            }
        };
        println!("  node {} ({}): underlay {}, {GATEWAY} {}/24 ({what})", n.index, n.ns, n.underlay, n.gateway);
        for p in &n.pods {
            println!("    {}  eth0 {} {}  <->  port {}", p.ns, p.ip, p.mac, p.port);
        }
    }
    let (a, b) = (&lab.nodes[0], &lab.nodes[1]);
    println!("try it:           ip netns exec {} ping {}", a.pods[0].ns, b.pods[0].ip);
    if switching == Switching::Userbridge {
        println!("then:             userbridge fdb show --socket {}", node_files(name, 1).0.display());
    }
    println!("remove the lab:   userbridge lab down --name {name}");
    lab.persist();
    Ok(())
}

/// Starts node `n`'s daemon in its namespace, detached (its own process
/// group, its log in a file), and waits for its socket.
fn start_node_daemon(n: &Node, sock: &Path, state: &Path, log: &Path) -> Result<u32, LabError> {
    let exe = std::env::current_exe().map_err(io("finding the userbridge binary"))?;
    let out = std::fs::File::create(log).map_err(io(format!("creating {}", log.display())))?;
    let err = out.try_clone().map_err(io(format!("opening {}", log.display())))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &n.ns]).arg(exe).args(["run", "--host-port", GATEWAY]);
    cmd.args(["--address", &format!("{}/24", n.gateway), "--mtu", &POD_MTU.to_string()]);
    for p in &n.pods {
        cmd.args(["--port", &p.port]);
    }
    cmd.arg("--socket").arg(sock).arg("--state-dir").arg(state);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(io(format!("starting the daemon of {}", n.ns)))?;
    let t = std::time::Instant::now();
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default().trim().to_string();
            return Err(LabError::DaemonExited { ns: n.ns.clone(), status: st, log });
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            return Err(LabError::DaemonSilent { ns: n.ns.clone(), sock: sock.into(), log: log.into() });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child.id())
}

/// Stops a node lab's daemons (if it has any) and removes their files.
fn stop_node_daemons(name: &str) -> usize {
    let mut stopped = 0;
    for i in 1..=ub_lab::MAX_NODES {
        let (sock, state, log, pid) = node_files(name, i);
        if let Some(p) = std::fs::read_to_string(&pid).ok().and_then(|s| s.trim().parse::<i32>().ok())
            && let Some(p) = rustix::process::Pid::from_raw(p)
        {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
            // Bounded: gone once kill(0) fails.
            for _ in 0..250 {
                if rustix::process::test_kill_process(p).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            stopped += 1;
        }
        for f in [&sock, &log, &pid] {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir_all(&state);
    }
    stopped
}

pub fn lab_down(name: &str) -> Result<(), LabError> {
    let daemons = stop_node_daemons(name);
    let n = Lab::destroy(name)? + NodeLab::destroy(name)?;
    if daemons > 0 {
        println!("stopped {daemons} daemons of lab '{name}'");
    }
    if n == 0 {
        return Err(LabError::NoLab(name.to_string()));
    }
    println!("removed {n} namespaces of lab '{name}'");
    Ok(())
}

/// One frame a pod received, as the demo reports it.
struct Seen {
    pod: usize,
    frame: Vec<u8>,
}

fn describe(f: &[u8]) -> String {
    let Ok(eth) = EthernetFrame::new_checked(f) else { return "runt".into() };
    let kind = if eth.dst().is_broadcast() { "broadcast" } else { "unicast" };
    let what = match eth.ethertype() {
        ETHERTYPE_ARP => match ArpPacket::new_checked(&f[14..]) {
            Ok(a) if a.op() == ArpOp::Request => {
                format!("ARP request who-has {} tell {}", a.target_ip(), a.sender_ip())
            }
            Ok(a) if a.op() == ArpOp::Reply => format!("ARP reply {} is-at {}", a.sender_ip(), a.sender_mac()),
            _ => "ARP (other)".into(),
        },
        ETHERTYPE_IPV4 if f.len() >= 34 && f[23] == 1 => {
            let t = if f.get(34) == Some(&8) { "echo request" } else { "echo reply" };
            format!(
                "ICMP {t} {} > {}",
                Ipv4Addr::new(f[26], f[27], f[28], f[29]),
                Ipv4Addr::new(f[30], f[31], f[32], f[33])
            )
        }
        t => format!("ethertype 0x{t:04x}"),
    };
    format!("{} > {} ({kind}): {what}", eth.src(), eth.dst())
}

pub fn demo(name: &str, pods: usize) -> Result<(), LabError> {
    if pods < 2 {
        return Err(LabError::DemoPods);
    }
    let lab = Lab::create(name, pods)?;
    println!(
        "1. lab: {} pods in namespaces {}-p1..{pods}, host ends on switch namespace {}",
        pods,
        name,
        lab.switch_ns()
    );
    for p in &lab.pods {
        println!("     {}  {}  {}  -> port {}", p.ns, p.ip, p.mac, p.port);
    }

    // The switch runs in this process, its threads inside the switch namespace.
    let sw_ns = NetNs::open(&lab.switch_ns())?;
    let sw = Arc::new(Switch::new(FdbConfig::default()));
    let readers = sw_ns.run(|| -> Result<Vec<_>, LabError> {
        let mut v = Vec::new();
        for port in lab.ports() {
            let (rx, tx, _) = ub_port::afpacket::open(&port, Default::default())?;
            let id = sw.add_port(&port, Backend::Afpacket, Box::new(tx))?;
            let members =
                rx.into_iter().map(|rx| Member { rx: Box::new(rx) as Box<dyn ub_port::PortRx>, cpu: None }).collect();
            let reader = spawn_reader_at(sw.clone(), id, members, None, Restart::default());
            v.push(reader.map_err(io(format!("starting the reader of {port}")))?);
        }
        Ok(v)
    })??;
    println!("2. userbridge attached to {} ports, FDB empty", readers.len());

    // Watch what every pod receives, from inside the pods.
    let captures: Vec<sock::Capture> = lab
        .pods
        .iter()
        .map(|p| Ok::<_, LabError>(NetNs::open(&p.ns)?.run(|| sock::Capture::open("eth0"))??))
        .collect::<Result<_, _>>()?;
    let dst = lab.pods[1].ip;
    let pod1 = NetNs::open(&lab.pods[0].ns)?;
    println!("3. ping {} -> {}", lab.pods[0].ip, dst);
    let rtt = pod1
        .run(|| sock::ping(dst, Duration::from_secs(3)))?
        .map_err(io(format!("pinging {dst}")))?
        .ok_or(LabError::NoReply(dst))?;
    println!("     reply in {:.3} ms", rtt.as_secs_f64() * 1000.0);
    std::thread::sleep(Duration::from_millis(50));

    let mut seen: Vec<Seen> = Vec::new();
    for (i, c) in captures.into_iter().enumerate() {
        for frame in c.drain() {
            seen.push(Seen { pod: i + 1, frame });
        }
    }
    let is_arp = |op: u8| move |f: &[u8]| f.len() >= 22 && f[12..14] == [8, 6] && f[20..22] == [0, op];
    let is_icmp = |t: u8| move |f: &[u8]| f.len() >= 35 && f[12..14] == [8, 0] && f[23] == 1 && f[34] == t;
    // Which pods received a frame of this kind, and what it looked like.
    let received = |pred: &dyn Fn(&[u8]) -> bool| -> (Vec<usize>, String) {
        let hits: Vec<&Seen> = seen.iter().filter(|s| pred(&s.frame)).collect();
        let mut pods: Vec<usize> = hits.iter().map(|s| s.pod).collect();
        pods.dedup();
        (pods, hits.first().map_or_else(|| "not seen".into(), |s| describe(&s.frame)))
    };
    let names = |pods: &[usize]| pods.iter().map(|p| format!("pod{p}")).collect::<Vec<_>>().join(", ");
    println!("4. on the wire, captured inside each pod (what tcpdump there shows):");
    let (req, req_d) = received(&is_arp(1));
    println!("   a. {req_d}\n      flooded: received by {}", names(&req));
    let (rep, rep_d) = received(&is_arp(2));
    println!("   b. {rep_d}\n      unicast: received by {} only", names(&rep));
    println!("   c. learned, from those two frames' sources:");
    for e in sw.fdb.entries(sw.now_ms()) {
        let port = sw.port(e.port).map_or_else(|| "?".into(), |p| p.name.clone());
        println!("        {} dev {} vlan {} age {:.1}s", e.mac, port, e.vid, e.age_ms as f64 / 1000.0);
    }
    let (icmp, icmp_d) = received(&is_icmp(8));
    println!("   d. {icmp_d}\n      unicast: received by {} only", names(&icmp));
    let (back, back_d) = received(&is_icmp(0));
    println!("      {back_d}\n      unicast: received by {} only", names(&back));
    let others: Vec<usize> = (2..=pods).collect();
    let ok = req == others && rep == [1] && icmp == [2] && back == [1];
    drop(readers);
    drop(lab);
    println!("5. lab removed");
    if ok { Ok(()) } else { Err(LabError::DemoFailed) }
}
