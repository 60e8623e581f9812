//! Configuration: a TOML file (optional), then `SWITCHBOARD_*` environment variables, then CLI
//! flags, each overriding the one before, validated into one [`Config`].
//!
//! All three sources are merged as TOML values before anything is typed, so a bad value from any
//! source gets the same error, naming the key it was given for.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::Deserialize;
use switchboard_admin::{EndpointSpec, Policy, TokenKey};

/// Prefix of every environment variable the hub reads: `SWITCHBOARD_<KEY>` for each config key.
pub const ENV_PREFIX: &str = "SWITCHBOARD_";

/// Default WebSocket listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default admin API listen address: loopback, so that it needs no token to be safe.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
/// Default ping interval.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(25);
/// Default `redis_prefix`.
pub const DEFAULT_REDIS_PREFIX: &str = "switchboard";
/// Default capacity of a session's outgoing queue, in messages.
pub const DEFAULT_OUTBOX_CAPACITY: usize = 4096;
/// Default budget of encoded bytes waiting for a session's socket.
pub const DEFAULT_OUTBOX_MAX_BYTES: usize = 1024 * 1024;
/// Default capacity of a room's queue of publishes waiting for fan-out, per worker.
pub const DEFAULT_ROOM_QUEUE_CAPACITY: usize = 1024;
/// Default largest accepted WebSocket message, and largest `message` frame sent.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Default largest number of rooms one session may be subscribed to.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 1000;
/// Default largest number of concurrent sessions on one node.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Default `history_memory_bytes`: what a standalone node's room histories may hold in all.
pub const DEFAULT_HISTORY_MEMORY_BYTES: usize = 256 << 20;
/// Default `leave_debounce` of a `[[rooms]]` table.
pub const DEFAULT_LEAVE_DEBOUNCE: Duration = Duration::from_secs(3);
/// Default `http_idle_timeout`: a publishing body silent this long ends its request.
pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `http_max_parts` of one multipart publishing request.
pub const DEFAULT_HTTP_MAX_PARTS: usize = 1000;
/// Default time over which sessions are closed on shutdown.
pub const DEFAULT_SHUTDOWN_WINDOW: Duration = Duration::from_secs(5);

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration of a hub.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the WebSocket listener.
    pub listen: SocketAddr,
    /// The handshake policy at start: endpoints (built-in `default` at `/ws` merged with the
    /// file's `[[endpoints]]`) and the token key. The node's live copy may change at runtime.
    pub policy: Policy,
    /// Address of the admin API listener (routes, health, metrics).
    pub admin_listen: SocketAddr,
    /// Bearer token the admin routes require; required when `admin_listen` is not loopback.
    pub admin_token: Option<Secret>,
    /// Directory of the state file that keeps admin API policy changes across restarts; without
    /// it they last until the process ends.
    pub state_dir: Option<std::path::PathBuf>,
    /// Number of worker threads serving sessions.
    pub workers: usize,
    /// This node's id, shown in `welcome` frames and logs.
    pub node_id: String,
    /// The Redis instances of the cluster (`redis_url`, comma-separated); empty: standalone.
    /// Kept as given: a URL that does not parse is reported by the cluster bridge, and the node
    /// runs, not ready, rather than refusing to start.
    pub redis_urls: Vec<String>,
    /// What every Redis key and channel of this cluster starts with.
    pub redis_prefix: String,
    /// The address other nodes and operators are shown for this node's WebSocket listener
    /// (`/admin/nodes`); `None`: the bound address, with a wildcard IP replaced by the host name.
    pub advertise_address: Option<String>,
    /// Interval of server pings; a session silent for twice this is closed.
    pub heartbeat: Duration,
    /// Capacity of each session's outgoing queue, in messages; a session whose queue is full is
    /// closed as a slow consumer.
    pub outbox_capacity: usize,
    /// Budget of encoded bytes waiting for a session's socket; a session over it is closed as a
    /// slow consumer.
    pub outbox_max_bytes: usize,
    /// Capacity of each room's per-worker queue; a publisher finding it full waits for room.
    pub room_queue_capacity: usize,
    /// Largest accepted WebSocket message (after reassembly) and largest `message` frame sent.
    pub max_message_bytes: usize,
    /// Largest number of subscriptions per session.
    pub max_subscriptions: usize,
    /// Largest number of concurrent sessions on this node; handshakes beyond it get 503.
    pub max_connections: usize,
    /// Time over which sessions are closed on shutdown, so clients do not reconnect at once.
    pub shutdown_window: Duration,
    /// API keys of the HTTP publishing API (`api_keys`, comma-separated); empty: the API is off.
    pub api_keys: Vec<Secret>,
    /// The longest NDJSON line or multipart part the HTTP publishing API takes.
    pub http_max_item_bytes: usize,
    /// An HTTP publishing request whose body sends nothing for this long is ended.
    pub http_idle_timeout: Duration,
    /// The most parts of one multipart publishing request.
    pub http_max_parts: usize,
    /// Options of rooms by name (`[[rooms]]`): history, presence, join/leave.
    pub rooms: RoomRules,
    /// Each session's inbound rate limit; `None`: unlimited.
    pub session_rate: Option<SessionRate>,
    /// Rooms with members on this node at most: a subscribe that would add one more is refused.
    pub max_rooms: usize,
    /// Sessions one client IP may hold at once (0: no limit).
    pub max_connections_per_ip: usize,
    /// Handshakes one client IP may make per second, with bursts of 2 s of it (0: no limit).
    pub handshakes_per_ip_per_second: f64,
    /// Proxies whose `X-Forwarded-For` names the client (and only theirs).
    pub trusted_proxies: Vec<IpNet>,
    /// A connection whose HTTP request head has not fully arrived after this long is closed.
    pub handshake_timeout: Duration,
    /// What the room histories of a standalone node may hold in all, in bytes.
    pub history_memory_bytes: usize,
    /// Serve the demo pages (`/demo/chat`, `/demo/dashboard`) and give `demo:*` rooms history,
    /// presence and join/leave where no `[[rooms]]` table matches them first.
    pub demos: bool,
    /// Log line format.
    pub log_format: LogFormat,
    /// Log filter (`info`, `debug`, `switchboard_hub=debug,info`, ...).
    pub log_level: String,
}

