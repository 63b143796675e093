//! Following qdisc changes (RTNLGRP_TC) without blocking: a port hears that
//! a qdisc came or went on its interface and looks again
//! (`Rtnl::ingress_qdisc`).

use crate::{Error, Result};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::os::fd::{AsFd, BorrowedFd};

const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
/// The legacy group mask of RTNLGRP_TC.
const RTMGRP_TC: u32 = 0x8;

/// What the notifications read since the last call say about one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcNews {
    Nothing,
    /// A qdisc of the link was added, changed or deleted.
    Changed,
    /// Notifications were lost (the queue overflowed): anything may have.
    Lost,
}

/// A non-blocking subscription to qdisc notifications in the calling
/// thread's namespace; its descriptor becomes readable when one arrives.
#[derive(Debug)]
pub struct TcWatcher {
    sock: Socket,
    buf: Vec<u8>,
}

impl TcWatcher {
    pub fn open() -> Result<TcWatcher> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| Error::io("opening a route netlink socket", e))?;
        sock.bind(&SocketAddr::new(0, RTMGRP_TC)).map_err(|e| Error::io("subscribing to qdisc notifications", e))?;
        sock.set_non_blocking(true).map_err(|e| Error::io("making a netlink socket non-blocking", e))?;
        Ok(TcWatcher { sock, buf: vec![0u8; 1 << 15] })
    }

    /// Reads every notification waiting; what they say about link `index`.
    pub fn drain(&mut self, index: u32) -> TcNews {
        let mut news = TcNews::Nothing;
        loop {
            match self.sock.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => {
                    if qdisc_of(&self.buf[..n.min(self.buf.len())], index) {
                        news = TcNews::Changed;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return news,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // ENOBUFS: some were dropped; the socket goes on.
                Err(_) => news = TcNews::Lost,
            }
            if news == TcNews::Lost {
                // Whatever else waits is read next time; the caller looks anyway.
                return news;
            }
        }
    }
}

impl AsFd for TcWatcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// Whether a datagram of notifications holds a qdisc message of link `index`.
fn qdisc_of(buf: &[u8], index: u32) -> bool {
    let mut off = 0;
    // nlmsghdr (16 bytes), then tcmsg: family, two pad bytes... and the ifindex at 4.
    while off + 24 <= buf.len() {
        let word = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let len = word(off) as usize;
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if len < 24 || off + len > buf.len() {
            break;
        }
        if matches!(kind, RTM_NEWQDISC | RTM_DELQDISC) && word(off + 20) == index {
            return true;
        }
        off += (len + 3) & !3;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, index: u32) -> Vec<u8> {
        let mut m = vec![0u8; 36];
        m[..4].copy_from_slice(&36u32.to_ne_bytes());
        m[4..6].copy_from_slice(&kind.to_ne_bytes());
        m[20..24].copy_from_slice(&index.to_ne_bytes());
        m
    }

    #[test]
    fn only_a_qdisc_message_of_the_link_counts() {
        assert!(qdisc_of(&msg(RTM_NEWQDISC, 7), 7));
        assert!(qdisc_of(&msg(RTM_DELQDISC, 7), 7));
        assert!(!qdisc_of(&msg(RTM_NEWQDISC, 8), 7), "another link's");
        assert!(!qdisc_of(&msg(44, 7), 7), "a filter (RTM_NEWTFILTER)");
        let two = [msg(RTM_NEWQDISC, 8), msg(RTM_NEWQDISC, 7)].concat();
        assert!(qdisc_of(&two, 7), "the second message of a datagram");
        assert!(!qdisc_of(&two[..40], 7), "a message cut short");
    }
}
