//! `switchboard pub --http`: the hub's HTTP publishing API, `POST /api/rooms/{room}/publish` for
//! one message and one chunked `POST /api/rooms/{room}/stream` for the lines of stdin.
//!
//! A small hand-written HTTP/1.1 client over tokio's `TcpStream`, plain `http://` only: the two
//! requests it makes are fixed in shape, and a general HTTP client crate (with its TLS stack)
//! would weigh more than the rest of the command-line client. It writes the request, a streamed
//! body in chunked encoding, and reads one response (`Content-Length`, chunked, or up to the end
//! of the connection).

use std::{io, process::ExitCode, time::Duration};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpStream,
    time::timeout,
};

use super::{
    client::{self, describe_refusal, one_line, Failure, Tally, EXIT_FAILURE, EXIT_INTERRUPTED},
    publish::{report_error, ticker, Line, Lines},
};

const COMMAND: &str = "pub";

/// Characters of a room name written as they are in the path: RFC 3986's unreserved ones.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// Time for the answer to a single publish, and for the answer to a stream once its body ended.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest response head.
const MAX_HEAD: usize = 64 * 1024;
/// Longest response body (a stream's summary lists at most 1,000 refused lines).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// What `pub --http` was asked to do.
#[derive(Debug)]
pub(crate) struct HttpPublish<'a> {
    pub(crate) url: &'a str,
    pub(crate) api_key: Option<&'a str>,
    pub(crate) room: &'a str,
    pub(crate) scope: Option<&'static str>,
    pub(crate) force_string: bool,
    pub(crate) progress: bool,
}

/// Runs `switchboard pub --http`: one message when `data` is given, else the lines of stdin.
pub(crate) fn main(job: HttpPublish<'_>, data: Option<Box<RawValue>>) -> ExitCode {
    let base = match Base::parse(job.url) {
        Ok(base) => base,
        Err(failure) => return failure.report(COMMAND),
    };
    let Some(key) = job.api_key else {
        return Failure::refused("--http needs --api-key (or SWITCHBOARD_API_KEY)").report(COMMAND);
    };
    // Checked as a header value: no control characters (no CR or LF to end the header early).
    if let Err(failure) = client::bearer("API key", key) {
        return failure.report(COMMAND);
    }
    let key = format!("Bearer {key}");
    client::block_on(COMMAND, async move {
        match data {
            Some(data) => tokio::select! {
                result = publish_one(&base, &key, &job, &data) => match result {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(failure) => failure.report(COMMAND),
                },
                () = client::interrupted() => ExitCode::from(EXIT_INTERRUPTED),
            },
            None => {
                let mut tally = Tally::new();
                tokio::select! {
                    code = publish_stream(&base, &key, &job, &mut tally) => code,
                    () = client::interrupted() => {
                        eprintln!(
                            "switchboard {COMMAND}: interrupted after sending {} lines (the hub \
                             publishes each complete line it received)",
                            tally.published
                        );
                        ExitCode::from(EXIT_INTERRUPTED)
                    }
                }
            }
        }
    })
}

/// The hub's HTTP address: `http://host[:port][/prefix]`.
#[derive(Debug, PartialEq, Eq)]
struct Base {
    /// `host[:port]` as given, for the `Host` header.
    authority: String,
    host: String,
    port: u16,
    /// A path prefix (a proxy's), without its trailing `/`.
    prefix: String,
}

