//! A bounded attack driver for measuring the serving limits by hand against a running
//! `gleipnir serve` or `gleipnir dev` on loopback (not part of CI; the figures go in the
//! README's "Serving under attack" section). It prints the server's RSS (VmRSS, and the
//! peak VmHWM) from `/proc/PID/status` before, during and after each attack.
//!
//! ```sh
//! cargo run --example flood -- h2 PUBLIC PID [CONNS [STREAMS [HOLD_SECS]]]
//! cargo run --example flood -- idle PUBLIC ADMIN PID [CONNS]
//! cargo run --example flood -- headers PUBLIC PID [KIB [COUNT]]
//! ```
//!
//! - `h2`: CONNS cleartext HTTP/2 connections (default 200), each opening up to STREAMS
//!   `POST /token` streams (default 256) that send their headers and part of a body and
//!   never finish, held HOLD_SECS (default 12), then closed.
//! - `idle`: CONNS silent TCP connections to PUBLIC (default 1030) while probing
//!   `GET /livez`, `GET /readyz` on ADMIN and `GET /.well-known/jwks.json` on PUBLIC.
//! - `headers`: COUNT requests (default 100, half HTTP/1.1, half HTTP/2) each with a
//!   KIB-KiB header block (default 400), held open together; prints the statuses.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn rss(pid: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or("?".to_owned(), |kb| {
                format!("{:.1} MiB", kb as f64 / 1024.0)
            })
    };
    format!("VmRSS {} (peak VmHWM {})", field("VmRSS:"), field("VmHWM:"))
}

fn arg(args: &[String], i: usize, default: usize) -> usize {
    args.get(i).map_or(default, |a| a.parse().unwrap())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("h2") => {
            let (addr, pid) = (args[1].clone(), args[2].clone());
            let (conns, streams) = (arg(&args, 3, 200), arg(&args, 4, 256));
            let hold = Duration::from_secs(arg(&args, 5, 12) as u64);
            h2_flood(&addr, &pid, conns, streams, hold).await;
        }
        Some("idle") => {
            let (public, admin, pid) = (args[1].clone(), args[2].clone(), args[3].clone());
            idle(&public, &admin, &pid, arg(&args, 4, 1030)).await;
        }
        Some("headers") => {
            let (addr, pid) = (args[1].clone(), args[2].clone());
            headers(&addr, &pid, arg(&args, 3, 400), arg(&args, 4, 100)).await;
        }
        _ => eprintln!("usage: flood h2|idle|headers ... (see examples/flood.rs)"),
    }
}

async fn h2_connection(
    addr: String,
    streams: usize,
) -> (
    Vec<Box<dyn std::any::Any + Send>>,
    usize,
    BTreeMap<String, usize>,
) {
    let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let mut outcomes = BTreeMap::new();
    let Ok(tcp) = TcpStream::connect(&addr).await else {
        *outcomes.entry("connect failed".into()).or_default() += 1;
        return (held, 0, outcomes);
    };
    let Ok((client, connection)) = h2::client::handshake(tcp).await else {
        *outcomes.entry("handshake failed".into()).or_default() += 1;
        return (held, 0, outcomes);
    };
    tokio::spawn(connection);
    let mut client = client;
    let mut opened = 0;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for _ in 0..streams {
        // The client keeps to the server's SETTINGS_MAX_CONCURRENT_STREAMS: waiting
        // longer than a second for a slot counts as refused.
        match tokio::time::timeout(Duration::from_secs(1), client.clone().ready()).await {
            Ok(Ok(ready)) => client = ready,
            _ => break,
        }
        let request = http::Request::post(format!("http://{addr}/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", "4096")
            .header("authorization", "Basic YmZmOmJmZi1kZXYtc2VjcmV0")
            .body(())
            .unwrap();
        let Ok((response, mut send)) = client.send_request(request, false) else {
            break;
        };
        let _ = send.send_data(Bytes::from(vec![b'a'; 1024]), false);
        opened += 1;
        held.push(Box::new(send));
        let tx = tx.clone();
        tokio::spawn(async move {
            let outcome = match response.await {
                Ok(r) => format!("status {}", r.status().as_u16()),
                Err(e) => format!("reset ({e})"),
            };
            let _ = tx.send(outcome);
        });
    }
    held.push(Box::new(client));
    // What has been answered within a second of opening.
    tokio::time::sleep(Duration::from_secs(1)).await;
    while let Ok(outcome) = rx.try_recv() {
        *outcomes.entry(outcome).or_default() += 1;
    }
    (held, opened, outcomes)
}

async fn h2_flood(addr: &str, pid: &str, conns: usize, streams: usize, hold: Duration) {
    println!("before: {}", rss(pid));
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(h2_connection(addr.to_owned(), streams)))
        .collect();
    let mut held = Vec::new();
    let (mut opened, mut outcomes) = (0, BTreeMap::<String, usize>::new());
    for task in tasks {
        let (h, o, out) = task.await.unwrap();
        held.push(h);
        opened += o;
        for (k, v) in out {
            *outcomes.entry(k).or_default() += v;
        }
    }
    println!(
        "{conns} connections, {opened} streams opened in {:.1} s; answered within 1 s: {outcomes:?}",
        started.elapsed().as_secs_f64()
    );
    println!("flood up: {}", rss(pid));
    let until = started + hold;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!("  t+{:.0}s: {}", started.elapsed().as_secs_f64(), rss(pid));
    }
    drop(held);
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("3 s after closing: {}", rss(pid));
}

