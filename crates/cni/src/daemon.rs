//! Talking to the userbridge daemon, only through the control protocol.

use crate::conf::NetConf;
use crate::error::{CniError, code};
use std::path::PathBuf;
use std::time::Duration;
use ub_proto::{BridgeAdd, Call, Client, ClientError, Host, HostInfo, IfName};

/// How long a call keeps retrying a daemon that is busy with other clients
/// (many pods starting at once); then it is "try again later".
const BUSY_PATIENCE: Duration = Duration::from_secs(30);

/// The daemon's socket for a configuration.
pub fn socket_of(conf: &NetConf) -> PathBuf {
    conf.socket.clone().unwrap_or_else(|| PathBuf::from(ub_proto::DEFAULT_SOCKET))
}

/// A client error as a CNI error: a daemon that is not there (or went away
/// mid-call) is "try again later", code 11; a refusal is the daemon's own
/// message.
pub fn cni_error(e: ClientError) -> CniError {
    match e {
        ClientError::Unreachable { .. } | ClientError::Io { .. } | ClientError::Busy { .. } => {
            CniError::new(code::TRY_AGAIN_LATER, format!("userbridge daemon: {e}"))
        }
        ClientError::Refused(msg) => CniError::internal(format!("userbridge daemon refused: {msg}")),
        ClientError::Malformed { .. } => CniError::internal(e.to_string()),
    }
}

/// A connection to the daemon of `conf`.
#[derive(Debug)]
pub struct Daemon {
    client: Client,
}

impl Daemon {
    pub fn connect(conf: &NetConf) -> Result<Daemon, CniError> {
        let socket = socket_of(conf);
        Client::connect(&socket).map(|client| Daemon { client }).map_err(cni_error)
    }

    pub fn call<C: Call + Clone>(&mut self, req: C) -> Result<C::Reply, CniError> {
        self.call_raw(req).map_err(cni_error)
    }

    /// Sends `req`, patient with a busy daemon for [`BUSY_PATIENCE`].
    fn call_raw<C: Call + Clone>(&mut self, req: C) -> Result<C::Reply, ClientError> {
        self.client.call_patiently(req, BUSY_PATIENCE)
    }

    /// The configuration's bridge, made (with its host port, and the
    /// configuration's MTU) if the daemon has none of that name, as the
    /// reference plugin makes its bridge on the first ADD. Its host port, if
    /// it has one, must be in this network namespace (code 7 says what to
    /// fix if not).
    pub fn bridge(&mut self, conf: &NetConf) -> Result<Option<Host>, CniError> {
        let name = bridge_name(conf)?;
        let add = BridgeAdd {
            mtu: u32::try_from(conf.mtu).ok().filter(|m| *m > 0),
            network: Some(conf.name.clone()),
            if_missing: true,
            ..BridgeAdd::named(name)
        };
        let made = self.call_raw(add).map_err(|e| match e {
            ClientError::Refused(msg) => CniError::new(
                code::INVALID_NETWORK_CONFIG,
                format!("bridge {:?} at the daemon at {}: {msg}", conf.bridge, socket_of(conf).display()),
            ),
            other => cni_error(other),
        })?;
        let Some(host) = made.host else { return Ok(None) };
        if !ub_netlink::Rtnl::open()?.has_link(&host.name, host.mac.0)? {
            return Err(CniError::new(
                code::INVALID_NETWORK_CONFIG,
                format!(
                    "the daemon's bridge {} is not in this network namespace: run the runtime (and so the plugin) where the daemon runs",
                    host.name
                ),
            ));
        }
        Ok(Some(host))
    }
}

impl Daemon {
    /// The configuration's bridge's host port, which must be there (CHECK
    /// makes nothing).
    pub fn host(&mut self, conf: &NetConf) -> Result<Host, CniError> {
        let bridge = Some(bridge_name(conf)?);
        self.call_raw(HostInfo { bridge }).map_err(|e| match e {
            ClientError::Refused(msg) => CniError::internal(format!("bridge {}: {msg}", conf.bridge)),
            other => cni_error(other),
        })
    }
}

/// The configuration's `bridge`, as an interface name (checked by `validate`).
pub fn bridge_name(conf: &NetConf) -> Result<IfName, CniError> {
    IfName::new(&conf.bridge).map_err(|e| CniError::new(code::INVALID_NETWORK_CONFIG, format!("\"bridge\": {e}")))
}
