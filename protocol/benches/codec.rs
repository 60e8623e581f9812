//! Decode and encode costs of the frames on the hot path.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_json::value::RawValue;
use switchboard_protocol::{decode, Envelope, Scope, ServerFrame};

fn codec(c: &mut Criterion) {
    let payload = format!(
        "{{\"p\":0,\"s\":12345,\"t\":987654321,\"x\":\"{}\"}}",
        "x".repeat(50)
    );
    let publish = format!(
        r#"{{"op":"publish","room":"chat:lobby","data":{payload},"scope":"node","id":42}}"#
    );
    let subscribe = r#"{"op":"subscribe","room":"chat:lobby","id":7}"#;
    let data: &RawValue = serde_json::from_str(&payload).unwrap_or_else(|e| panic!("{e}"));

    let mut group = c.benchmark_group("protocol");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_publish_100b", |b| {
        b.iter(|| decode(black_box(&publish)))
    });
    group.bench_function("decode_subscribe", |b| {
        b.iter(|| decode(black_box(subscribe)))
    });
    group.bench_function("encode_message_100b", |b| {
        b.iter(|| {
            ServerFrame::Message {
                at: None,
                room: black_box("chat:lobby"),
                data: black_box(data),
                from: black_box("1a2b3c4d-17"),
                user: black_box(None),
            }
            .encode()
        })
    });
    group.bench_function("encode_ack", |b| {
        b.iter(|| {
            ServerFrame::Ack {
                id: black_box(Some(42)),
            }
            .encode()
        })
    });
    let envelope = Envelope {
        epoch: None,
        kind: Default::default(),
        room: "chat:lobby".into(),
        data,
        from: "1a2b3c4d-17".into(),
        user: Some("alice".into()),
        scope: Scope::Cluster,
        node: "node-a".into(),
        offset: None,
    };
    let envelope_text = envelope.encode();
    group.bench_function("encode_envelope_100b", |b| {
        b.iter(|| black_box(&envelope).encode())
    });
    group.bench_function("decode_envelope_100b", |b| {
        b.iter(|| Envelope::decode(black_box(&envelope_text)))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
