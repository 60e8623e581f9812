//! Origin rules: which web pages may open a WebSocket to an endpoint.
//!
//! Browsers send an `Origin` header with every WebSocket handshake and, unlike plain HTTP, the
//! WebSocket protocol has no CORS preflight: the server's origin check is the only thing that
//! stops a hostile page from riding a visitor's cookies into the hub. Rules and headers are
//! therefore parsed with one strict grammar and compared in canonical form, so that a rule can
//! never match by accident through case, a default port, or a look-alike suffix.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// The longest rule (and the longest `Origin` header) accepted, in bytes.
pub const MAX_ORIGIN_BYTES: usize = 256;

/// One allowed origin: `scheme://host[:port]`, or `scheme://*.domain[:port]` for every
/// subdomain of `domain`.
///
/// A rule is kept in canonical form (lowercase scheme and host, IPv6 in its RFC 5952 spelling, a
/// port equal to the scheme's default dropped), so two rules that admit the same pages compare
/// equal and [`Display`](fmt::Display) shows what is really enforced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginRule {
    origin: Origin,
}

/// Why an origin rule was refused. The text is meant for whoever wrote the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("origin is empty")]
    Empty,
    #[error("origin is longer than {MAX_ORIGIN_BYTES} bytes")]
    TooLong,
    #[error("origin must not contain whitespace or control characters: {0:?}")]
    Whitespace(String),
    #[error("origin must start with scheme:// (for example https://): {0:?}")]
    MissingScheme(String),
    #[error("origin scheme must be a letter followed by letters, digits, '+', '-' or '.': {0:?}")]
    BadScheme(String),
    #[error("origin must be scheme://host[:port] with no path: {0:?}")]
    HasPath(String),
    #[error("origin must not carry a query or a fragment: {0:?}")]
    HasQuery(String),
    #[error("origin must not carry user information (user@): {0:?}")]
    HasUserinfo(String),
    #[error("origin host must be a DNS name, an IPv4 address or a bracketed IPv6 address: {0:?}")]
    BadHost(String),
    #[error("origin port must be a number from 1 to 65535: {0:?}")]
    BadPort(String),
    #[error(
        "a wildcard must be the whole first label of a DNS name (scheme://*.example.com): {0:?}"
    )]
    BadWildcard(String),
    #[error("wildcard origin is too broad: name a domain of at least two labels (*.example.com, not *.com): {0:?}")]
    WildcardTooBroad(String),
}

impl OriginRule {
    /// True when `origin_header` (the raw value of an `Origin` header) is admitted by this rule.
    ///
    /// The header goes through the rule grammar minus wildcards, so anything a browser would
    /// not send (`null`, a path, garbage) matches nothing rather than something.
    pub fn matches(&self, origin_header: &str) -> bool {
        let Ok(header) = parse(origin_header, false) else {
            return false;
        };
        let rule = &self.origin;
        if rule.scheme != header.scheme || rule.port != header.port {
            return false;
        }
        match (&rule.host, &header.host) {
            (Host::Wildcard(suffix), Host::Name(name)) => is_proper_subdomain(name, suffix),
            (Host::Wildcard(_), _) => false,
            (rule_host, header_host) => rule_host == header_host,
        }
    }

    /// True for a `*.domain` rule.
    pub fn is_wildcard(&self) -> bool {
        matches!(self.origin.host, Host::Wildcard(_))
    }
}

impl FromStr for OriginRule {
    type Err = OriginError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s, true).map(|origin| OriginRule { origin })
    }
}

impl fmt::Display for OriginRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        write!(f, "{}://", o.scheme)?;
        match &o.host {
            Host::Name(name) => f.write_str(name)?,
            Host::Ipv4(ip) => write!(f, "{ip}")?,
            Host::Ipv6(ip) => write!(f, "[{ip}]")?,
            Host::Wildcard(suffix) => write!(f, "*.{suffix}")?,
        }
        if let Some(port) = o.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// Rules travel through the admin API and config dumps as the text an operator would write.
