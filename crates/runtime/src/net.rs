//! Network grants, enforced: `wasi:http/outgoing-handler` and `wasi:sockets` TCP for the
//! origins and endpoints a task entry grants, nothing else.
//!
//! * HTTP: every request is checked against the grants in [`wasmtime_wasi_http`]'s
//!   `send_request` hook, before any connection: a request that matches none gets
//!   `HTTP-request-denied` and one warning names the task, the method, the URL and the
//!   grants. The host follows no redirect (a guest that follows one sends a new request,
//!   checked again). Header values holding `{{secret:NAME}}` get the secret's value on the
//!   way out, so the value never enters the task's memory. Requests per call and response
//!   bytes read per call are capped; a call that hits a cap fails with that limit's code.
//!   `https` uses the system's roots, and a private CA when the engine has one.
//! * TCP: a connect reaches only an address granted as such, or one that a lookup of a
//!   granted name returned, on the granted port. Name lookup answers only granted names;
//!   UDP stays off.
//!
//! Every secret value of the run is redacted ([`Redactor`]) from whatever a task returns,
//! prints or logs before anything records or shows it.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use flowhost_core::contract::{HostFault, TaskError, escape};
use flowhost_core::flow::{HttpGrant, Port, Scheme, TcpGrant, placeholder, redacted};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use serde::Serialize;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::SocketError;
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{
    Host, HostResolveAddressStream, ResolveAddressStream,
};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress, Network};
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsCtxView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// Every secret value of a run, by name: what is cut out of a task's output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redactor(Arc<Vec<(String, String)>>);

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

impl Redactor {
    /// A redactor of these `(name, value)` pairs.
    pub fn new(secrets: Vec<(String, String)>) -> Self {
        Self(Arc::new(secrets))
    }

    /// `text` with every secret value (and its JSON-escaped form) replaced by
    /// `[secret NAME]`.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (name, value) in self.0.iter() {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), &redacted(name));
            }
            let escaped = serde_json::to_string(value).unwrap_or_default();
            let escaped = escaped.trim_matches('"');
            if escaped != value && out.contains(escaped) {
                out = out.replace(escaped, &redacted(name));
            }
        }
        out
    }

    /// `error` with its message and details redacted.
    pub fn error(&self, mut error: TaskError) -> TaskError {
        if self.0.is_empty() {
            return error;
        }
        error.message = self.text(&error.message);
        error.code = self.text(&error.code);
        if let Some(details) = &error.details {
            let text = self.text(&details.to_string());
            error.details = serde_json::from_str(&text).ok().or(Some(text.into()));
        }
        error
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A task's network access for one run: its grants, parsed, and the secrets its requests
/// may carry. Values are never serialised: `check --json` shows what is granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetAccess {
    /// HTTP grants, as written.
    pub http: Vec<String>,
    /// TCP grants, as written.
    pub tcp: Vec<String>,
    /// Names of the secrets the task's HTTP requests may carry.
    pub secrets: Vec<String>,
    #[serde(skip)]
    pub(crate) http_grants: Vec<HttpGrantRule>,
    #[serde(skip)]
    pub(crate) tcp_grants: Vec<TcpGrantRule>,
    #[serde(skip)]
    pub(crate) values: SecretValues,
}

/// Granted secrets' values, kept out of `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct SecretValues(pub(crate) Arc<BTreeMap<String, String>>);

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// A parsed HTTP grant (wrapped so the sandbox stays comparable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpGrantRule(pub(crate) HttpGrant);

/// A parsed TCP grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TcpGrantRule(pub(crate) TcpGrant);

