//! Why a call failed: Docker shows the message to the user.

use crate::publish::PublishError;
use crate::rules::RulesError;
use crate::state::Store;
use std::path::PathBuf;
use ub_proto::ClientError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{method}: a malformed request: {detail}")]
    BadRequest { method: String, detail: String },
    #[error("{0}")]
    Refused(String),
    #[error("userbridge daemon: {0}")]
    Daemon(#[from] ClientError),
    #[error("{0}")]
    Netlink(#[from] ub_netlink::Error),
    #[error("the driver's state file {path}: {source}")]
    State { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("the node's iptables rules: {0}")]
    Rules(#[from] RulesError),
}

/// An id as the driver's messages and logs show it: its first 12 characters.
pub(crate) fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Writes the state file, as a call's error when it cannot be written.
pub(crate) fn save(store: &Store) -> Result<(), DriverError> {
    store.save().map_err(|source| DriverError::State { path: store.path().into(), source })
}
