//! Room fan-out: one publish handed to a room with N members on the same worker, until every
//! member's outbox holds the frame (and the frames are taken out again, as the writers would).
//! The per-recipient cost of the hot path, without sockets.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchboard_hub::bench_support::RoomFixture;

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

criterion_group!(benches, room_fanout);
criterion_main!(benches);
