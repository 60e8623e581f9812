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

use actix_codec::Framed;
use actix_http::{h1, HttpService, Request};
use actix_service::{fn_service, map_config};
use actix_web::rt::net::TcpStream;
use actix_web::{dev::AppConfig, http::StatusCode, web, App, HttpRequest, HttpResponse};
use socket2::{Domain, Socket, Type};
use switchboard_admin::policy::Endpoint;

use crate::{
    config::Config, control::Control, node::Node, session, shutdown,
    transport::handshake::check_plain, worker::WorkerRooms,
};

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
    serve_node(Node::new(config), listener, shutdown).await
}

/// Like [`serve`], for a [`Node`] the caller keeps a handle to (to change its policy at
/// runtime, as the admin API does).
pub async fn serve_node(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    node.set_listening(addr);
    let server = build(node.clone(), listener)?;
    let handle = server.handle();
    tracing::info!(
        addr = %addr,
        node = %node.config.node_id,
        workers = node.config.workers,
        endpoints = %endpoint_list(&node),
        "listening"
    );
    let mut server = actix_rt::spawn(server);
    // History: expiry, the memory budget, and forgetting logs left with nothing.
    let history = Arc::downgrade(&node.history);
    let sweep_node = Arc::downgrade(&node);
    let sweeper = actix_rt::spawn(async move {
        let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(history) = history.upgrade() else {
                return;
            };
            history.sweep();
            if let Some(limits) = sweep_node
                .upgrade()
                .as_ref()
                .and_then(|n| n.ip_limits.as_ref())
            {
                limits.sweep();
            }
        }
    });
    let _stop_sweeper = AbortOnDrop(sweeper);
    tokio::select! {
        result = &mut server => {
            return result.map_err(io::Error::other)?;
        }
        () = shutdown => {}
    }
    shutdown::drain(&node, &handle).await;
    server.await.map_err(io::Error::other)?
}

