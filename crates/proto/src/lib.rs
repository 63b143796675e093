//! The control protocol: the one contract between the daemon, the CLI and
//! the CNI plugin. Newline-delimited JSON on a Unix socket, documented in
//! docs/control.md.
//!
//! Every request is a struct with its typed reply ([`Call::Reply`]); the list
//! below makes the [`Request`] enum that goes on the wire (`{"cmd":
//! "fdb_add", ...}`), and the [`Serve`] trait the daemon implements with one
//! method per request. A [`Client`] sends any request and gets its typed
//! reply back. Nothing else speaks to the daemon.

mod bridge;
#[cfg(feature = "clap")]
mod cli;
#[cfg(feature = "clap")]
pub use cli::{BadEthertype, parse_ethertype};
mod client;
mod ifname;
pub mod port;
pub mod settings;
mod types;

pub use bridge::*;
pub use client::{Client, ClientError, call};
pub use ifname::{BadIfName, IFNAME_MAX, IfName};
pub use port::{
    Backend, DEFAULT_VLANS, Origin, PolicyChange, PolicyError, PortMeta, PortPolicy, PortSpec, PortState, VlanEntry,
};
pub use types::*;

/// Where clients and the daemon meet unless told otherwise (`--socket`,
/// the CNI plugin's `socket` key).
pub const DEFAULT_SOCKET: &str = "/run/userbridge/userbridge.sock";

/// The control protocol's version: 2 added bridges. A request may say the
/// version it speaks (`"v": N`, which [`Client`] always sends); a daemon
/// refuses a newer one by name rather than misread it. A request without
/// `v` is version 1's, and goes to the daemon's only bridge.
pub const PROTOCOL_VERSION: u32 = 2;

/// The error a daemon serving as many clients as it will answers a new one
/// with, before reading its request: the request was not run, and may be
/// sent again ([`ClientError::Busy`]).
pub const BUSY: &str = "too many clients; retry";

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A request: a struct that knows the type of its reply.
pub trait Call: Serialize + Into<Request> {
    type Reply: Serialize + DeserializeOwned;
}

/// One reply line: `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response<T = serde_json::Value> {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok<T: Serialize>(result: &T) -> Response {
        match serde_json::to_value(result) {
            Ok(v) => Response { ok: true, result: Some(v), error: None },
            Err(e) => Response::err(format!("cannot encode the reply: {e}")),
        }
    }

    pub fn err(msg: impl std::fmt::Display) -> Response {
        Response { ok: false, result: None, error: Some(msg.to_string()) }
    }

    /// The reply as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| r#"{"ok":false,"error":"unencodable"}"#.into());
        s.push('\n');
        s
    }
}

/// Why a line is not a request. [`Parse::Malformed`] closes the connection
/// (not JSON, not an object, no or an unknown `cmd`); [`Parse::BadArgs`] is a
/// known command with bad arguments: an error reply, and the connection stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    Malformed(String),
    BadArgs(String),
}

impl Request {
    /// The request as one line, newline included, saying the protocol
    /// version it speaks.
    pub fn to_line(&self) -> Result<String, serde_json::Error> {
        let mut v = serde_json::to_value(self)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("v".into(), PROTOCOL_VERSION.into());
        }
        let mut s = serde_json::to_string(&v)?;
        s.push('\n');
        Ok(s)
    }

    /// Parses one request line.
    pub fn parse(line: &str) -> Result<Request, Parse> {
        let mut v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| Parse::Malformed(format!("malformed request: {e}")))?;
        let Some(obj) = v.as_object_mut() else {
            return Err(Parse::Malformed("malformed request: expected a JSON object like {\"cmd\":\"stats\"}".into()));
        };
        match obj.get("cmd").and_then(|c| c.as_str()) {
            None => return Err(Parse::Malformed("malformed request: no \"cmd\" string".into())),
            Some(c) if !Request::NAMES.contains(&c) => {
                return Err(Parse::Malformed(format!("unknown command '{c}' (known: {})", Request::NAMES.join(", "))));
            }
            Some(_) => {}
        }
        if let Some(version) = obj.remove("v") {
            match version.as_u64() {
                Some(n) if n <= u64::from(PROTOCOL_VERSION) => {}
                Some(n) => {
                    return Err(Parse::BadArgs(format!(
                        "protocol version {n} is newer than this daemon's {PROTOCOL_VERSION}: upgrade the daemon (userbridge run) or use a client of its release"
                    )));
                }
                None => return Err(Parse::BadArgs(format!("\"v\" is {version}, not a protocol version (a number)"))),
            }
        }
        let cmd = obj["cmd"].as_str().unwrap_or_default().to_string();
        serde_json::from_value(v).map_err(|e| Parse::BadArgs(format!("bad {cmd} request: {e}")))
    }
}

