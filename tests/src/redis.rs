//! A real `redis-server` process for cluster tests: one per test, on a free port, so that tests
//! run in parallel and can kill, pause and restart the very server their hubs talk to.
//!
//! No persistence: a restarted server starts empty, as a crashed cache would.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How long a server may take to answer its first `PING`.
const STARTUP: Duration = Duration::from_secs(10);

/// How long [`RedisServer::command`] waits for a connection and a reply.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A `redis-server` process on `127.0.0.1`, killed (and reaped) on drop.
#[derive(Debug)]
pub struct RedisServer {
    /// `None` once killed.
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    pub fn start() -> RedisServer {
        let deadline = Instant::now() + STARTUP;
        loop {
            // The port is free when picked but another test may take it before the server binds;
            // then this server exits (or another answers), and a new port is tried.
            let port = free_port();
            let mut server = RedisServer {
                child: Some(spawn(port)),
                port,
            };
            if server.wait_until_up(deadline) {
                return server;
            }
            server.kill();
            assert!(
                Instant::now() < deadline,
                "redis-server did not start within {STARTUP:?}"
            );
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `redis://127.0.0.1:<port>`, as the hub's `redis_url` takes it.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it. Does nothing once killed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process takes SIGKILL too, but resuming first keeps that beyond doubt.
            let _ = signal(child.id(), "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new (empty) server on the same port, killing the old one first if it still runs,
    /// and waits until it answers `PING`.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + STARTUP;
        loop {
            self.child = Some(spawn(self.port));
            if self.wait_until_up(deadline) {
                return;
            }
            self.kill();
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {} within {STARTUP:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the process with SIGSTOP: its sockets stay open but nothing is answered, as with a
    /// server stuck in a long command or behind a network partition.
    pub fn pause(&self) {
        let pid = self.running_pid();
        assert!(signal(pid, "STOP"), "kill -STOP {pid} failed");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        let pid = self.running_pid();
        assert!(signal(pid, "CONT"), "kill -CONT {pid} failed");
    }

    /// Sends one command over a fresh connection and renders the reply: integers as decimal text,
    /// simple and bulk strings as their text (a nil as ""), arrays as their rendered elements
    /// joined by `'\n'`, errors as their message (`"ERR ..."`, `"WRONGTYPE ..."`). Panics when
    /// the server does not answer within 5 s.
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args, COMMAND_TIMEOUT)
            .unwrap_or_else(|e| panic!("redis {args:?} on port {}: {e}", self.port))
    }

    /// [`RedisServer::command`] with this timeout for connecting and for each read and write,
    /// returning the failure instead of panicking.
    pub fn try_command(&self, args: &[&str], timeout: Duration) -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr(), timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        stream.write_all(&request)?;
        let mut reader = Resp {
            stream,
            buf: Vec::new(),
        };
        reader.value()
    }

    fn running_pid(&self) -> u32 {
        self.pid().expect("the redis server was killed")
    }

    /// True once this very process answers `PING`; false if it exited or the deadline passed.
    fn wait_until_up(&mut self, deadline: Instant) -> bool {
        let pid = self.running_pid();
        while Instant::now() < deadline {
            let child = self.child.as_mut().expect("a child to wait for");
            if !matches!(child.try_wait(), Ok(None)) {
                return false;
            }
            if raw_ping(self.port) {
                // Another test's server may have taken the port first: only ours counts.
                let info = self.try_command(&["INFO", "server"], COMMAND_TIMEOUT);
                return info.is_ok_and(|i| i.contains(&format!("process_id:{pid}\r\n")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-server` from `PATH`, else the Debian location.
fn binary() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("redis-server"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"))
}

fn spawn(port: u16) -> Child {
    let bin = binary();
    Command::new(&bin)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()))
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An inline `PING` on a raw socket, so that readiness does not depend on the RESP code below.
fn raw_ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// Sends `SIG<name>` with kill(1), as the workspace forbids the unsafe code `libc::kill` needs;
/// true when it was delivered.
fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A reader of one RESP reply.
struct Resp {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Resp {
    fn value(&mut self) -> std::io::Result<String> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(1.min(line.len()));
        match kind {
            "+" | "-" | ":" => Ok(rest.to_owned()),
            "$" => {
                let Ok(len) = usize::try_from(parse_len(rest)?) else {
                    return Ok(String::new());
                };
                let bytes = self.exact(len + 2)?;
                Ok(String::from_utf8_lossy(&bytes[..len]).into_owned())
            }
            "*" => {
                let Ok(n) = usize::try_from(parse_len(rest)?) else {
                    return Ok(String::new());
                };
                let items = (0..n)
                    .map(|_| self.value())
                    .collect::<std::io::Result<Vec<_>>>()?;
                Ok(items.join("\n"))
            }
            _ => Err(invalid(format!("not a RESP reply: {line:?}"))),
        }
    }

    /// The next line, without its CRLF.
    fn line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return Ok(line);
            }
            self.fill()?;
        }
    }

    fn exact(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill()?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 4096];
        // A signal (a child of this test process exiting, say) can interrupt the read; that is
        // not the server's answer, so read again.
        let n = loop {
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn parse_len(text: &str) -> std::io::Result<i64> {
    text.parse()
        .map_err(|_| invalid(format!("bad RESP length {text:?}")))
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}