impl NetAccess {
    /// Parses the grants; returns the access and every grant that does not parse.
    pub fn new(
        http: &[String],
        tcp: &[String],
        secrets: BTreeMap<String, String>,
    ) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let http_grants = http
            .iter()
            .filter_map(|g| {
                HttpGrant::parse(g)
                    .map_err(|e| problems.push(format!("`net.http` grant {e}")))
                    .ok()
            })
            .map(HttpGrantRule)
            .collect();
        let tcp_grants = tcp
            .iter()
            .filter_map(|g| {
                TcpGrant::parse(g)
                    .map_err(|e| problems.push(format!("`net.tcp` grant {e}")))
                    .ok()
            })
            .map(TcpGrantRule)
            .collect();
        (
            Self {
                http: http.to_vec(),
                tcp: tcp.to_vec(),
                secrets: secrets.keys().cloned().collect(),
                http_grants,
                tcp_grants,
                values: SecretValues(Arc::new(secrets)),
            },
            problems,
        )
    }

    /// Whether any TCP endpoint is granted.
    pub fn has_tcp(&self) -> bool {
        !self.tcp_grants.is_empty()
    }

    /// Grants that reach every port of a loopback or private address: worth a warning, as
    /// they reach every local service.
    pub fn wide_local_grants(&self) -> Vec<String> {
        let http = self
            .http_grants
            .iter()
            .filter(|g| g.0.is_wide_local())
            .map(|g| g.0.to_string());
        let tcp = self
            .tcp_grants
            .iter()
            .filter(|g| g.0.is_wide_local())
            .map(|g| g.0.to_string());
        http.chain(tcp).collect()
    }

    fn allows_http(&self, uri: &http::Uri) -> bool {
        let Some(scheme) = uri.scheme_str().and_then(Scheme::of) else {
            return false;
        };
        let Some(host) = uri.host() else {
            return false;
        };
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        self.http_grants
            .iter()
            .any(|g| g.0.allows(scheme, host, port, uri.path()))
    }
}

/// The TLS client configuration, built once per engine on the first `https` request:
/// the system's roots plus the engine's CA file, if any.
pub(crate) struct Tls {
    ca_file: Option<PathBuf>,
    config: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl Tls {
    pub(crate) fn new(ca_file: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            ca_file,
            config: OnceLock::new(),
        })
    }

    fn config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.config
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                let native = rustls_native_certs::load_native_certs();
                for cert in native.certs {
                    // A system certificate rustls cannot use is skipped, as browsers do.
                    let _ = roots.add(cert);
                }
                if let Some(path) = &self.ca_file {
                    use rustls::pki_types::CertificateDer;
                    use rustls::pki_types::pem::PemObject;
                    let certs = CertificateDer::pem_file_iter(path)
                        .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
                    let mut added = 0;
                    for cert in certs {
                        let cert = cert.map_err(|e| format!("CA file {}: {e}", path.display()))?;
                        roots
                            .add(cert)
                            .map_err(|e| format!("CA file {}: {e}", path.display()))?;
                        added += 1;
                    }
                    if added == 0 {
                        return Err(format!("CA file {} holds no certificate", path.display()));
                    }
                }
                // ring, not aws-lc-rs: no C toolchain beyond the one wasmtime needs. Its
                // provider lacks the post-quantum key exchange, hence the deprecation.
                #[expect(
                    deprecated,
                    reason = "ring's provider has no post-quantum key exchange"
                )]
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Ok(Arc::new(config))
            })
            .clone()
    }
}

/// What one call spent of its HTTP limits, and whether it hit one.
#[derive(Default)]
pub(crate) struct HttpSpend {
    requests: AtomicU64,
    body_bytes: AtomicU64,
    request_limit_hit: AtomicBool,
    body_limit_hit: AtomicBool,
}

/// The `wasi:http` hooks of one instance: its task's access, limits and what it spent.
pub(crate) struct HttpHooks {
    pub(crate) task: String,
    pub(crate) access: NetAccess,
    pub(crate) redact: Redactor,
    pub(crate) tls: Arc<Tls>,
    pub(crate) max_requests: u64,
    pub(crate) max_body: u64,
    pub(crate) spend: Arc<HttpSpend>,
}

