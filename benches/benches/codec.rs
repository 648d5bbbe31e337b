//! Frame codec: encode, decode and the receive path (length prefix, parse, validate,
//! re-encode as a Deliver) for 100 and 300 byte chat messages.

use bytes::BytesMut;
use courier_benches::{deliver_frame, send_frame};
use courier_protocol::pb::frame::Kind;
use courier_protocol::{decode_frame, encode_frame, encode_frame_into, ConversationId, FrameCodec};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio_util::codec::Decoder;

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
        let wire = encode_frame(&send_frame(len));
        group.bench_with_input(BenchmarkId::new("decode_send", len), &wire, |b, wire| {
            let mut codec = FrameCodec::default();
            b.iter(|| {
                let mut buf = BytesMut::from(&wire[..]);
                let payload = codec.decode(&mut buf).unwrap().unwrap();
                black_box(decode_frame(payload).unwrap())
            })
        });
        group.bench_with_input(
            BenchmarkId::new("decode_validate_encode", len),
            &wire,
            |b, wire| {
                let mut codec = FrameCodec::default();
                let mut out = BytesMut::with_capacity(4096);
                b.iter(|| {
                    let mut buf = BytesMut::from(&wire[..]);
                    let payload = codec.decode(&mut buf).unwrap().unwrap();
                    let frame = decode_frame(payload).unwrap();
                    let Some(Kind::Send(send)) = frame.kind else {
                        unreachable!()
                    };
                    let conversation: ConversationId = send.conversation.parse().unwrap();
                    let text_len = send
                        .body
                        .as_ref()
                        .and_then(|b| b.as_text())
                        .map_or(0, str::len);
                    assert!(text_len <= 16 * 1024);
                    let mut deliver = deliver_frame(0);
                    if let Some(Kind::Deliver(d)) = &mut deliver.kind {
                        let m = d.message.as_mut().unwrap();
                        m.conversation = conversation.to_string();
                        m.body = send.body;
                        m.client_msg_id = send.client_msg_id;
                    }
                    out.clear();
                    encode_frame_into(&deliver, &mut out);
                    black_box(out.len())
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