/// Runs a hub as `switchboard serve` does: the WebSocket listener and the admin API listener
/// (routes, health, metrics), with admin policy changes loaded from and saved to the state file
/// when `state_dir` is set. On `shutdown` the node drains (readiness turns 503 at once) and the
/// admin listener stops last, so health and metrics stay observable during the drain.
pub async fn serve_with_admin(
    config: Config,
    listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let state = config
        .state_dir
        .as_ref()
        .map(switchboard_admin::StateFile::in_dir);
    let node = Node::new(config);
    if let Some(state) = &state {
        let (policy, warnings) = state
            .load(node.policy.snapshot().as_ref().clone())
            .map_err(io::Error::other)?;
        for warning in warnings {
            tracing::warn!(%warning, "state file");
        }
        node.policy.replace(policy);
    }
    let admin_addr = admin_listener.local_addr()?;
    let options = switchboard_admin::AdminOptions {
        token: node
            .config
            .admin_token
            .as_ref()
            .map(|t| t.expose().to_owned()),
        state,
    };
    let routes = switchboard_admin::configure(Arc::new(Control::new(node.clone())), options);
    let admin = actix_web::HttpServer::new(move || {
        App::new()
            .configure(routes.clone())
            .default_service(web::to(switchboard_admin::not_found))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(admin_listener)?
    .run();
    let admin_handle = admin.handle();
    tracing::info!(
        addr = %admin_addr,
        auth = node.config.admin_token.is_some(),
        persisted = node.config.state_dir.is_some(),
        "admin listening"
    );
    let admin = actix_rt::spawn(admin);
    let result = serve_node(node, listener, shutdown).await;
    admin_handle.stop(true).await;
    let _ = admin.await;
    result
}

fn build(node: Arc<Node>, listener: TcpListener) -> io::Result<actix_web::dev::Server> {
    let config = node.config.clone();
    let workers = config.workers;
    let next_worker = Arc::new(AtomicUsize::new(0));
    // The HTTP publishing API (`/api/`), mounted only when API keys are configured.
    let publishing = switchboard_admin::configure_publishing(
        Arc::new(Control::new(node.clone())),
        switchboard_admin::PublishingOptions {
            api_keys: config
                .api_keys
                .iter()
                .map(|k| k.expose().to_owned())
                .collect(),
            max_item_bytes: config.http_max_item_bytes,
            idle_timeout: config.http_idle_timeout,
            max_parts: config.http_max_parts,
        },
    );
    let pages = crate::pages::configure(config.demos);
    let server = actix_server::Server::build()
        .workers(workers)
        .disable_signals()
        .backlog(LISTEN_BACKLOG as u32)
        // Per worker, and above the node's own limit, so that a handshake over the node limit is
        // still accepted and answered 503 rather than left waiting in the backlog.
        .max_concurrent_connections(config.max_connections.saturating_add(1024).min(1 << 24))
        .shutdown_timeout(1)
        .listen("switchboard-ws", listener, move || {
            // Called once per worker, on that worker's thread.
            let index = next_worker.fetch_add(1, Ordering::Relaxed) % workers;
            let rooms = Rc::new(WorkerRooms::new(index, node.clone()));
            WorkerRooms::start_heartbeat(&rooms);
            let upgrade_node = node.clone();
            let http_node = node.clone();
            // Upgrade requests (`Connection: upgrade`) leave HTTP here: the session transport
            // takes the socket (see `session/transport.rs`).
            let upgrade = fn_service(
                move |(req, framed): (Request, Framed<TcpStream, h1::Codec>)| {
                    session::serve_upgrade(req, framed, upgrade_node.clone(), rooms.clone())
                },
            );
            // Every other request is plain HTTP: the publishing API, or a refusal.
            let app = App::new()
                .configure(publishing.clone())
                .configure(pages.clone())
                .default_service(web::to(move |req: HttpRequest| {
                    let node = http_node.clone();
                    async move { plain_http(&node, &req) }
                }));
            HttpService::build()
                // A connection whose request head has not arrived by then is closed (408).
                .client_request_timeout(config.handshake_timeout)
                // Zero: close the TCP connection as soon as a response is done.
                .client_disconnect_timeout(Duration::ZERO)
                .upgrade(upgrade)
                .finish(map_config(app, |_| AppConfig::default()))
                .tcp()
        })?
        .run();
    Ok(server)
}

/// A request without `Upgrade`: 426 on a WebSocket endpoint (the client forgot to upgrade, or a
/// proxy dropped the headers), 404 elsewhere. A request the handshake would refuse for its
/// Origin or its token gets that refusal instead (403, 401): a browser whose WebSocket failed
/// before it opened sees only 1006, and learns this way whether retrying can help. The answer
/// names the page's origin in `Access-Control-Allow-Origin` so that a page of another origin may
/// read it; it holds nothing but the verdict.
fn plain_http(node: &Node, req: &HttpRequest) -> HttpResponse {
    let policy = node.policy.load();
    let mut response = match check_plain(req.headers(), req.uri(), &policy) {
        Ok(endpoint) => upgrade_required(endpoint),
        Err(refusal) => {
            let (status, _) = refusal.kind.status();
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            let mut response = json_error(status, refusal.kind.code(), &refusal.message);
            if status == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    actix_web::http::header::WWW_AUTHENTICATE,
                    actix_web::http::header::HeaderValue::from_static("Bearer"),
                );
            }
            response
        }
    };
    if let Some(origin) = req.headers().get("origin") {
        let headers = response.headers_mut();
        headers.insert(
            actix_web::http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            origin.clone(),
        );
        headers.insert(
            actix_web::http::header::VARY,
            actix_web::http::header::HeaderValue::from_static("origin"),
        );
    }
    response
}

fn upgrade_required(endpoint: &Endpoint) -> HttpResponse {
    HttpResponse::build(StatusCode::UPGRADE_REQUIRED)
        .insert_header(("upgrade", "websocket"))
        .insert_header(("connection", "upgrade"))
        .content_type("text/plain; charset=utf-8")
        .body(format!(
            "426 Upgrade Required: endpoint {:?} speaks WebSocket only ({} mode)\n",
            endpoint.name,
            endpoint.mode.as_str()
        ))
}

/// `name=path (mode)` for each endpoint, for the start-up log line.
fn endpoint_list(node: &Node) -> String {
    let policy = node.policy.load();
    let list: Vec<String> = policy
        .endpoints()
        .iter()
        .map(|e| format!("{}={} ({})", e.name, e.path, e.mode.as_str()))
        .collect();
    list.join(", ")
}

fn json_error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({
        "error": { "code": code, "message": message }
    }))
}

/// Aborts a background task when the node's serve ends.
struct AbortOnDrop(actix_rt::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
