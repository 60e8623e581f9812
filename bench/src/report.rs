//! The result of a run: one JSON object (`--json`) or a table for people.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    stats::{Accounting, Percentiles},
    Target,
};

/// Server memory at the three moments the bench looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Rss {
    /// Before the first connection.
    pub(crate) before: u64,
    /// Once every connection is up (and, for `fanout`, subscribed).
    pub(crate) connected: u64,
    /// At the end: deliveries done (`fanout`) or the hold over (`connect`), connections still open.
    pub(crate) end: u64,
}

impl Rss {
    /// Records the three samples in `report` when all were taken, with the memory per
    /// connection over `connections`.
    pub(crate) fn record(
        report: &mut Report,
        samples: (Option<u64>, Option<u64>, Option<u64>),
        connections: usize,
    ) {
        if let (Some(before), Some(connected), Some(end)) = samples {
            let r = Rss {
                before,
                connected,
                end,
            };
            report.rss_per_conn_kib = r.per_connection(connections);
            report.server_rss_kib = Some(r);
        }
    }

    /// (connected − before) / connections, in KiB.
    pub(crate) fn per_connection(&self, connections: usize) -> Option<f64> {
        (connections > 0).then(|| {
            let per = (self.connected as f64 - self.before as f64) / connections as f64;
            (per * 100.0).round() / 100.0
        })
    }
}

/// One node of a `fanout` run over several `--url`s: what its subscribers received and what it
/// cost that node's process (its `--server-pid`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct NodeReport {
    pub(crate) url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pid: Option<u32>,
    /// Subscribers connected to this node.
    pub(crate) subscribers: usize,
    /// Publisher connections on this node (`--publish-url`, by default the first node).
    pub(crate) publishers: usize,
    /// Messages the subscribers on this node received.
    pub(crate) deliveries: u64,
    /// CPU time the process used from the first publish to the end of the deliveries, in s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cpu_s: Option<f64>,
    /// `cpu_s` / `deliveries`, in ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cpu_ns_per_delivery: Option<f64>,
    /// (RSS once connected − RSS before) / (subscribers + publishers), in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rss_kib_per_connection: Option<f64>,
}

/// Everything a run measured; fields that do not apply to the scenario are left out of the JSON.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: &'static str,
    pub(crate) target: Target,
    pub(crate) url: String,
    /// `fanout`: where the publishers connected, when not the same as `url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) publish_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) subscribers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rooms: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) publishers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) messages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) scope: Option<&'static str>,
    /// `all` or `own`: which rooms each publisher publishes to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) publisher_rooms: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) window: Option<usize>,
    pub(crate) connections: usize,
    pub(crate) threads: usize,
    pub(crate) source_ips: u16,
    pub(crate) elapsed_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) delivered: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) expected: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) lost: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) duplicated: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) invalid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) loss_accounting: Option<Accounting>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) msgs_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) publish_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) latency_us: Option<Percentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) handshakes_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) handshake_us: Option<Percentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hold_s: Option<f64>,
    /// Connections the server closed (or that failed) after they were up.
    pub(crate) disconnected: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) server_rss_kib: Option<Rss>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rss_per_conn_kib: Option<f64>,
    /// `fanout`: CPU time the server used from the first publish to the last delivery, in s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) server_cpu_s: Option<f64>,
    /// `server_cpu_s` / delivered, in ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) server_ns_per_delivery: Option<f64>,
    /// `fanout` with several `--url`s: one entry per URL, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) nodes: Vec<NodeReport>,
    /// `fanout` with `--redis-pid`: Redis's CPU time over the same span as `server_cpu_s`, in s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) redis_cpu_s: Option<f64>,
    /// `redis_cpu_s` / messages published, in ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) redis_cpu_ns_per_publish: Option<f64>,
    pub(crate) timed_out: bool,
    /// The first few distinct errors seen after connections were up.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) errors: Vec<String>,
}

