//! The whole datapath on in-memory ports: no kernel, no namespaces. The
//! forwarding path runs single-threaded on the test's own clock (`now`);
//! only the reader tests start threads, and they wait on conditions with a
//! deadline, never a fixed sleep.

use std::sync::Arc;
use std::time::Duration;
use ub_datapath::{
    Backend, DropKind, Forwarder, LoopDetect, Member, MirrorTo, PortState, Restart, StormLimits, Switch, spawn_reader,
    spawn_reader_at,
};
use ub_fdb::FdbConfig;
use ub_port::mem::{self, MemPeer};
use ub_port::{BATCH, RxFrame};
use ub_proto::PortPolicy;
use ub_wire::Mac;

/// Ports with a test at the far end, forwarded by hand at the test's time.
struct Rig {
    sw: Switch,
    peers: Vec<MemPeer>,
    fwd: Vec<Forwarder>,
    now: u64,
}

fn rig(n: usize, mtu: u32) -> Rig {
    let sw = Switch::new(FdbConfig::default());
    let mut peers = Vec::new();
    let mut fwd = Vec::new();
    for i in 0..n {
        let (_rx, tx, peer) = mem::port(mtu);
        let id = sw.add_port(&format!("m{i}"), Backend::Mem, Box::new(tx)).unwrap();
        fwd.push(Forwarder::new(id));
        peers.push(peer);
    }
    Rig { sw, peers, fwd, now: 1_000 }
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

fn rx(frames: &[Vec<u8>]) -> Vec<RxFrame<'_>> {
    frames
        .iter()
        .map(|d| RxFrame { data: d, vnet: None, offloaded_tag: None, wire_len: u32::try_from(d.len()).unwrap() })
        .collect()
}

impl Rig {
    /// `frames` arrive on port `i` as one batch (or several of `BATCH`);
    /// returns, per port, what it sent.
    fn send(&mut self, i: usize, frames: Vec<Vec<u8>>) -> Vec<Vec<Vec<u8>>> {
        for chunk in frames.chunks(BATCH) {
            self.fwd[i].forward(&self.sw, &rx(chunk), self.now);
        }
        self.peers.iter().map(|p| p.take_sent()).collect()
    }
    fn exchange(&mut self, i: usize, f: Vec<u8>) -> Vec<Vec<Vec<u8>>> {
        self.send(i, vec![f])
    }
    fn drops(&self, port: u16, k: DropKind) -> u64 {
        self.sw.port(port).unwrap().counters.drops(k)
    }
    fn policy(&self, port: u16, f: impl FnOnce(&mut PortPolicy)) {
        let mut p = self.sw.policy(port).unwrap().spec.clone();
        f(&mut p);
        self.sw.set_policy(port, p).unwrap();
    }
}

fn counts(out: &[Vec<Vec<u8>>]) -> Vec<usize> {
    out.iter().map(Vec::len).collect()
}

#[test]
fn flood_then_learn_then_unicast_never_reflect() {
    let mut r = rig(3, 1500);
    // Unknown destination from port 0: flooded to 1 and 2, not back to 0.
    let f = frame(mac(2), mac(1), 60);
    let out = r.exchange(0, f.clone());
    assert_eq!(out, vec![vec![], vec![f.clone()], vec![f]]);
    // The reply from port 1 is unicast to port 0 only: mac(1) was learned.
    let reply = frame(mac(1), mac(2), 60);
    assert_eq!(r.exchange(1, reply.clone()), vec![vec![reply], vec![], vec![]]);
    // And now mac(2) is known too: unicast back to port 1.
    assert_eq!(counts(&r.exchange(0, frame(mac(2), mac(1), 60))), [0, 1, 0]);
    // A destination behind the ingress port is dropped, not reflected.
    assert_eq!(counts(&r.exchange(1, frame(mac(2), mac(9), 60))), [0, 0, 0]);
    assert_eq!(r.drops(1, DropKind::SamePort), 1);
    let c = r.sw.port(0).unwrap().counters.snapshot();
    assert_eq!((c.rx_frames, c.tx_frames, c.flooded), (2, 1, 1));
    assert_eq!(r.sw.fdb.learned_len(), 3);
}

#[test]
fn broadcast_floods_everywhere_but_ingress() {
    let mut r = rig(4, 1500);
    assert_eq!(counts(&r.exchange(2, frame(Mac::BROADCAST, mac(3), 42))), [1, 1, 0, 1]);
}