impl Base {
    fn parse(url: &str) -> Result<Base, Failure> {
        let bad = |why: &str| Failure::refused(format!("{url}: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected the hub's HTTP address, such as http://127.0.0.1:8080"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "http" => {}
            "https" => return Err(bad(&client::no_tls("https"))),
            "ws" | "wss" => {
                return Err(bad(
                    "with --http, URL is the hub's HTTP address, such as http://127.0.0.1:8080",
                ))
            }
            _ => {
                return Err(bad(
                    "expected the hub's HTTP address, such as http://127.0.0.1:8080",
                ))
            }
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') || path.contains(['?', '#']) {
            return Err(bad(
                "expected http://host:port, optionally with a path prefix",
            ));
        }
        let bad_port = || bad("the port is not a number from 0 to 65535");
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address lacks its `]`"))?;
            let port = match after {
                "" => 80,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(bad_port)?,
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, port.parse().map_err(|_| bad_port())?),
                None => (authority, 80),
            }
        };
        Ok(Base {
            authority: authority.to_owned(),
            host: host.to_owned(),
            port,
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The request target of a room's route (`publish` or `stream`).
    fn target(&self, room: &str, route: &str, scope: Option<&str>) -> String {
        let room = utf8_percent_encode(room, PATH_SEGMENT);
        match scope {
            Some(scope) => format!("{}/api/rooms/{room}/{route}?scope={scope}", self.prefix),
            None => format!("{}/api/rooms/{room}/{route}", self.prefix),
        }
    }

    /// `http://authority` (and the prefix), for messages.
    fn shown(&self) -> String {
        format!("http://{}{}", self.authority, self.prefix)
    }

    async fn connect(&self) -> Result<TcpStream, Failure> {
        let connecting = TcpStream::connect((self.host.as_str(), self.port));
        match timeout(client::CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(e)) => Err(Failure::failed(format!("{}: {e}", self.shown()))),
            Err(_) => Err(Failure::failed(format!(
                "{}: no connection within {} s",
                self.shown(),
                client::CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The request head, up to and including its empty line.
    fn head(&self, target: &str, key: &str, extra: &str) -> String {
        format!(
            "POST {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: {key}\r\n\
             User-Agent: switchboard-cli/{}\r\nConnection: close\r\n{extra}\r\n",
            self.authority,
            env!("CARGO_PKG_VERSION"),
        )
    }
}

/// The failure for a response that is not a success: 2 for a 4xx, 1 otherwise.
fn refusal(base: &Base, response: &Response) -> Failure {
    let text = format!(
        "{}: {}",
        base.shown(),
        describe_refusal(response.status, Some(&response.reason), &response.body)
    );
    if (400..500).contains(&response.status) {
        Failure::refused(text)
    } else {
        Failure::failed(text)
    }
}

async fn publish_one(
    base: &Base,
    key: &str,
    job: &HttpPublish<'_>,
    data: &RawValue,
) -> Result<(), Failure> {
    #[derive(Serialize)]
    struct Body<'a> {
        data: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        scope: Option<&'a str>,
    }
    let body = serde_json::to_string(&Body {
        data,
        scope: job.scope,
    })
    .map_err(|e| Failure::failed(format!("cannot encode the request: {e}")))?;
    let target = base.target(job.room, "publish", None);
    let head = base.head(
        &target,
        key,
        &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ),
    );
    let stream = base.connect().await?;
    let (read, mut write) = stream.into_split();
    let io_failure = |e: io::Error| Failure::failed(format!("{}: {e}", base.shown()));
    let exchange = async {
        write.write_all(head.as_bytes()).await?;
        write.write_all(body.as_bytes()).await?;
        write.flush().await?;
        read_response(&mut BufReader::new(read)).await
    };
    let response = timeout(ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            Failure::failed(format!(
                "{}: no answer within {} s",
                base.shown(),
                ANSWER_TIMEOUT.as_secs()
            ))
        })?
        .map_err(io_failure)?;
    if response.status == 200 {
        Ok(())
    } else {
        Err(refusal(base, &response))
    }
}

/// The stream route's answer.
#[derive(Debug, Deserialize)]
struct StreamSummary {
    published: u64,
    rejected_count: u64,
    ended: Option<String>,
}

async fn publish_stream(
    base: &Base,
    key: &str,
    job: &HttpPublish<'_>,
    tally: &mut Tally,
) -> ExitCode {
    match stream(base, key, job, tally).await {
        Ok(code) => code,
        Err(failure) => failure.report(COMMAND),
    }
}

async fn stream(
    base: &Base,
    key: &str,
    job: &HttpPublish<'_>,
    tally: &mut Tally,
) -> Result<ExitCode, Failure> {
    let target = base.target(job.room, "stream", job.scope);
    let head = base.head(
        &target,
        key,
        "Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n",
    );
    let stream = base.connect().await?;
    let (read, write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut writer = tokio::io::BufWriter::new(write);
    let io_failure = |e: io::Error| Failure::failed(format!("{}: {e}", base.shown()));
    // The head goes out at once: a refusal (a wrong key) comes back before any line is read.
    writer
        .write_all(head.as_bytes())
        .await
        .map_err(io_failure)?;
    writer.flush().await.map_err(io_failure)?;
    let mut lines = Lines::stdin(job.force_string);
    let response = read_response(&mut reader);
    tokio::pin!(response);
    let early = tokio::select! {
        response = &mut response => Some(response),
        written = write_body(&mut writer, &mut lines, tally, job.progress) => {
            match written {
                Ok(()) => None,
                // The hub may have answered and closed: its answer tells more than the error.
                Err(e) => match timeout(Duration::from_secs(5), &mut response).await {
                    Ok(Ok(response)) => Some(Ok(response)),
                    _ => return Err(io_failure(e)),
                },
            }
        }
    };
    let response = match early {
        Some(response) => response,
        None => match timeout(ANSWER_TIMEOUT, &mut response).await {
            Ok(response) => response,
            Err(_) => {
                return Err(Failure::failed(format!(
                    "{}: no answer within {} s of the body's end",
                    base.shown(),
                    ANSWER_TIMEOUT.as_secs()
                )))
            }
        },
    }
    .map_err(io_failure)?;
    drop(writer);
    if response.status != 200 && response.status != 408 {
        return Err(refusal(base, &response));
    }
    let text = String::from_utf8_lossy(&response.body);
    println!("{}", one_line(text.trim()));
    let summary: StreamSummary = serde_json::from_slice(&response.body).map_err(|e| {
        Failure::failed(format!(
            "{}: the answer is not a stream summary ({e})",
            base.shown()
        ))
    })?;
    tally.published = summary.published;
    tally.errors += summary.rejected_count;
    eprintln!("switchboard {COMMAND}: {}", tally.summary_line());
    if let Some(ended) = summary.ended {
        return Err(Failure::failed(format!(
            "{}: the hub ended the stream early ({ended}: nothing was sent for its \
             http_idle_timeout)",
            base.shown()
        )));
    }
    Ok(if tally.errors > 0 {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

/// Writes every line of stdin as one NDJSON line in its own chunk (written out whenever stdin
/// has nothing more at hand), then the last chunk. `tally.published` counts the lines sent.
async fn write_body<W: AsyncWrite + Unpin>(
    writer: &mut W,
    lines: &mut Lines,
    tally: &mut Tally,
    progress: bool,
) -> io::Result<()> {
    let mut ticker = ticker();
    loop {
        let line = tokio::select! {
            line = lines.next() => line?,
            _ = ticker.tick(), if progress => {
                eprintln!("switchboard {COMMAND}: {}", tally.progress_line("lines sent"));
                continue;
            }
        };
        match line {
            Line::Data(_, data) => {
                let data = data.get();
                writer
                    .write_all(format!("{:x}\r\n", data.len() + 1).as_bytes())
                    .await?;
                writer.write_all(data.as_bytes()).await?;
                writer.write_all(b"\n\r\n").await?;
                tally.published += 1;
            }
            Line::Bad(number, why) => report_error(tally, number, &why),
            Line::End => break,
        }
        if lines.drained() {
            writer.flush().await?;
        }
    }
    writer.write_all(b"0\r\n\r\n").await?;
    writer.flush().await
}

/// An HTTP response.
#[derive(Debug)]
struct Response {
    status: u16,
    reason: String,
    body: Vec<u8>,
}

/// Reads one response (interim 1xx ones skipped).
async fn read_response<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Response> {
    loop {
        let mut head_bytes = 0usize;
        let status_line = read_line(reader, &mut head_bytes).await?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| invalid(format!("not an HTTP response: {status_line:?}")))?;
        let reason = parts.next().unwrap_or_default().to_owned();
        let mut length = None;
        let mut chunked = false;
        loop {
            let line = read_line(reader, &mut head_bytes).await?;
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
        if (100..200).contains(&status) {
            continue;
        }
        let body = if chunked {
            read_chunked(reader).await?
        } else if let Some(length) = length {
            if length > MAX_BODY {
                return Err(invalid(format!("a body of {length} bytes")));
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).await?;
            body
        } else {
            let mut body = Vec::new();
            reader.take(MAX_BODY as u64).read_to_end(&mut body).await?;
            body
        };
        return Ok(Response {
            status,
            reason,
            body,
        });
    }
}

/// One line of a response head, without its CRLF; `used` counts the head's bytes.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    used: &mut usize,
) -> io::Result<String> {
    let mut line = Vec::new();
    let limit = MAX_HEAD.saturating_sub(*used) as u64;
    let n = reader.take(limit).read_until(b'\n', &mut line).await?;
    *used += n;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection ended before a complete answer",
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(invalid("the answer's head is too long".to_owned()));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

async fn read_chunked<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut used = 0;
        let size_line = read_line(reader, &mut used).await?;
        let size = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size {size:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(reader, &mut used).await?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("a body over 8 MiB".to_owned()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).await?;
        if !read_line(reader, &mut used).await?.is_empty() {
            return Err(invalid("a chunk without its CRLF".to_owned()));
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn addresses_are_parsed_and_tls_refused() {
        let b = Base::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            b,
            Base {
                authority: "127.0.0.1:8080".into(),
                host: "127.0.0.1".into(),
                port: 8080,
                prefix: String::new(),
            }
        );
        let b = Base::parse("http://[::1]/hub").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.prefix.as_str()),
            ("::1", 80, "/hub")
        );
        assert_eq!(
            b.target("chat:lobby/é x", "stream", Some("node")),
            "/hub/api/rooms/chat%3Alobby%2F%C3%A9%20x/stream?scope=node"
        );
        assert_eq!(
            b.target("a-b.c_d~e", "publish", None),
            "/hub/api/rooms/a-b.c_d~e/publish"
        );
        let e = Base::parse("https://hub/").unwrap_err();
        assert!(
            e.message.contains("not supported by the CLI"),
            "{}",
            e.message
        );
        assert!(Base::parse("ws://hub:1/ws").is_err());
        assert!(Base::parse("http://hub:99999").is_err());
        assert!(Base::parse("http://u@hub").is_err());
        assert!(Base::parse("http://hub/?q").is_err());
    }

    fn parse(raw: &[u8]) -> io::Result<Response> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(read_response(&mut BufReader::new(raw)))
    }

    #[test]
    fn responses_are_read_by_length_chunked_or_to_the_end() {
        let r = parse(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 5\r\n\r\nhelloEXTRA").unwrap();
        assert_eq!(
            (r.status, r.reason.as_str(), &r.body[..]),
            (401, "Unauthorized", &b"hello"[..])
        );
        let r = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: 1\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"abcde"[..]));
        let r = parse(b"HTTP/1.0 503 Busy\r\n\r\nrest of it").unwrap();
        assert_eq!((r.status, &r.body[..]), (503, &b"rest of it"[..]));
        assert!(parse(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").is_err());
        assert!(parse(b"").is_err());
    }
}
