//! Where the clients connect, from which source address, and the WebSocket handshake.
//!
//! Only loopback targets are accepted: the bench is for a server on this machine. Client sockets
//! can be spread over several loopback source addresses (`--source-ips K`: 127.0.0.1 …
//! 127.0.0.K, round-robin by connection index), each of which has its own ephemeral port range,
//! so one machine can open more connections than one address's ~28,000 ports allow.
//!
//! tokio-tungstenite does every handshake. Publishers and the `connect` scenario keep its
//! WebSocket stream ([`Ws`]); subscribers take the TCP stream back right after the handshake
//! ([`Endpoint::connect_raw`]) and read frames with [`crate::wire`].

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs},
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpSocket, TcpStream},
};
use tokio_tungstenite::{
    client_async_with_config,
    tungstenite::{
        client::IntoClientRequest as _,
        http::{HeaderValue, Uri},
        protocol::WebSocketConfig,
    },
    WebSocketStream,
};

use crate::{
    error::{Error, Result},
    wire::RawWs,
};

/// A client connection.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// The server the bench talks to.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// The address connections go to.
    pub(crate) addr: SocketAddr,
    /// `ws://host:port` as written in the URL (the Host header keeps the user's spelling).
    origin: String,
    /// The URL's path without a trailing `/` (empty for the root).
    path: String,
    /// The URL's query, if any.
    query: Option<String>,
    /// Source addresses to bind to, round-robin; empty: let the kernel choose.
    sources: Vec<IpAddr>,
    /// Subscribers ([`Endpoint::connect_raw`]) offer permessage-deflate (`--deflate`).
    pub(crate) deflate: bool,
}

impl Endpoint {
    /// Parses `url`, the value of command-line option `option` (`--url`, `--publish-url`), and
    /// checks it is a loopback `ws://` URL; `source_ips` as `--source-ips`.
    pub(crate) fn parse(option: &str, url: &str, source_ips: u16) -> Result<Self> {
        let uri: Uri = url
            .parse()
            .map_err(|e| Error(format!("{option} `{url}` is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some("wss") => {
                return Err(Error(format!(
                    "{option} `{url}`: wss:// is not supported (the bench targets a loopback server; use ws://)"
                )))
            }
            _ => return Err(Error(format!("{option} `{url}` must start with ws://"))),
        }
        let host = uri
            .host()
            .ok_or_else(|| Error(format!("{option} `{url}` has no host")))?;
        let port = uri.port_u16().unwrap_or(80);
        let ip = loopback_ip(host, port).map_err(|e| e.context(format!("{option} `{url}`")))?;
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
        let sources = match (ip, source_ips) {
            (_, 0) => return Err("--source-ips must be at least 1".into()),
            (_, 1) => Vec::new(),
            (IpAddr::V4(_), k) => (0..u32::from(k))
                .map(|i| IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::LOCALHOST) + i)))
                .collect(),
            (IpAddr::V6(_), _) => {
                return Err(Error(format!(
                    "--source-ips above 1 needs an IPv4 target (127.0.0.0/8); `{url}` is IPv6"
                )))
            }
        };
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            origin: format!("ws://{authority}"),
            path: uri.path().trim_end_matches('/').to_owned(),
            query: uri.query().map(str::to_owned),
            sources,
            deflate: false,
        })
    }

    /// The URL for a connection: the base URL's path followed by `suffix` (e.g. `/room-3`), and
    /// `query` (or else the base URL's query).
    pub(crate) fn url(&self, suffix: &str, query: Option<&str>) -> String {
        let mut url = format!("{}{}{}", self.origin, self.path, suffix);
        if url.len() == self.origin.len() {
            url.push('/');
        }
        if let Some(q) = query.or(self.query.as_deref()) {
            url.push('?');
            url.push_str(q);
        }
        url
    }

    /// Whether connections to `other` reach the same server and request the same URLs (the
    /// same address, path and query; the spelling of the host may differ).
    pub(crate) fn same_server(&self, other: &Endpoint) -> bool {
        self.addr == other.addr && self.path == other.path && self.query == other.query
    }

    /// The source address of connection `index`, if sources are spread.
    pub(crate) fn source(&self, index: usize) -> Option<IpAddr> {
        match self.sources.len() {
            0 => None,
            n => Some(self.sources[index % n]),
        }
    }

    /// Opens connection `index` (TCP from its source address, then the WebSocket handshake on
    /// `url`).
    pub(crate) async fn connect(&self, index: usize, url: &str) -> Result<Ws> {
        let (stream, from) = self.tcp_for(index).await?;
        let (ws, _response) = client_async_with_config(url, stream, Some(config()))
            .await
            .map_err(|e| Error::from(e).context(format!("connection {index} to {url}{from}")))?;
        Ok(ws)
    }

    /// Opens connection `index` like [`Endpoint::connect`], then takes the TCP stream back from
    /// tungstenite for the subscribers' own frame reader, with whatever the handshake read past
    /// the HTTP response (the server's first frames, if they came in the same segment).
    pub(crate) async fn connect_raw(&self, index: usize, url: &str) -> Result<RawWs> {
        let (mut stream, from) = self.tcp_for(index).await?;
        let mut seen = Vec::new();
        {
            let tap = Tap {
                inner: &mut stream,
                seen: &mut seen,
            };
            // Only the handshake runs on `tap`: tungstenite keeps the bytes after the response
            // head as the start of its frame buffer, and dropping it here loses them, so the
            // copy in `seen` is where they are taken from.
            let mut request = url
                .into_client_request()
                .map_err(|e| Error::from(e).context(format!("connection {index} to {url}")))?;
            if self.deflate {
                request.headers_mut().insert(
                    "Sec-WebSocket-Extensions",
                    HeaderValue::from_static("permessage-deflate; client_max_window_bits"),
                );
            }
            let (ws, _response) = client_async_with_config(request, tap, Some(config()))
                .await
                .map_err(|e| {
                    Error::from(e).context(format!("connection {index} to {url}{from}"))
                })?;
            drop(ws);
        }
        let head = head_len(&seen).ok_or_else(|| {
            Error(format!(
                "connection {index} to {url}{from}: no end of the HTTP response in what the handshake read"
            ))
        })?;
        Ok(RawWs::new(stream, &seen[head..], index as u64))
    }

    /// A TCP connection for connection `index`, and ` from <source>` for messages.
    async fn tcp_for(&self, index: usize) -> Result<(TcpStream, String)> {
        let source = self.source(index);
        let from = match source {
            Some(ip) => format!(" from {ip}"),
            None => String::new(),
        };
        let stream = self
            .tcp(source)
            .await
            .map_err(|e| e.context(format!("connection {index} to {}{from}", self.addr)))?;
        Ok((stream, from))
    }

    async fn tcp(&self, source: Option<IpAddr>) -> Result<TcpStream> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(ip) = source {
            // A port in TIME_WAIT from an earlier run may be bound again.
            socket.set_reuseaddr(true)?;
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
}

