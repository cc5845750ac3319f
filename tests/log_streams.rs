//! The log streams of the real `gleipnir serve` binary when their reader misbehaves: a
//! stdout nobody reads must not stop the probes, and what it costs is counted and said;
//! a flood of identical refusals is aggregated, not written a record each.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use support::TestIssuer;

/// Kills the child when dropped, so a failing assertion leaks no process.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `gleipnir serve`: its stdout handed to the test unread, its stderr read on a
/// thread into `stderr`.
struct Served {
    _child: KillOnDrop,
    _dir: tempfile::TempDir,
    stdout: Option<ChildStdout>,
    stderr: Arc<Mutex<String>>,
    public: String,
    admin: String,
}

/// Starts `gleipnir serve` trusting `issuer`, with `server_extra` added to `[server]`.
fn serve(issuer: &TestIssuer, server_extra: &str) -> Served {
    serve_with_jwks(issuer, &issuer.jwks_uri(), server_extra)
}

/// [`serve`], with the issuer's keys fetched from `jwks`.
fn serve_with_jwks(issuer: &TestIssuer, jwks: &str, server_extra: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_gleipnir"))
        .args(["keygen", "--alg", "ES256", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/bff.toml"),
        "[clients.bff]\ndelegate = true\nsubject_issuers = [\"corp\"]\naudiences = [\"orders-api\"]\n",
    )
    .unwrap();
    let config = format!(
        r#"issuer = "http://127.0.0.1:1"
[server]
request_timeout_seconds = 2
{server_extra}
[signing]
algorithm = "ES256"
key_file = "signing.pem"
[policy]
dir = "policies"
[[issuers]]
name = "corp"
issuer = "{iss}"
jwks_uri = "{jwks}"
allow_http = true
[[clients]]
id = "bff"
secret = {{ value = "bff-secret" }}
"#,
        iss = issuer.iss,
    );
    let config_path = dir.path().join("gleipnir.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gleipnir"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take();
    let stderr_pipe = child.stderr.take().unwrap();
    let child = KillOnDrop(child);
    let stderr = Arc::new(Mutex::new(String::new()));
    let (first_tx, first) = mpsc::channel();
    let text = Arc::clone(&stderr);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr_pipe).lines() {
            let Ok(line) = line else { break };
            if line.contains("gleipnir serving") {
                let _ = first_tx.send(line.clone());
            }
            let mut text = text.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    let line = first
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("no serving line: {}", stderr.lock().unwrap()));
    let field = |name: &str| {
        let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        let addr = line[start..].split(' ').next().unwrap();
        format!("http://{addr}")
    };
    Served {
        public: field("public"),
        admin: field("admin"),
        _child: child,
        _dir: dir,
        stdout,
        stderr,
    }
}

/// Polls `url` until it answers 200, within `limit`.
async fn wait_ok(http: &reqwest::Client, url: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(r) = http.get(url).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} not 200 within {limit:?}");
}

