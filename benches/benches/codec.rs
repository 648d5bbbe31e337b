//! Frame codec: encode, decode and the server's receive path (length prefix, read the
//! Send, validate, write the Deliver around the body) for 100 and 300 byte chat
//! messages.

use bytes::BytesMut;
use courier_benches::{deliver_frame, send_frame};
use courier_protocol::pb;
use courier_protocol::wire::{
    decode_inbound, encode_deliver, plain_text_body, DeliverHead, Inbound,
};
use courier_protocol::{decode_frame, encode_frame, encode_frame_into, ConversationId, FrameCodec};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use prost::Message as _;
use tokio_util::codec::Decoder;

// The allocator the server runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    for len in [100usize, 300] {
        let deliver = deliver_frame(len);
        group.bench_with_input(BenchmarkId::new("encode_deliver", len), &deliver, |b, f| {
            let mut buf = BytesMut::with_capacity(4096);
            b.iter(|| {
                buf.clear();
                encode_frame_into(black_box(f), &mut buf);
                black_box(buf.len())
            })
        });
        let body = pb::MessageBody::text("y".repeat(len)).encode_to_vec();
        group.bench_with_input(
            BenchmarkId::new("encode_deliver_spliced", len),
            &body,
            |b, body| {
                let mut buf = BytesMut::with_capacity(4096);
                let conversation = ConversationId::direct(1_048_576, 2_097_152).unwrap();
                b.iter(|| {
                    buf.clear();
                    encode_deliver(
                        black_box(&DeliverHead {
                            conversation,
                            seq: 123_456,
                            sender: 1_048_576,
                            sender_device: "dev-5f2c9a",
                            client_msg_id: "m-8c5e1f0a9b7d4c3e2f1a0b9c8d7e6f5a",
                            server_time_ms: 1_795_000_000_000,
                            reply_to_seq: 0,
                            recalled: None,
                        }),
                        body,
                        &mut buf,
                    );
                    black_box(buf.len())
                })
            },
        );
        let wire = encode_frame(&send_frame(len));
        group.bench_with_input(BenchmarkId::new("frame_only", len), &wire, |b, wire| {
            let mut codec = FrameCodec::default();
            b.iter(|| {
                let mut buf = BytesMut::from(&wire[..]);
                black_box(codec.decode(&mut buf).unwrap().unwrap())
            })
        });
        group.bench_with_input(BenchmarkId::new("decode_send", len), &wire, |b, wire| {
            let mut codec = FrameCodec::default();
            b.iter(|| {
                let mut buf = BytesMut::from(&wire[..]);
                let payload = codec.decode(&mut buf).unwrap().unwrap();
                black_box(decode_frame(payload).unwrap())
            })
        });
        group.bench_with_input(
            BenchmarkId::new("decode_inbound_send", len),
            &wire,
            |b, wire| {
                let mut codec = FrameCodec::default();
                b.iter(|| {
                    let mut buf = BytesMut::from(&wire[..]);
                    let payload = codec.decode(&mut buf).unwrap().unwrap();
                    black_box(decode_inbound(payload).unwrap())
                })
            },
        );
        // The server's receive path for one chat message: frame it, read the Send as
        // views, parse the conversation, check the text body in place, and write the
        // Deliver around the client's body bytes (what the router sends out).
        group.bench_with_input(
            BenchmarkId::new("decode_validate_encode", len),
            &wire,
            |b, wire| {
                let mut codec = FrameCodec::default();
                let mut out = BytesMut::with_capacity(4096);
                b.iter(|| {
                    let mut buf = BytesMut::from(&wire[..]);
                    let payload = codec.decode(&mut buf).unwrap().unwrap();
                    let Inbound::Send(_, send) = decode_inbound(payload).unwrap() else {
                        unreachable!()
                    };
                    let conversation: ConversationId = send.conversation().parse().unwrap();
                    let body = send.body().unwrap();
                    let text = plain_text_body(body).unwrap();
                    assert!(!text.is_empty() && text.len() <= 16 * 1024);
                    out.clear();
                    encode_deliver(
                        &DeliverHead {
                            conversation,
                            seq: 123_456,
                            sender: 1_048_576,
                            sender_device: "dev-5f2c9a",
                            client_msg_id: send.client_msg_id(),
                            server_time_ms: 1_795_000_000_000,
                            reply_to_seq: send.reply_to_seq,
                            recalled: None,
                        },
                        body,
                        &mut out,
                    );
                    black_box(out.len())
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
