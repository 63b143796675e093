//! userbridge: a userspace L2 switch for container nodes. The command line;
//! the daemon and its pieces live in the library (src/lib.rs).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use ub_proto::{Call, ClientError};
use userbridge::output::Show;
use userbridge::{DEFAULT_SOCKET, config, daemon, demo};

/// Why a command failed: printed as one line, `userbridge: ...`.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Lab(#[from] demo::LabError),
    #[error("{0}")]
    Usage(&'static str),
}

#[derive(Parser, Debug)]
#[command(
    name = "userbridge",
    version,
    about = "A userspace L2 switch for container nodes",
    long_about = "userbridge attaches to the host ends of pods' veth pairs (and to TAP devices), learns which \
                  MAC sits behind which port, floods ARP, broadcast and unknown unicast, and forwards known \
                  unicast to one port: the job of the kernel bridge (cni0, docker0), done by a daemon you can \
                  read, measure and extend.\n\nStart the daemon with `userbridge run --port IF ...` (or \
                  `--config FILE`); inspect and change it at run time with `fdb`, `port`, `stats`, `set` and \
                  `mirror`. Try it with `userbridge lab demo`."
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

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the switch in the foreground until SIGINT or SIGTERM (SIGHUP re-reads --config).
    Run(Box<config::RunArgs>),
    /// Check a configuration file and exit: `ok`, or one line per problem with its line number.
    CheckConfig { file: PathBuf },
    /// The forwarding table: show, add or delete static entries, flush.
    Fdb {
        #[command(subcommand)]
        cmd: FdbCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Per-port and FDB counters.
    Stats {
        /// Only this port.
        #[arg(long, value_name = "IF")]
        port: Option<String>,
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
    /// The CNI plugin: this binary is the plugin for `"type": "userbridge"`
    /// when a runtime runs it with CNI_COMMAND set (docs/cni.md).
    Cni {
        #[command(subcommand)]
        cmd: CniCmd,
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
enum FdbCmd {
    /// List every entry: MAC, port, VLAN, age, static or learned.
    Show,
    /// Add a static entry: MAC is behind PORT (it never ages or moves).
    Add {
        mac: String,
        port: String,
        #[arg(long, default_value_t = 0)]
        vlan: u16,
    },
    /// Delete the entry for MAC (static or learned).
    Del {
        mac: String,
        #[arg(long, default_value_t = 0)]
        vlan: u16,
    },
    /// Forget learned entries, all or those behind one port.
    Flush {
        #[arg(long, value_name = "IF")]
        port: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum PortCmd {
    /// List ports with their state, MTU, learned entries and owner.
    List {
        /// Only this port.
        #[arg(long, value_name = "IF")]
        port: Option<String>,
    },
    /// Attach interface IF (or create and attach TAP NAME) to the running switch.
    Add {
        /// Interface to attach.
        #[arg(required_unless_present = "tap", conflicts_with = "tap")]
        name: Option<String>,
        /// Create a TAP interface of this name instead.
        #[arg(long, value_name = "NAME")]
        tap: Option<String>,
    },
    /// Detach port IF: its FDB entries are flushed; other ports forward on.
    Del { name: String },
}

#[derive(Subcommand, Debug)]
enum SetCmd {
    /// Idle time after which learned entries go, in seconds.
    Ageing { secs: u64 },
}

#[derive(Subcommand, Debug)]
enum MirrorCmd {
    /// Mirror port FROM to port TO, or to a pcap file (read it with `tcpdump -r`).
    Add {
        #[arg(long, value_name = "IF")]
        from: String,
        #[arg(long, value_name = "IF", required_unless_present = "pcap", conflicts_with = "pcap")]
        to: Option<String>,
        #[arg(long, value_name = "FILE")]
        pcap: Option<PathBuf>,
        /// Size cap of the pcap file, in MiB; frames beyond it are dropped and counted.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        max_mib: u64,
    },
    /// Stop mirroring port FROM.
    Del {
        #[arg(long, value_name = "IF")]
        from: String,
    },
    /// List mirrors, with frames written and dropped for pcap files.
    List,
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

fn absolute(p: PathBuf) -> Result<String, CliError> {
    let p = if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map_err(|e| CliError::Config(format!("the current directory: {e}")))?.join(p)
    };
    p.to_str().map(str::to_string).ok_or(CliError::Usage("the pcap path is not UTF-8"))
}

/// Sends `req` to the daemon and prints its reply: text, or JSON with -j.
fn ask<C: Call>(c: &ClientOpts, req: C) -> Result<(), CliError>
where
    C::Reply: Show,
{
    let reply = ub_proto::call(&c.socket, req)?;
    if c.json {
        println!("{}", serde_json::to_string_pretty(&reply).unwrap_or_default());
    } else {
        print!("{}", reply.show());
    }
    Ok(())
}

fn main() -> ExitCode {
    use ub_proto::*;
    // Run by a container runtime as a CNI plugin: no arguments, CNI_COMMAND set.
    if std::env::args_os().len() == 1 && std::env::var_os("CNI_COMMAND").is_some_and(|c| !c.is_empty()) {
        return ub_cni::main();
    }
    let cli = Cli::parse();
    let res: Result<(), CliError> = match cli.cmd {
        Cmd::Run(args) => daemon::run(*args).map_err(Into::into),
        Cmd::CheckConfig { file } => match config::Settings::load(&file) {
            Ok(s) => {
                println!(
                    "{}: ok ({} ports, {} taps, {} static entries{})",
                    file.display(),
                    s.names(ub_port::Backend::Afpacket).len(),
                    s.names(ub_port::Backend::Tap).len(),
                    s.statics.len(),
                    s.host.as_ref().map_or_else(String::new, |h| format!(", host port {}", h.name))
                );
                Ok(())
            }
            Err(config::ConfigError(errs)) => {
                for e in &errs[..errs.len().saturating_sub(1)] {
                    eprintln!("userbridge: {e}");
                }
                Err(CliError::Config(errs.last().cloned().unwrap_or_default()))
            }
        },
        Cmd::Fdb { cmd, client: c } => match cmd {
            FdbCmd::Show => ask(&c, FdbShow {}),
            FdbCmd::Add { mac, port, vlan } => match mac.parse() {
                Ok(mac) => ask(&c, FdbAdd { mac, port, vlan }),
                Err(e) => Err(CliError::Config(format!("{e}"))),
            },
            FdbCmd::Del { mac, vlan } => match mac.parse() {
                Ok(mac) => ask(&c, FdbDel { mac, vlan }),
                Err(e) => Err(CliError::Config(format!("{e}"))),
            },
            FdbCmd::Flush { port } => ask(&c, FdbFlush { port }),
        },
        Cmd::Stats { port, client: c } => ask(&c, Stats { port }),
        Cmd::Port { cmd, client: c } => match cmd {
            PortCmd::List { port } => ask(&c, PortList { port }),
            PortCmd::Add { name: Some(n), tap: None } => ask(&c, PortAdd::afpacket(&n)),
            PortCmd::Add { tap: Some(n), .. } => ask(&c, PortAdd { tap: true, ..PortAdd::afpacket(&n) }),
            PortCmd::Add { .. } => Err(CliError::Usage("port add needs IF or --tap NAME")),
            PortCmd::Del { name } => ask(&c, PortDel { name, if_exists: false }),
        },
        Cmd::Set { cmd: SetCmd::Ageing { secs }, client: c } => ask(&c, SetAgeing { secs }),
        Cmd::Mirror { cmd, client: c } => match cmd {
            MirrorCmd::Add { from, to: Some(to), .. } => {
                ask(&c, MirrorAdd { from, to: Some(to), pcap: None, max_bytes: None })
            }
            MirrorCmd::Add { from, pcap: Some(p), max_mib, .. } => absolute(p)
                .and_then(|p| ask(&c, MirrorAdd { from, to: None, pcap: Some(p), max_bytes: Some(max_mib << 20) })),
            MirrorCmd::Add { .. } => Err(CliError::Usage("mirror add needs --to IF or --pcap FILE")),
            MirrorCmd::Del { from } => ask(&c, MirrorDel { from }),
            MirrorCmd::List => ask(&c, MirrorList {}),
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
        Cmd::Cni { cmd: CniCmd::Install { dir } } => match ub_cni::install(&dir) {
            Ok(path) => {
                println!("installed {} (the plugin for \"type\": \"userbridge\")", path.display());
                Ok(())
            }
            Err(e) => Err(CliError::Config(format!("installing the CNI plugin into {}: {e}", dir.display()))),
        },
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("userbridge: {e}");
            ExitCode::FAILURE
        }
    }
}
