//! TAP port: `/dev/net/tun` with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and
//! checksum/TSO offloads on, so GSO super-frames pass as they do on veth
//! (IFF_MULTI_QUEUE for a queue per reader). The interface exists while the
//! port is open. The host port (the pods' gateway, [`crate::host`]) is one.

use crate::{Health, PortError, PortRx, PortTx, RxFrame, SendOutcome, TxFrame, VnetHdr, kernel_name, sys};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use ub_proto::IfName;

/// Frames read per `recv_batch` (tun has no batched read).
const TAP_BATCH: usize = 16;
/// A vnet header plus the largest GSO super-frame.
const SLOT: usize = VnetHdr::LEN + 65_550;

/// What was found out about a TAP interface when it was opened.
#[derive(Debug, Clone)]
pub struct TapInfo {
    /// The name the kernel gave it.
    pub name: IfName,
    pub ifindex: u32,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
}

/// Creates (or attaches to a persistent) TAP interface `name`, with one queue.
/// Returns its receive half (in a vector, as every backend's), its transmit
/// half and what the kernel made of it.
pub fn open(name: &IfName) -> Result<(Vec<TapRx>, TapTx, TapInfo), PortError> {
    open_queues(name, 1, false, Vec::new())
}

/// Creates (or attaches to) TAP interface `name` with `queues` queues
/// (IFF_MULTI_QUEUE when `multi_queue`, which a persistent interface must be
/// opened with as it was made): a receive half per queue, for a reader each
/// (the kernel spreads what the host sends over the queues by flow), and
/// one transmit half that writes on the queue of the CPU it runs on.
/// `inherited`: the queues a daemon before this one handed over, used
/// instead of attaching new ones (what waits in them is read here).
pub fn open_queues(
    name: &IfName,
    queues: usize,
    multi_queue: bool,
    inherited: Vec<OwnedFd>,
) -> Result<(Vec<TapRx>, TapTx, TapInfo), PortError> {
    let mut fds: Vec<Arc<OwnedFd>> = inherited.into_iter().map(Arc::new).collect();
    let mut actual = name.to_string();
    let more = if fds.is_empty() { queues.max(1) } else { 0 };
    for _ in 0..more {
        let (fd, got) = sys::tun_open_tap(&actual, multi_queue || queues > 1).map_err(|e| {
            let e = if e.raw_os_error() == Some(libc::ENOENT) {
                io::Error::new(e.kind(), "/dev/net/tun is missing (modprobe tun)")
            } else {
                e
            };
            PortError::io("creating the TAP interface", name, e)
        })?;
        actual = got;
        fds.push(Arc::new(fd));
    }
    let mut nl = ub_netlink::Rtnl::open()?;
    let link = nl.link_by_name(&actual)?.ok_or_else(|| PortError::NoSuchInterface(actual.clone()))?;
    let info = TapInfo { name: kernel_name(actual)?, ifindex: link.index, mtu: link.mtu, mac: link.mac };
    let rx = fds
        .iter()
        .map(|fd| TapRx {
            fd: fd.clone(),
            slots: vec![0u8; SLOT * TAP_BATCH].into_boxed_slice(),
            lens: [0; TAP_BATCH],
            ifindex: info.ifindex,
            name: info.name.to_string(),
        })
        .collect();
    Ok((rx, TapTx { fds, mtu: AtomicU32::new(info.mtu) }, info))
}

impl TapTx {
    /// Makes the interface persistent (it outlives its queues, without
    /// carrier, until deleted) or not.
    pub fn set_persist(&self, on: bool) -> io::Result<()> {
        match self.fds.first() {
            Some(fd) => sys::tun_set_persist(fd.as_fd(), on),
            None => Ok(()),
        }
    }
}

/// Receive half: up to [`TAP_BATCH`] reads per call into fixed slots.
#[derive(Debug)]
pub struct TapRx {
    fd: Arc<OwnedFd>,
    slots: Box<[u8]>,
    lens: [usize; TAP_BATCH],
    ifindex: u32,
    name: String,
}

impl PortRx for TapRx {
    fn recv_batch<'a>(&'a mut self, out: &mut Vec<RxFrame<'a>>) -> io::Result<()> {
        out.clear();
        let mut n = 0;
        for slot in self.slots.chunks_exact_mut(SLOT) {
            match sys::read_nb(self.fd.as_fd(), slot)? {
                Some(len) => {
                    self.lens[n] = len;
                    n += 1;
                }
                None => break,
            }
        }
        for (slot, &len) in self.slots.chunks_exact(SLOT).zip(&self.lens[..n]) {
            if len < VnetHdr::LEN {
                continue;
            }
            let vnet = VnetHdr::from_bytes(slot[..VnetHdr::LEN].try_into().expect("10 bytes"));
            let data = &slot[VnetHdr::LEN..len];
            out.push(RxFrame {
                data,
                vnet: Some(vnet),
                offloaded_tag: None,
                wire_len: u32::try_from(data.len()).unwrap_or(u32::MAX),
            });
        }
        Ok(())
    }

    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }

    fn check(&mut self) -> Health {
        crate::link_health(self.ifindex, &self.name)
    }
}

/// Transmit half: one `writev` per frame (vnet header, frame, tag spliced
/// in), on the queue of the CPU the caller runs on.
#[derive(Debug)]
pub struct TapTx {
    fds: Vec<Arc<OwnedFd>>,
    mtu: AtomicU32,
}

impl TapTx {
    /// Follows an MTU change of the interface.
    pub fn set_mtu(&self, mtu: u32) {
        self.mtu.store(mtu, Ordering::Relaxed);
    }
}

impl PortTx for TapTx {
    fn send_batch(&self, frames: &[TxFrame<'_>]) -> SendOutcome {
        let mut out = SendOutcome::default();
        let q = if self.fds.len() > 1 { rustix::thread::sched_getcpu() % self.fds.len() } else { 0 };
        let fd = &self.fds[q];
        for f in frames {
            let v = f.wire_vnet().to_bytes();
            let (head, (tags, t), tail) = f.parts();
            let r = sys::writev(fd.as_fd(), &[&v, head, &tags[..t], tail]);
            match r {
                Ok(_) => {
                    out.sent += 1;
                    out.bytes += f.wire_len() as u64;
                }
                Err(_) => out.failed += 1,
            }
        }
        out
    }

    fn mtu(&self) -> u32 {
        self.mtu.load(Ordering::Relaxed)
    }

    fn handover_fds(&self) -> io::Result<Vec<(crate::Role, OwnedFd)>> {
        self.fds.iter().map(|fd| Ok((crate::Role::Tap, fd.try_clone()?))).collect()
    }
}