/// A secret from the configuration: its `Debug` never shows it, so a logged config cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A configuration that could not be loaded, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The merged configuration is not valid TOML of the expected shape.
    #[error("invalid config: {0}")]
    Parse(String),
    /// A key has a value outside its allowed range.
    #[error("invalid config: key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// The keys of the configuration, each with the TOML type its environment variable is read as.
const KEYS: &[(&str, ValueKind)] = &[
    ("listen", ValueKind::String),
    ("token_secret", ValueKind::String),
    ("admin_listen", ValueKind::String),
    ("admin_token", ValueKind::String),
    ("state_dir", ValueKind::String),
    ("workers", ValueKind::Number),
    ("node_id", ValueKind::String),
    ("redis_url", ValueKind::String),
    ("redis_prefix", ValueKind::String),
    ("advertise_address", ValueKind::String),
    ("heartbeat", ValueKind::Number),
    ("outbox_capacity", ValueKind::Number),
    ("outbox_max_bytes", ValueKind::Number),
    ("room_queue_capacity", ValueKind::Number),
    ("max_message_bytes", ValueKind::Number),
    ("max_subscriptions", ValueKind::Number),
    ("max_connections", ValueKind::Number),
    ("shutdown_window", ValueKind::Number),
    ("api_keys", ValueKind::String),
    ("http_max_item_bytes", ValueKind::Number),
    ("http_idle_timeout", ValueKind::Number),
    ("http_max_parts", ValueKind::Number),
    ("history_memory_bytes", ValueKind::Number),
    ("session_messages_per_second", ValueKind::Number),
    ("session_bytes_per_second", ValueKind::Number),
    ("session_burst", ValueKind::Number),
    ("max_connections_per_ip", ValueKind::Number),
    ("max_rooms", ValueKind::Number),
    ("handshakes_per_ip_per_second", ValueKind::Number),
    ("trusted_proxies", ValueKind::String),
    ("handshake_timeout", ValueKind::Number),
    ("demos", ValueKind::Bool),
    ("log_format", ValueKind::String),
    ("log_level", ValueKind::String),
];