#[test]
fn the_stage_reports_where_each_frame_goes_and_what_it_learned() {
    let r = rig(3, 1500);
    let mut fwd = Forwarder::new(0);
    let frames = [frame(mac(2), mac(1), 60), frame(Mac::BROADCAST, mac(1), 60)];
    let ports = r.sw.ports();
    let st = fwd.stage(&r.sw, &ports, &rx(&frames), 5);
    // Nothing was sent: the stage only decides.
    assert!(r.peers.iter().all(|p| p.take_sent().is_empty()));
    assert_eq!((st.to(0).len(), st.to(1).len(), st.to(2).len()), (0, 2, 2));
    // Learning is the stage's own: the FDB has the source before anything is sent.
    assert_eq!(r.sw.fdb.lookup(0, mac(1), 5), Some(0));
    assert_eq!(r.sw.fdb.stats.learned.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!((st.local.rx_frames, st.local.flooded), (2, 2));
    fwd.flush(&r.sw, &ports, st, 5);
    assert_eq!(r.peers[1].take_sent().len(), 2);
    // A station seen on another port moves, and says so.
    let frames = [frame(Mac::BROADCAST, mac(1), 60)];
    let _ = Forwarder::new(2).stage(&r.sw, &ports, &rx(&frames), 6);
    assert_eq!(r.sw.fdb.lookup(0, mac(1), 6), Some(2));
    assert_eq!(r.sw.fdb.stats.moved.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn bad_frames_are_counted_with_reasons_and_never_learned_or_forwarded() {
    let mut r = rig(2, 1500);
    let mut hostile: Vec<Vec<u8>> = (0..14).map(|len| vec![0x02; len]).collect();
    let mut vlan_cut = frame(mac(2), mac(1), 14);
    vlan_cut[12..14].copy_from_slice(&[0x81, 0x00]);
    vlan_cut.push(0);
    hostile.push(vlan_cut);
    hostile.push(frame(mac(2), Mac::BROADCAST, 60));
    hostile.push(frame(mac(2), Mac::ZERO, 60));
    hostile.push(frame(mac(2), Mac([1, 0, 0x5e, 0, 0, 1]), 60));
    hostile.push(frame(Mac([1, 0x80, 0xc2, 0, 0, 0]), mac(1), 60));
    let out = r.send(0, hostile);
    assert_eq!(counts(&out), [0, 0], "not one of them may pass: {out:?}");
    assert_eq!(r.drops(0, DropKind::Runt), 14);
    assert_eq!(r.drops(0, DropKind::TruncatedVlan), 1);
    assert_eq!(r.drops(0, DropKind::InvalidSrc), 3);
    assert_eq!(r.drops(0, DropKind::LinkLocal), 1);
    assert_eq!(r.sw.fdb.learned_len(), 0);
    // The switch still forwards afterwards.
    assert_eq!(counts(&r.exchange(0, frame(mac(2), mac(1), 60))), [0, 1]);
}

#[test]
fn too_big_for_egress_is_dropped_and_counted_there() {
    let mut r = rig(2, 1500);
    assert_eq!(counts(&r.exchange(0, frame(mac(2), mac(1), 1514))), [0, 1]);
    assert_eq!(counts(&r.exchange(0, frame(mac(2), mac(1), 1515))), [0, 0]);
    assert_eq!(r.drops(1, DropKind::TooBig), 1);
}

#[test]
fn vlans_are_separate_learning_domains_and_tags_survive() {
    let mut r = rig(3, 1500);
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
    assert_eq!(counts(&r.exchange(0, tagged(mac(2), mac(1), 20))), [0, 1, 1]);
    let f = tagged(mac(2), mac(1), 10);
    assert_eq!(r.exchange(0, f.clone()), vec![vec![], vec![f], vec![]]);
    let entries = r.sw.fdb.entries(r.now);
    assert!(entries.iter().any(|e| e.vid == 10 && e.mac == mac(2) && e.port == 1));
}

#[test]
fn removed_port_is_flushed_and_others_keep_forwarding() {
    let mut r = rig(3, 1500);
    r.exchange(2, frame(Mac::BROADCAST, mac(3), 60));
    assert_eq!(r.sw.fdb.port_learned(2), 1);
    r.sw.remove_port(2);
    assert_eq!(r.sw.fdb.port_learned(2), 0);
    // Unknown again: floods, but only to the remaining port.
    assert_eq!(counts(&r.exchange(0, frame(mac(3), mac(1), 60))), [0, 1, 0]);
}

#[test]
fn bursts_larger_than_a_batch_all_arrive_in_order() {
    let mut r = rig(2, 1500);
    r.exchange(1, frame(Mac::BROADCAST, mac(2), 60));
    let burst: Vec<Vec<u8>> = (0..1000u32)
        .map(|k| {
            let mut f = frame(mac(2), mac(1), 64);
            f[20..24].copy_from_slice(&k.to_be_bytes());
            f
        })
        .collect();
    let out = r.send(0, burst);
    let got: Vec<u32> = out[1].iter().map(|f| u32::from_be_bytes(f[20..24].try_into().unwrap())).collect();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
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
    let mut r = rig(4, 1500);
    r.exchange(1, frame(Mac::BROADCAST, mac(2), 60));
    // Mirror port 0 to port 3: what 0 receives and what it sends.
    r.sw.set_mirror(0, Some(MirrorTo::Port(3)));
    let to_b = frame(mac(2), mac(1), 60);
    let out = r.exchange(0, to_b.clone());
    assert_eq!(out[3], vec![to_b.clone()], "received on 0, mirrored to 3");
    let to_a = frame(mac(1), mac(2), 60);
    let out = r.exchange(1, to_a.clone());
    assert_eq!(out[0], vec![to_a.clone()]);
    assert_eq!(out[3], vec![to_a.clone()], "sent on 0, mirrored to 3");
    // A sink instead; then off.
    let sink = Arc::new(Collect::default());
    r.sw.set_mirror(0, Some(MirrorTo::Sink(sink.clone())));
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
    let mut r = rig(2, 1500);
    r.sw.set_storm_limits(StormLimits { broadcast_pps: 100, multicast_pps: 0, unknown_unicast_pps: 100 });
    // 1000 broadcasts at one instant: the burst (a tenth of a second's worth,
    // at least 10) passes, the rest is dropped.
    let out = r.send(0, vec![frame(Mac::BROADCAST, mac(1), 60); 1000]);
    assert_eq!(out[1].len(), 10);
    assert_eq!(r.drops(0, DropKind::StormBroadcast), 990);
    // 100 ms later, 10 more.
    r.now += 100;
    assert_eq!(r.send(0, vec![frame(Mac::BROADCAST, mac(1), 60); 50])[1].len(), 10);
    // Multicast has no limit here.
    assert_eq!(r.send(0, vec![frame(Mac([0x01, 0, 0x5e, 0, 0, 1]), mac(1), 60); 500])[1].len(), 500);
    // Known unicast is never limited.
    r.exchange(1, frame(Mac::BROADCAST, mac(2), 60));
    assert_eq!(r.send(0, vec![frame(mac(2), mac(1), 60); 1000])[1].len(), 1000);
}

#[test]
fn a_flapping_source_is_pinned_and_its_looped_copies_dropped() {
    let mut r = rig(3, 1500);
    r.exchange(0, frame(Mac::BROADCAST, mac(1), 60));
    // mac(1) seen alternately on ports 1 and 0 within a second, as when a loop returns its frames.
    for k in 0..6 {
        r.now += 10;
        r.exchange(1 - (k % 2), frame(Mac::BROADCAST, mac(1), 60));
    }
    let fdb = &r.sw.fdb;
    assert_eq!(fdb.stats.flaps.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(fdb.lookup(0, mac(1), r.now), Some(0), "pinned where it was before flapping");
    // The 4th move (on port 0) pins it; the copy after it on port 1 is refused too.
    assert_eq!((r.drops(0, DropKind::Flapping), r.drops(1, DropKind::Flapping)), (1, 1));
    // Traffic to it goes to port 0 only.
    assert_eq!(counts(&r.exchange(2, frame(mac(1), mac(3), 60))), [1, 0, 0]);
}

#[test]
fn a_found_loop_flushes_both_its_ports_then_once_more_after_the_frames_in_flight() {
    let mut r = rig(3, 1500);
    // mac(1) lives on port 0; a looped copy of its frame came in on port 1,
    // one end of a loop between ports 1 and 2.
    r.exchange(0, frame(Mac::BROADCAST, mac(1), 60));
    r.exchange(1, frame(Mac::BROADCAST, mac(1), 60));
    assert_eq!(r.sw.fdb.lookup(0, mac(1), r.now), Some(1));
    // The probe sent out of port 1 comes back in on port 2: port 2 is blocked,
    // and what either end of the loop learned is forgotten.
    r.sw.loop_guard.set_mode(LoopDetect::Always);
    r.sw.loop_tick(r.now);
    let probe = r.peers[1].take_sent().pop().expect("a probe out of port 1");
    r.peers.iter().for_each(|p| drop(p.take_sent()));
    r.exchange(2, probe);
    assert_eq!(r.sw.port(2).unwrap().state(), PortState::Blocked);
    assert_eq!(r.sw.fdb.lookup(0, mac(1), r.now), None, "the looped copy's entry was flushed");
    // A copy the loop still had in flight arrives after the block and teaches
    // port 1 again; the next tick after the frames have drained forgets it.
    r.exchange(1, frame(Mac::BROADCAST, mac(1), 60));
    assert_eq!(r.sw.fdb.lookup(0, mac(1), r.now), Some(1));
    r.sw.loop_tick(r.now + 1_000);
    assert_eq!(r.sw.fdb.lookup(0, mac(1), r.now), None, "flushed once more after the block");
    // Its own next frame puts it back home, and nothing flushes it again.
    r.exchange(0, frame(Mac::BROADCAST, mac(1), 60));
    r.sw.loop_tick(r.now + 2_000);
    assert_eq!(r.sw.fdb.lookup(0, mac(1), r.now), Some(0));
}

// ---- per-port policies (docs/policies.md), each as the kernel bridge applies it ----

#[test]
fn learning_off_forwards_but_learns_nothing() {
    let mut r = rig(3, 1500);
    r.policy(0, |p| p.learning = false);
    assert_eq!(counts(&r.exchange(0, frame(Mac::BROADCAST, mac(1), 60))), [0, 1, 1]);
    assert_eq!(r.sw.fdb.lookup(0, mac(1), r.now), None);
    // So replies to it flood.
    assert_eq!(counts(&r.exchange(1, frame(mac(1), mac(2), 60))), [1, 0, 1]);
}

#[test]
fn flood_flags_filter_floods_by_class_but_never_known_unicast() {
    let mut r = rig(3, 1500);
    r.policy(2, |p| {
        p.flood = false;
        p.mcast_flood = false;
    });
    assert_eq!(counts(&r.exchange(0, frame(mac(9), mac(1), 60))), [0, 1, 0], "unknown unicast");
    assert_eq!(counts(&r.exchange(0, frame(Mac([1, 0, 0x5e, 0, 0, 1]), mac(1), 60))), [0, 1, 0], "multicast");
    assert_eq!(counts(&r.exchange(0, frame(Mac::BROADCAST, mac(1), 60))), [0, 1, 1], "broadcast still floods");
    r.exchange(2, frame(Mac::BROADCAST, mac(3), 60));
    assert_eq!(counts(&r.exchange(0, frame(mac(3), mac(1), 60))), [0, 0, 1], "known unicast is delivered");
    r.policy(2, |p| p.bcast_flood = false);
    assert_eq!(counts(&r.exchange(0, frame(Mac::BROADCAST, mac(1), 60))), [0, 1, 0]);
}

#[test]
fn isolated_ports_reach_only_non_isolated_ones() {
    let mut r = rig(3, 1500);
    r.policy(0, |p| p.isolated = true);
    r.policy(1, |p| p.isolated = true);
    // A broadcast from isolated 0 reaches only non-isolated 2.
    assert_eq!(counts(&r.exchange(0, frame(Mac::BROADCAST, mac(1), 60))), [0, 0, 1]);
    assert_eq!(counts(&r.exchange(1, frame(Mac::BROADCAST, mac(2), 60))), [0, 0, 1]);
    // Known unicast between the isolated pair is dropped and counted.
    assert_eq!(counts(&r.exchange(0, frame(mac(2), mac(1), 60))), [0, 0, 0]);
    assert_eq!(r.drops(0, DropKind::Isolated), 1);
    // The non-isolated port reaches both, and both reach it.
    assert_eq!(counts(&r.exchange(2, frame(Mac::BROADCAST, mac(3), 60))), [1, 1, 0]);
    assert_eq!(counts(&r.exchange(0, frame(mac(3), mac(1), 60))), [0, 0, 1]);
}

#[test]
fn hairpin_sends_back_out_of_the_ingress_port() {
    let mut r = rig(2, 1500);
    r.exchange(0, frame(Mac::BROADCAST, mac(1), 60));
    r.exchange(0, frame(Mac::BROADCAST, mac(5), 60));
    assert_eq!(counts(&r.exchange(0, frame(mac(5), mac(1), 60))), [0, 0]);
    r.policy(0, |p| p.hairpin = true);
    assert_eq!(counts(&r.exchange(0, frame(mac(5), mac(1), 60))), [1, 0], "unicast back to its port");
    assert_eq!(counts(&r.exchange(0, frame(Mac::BROADCAST, mac(1), 60))), [1, 1], "floods too, as the kernel's");
}

#[test]
fn a_locked_port_lets_only_its_own_stations_send() {
    let mut r = rig(2, 1500);
    r.policy(0, |p| {
        p.locked = true;
        p.macs = vec![mac(1)];
    });
    assert_eq!(counts(&r.exchange(0, frame(Mac::BROADCAST, mac(7), 60))), [0, 0]);
    assert_eq!(r.drops(0, DropKind::Locked), 1);
    assert_eq!(r.sw.fdb.lookup(0, mac(7), r.now), None, "a refused source is never learned");
    assert_eq!(counts(&r.exchange(0, frame(Mac::BROADCAST, mac(1), 60))), [0, 1]);
    assert_eq!(r.sw.fdb.lookup(0, mac(1), r.now), Some(0));
}

#[test]
fn a_policy_change_applies_at_the_next_batch_and_a_bad_one_changes_nothing() {
    let r = rig(2, 1500);
    let before = r.sw.policy(0).unwrap();
    let bad = PortPolicy { locked: true, ..PortPolicy::default() };
    assert!(r.sw.set_policy(0, bad).unwrap_err().to_string().contains("MAC"));
    assert!(Arc::ptr_eq(&before, &r.sw.policy(0).unwrap()), "a refused policy leaves the old one");
}

#[test]
fn a_promiscuous_port_sees_every_frame_once_and_only_while_promiscuous() {
    // Port 2 plays the host port with tcpdump on it.
    let mut r = rig(3, 1500);
    r.exchange(1, frame(Mac::BROADCAST, mac(2), 60));
    r.exchange(0, frame(Mac::BROADCAST, mac(1), 60));
    r.exchange(2, frame(Mac::BROADCAST, mac(3), 60));
    r.sw.set_promisc(Some(2));
    let uni = frame(mac(2), mac(1), 60);
    assert_eq!(r.exchange(0, uni.clone()), vec![vec![], vec![uni.clone()], vec![uni]], "unicast, and its copy");
    assert_eq!(counts(&r.exchange(0, frame(Mac::BROADCAST, mac(1), 60))), [0, 1, 1], "a flood once, not twice");
    assert_eq!(counts(&r.exchange(0, frame(mac(3), mac(1), 60))), [0, 0, 1], "unicast to it, once");
    // A frame the switch drops as same-port still reaches it, as a
    // promiscuous bridge device passes everything up.
    assert_eq!(counts(&r.exchange(0, frame(mac(1), mac(4), 60))), [0, 0, 1]);
    // What it sends itself is not copied back to it.
    assert_eq!(counts(&r.exchange(2, frame(mac(1), mac(3), 60))), [1, 0, 0]);
    r.sw.set_promisc(None);
    assert_eq!(counts(&r.exchange(0, frame(mac(2), mac(1), 60))), [0, 1, 0]);
}

// ---- reader threads ----

fn tagged(dst: Mac, src: Mac, vid: u16, len: usize) -> Vec<u8> {
    let u = frame(dst, src, len);
    [&u[..12], &[0x81, 0x00], &vid.to_be_bytes()[..], &u[12..]].concat()
}

fn vlans(entries: &[(u16, bool, bool)]) -> Vec<ub_proto::VlanEntry> {
    entries.iter().map(|&(vid, pvid, untagged)| ub_proto::VlanEntry { vid, pvid, untagged }).collect()
}

/// bridge_vlan_aware.sh's shape: port 0 a trunk (10 and 20 tagged), port 1
/// an access port of 10, port 2 of 20, port 3 of 10 with 20 tagged too.
fn vlan_rig() -> Rig {
    let r = rig(4, 1500);
    r.policy(0, |p| p.vlans = vlans(&[(10, false, false), (20, false, false)]));
    r.policy(1, |p| p.vlans = vlans(&[(10, true, true)]));
    r.policy(2, |p| p.vlans = vlans(&[(20, true, true)]));
    r.policy(3, |p| p.vlans = vlans(&[(10, true, true), (20, false, false)]));
    assert!(r.sw.set_vlan_filtering(true));
    r
}

#[test]
fn vlan_filtering_floods_within_the_vlan_and_tags_per_port() {
    let mut r = vlan_rig();
    // Untagged broadcast from the access port of 10: to the trunk tagged 10,
    // to port 3 untagged, not to the access port of 20.
    let b = frame(Mac::BROADCAST, mac(1), 60);
    let out = r.exchange(1, b.clone());
    assert_eq!(out[0], vec![tagged(Mac::BROADCAST, mac(1), 10, 60)]);
    assert_eq!((out[1].len(), out[2].len()), (0, 0));
    assert_eq!(out[3], vec![b.clone()]);
    // Tagged 20 from the trunk: popped for the access port of 20, kept for port 3.
    let t = tagged(Mac::BROADCAST, mac(9), 20, 60);
    let out = r.exchange(0, t.clone());
    assert_eq!(out[2], vec![frame(Mac::BROADCAST, mac(9), 60)]);
    assert_eq!(out[3], vec![t]);
    assert_eq!(out[1].len(), 0);
    // Learned per VLAN: mac(1) is known in 10, unknown in 20.
    assert_eq!(r.sw.fdb.lookup(10, mac(1), r.now), Some(1));
    assert_eq!(r.sw.fdb.lookup(20, mac(1), r.now), None);
    // Known unicast in 10 from the trunk goes to port 1, untagged.
    let out = r.exchange(0, tagged(mac(1), mac(9), 10, 60));
    assert_eq!(counts(&out), [0, 1, 0, 0]);
    assert_eq!(out[1][0], frame(mac(1), mac(9), 60));
}

#[test]
fn the_vlan_ingress_filter_drops_what_a_port_may_not_send() {
    let mut r = vlan_rig();
    // VID 30: no port is a member; VID 20 on the access port of 10: not its VLAN.
    assert_eq!(counts(&r.exchange(0, tagged(Mac::BROADCAST, mac(9), 30, 60))), [0, 0, 0, 0]);
    assert_eq!(counts(&r.exchange(1, tagged(Mac::BROADCAST, mac(1), 20, 60))), [0, 0, 0, 0]);
    // Untagged on the trunk, which has no PVID.
    assert_eq!(counts(&r.exchange(0, frame(Mac::BROADCAST, mac(9), 60))), [0, 0, 0, 0]);
    assert_eq!((r.drops(0, DropKind::Vlan), r.drops(1, DropKind::Vlan)), (2, 1));
    // Filtering off: VLAN-unaware again, tags carried through to everyone.
    r.sw.set_vlan_filtering(false);
    assert_eq!(counts(&r.exchange(0, tagged(Mac::BROADCAST, mac(9), 30, 60))), [0, 1, 1, 1]);
}

#[test]
fn trace_explains_each_egress_port_and_changes_nothing() {
    let r = vlan_rig();
    r.policy(3, |p| p.isolated = true);
    r.policy(1, |p| p.isolated = true);
    let before = (r.sw.fdb.len(), r.sw.port(1).unwrap().counters.snapshot());
    let t = r.sw.trace(1, &frame(Mac::BROADCAST, mac(1), 60), r.now);
    assert_eq!(t.decision, "flood");
    assert_eq!(t.vid, 10);
    let why: Vec<(String, bool, Option<u16>)> = t.egress.iter().map(|e| (e.why.clone(), e.sent, e.tagged)).collect();
    assert_eq!(
        why,
        vec![
            ("member, tagged 10".to_string(), true, Some(10)),
            ("it is the ingress port (hairpin off)".to_string(), false, None),
            ("not a member of the frame's VLAN".to_string(), false, None),
            ("both ports are isolated".to_string(), false, None),
        ]
    );
    assert!(t.steps.iter().any(|s| s.step == "learn" && s.detail.contains("would be learned")));
    assert_eq!((r.sw.fdb.len(), r.sw.port(1).unwrap().counters.snapshot()), before, "trace learned or counted");
    // The ingress filter, explained.
    let t = r.sw.trace(1, &tagged(Mac::BROADCAST, mac(1), 20, 60), r.now);
    assert_eq!(t.decision, "drop: vlan");
    assert!(t.steps.last().unwrap().detail.contains("ingress filter"), "{:?}", t.steps);
}

#[test]
fn trace_says_what_forwarding_then_does_frame_by_frame() {
    // Trace runs the stage itself with a recording observer: whatever it
    // says of a frame, forwarding the same frame right after does.
    let mut r = vlan_rig();
    r.policy(2, |p| p.isolated = true);
    r.policy(3, |p| p.isolated = true);
    r.policy(0, |p| p.mcast_flood = false);
    let frames: Vec<(usize, Vec<u8>)> = vec![
        (1, frame(Mac::BROADCAST, mac(1), 60)),
        (0, tagged(mac(1), mac(9), 10, 60)),
        (0, tagged(Mac::BROADCAST, mac(9), 20, 60)),
        (3, frame(mac(9), mac(4), 60)),
        (2, frame(Mac([0x01, 0, 0x5e, 0, 0, 1]), mac(3), 60)),
        (1, tagged(Mac::BROADCAST, mac(1), 30, 60)),
        (0, frame(mac(1), mac(9), 60)),
    ];
    for (i, f) in frames {
        let t = r.sw.trace(u16::try_from(i).unwrap(), &f, r.now);
        let said: Vec<usize> = t.egress.iter().filter(|e| e.sent).map(|e| usize::from(e.port)).collect();
        let out = r.exchange(i, f);
        let did: Vec<usize> = (0..out.len()).filter(|&p| !out[p].is_empty()).collect();
        assert_eq!(said, did, "trace {t:#?}");
    }
}

fn arp_frame(op: u16, sha: Mac, sip: [u8; 4], tip: [u8; 4]) -> Vec<u8> {
    let dst = if op == 1 { Mac::BROADCAST } else { mac(1) };
    let mut f = dst.0.to_vec();
    f.extend_from_slice(&sha.0);
    f.extend_from_slice(&[0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha.0);
    f.extend_from_slice(&sip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tip);
    f
}

#[test]
fn neigh_suppress_answers_for_told_stations_and_keeps_requests_from_suppressing_ports() {
    let mut r = rig(4, 1500);
    // Port 2 holds mac(2) = 10.0.0.2, told at port add; ports 2 and 3 suppress.
    r.policy(2, |p| {
        p.macs = vec![mac(2)];
        p.ips = vec!["10.0.0.2".parse().unwrap()];
        p.neigh_suppress = true;
    });
    r.policy(3, |p| p.neigh_suppress = true);
    // The FDB must know mac(2) (the kernel answers only then).
    r.exchange(2, frame(mac(9), mac(2), 60));
    let req = arp_frame(1, mac(1), [10, 0, 0, 1], [10, 0, 0, 2]);
    let out = r.exchange(0, req.clone());
    // Answered on port 0 as mac(2); flooded only to the port without suppression.
    assert_eq!(counts(&out), [1, 1, 0, 0]);
    let reply = &out[0][0];
    assert_eq!((&reply[0..6], &reply[6..12], &reply[12..14]), (&mac(1).0[..], &mac(2).0[..], &[0x08, 0x06][..]));
    assert_eq!(&reply[28..32], &[10, 0, 0, 2], "sender IP: the target");
    // An unknown target: flooded everywhere, no answer.
    assert_eq!(counts(&r.exchange(0, arp_frame(1, mac(1), [10, 0, 0, 1], [10, 0, 0, 7]))), [0, 1, 1, 1]);
    // From a suppressing port: not processed, flooded everywhere.
    assert_eq!(counts(&r.exchange(3, arp_frame(1, mac(3), [10, 0, 0, 3], [10, 0, 0, 2]))), [1, 1, 1, 0]);
    // Gratuitous ARP: kept from suppressing ports.
    assert_eq!(counts(&r.exchange(0, arp_frame(1, mac(1), [10, 0, 0, 1], [10, 0, 0, 1]))), [0, 1, 0, 0]);
    // Suppression off everywhere: requests flood as before.
    r.policy(2, |p| p.neigh_suppress = false);
    r.policy(3, |p| p.neigh_suppress = false);
    assert_eq!(counts(&r.exchange(0, req)), [0, 1, 1, 1]);
}

fn wait_until(what: &str, f: impl FnMut() -> bool) {
    ub_lab::wait::until(what, Duration::from_secs(10), f);
}

#[test]
fn a_reader_thread_forwards_bursts_in_order() {
    let sw = Arc::new(Switch::new(FdbConfig::default()));
    let (rx0, tx0, p0) = mem::port(1500);
    let (_rx1, tx1, p1) = mem::port(1500);
    let a = sw.add_port("m0", Backend::Mem, Box::new(tx0)).unwrap();
    sw.add_port("m1", Backend::Mem, Box::new(tx1)).unwrap();
    let _reader = spawn_reader(sw.clone(), a, Box::new(rx0)).unwrap();
    for k in 0..1000u32 {
        let mut f = frame(mac(2), mac(1), 64);
        f[20..24].copy_from_slice(&k.to_be_bytes());
        p0.inject(f);
    }
    let mut got = Vec::new();
    while got.len() < 1000 {
        let f = p1.recv_sent(Duration::from_secs(5)).expect("frames stopped arriving");
        got.push(u32::from_be_bytes(f[20..24].try_into().unwrap()));
    }
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
}

#[test]
fn a_panicking_reader_is_counted_restarted_and_at_last_failed() {
    let sw = Arc::new(Switch::new(FdbConfig::default()));
    let (rx0, tx0, p0) = mem::port(1500);
    let (_rx1, tx1, p1) = mem::port(1500);
    let a = sw.add_port("m0", Backend::Mem, Box::new(tx0)).unwrap();
    sw.add_port("m1", Backend::Mem, Box::new(tx1)).unwrap();
    let restart = Restart { backoff: Duration::from_millis(10), ..Restart::at_most(2, Duration::from_secs(60)) };
    let _reader = spawn_reader_at(sw.clone(), a, vec![Member { rx: Box::new(rx0), cpu: None }], None, restart).unwrap();
    let port = sw.port(a).unwrap();
    let forwards = || {
        p0.inject(frame(mac(2), mac(1), 60));
        p1.recv_sent(Duration::from_secs(5)).is_some()
    };
    assert!(forwards());
    // A panic: counted, and the reader forwards again after its back-off.
    p0.inject_panic();
    wait_until("the panic to be counted", || port.counters.snapshot().reader_panics == 1);
    assert!(forwards(), "the restarted reader forwards");
    assert_eq!(port.state(), PortState::Up);
    p0.inject_panic();
    wait_until("the second panic", || port.counters.snapshot().reader_panics == 2);
    assert!(forwards());
    // The third within the window is one more than allowed: the port fails.
    p0.inject_panic();
    wait_until("the port to be marked failed", || port.state() == PortState::Failed);
    assert_eq!(port.counters.snapshot().reader_panics, 3);
    // A failed port stays failed when its link reports up.
    port.set_state(PortState::Up);
    assert_eq!(port.state(), PortState::Failed);
}

/// Netfilter on (port 3 the netfilter port, learning and floods off as the
/// daemon sets it): IP unicast between stations goes there, whether its
/// destination is known or not, and only what comes back from it reaches the
/// station; ARP and broadcast go direct; isolation still holds first.
#[test]
fn with_a_netfilter_port_ip_between_stations_goes_through_it_first() {
    let mut r = rig(4, 1500);
    r.policy(3, |p| {
        p.learning = false;
        p.flood = false;
        p.bcast_flood = false;
        p.mcast_flood = false;
    });
    r.sw.set_netfilter(Some(3), true);
    let arp = |dst: Mac, src: Mac| {
        let mut f = frame(dst, src, 60);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f
    };
    // ARP broadcast: direct to the stations, not to the netfilter port.
    assert_eq!(counts(&r.exchange(0, arp(Mac::BROADCAST, mac(1)))), [0, 1, 1, 0]);
    // Unknown unicast IP: to the netfilter port alone.
    let ip = frame(mac(2), mac(1), 60);
    assert_eq!(r.exchange(0, ip.clone()), vec![vec![], vec![], vec![], vec![ip.clone()]]);
    // Port 1 learns mac(2) through an ARP reply; then IP to it still goes through port 3.
    assert_eq!(counts(&r.exchange(1, arp(mac(1), mac(2)))), [1, 0, 0, 0]);
    assert_eq!(counts(&r.exchange(0, ip.clone())), [0, 0, 0, 1]);
    // What comes back from the netfilter port goes to the station, and teaches nothing.
    assert_eq!(r.exchange(3, ip.clone()), vec![vec![], vec![ip.clone()], vec![], vec![]]);
    assert_eq!(counts(&r.exchange(0, arp(mac(9), mac(1)))), [0, 1, 1, 0], "mac(1) not moved to port 3");
    // Isolated ports stay apart: nothing reaches the netfilter port for them.
    r.policy(0, |p| p.isolated = true);
    r.policy(1, |p| p.isolated = true);
    assert_eq!(counts(&r.exchange(0, ip.clone())), [0, 0, 0, 0]);
    // Off: the direct path.
    r.policy(0, |p| p.isolated = false);
    r.sw.set_netfilter(Some(3), false);
    assert_eq!(counts(&r.exchange(0, ip)), [0, 1, 0, 0]);
}
