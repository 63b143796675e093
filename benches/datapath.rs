//! The whole per-frame path on in-memory ports, one core: 64-byte frames,
//! 4 ports, 1k learned MACs, known unicast (and a flood case for contrast);
//! `datapath_scale`: 10k to 1M learned MACs, random destinations.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;
use ub_datapath::{Backend, Forwarder, Switch};
use ub_fdb::FdbConfig;
use ub_port::mem::{ReplayRx, SinkTx};
use ub_port::{BATCH, PortRx, RxFrame, recycle_rx};

const PORTS: u16 = 4;
const MACS: u32 = 1000;

fn mac(n: u32) -> [u8; 6] {
    let b = n.to_be_bytes();
    [2, 0, b[0], b[1], b[2], b[3]]
}

fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(64, 0);
    f
}

fn switch() -> Arc<Switch> {
    let sw = Arc::new(Switch::new(FdbConfig::default()));
    // Storm control would drop most of a replayed flood: measure forwarding.
    sw.set_storm_limits(ub_datapath::StormLimits { broadcast_pps: 0, multicast_pps: 0, unknown_unicast_pps: 0 });
    for p in 0..PORTS {
        sw.add_port(&format!("m{p}"), Backend::Mem, Box::new(SinkTx::default())).unwrap();
    }
    // 1k stations spread over ports 1..3; the bench injects on port 0.
    for n in 0..MACS {
        sw.fdb.learn(0, ub_wire::Mac(mac(n)), u16::try_from(1 + n % 3).unwrap(), 0);
    }
    // The daemon's ager walks the table within a second, which finishes any
    // resize papaya left in progress; a bench that skipped it would measure
    // look-ups searching two tables in the runs where one was (docs/benchmarks-history.md).
    assert_eq!(sw.fdb.age(0), 0, "nothing is old at time 0");
    sw
}

/// The same switch with every policy the datapath has in use: VLAN
/// filtering with every port in VLAN 10 (PVID, untagged), the stations
/// learned there; port 0 isolated and locked to its 16 stations.
fn switch_with_policies() -> Arc<Switch> {
    let sw = switch();
    assert!(sw.set_vlan_filtering(true));
    for p in 0..PORTS {
        let mut pol = sw.policy(p).unwrap().spec.clone();
        pol.vlans = vec![ub_proto::VlanEntry { vid: 10, pvid: true, untagged: true }];
        if p == 0 {
            pol.isolated = true;
            pol.locked = true;
            pol.macs = (0..16).map(|n| ub_wire::Mac(mac(10_000 + n))).collect();
        }
        sw.set_policy(p, pol).unwrap();
    }
    for n in 0..MACS {
        sw.fdb.learn(10, ub_wire::Mac(mac(n)), u16::try_from(1 + n % 3).unwrap(), 0);
    }
    assert_eq!(sw.fdb.age(0), 0, "nothing is old at time 0");
    sw
}

