//! The whole datapath on in-memory ports: no kernel, no namespaces.

use std::sync::Arc;
use std::time::Duration;
use ub_datapath::{DropKind, PortKind, ReaderHandle, Switch, spawn_reader};
use ub_fdb::FdbConfig;
use ub_port::mem::{self, MemPeer};
use ub_wire::Mac;

const T: Duration = Duration::from_millis(500);
const QUIET: Duration = Duration::from_millis(100);

struct Rig {
    sw: Arc<Switch>,
    peers: Vec<MemPeer>,
    _readers: Vec<ReaderHandle>,
}

fn rig(n: usize, mtu: u32) -> Rig {
    let sw = Arc::new(Switch::new(FdbConfig::default()));
    let mut peers = Vec::new();
    let mut readers = Vec::new();
    for i in 0..n {
        let (rx, tx, peer) = mem::port(mtu);
        let id = sw.add_port(&format!("m{i}"), PortKind::Mem, Box::new(tx)).unwrap();
        readers.push(spawn_reader(sw.clone(), id, Box::new(rx)).unwrap());
        peers.push(peer);
    }
    Rig { sw, peers, _readers: readers }
}

fn mac(n: u8) -> Mac {
    Mac([2, 0, 0, 0, 0, n])
}

fn frame(dst: Mac, src: Mac, len: usize) -> Vec<u8> {
    let mut f = dst.0.to_vec();
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(len.max(14), 0xab);
    f
}

impl Rig {
    /// Injects on port `i` and returns, per port, the frames it sent.
    fn exchange(&self, i: usize, f: Vec<u8>) -> Vec<Vec<Vec<u8>>> {
        self.peers[i].inject(f);
        std::thread::sleep(QUIET);
        self.peers.iter().map(|p| p.take_sent()).collect()
    }
    fn drops(&self, port: usize, k: DropKind) -> u64 {
        self.sw.port(port as u16).unwrap().counters.drops(k)
    }
}

#[test]
fn flood_then_learn_then_unicast_never_reflect() {
    let r = rig(3, 1500);
    // Unknown destination from port 0: flooded to 1 and 2, not back to 0.
    let f = frame(mac(2), mac(1), 60);
    let out = r.exchange(0, f.clone());
    assert_eq!(out[0].len(), 0);
    assert_eq!(out[1], vec![f.clone()]);
    assert_eq!(out[2], vec![f]);
    // The reply from port 1 is unicast to port 0 only: mac(1) was learned.
    let reply = frame(mac(1), mac(2), 60);
    let out = r.exchange(1, reply.clone());
    assert_eq!((out[0].len(), out[1].len(), out[2].len()), (1, 0, 0));
    assert_eq!(out[0][0], reply);
    // And now mac(2) is known too: unicast back to port 1.
    let out = r.exchange(0, frame(mac(2), mac(1), 60));
    assert_eq!((out[0].len(), out[1].len(), out[2].len()), (0, 1, 0));
    // A destination behind the ingress port is dropped, not reflected.
    let out = r.exchange(1, frame(mac(2), mac(9), 60));
    assert!(out.iter().all(Vec::is_empty));
    assert_eq!(r.drops(1, DropKind::SamePort), 1);
    let c = r.sw.port(0).unwrap().counters.snapshot();
    assert_eq!((c.rx_frames, c.tx_frames, c.flooded), (2, 1, 1));
    assert_eq!(r.sw.fdb.learned_len(), 3);
}

#[test]
fn broadcast_floods_everywhere_but_ingress() {
    let r = rig(4, 1500);
    let out = r.exchange(2, frame(Mac::BROADCAST, mac(3), 42));
    assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 1, 0, 1]);
}

#[test]
fn bad_frames_are_counted_with_reasons_and_never_learned() {
    let r = rig(2, 1500);
    for len in 0..14 {
        r.peers[0].inject(vec![0x02; len]);
    }
    let mut vlan_cut = frame(mac(2), mac(1), 14);
    vlan_cut[12..14].copy_from_slice(&[0x81, 0x00]);
    vlan_cut.push(0);
    r.peers[0].inject(vlan_cut);
    r.peers[0].inject(frame(mac(2), Mac::BROADCAST, 60));
    r.peers[0].inject(frame(mac(2), Mac::ZERO, 60));
    r.peers[0].inject(frame(mac(2), Mac([1, 0, 0x5e, 0, 0, 1]), 60));
    r.peers[0].inject(frame(Mac([1, 0x80, 0xc2, 0, 0, 0]), mac(1), 60));
    std::thread::sleep(QUIET);
    assert!(r.peers[1].take_sent().iter().all(|f| f[6..12] == mac(1).0), "only the STP frame's source may pass");
    assert_eq!(r.drops(0, DropKind::Runt), 14);
    assert_eq!(r.drops(0, DropKind::TruncatedVlan), 1);
    assert_eq!(r.drops(0, DropKind::InvalidSrc), 3);
    assert_eq!(r.drops(0, DropKind::LinkLocal), 1);
    assert_eq!(r.sw.fdb.learned_len(), 0);
    // The switch still forwards afterwards.
    assert_eq!(r.exchange(0, frame(mac(2), mac(1), 60))[1].len(), 1);
}

