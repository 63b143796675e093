//! In-memory ports: the whole datapath runs in unit tests and benches with
//! no kernel at all.

use crate::{BATCH, PortRx, PortTx, RxFrame, SendOutcome, TxFrame};
use crossbeam_channel::{Receiver, Sender, unbounded};
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// What a test puts on an in-memory port's wire.
#[derive(Debug)]
enum Msg {
    Frame(Vec<u8>),
    /// Makes the reader's `recv_batch` panic: how tests check that a
    /// reader's panic is caught, counted and survived.
    Panic,
}

/// A port whose far end is a test: frames injected with [`MemPeer::inject`]
/// are received by the switch; frames the switch sends are collected.
pub fn port(mtu: u32) -> (MemRx, MemTx, MemPeer) {
    let (in_tx, in_rx) = unbounded();
    let (out_tx, out_rx) = unbounded();
    (
        MemRx { rx: in_rx, held: Vec::with_capacity(BATCH) },
        MemTx { tx: out_tx, mtu },
        MemPeer { inject: in_tx, sent: out_rx },
    )
}

/// The test's end of an in-memory port.
#[derive(Debug, Clone)]
pub struct MemPeer {
    inject: Sender<Msg>,
    sent: Receiver<Vec<u8>>,
}

impl MemPeer {
    /// Delivers a frame to the switch as if it arrived on the wire.
    pub fn inject(&self, frame: Vec<u8>) {
        let _ = self.inject.send(Msg::Frame(frame));
    }
    /// Makes the reader that next receives on this port panic (a test hook).
    pub fn inject_panic(&self) {
        let _ = self.inject.send(Msg::Panic);
    }
    /// Frames the switch has sent out of this port so far.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        self.sent.try_iter().collect()
    }
    /// Waits up to `timeout` for the next frame sent out of this port.
    pub fn recv_sent(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.sent.recv_timeout(timeout).ok()
    }
}

/// Receive half of an in-memory port.
#[derive(Debug)]
pub struct MemRx {
    rx: Receiver<Msg>,
    held: Vec<Vec<u8>>,
}

impl PortRx for MemRx {
    fn recv_batch<'a>(&'a mut self, out: &mut Vec<RxFrame<'a>>) -> io::Result<()> {
        out.clear();
        self.held.clear();
        match self.rx.recv_timeout(Duration::from_millis(20)) {
            Ok(Msg::Frame(f)) => self.held.push(f),
            Ok(Msg::Panic) => panic!("injected by the test"),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => return Ok(()),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "in-memory peer gone"));
            }
        }
        while self.held.len() < BATCH {
            match self.rx.try_recv() {
                Ok(Msg::Frame(f)) => self.held.push(f),
                Ok(Msg::Panic) => panic!("injected by the test"),
                Err(_) => break,
            }
        }
        out.extend(self.held.iter().map(|d| RxFrame {
            data: d,
            vnet: None,
            offloaded_tag: None,
            wire_len: u32::try_from(d.len()).unwrap_or(u32::MAX),
        }));
        Ok(())
    }

    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// Transmit half of an in-memory port.
#[derive(Debug)]
pub struct MemTx {
    tx: Sender<Vec<u8>>,
    mtu: u32,
}

impl PortTx for MemTx {
    fn send_batch(&self, frames: &[TxFrame<'_>]) -> SendOutcome {
        let mut out = SendOutcome::default();
        for f in frames {
            out.bytes += f.wire_len() as u64;
            out.sent += 1;
            let _ = self.tx.send(f.to_wire_vec());
        }
        out
    }
    fn mtu(&self) -> u32 {
        self.mtu
    }
}

/// A receive half that replays the same frames forever, without allocating:
/// the load generator for benches.
#[derive(Debug)]
pub struct ReplayRx {
    frames: Vec<Vec<u8>>,
    pos: usize,
}

impl ReplayRx {
    pub fn new(frames: Vec<Vec<u8>>) -> ReplayRx {
        assert!(!frames.is_empty(), "ReplayRx needs at least one frame");
        ReplayRx { frames, pos: 0 }
    }
}

impl PortRx for ReplayRx {
    fn recv_batch<'a>(&'a mut self, out: &mut Vec<RxFrame<'a>>) -> io::Result<()> {
        out.clear();
        let n = self.frames.len();
        for k in 0..BATCH {
            let d = &self.frames[(self.pos + k) % n];
            out.push(RxFrame {
                data: d,
                vnet: None,
                offloaded_tag: None,
                wire_len: u32::try_from(d.len()).unwrap_or(u32::MAX),
            });
        }
        self.pos = (self.pos + BATCH) % n;
        Ok(())
    }
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// A transmit half that counts and discards: the sink for benches.
#[derive(Debug, Default)]
pub struct SinkTx {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
}

impl PortTx for SinkTx {
    fn send_batch(&self, frames: &[TxFrame<'_>]) -> SendOutcome {
        let bytes: u64 = frames.iter().map(|f| f.wire_len() as u64).sum();
        self.frames.fetch_add(frames.len() as u64, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        SendOutcome { sent: frames.len(), bytes, failed: 0 }
    }
    fn mtu(&self) -> u32 {
        1500
    }
}