#[derive(Clone, Copy)]
enum ValueKind {
    String,
    Number,
    Bool,
}

/// The raw file shape: every key optional, unknown keys refused (a typo must not pass silently).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    token_secret: Option<String>,
    admin_listen: Option<String>,
    admin_token: Option<String>,
    state_dir: Option<String>,
    #[serde(default)]
    endpoints: Vec<EndpointSpec>,
    workers: Option<i64>,
    node_id: Option<String>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    advertise_address: Option<String>,
    heartbeat: Option<f64>,
    outbox_capacity: Option<i64>,
    outbox_max_bytes: Option<i64>,
    room_queue_capacity: Option<i64>,
    max_message_bytes: Option<i64>,
    max_subscriptions: Option<i64>,
    max_connections: Option<i64>,
    shutdown_window: Option<f64>,
    api_keys: Option<String>,
    http_max_item_bytes: Option<i64>,
    http_idle_timeout: Option<f64>,
    http_max_parts: Option<i64>,
    #[serde(default)]
    rooms: Vec<RoomSpec>,
    history_memory_bytes: Option<i64>,
    session_messages_per_second: Option<f64>,
    session_bytes_per_second: Option<f64>,
    session_burst: Option<f64>,
    max_connections_per_ip: Option<i64>,
    max_rooms: Option<i64>,
    handshakes_per_ip_per_second: Option<f64>,
    trusted_proxies: Option<String>,
    handshake_timeout: Option<f64>,
    demos: Option<bool>,
    log_format: Option<String>,
    log_level: Option<String>,
}

/// An IP network: an address and how many of its leading bits a match shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// Parses `1.2.3.4`, `10.0.0.0/8`, `::1` or `fd00::/8`.
    pub fn parse(text: &str) -> Option<IpNet> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let addr: std::net::IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return None;
        }
        // An IPv4 address written as IPv6 (`::ffff:10.0.0.1`) is that IPv4 address, as a peer
        // of a dual-stack listener is.
        if let std::net::IpAddr::V6(v6) = addr {
            if let (Some(v4), true) = (v6.to_ipv4_mapped(), prefix >= 96) {
                return Some(IpNet {
                    addr: std::net::IpAddr::V4(v4),
                    prefix: prefix - 96,
                });
            }
        }
        Some(IpNet { addr, prefix })
    }

    /// Whether `ip` is in the network.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let bits = |a: IpAddr| -> (u128, u8) {
            match a {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let ((net, _), (candidate, _)) = (bits(self.addr), bits(ip));
        let mask = if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.prefix))
        };
        net & mask == candidate & mask
    }
}

/// A session's inbound rate limit: a token bucket on messages and on bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionRate {
    /// Messages per second (`f64::INFINITY`: no limit on the count).
    pub messages_per_second: f64,
    /// Bytes per second (`f64::INFINITY`: no limit on the bytes).
    pub bytes_per_second: f64,
    /// Seconds of the rate a session may send at once (the buckets' size).
    pub burst: f64,
}

/// One `[[rooms]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomSpec {
    pattern: String,
    history_size: Option<i64>,
    history_ttl: Option<f64>,
    #[serde(default)]
    presence: bool,
    #[serde(default)]
    join_leave: bool,
    leave_debounce: Option<f64>,
}

/// What a `[[rooms]]` table gives the rooms it matches.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomOptions {
    /// Messages kept in the room's history; 0: no history (no offsets either).
    pub history_size: usize,
    /// How long a message stays in the history; `None`: until it is displaced.
    pub history_ttl: Option<Duration>,
    /// `presence` answers for the room.
    pub presence: bool,
    /// Members get `join` and `leave` frames.
    pub join_leave: bool,
    /// How long a leave waits for the user to come back before it is announced.
    pub leave_debounce: Duration,
}

