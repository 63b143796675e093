//! Port mirroring to a pcap file: the datapath hands copies to a bounded
//! queue (never blocking; a full queue drops and counts), a writer thread
//! writes them with `pcap-file` until the file reaches its size cap. The file
//! is unbuffered, so `tcpdump -r` sees every frame as soon as it is counted.
//!
//! The [`PcapSink`] the datapath holds is only the queue's sending end and
//! counters: dropping it (a reader may drop the last reference, after `mirror
//! del`) never waits for the disk. The writer thread belongs to the
//! [`PcapMirror`] the daemon keeps, which closes and joins it on the control
//! thread.

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use ub_port::TxFrame;

/// Frames queued for the writer at most.
const QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("cannot create {}: {source}", path.display())]
    Create { path: PathBuf, source: std::io::Error },
    #[error("writing the pcap header to {}: {detail}", path.display())]
    Header { path: PathBuf, detail: String },
    #[error("starting the pcap writer: {0}")]
    Thread(std::io::Error),
}

enum Msg {
    Frame(Duration, Vec<u8>),
    Close,
}

/// What the datapath offers mirrored frames to.
#[derive(Debug)]
pub struct PcapSink {
    pub path: PathBuf,
    pub max_bytes: u64,
    queue: Sender<Msg>,
    closed: AtomicBool,
    pub written: AtomicU64,
    pub bytes: AtomicU64,
    /// Frames not written: queue full, the file at its cap, or closed.
    pub dropped: AtomicU64,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Frame(..) => "Frame",
            Msg::Close => "Close",
        })
    }
}

/// A pcap mirror: the sink and its writer thread, joined on drop.
#[derive(Debug)]
pub struct PcapMirror {
    pub sink: Arc<PcapSink>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PcapMirror {
    /// Creates (truncates) `path` and starts the writer.
    pub fn create(path: &Path, max_bytes: u64) -> Result<PcapMirror, MirrorError> {
        let file =
            std::fs::File::create(path).map_err(|source| MirrorError::Create { path: path.to_path_buf(), source })?;
        let mut w = pcap_file::pcap::PcapWriter::new(file)
            .map_err(|e| MirrorError::Header { path: path.to_path_buf(), detail: e.to_string() })?;
        let (tx, rx): (_, Receiver<Msg>) = bounded(QUEUE);
        let sink = Arc::new(PcapSink {
            path: path.to_path_buf(),
            max_bytes,
            queue: tx,
            closed: AtomicBool::new(false),
            written: AtomicU64::new(0),
            bytes: AtomicU64::new(24),
            dropped: AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("mirror-pcap".into())
            .spawn({
                let sink = sink.clone();
                move || {
                    // Ends at Close, or when every sender is gone.
                    for msg in rx {
                        let Msg::Frame(ts, frame) = msg else { return };
                        let size = 16 + frame.len() as u64;
                        if sink.bytes.load(Relaxed) + size > max_bytes {
                            sink.dropped.fetch_add(1, Relaxed);
                            continue;
                        }
                        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
                        if w.write_packet(&pcap_file::pcap::PcapPacket::new(ts, len, &frame)).is_err() {
                            sink.dropped.fetch_add(1, Relaxed);
                            continue;
                        }
                        sink.bytes.fetch_add(size, Relaxed);
                        sink.written.fetch_add(1, Relaxed);
                    }
                }
            })
            .map_err(MirrorError::Thread)?;
        Ok(PcapMirror { sink, thread: Some(thread) })
    }
}

impl Drop for PcapMirror {
    /// Stops taking frames, lets the writer finish what is queued, and joins it.
    fn drop(&mut self) {
        self.sink.closed.store(true, Relaxed);
        let _ = self.sink.queue.send(Msg::Close);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl ub_datapath::MirrorSink for PcapSink {
    fn offer(&self, f: &TxFrame<'_>) {
        if self.closed.load(Relaxed) || self.bytes.load(Relaxed) >= self.max_bytes {
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        match self.queue.try_send(Msg::Frame(ts, f.to_wire_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ub_datapath::MirrorSink;

    #[test]
    fn the_writer_ends_with_its_mirror_not_with_the_last_sink_reference() {
        let path = std::env::temp_dir().join(format!("ub-mirror-test-{}.pcap", std::process::id()));
        let m = PcapMirror::create(&path, 1 << 20).unwrap();
        // A reader's reference, as a batch holds one.
        let held = m.sink.clone();
        let frame = [0u8; 60];
        held.offer(&TxFrame::new(&frame, None, None));
        drop(m);
        // The writer has been joined with what was queued written; the reader's
        // reference is now inert, and dropping it (on a reader) waits for nothing.
        assert_eq!(held.written.load(Relaxed), 1);
        held.offer(&TxFrame::new(&frame, None, None));
        assert_eq!((held.written.load(Relaxed), held.dropped.load(Relaxed)), (1, 1));
        drop(held);
        let _ = std::fs::remove_file(&path);
    }
}
