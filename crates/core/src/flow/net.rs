//! Network grants and secrets as the flow states them: which HTTP origins and TCP endpoints a
//! task may reach (`net = { http = [..], tcp = [..] }`), and which named secrets the host
//! reads for the run and hands to a task without the task ever reading them.
//!
//! Deny by default: a task with no grant reaches nothing. The matching is here, pure and
//! tested on its own, so that `check`, the runtime's request hook and the socket checks all
//! decide alike.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// An entry's network grants as written: each list falls back to the flow's top-level `net`
/// when the entry does not set it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Net {
    /// HTTP origins, `scheme://host[:port][/path-prefix]`; `*.example.org` matches the
    /// subdomains of `example.org`, and a port of `*` any port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<String>>,
    /// TCP endpoints, `host:port` (a name, an IPv4 address or a bracketed IPv6 address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Vec<String>>,
}

impl Net {
    /// This entry's grants over the flow's.
    pub fn resolve(&self, flow: &Net) -> Net {
        Net {
            http: self.http.clone().or_else(|| flow.http.clone()),
            tcp: self.tcp.clone().or_else(|| flow.tcp.clone()),
        }
    }

    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.http.as_ref().is_none_or(Vec::is_empty) && self.tcp.as_ref().is_none_or(Vec::is_empty)
    }
}

/// Where the host reads a secret's value when a run loads (`[secrets]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretSource {
    /// A variable of flowhost's environment.
    Env(String),
    /// A file, relative to the flow file's folder; one trailing newline is not part of the
    /// value.
    File(PathBuf),
}

/// A flow's secrets by name.
pub type Secrets = BTreeMap<String, SecretSource>;

/// The shortest secret value the host accepts: redaction replaces every occurrence of a
/// value in what tasks return and print, which for a value of a few bytes would rewrite
/// ordinary text and still not protect it.
pub const MIN_SECRET_BYTES: usize = 8;

/// The placeholder a task writes in an HTTP header value for the host to fill in.
pub fn placeholder(name: &str) -> String {
    format!("{{{{secret:{name}}}}}")
}

/// What a secret's value is replaced with wherever it would be recorded or shown.
pub fn redacted(name: &str) -> String {
    format!("[secret {name}]")
}

/// A granted host: one name, every subdomain of one, or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this name (lowercase) or address literal.
    Exact(String),
    /// Any name ending in `.` + this one (`*.example.org`), not the name itself.
    Subdomains(String),
}

impl HostPattern {
    fn parse(host: &str) -> Result<Self, String> {
        if host.is_empty() {
            return Err("no host".into());
        }
        let host = host.to_ascii_lowercase();
        if let Some(parent) = host.strip_prefix("*.") {
            check_name(parent)?;
            return Ok(Self::Subdomains(parent.to_owned()));
        }
        if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            let ip: IpAddr = inner
                .parse()
                .map_err(|_| format!("`{host}` is not an IPv6 address"))?;
            return Ok(Self::Exact(format!("[{ip}]")));
        }
        if host.parse::<IpAddr>().is_err() {
            check_name(&host)?;
        }
        Ok(Self::Exact(host))
    }

    /// Whether `host` (as a request names it: a name or an address literal, IPv6 in
    /// brackets) is this pattern's. Names compare without case; an address never matches a
    /// name, whatever the name resolves to.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self {
            Self::Exact(name) => *name == host,
            Self::Subdomains(parent) => host
                .strip_suffix(parent.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        }
    }

    /// Whether every host this pattern matches is matched by `wider` too.
    pub fn within(&self, wider: &HostPattern) -> bool {
        match (self, wider) {
            (Self::Exact(host), _) => wider.matches(host),
            (Self::Subdomains(mine), Self::Subdomains(theirs)) => {
                mine == theirs || Self::Subdomains(theirs.clone()).matches(mine)
            }
            (Self::Subdomains(_), Self::Exact(_)) => false,
        }
    }

    /// Whether the pattern names a loopback or private address (or `localhost`): such a grant
    /// reaches services on the host or its network.
    pub fn is_local(&self) -> bool {
        let Self::Exact(host) = self else {
            return false;
        };
        if host == "localhost" || host.ends_with(".localhost") {
            return true;
        }
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(IpAddr::V4(ip)) => {
                ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified()
            }
            Ok(IpAddr::V6(ip)) => {
                ip.is_loopback()
                    || ip.is_unspecified()
                    || (ip.segments()[0] & 0xfe00) == 0xfc00
                    || (ip.segments()[0] & 0xffc0) == 0xfe80
            }
            Err(_) => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(host) => f.write_str(host),
            Self::Subdomains(parent) => write!(f, "*.{parent}"),
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a host name"))
    }
}

