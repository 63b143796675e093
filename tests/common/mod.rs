//! Helpers for end-to-end tests: a lab per test (unique names, removed by a
//! guard), the daemon as a child process, tcpdump inside pods.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
pub use ub_lab::Lab;

pub const BIN: &str = env!("CARGO_BIN_EXE_userbridge");

#[allow(unused_imports)]
pub use ub_lab::wait::{sample_until, until as wait_until};

/// A lab name unique to this process and test.
pub fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("ubt{}{}{}", std::process::id() % 100_000, tag, N.fetch_add(1, Ordering::Relaxed))
}

pub fn lab(tag: &str, pods: usize) -> Lab {
    Lab::create(&unique(tag), pods).expect("creating the lab (run the tests as root)")
}

/// Runs a command inside a namespace and returns its output.
pub fn ns_exec(ns: &str, args: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", ns]).args(args).output().expect("ip netns exec")
}

pub fn ns_ok(ns: &str, args: &[&str]) -> String {
    let o = ns_exec(ns, args);
    assert!(
        o.status.success(),
        "{args:?} in {ns} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Joins all of `lab`'s ports to a kernel bridge `br0` in its switch
/// namespace (removed with the lab): the specification a scenario is run
/// on beside userbridge.
pub fn kernel_bridge(lab: &Lab) {
    let sw = lab.switch_ns();
    ns_ok(&sw, &["ip", "link", "add", "br0", "type", "bridge"]);
    for p in lab.ports() {
        ns_ok(&sw, &["ip", "link", "set", &p, "master", "br0"]);
    }
    ns_ok(&sw, &["ip", "link", "set", "br0", "up"]);
}

pub fn ping(ns: &str, dst: &str, count: u32) -> bool {
    ns_exec(ns, &["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "2", "-q", dst]).status.success()
}

/// A sysfs counter of an interface inside a namespace.
pub fn if_stat(ns: &str, ifname: &str, stat: &str) -> u64 {
    ns_ok(ns, &["cat", &format!("/sys/class/net/{ifname}/statistics/{stat}")]).trim().parse().unwrap()
}

/// The daemon, started in the lab's switch namespace; SIGTERM'ed on drop,
/// and its state directory removed.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    /// Its `--state-dir`, removed on drop unless `kill9` kept it for a restart.
    pub state_dir: Option<PathBuf>,
}

/// The state directory a test daemon on `socket` gets (one per socket).
pub fn state_dir_of(socket: &std::path::Path) -> PathBuf {
    PathBuf::from(format!("{}.state", socket.display()))
}

impl Daemon {
    pub fn start(lab: &Lab, extra: &[&str]) -> Daemon {
        Self::wait_ready(Self::spawn(lab, extra))
    }

    /// Starts `userbridge run ARGS` (a `--state-dir` beside the socket added
    /// unless a config file is given) and waits for `socket`.
    pub fn start_raw(socket: PathBuf, args: &[&str]) -> Daemon {
        let mut cmd = Command::new(BIN);
        cmd.arg("run").args(args);
        // A config file names the same directory (`state_dir`), see ops.rs.
        let state_dir = state_dir_of(&socket);
        if !args.contains(&"--config") {
            cmd.arg("--state-dir").arg(&state_dir);
        }
        let child =
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("starting userbridge");
        Self::wait_ready(Daemon { child, socket, state_dir: Some(state_dir) })
    }

    /// Starts `userbridge run --socket SOCKET --state-dir DIR ARGS` inside
    /// namespace `ns` (the node the daemon runs on: where a host port goes)
    /// and waits for it. With `--config`, the file names the socket and
    /// the state directory (this one).
    pub fn start_in(ns: &str, socket: &str, args: &[&str]) -> Daemon {
        let socket = PathBuf::from(socket);
        let state_dir = state_dir_of(&socket);
        // nsenter, not `ip netns exec`: that one gives the daemon a mount
        // namespace of its own, a copy that would keep every container
        // namespace mounted at the daemon's start alive after its runtime
        // removes it (and the pod's veth with it).
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{ns}")).args([BIN, "run"]);
        if !args.contains(&"--config") {
            cmd.args(["--socket", socket.to_str().unwrap(), "--log-level", "info"]).arg("--state-dir").arg(&state_dir);
        }
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting userbridge");
        Self::wait_ready(Daemon { child, socket, state_dir: Some(state_dir) })
    }

    /// SIGKILL, as a crash: the state directory stays, for the next daemon.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.state_dir = None;
    }

    /// SIGTERM, as `systemctl restart` does: the state directory stays, for
    /// the next daemon on the same socket (which then owns it).
    pub fn stop_for_restart(mut self) -> String {
        self.state_dir = None;
        self.stop()
    }

    /// SIGTERM, wait, and return what the daemon logged.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        wait_until("the daemon to exit", Duration::from_secs(10), || matches!(self.child.try_wait(), Ok(Some(_))));
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut err);
        err
    }

    fn wait_ready(mut d: Daemon) -> Daemon {
        wait_until("the daemon to open its socket", Duration::from_secs(10), || {
            if let Ok(Some(st)) = d.child.try_wait() {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(d.child.stderr.as_mut().unwrap(), &mut err);
                panic!("daemon exited with {st}: {err}");
            }
            UnixStream::connect(&d.socket).is_ok()
        });
        d
    }

    /// Starts the daemon with the lab's ports (plus `extra`) without waiting.
    pub fn spawn(lab: &Lab, extra: &[&str]) -> Daemon {
        Self::spawn_wrapped(lab, &[], extra)
    }

    /// As [`Daemon::start`], run through `wrapper`: a program and its
    /// arguments, which then runs the daemon's command (`prlimit ... --`).
    pub fn start_wrapped(lab: &Lab, wrapper: &[&str], extra: &[&str]) -> Daemon {
        Self::wait_ready(Self::spawn_wrapped(lab, wrapper, extra))
    }

    fn spawn_wrapped(lab: &Lab, wrapper: &[&str], extra: &[&str]) -> Daemon {
        let socket = PathBuf::from(format!("/tmp/{}.sock", lab.name));
        let state_dir = state_dir_of(&socket);
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.args(["run", "--netns", &lab.switch_ns(), "--socket", socket.to_str().unwrap(), "--log-level", "warn"]);
        cmd.arg("--state-dir").arg(&state_dir);
        for p in lab.ports() {
            cmd.args(["--port", &p]);
        }
        cmd.args(extra).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        Daemon { child: cmd.spawn().expect("starting userbridge"), socket, state_dir: Some(state_dir) }
    }

    /// Runs a client command against this daemon, with -j, and parses it.
    pub fn query(&self, args: &[&str]) -> Value {
        let o = self.cli(args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Runs a client command against this daemon, with -j.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN).args(args).args(["-j", "--socket", self.socket.to_str().unwrap()]).output().unwrap()
    }

    /// The PID, for signals.
    pub fn signal(&self, sig: &str) {
        assert!(
            Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap().success()
        );
    }

    /// Raw request on the control socket.
    pub fn request(&self, line: &str) -> Value {
        let s = UnixStream::connect(&self.socket).unwrap();
        (&s).write_all(line.as_bytes()).unwrap();
        (&s).write_all(b"\n").unwrap();
        let mut r = String::new();
        BufReader::new(&s).read_line(&mut r).unwrap();
        serde_json::from_str(&r).unwrap()
    }

    /// Port `name` in a `stats` reply or a `port list` reply.
    pub fn port<'a>(stats: &'a Value, name: &str) -> &'a Value {
        stats
            .get("ports")
            .unwrap_or(stats)
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name}"))
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A counter of port `name` (`rx_frames`, `tx_frames`, ... or a drop reason).
    pub fn counter(&self, name: &str, key: &str) -> u64 {
        let st = self.query(&["stats", "--port", name]);
        let c = &Self::port(&st, name)["counters"];
        c.get(key)
            .or_else(|| c["drops"].get(key))
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no counter {key}: {c}"))
    }

    /// Waits until every port's counters agree with its pod's own interface
    /// counters (the port's RX is what the pod sent, its TX what the pod
    /// received): nothing is in flight any more.
    pub fn settled(&self, lab: &Lab) {
        wait_until("the ports' counters to match the pods'", Duration::from_secs(10), || {
            let st = self.query(&["stats"]);
            lab.pods.iter().all(|p| {
                let c = &Self::port(&st, &p.port)["counters"];
                c["rx_frames"].as_u64() == Some(if_stat(&p.ns, "eth0", "tx_packets"))
                    && c["tx_frames"].as_u64() == Some(if_stat(&p.ns, "eth0", "rx_packets"))
            })
        });
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(d) = self.state_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        if ub_lab::wait::poll_until(Duration::from_secs(5), || matches!(self.child.try_wait(), Ok(Some(_)))) {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A network namespace of the test's own (a node, an "outside"), deleted
/// on drop with whatever still runs in it.
pub struct TestNs(pub String);

impl TestNs {
    pub fn new(name: &str) -> TestNs {
        ub_netlink::NetNs::create(name).expect("creating a namespace (run the tests as root)");
        let ns = TestNs(name.to_string());
        ns_ok(name, &["ip", "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if let Ok(o) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = ub_netlink::NetNs::delete(&self.0);
    }
}

/// An iperf3 server for one client (`-1`) inside a pod, bound to `addr`.
/// `ip netns exec` becomes iperf3 itself, so killing the child on drop stops
/// the server: a test that fails before its client connects leaves nothing
/// holding the pod's namespace.
pub struct Iperf3Server(Child);

impl Iperf3Server {
    /// Starts the server and waits until it listens.
    pub fn start(ns: &str, addr: &str) -> Iperf3Server {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "iperf3", "-s", "-1", "-B", addr])
            .stdout(Stdio::null())
            .spawn()
            .expect("iperf3 server");
        let server = Iperf3Server(child);
        wait_until("iperf3 to listen", Duration::from_secs(10), || {
            ns_ok(ns, &["ss", "-Htln", "sport", "=", ":5201"]).contains("5201")
        });
        server
    }
}

/// TCP with the pods' default offloads moves 100 MB from `client_ns` to
/// `addr` (a server in `server_ns`; `reverse`: the other way) within 30 s:
/// the guard against the vnet-header stall (TCP at 0 bit/s when offloads
/// break). How fast it goes is docs/benchmarks.md's business, not a test's.
pub fn tcp_100_mb(client_ns: &str, server_ns: &str, addr: &str, reverse: bool) {
    let _server = Iperf3Server::start(server_ns, addr);
    let mut args = vec!["timeout", "30", "iperf3", "-c", addr, "-n", "100M", "-J"];
    if reverse {
        args.push("-R");
    }
    let o = ns_exec(client_ns, &args);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "100 MB of TCP to {addr} did not cross within 30 s: {out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let (bytes, secs) =
        (v["end"]["sum_received"]["bytes"].as_f64().unwrap(), v["end"]["sum_received"]["seconds"].as_f64().unwrap());
    assert!(bytes >= 100e6, "only {bytes} bytes of TCP arrived at {addr}");
    eprintln!("100 MB of TCP to {addr}{} in {secs:.2} s", if reverse { " (reverse)" } else { "" });
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A file a test writes, removed on drop (panics included).
pub struct TempFile(pub String);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A command running inside a namespace, in a process group of its own:
/// on drop (panics included) the whole group is killed, so a command that
/// forks (trafgen, one sender per CPU) or runs under `timeout` leaves nothing.
pub struct Running(Child);

impl Running {
    pub fn start(ns: &str, args: &[&str]) -> Running {
        use std::os::unix::process::CommandExt;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("ip netns exec");
        Running(child)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// tcpdump on `eth0` inside a pod, printing link-level headers; stopped on `finish`/drop.
pub struct Tcpdump {
    child: Child,
    out: PathBuf,
    ns: String,
}

/// A broadcast frame sent after a test's traffic: a tcpdump that has seen
/// it has seen everything that reached its pod before it.
pub struct Marker {
    tag: String,
}

/// The EtherType of marker frames (IEEE 802 local experimental 2).
pub const MARKER_ETHERTYPE: u16 = 0x88b6;

/// Sends a marker from pod namespace `ns` (a unique source MAC, broadcast,
/// EtherType 0x88b6): it floods to every other pod.
pub fn mark(ns: &str) -> Marker {
    static N: AtomicUsize = AtomicUsize::new(1);
    let n = u16::try_from(N.fetch_add(1, Ordering::Relaxed) % 0xffff).unwrap();
    let [hi, lo] = n.to_be_bytes();
    let src = [0x02, 0x99, 0x00, 0x00, hi, lo];
    let mut f = frame([0xff; 6], src, 60);
    f[12..14].copy_from_slice(&MARKER_ETHERTYPE.to_be_bytes());
    inject(ns, &[f]);
    Marker { tag: format!("{} > ff:ff:ff:ff:ff:ff", ub_wire::Mac(src)) }
}

impl Tcpdump {
    /// tcpdump on the pod's eth0, inbound only, `filter` or a marker.
    pub fn start(ns: &str, filter: &str) -> Tcpdump {
        // The marker's clause first: `vlan` in a filter shifts the offsets of
        // every clause after it.
        let filter = format!("ether proto {MARKER_ETHERTYPE:#06x} or ({filter})");
        Self::start_on(ns, "eth0", &["-e", "-Q", "in"], &filter)
    }

    /// tcpdump on interface `ifname` of namespace `ns`, with `opts` and
    /// `filter`, once it is capturing (it has said "listening on").
    pub fn start_on(ns: &str, ifname: &str, opts: &[&str], filter: &str) -> Tcpdump {
        let out = PathBuf::from(format!("/tmp/{ns}-{ifname}.tcpdump"));
        let file = std::fs::File::create(&out).unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-i", ifname, "-nn", "-l"])
            .args(opts)
            .args(filter.split_whitespace())
            .stdout(file)
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        // Wait for "listening on eth0" so nothing is missed.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let t = Instant::now();
        while !line.contains("listening on") {
            line.clear();
            if err.read_line(&mut line).unwrap_or(0) == 0 || t.elapsed() > Duration::from_secs(10) {
                panic!("tcpdump did not start in {ns}: {line}");
            }
        }
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Tcpdump { child, out, ns: ns.to_string() }
    }

    /// The lines tcpdump has printed so far (it prints line-buffered, -l).
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out).unwrap_or_default().lines().map(str::to_string).collect()
    }

    /// Waits (at most 10 s) until what tcpdump printed satisfies `f`, then
    /// stops it and returns the lines.
    pub fn finish_when(mut self, what: &str, f: impl Fn(&[String]) -> bool) -> Vec<String> {
        wait_until(&format!("tcpdump in {} to show {what}", self.ns), Duration::from_secs(10), || f(&self.lines()));
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        self.lines()
    }

    /// Stops tcpdump once it has captured `marker` (see [`mark`]): every
    /// frame that reached this pod before the marker is in the lines.
    pub fn finish_after(self, marker: &Marker) -> Vec<String> {
        let tag = marker.tag.clone();
        self.finish_when(&format!("the marker from {tag}"), move |l| l.iter().any(|l| l.contains(&tag)))
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}

/// Sends raw frames (as given, no vnet metadata) out of a pod's eth0, from
/// inside its namespace: what a hostile pod with a raw socket can do.
pub fn inject(ns: &str, frames: &[Vec<u8>]) {
    use ub_port::{PortTx, TxFrame};
    ub_netlink::NetNs::open(ns)
        .unwrap()
        .run(|| {
            let (_rx, tx, _) = ub_port::afpacket::open("eth0", Default::default()).unwrap();
            let frames: Vec<TxFrame> = frames.iter().map(|f| TxFrame::new(f, None, None)).collect();
            for chunk in frames.chunks(ub_port::BATCH) {
                assert_eq!(tx.send_batch(chunk).sent, chunk.len());
            }
        })
        .unwrap();
}

/// An IPv4-typed Ethernet frame of `len` bytes from `src` to `dst`.
pub fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(len.max(14), 0);
    f
}

/// The inodes of the packet sockets bound to `port`, in `lab`'s switch
/// namespace (`/proc/net/packet`: sk RefCnt Type Proto Iface R Rmem User
/// Inode, Iface an ifindex).
pub fn packet_socket_inodes(lab: &Lab, port: &str) -> Vec<String> {
    packet_sockets(lab, port).into_iter().map(|(_, inode)| inode).collect()
}

/// The packet sockets bound to `port`: each one's protocol (hex, `0000`
/// for one that only sends) and inode.
pub fn packet_sockets(lab: &Lab, port: &str) -> Vec<(String, String)> {
    let sw = lab.switch_ns();
    let ifindex = ns_ok(&sw, &["cat", &format!("/sys/class/net/{port}/ifindex")]).trim().to_string();
    let packet = ns_ok(&sw, &["cat", "/proc/net/packet"]);
    packet
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 9 && f[4] == ifindex)
        .map(|f| (f[3].to_string(), f[8].to_string()))
        .collect()
}

/// The inodes of the sockets that receive on `port` (the transmit-only
/// socket, bound to no protocol, is each daemon's own).
pub fn receiving_sockets(lab: &Lab, port: &str) -> Vec<String> {
    let mut v: Vec<String> =
        packet_sockets(lab, port).into_iter().filter(|(proto, _)| proto != "0000").map(|(_, inode)| inode).collect();
    v.sort();
    v
}

/// A ping from pod 1 to pod 2, `n` at 200 a second, running in the background.
pub struct Pinging(Child);

impl Pinging {
    pub fn start(lab: &Lab, n: u32) -> Pinging {
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.pods[0].ns, "ping", "-i", "0.005", "-c", &n.to_string(), "10.0.0.2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Pinging(child)
    }

    /// (received, duplicates, transmitted).
    pub fn finish(mut self) -> (u32, u32, u32) {
        let out = std::mem::replace(&mut self.0, Command::new("true").spawn().unwrap()).wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let dups = u32::try_from(text.lines().filter(|l| l.contains("(DUP!)")).count()).unwrap_or(u32::MAX);
        let stat = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or_else(|| panic!("{text}"));
        let num = |word: &str| -> u32 {
            let f: Vec<&str> = stat.split(", ").collect();
            f.iter().find(|p| p.contains(word)).and_then(|p| p.split_whitespace().next()?.parse().ok()).unwrap_or(0)
        };
        (num("received"), dups, num("transmitted"))
    }
}

impl Drop for Pinging {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `d` to exit; its status code.
pub fn exit_of(d: &mut Daemon, within: Duration) -> Option<i32> {
    let mut code = None;
    wait_until("the daemon to exit", within, || match d.child.try_wait() {
        Ok(Some(st)) => {
            code = st.code();
            true
        }
        _ => false,
    });
    code
}

/// A daemon this test did not start (`userbridge upgrade` started it):
/// SIGTERM'ed on drop, then its state directory removed.
pub struct Adopted {
    pub pid: u32,
    state_dir: Option<PathBuf>,
}

impl Adopted {
    pub fn new(pid: u64, state_dir: Option<PathBuf>) -> Adopted {
        Adopted { pid: u32::try_from(pid).unwrap(), state_dir }
    }

    pub fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).is_ok_and(|s| !s.contains(") Z "))
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        if !ub_lab::wait::poll_until(Duration::from_secs(10), || !self.alive()) {
            let _ = Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
        }
        if let Some(d) = self.state_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