/// One `GET path` over a fresh connection: status line and latency.
async fn probe(addr: &str, path: &str) -> String {
    let started = Instant::now();
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        Some(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        )
    };
    let line = tokio::time::timeout(Duration::from_secs(90), attempt).await;
    let line = line.ok().flatten().unwrap_or_else(|| "no answer".into());
    format!(
        "{path}: {line:?} after {:.3} s",
        started.elapsed().as_secs_f64()
    )
}

async fn idle(public: &str, admin: &str, pid: &str, conns: usize) {
    println!("before: {}", rss(pid));
    let mut silent = Vec::new();
    for _ in 0..conns {
        if let Ok(s) = TcpStream::connect(public).await {
            silent.push(s);
        }
    }
    println!("{} silent connections open: {}", silent.len(), rss(pid));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (a, b, c) = tokio::join!(
        probe(admin, "/livez"),
        probe(admin, "/readyz"),
        probe(public, "/.well-known/jwks.json")
    );
    println!("  {a}\n  {b}\n  {c}");
    let closed = {
        let mut n = 0;
        for s in &mut silent {
            let mut buf = [0u8; 1];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await
            {
                n += 1;
            }
        }
        n
    };
    println!(
        "silent connections closed by the server so far: {closed}; {}",
        rss(pid)
    );
}

async fn headers(addr: &str, pid: &str, kib: usize, count: usize) {
    println!("before: {}", rss(pid));
    // 4 KiB fields, so that the count stays under hyper's limit of 100 fields.
    let value = "a".repeat(4000);
    let lines = kib * 1024 / 4016;
    let mut h1 = Vec::new();
    let mut outcomes = BTreeMap::<String, usize>::new();
    for _ in 0..count / 2 {
        let mut head = String::from("GET /.well-known/jwks.json HTTP/1.1\r\nhost: x\r\n");
        for i in 0..lines {
            head.push_str(&format!("x-pad-{i:04}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let Ok(mut s) = TcpStream::connect(addr).await else {
            continue;
        };
        let _ = s.write_all(head.as_bytes()).await;
        h1.push(s);
    }
    for s in &mut h1 {
        let mut buf = vec![0u8; 512];
        let line = match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
            _ => "closed".into(),
        };
        *outcomes.entry(format!("h1 {line}")).or_default() += 1;
    }
    let mut h2s = Vec::new();
    for _ in 0..count - count / 2 {
        let Ok(tcp) = TcpStream::connect(addr).await else {
            continue;
        };
        let Ok((client, connection)) = h2::client::handshake(tcp).await else {
            continue;
        };
        tokio::spawn(connection);
        let mut request = http::Request::get(format!("http://{addr}/.well-known/jwks.json"));
        for i in 0..lines {
            request = request.header(format!("x-pad-{i:04}"), &value);
        }
        let Ok(mut client) = client.ready().await else {
            continue;
        };
        let outcome = match client.send_request(request.body(()).unwrap(), true) {
            Ok((response, _)) => match tokio::time::timeout(Duration::from_secs(5), response).await
            {
                Ok(Ok(r)) => format!("h2 status {}", r.status().as_u16()),
                Ok(Err(e)) => format!("h2 error ({e})"),
                Err(_) => "h2 no answer".into(),
            },
            Err(e) => format!("h2 not sent ({e})"),
        };
        *outcomes.entry(outcome).or_default() += 1;
        h2s.push(client);
    }
    println!("{count} requests with {kib} KiB of headers: {outcomes:?}");
    println!("all open: {}", rss(pid));
    drop(h1);
    drop(h2s);
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("2 s after closing: {}", rss(pid));
}