/// A granted port: one, or any (`*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// This port only.
    Is(u16),
    /// Every port.
    Any,
}

impl Port {
    fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        match text.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("`{text}` is not a port (1-65535 or `*`)")),
            Ok(port) => Ok(Self::Is(port)),
        }
    }

    /// Whether `port` is granted.
    pub fn matches(self, port: u16) -> bool {
        match self {
            Self::Is(granted) => granted == port,
            Self::Any => true,
        }
    }

    /// Whether every port this one matches is matched by `wider` too.
    pub fn within(self, wider: Port) -> bool {
        match self {
            Self::Is(port) => wider.matches(port),
            Self::Any => wider == Self::Any,
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Is(port) => write!(f, "{port}"),
            Self::Any => f.write_str("*"),
        }
    }
}

/// The schemes a grant may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (default port 80).
    Http,
    /// HTTP over TLS (default port 443).
    Https,
}

impl Scheme {
    /// The scheme of `name`, if flowhost grants it.
    pub fn of(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "http" => Some(Self::Http),
            "https" => Some(Self::Https),
            _ => None,
        }
    }

    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// One HTTP grant, parsed: `scheme://host[:port][/path-prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    /// The scheme requests must use.
    pub scheme: Scheme,
    /// The host requests must name.
    pub host: HostPattern,
    /// The port requests must reach (the scheme's default when the grant names none).
    pub port: Port,
    /// The path requests must stay under (`/` when the grant names none).
    pub path: String,
}

impl HttpGrant {
    /// Parses a grant as the flow file writes it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("`{text}` has no scheme (write `https://{text}`)"))?;
        let scheme = Scheme::of(scheme)
            .ok_or_else(|| format!("`{text}`: scheme `{scheme}` is not http or https"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!(
                "`{text}`: a grant names no user; put credentials in a secret"
            ));
        }
        if path.contains(['?', '#']) {
            return Err(format!(
                "`{text}`: a grant's path is a prefix, without query or fragment"
            ));
        }
        if has_dot_segment(path) {
            return Err(format!(
                "`{text}`: a grant's path has no `.` or `..` segment"
            ));
        }
        let (host, port) = split_port(authority).map_err(|e| format!("`{text}`: {e}"))?;
        let host = HostPattern::parse(host).map_err(|e| format!("`{text}`: {e}"))?;
        let port = match port {
            Some(port) => Port::parse(port).map_err(|e| format!("`{text}`: {e}"))?,
            None => Port::Is(scheme.default_port()),
        };
        Ok(Self {
            scheme,
            host,
            port,
            path: path.to_owned(),
        })
    }

    /// Whether a request to `scheme://host:port` + `path` is granted. `path` is the request's
    /// path without its query. A path with a `.` or `..` segment (also percent-encoded) is
    /// never under a prefix: a server may resolve it to somewhere else.
    pub fn allows(&self, scheme: Scheme, host: &str, port: u16, path: &str) -> bool {
        scheme == self.scheme
            && self.port.matches(port)
            && self.host.matches(host)
            && under(path, &self.path)
    }

    /// Whether this grant reaches every port of a loopback or private address.
    pub fn is_wide_local(&self) -> bool {
        self.port == Port::Any && self.host.is_local()
    }

    /// Whether every request this grant allows is allowed by `wider` too (a worker's
    /// `--allow-net` deciding what a submitted flow may grant).
    pub fn within(&self, wider: &HttpGrant) -> bool {
        self.scheme == wider.scheme
            && self.port.within(wider.port)
            && self.host.within(&wider.host)
            && under(&self.path, &wider.path)
    }
}

