//! Synchronous rtnetlink (links, veth pairs, addresses) and network
//! namespaces (`ip netns` compatible: bind mounts under /run/netns), so the
//! daemon and the lab work where iproute2 is absent.

mod netns;
mod rtnl;
mod sys;

pub use ipnet::IpNet;
pub use netns::{NETNS_RUN_DIR, NetNs};
pub use rtnl::{Link, LinkEvent, LinkWatcher, Route, Rtnl};

/// A netlink or namespace operation failed; the message names the object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{what}: kernel said: {source}")]
    Kernel { what: String, source: std::io::Error },
    #[error("{what}: malformed netlink reply: {detail}")]
    Decode { what: String, detail: String },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { what: what.into(), source }
    }
    /// The errno behind this error, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::Kernel { source, .. } => source.raw_os_error(),
            Error::Decode { .. } => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