#[test]
fn too_big_for_egress_is_dropped_and_counted_there() {
    let r = rig(2, 1500);
    let out = r.exchange(0, frame(mac(2), mac(1), 1514));
    assert_eq!(out[1].len(), 1);
    let out = r.exchange(0, frame(mac(2), mac(1), 1515));
    assert_eq!(out[1].len(), 0);
    assert_eq!(r.drops(1, DropKind::TooBig), 1);
}

#[test]
fn vlans_are_separate_learning_domains_and_tags_survive() {
    let r = rig(3, 1500);
    let tagged = |dst: Mac, src: Mac, vid: u16| {
        let mut f = dst.0.to_vec();
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&vid.to_be_bytes());
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(64, 0);
        f
    };
    r.exchange(1, tagged(mac(1), mac(2), 10));
    // mac(2) is known in VLAN 10 only: VLAN 20 floods.
    let out = r.exchange(0, tagged(mac(2), mac(1), 20));
    assert_eq!((out[1].len(), out[2].len()), (1, 1));
    let f = tagged(mac(2), mac(1), 10);
    let out = r.exchange(0, f.clone());
    assert_eq!(out[1], vec![f]);
    assert_eq!(out[2].len(), 0);
    let entries = r.sw.fdb.entries(r.sw.now_ms());
    assert!(entries.iter().any(|e| e.vid == 10 && e.mac == mac(2) && e.port == 1));
}

#[test]
fn removed_port_is_flushed_and_others_keep_forwarding() {
    let r = rig(3, 1500);
    r.exchange(2, frame(Mac::BROADCAST, mac(3), 60));
    assert_eq!(r.sw.fdb.port_learned(2), 1);
    r.sw.remove_port(2);
    assert_eq!(r.sw.fdb.port_learned(2), 0);
    // Unknown again: floods, but only to the remaining port.
    let out = r.exchange(0, frame(mac(3), mac(1), 60));
    assert_eq!((out[1].len(), out[2].len()), (1, 0));
}

#[test]
fn bursts_larger_than_a_batch_all_arrive_in_order() {
    let r = rig(2, 1500);
    r.exchange(1, frame(Mac::BROADCAST, mac(2), 60));
    let n = 1000u32;
    for k in 0..n {
        let mut f = frame(mac(2), mac(1), 64);
        f[20..24].copy_from_slice(&k.to_be_bytes());
        r.peers[0].inject(f);
    }
    let mut got = Vec::new();
    while let Some(f) = r.peers[1].recv_sent(T) {
        got.push(u32::from_be_bytes(f[20..24].try_into().unwrap()));
        if got.len() == n as usize {
            break;
        }
    }
    assert_eq!(got, (0..n).collect::<Vec<_>>());
}

#[derive(Debug, Default)]
struct Collect(std::sync::Mutex<Vec<Vec<u8>>>);

impl ub_datapath::MirrorSink for Collect {
    fn offer(&self, f: &ub_port::TxFrame<'_>) {
        self.0.lock().unwrap().push(f.to_wire_vec());
    }
}

#[test]
fn mirror_copies_both_directions_to_a_port_or_a_sink() {
    let r = rig(4, 1500);
    r.exchange(1, frame(Mac::BROADCAST, mac(2), 60));
    // Mirror port 0 to port 3: what 0 receives and what it sends.
    r.sw.set_mirror(0, Some(ub_datapath::MirrorTo::Port(3)));
    let to_b = frame(mac(2), mac(1), 60);
    let out = r.exchange(0, to_b.clone());
    assert_eq!(out[3], vec![to_b.clone()], "received on 0, mirrored to 3");
    let to_a = frame(mac(1), mac(2), 60);
    let out = r.exchange(1, to_a.clone());
    assert_eq!(out[0], vec![to_a.clone()]);
    assert_eq!(out[3], vec![to_a.clone()], "sent on 0, mirrored to 3");
    // A sink instead; then off.
    let sink = std::sync::Arc::new(Collect::default());
    r.sw.set_mirror(0, Some(ub_datapath::MirrorTo::Sink(sink.clone())));
    let out = r.exchange(0, to_b.clone());
    assert!(out[3].is_empty());
    assert_eq!(*sink.0.lock().unwrap(), vec![to_b.clone()]);
    r.sw.set_mirror(0, None);
    r.exchange(0, to_b);
    assert_eq!(sink.0.lock().unwrap().len(), 1);
    assert!(r.sw.mirrors().is_empty());
}

