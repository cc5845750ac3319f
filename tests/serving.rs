//! Serving limits (rules §1 admin listener, the operations issue): connections
//! that stay silent are closed, the number of connections is capped, a request that
//! outlives the request timeout gets 503, and shutdown lets requests in flight finish.
//! Over raw TCP against the real server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (or `limit` passes); returns what was read and whether the
/// peer closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

const LIVEZ: &[u8] = b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n";

#[tokio::test]
async fn silent_and_idle_connections_are_closed() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .server("idle_timeout_seconds = 1")
        .start()
        .await;

    // Connected, never says anything.
    let mut silent = TcpStream::connect(addr(&sts.base)).await.unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(closed, "a silent connection stays open");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // One request on a keep-alive connection, then silence.
    let mut idle = TcpStream::connect(addr(&sts.admin)).await.unwrap();
    idle.write_all(LIVEZ).await.unwrap();
    let (answer, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle keep-alive connection stays open");
}

#[tokio::test]
async fn connections_are_capped() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .server("admin_max_connections = 2")
        .start()
        .await;
    let held = [
        TcpStream::connect(addr(&sts.admin)).await.unwrap(),
        TcpStream::connect(addr(&sts.admin)).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The third connects (the kernel's backlog) but is not served while two are open.
    let mut third = TcpStream::connect(addr(&sts.admin)).await.unwrap();
    third.write_all(LIVEZ).await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served beyond max_connections");
    drop(held);
    let n = tokio::time::timeout(Duration::from_secs(3), third.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_request_outliving_the_request_timeout_gets_503() {
    // An issuer that never answers: validating its token waits for the keeper's fetch.
    let slow = TestIssuer::start().await;
    slow.set_behaviour(Behaviour::Hang);
    let sts = Sts::builder()
        .issuer("corp", &slow, "required = false")
        .server("request_timeout_seconds = 1")
        .start()
        .await;
    let token = slow.user_token("alice", "bff", "orders:read");
    let started = Instant::now();
    let answer = sts.exchange(BFF, &impersonation(&token)).await;
    assert_eq!(
        (answer.status, answer.error()),
        (503, "temporarily_unavailable"),
        "{}",
        answer.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    sts.wait_ready().await;
    let subject = issuer.user_token("alice", "bff", "orders:read");
    let body = encode_form(&impersonation(&subject));
    let credentials =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "bff:bff-secret");
    let head = format!(
        "POST /token HTTP/1.1\r\nhost: x\r\nauthorization: Basic {credentials}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    // Half a request is in flight when shutdown starts.
    let mut stream = TcpStream::connect(addr(&sts.base)).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(&body.as_bytes()[..body.len() / 2])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let base = sts.base.clone();
    let stopping = tokio::spawn(sts.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        TcpStream::connect(addr(&base)).await.is_err(),
        "still accepting after shutdown began"
    );
    // The rest of the request arrives: it is answered, then the connection closes.
    stream
        .write_all(&body.as_bytes()[body.len() / 2..])
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("access_token"), "{answer}");
    assert!(closed);
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .unwrap()
        .unwrap();
}
