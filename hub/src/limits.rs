//! Per-client limits at the handshake: how many sessions one IP may hold at once and how many
//! handshakes it may make per second (a token bucket with bursts of two seconds of its rate),
//! both answered 429 with `Retry-After`. The client's IP is the connection's peer, or, when the
//! peer is one of `trusted_proxies`, the last address of its `X-Forwarded-For` that is not a
//! trusted proxy itself (a client cannot forge what a trusted proxy appended).

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use dashmap::DashMap;

use crate::config::{Config, IpNet};

/// Seconds of the handshake rate a client may use at once.
const BURST_SECONDS: f64 = 2.0;

/// The per-IP state of a node.
#[derive(Debug)]
pub(crate) struct IpLimits {
    table: DashMap<IpAddr, IpState>,
    max_connections: usize,
    rate: f64,
}

#[derive(Debug)]
struct IpState {
    connections: usize,
    tokens: f64,
    at: Instant,
}

/// Why a client IP may not open a session now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpRefusal {
    /// It holds `max_connections_per_ip` sessions.
    Connections,
    /// It is over its handshake rate; a handshake is allowed again after this long.
    Rate(Duration),
}

impl IpLimits {
    /// The node's per-IP limits, or `None` when neither is set.
    pub(crate) fn new(config: &Config) -> Option<IpLimits> {
        let rate = config.handshakes_per_ip_per_second;
        (config.max_connections_per_ip > 0 || rate > 0.0).then(|| IpLimits {
            table: DashMap::new(),
            max_connections: config.max_connections_per_ip,
            rate,
        })
    }

    fn capacity(&self) -> f64 {
        (self.rate * BURST_SECONDS).max(1.0)
    }

    /// Charges a handshake of `ip` to its rate.
    pub(crate) fn handshake(&self, ip: IpAddr) -> Result<(), IpRefusal> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let capacity = self.capacity();
        let now = Instant::now();
        let mut state = self.table.entry(ip).or_insert_with(|| IpState {
            connections: 0,
            tokens: capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(state.at).as_secs_f64();
        state.at = now;
        state.tokens = (state.tokens + elapsed * self.rate).min(capacity);
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - state.tokens) / self.rate;
            Err(IpRefusal::Rate(Duration::from_secs_f64(wait)))
        }
    }

    /// Takes one of `ip`'s sessions; [`IpLimits::release`] gives it back.
    pub(crate) fn open(&self, ip: IpAddr) -> Result<(), IpRefusal> {
        let capacity = self.capacity();
        let mut state = self.table.entry(ip).or_insert_with(|| IpState {
            connections: 0,
            tokens: capacity,
            at: Instant::now(),
        });
        if self.max_connections > 0 && state.connections >= self.max_connections {
            return Err(IpRefusal::Connections);
        }
        state.connections += 1;
        Ok(())
    }

    /// One of `ip`'s sessions ended.
    pub(crate) fn release(&self, ip: IpAddr) {
        if let Some(mut state) = self.table.get_mut(&ip) {
            state.connections = state.connections.saturating_sub(1);
        }
    }

    /// Forgets the IPs that hold no session and whose bucket has refilled: the table holds
    /// only clients that are connected or were throttled lately.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let (rate, capacity) = (self.rate, self.capacity());
        self.table.retain(|_, s| {
            let refilled = rate <= 0.0
                || s.tokens + now.saturating_duration_since(s.at).as_secs_f64() * rate >= capacity;
            s.connections > 0 || !refilled
        });
    }

    /// IPs in the table.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.len()
    }
}

/// The client's IP: `peer`, or what a trusted proxy says it forwarded for.
pub(crate) fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if trusted.is_empty() || !is_trusted(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    // Right to left: each trusted proxy appended the address it received from; the first one
    // that is not a trusted proxy is the client.
    let mut client = peer;
    for item in header.rsplit(',') {
        match item.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip) => client = ip,
            Ok(ip) => return ip,
            Err(_) => return client,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let trusted = [
            IpNet::parse("10.0.0.0/8").unwrap(),
            IpNet::parse("::1").unwrap(),
        ];
        let from = |peer: &str, xff: Option<&str>| client_ip(ip(peer), xff, &trusted);
        assert_eq!(
            from("203.0.113.9", Some("1.2.3.4")),
            ip("203.0.113.9"),
            "untrusted peer"
        );
        assert_eq!(from("10.1.2.3", Some("1.2.3.4")), ip("1.2.3.4"));
        assert_eq!(
            from("10.1.2.3", Some("6.6.6.6, 1.2.3.4, 10.9.9.9")),
            ip("1.2.3.4"),
            "the last untrusted one: what the client wrote before it is not believed"
        );
        assert_eq!(from("10.1.2.3", None), ip("10.1.2.3"));
        assert_eq!(from("10.1.2.3", Some("junk")), ip("10.1.2.3"));
        assert_eq!(from("::1", Some("2001:db8::5")), ip("2001:db8::5"));
        assert_eq!(
            client_ip(ip("10.1.2.3"), Some("1.2.3.4"), &[]),
            ip("10.1.2.3")
        );
        assert!(IpNet::parse("10.0.0.0/33").is_none());
        assert!(IpNet::parse("::ffff:10.0.0.1").is_some_and(|n| n.contains(ip("::ffff:10.0.0.1"))));
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    }

    #[test]
    fn connections_and_handshakes_are_counted_per_ip_and_forgotten_when_idle() {
        let mut config = Config::defaults();
        config.max_connections_per_ip = 2;
        config.handshakes_per_ip_per_second = 1.0;
        let limits = IpLimits::new(&config).unwrap();
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        assert!(limits.open(a).is_ok() && limits.open(a).is_ok());
        assert_eq!(limits.open(a), Err(IpRefusal::Connections));
        assert!(limits.open(b).is_ok(), "each IP has its own count");
        limits.release(a);
        assert!(limits.open(a).is_ok());
        // Two handshakes at once (bursts of 2 s at 1/s), then about a second to wait.
        assert!(limits.handshake(b).is_ok() && limits.handshake(b).is_ok());
        match limits.handshake(b) {
            Err(IpRefusal::Rate(wait)) => assert!(wait <= Duration::from_secs(1), "{wait:?}"),
            other => panic!("{other:?}"),
        }
        limits.release(b);
        limits.sweep();
        assert_eq!(limits.len(), 2, "b is throttled still, a is connected");
        assert!(
            IpLimits::new(&Config::defaults()).is_none(),
            "off by default"
        );
    }
}
