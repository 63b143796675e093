//! Notice of any change to the namespace's nftables ruleset (tables,
//! chains, rules, sets): iptables-nft, nft and firewalld all change it
//! through nf_tables, which tells the NFNLGRP_NFTABLES group.

use crate::{Error, Result};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

/// The nfnetlink multicast group of nf_tables changes (NFNLGRP_NFTABLES).
const NFNLGRP_NFTABLES: u32 = 7;

/// Subscribed to nf_tables changes in the calling thread's namespace.
#[derive(Debug)]
pub struct RulesetWatcher {
    sock: Socket,
    buf: Vec<u8>,
}

impl RulesetWatcher {
    /// `poll_every` bounds how long `wait` blocks.
    pub fn open(poll_every: std::time::Duration) -> Result<RulesetWatcher> {
        let mut sock =
            Socket::new(NETLINK_NETFILTER).map_err(|e| Error::io("opening a netfilter netlink socket", e))?;
        sock.bind(&SocketAddr::new(0, 1 << (NFNLGRP_NFTABLES - 1)))
            .map_err(|e| Error::io("subscribing to nftables notifications", e))?;
        crate::sys::set_recv_timeout(std::os::fd::AsFd::as_fd(&sock), poll_every)
            .map_err(|e| Error::io("setting a receive timeout", e))?;
        Ok(RulesetWatcher { sock, buf: vec![0u8; 1 << 16] })
    }

    /// Whether the ruleset changed (a notification came) before the timeout.
    /// A lost notification (the socket's buffer overran) counts as a change.
    pub fn wait(&mut self) -> Result<bool> {
        match self.sock.recv(&mut &mut self.buf[..], 0) {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(true),
            Err(e) => Err(Error::io("reading nftables notifications", e)),
        }
    }
}
