//! Serving: the accept loop for each listener (HTTP/1.1 and HTTP/2), the header-read
//! timeout, and graceful shutdown: fail readiness while still serving for the drain
//! time, then stop accepting, let in-flight requests finish within a grace period, and
//! return.
//!
//! Each listener caps its connections, closes connections that stay silent, answers 503
//! to a request that outlives the request timeout, and on shutdown lets every connection
//! answer its request in flight within a grace period. The public listener may serve
//! HTTPS ([`tls`]: rustls with aws-lc-rs, the certificate reloaded without a restart); the
//! same limits apply, and the TLS handshake has its own timeout.

pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::app::{App, Built};
use crate::http::response::Body;

/// A listener's limits (`[server]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; at the limit, accepting pauses until one ends.
    pub max_connections: usize,
    /// Largest request head accepted (request line or pseudo-headers, and header
    /// fields); a larger one gets 431.
    pub max_header_bytes: usize,
    /// The admin listener's own connection cap (and its limit of requests in flight).
    pub admin_max_connections: usize,
    /// A connection that sends nothing for this long is closed (after any request in
    /// flight is answered).
    pub idle_timeout: Duration,
    /// A request not answered within this long gets 503.
    pub request_timeout: Duration,
    /// A connection that has not sent a whole request head this long after it was
    /// accepted (TLS handshake included) is closed; on HTTP/1.1 every later request head
    /// must also arrive within this long of its first byte.
    pub header_timeout: Duration,
    /// How long, once a shutdown signal arrives, readiness fails while both listeners
    /// keep serving, before accepting stops.
    pub drain: Duration,
    /// How long in-flight requests get to finish after accepting stops.
    pub shutdown_grace: Duration,
    /// Requests served at once over all the listener's connections (HTTP/2 streams
    /// included); beyond it a request is answered 503 at once, before its body is read.
    pub max_requests_in_flight: usize,
}

/// Serves the public and admin listeners until `shutdown` completes, then drains.
/// Also runs in the background the keeper of every upstream issuer's JWKS, and the
/// reloads of the policy and of the signing key directory: on SIGHUP, and when their files
/// change (`policy.watch_seconds`, `signing.watch_seconds`).
pub async fn run(
    built: Built,
    public: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    run_with(built, public, None, admin, shutdown).await;
}

/// [`run`], with HTTPS on the public listener; the certificate is also reloaded on SIGHUP
/// and when its files change (`tls.watch_seconds`).
pub async fn run_tls(
    built: Built,
    public: TcpListener,
    tls: Arc<tls::Tls>,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    run_with(built, public, Some(tls), admin, shutdown).await;
}

async fn run_with(
    built: Built,
    public: TcpListener,
    tls: Option<Arc<tls::Tls>>,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let Built {
        app,
        limits,
        background,
    } = built;
    let app = Arc::new(app);
    let (stop, stopped) = watch::channel(false);
    // One keeper task per upstream issuer (fetch keys now, refresh them before expiry),
    // and the reload watches.
    let background = background.spawn();
    let sighup = tokio::spawn(reload_on_sighup(Arc::clone(&app), tls.clone()));
    let tls_watch = tls.as_ref().map(|tls| {
        app.metrics().tls_certificate_expiry(tls.not_after());
        tokio::spawn(Arc::clone(tls).watch(Arc::clone(&app)))
    });
    let public_app = Arc::clone(&app);
    let public = tokio::spawn(serve_on(
        public,
        tls,
        move |req| {
            let app = Arc::clone(&public_app);
            async move { crate::http::public(&app, req).await }
        },
        limits,
        stopped.clone(),
    ));
    // The admin listener has its own task, connection slots and requests in flight, so
    // a flood of the public listener (or of the admin one) never takes the other's.
    let admin_limits = Limits {
        max_connections: limits.admin_max_connections,
        max_requests_in_flight: limits.admin_max_connections,
        ..limits
    };
    let admin_app = Arc::clone(&app);
    let admin = tokio::spawn(serve(
        admin,
        move |req| {
            let app = Arc::clone(&admin_app);
            async move { crate::http::admin(&app, req).await }
        },
        admin_limits,
        stopped,
    ));
    shutdown.await;
    // As Envoy and Kubernetes expect: readiness fails first, so load balancers take us
    // out of rotation while we still serve, and only then do the listeners close.
    tracing::info!(
        drain_seconds = limits.drain.as_secs(),
        "shutting down: readiness fails, still serving"
    );
    app.start_draining();
    tokio::time::sleep(limits.drain).await;
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    let _ = stop.send(true);
    for task in background.into_iter().chain([sighup]) {
        task.abort();
    }
    if let Some(task) = tls_watch {
        task.abort();
    }
    let _ = tokio::join!(public, admin);
}

