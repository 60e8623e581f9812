//! The `RedisServer` harness itself: the cluster tests trust it to kill, pause and restart a
//! real server, so each of those must be seen to happen.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use switchboard_tests::RedisServer;

const SHORT: Duration = Duration::from_millis(500);

#[test]
fn a_server_can_be_used_paused_resumed_killed_and_restarted() {
    let mut redis = RedisServer::start();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(redis.command(&["SET", "k", "v 1"]), "OK");
    assert_eq!(redis.command(&["GET", "k"]), "v 1");
    assert_eq!(redis.command(&["INCR", "n"]), "1");
    assert_eq!(redis.command(&["RPUSH", "l", "a", "b"]), "2");
    assert_eq!(redis.command(&["LRANGE", "l", "0", "-1"]), "a\nb");
    assert!(redis.command(&["NOSUCHCOMMAND"]).starts_with("ERR "));

    redis.pause();
    let paused = redis.try_command(&["PING"], SHORT);
    assert!(
        paused.as_ref().is_err_and(|e| matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )),
        "a paused server answered: {paused:?}"
    );
    redis.resume();
    assert_eq!(redis.try_command(&["PING"], SHORT).unwrap(), "PONG");

    redis.kill();
    assert!(redis.try_command(&["PING"], SHORT).is_err());
    // Killing twice is allowed: tests kill, and the drop kills again.
    redis.kill();

    let port = redis.port();
    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(redis.try_command(&["PING"], SHORT).unwrap(), "PONG");
    // Nothing is persisted: the restarted server is empty.
    assert_eq!(redis.command(&["GET", "k"]), "");
}

#[test]
fn a_paused_server_dies_on_drop() {
    let redis = RedisServer::start();
    let pid = redis.pid().unwrap();
    redis.pause();
    drop(redis);
    // Reaped: no process (not even a zombie) is left with that id.
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "redis-server {pid} outlived its drop"
    );
}

#[test]
fn servers_started_together_get_ports_of_their_own() {
    let servers: Vec<RedisServer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(RedisServer::start)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, redis) in servers.iter().enumerate() {
        assert_eq!(redis.command(&["SET", "who", &i.to_string()]), "OK");
    }
    for (i, redis) in servers.iter().enumerate() {
        assert_eq!(redis.command(&["GET", "who"]), i.to_string());
    }
}
