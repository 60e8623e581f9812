//! The HTTP side: the listener, the workers and the WebSocket route.

use std::{
    future::Future,
    io,
    net::{SocketAddr, TcpListener},
    rc::Rc,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use actix_web::{http::StatusCode, web, App, HttpRequest, HttpResponse, HttpServer};
use socket2::{Domain, SockRef, Socket, Type};

use crate::{config::Config, node::Node, session, shutdown, stats::Stats, worker::WorkerRooms};

/// Listen backlog: connection storms (a fleet reconnecting after a deploy) must not overflow it.
const LISTEN_BACKLOG: i32 = 4096;

/// Binds a TCP listener for the hub with a deep backlog and address reuse.
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Runs a hub on `listener` until `shutdown` resolves, then closes every session with 1001
/// spread over the configured window, and returns.
///
/// Must be called inside an actix `System` (sessions and rooms are actors).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    let node = Node::new(config);
    let server = build(node.clone(), listener)?;
    let handle = server.handle();
    tracing::info!(
        addr = %addr,
        node = %node.config.node_id,
        workers = node.config.workers,
        path = %node.config.ws_path,
        "listening"
    );
    let mut server = actix_rt::spawn(server);
    tokio::select! {
        result = &mut server => {
            return result.map_err(io::Error::other)?;
        }
        () = shutdown => {}
    }
    shutdown::drain(&node, &handle).await;
    server.await.map_err(io::Error::other)?
}

fn build(node: Arc<Node>, listener: TcpListener) -> io::Result<actix_web::dev::Server> {
    let config = node.config.clone();
    let workers = config.workers;
    let next_worker = Arc::new(AtomicUsize::new(0));
    // A connection whose peer takes no data for this long is dropped by the kernel. This is what
    // ends a client that stopped reading: its session is not even polled any more.
    let user_timeout = (config.heartbeat * 2).max(Duration::from_secs(1));
    let ws_path = config.ws_path.clone();
    let server = HttpServer::new(move || {
        // Called once per worker, on that worker's thread.
        let index = next_worker.fetch_add(1, Ordering::Relaxed) % workers;
        let rooms = Rc::new(WorkerRooms::new(index, node.clone()));
        App::new()
            .app_data(web::Data::from(node.clone()))
            .app_data(rooms)
            .route(&ws_path, web::get().to(ws_route))
            .default_service(web::to(not_found))
    })
    .workers(workers)
    .disable_signals()
    .backlog(LISTEN_BACKLOG as u32)
    // Per worker, and above the node's own limit, so that a handshake over the node limit is still
    // accepted and answered 503 rather than left waiting in the backlog.
    .max_connections(config.max_connections.saturating_add(1024).min(1 << 24))
    // Zero: close the TCP connection as soon as a session ends. Small non-zero values were seen
    // to leave connections open.
    .client_disconnect_timeout(Duration::ZERO)
    .shutdown_timeout(1)
    .on_connect(move |conn, _| {
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let socket = SockRef::from(tcp);
            if let Err(e) = socket.set_tcp_user_timeout(Some(user_timeout)) {
                tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
            }
        }
    })
    .listen(listener)?
    .run();
    Ok(server)
}

async fn ws_route(
    req: HttpRequest,
    payload: web::Payload,
    node: web::Data<Node>,
) -> Result<HttpResponse, actix_web::Error> {
    let node = node.into_inner();
    let Some(rooms) = req.app_data::<Rc<WorkerRooms>>().cloned() else {
        return Ok(json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "worker state missing",
        ));
    };
    if node.is_draining() {
        return Ok(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the node is shutting down",
        ));
    }
    let Some(slot) = node.try_acquire_slot() else {
        Stats::add(&node.stats.refused_at_limit, 1);
        return Ok(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "limit_exceeded",
            "the node is at its connection limit",
        ));
    };
    session::accept(&req, payload, node, rooms, slot)
}

async fn not_found() -> HttpResponse {
    json_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

fn json_error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({
        "error": { "code": code, "message": message }
    }))
}