#[test]
fn storm_control_limits_floods_per_class_but_not_known_unicast() {
    let r = rig(2, 1500);
    r.sw.set_storm_limits(ub_datapath::StormLimits { broadcast_pps: 100, multicast_pps: 0, unknown_unicast_pps: 100 });
    for _ in 0..1000 {
        r.peers[0].inject(frame(Mac::BROADCAST, mac(1), 60));
    }
    for _ in 0..500 {
        r.peers[0].inject(frame(Mac([0x01, 0, 0x5e, 0, 0, 1]), mac(1), 60));
    }
    std::thread::sleep(QUIET * 3);
    let passed = r.peers[1].take_sent();
    let bcast = passed.iter().filter(|f| f[..6] == [0xff; 6]).count();
    let mcast = passed.len() - bcast;
    // Burst of 10, plus 100/s for the few hundred ms this takes.
    assert!((10..100).contains(&bcast), "{bcast} broadcasts passed");
    assert_eq!(mcast, 500, "multicast has no limit here");
    assert_eq!(r.drops(0, DropKind::StormBroadcast), 1000 - bcast as u64);
    // Known unicast is never limited.
    r.exchange(1, frame(Mac::BROADCAST, mac(2), 60));
    for _ in 0..1000 {
        r.peers[0].inject(frame(mac(2), mac(1), 60));
    }
    std::thread::sleep(QUIET * 3);
    assert_eq!(r.peers[1].take_sent().len(), 1000);
}

#[test]
fn a_flapping_source_is_pinned_and_its_looped_copies_dropped() {
    let r = rig(3, 1500);
    r.exchange(0, frame(Mac::BROADCAST, mac(1), 60));
    // mac(1) seen alternately on ports 1 and 0, as when a loop returns its frames.
    for k in 0..6 {
        r.exchange(1 - (k % 2), frame(Mac::BROADCAST, mac(1), 60));
    }
    let fdb = &r.sw.fdb;
    assert_eq!(fdb.stats.flaps.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(fdb.lookup(0, mac(1), r.sw.now_ms()), Some(0), "pinned where it was before flapping");
    assert!(r.drops(1, DropKind::Flapping) >= 1);
    // Traffic to it goes to port 0 only.
    let out = r.exchange(2, frame(mac(1), mac(3), 60));
    assert_eq!((out[0].len(), out[1].len()), (1, 0));
}

#[test]
fn a_found_loop_flushes_both_its_ports_then_once_more_after_the_frames_in_flight() {
    let r = rig(3, 1500);
    let (sw, fdb) = (&r.sw, &r.sw.fdb);
    // mac(1) lives on port 0; a looped copy of its frame came in on port 1,
    // one end of a loop between ports 1 and 2.
    r.exchange(0, frame(Mac::BROADCAST, mac(1), 60));
    r.exchange(1, frame(Mac::BROADCAST, mac(1), 60));
    assert_eq!(fdb.lookup(0, mac(1), sw.now_ms()), Some(1));
    // The probe sent out of port 1 comes back in on port 2: port 2 is blocked,
    // and what either end of the loop learned is forgotten.
    sw.loop_guard.set_mode(ub_datapath::LoopDetect::Always);
    sw.loop_tick(sw.now_ms());
    let probe = r.peers[1].take_sent().pop().expect("a probe out of port 1");
    r.peers.iter().for_each(|p| drop(p.take_sent()));
    r.exchange(2, probe);
    assert_eq!(sw.port(2).unwrap().state(), ub_datapath::PortState::Blocked);
    assert_eq!(fdb.lookup(0, mac(1), sw.now_ms()), None, "the looped copy's entry was flushed");
    // A copy the loop still had in flight arrives after the block and teaches
    // port 1 again; the next tick after the frames have drained forgets it.
    r.exchange(1, frame(Mac::BROADCAST, mac(1), 60));
    assert_eq!(fdb.lookup(0, mac(1), sw.now_ms()), Some(1));
    sw.loop_tick(sw.now_ms() + 1_000);
    assert_eq!(fdb.lookup(0, mac(1), sw.now_ms()), None, "flushed once more after the block");
    // Its own next frame puts it back home, and nothing flushes it again.
    r.exchange(0, frame(Mac::BROADCAST, mac(1), 60));
    sw.loop_tick(sw.now_ms() + 2_000);
    assert_eq!(fdb.lookup(0, mac(1), sw.now_ms()), Some(0));
}
