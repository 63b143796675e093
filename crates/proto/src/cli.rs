//! `userbridge port set`'s flags, made from the knobs' one list (the
//! `clap` feature, for the CLI): `--KNOB on|off` for each on/off knob, and
//! `--mac`/`--ip` lists where `none` empties the list; `trace --ethertype`.

use crate::{PolicyChange, PortPolicy};
use clap::error::ErrorKind;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

impl Args for PolicyChange {
    fn augment_args(mut cmd: Command) -> Command {
        for (knob, help, _) in PortPolicy::KNOBS {
            cmd = cmd.arg(
                Arg::new(*knob)
                    .long(knob.replace('_', "-"))
                    .value_name("on|off")
                    .value_parser(["on", "off"])
                    .help(help.trim().to_string()),
            );
        }
        cmd.arg(
            Arg::new("mac")
                .long("mac")
                .value_name("MAC")
                .action(ArgAction::Append)
                .help("The port's station (repeat for more): replaces the list; `--mac none` empties it."),
        )
        .arg(
            Arg::new("ip")
                .long("ip")
                .value_name("IP")
                .action(ArgAction::Append)
                .help("The stations' addresses (repeat for more): replaces the list; `--ip none` empties it."),
        )
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for PolicyChange {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut c = PolicyChange::default();
        c.update_from_arg_matches(m)?;
        Ok(c)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        for (knob, _, _) in PortPolicy::KNOBS {
            if let Some(v) = m.get_one::<String>(knob) {
                self.set_knob(knob, v == "on");
            }
        }
        if let Some(v) = list(m, "mac", |s| s.parse::<ub_wire::Mac>().map_err(|e| e.to_string()))? {
            self.macs = Some(v);
        }
        let ip = |s: &str| s.parse::<std::net::IpAddr>().map_err(|e| format!("--ip: {e} (an IPv4 or IPv6 address)"));
        if let Some(v) = list(m, "ip", ip)? {
            self.ips = Some(v);
        }
        Ok(())
    }
}

/// The values of the list flag `id`, `none` left out (so `--mac none` is an
/// empty list); `None` when the flag is not given. `parse`'s message goes
/// into clap's error as it is.
fn list<T>(m: &ArgMatches, id: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<Vec<T>>, clap::Error> {
    let Some(v) = m.get_many::<String>(id) else { return Ok(None) };
    v.filter(|s| s.as_str() != "none")
        .map(|s| parse(s).map_err(|e| clap::Error::raw(ErrorKind::ValueValidation, e)))
        .collect::<Result<Vec<T>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Set {
        #[command(flatten)]
        change: PolicyChange,
    }

    #[test]
    fn every_knob_is_a_flag_and_lists_take_none() {
        let s = Set::try_parse_from(["set", "--isolated", "on", "--mcast-flood", "off", "--mac", "none"]).unwrap();
        let want = PolicyChange {
            isolated: Some(true),
            mcast_flood: Some(false),
            macs: Some(vec![]),
            ..PolicyChange::default()
        };
        assert_eq!(s.change, want);
        for (knob, _, _) in PortPolicy::KNOBS {
            let flag = format!("--{}", knob.replace('_', "-"));
            let s = Set::try_parse_from(["set", &flag, "on"]).unwrap();
            let mut want = PolicyChange::default();
            want.set_knob(knob, true);
            assert_eq!(s.change, want, "{flag}");
        }
        let e = Set::try_parse_from(["set", "--ip", "10.0.0.300"]).unwrap_err().to_string();
        assert!(e.contains("--ip: invalid IP address syntax"), "{e}");
        let e = Set::try_parse_from(["set", "--hairpin", "yes"]).unwrap_err().to_string();
        assert!(e.contains("[possible values: on, off]"), "{e}");
    }
}

/// An EtherType that is not one.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not an EtherType (like 0x0800)")]
pub struct BadEthertype(String);

/// `0x0800` or `2048`.
pub fn parse_ethertype(s: &str) -> Result<u16, BadEthertype> {
    let v = s.strip_prefix("0x").map_or_else(|| s.parse(), |h| u16::from_str_radix(h, 16));
    v.map_err(|_| BadEthertype(s.to_string()))
}