impl HttpHooks {
    /// Starts a new call: nothing spent yet.
    pub(crate) fn new_call(&mut self, task: &str) {
        self.task = task.to_owned();
        self.spend = Arc::default();
    }

    /// The limit the call hit, as its failure.
    pub(crate) fn fault(&self) -> Option<TaskError> {
        if self.spend.request_limit_hit.load(Ordering::Relaxed) {
            return Some(HostFault::HttpRequestLimit.error(format!(
                "task `{}` sent more than {} HTTP requests in one call (limits.http_requests)",
                escape(&self.task),
                self.max_requests
            )));
        }
        if self.spend.body_limit_hit.load(Ordering::Relaxed) {
            return Some(HostFault::HttpBodyLimit.error(format!(
                "task `{}` read more than {} MiB of HTTP responses in one call (limits.http_body_mib)",
                escape(&self.task),
                self.max_body >> 20
            )));
        }
        None
    }
}

type Sent = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Sent {
        let uri = request.uri().clone();
        if !self.access.allows_http(&uri) {
            tracing::warn!(
                target: "flowhost::net",
                task = %escape(&self.task),
                "HTTP request denied: {} {} matches none of the task's grants [{}]",
                request.method(),
                escape(&self.redact.text(&uri.to_string())),
                escape(&self.access.http.join(", "))
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let sent = self.spend.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if sent > self.max_requests {
            self.spend.request_limit_hit.store(true, Ordering::Relaxed);
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        for value in request.headers_mut().values_mut() {
            let Ok(text) = value.to_str() else { continue };
            if !text.contains("{{secret:") {
                continue;
            }
            let mut filled = text.to_owned();
            for (name, secret) in self.access.values.0.iter() {
                filled = filled.replace(&placeholder(name), secret);
            }
            if let Ok(mut new) = http::HeaderValue::from_str(&filled) {
                new.set_sensitive(true);
                *value = new;
            }
        }
        let tls = self.tls.clone();
        let spend = self.spend.clone();
        let max_body = self.max_body;
        Box::new(async move {
            let (response, io) = send(request, &tls).await?;
            let response = response.map(|body| {
                Counted {
                    body,
                    spend,
                    max: max_body,
                }
                .boxed_unsync()
            });
            Ok((response, io))
        })
    }
}

/// A response body that counts what the task reads and fails past the call's cap.
struct Counted {
    body: WasiBody,
    spend: Arc<HttpSpend>,
    max: u64,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let read = self
                .spend
                .body_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed)
                + data.len() as u64;
            if read > self.max {
                self.spend.body_limit_hit.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(read)))));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}

/// Sends a granted request: connects to its authority, speaks TLS for `https`, HTTP/1.1.
/// No timeouts of its own: the call's deadline ends every wait, connection included.
async fn send(
    mut request: http::Request<WasiBody>,
    tls: &Tls,
) -> Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
> {
    let uri = request.uri().clone();
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let host = uri.host().ok_or(HttpError::HttpRequestUriInvalid)?;
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(HttpError::Connect)?;
    let io: Box<dyn Io> = if https {
        let config = tls.config().map_err(|reason| {
            tracing::error!(target: "flowhost::net", "TLS is not available: {reason}");
            HttpError::TlsCertificateError
        })?;
        let name = rustls::pki_types::ServerName::try_from(bare.to_owned())
            .map_err(|_| HttpError::HttpRequestUriInvalid)?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(HttpError::Tls)?;
        Box::new(stream)
    } else {
        Box::new(stream)
    };
    let (mut sender, mut conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(HttpError::from)?;
    // The request line carries the path only; the authority went into `Host`.
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    let mut response = Box::pin(sender.send_request(request));
    // Drive the connection while waiting for the response head.
    let mut conn_done = false;
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = response.as_mut().poll(cx) {
            return Poll::Ready(result.map_err(HttpError::from));
        }
        if !conn_done && let Poll::Ready(result) = Pin::new(&mut conn).poll(cx) {
            conn_done = true;
            if let Err(error) = result {
                return Poll::Ready(Err(HttpError::from(error)));
            }
        }
        Poll::Pending
    })
    .await?;
    let io: Box<dyn Future<Output = Result<(), HttpError>> + Send> = if conn_done {
        Box::new(async { Ok(()) })
    } else {
        Box::new(async move { conn.await.map_err(HttpError::from) })
    };
    Ok((
        response.map(|body| body.map_err(HttpError::from).boxed_unsync()),
        io,
    ))
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// The TCP side of one instance's access: which addresses and ports it may connect to,
/// granted addresses and those that lookups of granted names returned.
pub(crate) struct TcpAccess {
    grants: Vec<TcpGrant>,
    resolved: Mutex<HashMap<IpAddr, Vec<Port>>>,
    /// Open lookups: stream resource -> the granted name it resolves.
    lookups: Mutex<HashMap<u32, Vec<Port>>>,
}

