//! Serving under attack, against the real server on loopback: the work in flight is
//! bounded over all connections (HTTP/2 streams and buffered body bytes), silent
//! connections are closed soon after accept and cannot starve the admin listener, header
//! blocks are capped, and shutdown drains before it stops accepting.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A cleartext HTTP/2 connection (prior knowledge), driven on its own task; the second
/// value follows the server's SETTINGS_MAX_CONCURRENT_STREAMS as the client sees it.
async fn h2_connect(base: &str) -> (h2::client::SendRequest<Bytes>, Arc<AtomicUsize>) {
    let tcp = TcpStream::connect(addr(base)).await.unwrap();
    let (client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let max_streams = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&max_streams);
    tokio::spawn(std::future::poll_fn(move |cx| {
        let polled = std::pin::Pin::new(&mut connection).poll(cx).map(|_| ());
        seen.store(connection.max_concurrent_send_streams(), Ordering::SeqCst);
        polled
    }));
    (client.ready().await.unwrap(), max_streams)
}

/// Opens a `POST /token` stream that sends its headers and `sent` of `declared` body
/// bytes, and never finishes. Returns the response future and the send half (dropping
/// that resets the stream).
fn partial_token_request(
    client: &mut h2::client::SendRequest<Bytes>,
    declared: usize,
    sent: usize,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let request = http::Request::post("http://sts/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", declared.to_string())
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    send.send_data(Bytes::from(vec![b'a'; sent]), false)
        .unwrap();
    (response, send)
}

/// The status and JSON body of an HTTP/2 response.
async fn h2_answer(response: h2::client::ResponseFuture) -> (u16, serde_json::Value) {
    let response = response.await.unwrap();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test]
async fn http2_streams_in_flight_are_bounded_over_all_connections() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .server("max_requests_in_flight = 8")
        .start()
        .await;
    // 3 connections x 6 unfinished bodies: 18 streams, 8 of which may be served at once.
    let (mut held, mut clients, mut responses) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let (mut client, max_streams) = h2_connect(&sts.base).await;
        for _ in 0..6 {
            let (response, send) = partial_token_request(&mut client, 4096, 100);
            responses.push(tokio::spawn(h2_answer(response)));
            held.push(send);
        }
        clients.push((client, max_streams));
    }
    // The 10 beyond the limit are refused at once, long before the 10 s body deadline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (_, max_streams) in &clients {
        let advertised = max_streams.load(Ordering::SeqCst);
        assert!(
            (1..=32).contains(&advertised),
            "SETTINGS_MAX_CONCURRENT_STREAMS {advertised}"
        );
    }
    let mut refused = 0;
    for response in responses {
        if !response.is_finished() {
            continue;
        }
        let (status, body) = response.await.unwrap();
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("temporarily_unavailable")),
            "{body}"
        );
        assert_eq!(body["error_description"], "too many requests in flight");
        refused += 1;
    }
    assert_eq!(refused, 10, "streams refused beyond max_requests_in_flight");
}

/// Sends the headers and `sent` bytes of a `POST /token` body of `declared` bytes.
async fn partial_h1_token_request(base: &str, declared: usize, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr(base)).await.unwrap();
    let head = format!(
        "POST /token HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b'a'; sent]).await.unwrap();
    stream
}