impl fmt::Display for HttpGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}:{}{}",
            self.scheme.as_str(),
            self.host,
            self.port,
            self.path
        )
    }
}

/// One TCP grant, parsed: `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpGrant {
    /// The host: one name or one address (no wildcards: a name is resolved by the host).
    pub host: HostPattern,
    /// The port.
    pub port: Port,
}

impl TcpGrant {
    /// Parses a grant as the flow file writes it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (host, port) = split_port(text).map_err(|e| format!("`{text}`: {e}"))?;
        let port = port.ok_or_else(|| format!("`{text}` names no port (`host:port`)"))?;
        let host = HostPattern::parse(host).map_err(|e| format!("`{text}`: {e}"))?;
        if matches!(host, HostPattern::Subdomains(_)) {
            return Err(format!(
                "`{text}`: a TCP grant names one host, not a wildcard"
            ));
        }
        let port = Port::parse(port).map_err(|e| format!("`{text}`: {e}"))?;
        Ok(Self { host, port })
    }

    /// The address of an address grant (not of a name).
    pub fn address(&self) -> Option<IpAddr> {
        let HostPattern::Exact(host) = &self.host else {
            return None;
        };
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }

    /// The name of a name grant (not of an address).
    pub fn name(&self) -> Option<&str> {
        match &self.host {
            HostPattern::Exact(host) if self.address().is_none() => Some(host),
            _ => None,
        }
    }

    /// Whether this grant reaches every port of a loopback or private address.
    pub fn is_wide_local(&self) -> bool {
        self.port == Port::Any && self.host.is_local()
    }

    /// Whether every connection this grant allows is allowed by `wider` too.
    pub fn within(&self, wider: &TcpGrant) -> bool {
        self.port.within(wider.port) && self.host.within(&wider.host)
    }
}

impl fmt::Display for TcpGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Splits `host[:port]`, IPv6 literals in brackets.
fn split_port(authority: &str) -> Result<(&str, Option<&str>), String> {
    if authority.starts_with('[') {
        let end = authority
            .find(']')
            .ok_or_else(|| "an IPv6 address lacks its `]`".to_string())?;
        let (host, rest) = authority.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err(format!("unexpected `{rest}` after the address")),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((authority, None)),
    }
}

