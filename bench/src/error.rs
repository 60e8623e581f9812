//! The bench's one error type: a message for a person.

use std::fmt;

use tokio_tungstenite::tungstenite::{self, protocol::CloseFrame};

/// Something went wrong; the text says what, for the operator running the bench.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Error(pub(crate) String);

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// `context: self`.
    pub(crate) fn context(self, context: impl fmt::Display) -> Self {
        Error(format!("{context}: {}", self.0))
    }

    /// The server closed the connection, with this close frame if it sent one.
    pub(crate) fn closed(frame: Option<&CloseFrame<'_>>) -> Self {
        match frame {
            Some(f) => Self::closed_by(Some(u16::from(f.code)), &f.reason),
            None => Self::closed_by(None, ""),
        }
    }

    /// The server closed the connection with a close frame carrying this status code (if any)
    /// and reason.
    pub(crate) fn closed_by(code: Option<u16>, reason: &str) -> Self {
        match code {
            Some(c) if reason.is_empty() => Error(format!("closed by the server (code {c})")),
            Some(c) => Error(format!("closed by the server (code {c}, \"{reason}\")")),
            None => Error("closed by the server".into()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error(s.to_owned())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let hint = match e.raw_os_error() {
            Some(24) => " (out of file descriptors: raise `ulimit -n`)",
            Some(99) => " (out of source ports: spread connections with more --source-ips)",
            Some(111) => " (is the server running?)",
            _ => "",
        };
        Error(format!("{e}{hint}"))
    }
}

impl From<tungstenite::Error> for Error {
    fn from(e: tungstenite::Error) -> Self {
        use tungstenite::Error as E;
        match e {
            E::Io(e) => e.into(),
            E::ConnectionClosed | E::AlreadyClosed => Error("connection closed".into()),
            E::Http(resp) => Error(format!(
                "WebSocket handshake refused: HTTP {}",
                resp.status()
            )),
            other => Error(other.to_string()),
        }
    }
}
