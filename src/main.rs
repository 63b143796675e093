//! userbridge: a userspace L2 switch for container nodes.

mod control;
mod daemon;
mod demo;
mod links;
mod output;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where clients and the daemon meet unless --socket says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/userbridge/userbridge.sock";

#[derive(Parser, Debug)]
#[command(
    name = "userbridge",
    version,
    about = "A userspace L2 switch for container nodes",
    long_about = "userbridge attaches to the host ends of pods' veth pairs (and to TAP devices), learns which \
                  MAC sits behind which port, floods ARP, broadcast and unknown unicast, and forwards known \
                  unicast to one port: the job of the kernel bridge (cni0, docker0), done by a daemon you can \
                  read, measure and extend.\n\nStart the daemon with `userbridge run --port IF ...`; query it \
                  with `userbridge fdb show`, `userbridge stats`, `userbridge port list`. Try it with \
                  `userbridge lab demo`."
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
    /// Run the switch in the foreground until SIGINT or SIGTERM.
    Run(daemon::RunArgs),
    /// Show the forwarding table (like `bridge fdb show`).
    Fdb {
        #[command(subcommand)]
        cmd: FdbCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show per-port and FDB counters.
    Stats {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show the switch's ports.
    Port {
        #[command(subcommand)]
        cmd: PortCmd,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Build or remove a namespace lab, or run the demo.
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
    },
}

#[derive(Subcommand, Debug)]
enum FdbCmd {
    /// List every entry: MAC, port, VLAN, age, static or learned.
    Show,
}

#[derive(Subcommand, Debug)]
enum PortCmd {
    /// List ports with their state, MTU and traffic.
    List,
}

#[derive(Subcommand, Debug)]
enum LabCmd {
    /// Create NAME-sw (switch side, ports ubp1..N) and pods NAME-p1..N (eth0, 10.0.0.i/24).
    Up {
        #[arg(long, default_value_t = 3)]
        pods: usize,
        #[arg(long, default_value = "ublab")]
        name: String,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Run(args) => daemon::run(args),
        Cmd::Fdb { cmd: FdbCmd::Show, client } => control::client(&client.socket, "fdb_show", client.json),
        Cmd::Stats { client } => control::client(&client.socket, "stats", client.json),
        Cmd::Port { cmd: PortCmd::List, client } => control::client(&client.socket, "port_list", client.json),
        Cmd::Lab { cmd } => match cmd {
            LabCmd::Up { pods, name } => demo::lab_up(&name, pods),
            LabCmd::Down { name } => demo::lab_down(&name),
            LabCmd::Demo { pods, name } => demo::demo(&name, pods),
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