/// The first chunk of an answer, if one comes within `limit`.
async fn answer_within(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(limit, stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

#[tokio::test]
async fn request_bodies_share_one_byte_budget() {
    audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .server("max_body_bytes = 32768\nmax_buffered_body_bytes = 65536")
        .start()
        .await;
    // Two unfinished 30 000-byte bodies fit in the 64 KiB budget, a third does not.
    let mut streams = Vec::new();
    for _ in 0..2 {
        streams.push(partial_h1_token_request(&sts.base, 32000, 30000).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for stream in &mut streams {
        let early = answer_within(stream, Duration::from_millis(100)).await;
        assert_eq!(early, None, "a body within the budget was refused");
    }
    let mut third = partial_h1_token_request(&sts.base, 32000, 30000).await;
    let answer = answer_within(&mut third, Duration::from_secs(2))
        .await
        .expect("the body beyond the budget waits instead of being refused");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("temporarily_unavailable"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    let request_id = answer
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap()
        .trim();
    assert_eq!(
        audit::refusal(request_id).as_deref(),
        Some("request/body_budget_exhausted")
    );
}

/// One `GET path` on a fresh connection: the status line, if one comes within `limit`.
async fn get(base: &str, path: &str, limit: Duration) -> Option<String> {
    let mut stream = TcpStream::connect(addr(base)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = answer_within(&mut stream, limit).await?;
    answer.lines().next().map(str::to_owned)
}

#[tokio::test]
async fn silent_connections_neither_lock_the_public_listener_nor_starve_the_admin_one() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .server("max_connections = 4\nadmin_max_connections = 4\nheader_timeout_seconds = 1")
        .start()
        .await;
    sts.wait_ready().await;
    // The public listener's every slot taken by connections that never send a byte (the
    // idle timeout, 60 s, would keep them).
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(addr(&sts.base)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for path in ["/livez", "/readyz"] {
        let started = std::time::Instant::now();
        let line = get(&sts.admin, path, Duration::from_secs(1)).await;
        assert_eq!(line.as_deref(), Some("HTTP/1.1 200 OK"), "{path}");
        assert!(started.elapsed() < Duration::from_secs(1), "{path}");
    }
    // A legitimate request waits at most for the header timeout to free a slot.
    let line = get(&sts.base, "/.well-known/jwks.json", Duration::from_secs(3)).await;
    assert_eq!(line.as_deref(), Some("HTTP/1.1 200 OK"));
    for stream in &mut silent {
        assert_eq!(
            answer_within(stream, Duration::from_millis(500)).await,
            None
        );
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf));
        assert!(
            matches!(closed.await, Ok(Ok(0))),
            "a silent connection stays open"
        );
    }
    // The admin listener's own slots: silent connections there are closed as soon.
    let mut silent_admin = Vec::new();
    for _ in 0..4 {
        silent_admin.push(TcpStream::connect(addr(&sts.admin)).await.unwrap());
    }
    let line = get(&sts.admin, "/livez", Duration::from_secs(3)).await;
    assert_eq!(line.as_deref(), Some("HTTP/1.1 200 OK"));
}

/// `n` header fields of about 1 KiB each.
fn padding(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("x-pad-{i:03}"), "a".repeat(1000)))
        .collect()
}

/// The status of `GET /.well-known/jwks.json` with these extra header fields, over
/// HTTP/1.1, and the body of the answer.
async fn h1_get_with(base: &str, fields: &[(String, String)]) -> (String, String) {
    let mut head =
        String::from("GET /.well-known/jwks.json HTTP/1.1\r\nhost: x\r\nconnection: close\r\n");
    for (name, value) in fields {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(addr(base)).await.unwrap();
    // The server may answer and close before reading everything: ignore write errors.
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.lines().next().unwrap_or("").to_owned();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// The same over HTTP/2: the status.
async fn h2_get_with(base: &str, fields: &[(String, String)]) -> u16 {
    let (mut client, _) = h2_connect(base).await;
    let mut request = http::Request::get("http://sts/.well-known/jwks.json");
    for (name, value) in fields {
        request = request.header(name, value);
    }
    let (response, _) = client
        .send_request(request.body(()).unwrap(), true)
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(3), response).await;
    response.unwrap().unwrap().status().as_u16()
}

#[tokio::test]
async fn header_blocks_beyond_max_header_bytes_get_431_on_both_protocols() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .server("max_header_bytes = 16384")
        .start()
        .await;
    let (small, large) = (padding(12), padding(20));
    let (status, _) = h1_get_with(&sts.base, &small).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let (status, body) = h1_get_with(&sts.base, &large).await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    // hyper answers this itself, before any handler: no OAuth error body.
    assert_eq!(body, "");
    assert_eq!(h2_get_with(&sts.base, &small).await, 200);
    assert_eq!(h2_get_with(&sts.base, &large).await, 431);

    // Both follow the setting (hyper's HTTP/2 default is also 16 KiB: raise it to see).
    let roomy = Sts::builder()
        .issuer("corp", &issuer, "")
        .server("max_header_bytes = 32768")
        .start()
        .await;
    let (status, _) = h1_get_with(&roomy.base, &large).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(h2_get_with(&roomy.base, &large).await, 200);
    assert_eq!(h2_get_with(&roomy.base, &padding(40)).await, 431);
}

#[tokio::test]
async fn shutdown_fails_readiness_and_keeps_serving_for_the_drain_time() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .server("drain_seconds = 1")
        .start()
        .await;
    sts.wait_ready().await;
    let (base, admin, http) = (sts.base.clone(), sts.admin.clone(), sts.http.clone());
    let subject = issuer.user_token("alice", "bff", "orders:read");
    let stopping = tokio::spawn(sts.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Draining: readiness fails, yet both listeners still answer (new connections too).
    let readyz = http.get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 503);
    assert_eq!(readyz.text().await.unwrap(), r#"{"status":"draining"}"#);
    let livez = get(&admin, "/livez", Duration::from_secs(1)).await;
    assert_eq!(livez.as_deref(), Some("HTTP/1.1 200 OK"));
    let answer = http
        .post(format!("{base}/token"))
        .basic_auth(BFF.0, Some(BFF.1))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode_form(&impersonation(&subject)))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.text().await.unwrap().contains("access_token"));
    // After the drain time, neither listener accepts.
    tokio::time::timeout(Duration::from_secs(3), stopping)
        .await
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(addr(&base)).await.is_err());
    assert!(TcpStream::connect(addr(&admin)).await.is_err());
}

/// The idle timeout counts time without a request, not time without bytes: the server
/// pings an HTTP/2 connection within the idle timeout, the client answers every ping,
/// and the connection is still closed once it has asked nothing for that long (else one
/// cheap request per connection would hold a connection slot forever).
#[tokio::test]
async fn an_http2_connection_that_answers_pings_is_closed_when_idle() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .server("idle_timeout_seconds = 2")
        .start()
        .await;
    let tcp = TcpStream::connect(addr(&sts.base)).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    // Driving the connection answers the server's pings (RFC 9113 §6.7).
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::get(format!("{}/.well-known/jwks.json", sts.base))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let answered = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(8), driver).await;
    assert!(
        closed.is_ok(),
        "the idle HTTP/2 connection was still open after 8 s"
    );
    let after = answered.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "closed after {after:?}"
    );
    // Held until here: a client that dropped its handle would close the connection itself.
    drop(client);
}