impl RoomOptions {
    /// Whether the room keeps a history (and its messages carry offsets).
    pub fn history(&self) -> bool {
        self.history_size > 0
    }

    /// Whether the node follows who is in the room (presence or join/leave frames).
    pub fn tracks_members(&self) -> bool {
        self.presence || self.join_leave
    }
}

/// The `[[rooms]]` tables, in order: the first whose pattern matches a room gives its options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomRules(Vec<(String, std::sync::Arc<RoomOptions>)>);

impl RoomRules {
    /// The options of `room`, or `None` when no table matches (a plain room).
    pub fn of(&self, room: &str) -> Option<&std::sync::Arc<RoomOptions>> {
        if self.0.is_empty() {
            return None;
        }
        self.0
            .iter()
            .find(|(pattern, _)| match pattern.strip_suffix('*') {
                Some(prefix) => room.starts_with(prefix),
                None => room == pattern,
            })
            .map(|(_, options)| options)
    }

    /// Whether any table asks for member tracking (presence or join/leave).
    pub fn any_tracking(&self) -> bool {
        self.0.iter().any(|(_, o)| o.tracks_members())
    }

    /// Adds a rule after the others (it applies where none of them matches).
    pub fn push(&mut self, pattern: String, options: RoomOptions) {
        self.0.push((pattern, std::sync::Arc::new(options)));
    }

    /// Rules for tests and embedders: `(pattern, options)` in order.
    pub fn new(rules: Vec<(String, RoomOptions)>) -> Self {
        RoomRules(
            rules
                .into_iter()
                .map(|(p, o)| (p, std::sync::Arc::new(o)))
                .collect(),
        )
    }
}

/// The rooms the demo pages use.
pub const DEMO_ROOMS: &str = "demo:*";

/// What the demo pages need of their rooms: the last messages on join, who is there.
fn demo_room_options() -> RoomOptions {
    RoomOptions {
        history_size: 100,
        history_ttl: Some(Duration::from_secs(3600)),
        presence: true,
        join_leave: true,
        leave_debounce: DEFAULT_LEAVE_DEBOUNCE,
    }
}

fn room_rules(specs: Vec<RoomSpec>) -> Result<RoomRules, ConfigError> {
    let mut rules = Vec::with_capacity(specs.len());
    for spec in specs {
        let body = spec.pattern.strip_suffix('*').unwrap_or(&spec.pattern);
        if spec.pattern.is_empty() || body.contains('*') || spec.pattern.len() > 200 {
            return Err(invalid(
                "rooms",
                format!(
                    "pattern {:?} must be a room name, or a prefix followed by one `*`",
                    spec.pattern
                ),
            ));
        }
        let history_size = int_in("rooms.history_size", spec.history_size, 0, 0, 1_000_000)?;
        let history_ttl = secs_in(
            "rooms.history_ttl",
            spec.history_ttl,
            Duration::ZERO,
            0.0,
            365.0 * 86_400.0,
        )?;
        let leave_debounce = secs_in(
            "rooms.leave_debounce",
            spec.leave_debounce,
            DEFAULT_LEAVE_DEBOUNCE,
            0.0,
            3600.0,
        )?;
        rules.push((
            spec.pattern,
            RoomOptions {
                history_size,
                history_ttl: (!history_ttl.is_zero()).then_some(history_ttl),
                presence: spec.presence,
                join_leave: spec.join_leave,
                leave_debounce,
            },
        ));
    }
    Ok(RoomRules::new(rules))
}

/// Overrides given on the command line; `None` leaves the key to the file and environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<String>,
    /// `--admin-listen`
    pub admin_listen: Option<String>,
    /// `--workers`
    pub workers: Option<usize>,
    /// `--node-id`
    pub node_id: Option<String>,
    /// `--redis-url`
    pub redis_url: Option<String>,
    /// `--log-format`
    pub log_format: Option<String>,
    /// `--log-level`
    pub log_level: Option<String>,
}

