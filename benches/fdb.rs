//! FDB: dashmap vs papaya under the same policy layer. The datapath uses
//! whichever wins here (ub_fdb::DefaultFdb); see docs/benchmarks-history.md.
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use ub_fdb::{DashMapBackend, Fdb, FdbConfig, FdbMap, PapayaBackend};
use ub_wire::Mac;

const MACS: u32 = 1000;

fn mac(n: u32) -> Mac {
    let b = n.to_be_bytes();
    Mac([2, 0, b[0], b[1], b[2], b[3]])
}

fn filled<M: FdbMap>() -> Fdb<M> {
    let f = Fdb::<M>::new(FdbConfig::default());
    for n in 0..MACS {
        f.learn(0, mac(n), (n % 4) as u16, 0);
    }
    settle(&f);
    f
}

/// Walks the table as the daemon's ager does every 100 ms to 1 s. The walk
/// also finishes a resize papaya left in progress (its incremental mode);
/// without it, a run whose last learn started one measures look-ups that
/// search two tables, the state the daemon leaves within a second.
fn settle<M: FdbMap>(f: &Fdb<M>) {
    assert_eq!(f.age(0), 0, "nothing is old at time 0");
}

fn run<M: FdbMap>(c: &mut Criterion, name: &str) {
    let mut g = c.benchmark_group("fdb");
    g.throughput(Throughput::Elements(1));
    let f = filled::<M>();
    let mut n = 0u32;
    g.bench_function(BenchmarkId::new("lookup_hit", name), |b| {
        b.iter(|| {
            n = (n + 7) % MACS;
            f.lookup(0, black_box(mac(n)), 1)
        })
    });
    // As the datapath does it: one guard held across a batch of look-ups.
    g.bench_function(BenchmarkId::new("lookup_hit_batch_guard", name), |b| {
        let guard = f.guard();
        b.iter(|| {
            n = (n + 7) % MACS;
            f.lookup_in(&guard, 0, black_box(mac(n)), 1)
        })
    });
    g.bench_function(BenchmarkId::new("lookup_miss", name), |b| b.iter(|| f.lookup(0, black_box(mac(MACS + 5)), 1)));
    g.bench_function(BenchmarkId::new("learn_refresh", name), |b| {
        b.iter(|| {
            n = (n + 7) % MACS;
            f.learn(0, black_box(mac(n)), (n % 4) as u16, 2)
        })
    });
    // Learning new stations and forgetting them again (insert + remove).
    let churn = Fdb::<M>::new(FdbConfig::default());
    let mut k = 0u32;
    g.bench_function(BenchmarkId::new("learn_new_then_remove", name), |b| {
        b.iter(|| {
            k = k.wrapping_add(1);
            churn.learn(0, mac(100_000 + (k % 50_000)), 1, 0);
            churn.remove(0, mac(100_000 + ((k + 25_000) % 50_000)))
        })
    });
    // Look-ups while another reader refreshes the same entries (the steady
    // state of two busy ports), then while it moves them (a MAC-move storm).
    contended::<M>(&mut g, name, "lookup_hit_with_concurrent_refresh", |i| (i % MACS, (i % MACS % 4) as u16));
    contended::<M>(&mut g, name, "lookup_hit_with_concurrent_moves", |i| (i % MACS, ((i / MACS) % 4) as u16));
    g.finish();
}

fn contended<M: FdbMap>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    id: &str,
    station: fn(u32) -> (u32, u16),
) {
    let mut n = 0u32;
    let f = Arc::new(filled::<M>());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (f, stop) = (f.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_add(1);
                let (m, port) = station(i);
                f.learn(0, mac(m), port, i as u64);
            }
        })
    };
    g.bench_function(BenchmarkId::new(id, name), |b| {
        b.iter(|| {
            n = (n + 7) % MACS;
            f.lookup(0, black_box(mac(n)), 1)
        })
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

fn bench(c: &mut Criterion) {
    run::<DashMapBackend>(c, "dashmap");
    run::<PapayaBackend>(c, "papaya");
}

criterion_group!(benches, bench);
criterion_main!(benches);
