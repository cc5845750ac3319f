//! A bench helper, not a benchmark: the HTTP floor of `benches/load/egress` and
//! `benches/load/introspect`.
//!
//! A hyper server (the same hyper, tokio runtime and HTTP/1.1 settings gleipnir serves
//! with) that reads each request's body and answers every request with one fixed response
//! shaped like a token response: `200`, `content-type: application/json`,
//! `cache-control: no-store`, `pragma: no-cache`, an `x-request-id`, and a JSON body of
//! the given size. It does no other work, so its throughput is what HTTP alone allows on
//! the core it is pinned to: the re-issue cache's hits and introspection answers are
//! measured against it in the same run. `benches/load/egress` also uses it as the upstream service behind nginx.
//!
//! usage: http_floor --serve <ip:port> <body bytes>   (prints the bound address)
//!
//! Run by `cargo bench` without `--serve`, it says what it is and exits.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(size)) = (
        args.iter()
            .position(|a| a == "--serve")
            .and_then(|i| args.get(i + 1)),
        args.iter()
            .position(|a| a == "--serve")
            .and_then(|i| args.get(i + 2))
            .and_then(|s| s.parse::<usize>().ok()),
    ) else {
        println!(
            "http_floor: a helper of benches/load/egress (usage: http_floor --serve <ip:port> <body bytes>)"
        );
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let Ok(runtime) = runtime else {
        eprintln!("http_floor: cannot start the runtime");
        std::process::exit(1);
    };
    runtime.block_on(serve(addr.clone(), body(size)));
}

/// `{"active":true,"access_token":"xxx…"}` of exactly `size` bytes (at least the frame):
/// shaped enough like a token response and an introspection answer for the load scripts'
/// checks of both.
fn body(size: usize) -> Bytes {
    let frame = r#"{"active":true,"access_token":""}"#;
    let fill = size.saturating_sub(frame.len());
    Bytes::from(format!(
        r#"{{"active":true,"access_token":"{}"}}"#,
        "x".repeat(fill)
    ))
}

async fn serve(addr: String, body: Bytes) {
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("http_floor: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    if let Ok(bound) = listener.local_addr() {
        println!("{bound}");
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    // Read the body, as the token endpoint does.
                    let _ = request.into_body().collect().await;
                    let mut response = hyper::Response::new(Full::new(body));
                    let headers = response.headers_mut();
                    headers.insert(
                        "content-type",
                        http::HeaderValue::from_static("application/json"),
                    );
                    headers.insert("cache-control", http::HeaderValue::from_static("no-store"));
                    headers.insert("pragma", http::HeaderValue::from_static("no-cache"));
                    headers.insert(
                        "x-request-id",
                        http::HeaderValue::from_static("0123456789abcdef0123456789abcdef"),
                    );
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
