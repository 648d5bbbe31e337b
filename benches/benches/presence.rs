//! Presence coalescing without sockets: one window's changes for 1,000 online
//! friends (each told of 5 flapping users, offline then online again) merged into
//! one `PresenceBatch` frame per recipient, encoded and handed over.

use courier_gateway::api::presence::Outbox;
use courier_protocol::pb;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn coalescing(c: &mut Criterion) {
    let mut group = c.benchmark_group("presence");
    for recipients in [1_000u64, 10_000] {
        let flapping = 5u64;
        let changes = recipients * flapping * 2;
        group.throughput(Throughput::Elements(changes));
        group.bench_with_input(
            BenchmarkId::new("coalesce_window", recipients),
            &recipients,
            |b, &recipients| {
                b.iter(|| {
                    let mut outbox = Outbox::default();
                    for user in 0..flapping {
                        for online in [false, true] {
                            for r in 0..recipients {
                                outbox.queue(
                                    r,
                                    pb::PresenceChange {
                                        user_id: 1_000_000 + user,
                                        online,
                                        changed_at_ms: 1,
                                        profile_changed: false,
                                        profile_only: false,
                                    },
                                );
                            }
                        }
                    }
                    let mut bytes = 0;
                    let coalesced = outbox.flush(|_, frame| bytes += frame.len());
                    black_box((coalesced, bytes))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, coalescing);
criterion_main!(benches);
