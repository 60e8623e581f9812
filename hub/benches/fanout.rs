//! Room fan-out: one publish handed to a room with N members on the same worker, until every
//! member's outbox holds the frame (and the frames are taken out again, as the writers would).
//! The per-recipient cost of the hot path, without sockets. And one publish end to end for a
//! room of 10: the per-publish cost of chat-shaped load.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchboard_hub::bench_support::{deflate_message, PublishFixture, RoomFixture};

fn room_fanout(c: &mut Criterion) {
    let system = actix_rt::System::new();
    let mut group = c.benchmark_group("room_fanout");
    group.measurement_time(Duration::from_secs(3));
    for members in [100usize, 1_000, 5_000] {
        let fixture = system.block_on(async { RoomFixture::new(members, 100) });
        group.throughput(Throughput::Elements(members as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(members),
            &members,
            |b, &members| {
                b.iter_custom(|iters| {
                    system.block_on(async {
                        let start = Instant::now();
                        let mut delivered = 0;
                        for _ in 0..iters {
                            fixture.publish().await;
                            delivered += fixture.drain();
                        }
                        let elapsed = start.elapsed();
                        assert_eq!(delivered, iters * members as u64);
                        elapsed
                    })
                });
            },
        );
    }
    group.finish();
}

/// One publish end to end (decode, the publish path, the room, the outboxes) for a chat-sized
/// room of 10 members on the publisher's worker: the per-publish cost of many small rooms.
fn publish_end_to_end(c: &mut Criterion) {
    let system = actix_rt::System::new();
    let mut group = c.benchmark_group("publish_e2e");
    group.measurement_time(Duration::from_secs(3));
    {
        let recipients = 10usize;
        let fixture = system.block_on(async { PublishFixture::new(recipients, 100) });
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::from_parameter(recipients),
            &recipients,
            |b, &recipients| {
                b.iter_custom(|iters| {
                    system.block_on(async {
                        let start = Instant::now();
                        let mut delivered = 0;
                        for _ in 0..iters {
                            fixture.publish().await;
                            delivered += fixture.drain();
                        }
                        let elapsed = start.elapsed();
                        assert_eq!(delivered, iters * recipients as u64);
                        elapsed
                    })
                });
            },
        );
    }
    group.finish();
}

/// A live dashboard's message: forty hosts' figures, as a feeder would publish them.
fn dashboard_message() -> Vec<u8> {
    let mut series = String::new();
    for i in 0..40u32 {
        if i > 0 {
            series.push(',');
        }
        series.push_str(&format!(
            r#"{{"host":"web-{i:02}","region":"eu-west-{}","cpu":{}.{:02},"mem_mb":{},"rps":{},"p99_ms":{}.{}}}"#,
            i % 3 + 1,
            (i * 7919) % 97,
            (i * 104_729) % 100,
            2048 + (i * 7577) % 4096,
            100 + (i * 1237) % 900,
            (i * 31) % 250,
            i % 10
        ));
    }
    format!(
        r#"{{"op":"message","room":"dash:prod","data":{{"at":1764601200123,"series":[{series}]}},"from":"s-4f2a"}}"#
    )
    .into_bytes()
}

/// The one compression a published message costs with permessage-deflate (shared by every
/// member that negotiated it), for a typical dashboard message; its sizes on the wire are
/// printed once.
fn deflate(c: &mut Criterion) {
    let payload = dashboard_message();
    let (plain, compressed) = deflate_message(&payload);
    let compressed_len = compressed.map_or(plain.len(), |z| z.len());
    eprintln!(
        "dashboard message: {} bytes on the wire plain, {compressed_len} compressed ({:.0}%)",
        plain.len(),
        100.0 * compressed_len as f64 / plain.len() as f64
    );
    let mut group = c.benchmark_group("deflate");
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("dashboard_message", |b| {
        b.iter(|| deflate_message(&payload))
    });
    group.finish();
}

criterion_group!(benches, room_fanout, publish_end_to_end, deflate);
criterion_main!(benches);
