//! Synchronous rtnetlink (links, veth pairs, addresses) and network
//! namespaces (`ip netns` compatible: bind mounts under /run/netns), so the
//! daemon and the lab work where iproute2 is absent.

mod netns;
mod nft;
mod rtnl;
mod sys;
mod tc;

pub use ipnet::IpNet;
pub use netns::{NETNS_RUN_DIR, NetNs};
pub use nft::RulesetWatcher;
pub use rtnl::{Link, LinkEvent, LinkWatcher, Route, Rtnl, link_events};
pub use tc::{TcNews, TcWatcher};

/// FNV-1a, 64 bits, over the parts in order: the hash behind every name and
/// MAC userbridge derives from an id (the host port's MAC, a pod's veth, a
/// Docker endpoint's veth, a masquerade chain). It must give the same
/// answer in every release, which std's hasher does not promise.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A netlink or namespace operation failed; the message names the object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{what}: kernel said: {source}")]
    Kernel { what: String, source: std::io::Error },
    #[error("{what}: malformed netlink reply: {detail}")]
    Decode { what: String, detail: String },
    #[error("'{0}' is not a valid namespace name (use 1-64 of A-Z a-z 0-9 . _ -)")]
    BadNetnsName(String),
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { what: what.into(), source }
    }
    /// The errno behind this error, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::Kernel { source, .. } => source.raw_os_error(),
            Error::Decode { .. } | Error::BadNetnsName(_) => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    #[test]
    fn fnv1a_is_the_published_function() {
        // The FNV reference vectors: names derived from ids never change.
        assert_eq!(super::fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(super::fnv1a(&[b"foo", b"bar"]), super::fnv1a(&[b"foobar"]));
    }
}
