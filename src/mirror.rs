//! Port mirroring to a pcap file: the datapath hands copies to a bounded
//! queue (never blocking; a full queue drops and counts), a writer thread
//! writes them with `pcap-file` until the file reaches its size cap. The file
//! is unbuffered, so `tcpdump -r` sees every frame as soon as it is counted.

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use ub_port::TxFrame;

/// Frames queued for the writer at most.
const QUEUE: usize = 4096;

/// A mirror target writing a pcap file.
#[derive(Debug)]
pub struct PcapSink {
    pub path: PathBuf,
    pub max_bytes: u64,
    queue: Sender<(Duration, Vec<u8>)>,
    pub written: Arc<AtomicU64>,
    pub bytes: Arc<AtomicU64>,
    /// Frames not written: queue full, or the file at its cap.
    pub dropped: Arc<AtomicU64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl PcapSink {
    /// Creates (truncates) `path` and starts the writer.
    pub fn create(path: &Path, max_bytes: u64) -> Result<Arc<PcapSink>, String> {
        let file = std::fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let mut w = pcap_file::pcap::PcapWriter::new(file)
            .map_err(|e| format!("writing the pcap header to {}: {e}", path.display()))?;
        let (tx, rx): (_, Receiver<(Duration, Vec<u8>)>) = bounded(QUEUE);
        let (written, bytes, dropped) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(24)), Arc::new(AtomicU64::new(0)));
        let thread = std::thread::Builder::new()
            .name("mirror-pcap".into())
            .spawn({
                let (written, bytes, dropped) = (written.clone(), bytes.clone(), dropped.clone());
                move || {
                    // Ends when the sink (the only sender) is dropped.
                    for (ts, frame) in rx {
                        let size = 16 + frame.len() as u64;
                        if bytes.load(Relaxed) + size > max_bytes {
                            dropped.fetch_add(1, Relaxed);
                            continue;
                        }
                        let pkt = pcap_file::pcap::PcapPacket::new(ts, frame.len() as u32, &frame);
                        if w.write_packet(&pkt).is_err() {
                            dropped.fetch_add(1, Relaxed);
                            continue;
                        }
                        bytes.fetch_add(size, Relaxed);
                        written.fetch_add(1, Relaxed);
                    }
                }
            })
            .map_err(|e| format!("starting the pcap writer: {e}"))?;
        Ok(Arc::new(PcapSink {
            path: path.to_path_buf(),
            max_bytes,
            queue: tx,
            written,
            bytes,
            dropped,
            thread: Mutex::new(Some(thread)),
        }))
    }
}

impl ub_datapath::MirrorSink for PcapSink {
    fn offer(&self, f: &TxFrame<'_>) {
        if self.bytes.load(Relaxed) >= self.max_bytes {
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        match self.queue.try_send((ts, f.to_wire_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

impl Drop for PcapSink {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has written what is queued.
        let (tx, _) = bounded(0);
        drop(std::mem::replace(&mut self.queue, tx));
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}
