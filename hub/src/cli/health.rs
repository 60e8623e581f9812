//! `switchboard health`: asks a running hub's admin listener whether it is ready, so that a
//! container's health check needs nothing but the binary (no curl in the image).
//!
//! The address comes from the same configuration the hub reads (file, `SWITCHBOARD_*`, flags),
//! so the check and the hub it checks cannot disagree about where the admin listener is.

use std::{
    io::{self, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    time::Duration,
};

/// The most of the answer that is read: a health body is a few dozen bytes.
const MAX_ANSWER: u64 = 16 * 1024;

/// The address to connect to for a listener bound to `listen`: a wildcard address is reached
/// through the loopback address of its family.
pub(crate) fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// What the hub answered: the HTTP status and the body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: String,
}

/// `GET path` on `addr` over HTTP/1.1, within `timeout` for the connection and each read.
pub(crate) fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Answer> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: switchboard-health\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw)?;
    parse(&raw).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP answer"))
}

/// The status and body of an HTTP/1.1 response (the hub answers health checks with a
/// `Content-Length` body, never chunked).
fn parse(raw: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    Some(Answer {
        status,
        body: body.trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn wildcard_listeners_are_reached_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:8081".parse().unwrap();
        assert_eq!(reachable(v4), "127.0.0.1:8081".parse().unwrap());
        let v6: SocketAddr = "[::]:8081".parse().unwrap();
        assert_eq!(reachable(v6), "[::1]:8081".parse().unwrap());
        let exact: SocketAddr = "10.1.2.3:9".parse().unwrap();
        assert_eq!(reachable(exact), exact);
    }

    #[test]
    fn answers_are_parsed_or_refused() {
        let ok = parse(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\n{\"a\":1}\n")
            .unwrap();
        assert_eq!(ok.status, 503);
        assert_eq!(ok.body, "{\"a\":1}");
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_none());
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_none());
        assert!(parse(b"HTTP/1.1 abc OK\r\n\r\n").is_none());
        assert!(parse(b"").is_none());
    }
}