/// A stream that keeps a copy of every byte read through it (the handshake's).
struct Tap<'a> {
    inner: &'a mut TcpStream,
    seen: &'a mut Vec<u8>,
}

impl AsyncRead for Tap<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut *this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.seen.extend_from_slice(&buf.filled()[before..]);
        }
        r
    }
}

impl AsyncWrite for Tap<'_> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, b)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The length of the HTTP response head at the start of `b`, through the empty line that ends
/// it (lines ending in CRLF or a bare LF, as httparse reads them); `None` if it is not all there.
fn head_len(b: &[u8]) -> Option<usize> {
    let mut pos = 0;
    while let Some(n) = memchr::memchr(b'\n', &b[pos..]) {
        let line = &b[pos..pos + n];
        pos += n + 1;
        if line.is_empty() || line == b"\r" {
            return Some(pos);
        }
    }
    None
}

/// The loopback address to connect to for `host`, or why it is refused.
fn loopback_ip(host: &str, port: u16) -> Result<IpAddr> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let refuse = || {
        Error(format!(
            "refusing host `{host}`: the bench only targets this machine (127.0.0.0/8, ::1 or localhost)"
        ))
    };
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return if ip.is_loopback() {
            Ok(ip)
        } else {
            Err(refuse())
        };
    }
    if !literal.eq_ignore_ascii_case("localhost") {
        return Err(refuse());
    }
    let addrs: Vec<IpAddr> = (literal, port)
        .to_socket_addrs()
        .map_err(|e| Error(format!("cannot resolve `{host}`: {e}")))?
        .map(|a| a.ip())
        .collect();
    if addrs.iter().any(|ip| !ip.is_loopback()) {
        return Err(Error(format!(
            "refusing host `{host}`: it resolves to a non-loopback address ({addrs:?})"
        )));
    }
    // Prefer IPv4, which --source-ips can spread.
    addrs
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| Error(format!("`{host}` resolves to no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_accepted() {
        let ep = Endpoint::parse("--url", "ws://127.0.0.1:8080/ws", 1).expect("ok");
        assert_eq!(ep.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(ep.url("", None), "ws://127.0.0.1:8080/ws");
        assert_eq!(ep.source(5), None);

        let ep = Endpoint::parse("--url", "ws://127.1.2.3:9/", 1).expect("ok");
        assert_eq!(ep.url("/room-2", None), "ws://127.1.2.3:9/room-2");
        assert_eq!(ep.url("", None), "ws://127.1.2.3:9/");

        let ep = Endpoint::parse("--url", "ws://[::1]:3000", 1).expect("ok");
        assert_eq!(ep.addr, "[::1]:3000".parse().expect("addr"));
        assert_eq!(
            ep.url("/socket.io/", Some("EIO=4&transport=websocket")),
            "ws://[::1]:3000/socket.io/?EIO=4&transport=websocket"
        );

        let ep = Endpoint::parse("--url", "ws://localhost:4222", 1).expect("ok");
        assert!(ep.addr.ip().is_loopback());
        assert_eq!(ep.url("", None), "ws://localhost:4222/");
    }

    #[test]
    fn other_hosts_are_refused() {
        for url in [
            "ws://10.0.0.1:8080/ws",
            "ws://192.168.1.1/ws",
            "ws://example.com/ws",
            "ws://0.0.0.0:8080",
            "ws://[::ffff:127.0.0.1]:80",
            "http://127.0.0.1:8080/ws",
            "wss://127.0.0.1:8080/ws",
            "127.0.0.1:8080",
        ] {
            assert!(Endpoint::parse("--url", url, 1).is_err(), "{url}");
        }
        let e = Endpoint::parse("--url", "ws://8.8.8.8/ws", 1).expect_err("refused");
        assert!(e.0.contains("only targets this machine"), "{e}");
    }

    #[test]
    fn same_server_ignores_spelling_only() {
        let parse = |url| Endpoint::parse("--publish-url", url, 1).expect("ok");
        let a = parse("ws://127.0.0.1:8080/ws");
        assert!(a.same_server(&parse("ws://127.0.0.1:8080/ws/")));
        assert!(a.same_server(&parse("ws://localhost:8080/ws")));
        assert!(!a.same_server(&parse("ws://127.0.0.1:8081/ws")));
        assert!(!a.same_server(&parse("ws://127.0.0.2:8080/ws")));
        assert!(!a.same_server(&parse("ws://127.0.0.1:8080/other")));
        assert!(!a.same_server(&parse("ws://127.0.0.1:8080/ws?x=1")));
    }

    #[test]
    fn errors_name_the_option() {
        let e = Endpoint::parse("--publish-url", "ws://10.0.0.1:80/ws", 1).expect_err("refused");
        assert!(
            e.0.starts_with("--publish-url `ws://10.0.0.1:80/ws`"),
            "{e}"
        );
        let e = Endpoint::parse("--publish-url", "http://127.0.0.1/", 1).expect_err("refused");
        assert!(e.0.starts_with("--publish-url "), "{e}");
    }

    #[test]
    fn sources_round_robin() {
        let ep = Endpoint::parse("--url", "ws://127.0.0.1:8080/ws", 3).expect("ok");
        let ips: Vec<_> = (0..4).filter_map(|i| ep.source(i)).collect();
        let want: Vec<IpAddr> = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"]
            .iter()
            .map(|s| s.parse().expect("ip"))
            .collect();
        assert_eq!(ips, want);
        assert!(Endpoint::parse("--url", "ws://[::1]:80", 2).is_err());
        assert!(Endpoint::parse("--url", "ws://127.0.0.1:80", 0).is_err());
    }

    #[test]
    fn response_head_length() {
        assert_eq!(head_len(b"HTTP/1.1 101 OK\r\nA: b\r\n\r\n"), Some(25));
        assert_eq!(head_len(b"HTTP/1.1 101 OK\r\n\r\n\x81\x00"), Some(19));
        assert_eq!(head_len(b"HTTP/1.1 101 OK\nA: b\n\nrest"), Some(22));
        assert_eq!(head_len(b"HTTP/1.1 101 OK\r\nA: b\r\n"), None);
        assert_eq!(head_len(b""), None);
    }

    /// The server's first frames in the same write as the 101 response: tungstenite reads them
    /// with the response, and the raw connection must still see them.
    #[tokio::test]
    async fn frames_read_with_the_handshake_are_kept() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

        use crate::wire::{Kind, Step};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut req = Vec::new();
            let mut chunk = [0u8; 1024];
            while head_len(&req).is_none() {
                let n = s.read(&mut chunk).await.expect("read");
                assert!(n > 0, "request ended early");
                req.extend_from_slice(&chunk[..n]);
            }
            let req = String::from_utf8(req).expect("ascii");
            let key = req
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .expect("a key")
                .trim();
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            )
            .into_bytes();
            out.extend_from_slice(b"\x81\x05hello\x89\x02hb\x82\x03");
            s.write_all(&out).await.expect("write");
            // The rest of the last frame later.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            s.write_all(b"abc").await.expect("write");
            // The pong comes back masked.
            let mut pong = [0u8; 8];
            s.read_exact(&mut pong).await.expect("pong");
            assert_eq!(pong[..2], [0x8A, 0x82]);
            let key = &pong[2..6];
            assert_eq!([pong[6] ^ key[0], pong[7] ^ key[1]], *b"hb");
        });
        let url = format!("ws://127.0.0.1:{port}/ws");
        let ep = Endpoint::parse("--url", &url, 1).expect("ok");
        let mut ws = ep.connect_raw(0, &url).await.expect("handshake");
        // One write of a few hundred bytes on loopback arrives whole: the handshake's read took
        // the frames too (this is the case under test).
        assert_eq!(ws.reader.buffered(), 13);
        let mut got = Vec::new();
        while got.len() < 2 {
            match ws.next_data().expect("frames") {
                Step::Data(k, p) => got.push((k, p.to_vec())),
                Step::Control => {}
                Step::Empty => ws.fill().await.expect("read"),
            }
        }
        assert_eq!(
            got,
            vec![
                (Kind::Text, b"hello".to_vec()),
                (Kind::Binary, b"abc".to_vec())
            ]
        );
        ws.flush().await.expect("pong");
        server.await.expect("server");
    }
}