impl Report {
    /// A report with only what every scenario has.
    pub(crate) fn new(scenario: &'static str, target: Target, url: &str) -> Self {
        Self {
            scenario,
            target,
            url: url.to_owned(),
            publish_url: None,
            subscribers: None,
            rooms: None,
            publishers: None,
            messages: None,
            size: None,
            rate: None,
            scope: None,
            publisher_rooms: None,
            window: None,
            connections: 0,
            threads: 1,
            source_ips: 1,
            elapsed_s: 0.0,
            delivered: None,
            expected: None,
            lost: None,
            duplicated: None,
            invalid: None,
            loss_accounting: None,
            msgs_per_sec: None,
            publish_s: None,
            latency_us: None,
            handshakes_per_sec: None,
            handshake_us: None,
            hold_s: None,
            disconnected: 0,
            server_rss_kib: None,
            rss_per_conn_kib: None,
            server_cpu_s: None,
            server_ns_per_delivery: None,
            nodes: Vec::new(),
            redis_cpu_s: None,
            redis_cpu_ns_per_publish: None,
            timed_out: false,
            errors: Vec::new(),
        }
    }

    /// One JSON object.
    pub(crate) fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
    }

    /// A two-column table.
    pub(crate) fn table(&self) -> String {
        let node_keys: Vec<String> = (1..=self.nodes.len())
            .map(|i| format!("node {i}"))
            .collect();
        let mut rows: Vec<(&str, String)> = vec![
            ("scenario", self.scenario.to_owned()),
            ("target", format!("{:?}", self.target).to_lowercase()),
            ("url", self.url.clone()),
        ];
        if let Some(p) = &self.publish_url {
            rows.push(("publish url", p.clone()));
        }
        if let (Some(subs), Some(rooms)) = (self.subscribers, self.rooms) {
            let over = match self.nodes.len() {
                0 | 1 => String::new(),
                n => format!(", round-robin over {n} nodes"),
            };
            rows.push(("subscribers", format!("{subs} in {rooms} room(s){over}")));
        }
        if let (Some(p), Some(m), Some(s)) = (self.publishers, self.messages, self.size) {
            let rate = match self.rate {
                Some(r) if r > 0.0 => format!("{r} msgs/s each"),
                _ => "unlimited rate".to_owned(),
            };
            rows.push((
                "publishers",
                format!("{p} × {m} messages of {s} B to each room, {rate}"),
            ));
        }
        if let Some(scope) = self.scope {
            rows.push(("scope", scope.to_owned()));
        }
        rows.push((
            "connections",
            format!(
                "{} ({} source IP(s), {} thread(s))",
                self.connections, self.source_ips, self.threads
            ),
        ));
        rows.push(("elapsed", format!("{:.3} s", self.elapsed_s)));
        if let (Some(d), Some(e)) = (self.delivered, self.expected) {
            rows.push(("delivered", format!("{d} of {e} expected")));
        }
        if let Some(l) = self.lost {
            let how = match self.loss_accounting {
                Some(Accounting::InOrder) => " (counted assuming in-order delivery)",
                _ => "",
            };
            rows.push(("lost", format!("{l}{how}")));
        }
        if let Some(d) = self.duplicated {
            rows.push(("duplicated", d.to_string()));
        }
        if let Some(i) = self.invalid.filter(|&i| i > 0) {
            rows.push((
                "unrecognised",
                format!("{i} deliveries without a valid stamp"),
            ));
        }
        if let Some(r) = self.msgs_per_sec {
            rows.push(("throughput", format!("{} msgs/s delivered", thousands(r))));
        }
        if let Some(p) = self.publish_s {
            rows.push(("publishing", format!("{p:.3} s")));
        }
        if let Some(l) = &self.latency_us {
            rows.push(("latency", percentiles(l)));
        }
        if let Some(h) = self.handshakes_per_sec {
            rows.push(("handshakes", format!("{} /s", thousands(h))));
        }
        if let Some(l) = &self.handshake_us {
            rows.push(("handshake time", percentiles(l)));
        }
        if let Some(h) = self.hold_s {
            rows.push(("held", format!("{h} s")));
        }
        rows.push(("disconnected", self.disconnected.to_string()));
        if let Some(r) = &self.server_rss_kib {
            rows.push((
                "server RSS",
                format!(
                    "{} KiB before, {} KiB connected, {} KiB at the end",
                    r.before, r.connected, r.end
                ),
            ));
        }
        if let Some(r) = self.rss_per_conn_kib {
            rows.push(("RSS per connection", format!("{r:.2} KiB")));
        }
        if let Some(cpu) = self.server_cpu_s {
            let per = match self.server_ns_per_delivery {
                Some(ns) => format!(", {ns:.1} ns per delivery"),
                None => String::new(),
            };
            let of = match self.nodes.iter().filter(|n| n.pid.is_some()).count() {
                0 | 1 => String::new(),
                n => format!(" ({n} processes together)"),
            };
            rows.push(("server CPU", format!("{cpu:.3} s{per}{of}")));
        }
        for (key, n) in node_keys.iter().zip(&self.nodes) {
            rows.push((key, n.line()));
        }
        if let Some(cpu) = self.redis_cpu_s {
            let per = match self.redis_cpu_ns_per_publish {
                Some(ns) => format!(", {ns:.1} ns per publish"),
                None => String::new(),
            };
            rows.push(("Redis CPU", format!("{cpu:.3} s{per}")));
        }
        if self.timed_out {
            rows.push(("timed out", "yes".to_owned()));
        }
        for e in &self.errors {
            rows.push(("error", e.clone()));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }
}