/// Reloads the policy, the signing key directory and, with `[tls]`, the public
/// listener's certificate on every SIGHUP (what fails to load keeps the previous one in
/// force).
async fn reload_on_sighup(app: Arc<App>, tls: Option<Arc<tls::Tls>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: reload the policy by changing its files");
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the policy and the signing keys");
            let (app, tls) = (Arc::clone(&app), tls.clone());
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(tls) = tls {
                    let _ = tls.reload(true, app.metrics());
                }
                app.reload();
            })
            .await;
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}

/// Accepts connections on `listener` and serves them with `handler` within `limits`,
/// until `stop` changes (or its sender is dropped); then stops accepting, lets every
/// connection answer its request in flight and close, and returns (at the latest after
/// the grace period, closing what remains).
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    limits: Limits,
    stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    serve_on(listener, None, handler, limits, stop).await;
}

/// [`serve`], over TLS when `tls` is given: each connection's handshake runs on its own
/// task, within the handshake timeout, holding a connection slot.
async fn serve_on<H, F>(
    listener: TcpListener,
    tls: Option<Arc<tls::Tls>>,
    handler: H,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = Arc::new(connection_builder(&limits));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Shared by every connection of this listener: the bound on work in flight must not
    // grow with the number of connections an attacker opens.
    let in_flight = Arc::new(Semaphore::new(limits.max_requests_in_flight));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
        };
        // Reap finished connections as we go, so the set does not grow.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = serve_connection(
            stream,
            peer,
            tls.clone(),
            Arc::clone(&builder),
            Service {
                handler: handler.clone(),
                in_flight: Arc::clone(&in_flight),
                timeout: limits.request_timeout,
            },
            limits,
            stop.clone(),
        );
        connections.spawn(async move {
            let _permit = permit;
            connection.await;
        });
    }
    drop(listener);
    drain(connections, limits.shutdown_grace).await;
}

/// Streams an HTTP/2 client may open at once on one connection: a token client needs a
/// few; the global in-flight limit bounds the total over all connections.
const H2_MAX_CONCURRENT_STREAMS: u32 = 16;
/// HTTP/2 flow-control windows (RFC 9113 §6.9.2): how much request body a peer may send
/// ahead of our reading it, per stream and per connection. A form body is small; hyper's
/// defaults (1 MiB each) let every idle connection park a megabyte in our memory.
const H2_STREAM_WINDOW: u32 = 32 * 1024;
const H2_CONNECTION_WINDOW: u32 = 128 * 1024;
/// How often an HTTP/2 connection is pinged at most (more often when the idle timeout is
/// short, so a dead peer is found within it).
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);

