//! The deployment as operators run it: the image built from `deploy/Dockerfile` and the cluster of
//! `docker-compose.yml`, started with podman and tried through their published ports with real
//! WebSocket clients.
//!
//! These tests need podman and the images `scripts/containers` prepares (the hub's image with its
//! `build` stage replaced by a host-built binary, and local stand-ins for the images the compose
//! file names), so they are `#[ignore]`d in a plain `cargo test`; `scripts/test` runs them in its
//! container stage with `--ignored`, where they must pass. Everything a test starts is removed
//! by a guard, also when the test fails.

#![allow(clippy::unwrap_used)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use switchboard_tests::{Client, ADMIN_TOKEN};

/// The hub's image, as `scripts/containers` tagged it.
fn image() -> String {
    std::env::var("SWITCHBOARD_TEST_IMAGE").unwrap_or_else(|_| "localhost/switchboard:test".into())
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `program args`, with the output captured; panics when it cannot be started.
fn run(program: &str, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn podman(args: &[&str]) -> Output {
    run("podman", args, &[])
}

/// `podman args`, which must succeed; its standard output, trimmed.
fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `ready` returns `Some`, polling every 200 ms; panics with `what` after `within`.
fn wait_for<T>(what: &str, within: Duration, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = ready() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    within: Duration,
    mut ready: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = ready().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET path` on `addr`: the status and body, or `None` when there is no HTTP answer (yet).
fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// A WebSocket session through `port`, or `None` while nothing serves it yet.
async fn try_client(port: u16) -> Option<Client> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // Client::open panics on a refused connection: look first.
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    Client::open_json(&format!("ws://{addr}/ws"), &[])
        .await
        .ok()
}

fn node_of(client: &Client) -> String {
    client.welcome["node"].as_str().unwrap().to_owned()
}

/// One container of the hub's image; removed (with its anonymous volume) on drop.
struct Container {
    name: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-v", &self.name]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs podman and the images of scripts/containers (run by scripts/test)"]
async fn the_image_runs_as_a_non_root_user_is_healthy_serves_and_drains_on_stop() {
    let port = free_port();
    let container = Container {
        name: format!("switchboard-image-test-{}", std::process::id()),
    };
    let publish = format!("127.0.0.1:{port}:8080");
    let token = format!("SWITCHBOARD_ADMIN_TOKEN={ADMIN_TOKEN}");
    podman_ok(&[
        "run",
        "-d",
        "--name",
        &container.name,
        "-p",
        &publish,
        "-e",
        &token,
        "-e",
        "SWITCHBOARD_SHUTDOWN_WINDOW=2",
        &image(),
    ]);

    // The process the image starts (PID 1) runs as the image's own user, not root.
    let status = podman_ok(&["exec", &container.name, "cat", "/proc/1/status"]);
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(uid, "10001", "PID 1 runs as uid {uid}");
    assert_eq!(
        podman_ok(&["inspect", "--format", "{{.Config.User}}", &container.name]),
        "switchboard:switchboard"
    );

    // The image's HEALTHCHECK (the binary probing its own /readyz) turns healthy.
    wait_for("the health check passing", Duration::from_secs(30), || {
        podman(&["healthcheck", "run", &container.name])
            .status
            .success()
            .then_some(())
    });
    assert_eq!(
        podman_ok(&[
            "inspect",
            "--format",
            "{{.State.Health.Status}}",
            &container.name
        ]),
        "healthy"
    );

    // Pub/sub through the published port.
    let mut member = wait_for_async("the hub answering", Duration::from_secs(20), || {
        try_client(port)
    })
    .await;
    member.subscribe("deploy").await;
    let mut publisher = try_client(port).await.unwrap();
    publisher
        .publish("deploy", json!({"from": "the image"}), "node")
        .await;
    let got = member.recv().await;
    assert_eq!(got["op"], "message", "{got}");
    assert_eq!(got["data"], json!({"from": "the image"}));

    // `podman stop` (SIGTERM, the image's STOPSIGNAL): every session gets 1001 within the 2 s
    // window and the hub exits 0, well before podman would resort to SIGKILL (10 s).
    let started = Instant::now();
    let name = container.name.clone();
    let stop = std::thread::spawn(move || podman(&["stop", "-t", "10", &name]));
    assert_eq!(member.recv_close().await, Some(1001));
    assert_eq!(publisher.recv_close().await, Some(1001));
    let closed = started.elapsed();
    let stopped = stop.join().unwrap();
    assert!(stopped.status.success(), "{stopped:?}");
    let took = started.elapsed();
    assert!(
        closed < Duration::from_secs(4),
        "sessions closed after {closed:?}"
    );
    assert!(took < Duration::from_secs(8), "stop took {took:?}");
    assert_eq!(
        podman_ok(&[
            "inspect",
            "--format",
            "{{.State.ExitCode}}",
            &container.name
        ]),
        "0",
        "logs:\n{}",
        String::from_utf8_lossy(&podman(&["logs", &container.name]).stderr)
    );
    let logs = podman(&["logs", &container.name]);
    let logs = String::from_utf8_lossy(&logs.stderr);
    assert!(logs.contains("SIGTERM received"), "{logs}");
}

/// The cluster of `docker-compose.yml` under its own project name and free host ports;
/// brought down, with every container, volume and network of the project, on drop.
struct Compose {
    project: String,
    env: Vec<(&'static str, String)>,
}

impl Compose {
    fn up(services: &[&str]) -> Compose {
        let compose = Compose {
            project: format!("sbtest{}", std::process::id()),
            env: vec![
                ("SWITCHBOARD_IMAGE", image()),
                ("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
                ("SWITCHBOARD_PORT", free_port().to_string()),
                ("SWITCHBOARD_ADMIN_PORT", free_port().to_string()),
                ("PROMETHEUS_PORT", free_port().to_string()),
                ("GRAFANA_PORT", free_port().to_string()),
            ],
        };
        let mut args = vec![
            "-f",
            "docker-compose.yml",
            "-p",
            &compose.project,
            "up",
            "-d",
            "--no-build",
        ];
        args.extend_from_slice(services);
        let out = run("podman-compose", &args, &compose.env);
        assert!(
            out.status.success(),
            "podman-compose up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        compose
    }

    fn port(&self, var: &str) -> u16 {
        self.env
            .iter()
            .find(|(k, _)| *k == var)
            .unwrap()
            .1
            .parse()
            .unwrap()
    }

    fn addr(&self, var: &str) -> SocketAddr {
        ([127, 0, 0, 1], self.port(var)).into()
    }

    /// The container of `service` (podman-compose names it `<project>_<service>_1`).
    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    fn logs(&self, service: &str) -> String {
        let out = podman(&["logs", &self.container(service)]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        // What `podman-compose down` does, plus the anonymous volumes (the image's state
        // directory) and the project's network, which it leaves behind.
        let label = format!("label=io.podman.compose.project={}", self.project);
        let left = podman(&["ps", "-a", "-q", "--filter", &label]);
        for id in String::from_utf8_lossy(&left.stdout).split_whitespace() {
            let _ = podman(&["rm", "-f", "-v", id]);
        }
        let _ = podman(&["network", "rm", "-f", &format!("{}_default", self.project)]);
    }
}

/// Clients through the load balancer until there is one on each of `nodes` distinct nodes.
async fn clients_on_distinct_nodes(port: u16, nodes: usize) -> Vec<Client> {
    let mut by_node: Vec<Client> = Vec::new();
    let mut extra = Vec::new();
    for _ in 0..30 {
        let client = try_client(port).await.expect("a session through the LB");
        if by_node.iter().any(|c| node_of(c) == node_of(&client)) {
            // Kept open, so that the balancer's least-connections choice moves on.
            extra.push(client);
        } else {
            by_node.push(client);
        }
        if by_node.len() == nodes {
            return by_node;
        }
    }
    panic!(
        "30 sessions through the LB reached only {} nodes",
        by_node.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs podman and the images of scripts/containers (run by scripts/test)"]
async fn the_compose_cluster_shares_rooms_through_the_lb_and_survives_a_stopped_node() {
    // Grafana is left out: no stand-in for its image (its dashboard is checked below).
    let compose = Compose::up(&["redis", "node1", "node2", "node3", "lb", "prometheus"]);
    let lb = compose.port("SWITCHBOARD_PORT");
    let admin = compose.addr("SWITCHBOARD_ADMIN_PORT");

    // All three nodes registered in the cluster (the admin API through the LB).
    let nodes = wait_for(
        "three nodes in /admin/nodes",
        Duration::from_secs(60),
        || {
            let (status, body) = http_get(admin, "/admin/nodes", Some(ADMIN_TOKEN))?;
            let nodes: Value = serde_json::from_str(&body).ok()?;
            (status == 200 && nodes.as_array()?.len() == 3).then_some(nodes)
        },
    );
    let mut ids: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["node1", "node2", "node3"], "{nodes}");
    // Bound to 0.0.0.0 in the container, each node shows the address the others can reach.
    for n in nodes.as_array().unwrap() {
        assert_eq!(
            n["address"],
            format!("{}:8080", n["id"].as_str().unwrap()),
            "{n}"
        );
    }

    // A member on each node; a publish through the LB on one node reaches all three.
    drop(
        wait_for_async("a session through the LB", Duration::from_secs(30), || {
            try_client(lb)
        })
        .await,
    );
    let mut members = clients_on_distinct_nodes(lb, 3).await;
    for m in &mut members {
        m.subscribe("compose").await;
    }
    let publisher = &mut members[0];
    let from = node_of(publisher);
    publisher
        .publish("compose", json!({"n": 1}), "cluster")
        .await;
    for m in &mut members {
        let got = m.recv().await;
        assert_eq!(got["op"], "message", "on {}: {got}", node_of(m));
        assert_eq!(got["data"], json!({"n": 1}), "published on {from}");
    }

    // Prometheus scrapes every node: `up` is 1 for node1..3.
    let prometheus = compose.addr("PROMETHEUS_PORT");
    wait_for(
        "Prometheus reporting every node up",
        Duration::from_secs(60),
        || {
            let (status, body) = http_get(prometheus, "/api/v1/query?query=up", None)?;
            let v: Value = serde_json::from_str(&body).ok()?;
            let mut up: Vec<String> = v["data"]["result"]
                .as_array()?
                .iter()
                .filter(|r| r["metric"]["job"] == "switchboard" && r["value"][1] == "1")
                .map(|r| r["metric"]["instance"].as_str().unwrap_or("").to_owned())
                .collect();
            up.sort();
            (status == 200 && up == ["node1:8081", "node2:8081", "node3:8081"]).then_some(())
        },
    );

    // Every metric the provisioned Grafana dashboard reads is one the nodes expose.
    let (_, metrics) = http_get(admin, "/metrics", None).unwrap();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/grafana/dashboards/switchboard.json"))
            .unwrap(),
    )
    .unwrap();
    // ... through the data source Grafana is provisioned with.
    let datasources = std::fs::read_to_string(
        repo_root().join("deploy/grafana/provisioning/datasources/prometheus.yml"),
    )
    .unwrap();
    assert!(datasources.contains("url: http://prometheus:9090"));
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        let uid = panel["datasource"]["uid"].as_str().unwrap();
        assert!(
            datasources.contains(&format!("uid: {uid}\n")),
            "panel {:?} names data source {uid}, which is not provisioned",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                assert!(
                    metrics.contains(&format!("\n{name}")),
                    "panel {:?} reads {name}, which no node exposes",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 16, "only {checked} metric references checked");

    // Stop the node of the first member: its sessions get 1001, and the others keep serving
    // through the LB, new sessions included.
    let stopped = node_of(&members[0]);
    let out = podman(&["stop", "-t", "15", &compose.container(&stopped)]);
    assert!(out.status.success(), "{out:?}");
    let mut gone = members.remove(0);
    assert_eq!(gone.recv_close().await, Some(1001));
    let mut fresh = Vec::new();
    for _ in 0..6 {
        let c = try_client(lb)
            .await
            .unwrap_or_else(|| panic!("no session through the LB after stopping {stopped}"));
        assert_ne!(
            node_of(&c),
            stopped,
            "the LB sent a session to the stopped node"
        );
        fresh.push(c);
    }
    let mut newcomer = fresh.pop().unwrap();
    newcomer.subscribe("compose").await;
    newcomer
        .publish("compose", json!({"n": 2}), "cluster")
        .await;
    for m in members.iter_mut().chain(std::iter::once(&mut newcomer)) {
        let got = m.recv().await;
        assert_eq!(got["data"], json!({"n": 2}), "on {}: {got}", node_of(m));
    }
    // The stopped node drained and exited cleanly.
    assert_eq!(
        podman_ok(&[
            "inspect",
            "--format",
            "{{.State.ExitCode}}",
            &compose.container(&stopped)
        ]),
        "0",
        "{}",
        compose.logs(&stopped)
    );
}

/// The metric names in a PromQL expression: identifiers of the hub's families (`switchboard_*`)
/// and of the process collector (`process_*`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && (rest.starts_with("switchboard_") || rest.starts_with("process_")) {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.push(rest[..len].to_owned());
            i += len;
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_found_in_promql() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(switchboard_fanout_seconds_bucket[1m])))"
        ),
        ["switchboard_fanout_seconds_bucket"]
    );
    assert_eq!(
        metric_names(
            "rate(process_cpu_seconds_total{job=\"switchboard\"}[1m]) + switchboard_ready"
        ),
        ["process_cpu_seconds_total", "switchboard_ready"]
    );
    assert!(metric_names("sum by (instance) (up)").is_empty());
}
