//! `deploy/local-cluster`, the compose topology without containers: it starts Redis and three
//! nodes on loopback (and the balancer when haproxy is installed), prints their URLs, serves a
//! cluster publish across nodes, and stops everything it started on Ctrl-C.

#![allow(clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::json;
use switchboard_tests::{hub_binary, Client, STEP};

/// A base port with the script's 22 ports above it all free (below the ephemeral range, so that
/// other tests' port-0 listeners do not take them meanwhile).
fn free_base() -> u16 {
    let seed = u16::try_from(std::process::id() % 400).unwrap();
    for k in 0..400u16 {
        let base = 20_000 + ((seed + k) % 400) * 25;
        let all_free = (0..22).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free range of 22 ports");
}

/// The script's process; interrupted and waited for on drop, so nothing outlives the test.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            interrupt(self.0.id());
            let _ = self.0.wait();
        }
    }
}

/// Sends SIGINT, as Ctrl-C does.
fn interrupt(pid: u32) {
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300))
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cluster_serves_across_nodes_and_stops_everything_on_ctrl_c() {
    let base = free_base();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local-cluster");
    let mut child = Command::new(script)
        .args(["--base", &base.to_string(), "--binary"])
        .arg(hub_binary())
        .env("SWITCHBOARD_SHUTDOWN_WINDOW", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut script = Script(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + STEP * 3;
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("not ready; printed so far: {printed:#?}"));
        let done = line.contains("ready; Ctrl-C stops everything");
        printed.push(line);
        if done {
            break;
        }
    }
    // The URLs of every part, as documented.
    let text = printed.join("\n");
    assert!(
        text.contains(&format!("redis://127.0.0.1:{base}")),
        "{text}"
    );
    for i in 1..=3 {
        assert!(
            text.contains(&format!("ws://127.0.0.1:{}/ws", base + i)),
            "{text}"
        );
        assert!(
            text.contains(&format!("admin http://127.0.0.1:{}", base + 10 + i)),
            "{text}"
        );
    }

    // A cluster publish on node 1 reaches members on nodes 2 and 3.
    let url = |i: u16| format!("ws://127.0.0.1:{}/ws", base + i);
    let mut on2 = Client::open_json(&url(2), &[]).await.unwrap();
    let mut on3 = Client::open_json(&url(3), &[]).await.unwrap();
    assert_eq!(on2.welcome["node"], "node2");
    on2.subscribe("local").await;
    on3.subscribe("local").await;
    let mut on1 = Client::open_json(&url(1), &[]).await.unwrap();
    on1.publish("local", json!({"hello": "cluster"}), "cluster")
        .await;
    for c in [&mut on2, &mut on3] {
        let got = c.recv().await;
        assert_eq!(got["data"], json!({"hello": "cluster"}), "{got}");
    }
    // Through the balancer too, when there is one.
    if text.contains(&format!("ws://127.0.0.1:{}/ws", base + 20)) {
        let mut via_lb = Client::open_json(&url(20), &[]).await.unwrap();
        via_lb.subscribe("local").await;
        on1.publish("local", json!(2), "cluster").await;
        assert_eq!(via_lb.recv().await["data"], json!(2));
    }

    // Ctrl-C: the nodes drain (1001), and every port the script opened is closed.
    interrupt(script.0.id());
    assert_eq!(on2.recv_close().await, Some(1001));
    let started = Instant::now();
    while script.0.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < STEP, "the script did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for port in [base, base + 1, base + 2, base + 3, base + 11, base + 20] {
        assert!(!port_open(port), "port {port} still open after Ctrl-C");
    }
}