impl TcpAccess {
    pub(crate) fn new(access: &NetAccess) -> Arc<Self> {
        let grants: Vec<TcpGrant> = access.tcp_grants.iter().map(|g| g.0.clone()).collect();
        let mut resolved: HashMap<IpAddr, Vec<Port>> = HashMap::new();
        for grant in &grants {
            if let Some(ip) = grant.address() {
                resolved.entry(ip).or_default().push(grant.port);
            }
        }
        Arc::new(Self {
            grants,
            resolved: Mutex::new(resolved),
            lookups: Mutex::new(HashMap::new()),
        })
    }

    /// The ports granted for `name`, if it is a granted name.
    fn ports_of(&self, name: &str) -> Option<Vec<Port>> {
        let ports: Vec<Port> = self
            .grants
            .iter()
            .filter(|g| g.name().is_some() && g.host.matches(name))
            .map(|g| g.port)
            .collect();
        (!ports.is_empty()).then_some(ports)
    }

    /// The socket address check: a connect to a granted address and port; an implicit bind
    /// (to the wildcard address) that a connect makes. Nothing else.
    pub(crate) fn check(self: &Arc<Self>, addr: SocketAddr, usage: SocketAddrUse) -> bool {
        match usage {
            SocketAddrUse::TcpConnect => self
                .resolved
                .lock()
                .expect("tcp access poisoned")
                .get(&addr.ip())
                .is_some_and(|ports| ports.iter().any(|p| p.matches(addr.port()))),
            SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
            _ => false,
        }
    }
}

/// `wasi:sockets/ip-name-lookup` answering only granted names: wasmtime-wasi's lookup,
/// behind a check of the name, recording each address it returns as connectable on the
/// name's granted ports.
pub(crate) struct GrantedLookup<'a> {
    pub(crate) sockets: WasiSocketsCtxView<'a>,
    pub(crate) access: Arc<TcpAccess>,
}

/// The `HasData` of [`GrantedLookup`], for the linker.
pub(crate) struct GrantedLookupData;

impl wasmtime::component::HasData for GrantedLookupData {
    type Data<'a> = GrantedLookup<'a>;
}

/// The lookup's errors are the network interface's; wasmtime-wasi converts them.
impl wasmtime_wasi::p2::bindings::sockets::network::Host for GrantedLookup<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        wasmtime_wasi::p2::bindings::sockets::network::Host::convert_error_code(
            &mut self.sockets,
            error,
        )
    }

    fn network_error_code(
        &mut self,
        error: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        wasmtime_wasi::p2::bindings::sockets::network::Host::network_error_code(
            &mut self.sockets,
            error,
        )
    }
}

impl wasmtime_wasi::p2::bindings::sockets::network::HostNetwork for GrantedLookup<'_> {
    fn drop(&mut self, network: Resource<Network>) -> wasmtime::Result<()> {
        wasmtime_wasi::p2::bindings::sockets::network::HostNetwork::drop(&mut self.sockets, network)
    }
}