macro_rules! protocol {
    ($( $(#[$doc:meta])* $name:ident => $variant:ident($req:ident) -> $reply:ty; )*) => {
        /// Every request the daemon answers; `cmd` on the wire is the snake_case name.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "cmd", rename_all = "snake_case")]
        pub enum Request {
            $( $(#[$doc])* $variant($req), )*
        }

        impl Request {
            /// The `cmd` of every request.
            pub const NAMES: &[&str] = &[$( stringify!($name) ),*];

            pub fn name(&self) -> &'static str {
                match self {
                    $( Request::$variant(_) => stringify!($name), )*
                }
            }

            /// Answers the request with `s`'s handler for it.
            pub fn serve<S: Serve + ?Sized>(self, s: &S) -> Response {
                match self {
                    $( Request::$variant(r) => match s.$name(r) {
                        Ok(reply) => Response::ok(&reply),
                        Err(e) => Response::err(e),
                    }, )*
                }
            }
        }

        /// What answers requests: one method per request, named by its `cmd`.
        pub trait Serve {
            type Error: std::fmt::Display;
            $( $(#[$doc])* fn $name(&self, req: $req) -> Result<$reply, Self::Error>; )*
        }

        $(
            impl Call for $req {
                type Reply = $reply;
            }
            impl From<$req> for Request {
                fn from(r: $req) -> Request {
                    Request::$variant(r)
                }
            }
        )*
    };
}

protocol! {
    /// Every FDB entry.
    fdb_show => FdbShow(FdbShow) -> Vec<FdbEntry>;
    /// A static entry: `mac` is behind `port` (never ages or moves).
    fdb_add => FdbAdd(FdbAdd) -> FdbAdded;
    /// Removes the entry for `mac` in `vlan`.
    fdb_del => FdbDel(FdbDel) -> FdbRemoved;
    /// Forgets learned entries, all or those behind `port`.
    fdb_flush => FdbFlush(FdbFlush) -> Flushed;
    /// Everything: ports, FDB, link events, storm limits, loop guard, the daemon.
    stats => Stats(Stats) -> Status;
    /// The ports.
    port_list => PortList(PortList) -> Vec<PortStatus>;
    /// Attaches a port at run time.
    port_add => PortAdd(PortAdd) -> PortAdded;
    /// Detaches a port.
    port_del => PortDel(PortDel) -> PortRemoved;
    /// Changes a port's policy knobs (`bridge link set`).
    port_set => PortSet(PortSet) -> PortPolicySet;
    /// Adds VLAN membership to a port (`bridge vlan add`).
    vlan_add => VlanAdd(VlanAdd) -> VlanPort;
    /// Removes VLAN membership from a port (`bridge vlan del`).
    vlan_del => VlanDel(VlanDel) -> VlanPort;
    /// Ports' VLAN memberships (`bridge vlan show`).
    vlan_show => VlanShow(VlanShow) -> Vec<VlanPort>;
    /// VLAN filtering on or off.
    set_vlan_filtering => SetVlanFiltering(SetVlanFiltering) -> VlanFiltering;
    /// The neighbour table of ARP suppression.
    neigh_show => NeighShow(NeighShow) -> Vec<NeighInfo>;
    /// What the switch would do with a frame, step by step.
    trace => Trace(Trace) -> Traced;
    /// New ageing time.
    set_ageing => SetAgeing(SetAgeing) -> Ageing;
    /// Mirrors a port to another port or a pcap file.
    mirror_add => MirrorAdd(MirrorAdd) -> Mirroring;
    /// Stops mirroring a port.
    mirror_del => MirrorDel(MirrorDel) -> MirrorStopped;
    /// The mirrors.
    mirror_list => MirrorList(MirrorList) -> Vec<MirrorInfo>;
    /// The host port (the pods' gateway).
    host_info => HostInfo(HostInfo) -> Host;
    /// An address on the host port, kept across its re-creation and restarts.
    host_address => HostAddress(HostAddress) -> HostAddressed;
    /// Takes an address off the host port.
    host_address_del => HostAddressDel(HostAddressDel) -> HostAddressRemoved;
    /// Makes a bridge.
    bridge_add => BridgeAdd(BridgeAdd) -> BridgeAdded;
    /// Deletes a bridge.
    bridge_del => BridgeDel(BridgeDel) -> BridgeRemoved;
    /// The bridges.
    bridge_list => BridgeList(BridgeList) -> Vec<BridgeInfo>;
    /// The protocol's version and the daemon's.
    version => Version(Version) -> VersionInfo;
    /// Starts the daemon's binary anew to take over from it.
    upgrade => Upgrade(Upgrade) -> Upgrading;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IfName {
        IfName::new(s).unwrap()
    }

    #[test]
    fn names_are_the_wire_tags() {
        // The `cmd` serde writes for each request is the name the table lists.
        let br = Some(n("cni1"));
        let reqs: Vec<Request> = vec![
            FdbShow { bridge: None }.into(),
            FdbAdd { mac: "02:00:00:00:00:01".parse().unwrap(), port: n("p"), vlan: 0, bridge: None }.into(),
            FdbDel { mac: "02:00:00:00:00:01".parse().unwrap(), vlan: 0, bridge: br.clone() }.into(),
            FdbFlush { port: None, bridge: None }.into(),
            Stats { port: None, bridge: br.clone() }.into(),
            PortList { port: None, bridge: None }.into(),
            PortAdd { bridge: br.clone(), ..PortAdd::afpacket(n("p")) }.into(),
            PortDel { name: n("p"), if_exists: false }.into(),
            PortSet { name: n("p"), change: PolicyChange { isolated: Some(true), ..PolicyChange::default() } }.into(),
            VlanAdd { port: n("p"), vid: 10, vid_end: Some(20), pvid: false, untagged: false }.into(),
            VlanDel { port: n("p"), vid: 10, vid_end: None }.into(),
            VlanShow { port: None, bridge: None }.into(),
            SetVlanFiltering { on: true, bridge: None }.into(),
            NeighShow { bridge: None }.into(),
            Trace {
                in_port: n("p"),
                src: "02:00:00:00:00:01".parse().unwrap(),
                dst: "ff:ff:ff:ff:ff:ff".parse().unwrap(),
                vlan: Some(10),
                ethertype: None,
                arp_target: None,
                arp_sender: None,
            }
            .into(),
            SetAgeing { secs: 5, bridge: None }.into(),
            MirrorAdd { from: n("a"), to: Some(n("b")), pcap: None, max_bytes: None }.into(),
            MirrorDel { from: n("a") }.into(),
            MirrorList { bridge: None }.into(),
            HostInfo { bridge: br.clone() }.into(),
            HostAddress { address: "10.244.1.1/24".parse().unwrap(), force: false, bridge: None }.into(),
            HostAddressDel { address: "10.244.1.1/24".parse().unwrap(), bridge: None }.into(),
            BridgeAdd {
                addresses: vec!["10.88.1.1/24".parse().unwrap()],
                if_missing: true,
                ..BridgeAdd::named(n("cni1"))
            }
            .into(),
            BridgeDel { name: n("cni1"), detach: true }.into(),
            BridgeList {}.into(),
            Version {}.into(),
            Upgrade {}.into(),
        ];
        assert_eq!(reqs.len(), Request::NAMES.len());
        for r in reqs {
            let v = serde_json::to_value(&r).unwrap();
            assert_eq!(v["cmd"], r.name());
            assert_eq!(Request::parse(&v.to_string()), Ok(r.clone()));
            // As a client sends it: with the protocol's version.
            assert_eq!(Request::parse(r.to_line().unwrap().trim_end()), Ok(r));
        }
    }

    #[test]
    fn the_wire_format_of_docs_control_md_still_parses() {
        let r = Request::parse(r#"{"cmd":"fdb_add","mac":"02:00:00:00:00:09","port":"ubp2"}"#).unwrap();
        assert_eq!(
            r,
            FdbAdd { mac: "02:00:00:00:00:09".parse().unwrap(), port: n("ubp2"), vlan: 0, bridge: None }.into()
        );
        let r = Request::parse(r#"{"cmd":"port_add","name":"tap0","tap":true}"#).unwrap();
        let Request::PortAdd(p) = r else { panic!() };
        assert_eq!((p.backend(), p.bridge), (Backend::Tap, None), "a version 1 request: the only bridge");
        let r = Request::parse(r#"{"cmd":"fdb_flush","port":null}"#).unwrap();
        assert_eq!(r, FdbFlush { port: None, bridge: None }.into());
        assert_eq!(Request::parse(r#"{"cmd":"stats"}"#).unwrap(), Stats { port: None, bridge: None }.into());
        let r = Request::parse(r#"{"cmd":"bridge_add","name":"cni1","host_port":false,"v":2}"#).unwrap();
        assert_eq!(r, BridgeAdd { host_port: false, ..BridgeAdd::named(n("cni1")) }.into());
    }

    #[test]
    fn a_newer_protocol_version_is_refused_by_name() {
        match Request::parse(r#"{"cmd":"stats","v":3}"#) {
            Err(Parse::BadArgs(m)) => {
                assert!(m.starts_with("protocol version 3 is newer than this daemon's 2: upgrade the daemon"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(Request::parse(r#"{"cmd":"stats","v":"2"}"#), Err(Parse::BadArgs(m)) if m.contains("not a protocol version"))
        );
        assert!(Request::parse(r#"{"cmd":"stats","v":1}"#).is_ok());
        assert!(Request::parse(r#"{"cmd":"stats","v":2}"#).is_ok());
    }

    #[test]
    fn malformed_lines_and_bad_arguments_are_told_apart() {
        for bad in ["nope", "[1]", r#"{"x":1}"#, r#"{"cmd":"reboot"}"#, r#"{"cmd":5}"#] {
            assert!(matches!(Request::parse(bad), Err(Parse::Malformed(_))), "{bad}");
        }
        for (bad, says) in [
            (r#"{"cmd":"port_del"}"#, "name"),
            (r#"{"cmd":"fdb_add","mac":"zz","port":"a"}"#, "'zz' is not a MAC address"),
            (r#"{"cmd":"fdb_del","mac":"02:00:00:00:00:01","vlan":4095}"#, "0-4094"),
            (r#"{"cmd":"set_ageing","secs":0}"#, "1 to 1000000"),
            (r#"{"cmd":"stats","prot":"a"}"#, "prot"),
            (r#"{"cmd":"vlan_add","port":"a","vid":4095}"#, "vid 4095 is not a VLAN id"),
            (r#"{"cmd":"vlan_add","port":"a","vid":0}"#, "vid 0 is not a VLAN id"),
            (r#"{"cmd":"port_set","name":"a","isolated":"yes"}"#, "expected a boolean"),
            (r#"{"cmd":"port_set","name":"a","hairpn":true}"#, "unknown field `hairpn`"),
            (r#"{"cmd":"port_set","isolated":true}"#, "missing field `name`"),
            (r#"{"cmd":"port_del","name":"bad/name"}"#, "'bad/name' is not a valid interface name"),
            (r#"{"cmd":"port_set","name":"a b","isolated":true}"#, "'a b' is not a valid interface name"),
        ] {
            match Request::parse(bad) {
                Err(Parse::BadArgs(m)) => assert!(m.contains(says), "{bad}: {m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