/// Sends `count` unauthenticated `/token` requests (each refused, each audited), 16 at
/// a time; returns how many were answered, stopping at the first that is not.
async fn flood_refusals(http: &reqwest::Client, public: &str, count: usize) -> usize {
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let (http, url, answered) = (
            http.clone(),
            format!("{public}/token"),
            Arc::clone(&answered),
        );
        tasks.spawn(async move {
            for _ in (worker..count).step_by(16) {
                let sent = http
                    .post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange")
                    .timeout(Duration::from_secs(3))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 401 => {
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ => return,
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    answered.load(std::sync::atomic::Ordering::Relaxed)
}

/// The value of the `gleipnir_log_records_dropped_total{stream=...}` sample.
fn dropped_metric(metrics: &str, stream: &str) -> Option<u64> {
    let prefix = format!("gleipnir_log_records_dropped_total{{stream=\"{stream}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_stalled_stdout_never_stops_the_probes_and_its_drops_are_counted() {
    const FLOOD: usize = 5000;
    let issuer = TestIssuer::start().await;
    // Every refusal written in full (no aggregation): the most a flood can write.
    let mut served = serve(&issuer, "audit_refusal_window_seconds = 0");
    let http = reqwest::Client::new();
    let (livez, readyz) = (
        format!("{}/livez", served.admin),
        format!("{}/readyz", served.admin),
    );
    wait_ok(&http, &readyz, Duration::from_secs(10)).await;

    // Nobody reads stdout from here on: the pipe fills after 64 KiB of audit records.
    let answered = flood_refusals(&http, &served.public, FLOOD).await;
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        for url in [&livez, &readyz] {
            let started = Instant::now();
            let probe = http.get(url).timeout(Duration::from_secs(1)).send().await;
            let status = probe.map(|r| r.status().as_u16());
            assert_eq!(
                status.ok(),
                Some(200),
                "{url} must answer within 1 s with stdout stalled ({answered} of {FLOOD} refusals answered)"
            );
            worst = worst.max(started.elapsed());
        }
    }
    eprintln!("figure: worst probe latency with stdout stalled: {worst:?}");
    assert_eq!(
        answered, FLOOD,
        "every refusal is answered, stdout stalled or not"
    );

    // The reader comes back: whatever was not written is counted, and said.
    let stdout = served.stdout.take().unwrap();
    let audit = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&audit);
    std::thread::spawn(move || {
        let mut stdout = stdout;
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let (records, reported, dropped) = loop {
        let metrics = http.get(format!("{}/metrics", served.admin)).send().await;
        let metrics = metrics.unwrap().text().await.unwrap();
        let dropped = dropped_metric(&metrics, "audit").expect("the dropped metric is served");
        let text = audit.lock().unwrap().clone();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let records = lines
            .iter()
            .filter(|l| l["decision"] == "refused" && l["reason"] == "missing_credentials")
            .count();
        let reported: u64 = lines.iter().filter_map(|l| l["dropped"].as_u64()).sum();
        let records = u64::try_from(records).unwrap();
        if records + dropped == FLOOD as u64 && reported == dropped {
            break (records, reported, dropped);
        }
        assert!(
            Instant::now() < deadline,
            "{records} written + {dropped} dropped != {FLOOD}, {reported} reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("figure: {records} refusal records written, {dropped} dropped and reported");
    assert!(
        dropped > 0,
        "a stalled 64 KiB pipe cannot have held {FLOOD} records"
    );
    assert_eq!(reported, dropped);
    let stderr = served.stderr.lock().unwrap().clone();
    assert!(
        stderr.contains("log lines dropped") && stderr.contains("stream=\"audit\""),
        "the service log says so too:\n{stderr}"
    );
}

#[tokio::test]
async fn a_flood_of_identical_refusals_is_aggregated_per_window() {
    let flood: usize = std::env::var("LOG_STREAMS_FLOOD").map_or(2000, |v| v.parse().unwrap());
    let issuer = TestIssuer::start().await;
    // The default window (5 s); stdout is read after the child stops.
    let mut served = serve(&issuer, "");
    let stdout = served.stdout.take().unwrap();
    let audit = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&audit);
    let reader = std::thread::spawn(move || {
        let mut stdout = stdout;
        let _ = stdout.read_to_end(&mut sink.lock().unwrap());
    });
    let http = reqwest::Client::new();
    let started = Instant::now();
    assert_eq!(flood_refusals(&http, &served.public, flood).await, flood);
    let elapsed = started.elapsed();
    // The window closes within 5 s and the flush runs every second.
    tokio::time::sleep(Duration::from_millis(6500)).await;
    drop(served);
    reader.join().unwrap();
    let text = String::from_utf8(audit.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| l["reason"] == "missing_credentials")
        .collect();
    let full: Vec<_> = lines.iter().filter(|l| l["aggregated"] != true).collect();
    let counted: u64 = lines
        .iter()
        .filter(|l| l["aggregated"] == true)
        .map(|l| l["count"].as_u64().unwrap())
        .sum();
    eprintln!(
        "figure: {flood} identical refusals in {elapsed:?}: {} audit bytes ({:.1} B per refusal), {} full records, {counted} counted",
        text.len(),
        text.len() as f64 / flood as f64,
        full.len(),
    );
    assert_eq!(
        full.len() as u64 + counted,
        flood as u64,
        "each refusal once: {text}"
    );
    let windows = elapsed.as_secs() / 5 + 2;
    assert!(
        full.len() as u64 <= windows,
        "one full record per 5 s window: {}",
        full.len()
    );
    assert_eq!(full[0]["peer"], "127.0.0.1", "{}", full[0]);
    let summary = lines.iter().find(|l| l["aggregated"] == true).unwrap();
    assert_eq!(summary["decision"], "refused");
    assert_eq!(summary["stage"], "client_auth");
    assert_eq!(summary["window_seconds"], 5);
    assert_eq!(summary["peer"], "127.0.0.1");
    assert!(summary["first_request_id"].is_string(), "{summary}");
}

/// A failed upstream fetch is logged with the URL it was for and the cause under
/// reqwest's own message, which alone ("error sending request") says nothing.
#[tokio::test]
async fn a_failed_jwks_fetch_is_logged_with_its_url_and_cause() {
    let issuer = TestIssuer::start().await;
    // A port nothing listens on: connection refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let jwks = format!("http://{}/jwks.json", closed.local_addr().unwrap());
    drop(closed);
    let served = serve_with_jwks(&issuer, &jwks, "");
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let text = served.stderr.lock().unwrap().clone();
        if let Some(line) = text.lines().find(|l| l.contains("JWKS fetch failed")) {
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no fetch failure logged:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(line.contains(&format!("url=\"{jwks}\"")), "{line}");
    assert!(line.contains("Connection refused"), "{line}");
}
