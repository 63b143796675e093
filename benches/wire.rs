//! Parsing: the hot-path classifier against etherparse (the test oracle).
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use ub_wire::{ArpPacket, EthernetFrame, classify};

fn frame(tagged: bool) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    if tagged {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
    }
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(64, 0);
    f
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    let plain = frame(false);
    let tagged = frame(true);
    g.bench_function("classify_untagged_64B", |b| b.iter(|| classify(black_box(&plain), None)));
    g.bench_function("classify_8021q_64B", |b| b.iter(|| classify(black_box(&tagged), None)));
    g.bench_function("etherparse_link_slice_64B", |b| {
        b.iter(|| {
            etherparse::LinkSlice::Ethernet2(
                etherparse::Ethernet2Slice::from_slice_without_fcs(black_box(&plain)).unwrap(),
            )
        })
    });
    let arp = [0u8, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2];
    g.bench_function("arp_view", |b| b.iter(|| ArpPacket::new_checked(black_box(&arp[..])).map(|a| a.target_ip())));
    g.bench_function("ethernet_tags", |b| {
        b.iter(|| EthernetFrame::new_checked(black_box(&tagged[..])).unwrap().tags())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
