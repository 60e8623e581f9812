//! The raw HTTP that the transport writes itself: a refused handshake's JSON error response, and
//! the orderly end of a connection.

use std::{io, time::Duration};

use actix_web::rt::net::TcpStream;

use super::{handshake::Refusal, SCRATCH};

/// Writes a refused handshake's JSON error response and closes the connection.
pub(crate) async fn respond(io: TcpStream, refusal: Refusal) -> Result<(), io::Error> {
    let Refusal {
        kind,
        message,
        accepted,
        retry_after,
    } = refusal;
    let (status, reason) = kind.status();
    let mut error = serde_json::json!({ "code": kind.code(), "message": message });
    if kind == super::handshake::Refused::Subprotocol {
        error["accepted"] = serde_json::json!(accepted);
    }
    let body = serde_json::json!({ "error": error }).to_string();
    let challenge = match (status, retry_after) {
        (401, _) => "www-authenticate: Bearer\r\n".to_owned(),
        (_, Some(seconds)) => format!("retry-after: {seconds}\r\n"),
        _ => String::new(),
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{challenge}connection: close\r\n\r\n{body}",
        body.len()
    );
    let mut bytes = response.as_bytes();
    while !bytes.is_empty() {
        io.writable().await?;
        match io.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    linger(&io).await;
    Ok(())
}

/// After the last frame: send FIN, then read and discard what the client still sends (briefly)
/// so that closing does not turn into a reset that could destroy the close frame in flight.
pub(crate) async fn linger(io: &TcpStream) {
    const LINGER: Duration = Duration::from_secs(1);
    const LINGER_BYTES: usize = 1 << 20;
    if socket2::SockRef::from(io)
        .shutdown(std::net::Shutdown::Write)
        .is_err()
    {
        return;
    }
    let drain = async {
        let mut total = 0;
        while total < LINGER_BYTES {
            if io.readable().await.is_err() {
                return;
            }
            let read = SCRATCH.with(|scratch| io.try_read(&mut scratch.borrow_mut()));
            match read {
                Ok(0) => return,
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
