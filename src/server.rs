//! Serving: the accept loop for each listener (HTTP/1.1 and HTTP/2), the header-read
//! timeout, and graceful shutdown: stop accepting, let in-flight requests finish within
//! a grace period, then return.
//!
//! Not built yet (the operations issue): TLS on the public listener, connection limits,
//! idle and request timeouts beyond the header and body deadlines.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::http::response::Body;

/// How long in-flight requests get to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the public and admin listeners until `shutdown` completes, then drains.
/// Also runs the keeper of every upstream issuer's JWKS in the background.
pub async fn run(
    app: Arc<App>,
    public: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopped) = watch::channel(false);
    // One keeper task per upstream issuer: fetch keys now, refresh them before expiry.
    let keepers: Vec<_> = app
        .exchanger()
        .validator()
        .keepers()
        .into_iter()
        .map(|cache| tokio::spawn(async move { cache.keep().await }))
        .collect();
    let public_app = Arc::clone(&app);
    let public = tokio::spawn(serve(
        public,
        move |req| {
            let app = Arc::clone(&public_app);
            async move { crate::http::public(&app, req).await }
        },
        stopped.clone(),
    ));
    let admin = tokio::spawn(serve(
        admin,
        move |req| {
            let app = Arc::clone(&app);
            async move { crate::http::admin(&app, req).await }
        },
        stopped,
    ));
    shutdown.await;
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    let _ = stop.send(true);
    for keeper in keepers {
        keeper.abort();
    }
    let _ = tokio::join!(public, admin);
}

/// Accepts connections on `listener` and serves them with `handler` until `stop` changes
/// (or its sender is dropped), then drains.
pub async fn serve<H, F>(listener: TcpListener, handler: H, mut stop: watch::Receiver<bool>)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let handler = handler.clone();
                    let service = service_fn(move |req| {
                        let response = handler(req);
                        async move { Ok::<_, Infallible>(response.await) }
                    });
                    let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over: closing remaining connections");
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
