//! Why a port could not be opened or run.

use std::io;

/// Opening or running a port failed. Each message names the interface and,
/// where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("no interface named '{0}' in this network namespace (check `ip link`, or run the daemon with --netns)")]
    NoSuchInterface(String),
    #[error(
        "interface '{name}' already has a master ({master}): detach it first with `ip link set {name} nomaster`, or frames would loop"
    )]
    HasMaster { name: String, master: String },
    #[error("interface '{name}' is a {kind}, not an Ethernet port userbridge can attach to")]
    NotEthernet { name: String, kind: String },
    #[error(
        "interface '{name}' is already a port of another userbridge ({holder}): detach it there (`userbridge port del {name}`) or stop that daemon"
    )]
    Claimed { name: String, holder: String },
    #[error(
        "interface '{name}' already exists (a {kind}): the host port is a new interface of the daemon's own; delete it (`ip link del {name}`) or choose another name"
    )]
    Exists { name: String, kind: String },
    #[error("a {backend} port cannot be opened here: {why}")]
    Unsupported { backend: &'static str, why: &'static str },
    #[error("{what} on '{name}': {source}{hint}")]
    Io { what: &'static str, name: String, source: io::Error, hint: &'static str },
    #[error("{0}")]
    Netlink(#[from] ub_netlink::Error),
    #[error(transparent)]
    BadRx(#[from] crate::afpacket::BadRxConfig),
}

impl PortError {
    pub(crate) fn io(what: &'static str, name: &str, source: io::Error) -> PortError {
        let hint = match errno(&source) {
            Some(libc::EPERM) | Some(libc::EACCES) => " (needs CAP_NET_RAW and CAP_NET_ADMIN: run as root)",
            Some(libc::ENOMEM) => " (no memory for the ring: lower --ring-slots)",
            Some(libc::EMFILE) => {
                " (the daemon's open-files limit is reached: a port holds about two descriptors per reader; \
                 raise the hard limit, LimitNOFILE= under systemd, or lower --readers)"
            }
            Some(libc::ENFILE) => " (the system's open-files limit is reached: fs.file-max)",
            _ => "",
        };
        PortError::Io { what, name: name.to_string(), source, hint }
    }
}

/// The errno behind `e`, also where it wraps a netlink error (a port
/// opened from another thread's namespace). A wrapped [`PortError`] has
/// its hint in its own message already: none.
fn errno(e: &io::Error) -> Option<i32> {
    if let Some(n) = e.raw_os_error() {
        return Some(n);
    }
    let inner = e.get_ref()?;
    if let Some(n) = inner.downcast_ref::<ub_netlink::Error>() {
        return n.raw_os_error();
    }
    inner.downcast_ref::<io::Error>().and_then(errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_says_which_limit_even_when_wrapped() {
        let emfile = || io::Error::from_raw_os_error(libc::EMFILE);
        for source in [emfile(), io::Error::other(emfile())] {
            let m = PortError::io("opening", "p1", source).to_string();
            assert!(m.contains("open-files limit is reached") && m.contains("LimitNOFILE"), "{m}");
        }
        let m = PortError::io("opening", "p1", io::Error::from_raw_os_error(libc::ENFILE)).to_string();
        assert!(m.contains("fs.file-max"), "{m}");
    }
}
