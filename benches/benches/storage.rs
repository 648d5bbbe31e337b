//! Storage: durable appends with group commit at several batch sizes, and history
//! page reads from a 10,000-message conversation.

use bytes::Bytes;
use courier_protocol::ConversationId;
use courier_storage::{AppendRequest, HistoryRange, Store, StoreConfig};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn request(c: ConversationId, id: u64) -> AppendRequest {
    AppendRequest {
        conversation: c,
        sender: 1,
        sender_device: "bench".into(),
        client_msg_id: format!("b-{id}"),
        body: Bytes::from(courier_benches::text(120)),
        reply_to_seq: 0,
        recalls: 0,
        mentions: Vec::new(),
        edits: None,
    }
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::for_tests(dir.path()), None).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut next_id = 0u64;
    let mut group = c.benchmark_group("storage_append");
    group.sample_size(20);
    for batch in [1usize, 10, 100, 1000] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::new("group_commit", batch), |b| {
            b.iter(|| {
                rt.block_on(async {
                    // `batch` appends submitted together: the writer commits them with
                    // as few flushes as the queue allows.
                    let mut tickets = Vec::with_capacity(batch);
                    for i in 0..batch {
                        next_id += 1;
                        let conv = ConversationId::direct(1, 2 + (i as u64 % 64)).unwrap();
                        tickets.push(store.submit(request(conv, next_id)).await.unwrap());
                    }
                    for t in tickets {
                        black_box(t.wait().await.unwrap());
                    }
                })
            })
        });
    }
    group.finish();
    store.shutdown().unwrap();
}

fn history(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::for_tests(dir.path()), None).unwrap();
    let conv = ConversationId::direct(1, 2).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut tickets = Vec::new();
        for i in 0..10_000 {
            tickets.push(store.submit(request(conv, i)).await.unwrap());
        }
        for t in tickets {
            t.wait().await.unwrap();
        }
    });
    let mut group = c.benchmark_group("storage_history");
    for page in [20usize, 100] {
        group.throughput(Throughput::Elements(page as u64));
        group.bench_function(BenchmarkId::new("before", page), |b| {
            let mut cursor = 10_001u64;
            b.iter(|| {
                if cursor <= page as u64 {
                    cursor = 10_001;
                }
                let p = store
                    .history(&conv, HistoryRange::Before(cursor), page)
                    .unwrap();
                cursor = p.messages[0].seq;
                black_box(p)
            })
        });
        group.bench_function(BenchmarkId::new("after", page), |b| {
            let mut cursor = 0u64;
            b.iter(|| {
                if cursor >= 10_000 - page as u64 {
                    cursor = 0;
                }
                let p = store
                    .history(&conv, HistoryRange::After(cursor), page)
                    .unwrap();
                cursor = p.messages.last().unwrap().seq;
                black_box(p)
            })
        });
    }
    group.finish();
    store.shutdown().unwrap();
}

criterion_group!(benches, append, history);
criterion_main!(benches);