impl NodeReport {
    /// The node's line of the table.
    fn line(&self) -> String {
        let mut out = self.url.clone();
        if let Some(pid) = self.pid {
            let _ = write!(out, " (pid {pid})");
        }
        let _ = write!(out, ": {} subscriber(s)", self.subscribers);
        if self.publishers > 0 {
            let _ = write!(out, " + {} publisher connection(s)", self.publishers);
        }
        let _ = write!(out, ", {} deliveries", thousands(self.deliveries as f64));
        if let Some(cpu) = self.cpu_s {
            let _ = write!(out, ", CPU {cpu:.3} s");
        }
        if let Some(ns) = self.cpu_ns_per_delivery {
            let _ = write!(out, ", {ns:.1} ns per delivery");
        }
        if let Some(r) = self.rss_kib_per_connection {
            let _ = write!(out, ", {r:.2} KiB RSS per connection");
        }
        out
    }
}

fn percentiles(p: &Percentiles) -> String {
    format!(
        "p50 {} µs, p90 {} µs, p99 {} µs, max {} µs",
        p.p50, p.p90, p.p99, p.max
    )
}

/// `1234567.8` as `1,234,568`.
fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let digits = n.to_string();
    let mut groups: Vec<&str> = Vec::new();
    let mut end = digits.len();
    while end > 3 {
        groups.push(&digits[end - 3..end]);
        end -= 3;
    }
    groups.push(&digits[..end]);
    groups.reverse();
    groups.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
    }

    #[test]
    fn rss_per_connection() {
        let r = Rss {
            before: 1000,
            connected: 3000,
            end: 3100,
        };
        assert_eq!(r.per_connection(1000), Some(2.0));
        assert_eq!(r.per_connection(0), None);
    }

    #[test]
    fn json_leaves_out_what_does_not_apply() {
        let mut r = Report::new("connect", Target::Nats, "ws://127.0.0.1:8222");
        r.connections = 10;
        r.handshakes_per_sec = Some(1000.0);
        let v: serde_json::Value = serde_json::from_str(&r.json()).expect("json");
        assert_eq!(v["scenario"], "connect");
        assert_eq!(v["target"], "nats");
        assert_eq!(v["connections"], 10);
        assert_eq!(v["handshakes_per_sec"], 1000.0);
        assert!(v.get("delivered").is_none());
        assert!(v.get("latency_us").is_none());
        assert!(v.get("errors").is_none());
        assert!(v.get("publish_url").is_none());
        assert!(v.get("server_cpu_s").is_none());
        assert!(r.table().contains("handshakes"));
    }

    #[test]
    fn json_fanout_fields() {
        let mut r = Report::new("fanout", Target::Switchboard, "ws://127.0.0.1:8080/ws");
        r.delivered = Some(5);
        r.latency_us = Some(Percentiles {
            p50: 1.0,
            p90: 2.0,
            p99: 3.0,
            max: 4.5,
        });
        r.server_rss_kib = Some(Rss {
            before: 1,
            connected: 2,
            end: 3,
        });
        r.loss_accounting = Some(Accounting::InOrder);
        r.publish_url = Some("ws://127.0.0.1:8081/ws".to_owned());
        r.server_cpu_s = Some(1.25);
        r.server_ns_per_delivery = Some(250.0);
        let v: serde_json::Value = serde_json::from_str(&r.json()).expect("json");
        assert_eq!(v["server_cpu_s"], 1.25);
        assert_eq!(v["server_ns_per_delivery"], 250.0);
        assert!(r.table().lines().any(
            |l| l.starts_with("server CPU ") && l.ends_with(" 1.250 s, 250.0 ns per delivery")
        ));
        assert_eq!(v["publish_url"], "ws://127.0.0.1:8081/ws");
        assert!(r
            .table()
            .lines()
            .any(|l| l.starts_with("publish url ") && l.ends_with(" ws://127.0.0.1:8081/ws")));
        assert_eq!(v["latency_us"]["max"], 4.5);
        assert_eq!(v["server_rss_kib"]["connected"], 2);
        assert_eq!(v["loss_accounting"], "in_order");
        assert_eq!(v["delivered"], 5);
    }

    #[test]
    fn json_nodes_and_redis() {
        // One URL: neither field.
        let r = Report::new("fanout", Target::Switchboard, "ws://127.0.0.1:8080/ws");
        let v: serde_json::Value = serde_json::from_str(&r.json()).expect("json");
        assert!(v.get("nodes").is_none());
        assert!(v.get("redis_cpu_ns_per_publish").is_none());
        assert!(!r.table().contains("node 1"));

        let mut r = Report::new(
            "fanout",
            Target::Switchboard,
            "ws://127.0.0.1:8080/ws,ws://127.0.0.1:8082/ws",
        );
        r.subscribers = Some(3);
        r.rooms = Some(1);
        r.nodes = vec![
            NodeReport {
                url: "ws://127.0.0.1:8080/ws".to_owned(),
                pid: Some(11),
                subscribers: 2,
                publishers: 1,
                deliveries: 2000,
                cpu_s: Some(0.02),
                cpu_ns_per_delivery: Some(10000.0),
                rss_kib_per_connection: Some(3.5),
            },
            NodeReport {
                url: "ws://127.0.0.1:8082/ws".to_owned(),
                pid: None,
                subscribers: 1,
                publishers: 0,
                deliveries: 1000,
                cpu_s: None,
                cpu_ns_per_delivery: None,
                rss_kib_per_connection: None,
            },
        ];
        r.redis_cpu_s = Some(0.01);
        r.redis_cpu_ns_per_publish = Some(10000.0);
        let v: serde_json::Value = serde_json::from_str(&r.json()).expect("json");
        assert_eq!(v["nodes"][0]["pid"], 11);
        assert_eq!(v["nodes"][0]["deliveries"], 2000);
        assert_eq!(v["nodes"][0]["cpu_ns_per_delivery"], 10000.0);
        assert_eq!(v["nodes"][0]["rss_kib_per_connection"], 3.5);
        assert!(v["nodes"][1].get("pid").is_none());
        assert_eq!(v["nodes"][1]["url"], "ws://127.0.0.1:8082/ws");
        assert_eq!(v["redis_cpu_ns_per_publish"], 10000.0);
        let table = r.table();
        assert!(table.lines().any(|l| l.starts_with("node 1 ")
            && l.contains("ws://127.0.0.1:8080/ws (pid 11)")
            && l.contains("2,000 deliveries")
            && l.contains("10000.0 ns per delivery")));
        assert!(table.lines().any(|l| l.starts_with("node 2 ")));
        assert!(table.contains("round-robin over 2 nodes"));
        assert!(table
            .lines()
            .any(|l| l.starts_with("Redis CPU ") && l.ends_with("10000.0 ns per publish")));
    }
}
