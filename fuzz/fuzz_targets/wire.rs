//! Any byte string through every view: no panic, and the classifier agrees
//! with etherparse on what it accepts.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ub_wire::{ArpPacket, EthernetFrame, classify};

fuzz_target!(|data: &[u8]| {
    let tci = data.first().map(|&b| u16::from(b) << 4);
    if let Ok(c) = classify(data, if data.len() % 2 == 0 { tci } else { None }) {
        let (h, _) =
            etherparse::Ethernet2Header::from_slice(data).expect("classify accepted a frame etherparse cannot read");
        assert_eq!(c.dst.0, h.destination);
        assert_eq!(c.src.0, h.source);
        assert!(c.vid < 4096);
    }
    if let Ok(f) = EthernetFrame::new_checked(data) {
        let _ = f.tags();
        let _ = f.payload();
    }
    if let Ok(a) = ArpPacket::new_checked(data) {
        let _ = (a.op(), a.sender_ip(), a.target_mac());
    }
});
