//! Real servers on loopback for the network-grant tests: an HTTP/1.1 server (plain or TLS
//! with a CA generated for the test), one that accepts and never answers, one that streams
//! an endless body, and a TCP echo server. Each counts the connections it accepted, so a
//! test can tell that a denied request never reached it, and keeps the requests it read, so
//! a test can tell what reached it (a secret's value, filled in by the host). They stop when
//! dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What a server does with each connection.
#[derive(Clone)]
pub enum Behaviour {
    /// Answers every request with 200 and a JSON body `{"path", "headers"}` echoing the
    /// request line's path and every header it received.
    Echo,
    /// Reads the request and never answers.
    Silent,
    /// Answers 200 and streams zeros until the client goes away (or `limit` bytes).
    Endless {
        /// Bytes at most.
        limit: u64,
    },
    /// Echoes each TCP read back, prefixed with `echo:`.
    TcpEcho,
}

/// A server on `127.0.0.1`, stopped when dropped.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    received: Received,
    stop: Arc<AtomicBool>,
}

/// The requests a server read, as `{"method", "path", "headers", "body"}`.
type Received = Arc<Mutex<Vec<serde_json::Value>>>;

/// A private CA and a server certificate it signed for `localhost` and `127.0.0.1`.
pub struct TestCa {
    /// The CA certificate, PEM, for `--ca-file`.
    pub ca_file: PathBuf,
    config: Arc<rustls::ServerConfig>,
    _dir: tempfile::TempDir,
}

impl TestCa {
    /// Generates the CA and the server certificate.
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "flowhost test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        #[expect(
            deprecated,
            reason = "ring's provider has no post-quantum key exchange"
        )]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        Self {
            ca_file,
            config: Arc::new(config),
            _dir: dir,
        }
    }

    /// The CA file's path.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// A plain server doing `behaviour`.
    pub fn start(behaviour: Behaviour) -> Self {
        Self::spawn(behaviour, None)
    }

    /// An HTTPS server doing `behaviour` with `ca`'s server certificate.
    pub fn start_tls(behaviour: Behaviour, ca: &TestCa) -> Self {
        Self::spawn(behaviour, Some(ca.config.clone()))
    }

    fn spawn(behaviour: Behaviour, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let received = Received::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (count, kept, halt) = (accepted.clone(), received.clone(), stop.clone());
        thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        let behaviour = behaviour.clone();
                        let tls = tls.clone();
                        let (kept, halt) = (kept.clone(), halt.clone());
                        thread::spawn(move || serve(stream, behaviour, tls, kept, halt));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            addr,
            accepted,
            received,
            stop,
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections it accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Every HTTP request it read so far, as `{"method", "path", "headers", "body"}` (header
    /// names in lowercase, a sized body as text): what the host really sent, secrets' values
    /// included.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    stream: TcpStream,
    behaviour: Behaviour,
    tls: Option<Arc<rustls::ServerConfig>>,
    received: Received,
    halt: Arc<AtomicBool>,
) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    match tls {
        Some(config) => {
            let Ok(connection) = rustls::ServerConnection::new(config) else {
                return;
            };
            let stream = rustls::StreamOwned::new(connection, stream);
            handle(stream, behaviour, received, halt);
        }
        None => handle(stream, behaviour, received, halt),
    }
}

fn handle(
    mut stream: impl Read + Write,
    behaviour: Behaviour,
    received: Received,
    halt: Arc<AtomicBool>,
) {
    if let Behaviour::TcpEcho = behaviour {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 || stream.write_all(b"echo:").is_err() || stream.write_all(&buf[..n]).is_err()
            {
                return;
            }
            let _ = stream.flush();
        }
        return;
    }
    let mut reader = BufReader::new(&mut stream);
    // A sized body is read before answering: closing with unread bytes would reset the
    // connection under the client's feet.
    let Some(request) = read_request(&mut reader, 1 << 20) else {
        return;
    };
    drop(reader);
    let Request {
        method,
        path,
        headers,
        body,
    } = request;
    received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(serde_json::json!({
            "method": method,
            "path": &path,
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        }));
    match behaviour {
        Behaviour::Echo => {
            let body = serde_json::json!({ "path": path, "headers": headers }).to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.flush();
        }
        Behaviour::Silent => {
            while !halt.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(20));
            }
        }
        Behaviour::Endless { limit } => {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {limit}\r\nconnection: close\r\n\r\n"
            );
            let chunk = vec![0u8; 64 << 10];
            let mut sent = 0u64;
            while sent < limit && !halt.load(Ordering::Relaxed) {
                let n = chunk.len().min((limit - sent) as usize);
                if stream.write_all(&chunk[..n]).is_err() {
                    return;
                }
                sent += n as u64;
            }
            let _ = stream.flush();
        }
        Behaviour::TcpEcho => unreachable!("handled above"),
    }
}

/// One HTTP/1.1 request as the test servers read it.
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Header names lowercased, each with its (last) value.
    pub(crate) headers: serde_json::Map<String, serde_json::Value>,
    /// The body its `content-length` announces, at most `max_body` bytes of it.
    pub(crate) body: Vec<u8>,
}

/// Reads a request line, headers and a sized body from `reader`; `None` when the client
/// goes away first.
pub(crate) fn read_request(reader: &mut impl BufRead, max_body: usize) -> Option<Request> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return None;
    }
    let mut headers = serde_json::Map::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().into());
        }
    }
    let length = headers
        .get("content-length")
        .and_then(|v| v.as_str()?.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length.min(max_body)];
    reader.read_exact(&mut body).ok()?;
    let mut words = request_line.split_whitespace();
    Some(Request {
        method: words.next().unwrap_or_default().to_owned(),
        path: words.next().unwrap_or("/").to_owned(),
        headers,
        body,
    })
}