/// Whether `path` is at or below `prefix`: `/v3/` takes `/v3/x`, `/v3` takes `/v3` and
/// `/v3/x` but not `/v3x`.
fn under(path: &str, prefix: &str) -> bool {
    let path = if path.is_empty() { "/" } else { path };
    if has_dot_segment(path) {
        return false;
    }
    if prefix == "/" || prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether a path has a `.` or `..` segment, spelt plainly or percent-encoded.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = segment.replace("%2e", ".").replace("%2E", ".");
        decoded == "." || decoded == ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(grant: &str, scheme: Scheme, host: &str, port: u16, path: &str) -> bool {
        HttpGrant::parse(grant)
            .unwrap()
            .allows(scheme, host, port, path)
    }

    #[test]
    fn an_http_grant_takes_its_origin_and_path_and_nothing_near_it() {
        use Scheme::*;
        let g = "http://127.0.0.1:8776/v3/";
        assert!(allows(g, Http, "127.0.0.1", 8776, "/v3/volumes"));
        assert!(
            !allows(g, Http, "127.0.0.1", 8777, "/v3/volumes"),
            "other port"
        );
        assert!(
            !allows(g, Https, "127.0.0.1", 8776, "/v3/volumes"),
            "other scheme"
        );
        assert!(
            !allows(g, Http, "127.0.0.2", 8776, "/v3/volumes"),
            "other host"
        );
        assert!(
            !allows(g, Http, "127.0.0.1", 8776, "/v2/volumes"),
            "other path"
        );
        assert!(
            !allows(g, Http, "127.0.0.1", 8776, "/v3"),
            "above the prefix"
        );
        assert!(
            !allows(g, Http, "127.0.0.1", 8776, "/v3/../admin"),
            "dot segment"
        );
        assert!(
            !allows(g, Http, "127.0.0.1", 8776, "/v3/%2e%2E/admin"),
            "encoded"
        );
        let g = "https://quota.example.org";
        assert!(allows(g, Https, "quota.example.org", 443, "/anything"));
        assert!(
            allows(g, Https, "QUOTA.example.org.", 443, "/"),
            "case, root dot"
        );
        assert!(
            !allows(g, Https, "quota.example.org", 8443, "/"),
            "default port only"
        );
        assert!(
            !allows(g, Https, "x.quota.example.org", 443, "/"),
            "no subdomain"
        );
        assert!(
            !allows(g, Https, "93.184.216.34", 443, "/"),
            "no address for a name"
        );
        let g = "https://example.org/v3";
        assert!(allows(g, Https, "example.org", 443, "/v3"));
        assert!(allows(g, Https, "example.org", 443, "/v3/x"));
        assert!(!allows(g, Https, "example.org", 443, "/v3x"));
    }

    #[test]
    fn a_wildcard_grant_takes_subdomains_but_not_the_parent_or_lookalikes() {
        use Scheme::*;
        let g = "https://*.example.org";
        assert!(allows(g, Https, "a.example.org", 443, "/"));
        assert!(allows(g, Https, "b.a.example.org", 443, "/"));
        assert!(!allows(g, Https, "example.org", 443, "/"));
        assert!(!allows(g, Https, "badexample.org", 443, "/"));
        assert!(!allows(g, Https, "a.example.org.evil.com", 443, "/"));
    }

    #[test]
    fn malformed_grants_are_refused_naming_the_grant() {
        for bad in [
            "example.org",
            "ftp://example.org",
            "https://user:pw@example.org",
            "https://example.org:0",
            "https://example.org:99999",
            "https://exa mple.org",
            "https://example.org/a?b",
            "https://example.org/a/../b",
            "https://",
        ] {
            let error = HttpGrant::parse(bad).unwrap_err();
            assert!(error.contains(bad) || bad == "https://", "{bad}: {error}");
        }
        for bad in [
            "db.internal",
            "db.internal:x",
            "*.internal:5432",
            "[::1:5432",
        ] {
            assert!(TcpGrant::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tcp_grants_name_one_host_and_port() {
        let g = TcpGrant::parse("db.internal:5432").unwrap();
        assert_eq!(g.name(), Some("db.internal"));
        assert_eq!(g.port, Port::Is(5432));
        let g = TcpGrant::parse("[::1]:5432").unwrap();
        assert_eq!(g.address(), Some("::1".parse().unwrap()));
        assert_eq!(g.name(), None);
        let g = TcpGrant::parse("127.0.0.1:*").unwrap();
        assert!(g.is_wide_local());
        assert!(!TcpGrant::parse("127.0.0.1:5432").unwrap().is_wide_local());
        assert!(!TcpGrant::parse("db.example.org:*").unwrap().is_wide_local());
    }

    #[test]
    fn local_wildcard_ports_are_wide() {
        assert!(
            HttpGrant::parse("http://localhost:*")
                .unwrap()
                .is_wide_local()
        );
        assert!(
            HttpGrant::parse("http://10.1.2.3:*")
                .unwrap()
                .is_wide_local()
        );
        assert!(HttpGrant::parse("http://[::1]:*").unwrap().is_wide_local());
        assert!(
            !HttpGrant::parse("http://10.1.2.3:80")
                .unwrap()
                .is_wide_local()
        );
    }

    #[test]
    fn an_entry_falls_back_to_the_flows_grants_list_by_list() {
        let flow = Net {
            http: Some(vec!["https://a.org".into()]),
            tcp: Some(vec!["db:5432".into()]),
        };
        let entry = Net {
            http: Some(vec![]),
            tcp: None,
        };
        let resolved = entry.resolve(&flow);
        assert_eq!(resolved.http, Some(vec![]));
        assert_eq!(resolved.tcp, flow.tcp);
    }
}