impl Config {
    /// Loads the configuration from an optional file, the process environment and `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = match file {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?,
            None => String::new(),
        };
        Config::from_sources(&text, std::env::vars(), overrides)
    }

    /// Builds a configuration from TOML text, environment variables and CLI overrides.
    pub fn from_sources(
        toml_text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(toml_text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        for (name, value) in env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            // Variables for keys this version does not know (for instance ones read by other
            // tools) are left alone rather than refused.
            if let Some((key, kind)) = KEYS.iter().find(|(k, _)| *k == key) {
                table.insert((*key).to_owned(), env_value(*kind, &value));
            }
        }
        let mut set = |key: &str, value: toml::Value| {
            table.insert(key.to_owned(), value);
        };
        if let Some(v) = &overrides.listen {
            set("listen", toml::Value::String(v.clone()));
        }
        if let Some(v) = &overrides.admin_listen {
            set("admin_listen", toml::Value::String(v.clone()));
        }
        if let Some(v) = overrides.workers {
            set("workers", toml::Value::Integer(v as i64));
        }
        if let Some(v) = &overrides.node_id {
            set("node_id", toml::Value::String(v.clone()));
        }
        if let Some(v) = &overrides.redis_url {
            set("redis_url", toml::Value::String(v.clone()));
        }
        if let Some(v) = &overrides.log_format {
            set("log_format", toml::Value::String(v.clone()));
        }
        if let Some(v) = &overrides.log_level {
            set("log_level", toml::Value::String(v.clone()));
        }
        let raw: FileConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        raw.validate()
    }

    /// A config with every default, as `switchboard serve` uses with no file.
    pub fn defaults() -> Config {
        // The empty file and no environment always validate; a failure here is a bug in the
        // defaults themselves, which the unit tests cover.
        FileConfig::default()
            .validate()
            .unwrap_or_else(|e| panic!("built-in defaults are invalid: {e}"))
    }
}

