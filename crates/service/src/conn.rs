//! Connections, and what a client that never finishes a request can hold.
//!
//! A socket costs a file descriptor whatever it sends, so a client that opens many and
//! sends half a request on each (slowloris) would otherwise take every descriptor the
//! process has — and then `/healthz`, the run database and the plugins get none. So:
//!
//! - a request's headers must arrive within the header timeout, counted from the
//!   connection's start or its previous answer (hyper's `header_read_timeout`);
//! - a connection on which no bytes move for the idle timeout is closed, unless the service
//!   is working out an answer (a run start can wait on a plugin's compilation): this covers
//!   a client that sends a body slowly, or stops reading an answer or an event stream;
//! - there are at most `max_connections`, well below the open-file limit; at the cap, a new
//!   connection makes room by closing the oldest one that has no request in progress, so a
//!   normal client still gets in past a crowd of half-open sockets, and is refused only
//!   when every connection is busy with a request.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower_service::Service;

/// How the service bounds what its callers hold: connections, their timeouts, event
/// streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    /// A connection on which nothing moves for this long is closed (while no answer is
    /// being worked out).
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Event streams (`GET /v1/runs/{id}/events`) open at once; more are answered 503.
    pub max_event_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: connections_for_open_files(),
            max_event_streams: 512,
        }
    }
}

/// The default connection cap: the open-file limit (`RLIMIT_NOFILE`, soft) less a quarter of
/// it, at least 128, for the run database, plugins, compiled components and logs.
pub fn connections_for_open_files() -> usize {
    #[cfg(unix)]
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    #[cfg(not(unix))]
    let limit = 1024u64;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let reserve = (limit / 4).max(128);
    limit.saturating_sub(reserve).max(16)
}

/// One connection as the accept loop sees it.
struct Slot {
    /// Requests received whose answer is not fully sent: the connection is not idle.
    open: AtomicUsize,
    /// Requests whose answer is not ready yet.
    computing: AtomicUsize,
    /// Of those, the ones whose body is still arriving: they wait on the client, not on the
    /// service, so the idle timeout still applies to them.
    receiving: AtomicUsize,
    /// When bytes last moved, in milliseconds since `epoch`.
    active_ms: AtomicU64,
    epoch: Instant,
    /// Told to close (the cap made room).
    evict: Notify,
}

impl Slot {
    fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.active_ms.store(now, Ordering::Relaxed);
    }

    /// Whether the service is working out an answer (rather than waiting on the client).
    fn working(&self) -> bool {
        self.computing.load(Ordering::SeqCst) > self.receiving.load(Ordering::SeqCst)
    }

    /// When the idle timeout next expires.
    fn idle_deadline(&self, idle: Duration) -> Instant {
        self.epoch + Duration::from_millis(self.active_ms.load(Ordering::Relaxed)) + idle
    }
}

/// Counts a request as open (and computing) until dropped.
struct Guard(Arc<Slot>, fn(&Slot) -> &AtomicUsize);

impl Guard {
    fn new(slot: &Arc<Slot>, counter: fn(&Slot) -> &AtomicUsize) -> Self {
        counter(slot).fetch_add(1, Ordering::SeqCst);
        Self(slot.clone(), counter)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::SeqCst);
    }
}

/// A socket that notes when bytes move.
struct Tracked {
    stream: TcpStream,
    slot: Arc<Slot>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.slot.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.slot.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request's body, counted as still arriving until its end (or until dropped unread).
struct Inbound {
    body: Incoming,
    receiving: Option<Guard>,
}

impl http_body::Body for Inbound {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) || self.body.is_end_stream() {
            self.receiving = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// An answer's body, holding its request open until it is sent or dropped.
struct Answer {
    body: Body,
    _open: Guard,
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The open connections, oldest first.
#[derive(Default)]
struct Registry {
    slots: Mutex<BTreeMap<u64, Arc<Slot>>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for one more connection under `max`: closes the oldest idle one when at the
    /// cap. False when every connection has a request in progress.
    fn make_room(&self, max: usize) -> bool {
        let mut slots = self.lock();
        if slots.len() < max {
            return true;
        }
        let idle = slots
            .iter()
            .find(|(_, slot)| slot.open.load(Ordering::SeqCst) == 0)
            .map(|(id, _)| *id);
        match idle.and_then(|id| slots.remove(&id)) {
            Some(slot) => {
                slot.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Accepts connections and serves `app` on them under `limits` until `shutdown` turns true;
/// then stops accepting, lets each connection finish its request in progress, and returns
/// once every connection is closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let registry = Arc::new(Registry::default());
    let mut connections = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors (or a connection reset before it was accepted): try
                // again shortly rather than spin.
                tracing::debug!("accepting a connection failed: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if !registry.make_room(limits.max_connections) {
            tracing::warn!(
                "refusing a connection: all {} are busy with requests",
                limits.max_connections
            );
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let slot = Arc::new(Slot {
            open: AtomicUsize::new(0),
            computing: AtomicUsize::new(0),
            receiving: AtomicUsize::new(0),
            active_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            evict: Notify::new(),
        });
        let id = next_id;
        next_id += 1;
        registry.lock().insert(id, slot.clone());
        let (app, registry, shutdown) = (app.clone(), registry.clone(), shutdown.clone());
        connections.spawn(async move {
            connection(stream, slot, app, limits, shutdown).await;
            registry.lock().remove(&id);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Serves one connection until it closes, times out, is evicted, or the service stops.
async fn connection(
    stream: TcpStream,
    slot: Arc<Slot>,
    app: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let io = TokioIo::new(Tracked {
        stream,
        slot: slot.clone(),
    });
    let requests = slot.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (slot, mut app) = (requests.clone(), app.clone());
        async move {
            let open = Guard::new(&slot, |s| &s.open);
            let computing = Guard::new(&slot, |s| &s.computing);
            let receiving = (!http_body::Body::is_end_stream(request.body()))
                .then(|| Guard::new(&slot, |s| &s.receiving));
            let request = request.map(|body| Inbound { body, receiving });
            let response: Response<Body> = match app.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            drop(computing);
            Ok::<_, Infallible>(response.map(|body| Body::new(Answer { body, _open: open })))
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let mut idle_at = slot.idle_deadline(limits.idle_timeout);
        if idle_at <= Instant::now() {
            // Past due, yet an answer is still being worked out: look again later.
            idle_at = Instant::now() + limits.idle_timeout;
        }
        tokio::select! {
            _ = conn.as_mut() => return,
            () = slot.evict.notified() => return,
            () = tokio::time::sleep_until(idle_at.into()) => {
                if !slot.working() && Instant::now() >= slot.idle_deadline(limits.idle_timeout)
                {
                    return;
                }
            }
            _ = shutdown.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
