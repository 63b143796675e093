//! Every numeric setting once: its configuration key, its `run` flag, its
//! default and its range. `run`'s flags, the configuration file, the
//! control protocol and the daemon's defaults all read them from here, and
//! a test holds docs/cli.md's table to them.

use std::fmt::Display;
use std::str::FromStr;

/// A setting with a default and an inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting<T: 'static> {
    /// Its key in the configuration file (and the protocol, where it has one).
    pub key: &'static str,
    /// Its flag on `userbridge run`.
    pub flag: &'static str,
    pub default: T,
    pub min: T,
    pub max: T,
}

/// A value a setting does not take; it says the range (the caller names
/// the key or the flag, and the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("use {min} to {max}")]
    OutOfRange { min: String, max: String },
    #[error("'{text}' is not a number: use {min} to {max}")]
    NotANumber { text: String, min: String, max: String },
}

impl<T: Copy + PartialOrd + Display + FromStr> Setting<T> {
    /// `v` if it is in range.
    pub fn check(&self, v: T) -> Result<T, SettingError> {
        if self.min <= v && v <= self.max {
            Ok(v)
        } else {
            Err(SettingError::OutOfRange { min: self.min.to_string(), max: self.max.to_string() })
        }
    }

    /// Parses a flag's value and checks it (a clap `value_parser`).
    pub fn parse(&self, s: &str) -> Result<T, SettingError> {
        let (min, max) = (self.min.to_string(), self.max.to_string());
        let v: T = s.parse().map_err(|_| SettingError::NotANumber { text: s.to_string(), min, max })?;
        self.check(v)
    }

    /// `use MIN to MAX`.
    pub fn range(&self) -> String {
        format!("use {} to {}", self.min, self.max)
    }
}

/// Idle time after which a learned FDB entry goes (the Linux bridge's 300 s).
pub const AGEING_SECS: Setting<u64> =
    Setting { key: "ageing_secs", flag: "--ageing-secs", default: 300, min: 1, max: 1_000_000 };

/// Most learned FDB entries in all.
pub const FDB_MAX: Setting<u64> =
    Setting { key: "max_entries", flag: "--fdb-max", default: 65_536, min: 1, max: 16_777_216 };

/// Most learned FDB entries behind one port.
pub const FDB_MAX_PER_PORT: Setting<u32> =
    Setting { key: "max_per_port", flag: "--fdb-max-per-port", default: 8_192, min: 1, max: u32::MAX };

/// Storm control: the most frames of a flood class a port may flood per second (0: no limit).
pub const STORM_PPS: Setting<u32> =
    Setting { key: "broadcast_pps", flag: "--storm-pps", default: 10_000, min: 0, max: u32::MAX };

/// The most 2 KiB slots an RX ring of a busy port takes (an even count).
pub const RING_SLOTS: Setting<usize> =
    Setting { key: "slots", flag: "--ring-slots", default: 16_384, min: 64, max: 65_536 };

/// Frames per second from which a port takes RX slots (`--rx busy-slots`).
pub const BUSY_PPS: Setting<u64> =
    Setting { key: "busy_pps", flag: "--busy-pps", default: 20_000, min: 1_000, max: 100_000_000 };

/// Most receive halves a port may have (`--readers N`, `readers_per_port`;
/// the default, `auto`, is one per CPU, at most [`AUTO_READERS_MAX`]).
pub const READERS_MAX: usize = 64;

/// `--readers auto` gives a port one receive half per CPU up to this many:
/// on a large node, ports × CPUs sockets would cost more than they bring.
pub const AUTO_READERS_MAX: usize = 8;

/// Nice value of the reader threads: below a busy pod's 0, a reader
/// sharing its core keeps up with it (docs/benchmarks-history.md).
pub const READER_NICE: Setting<i32> = Setting { key: "nice", flag: "--reader-nice", default: -10, min: -20, max: 19 };

/// The host port's MTU (an IPv6 address needs [`IPV6_MIN_MTU`]).
pub const HOST_MTU: Setting<u32> = Setting { key: "mtu", flag: "--mtu", default: 1500, min: 68, max: 65_535 };

/// The least MTU a link with an IPv6 address may have.
pub const IPV6_MIN_MTU: u32 = 1280;

/// A pcap mirror's size cap, in bytes (the CLI's `--max-mib` is whole MiB of it).
pub const PCAP_MAX_BYTES: Setting<u64> =
    Setting { key: "max_bytes", flag: "--max-mib", default: 100 << 20, min: 1024, max: 1_000_000 << 20 };

/// The log filter unless `--log-level`, `log_level` or `RUST_LOG` say otherwise.
pub const LOG_LEVEL: &str = "info";

/// Where the state file lives unless `--state-dir` or `state_dir` say otherwise.
pub const STATE_DIR: &str = "/run/userbridge";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_out_of_range_is_named_with_the_range() {
        assert_eq!(AGEING_SECS.check(300), Ok(300));
        assert_eq!(AGEING_SECS.check(0).unwrap_err().to_string(), "use 1 to 1000000");
        assert_eq!(AGEING_SECS.parse("1000001").unwrap_err().to_string(), "use 1 to 1000000");
        assert_eq!(AGEING_SECS.parse("x").unwrap_err().to_string(), "'x' is not a number: use 1 to 1000000");
        assert_eq!(READER_NICE.parse("-20"), Ok(-20));
        for s in [AGEING_SECS, FDB_MAX, BUSY_PPS] {
            assert_eq!(s.check(s.default), Ok(s.default), "{}'s default is in its range", s.key);
        }
        assert_eq!(RING_SLOTS.check(RING_SLOTS.default), Ok(16_384));
        assert_eq!(READER_NICE.check(READER_NICE.default), Ok(-10));
    }
}
