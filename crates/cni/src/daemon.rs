//! Talking to the userbridge daemon, only through the control protocol.

use crate::conf::NetConf;
use crate::error::{CniError, code};
use std::path::PathBuf;
use std::time::Duration;
use ub_proto::{Call, Client, ClientError, Host, HostInfo};

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

    /// The daemon's host port, which must be the configuration's `bridge`
    /// and be in this network namespace (code 7 says what to fix if not).
    pub fn host(&mut self, conf: &NetConf) -> Result<Host, CniError> {
        let socket = socket_of(conf);
        let host = self.call_raw(HostInfo {}).map_err(|e| match e {
            ClientError::Refused(msg) => CniError::new(
                code::INVALID_NETWORK_CONFIG,
                format!(
                    "the daemon at {} has no host port ({msg}): start it with --host-port {}",
                    socket.display(),
                    conf.bridge
                ),
            ),
            other => cni_error(other),
        })?;
        if host.name != conf.bridge {
            return Err(CniError::new(
                code::INVALID_NETWORK_CONFIG,
                format!(
                    "\"bridge\" is {:?} but the daemon at {} has host port {:?}: set \"bridge\" to it, or \"socket\" to the daemon of {:?}",
                    conf.bridge,
                    socket.display(),
                    host.name,
                    conf.bridge
                ),
            ));
        }
        if !ub_netlink::Rtnl::open()?.has_link(&host.name, host.mac.0)? {
            return Err(CniError::new(
                code::INVALID_NETWORK_CONFIG,
                format!(
                    "the daemon's host port {} is not in this network namespace: run the runtime (and so the plugin) where the daemon runs",
                    host.name
                ),
            ));
        }
        Ok(host)
    }
}
