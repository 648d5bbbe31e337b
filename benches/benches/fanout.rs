//! Routing and fan-out without sockets: one Deliver frame, encoded once, queued to
//! every online device of 1,000 and 10,000 members through the online registry (the
//! registry lookups plus the queueing, which is what the router does per message).

use bytes::Bytes;
use courier_gateway::connection::registry::{Outbound, Registry};
use courier_protocol::encode_frame;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for members in [1_000u64, 10_000] {
        let registry = Registry::default();
        let mut queues = Vec::new();
        for user in 1..=members {
            let (outbound, rx) = Outbound::channel(1024);
            registry.register(user, user, "phone".into(), [0; 32], outbound);
            queues.push(rx);
        }
        let ids: Vec<u64> = (1..=members).collect();
        group.throughput(Throughput::Elements(members));
        group.bench_with_input(
            BenchmarkId::new("encode_once_and_queue", members),
            &ids,
            |b, ids| {
                b.iter(|| {
                    let wire: Bytes = encode_frame(&courier_benches::deliver_frame(120));
                    for &user in ids {
                        registry.push_to_user(user, &wire, Some((1, "phone")));
                    }
                    // Drain, as the sessions' writers would.
                    for q in queues.iter_mut() {
                        black_box(q.take_single());
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