impl Serialize for OriginRule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A parsed origin (rule or header) in canonical form.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    /// Lowercase.
    scheme: String,
    host: Host,
    /// `None` when absent or equal to the scheme's default, so that comparing ports never needs
    /// to know the scheme again.
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    /// A lowercase DNS name.
    Name(String),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    /// `*.suffix`: the lowercase suffix, a DNS name of two labels or more.
    Wildcard(String),
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `name` is `suffix` with one or more labels in front. The dot is checked explicitly so that
/// `evilexample.com` is never taken for a subdomain of `example.com`.
fn is_proper_subdomain(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len() + 1
        && name.ends_with(suffix)
        && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
}

fn parse(s: &str, allow_wildcard: bool) -> Result<Origin, OriginError> {
    if s.is_empty() {
        return Err(OriginError::Empty);
    }
    if s.len() > MAX_ORIGIN_BYTES {
        return Err(OriginError::TooLong);
    }
    let err = |make: fn(String) -> OriginError| make(s.to_owned());
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(OriginError::Whitespace));
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(err(OriginError::MissingScheme));
    };
    if allow_wildcard && s.contains('*') {
        let only_leading = rest.starts_with("*.") && !rest[1..].contains('*');
        if !only_leading || scheme.contains('*') {
            return Err(err(OriginError::BadWildcard));
        }
    }
    if !is_scheme(scheme) {
        return Err(err(OriginError::BadScheme));
    }
    let scheme = scheme.to_ascii_lowercase();

    let authority = match rest.find(['/', '?', '#']) {
        Some(at) if rest.as_bytes()[at] == b'/' => return Err(err(OriginError::HasPath)),
        Some(_) => return Err(err(OriginError::HasQuery)),
        None => rest,
    };
    if authority.contains('@') {
        return Err(err(OriginError::HasUserinfo));
    }

    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return Err(err(OriginError::BadHost));
        };
        let ip: Ipv6Addr = inside.parse().map_err(|_| err(OriginError::BadHost))?;
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(digits) => Some(digits),
                None => return Err(err(OriginError::BadHost)),
            },
        };
        (Host::Ipv6(ip), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let wildcard = host.strip_prefix("*.").filter(|_| allow_wildcard);
        let host = if let Some(suffix) = wildcard {
            if !is_dns_name(suffix) || ends_in_number(suffix) {
                return Err(err(OriginError::BadWildcard));
            }
            if !suffix.contains('.') {
                return Err(err(OriginError::WildcardTooBroad));
            }
            Host::Wildcard(suffix.to_ascii_lowercase())
        } else if !is_dns_name(host) {
            return Err(err(OriginError::BadHost));
        } else if ends_in_number(host) {
            // Browsers read a name whose last label is numeric as an IPv4 address, so only the
            // canonical dotted-quad spelling is accepted; anything else could be matched by a
            // different spelling of the same address.
            Host::Ipv4(host.parse().map_err(|_| err(OriginError::BadHost))?)
        } else {
            Host::Name(host.to_ascii_lowercase())
        };
        (host, port)
    };

    let port = match port {
        None => None,
        Some(digits) => {
            let port = parse_port(digits).ok_or_else(|| err(OriginError::BadPort))?;
            (Some(port) != default_port(&scheme)).then_some(port)
        }
    };
    Ok(Origin { scheme, host, port })
}

fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The WHATWG URL test for "this host is an IPv4 address": the last label is decimal digits or
/// a `0x` hexadecimal number.
fn ends_in_number(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or(host);
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match last.strip_prefix("0x").or_else(|| last.strip_prefix("0X")) {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

fn parse_port(digits: &str) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match digits.parse::<u32>() {
        Ok(port @ 1..=65535) => u16::try_from(port).ok(),
        _ => None,
    }
}
