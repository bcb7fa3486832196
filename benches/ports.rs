//! Port allocation: 10,000 ports for 2,000 services (target < 100 ms), planned without
//! touching the host, and with the real bind probe on every candidate.

use chainctl_core::ports::{
    allocate, AllocInput, Allocation, BindProbe, HostPorts, HostProbe, NoProbe, PortRequest,
};
use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

fn requests() -> Vec<PortRequest> {
    chainctl_core::ports::synthetic_requests(2_000)
}

fn run(reqs: &[PortRequest], previous: &Allocation, probe: &dyn HostProbe) -> Allocation {
    let input = AllocInput {
        start: 20000,
        end: 40000,
        reserved: &[20001, 25000],
        previous,
        running: &|_| false,
        probe,
    };
    allocate(reqs, &input).expect("range is large enough").0
}

fn bench(c: &mut Criterion) {
    let reqs = requests();
    let empty = Allocation::new();
    let mut g = c.benchmark_group("allocate 10k ports / 2k services");
    g.measurement_time(Duration::from_secs(5)).sample_size(20);
    g.bench_function("fresh, no host probe", |b| {
        b.iter(|| run(&reqs, &empty, &NoProbe))
    });
    let previous = run(&reqs, &empty, &NoProbe);
    g.bench_function("from persisted allocation, no host probe", |b| {
        b.iter(|| run(&reqs, &previous, &NoProbe))
    });
    g.bench_function(
        "fresh, host socket tables read and probed (what `up` does)",
        |b| b.iter(|| run(&reqs, &empty, &HostPorts::read())),
    );
    g.bench_function("fresh, a real bind per candidate", |b| {
        b.iter(|| run(&reqs, &empty, &BindProbe))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