fn env_value(kind: ValueKind, value: &str) -> toml::Value {
    match kind {
        ValueKind::String => toml::Value::String(value.to_owned()),
        ValueKind::Number => {
            let value = value.trim();
            if let Ok(i) = value.parse::<i64>() {
                toml::Value::Integer(i)
            } else if let Ok(f) = value.parse::<f64>() {
                toml::Value::Float(f)
            } else {
                // Kept as a string so the type error names the key.
                toml::Value::String(value.to_owned())
            }
        }
        ValueKind::Bool => match value.trim() {
            "true" | "1" => toml::Value::Boolean(true),
            "false" | "0" => toml::Value::Boolean(false),
            // Kept as a string so the type error names the key.
            other => toml::Value::String(other.to_owned()),
        },
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

fn int_in(
    key: &'static str,
    v: Option<i64>,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let Some(v) = v else { return Ok(default) };
    match usize::try_from(v) {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(invalid(key, format!("{v} is out of range {min}..={max}"))),
    }
}

fn secs_in(
    key: &'static str,
    v: Option<f64>,
    default: Duration,
    min: f64,
    max: f64,
) -> Result<Duration, ConfigError> {
    let Some(v) = v else { return Ok(default) };
    if !(v.is_finite() && v >= min && v <= max) {
        return Err(invalid(
            key,
            format!("{v} seconds is out of range {min}..={max}"),
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

impl FileConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let listen_text = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen_text.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "listen",
                format!("{listen_text:?} is not an address like 0.0.0.0:8080"),
            )
        })?;
        let admin_text = self.admin_listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
        let admin_listen = admin_text.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "admin_listen",
                format!("{admin_text:?} is not an address like 127.0.0.1:8081"),
            )
        })?;
        let admin_token = self.admin_token.filter(|t| !t.is_empty()).map(Secret);
        if admin_token.is_none() && !admin_listen.ip().is_loopback() {
            return Err(invalid(
                "admin_token",
                format!(
                    "the admin listener {admin_listen} is reachable beyond this host: set admin_token \
                     (or SWITCHBOARD_ADMIN_TOKEN), or listen on a loopback address"
                ),
            ));
        }
        let state_dir = self
            .state_dir
            .filter(|d| !d.is_empty())
            .map(std::path::PathBuf::from);
        let token = match self.token_secret.as_deref() {
            None | Some("") => None,
            Some(secret) => Some(
                TokenKey::new(secret.as_bytes())
                    .map_err(|e| invalid("token_secret", e.to_string()))?,
            ),
        };
        let policy = Policy::from_specs(&self.endpoints, token)
            .map_err(|e| invalid("endpoints", e.to_string()))?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = int_in("workers", self.workers, cpus, 1, 1024)?;
        let node_id = match self.node_id {
            Some(id) => id,
            None => default_node_id(),
        };
        if node_id.is_empty()
            || node_id.len() > 64
            || !node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                "node_id",
                format!("{node_id:?} must be 1 to 64 of A-Z a-z 0-9 - _ ."),
            ));
        }
        let redis_urls: Vec<String> = self
            .redis_url
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        let redis_prefix = self
            .redis_prefix
            .unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_owned());
        if redis_prefix.is_empty()
            || redis_prefix.len() > 64
            || !redis_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            return Err(invalid(
                "redis_prefix",
                format!("{redis_prefix:?} must be 1 to 64 of A-Z a-z 0-9 - _ . :"),
            ));
        }
        let advertise_address = self.advertise_address.filter(|a| !a.is_empty());
        if let Some(address) = &advertise_address {
            let port_ok = address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok || address.len() > 255 || address.chars().any(char::is_whitespace) {
                return Err(invalid(
                    "advertise_address",
                    format!("{address:?} is not an address like node1.example.com:8080"),
                ));
            }
        }
        let heartbeat = secs_in("heartbeat", self.heartbeat, DEFAULT_HEARTBEAT, 0.01, 3600.0)?;
        let outbox_capacity = int_in(
            "outbox_capacity",
            self.outbox_capacity,
            DEFAULT_OUTBOX_CAPACITY,
            1,
            1 << 20,
        )?;
        let outbox_max_bytes = int_in(
            "outbox_max_bytes",
            self.outbox_max_bytes,
            DEFAULT_OUTBOX_MAX_BYTES,
            4096,
            1 << 30,
        )?;
        let room_queue_capacity = int_in(
            "room_queue_capacity",
            self.room_queue_capacity,
            DEFAULT_ROOM_QUEUE_CAPACITY,
            1,
            1 << 20,
        )?;
        let max_message_bytes = int_in(
            "max_message_bytes",
            self.max_message_bytes,
            DEFAULT_MAX_MESSAGE_BYTES,
            1024,
            16 << 20,
        )?;
        let max_subscriptions = int_in(
            "max_subscriptions",
            self.max_subscriptions,
            DEFAULT_MAX_SUBSCRIPTIONS,
            1,
            1_000_000,
        )?;
        let max_connections = int_in(
            "max_connections",
            self.max_connections,
            DEFAULT_MAX_CONNECTIONS,
            1,
            100_000_000,
        )?;
        let shutdown_window = secs_in(
            "shutdown_window",
            self.shutdown_window,
            DEFAULT_SHUTDOWN_WINDOW,
            0.0,
            3600.0,
        )?;
        let api_keys: Vec<Secret> = self
            .api_keys
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| Secret(k.to_owned()))
            .collect();
        if let Some(short) = api_keys.iter().find(|k| k.0.len() < 16) {
            return Err(invalid(
                "api_keys",
                format!(
                    "every key needs at least 16 characters (one has {})",
                    short.0.len()
                ),
            ));
        }
        let http_max_item_bytes = int_in(
            "http_max_item_bytes",
            self.http_max_item_bytes,
            max_message_bytes,
            1024,
            16 << 20,
        )?;
        let http_idle_timeout = secs_in(
            "http_idle_timeout",
            self.http_idle_timeout,
            DEFAULT_HTTP_IDLE_TIMEOUT,
            0.1,
            86_400.0,
        )?;
        let http_max_parts = int_in(
            "http_max_parts",
            self.http_max_parts,
            DEFAULT_HTTP_MAX_PARTS,
            1,
            1_000_000,
        )?;
        let demos = self.demos.unwrap_or(true);
        let mut rooms = room_rules(self.rooms)?;
        if demos {
            // Last, so that an operator's own table for these rooms wins.
            rooms.push(DEMO_ROOMS.to_owned(), demo_room_options());
        }
        let rate = |key: &'static str, v: Option<f64>| -> Result<f64, ConfigError> {
            match v {
                None => Ok(0.0),
                Some(v) if v.is_finite() && v >= 0.0 => Ok(v),
                Some(v) => Err(invalid(
                    key,
                    format!("{v} is not 0 (no limit) or a positive rate"),
                )),
            }
        };
        let messages = rate(
            "session_messages_per_second",
            self.session_messages_per_second,
        )?;
        let bytes = rate("session_bytes_per_second", self.session_bytes_per_second)?;
        let burst = secs_in(
            "session_burst",
            self.session_burst,
            Duration::from_secs(2),
            0.001,
            3600.0,
        )?
        .as_secs_f64();
        let unlimited = |r: f64| if r == 0.0 { f64::INFINITY } else { r };
        let session_rate = (messages > 0.0 || bytes > 0.0).then(|| SessionRate {
            messages_per_second: unlimited(messages),
            bytes_per_second: unlimited(bytes),
            burst,
        });
        let history_memory_bytes = int_in(
            "history_memory_bytes",
            self.history_memory_bytes,
            DEFAULT_HISTORY_MEMORY_BYTES,
            1 << 20,
            1 << 40,
        )?;
        let max_connections_per_ip = int_in(
            "max_connections_per_ip",
            self.max_connections_per_ip,
            0,
            0,
            100_000_000,
        )?;
        let max_rooms = int_in("max_rooms", self.max_rooms, 1_000_000, 1, 1 << 32)?;
        let handshakes_per_ip_per_second = rate(
            "handshakes_per_ip_per_second",
            self.handshakes_per_ip_per_second,
        )?;
        let mut trusted_proxies = Vec::new();
        for item in self
            .trusted_proxies
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            trusted_proxies.push(IpNet::parse(item).ok_or_else(|| {
                invalid(
                    "trusted_proxies",
                    format!("{item:?} is not an IP address or network like 10.0.0.0/8"),
                )
            })?);
        }
        let handshake_timeout = secs_in(
            "handshake_timeout",
            self.handshake_timeout,
            Duration::from_secs(5),
            0.1,
            600.0,
        )?;
        let log_format = match self.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "log_format",
                    format!("{other:?} is not \"text\" or \"json\""),
                ))
            }
        };
        let log_level = self.log_level.unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(invalid(
                "log_level",
                format!("{log_level:?} is not a log filter"),
            ));
        }
        Ok(Config {
            listen,
            admin_listen,
            admin_token,
            state_dir,
            policy,
            workers,
            node_id,
            redis_urls,
            redis_prefix,
            advertise_address,
            heartbeat,
            outbox_capacity,
            outbox_max_bytes,
            room_queue_capacity,
            max_message_bytes,
            max_subscriptions,
            max_connections,
            shutdown_window,
            api_keys,
            http_max_item_bytes,
            http_idle_timeout,
            http_max_parts,
            rooms,
            session_rate,
            max_connections_per_ip,
            max_rooms,
            handshakes_per_ip_per_second,
            trusted_proxies,
            handshake_timeout,
            history_memory_bytes,
            demos,
            log_format,
            log_level,
        })
    }
}

/// The host name, cleaned to the node-id alphabet, or `node` when there is none.
fn default_node_id() -> String {
    host_name().unwrap_or_else(|| "node".to_owned())
}

/// This machine's (or container's) host name, cleaned to `A-Z a-z 0-9 - _ .`, if it has one.
pub(crate) fn host_name() -> Option<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(64)
        .collect();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests;
