//! The choices `run` offers by name: how ports receive (`--rx`, `[ring]
//! mode`), how a port's halves share its frames (`--fanout`), loop
//! detection (`--loop-detect`), and what a removed choice says instead.

use ub_datapath::LoopDetect;
use ub_port::afpacket::Fanout;

/// `--rx` (and `[ring] mode`). `ring` and `slots` were removed; they are
/// still read, to say what replaces them.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RxArg {
    BusySlots,
    Mmsg,
    #[value(hide = true)]
    Slots,
    #[value(hide = true)]
    Ring,
}

impl RxArg {
    /// What replaces a removed mode.
    pub fn removed(self) -> Option<&'static str> {
        match self {
            RxArg::BusySlots | RxArg::Mmsg => None,
            RxArg::Slots => Some(
                "`slots` was removed: `busy-slots` (the default) takes the same RX slots whenever a port is busy \
                 (lower --busy-pps, `busy_pps`, to take them sooner)",
            ),
            RxArg::Ring => Some(
                "`ring` (TPACKET_V3 blocks) was removed: `busy-slots` (the default) takes RX slots while a port \
                 is busy, for less CPU per frame and no block timer (docs/benchmarks.md)",
            ),
        }
    }
}

/// What a setting of the removed TPACKET_V3 ring says now.
pub const RING_GEOMETRY_REMOVED: &str =
    "set the TPACKET_V3 ring, which was removed with `--rx ring`: leave it out (`--ring-slots` sizes the RX slots)";

/// `--fanout`: how a port's receive halves share its frames.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FanoutArg {
    /// By flow (a TCP or UDP flow stays on one reader, in order), by CPU
    /// for other frames and for TCP or UDP without a flow hash.
    Flow,
    /// By the CPU the frame arrived on.
    Cpu,
}

impl From<FanoutArg> for Fanout {
    fn from(f: FanoutArg) -> Self {
        match f {
            FanoutArg::Flow => Fanout::FlowOrCpu,
            FanoutArg::Cpu => Fanout::Cpu,
        }
    }
}

/// `--netfilter`: whether IP between a bridge's stations goes through the
/// node's netfilter, as br_netfilter makes a kernel bridge's go
/// (docs/operations.md, "NetworkPolicy and node firewalls").
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetfilterMode {
    /// While br_netfilter is on and the node's forward chains hold a rule.
    #[default]
    Auto,
    /// While br_netfilter is on, rules or not.
    On,
    /// Never: the direct path, whatever the node's rules say.
    Off,
}

impl NetfilterMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetfilterMode::Auto => "auto",
            NetfilterMode::On => "on",
            NetfilterMode::Off => "off",
        }
    }
}

/// `--loop-detect`, see `ub_datapath::LoopDetect`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoopMode {
    Off,
    OnFlap,
    Always,
}

impl From<LoopMode> for LoopDetect {
    fn from(m: LoopMode) -> LoopDetect {
        match m {
            LoopMode::Off => LoopDetect::Off,
            LoopMode::OnFlap => LoopDetect::OnFlap,
            LoopMode::Always => LoopDetect::Always,
        }
    }
}