impl Host for GrantedLookup<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> Result<Resource<ResolveAddressStream>, SocketError> {
        let Some(ports) = self.access.ports_of(&name) else {
            tracing::warn!(
                target: "flowhost::net",
                "name lookup denied: `{}` is not a granted TCP host",
                escape(&name)
            );
            return Err(ErrorCode::NameUnresolvable.into());
        };
        let stream = Host::resolve_addresses(&mut self.sockets, network, name)?;
        self.access
            .lookups
            .lock()
            .expect("tcp access poisoned")
            .insert(stream.rep(), ports);
        Ok(stream)
    }
}

impl HostResolveAddressStream for GrantedLookup<'_> {
    fn resolve_next_address(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> Result<Option<IpAddress>, SocketError> {
        let rep = stream.rep();
        let next = HostResolveAddressStream::resolve_next_address(&mut self.sockets, stream)?;
        if let Some(address) = &next {
            let ip = match *address {
                IpAddress::Ipv4((a, b, c, d)) => IpAddr::from([a, b, c, d]),
                IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => IpAddr::from([a, b, c, d, e, f, g, h]),
            };
            let ports = self
                .access
                .lookups
                .lock()
                .expect("tcp access poisoned")
                .get(&rep)
                .cloned()
                .unwrap_or_default();
            self.access
                .resolved
                .lock()
                .expect("tcp access poisoned")
                .entry(ip)
                .or_default()
                .extend(ports);
        }
        Ok(next)
    }

    fn subscribe(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<wasmtime_wasi::p2::DynPollable>> {
        HostResolveAddressStream::subscribe(&mut self.sockets, stream)
    }

    fn drop(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        self.access
            .lookups
            .lock()
            .expect("tcp access poisoned")
            .remove(&stream.rep());
        HostResolveAddressStream::drop(&mut self.sockets, stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_replaces_plain_and_json_escaped_values() {
        let redactor = Redactor::new(vec![("token".into(), "s3cr\"et-value".into())]);
        assert_eq!(
            redactor.text("got s3cr\"et-value here"),
            "got [secret token] here"
        );
        assert_eq!(
            redactor.text(r#"{"echo":"s3cr\"et-value"}"#),
            r#"{"echo":"[secret token]"}"#
        );
        let error = redactor.error(TaskError {
            code: "boom".into(),
            message: "token s3cr\"et-value refused".into(),
            details: Some(serde_json::json!({"sent": "s3cr\"et-value"})),
        });
        assert_eq!(error.message, "token [secret token] refused");
        assert_eq!(error.details.unwrap()["sent"], "[secret token]");
    }

    #[test]
    fn tcp_connects_reach_only_granted_addresses_and_ports() {
        let (access, problems) = NetAccess::new(
            &[],
            &["127.0.0.1:5432".into(), "db.internal:6432".into()],
            BTreeMap::new(),
        );
        assert!(problems.is_empty(), "{problems:?}");
        let tcp = TcpAccess::new(&access);
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(tcp.check(at("127.0.0.1:5432"), SocketAddrUse::TcpConnect));
        assert!(!tcp.check(at("127.0.0.1:5433"), SocketAddrUse::TcpConnect));
        assert!(!tcp.check(at("127.0.0.2:5432"), SocketAddrUse::TcpConnect));
        assert!(!tcp.check(at("127.0.0.1:5432"), SocketAddrUse::UdpBind));
        assert!(tcp.check(at("0.0.0.0:0"), SocketAddrUse::TcpBind));
        assert!(!tcp.check(at("127.0.0.1:8080"), SocketAddrUse::TcpBind));
        assert_eq!(tcp.ports_of("DB.internal"), Some(vec![Port::Is(6432)]));
        assert_eq!(tcp.ports_of("other.internal"), None);
    }
}
