//! userbridge: a userspace L2 switch for container nodes. The command line;
//! the daemon and its pieces live in the library (src/lib.rs).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use ub_proto::{Call, ClientError, IfName, PolicyChange};
use ub_wire::Mac;
use userbridge::output::Show;
use userbridge::{DEFAULT_SOCKET, config, demo, start};

/// Why a command failed: printed as one line, `userbridge: ...`.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Start(#[from] start::StartError),
    /// Every problem but the last is printed before it.
    #[error("{}", .0.0.last().map(String::as_str).unwrap_or("the configuration is not valid"))]
    CheckConfig(config::ConfigError),
    #[error(transparent)]
    Lab(#[from] demo::LabError),
    #[error(
        "{why} (usage: vlan add dev PORT vid N[-M] [pvid] [untagged] | vlan del dev PORT vid N[-M] | vlan show [dev PORT] [br NAME])"
    )]
    Vlan { why: String },
    #[error("installing the CNI plugin into {}: {source}", dir.display())]
    CniInstall { dir: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Docker(#[from] ub_docker::ServeError),
    #[error("--log-level {level:?}: {why}")]
    LogLevel { level: String, why: String },
    #[error("the current directory: {0}")]
    CurrentDir(std::io::Error),
    #[error("the pcap path {} is not UTF-8", .0.display())]
    PcapPath(PathBuf),
    #[error("{0}")]
    Usage(&'static str),
    #[error("{0}")]
    Words(String),
}

#[derive(Parser, Debug)]
#[command(
    name = "userbridge",
    version,
    about = "A userspace L2 switch for container nodes",
    long_about = "userbridge attaches to the host ends of pods' veth pairs (and to TAP devices), learns which \
                  MAC sits behind which port, floods ARP, broadcast and unknown unicast, and forwards known \
                  unicast to one port: the job of the kernel bridge (cni0, docker0), done by a daemon you can \
                  read, measure and extend. One daemon serves every bridge of a node, each an L2 domain of \
                  its own.\n\nStart the daemon with `userbridge run` (bridges then come with `bridge add`), \
                  `run --host-port NAME --port IF ...` for one bridge, or `run --config FILE`; inspect and \
                  change it at run time with `bridge`, `fdb`, `port`, `stats`, `set` and `mirror`. Try it \
                  with `userbridge lab demo`."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
struct ClientOpts {
    /// The daemon's control socket.
    #[arg(long, default_value = DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    /// Print JSON instead of text.
    #[arg(short = 'j', long = "json", global = true)]
    json: bool,
}

/// `br NAME` after a command, in iproute2's words (`bridge fdb show br cni0`).
#[derive(Args, Debug, Clone)]
struct Br {
    /// `br NAME`: bridge NAME. Without it a listing shows every bridge, and
    /// anything else means the daemon's only bridge.
    #[arg(value_name = "br NAME", num_args = 0..=2)]
    words: Vec<String>,
}

impl Br {
    fn bridge(&self) -> Result<Option<IfName>, CliError> {
        keyword(&self.words, "br")
    }
}

/// `WORD NAME` (or nothing): the interface NAME.
fn keyword(words: &[String], word: &str) -> Result<Option<IfName>, CliError> {
    match words {
        [] => Ok(None),
        [w, name] if w == word => IfName::new(name).map(Some).map_err(|e| CliError::Words(e.to_string())),
        other => Err(CliError::Words(format!("expected `{word} NAME`, not `{}`", other.join(" ")))),
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the switch in the foreground until SIGINT or SIGTERM (SIGHUP re-reads --config).
    Run(Box<config::RunArgs>),
    /// The daemon's bridges: add, delete, list. Each is an L2 domain of its
    /// own, with its own interface (host port) named as it, unless made
    /// with --no-host-port.
    Bridge {
        #[command(subcommand)]
        cmd: BridgeCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Check a configuration file and exit: `ok`, or one line per problem with its line number.
    CheckConfig { file: PathBuf },
    /// The forwarding table: show, add or delete static entries, flush.
    Fdb {
        #[command(subcommand)]
        cmd: FdbCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Per-port and FDB counters of a bridge (`stats br NAME`).
    Stats {
        /// Only this port.
        #[arg(long, value_name = "IF")]
        port: Option<IfName>,
        #[command(flatten)]
        br: Br,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// The switch's ports: list, add, delete at run time.
    Port {
        #[command(subcommand)]
        cmd: PortCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Change a setting at run time.
    Set {
        #[command(subcommand)]
        cmd: SetCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Copy a port's traffic (both directions) to another port or a pcap file.
    Mirror {
        #[command(subcommand)]
        cmd: MirrorCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Build or remove a namespace lab, or run the demo.
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
    },
    /// VLAN membership of ports, as `bridge vlan`: `vlan add dev PORT vid
    /// N[-M] [pvid] [untagged]`, `vlan del dev PORT vid N[-M]`, `vlan show
    /// [dev PORT] [br NAME]`. Applies while the port's bridge filters VLANs
    /// (`set vlan-filtering on`).
    Vlan {
        #[arg(value_name = "add|del|show ...", required = true)]
        words: Vec<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// The neighbour table of ARP suppression (neigh_suppress), `neigh show [br NAME]`.
    Neigh {
        #[command(subcommand)]
        cmd: NeighCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// What the switch would do with a frame, step by step (changes nothing):
    /// ingress policy, VLAN, learning, FDB, decision, each egress port and why.
    Trace {
        /// The port the frame arrives on.
        #[arg(long = "in", value_name = "PORT")]
        in_port: IfName,
        #[arg(long, value_name = "MAC")]
        src: Mac,
        #[arg(long, value_name = "MAC")]
        dst: Mac,
        /// Tagged with this VLAN (802.1Q).
        #[arg(long, value_name = "VID", value_parser = clap::value_parser!(u16).range(0..=4095))]
        vlan: Option<u16>,
        /// EtherType, e.g. 0x0800 (the default) or 0x86dd.
        #[arg(long, value_name = "T", value_parser = ub_proto::parse_ethertype)]
        ethertype: Option<u16>,
        /// An ARP request for this address instead (see neigh_suppress).
        #[arg(long, value_name = "IP", conflicts_with = "ethertype")]
        arp_target: Option<std::net::Ipv4Addr>,
        /// The ARP request's sender address (default 0.0.0.0, a probe).
        #[arg(long, value_name = "IP", requires = "arp_target")]
        arp_sender: Option<std::net::Ipv4Addr>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Upgrade the running daemon without an outage: it starts its binary
    /// (the file it was started from, as a package upgrade left it) with its
    /// own arguments and --takeover; the new process takes the ports,
    /// listeners and learned entries over, and the old one exits. Waits for
    /// the outcome; the systemd unit's ExecReload (docs/operations.md).
    Upgrade {
        /// How long to wait for the new daemon to take over.
        #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout: u64,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// The CNI plugin: this binary is the plugin for `"type": "userbridge"`
    /// when a runtime runs it with CNI_COMMAND set (docs/cni.md).
    Cni {
        #[command(subcommand)]
        cmd: CniCmd,
    },
    /// The Docker network driver: serves `docker network create -d NAME`
    /// on /run/docker/plugins/NAME.sock until SIGTERM, each network a
    /// bridge of the daemon, with published ports and masquerade in the
    /// driver's own iptables chains; SIGHUP puts those back (docs/docker.md).
    DockerPlugin {
        /// The driver's name for Docker (`-d NAME`).
        #[arg(long, default_value = "userbridge")]
        name: String,
        /// The daemon's control socket.
        #[arg(long, default_value = ub_proto::DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Networks and endpoints, kept across restarts (default
        /// /var/lib/userbridge/docker-NAME.json).
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Where Docker looks for plugin sockets.
        #[arg(long, value_name = "DIR", default_value = ub_docker::PLUGIN_DIR)]
        plugin_dir: PathBuf,
        /// Every SECS seconds, check the node's iptables rules for the
        /// networks and put back what a firewall reload removed; 0: only
        /// at SIGHUP.
        #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=86400))]
        check_rules: u32,
        /// Log level (error, warn, info, debug).
        #[arg(long, default_value = "info")]
        log_level: String,
    },
}

#[derive(Subcommand, Debug)]
enum CniCmd {
    /// Copy this binary into a runtime's CNI plugin directory as `userbridge`.
    Install {
        /// The plugin directory (podman: cni_plugin_dirs; containerd: bin_dir).
        #[arg(long, default_value = "/opt/cni/bin")]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum BridgeCmd {
    /// Make bridge NAME, with its own interface NAME (a TAP, the pods'
    /// gateway, as `ip link add NAME type bridge` makes one). It survives
    /// restarts of the daemon; `bridge del` deletes it.
    Add {
        /// The bridge's name, and its interface's (at most 15 bytes).
        name: IfName,
        /// An address for its interface, as CIDR (repeat for more).
        #[arg(long = "address", value_name = "CIDR", value_parser = config::parse_cidr)]
        addresses: Vec<ub_netlink::IpNet>,
        /// Its interface's MTU (68-65535; 1280 or more with an IPv6 address).
        #[arg(long, value_name = "N")]
        mtu: Option<u32>,
        /// Its interface's MAC (default: derived from its name, the same every time).
        #[arg(long, value_name = "MAC", value_parser = config::parse_mac)]
        mac: Option<Mac>,
        /// Filter VLANs on it (`vlan_filtering 1`).
        #[arg(long, value_enum, value_name = "on|off", default_value_t = OnOff::Off)]
        vlan_filtering: OnOff,
        /// No interface of its own: a bridge of ports only.
        #[arg(long, conflicts_with_all = ["addresses", "mtu", "mac"])]
        no_host_port: bool,
    },
    /// Delete bridge NAME and its interface. Refused while it has ports, unless --detach.
    Del {
        /// The bridge.
        name: IfName,
        /// Detach its ports first (their interfaces stay).
        #[arg(long)]
        detach: bool,
    },
    /// List the bridges: interface, addresses, ports, FDB entries.
    List,
}

#[derive(Subcommand, Debug)]
enum FdbCmd {
    /// List every entry: MAC, port, bridge, VLAN, age, static or learned (`fdb show [br NAME]`).
    Show {
        #[command(flatten)]
        br: Br,
    },
    /// Add a static entry: MAC is behind PORT (it never ages or moves).
    Add {
        mac: Mac,
        port: IfName,
        #[arg(long, default_value_t = 0)]
        vlan: u16,
    },
    /// Delete the entry for MAC (static or learned), `fdb del MAC [br NAME]`.
    Del {
        mac: Mac,
        #[arg(long, default_value_t = 0)]
        vlan: u16,
        #[command(flatten)]
        br: Br,
    },
    /// Forget learned entries, all of a bridge or those behind one port.
    Flush {
        #[arg(long, value_name = "IF")]
        port: Option<IfName>,
        #[command(flatten)]
        br: Br,
    },
}

#[derive(Subcommand, Debug)]
enum PortCmd {
    /// List ports with their bridge, state, MTU, learned entries and owner (`port list [br NAME]`).
    List {
        /// Only this port.
        #[arg(long, value_name = "IF")]
        port: Option<IfName>,
        #[command(flatten)]
        br: Br,
    },
    /// Attach interface IF (or create and attach TAP NAME) to a bridge:
    /// `port add IF master NAME` (without `master`, the daemon's only bridge).
    Add {
        /// Interface to attach (`--tap NAME` instead makes a TAP).
        #[arg(value_name = "IF [master NAME]", num_args = 0..=3)]
        words: Vec<String>,
        /// Create a TAP interface of this name instead.
        #[arg(long, value_name = "NAME")]
        tap: Option<IfName>,
    },
    /// Detach port IF: its FDB entries are flushed; other ports forward on.
    Del { name: IfName },
    /// Change port IF's policy, as `bridge link set dev IF ...` (docs/policies.md):
    /// only the knobs given change, all at once.
    Set {
        /// The port.
        name: IfName,
        #[command(flatten)]
        change: Box<PolicyChange>,
    },
}

/// `on` or `off`, as `bridge link set` takes them.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum OnOff {
    On,
    Off,
}

#[derive(Subcommand, Debug)]
enum SetCmd {
    /// Idle time after which a bridge's learned entries go, in seconds (`set ageing SECS [br NAME]`).
    Ageing {
        secs: u64,
        #[command(flatten)]
        br: Br,
    },
    /// Filter VLANs on a bridge (`vlan_filtering 1`): ports' memberships
    /// apply. Learned entries are forgotten when it changes.
    VlanFiltering {
        #[arg(value_enum)]
        state: OnOff,
        #[command(flatten)]
        br: Br,
    },
}

#[derive(Subcommand, Debug)]
enum NeighCmd {
    /// The addresses ARP suppression answers for: told to ports, or learned.
    Show {
        #[command(flatten)]
        br: Br,
    },
}

/// `vlan add|del|show`, in `bridge vlan`'s words.
fn vlan_request(words: &[String]) -> Result<ub_proto::Request, CliError> {
    use ub_proto::{VlanAdd, VlanDel, VlanShow};
    let bad = |why: String| CliError::Vlan { why };
    let (cmd, rest) = words.split_first().ok_or_else(|| bad("vlan needs add, del or show".into()))?;
    let (mut dev, mut vid, mut pvid, mut untagged, mut br) = (None, None, false, false, None);
    let mut it = rest.iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "dev" => dev = Some(it.next().ok_or_else(|| bad("dev needs a port".into()))?.clone()),
            "br" => br = Some(it.next().ok_or_else(|| bad("br needs a bridge".into()))?.clone()),
            "vid" => vid = Some(it.next().ok_or_else(|| bad("vid needs a VLAN id".into()))?.clone()),
            "pvid" => pvid = true,
            "untagged" => untagged = true,
            other => return Err(bad(format!("unexpected '{other}'"))),
        }
    }
    let vids = |v: Option<String>| -> Result<(u16, Option<u16>), CliError> {
        let v = v.ok_or_else(|| bad("vid N[-M] is missing".into()))?;
        let one = |x: &str| {
            x.parse::<u16>()
                .ok()
                .filter(|n| (1..=4094).contains(n))
                .ok_or_else(|| bad(format!("vid {x} is not a VLAN id (use 1 to 4094)")))
        };
        match v.split_once('-') {
            Some((a, b)) => Ok((one(a)?, Some(one(b)?))),
            None => Ok((one(&v)?, None)),
        }
    };
    let port = |d: Option<String>| {
        let d = d.ok_or_else(|| bad("dev PORT is missing".into()))?;
        IfName::new(&d).map_err(|e| bad(e.to_string()))
    };
    Ok(match cmd.as_str() {
        "add" => {
            let (vid, vid_end) = vids(vid)?;
            VlanAdd { port: port(dev)?, vid, vid_end, pvid, untagged }.into()
        }
        "del" if pvid || untagged => return Err(bad("del takes no pvid or untagged".into())),
        "del" => {
            let (vid, vid_end) = vids(vid)?;
            VlanDel { port: port(dev)?, vid, vid_end }.into()
        }
        _ if br.is_some() && cmd != "show" => return Err(bad("br NAME is for show (a port is in one bridge)".into())),
        "show" if vid.is_some() || pvid || untagged => return Err(bad("show takes only dev PORT and br NAME".into())),
        "show" => {
            VlanShow { bridge: br.map(|b| port(Some(b))).transpose()?, port: dev.map(|d| port(Some(d))).transpose()? }
                .into()
        }
        other => return Err(bad(format!("unknown vlan command '{other}'"))),
    })
}

#[derive(Subcommand, Debug)]
enum MirrorCmd {
    /// Mirror port FROM to port TO, or to a pcap file (read it with `tcpdump -r`).
    Add {
        #[arg(long, value_name = "IF")]
        from: IfName,
        #[arg(long, value_name = "IF", required_unless_present = "pcap", conflicts_with = "pcap")]
        to: Option<IfName>,
        #[arg(long, value_name = "FILE")]
        pcap: Option<PathBuf>,
        /// Size cap of the pcap file, in MiB; frames beyond it are dropped and counted.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        max_mib: u64,
    },
    /// Stop mirroring port FROM.
    Del {
        #[arg(long, value_name = "IF")]
        from: IfName,
    },
    /// List mirrors, with frames written and dropped for pcap files (`mirror list [br NAME]`).
    List {
        #[command(flatten)]
        br: Br,
    },
}

/// `lab up --bridge`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum BridgeArg {
    Userbridge,
    Kernel,
}

#[derive(Subcommand, Debug)]
enum LabCmd {
    /// Create NAME-sw (switch side, ports ubp1..N) and pods NAME-p1..N (eth0, 10.0.0.i/24);
    /// with --nodes 2, two nodes joined by VXLAN as flannel joins them, each with
    /// its own switch (see docs/lab.md).
    Up {
        /// Pods (per node, with --nodes).
        #[arg(long, default_value_t = 3)]
        pods: usize,
        #[arg(long, default_value = "ublab")]
        name: String,
        /// Two nodes NAME-n1, NAME-n2: underlay ul0 192.168.100.i/24, VXLAN
        /// flannel.1 (VNI 1, UDP 8472, MTU 1450), gateway cni0 10.244.i.1/24,
        /// pods NAME-n{i}p{j} at 10.244.i.(j+1) with default routes via it.
        #[arg(long, value_parser = clap::value_parser!(u8).range(2..=2))]
        nodes: Option<u8>,
        /// What switches each node's pods (with --nodes): a userbridge daemon
        /// started here, or a kernel bridge, for comparison.
        #[arg(long, value_enum, default_value_t = BridgeArg::Userbridge, requires = "nodes")]
        bridge: BridgeArg,
    },
    /// Delete the namespaces of lab NAME.
    Down {
        #[arg(long, default_value = "ublab")]
        name: String,
    },
    /// Two pods, the switch between them, one ping: see flood, learn, unicast; then tear down.
    Demo {
        #[arg(long, default_value_t = 2)]
        pods: usize,
        #[arg(long, default_value = "ubdemo")]
        name: String,
    },
}

/// `port add IF [master NAME]`, or `port add --tap NAME [master NAME]`.
fn port_add(words: Vec<String>, tap: Option<IfName>) -> Result<ub_proto::PortAdd, CliError> {
    let name = |w: &str| IfName::new(w).map_err(|e| CliError::Words(e.to_string()));
    match (tap, words.split_first()) {
        (Some(t), _) => {
            Ok(ub_proto::PortAdd { tap: true, bridge: keyword(&words, "master")?, ..ub_proto::PortAdd::afpacket(t) })
        }
        (None, Some((first, rest))) if first != "master" => {
            Ok(ub_proto::PortAdd { bridge: keyword(rest, "master")?, ..ub_proto::PortAdd::afpacket(name(first)?) })
        }
        (None, _) => Err(CliError::Usage("port add needs IF (port add IF [master NAME]) or --tap NAME")),
    }
}

fn absolute(p: PathBuf) -> Result<String, CliError> {
    let p = if p.is_absolute() { p } else { std::env::current_dir().map_err(CliError::CurrentDir)?.join(p) };
    p.to_str().map(str::to_string).ok_or(CliError::PcapPath(p.clone()))
}

/// Sends `req` to the daemon and prints its reply: text, or JSON with -j.
fn ask<C: Call>(c: &ClientOpts, req: C) -> Result<(), CliError>
where
    C::Reply: Show,
{
    print(c, ub_proto::call(&c.socket, req)?);
    Ok(())
}

fn print(c: &ClientOpts, reply: impl Show + serde::Serialize) {
    if c.json {
        println!("{}", serde_json::to_string_pretty(&reply).unwrap_or_default());
    } else {
        print!("{}", reply.show());
    }
}

fn main() -> ExitCode {
    use ub_proto::*;
    // Run by a container runtime as a CNI plugin: no arguments, CNI_COMMAND set.
    if std::env::args_os().len() == 1 && std::env::var_os("CNI_COMMAND").is_some_and(|c| !c.is_empty()) {
        return ub_cni::main();
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, as every other error: clap's first, without its usage block.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            eprintln!("userbridge: {first} (see --help)");
            return ExitCode::from(2);
        }
    };
    let res: Result<(), CliError> = match cli.cmd {
        Cmd::Run(args) => start::run(*args).map_err(Into::into),
        Cmd::CheckConfig { file } => match config::Settings::load(&file) {
            Ok(s) => {
                let hosts: Vec<&str> =
                    s.bridges.iter().filter_map(|b| b.host.as_ref()).map(|h| h.name.as_str()).collect();
                println!(
                    "{}: ok ({} bridges, {} ports, {} taps, {} static entries{})",
                    file.display(),
                    s.bridges.len(),
                    s.names(Backend::Afpacket).len(),
                    s.names(Backend::Tap).len(),
                    s.bridges.iter().map(|b| b.statics.len()).sum::<usize>(),
                    if hosts.is_empty() { String::new() } else { format!(", host ports {}", hosts.join(" ")) }
                );
                Ok(())
            }
            Err(e) => {
                for line in &e.0[..e.0.len().saturating_sub(1)] {
                    eprintln!("userbridge: {line}");
                }
                Err(CliError::CheckConfig(e))
            }
        },
        Cmd::Bridge { cmd, client: c } => match cmd {
            BridgeCmd::Add { name, addresses, mtu, mac, vlan_filtering, no_host_port } => ask(
                &c,
                BridgeAdd {
                    host_port: !no_host_port,
                    addresses,
                    mtu,
                    mac,
                    vlan_filtering: vlan_filtering == OnOff::On,
                    ..BridgeAdd::named(name)
                },
            ),
            BridgeCmd::Del { name, detach } => ask(&c, BridgeDel { name, detach }),
            BridgeCmd::List => ask(&c, BridgeList {}),
        },
        Cmd::Fdb { cmd, client: c } => match cmd {
            FdbCmd::Show { br } => br.bridge().and_then(|bridge| ask(&c, FdbShow { bridge })),
            FdbCmd::Add { mac, port, vlan } => ask(&c, FdbAdd { mac, port, vlan, bridge: None }),
            FdbCmd::Del { mac, vlan, br } => br.bridge().and_then(|bridge| ask(&c, FdbDel { mac, vlan, bridge })),
            FdbCmd::Flush { port, br } => br.bridge().and_then(|bridge| ask(&c, FdbFlush { port, bridge })),
        },
        Cmd::Stats { port, br, client: c } => br.bridge().and_then(|bridge| ask(&c, Stats { port, bridge })),
        Cmd::Port { cmd, client: c } => match cmd {
            PortCmd::List { port, br } => br.bridge().and_then(|bridge| ask(&c, PortList { port, bridge })),
            PortCmd::Add { words, tap } => port_add(words, tap).and_then(|r| ask(&c, r)),
            PortCmd::Del { name } => ask(&c, PortDel { name, if_exists: false }),
            PortCmd::Set { name, change } => ask(&c, PortSet { name, change: *change }),
        },
        Cmd::Set { cmd: SetCmd::Ageing { secs, br }, client: c } => {
            br.bridge().and_then(|bridge| ask(&c, SetAgeing { secs, bridge }))
        }
        Cmd::Set { cmd: SetCmd::VlanFiltering { state, br }, client: c } => {
            br.bridge().and_then(|bridge| ask(&c, SetVlanFiltering { on: state == OnOff::On, bridge }))
        }
        Cmd::Vlan { words, client: c } => vlan_request(&words).and_then(|r| match r {
            Request::VlanAdd(r) => ask(&c, r),
            Request::VlanDel(r) => ask(&c, r),
            Request::VlanShow(r) => ask(&c, r),
            _ => Err(CliError::Usage("vlan add|del|show")),
        }),
        Cmd::Neigh { cmd: NeighCmd::Show { br }, client: c } => {
            br.bridge().and_then(|bridge| ask(&c, NeighShow { bridge }))
        }
        Cmd::Trace { in_port, src, dst, vlan, ethertype, arp_target, arp_sender, client: c } => {
            ask(&c, ub_proto::Trace { in_port, src, dst, vlan, ethertype, arp_target, arp_sender })
        }
        Cmd::Mirror { cmd, client: c } => match cmd {
            MirrorCmd::Add { from, to: Some(to), .. } => {
                ask(&c, MirrorAdd { from, to: Some(to), pcap: None, max_bytes: None })
            }
            MirrorCmd::Add { from, pcap: Some(p), max_mib, .. } => absolute(p)
                .and_then(|p| ask(&c, MirrorAdd { from, to: None, pcap: Some(p), max_bytes: Some(max_mib << 20) })),
            MirrorCmd::Add { .. } => Err(CliError::Usage("mirror add needs --to IF or --pcap FILE")),
            MirrorCmd::Del { from } => ask(&c, MirrorDel { from }),
            MirrorCmd::List { br } => br.bridge().and_then(|bridge| ask(&c, MirrorList { bridge })),
        },
        Cmd::Lab { cmd } => match cmd {
            LabCmd::Up { pods, name, nodes: None, .. } => demo::lab_up(&name, pods),
            LabCmd::Up { pods, name, nodes: Some(n), bridge } => {
                let switching = match bridge {
                    BridgeArg::Userbridge => ub_lab::Switching::Userbridge,
                    BridgeArg::Kernel => ub_lab::Switching::Kernel,
                };
                demo::nodes_up(&name, usize::from(n), pods, switching)
            }
            LabCmd::Down { name } => demo::lab_down(&name),
            LabCmd::Demo { pods, name } => demo::demo(&name, pods),
        }
        .map_err(Into::into),
        Cmd::Upgrade { timeout, client: c } => userbridge::upgrade::run(&c.socket, Duration::from_secs(timeout))
            .map_err(CliError::Words)
            .map(|u| print(&c, u)),
        Cmd::Cni { cmd: CniCmd::Install { dir } } => match ub_cni::install(&dir) {
            Ok(path) => {
                println!("installed {} (the plugin for \"type\": \"userbridge\")", path.display());
                Ok(())
            }
            Err(source) => Err(CliError::CniInstall { dir, source }),
        },
        Cmd::DockerPlugin { name, socket, state, plugin_dir, check_rules, log_level } => {
            match tracing_subscriber::EnvFilter::try_from_default_env()
                .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log_level))
            {
                Ok(filter) => {
                    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
                    let _ = tracing_subscriber::fmt()
                        .with_env_filter(filter)
                        .with_ansi(ansi)
                        .with_writer(std::io::stderr)
                        .try_init();
                    let state = state.unwrap_or_else(|| ub_docker::Options::default_state(&name));
                    let check_rules = (check_rules > 0).then(|| std::time::Duration::from_secs(check_rules.into()));
                    ub_docker::serve(&ub_docker::Options { name, socket, plugin_dir, state, check_rules })
                        .map_err(Into::into)
                }
                Err(e) => Err(CliError::LogLevel { level: log_level, why: e.to_string() }),
            }
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("userbridge: {e}");
            ExitCode::FAILURE
        }
    }
}