/// The HTTP/1.1 and HTTP/2 settings every connection is served with.
fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper's read buffer holds the request head; a head that does not fit is
        // answered 431 (RFC 6585 §5) by hyper itself, with an empty body.
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        // Advertised as SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113 §6.5.2) and enforced: h2
        // answers a larger header block 431 and resets the stream.
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // Pings find dead HTTP/2 peers; idle ones are closed by the idle timeout, which
        // counts time without a request, so a peer that answers every ping is closed too.
        // Pinging within the idle timeout finds a dead peer before then.
        .keep_alive_interval(
            H2_PING_INTERVAL
                .min(limits.idle_timeout / 2)
                .max(Duration::from_secs(1)),
        )
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// Serves one accepted connection: the TLS handshake when `tls` is given, then requests
/// (each within the request timeout) until the peer closes, no request has begun within
/// the header timeout of accept (closed at once: there is nothing to finish), the
/// connection stays idle for the idle timeout, or `stop` changes; the last two close it
/// gracefully, after the request in flight is answered.
async fn serve_connection<H, F>(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    tls: Option<Arc<tls::Tls>>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: Service<H>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    // Counted from accept, not from the first byte: a connection that never speaks must
    // not hold a connection slot for the whole idle timeout.
    let first_request = tokio::time::sleep(limits.header_timeout);
    tokio::pin!(first_request);
    let activity = Arc::new(Activity::new());
    let seen = Arc::clone(&activity);
    let idle_timeout = limits.idle_timeout;
    let stream = match tls {
        None => tls::MaybeTls::Plain(stream),
        // Shutting down mid-handshake: there is no request to finish.
        Some(tls) => tokio::select! {
            stream = tls.handshake(stream, limits.header_timeout) => match stream {
                Some(stream) => tls::MaybeTls::Tls(Box::new(stream)),
                None => return,
            },
            _ = stop.changed() => return,
        },
    };
    // The client's certificate chain, kept for the connection's requests (RFC 8705 §2).
    let certificates = match &stream {
        tls::MaybeTls::Tls(stream) => stream
            .get_ref()
            .1
            .peer_certificates()
            .filter(|chain| !chain.is_empty())
            .map(|chain| crate::http::ClientCertificates(chain.to_vec().into())),
        tls::MaybeTls::Plain(_) => None,
    };
    let service = service_fn(move |mut req: Request<Incoming>| {
        let in_flight = seen.request_began();
        // Who is asking, for the audit record (the connection's address; behind a proxy,
        // the proxy's), and the certificate it presented.
        req.extensions_mut().insert(crate::http::Peer(peer));
        if let Some(certificates) = &certificates {
            req.extensions_mut().insert(certificates.clone());
        }
        let answer = service.call(req);
        async move {
            let answer = answer.await;
            drop(in_flight);
            answer
        }
    });
    let io = TokioIo::new(stream);
    let connection = builder.serve_connection(io, service).into_owned();
    tokio::pin!(connection);
    let (mut closing, mut awaiting_first) = (false, true);
    loop {
        let idle = activity.idle_for();
        tokio::select! {
            () = &mut first_request, if awaiting_first => {
                if !activity.has_requested() {
                    tracing::debug!("no request within the header timeout: closing");
                    break;
                }
                awaiting_first = false;
            }
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stop.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep(idle_timeout.saturating_sub(idle)), if !closing => {
                if activity.idle_for() >= idle_timeout {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// A listener's handler within its limits: at most `in_flight` requests at once, each
/// answered within `timeout`.
struct Service<H> {
    handler: H,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
}

impl<H, F> Service<H>
where
    H: Fn(Request<Incoming>) -> F,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    /// Answers `req`, or 503 at once when the listener already serves its limit of
    /// requests: refusing costs nothing, where queueing would hold every waiting
    /// request's state (and let the first slow ones hold up the rest).
    fn call(
        &self,
        req: Request<Incoming>,
    ) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + use<H, F> {
        // The handler's future (the whole exchange's state, kilobytes) goes to the heap
        // once: hyper and the runtime then move a pointer, not its bytes.
        let admitted = Arc::clone(&self.in_flight)
            .try_acquire_owned()
            .map(|permit| {
                (
                    permit,
                    tokio::time::timeout(self.timeout, Box::pin((self.handler)(req))),
                )
            });
        async move {
            let Ok((_permit, response)) = admitted else {
                return Ok(unavailable("too many requests in flight"));
            };
            Ok(response
                .await
                .unwrap_or_else(|_| unavailable("request timed out")))
        }
    }
}

/// Waits for the connections to finish within the grace period, then closes what remains.
async fn drain(mut connections: JoinSet<()>, grace: Duration) {
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        tracing::warn!("grace period over: closing remaining connections");
        connections.abort_all();
    }
}

/// 503 for a request that outlived the request timeout or found the listener at its
/// limit of requests in flight.
fn unavailable(description: &'static str) -> Response<Body> {
    let body = serde_json::json!({
        "error": "temporarily_unavailable",
        "error_description": description,
    });
    let mut response =
        crate::http::response::json(http::StatusCode::SERVICE_UNAVAILABLE, body.to_string());
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    response
}

/// Whether a connection has sent a request head, how many of its requests are in
/// flight, and when the last one ended: the idle timeout's clock. It counts time without
/// a request, not time without bytes: an HTTP/2 peer that answers our keep-alive pings
/// sends bytes forever without asking anything, and must not hold its slot forever.
struct Activity {
    started: Instant,
    requested: AtomicBool,
    in_flight: AtomicUsize,
    last_end_ms: AtomicU64,
}

/// One request of a connection in flight; its end (or cancellation) restarts the idle
/// clock.
struct RequestInFlight(Arc<Activity>);

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let ms = u64::try_from(activity.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.last_end_ms.store(ms, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            requested: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
        }
    }

    fn request_began(self: &Arc<Self>) -> RequestInFlight {
        self.requested.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestInFlight(Arc::clone(self))
    }

    fn has_requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// How long the connection has had no request in flight (zero while one is).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_end_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