/// One reader iteration: a batch from the replay source through `forward`,
/// reusing the frame vector's allocation as the reader does.
fn one_batch(sw: &Switch, rx: &mut ReplayRx, fwd: &mut Forwarder, store: &mut Vec<RxFrame<'static>>) {
    let mut frames = recycle_rx(std::mem::take(store));
    rx.recv_batch(&mut frames).unwrap();
    fwd.forward(sw, &frames, 1);
    *store = recycle_rx(frames);
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("datapath");
    g.throughput(Throughput::Elements(BATCH as u64));
    let sw = switch();
    // Port 0's own stations send to the 1k known stations.
    let unicast: Vec<Vec<u8>> = (0..MACS).map(|n| frame(mac(n), mac(10_000 + n % 16))).collect();
    let mut rx = ReplayRx::new(unicast);
    let mut fwd = Forwarder::new(0);
    let mut store: Vec<RxFrame<'static>> = Vec::with_capacity(BATCH);
    g.bench_function("unicast_64B_4ports_1k_macs", |b| b.iter(|| one_batch(&sw, &mut rx, &mut fwd, &mut store)));
    let bcast: Vec<Vec<u8>> = (0..16).map(|n| frame([0xff; 6], mac(20_000 + n))).collect();
    let mut rx = ReplayRx::new(bcast);
    g.bench_function("flood_64B_4ports", |b| b.iter(|| one_batch(&sw, &mut rx, &mut fwd, &mut store)));
    // Every policy on (docs/benchmarks-history.md compares with the two above).
    let psw = switch_with_policies();
    let unicast: Vec<Vec<u8>> = (0..MACS).map(|n| frame(mac(n), mac(10_000 + n % 16))).collect();
    let mut rx = ReplayRx::new(unicast);
    let mut pfwd = Forwarder::new(0);
    g.bench_function("unicast_64B_policies_on", |b| b.iter(|| one_batch(&psw, &mut rx, &mut pfwd, &mut store)));
    let bcast: Vec<Vec<u8>> = (0..16).map(|n| frame([0xff; 6], mac(10_000 + n))).collect();
    let mut rx = ReplayRx::new(bcast);
    g.bench_function("flood_64B_policies_on", |b| b.iter(|| one_batch(&psw, &mut rx, &mut pfwd, &mut store)));
    // Two readers (ports 0 and 1) forwarding at once on the two cores, sharing
    // the FDB: aggregate frames/s. This is where the map's read path matters.
    g.throughput(Throughput::Elements(2 * BATCH as u64));
    g.bench_function("unicast_64B_two_readers_concurrently", |b| {
        b.iter_custom(|iters| {
            let start = std::sync::Barrier::new(2);
            let t0 = std::time::Instant::now();
            std::thread::scope(|s| {
                for ingress in [0u16, 1] {
                    let (sw, start) = (&sw, &start);
                    s.spawn(move || {
                        let frames: Vec<Vec<u8>> =
                            (0..MACS).map(|n| frame(mac(n), mac(30_000 + ingress as u32 * 100 + n % 16))).collect();
                        let mut rx = ReplayRx::new(frames);
                        let mut fwd = Forwarder::new(ingress);
                        let mut store: Vec<RxFrame<'static>> = Vec::with_capacity(BATCH);
                        start.wait();
                        for _ in 0..iters {
                            one_batch(sw, &mut rx, &mut fwd, &mut store);
                        }
                    });
                }
            });
            t0.elapsed()
        })
    });
    g.finish();
}

/// Table scale, as FD.io CSIT's l2bdscale: 10k, 100k and 1M learned
/// stations behind ports 1..3, and 64 Ki frames from port 0's 16 stations
/// to destinations drawn at random from all of them, so the look-ups miss
/// the CPU caches as the table grows.
fn scale(c: &mut Criterion) {
    let mut g = c.benchmark_group("datapath_scale");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    for (label, n) in [("10k", 10_000u32), ("100k", 100_000), ("1M", 1_000_000)] {
        let limit = usize::try_from(n).unwrap() + 1_000;
        let sw = Arc::new(Switch::new(FdbConfig {
            max_entries: limit,
            max_per_port: u32::try_from(limit).unwrap(),
            ..FdbConfig::default()
        }));
        for p in 0..PORTS {
            sw.add_port(&format!("m{p}"), Backend::Mem, Box::new(SinkTx::default())).unwrap();
        }
        for i in 0..n {
            sw.fdb.learn(0, ub_wire::Mac(mac(i)), u16::try_from(1 + i % 3).unwrap(), 0);
        }
        assert_eq!(sw.fdb.age(0), 0, "finishes any resize, as the daemon's ager does");
        // xorshift64: the same destinations every run, no dependency.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let frames: Vec<Vec<u8>> = (0..65_536u32)
            .map(|k| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let dst = u32::try_from(x % u64::from(n)).unwrap();
                frame(mac(dst), mac(2_000_000 + k % 16))
            })
            .collect();
        let mut rx = ReplayRx::new(frames);
        let mut fwd = Forwarder::new(0);
        let mut store: Vec<RxFrame<'static>> = Vec::with_capacity(BATCH);
        g.bench_function(format!("unicast_64B_random_dst_{label}_macs"), |b| {
            b.iter(|| one_batch(&sw, &mut rx, &mut fwd, &mut store))
        });
    }
    g.finish();
}

criterion_group!(benches, bench, scale);
criterion_main!(benches);
