//! A sequence of frames on four in-memory ports through the whole per-frame
//! path (classify, learn, decide, storm control, batching): no panic, no
//! frame back out of its ingress port, counters add up.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use ub_datapath::{Backend, Forwarder, Switch};
use ub_fdb::FdbConfig;
use ub_port::{PortTx, RxFrame, SendOutcome, TxFrame};

/// Records which port each frame left by.
#[derive(Debug)]
struct Tap(u16, Arc<Mutex<Vec<(u16, usize)>>>, AtomicU64);

impl PortTx for Tap {
    fn send_batch(&self, frames: &[TxFrame<'_>]) -> SendOutcome {
        let mut log = self.1.lock().unwrap();
        let mut bytes = 0;
        for f in frames {
            log.push((self.0, f.wire_len()));
            bytes += f.wire_len() as u64;
        }
        self.2.fetch_add(frames.len() as u64, Relaxed);
        SendOutcome { sent: frames.len(), bytes, failed: 0 }
    }
    fn mtu(&self) -> u32 {
        1500
    }
}

fuzz_target!(|data: &[u8]| {
    let sw = Switch::new(FdbConfig { max_per_port: 8, max_entries: 16, ..FdbConfig::default() });
    let log = Arc::new(Mutex::new(Vec::new()));
    for p in 0..4u16 {
        sw.add_port(&format!("m{p}"), Backend::Mem, Box::new(Tap(p, log.clone(), AtomicU64::new(0)))).unwrap();
    }
    let mut fwd: Vec<Forwarder> = (0..4).map(Forwarder::new).collect();
    // Input: [ingress, len, bytes...] repeated; time advances 1 ms per frame.
    let (mut rest, mut now) = (data, 0u64);
    while rest.len() >= 2 {
        let (ingress, len) = ((rest[0] % 4) as u16, (rest[1] as usize).min(rest.len() - 2));
        let frame = &rest[2..2 + len];
        rest = &rest[2 + len..];
        now += 1;
        log.lock().unwrap().clear();
        let rx = [RxFrame { data: frame, vnet: None, offloaded_tag: None, wire_len: frame.len() as u32 }];
        fwd[ingress as usize].forward(&sw, &rx, now);
        for (out, _) in log.lock().unwrap().iter() {
            assert_ne!(*out, ingress, "a frame went back out of its ingress port");
        }
    }
    let snap = sw.snapshot();
    assert!(sw.fdb.learned_len() <= 16);
    for p in &snap {
        assert!(p.fdb_learned <= 8);
    }
});
