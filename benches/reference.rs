//! A bench helper, not a benchmark: the reference server of `benches/load/run`.
//!
//! The least a token exchange over HTTP can cost: a hyper HTTP/1.1 server on a
//! current-thread tokio runtime that, per `POST`, reads the form `benches/load` sends,
//! verifies the subject token's signature (RS256 or ES256) and, when the form has one,
//! the actor token's (ES256) with aws-lc-rs against keys parsed once from the issuer's
//! JWKS, and answers a token response holding a fresh ES256 JWT (a random `jti`, `act`
//! for a delegation) signed with the same kind of key gleipnir signs with. It checks
//! nothing else: no client authentication, no token type, issuer, audience, time or
//! policy check, no audit line, no metrics. gleipnir's throughput is measured against
//! it in the same run: at 1.0× every check gleipnir makes is free.
//!
//! Like `gleipnir serve` it becomes ready only once it has fetched the issuer's JWKS
//! over HTTP and loaded its signing key (PKCS#8 PEM): `GET /readyz` answers 200 from
//! then on, so `benches/load/start.mjs` measures both ready times the same way.
//!
//! usage: reference --serve <ip:port> <jwks url (http://…)> <signing key PEM> <issuer>
//!
//! Run by `cargo bench` without `--serve`, it says what it is and exits.
#![allow(
    clippy::disallowed_methods,
    reason = "a bench helper: the minted token's iat and exp come from the wall clock"
)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == "--serve") else {
        println!(
            "reference: a helper of benches/load/run (usage: reference --serve <ip:port> <jwks url> <key pem> <issuer>)"
        );
        return;
    };
    let (Some(addr), Some(jwks), Some(key), Some(issuer)) = (
        args.get(i + 1),
        args.get(i + 2),
        args.get(i + 3),
        args.get(i + 4),
    ) else {
        fail("usage: reference --serve <ip:port> <jwks url> <key pem> <issuer>");
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("cannot start the runtime: {e}")));
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr.as_str())
            .await
            .unwrap_or_else(|e| fail(&format!("cannot bind {addr}: {e}")));
        if let Ok(bound) = listener.local_addr() {
            println!("{bound}");
        }
        // Ready once both are loaded; until then /readyz answers 503.
        let state = Arc::new(tokio::sync::OnceCell::new());
        let loading = Arc::clone(&state);
        let (jwks, key, issuer) = (jwks.clone(), key.clone(), issuer.clone());
        tokio::spawn(async move {
            let keys = fetch_keys(&jwks).await;
            let signer = load_signer(&key);
            let _ = loading.set(Minter {
                keys,
                signer,
                issuer,
                rng: SystemRandom::new(),
            });
        });
        serve(listener, state).await;
    });
}

fn fail(message: &str) -> ! {
    eprintln!("reference: {message}");
    std::process::exit(1)
}

/// The issuer's keys by `kid`, each parsed once for its `alg` (RS256 or ES256).
type Keys = HashMap<String, ParsedPublicKey>;

struct Minter {
    keys: Keys,
    signer: (EcdsaKeyPair, String),
    issuer: String,
    rng: SystemRandom,
}

/// GET of `url` (`http://host:port/path`) with HTTP/1.0 over one connection.
async fn fetch_keys(url: &str) -> Keys {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| fail("the JWKS URL must be http://"));
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .unwrap_or_else(|e| fail(&format!("cannot connect to {host}: {e}")));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    let mut answer = Vec::new();
    if stream.write_all(request.as_bytes()).await.is_err()
        || stream.read_to_end(&mut answer).await.is_err()
    {
        fail("cannot fetch the JWKS");
    }
    let start = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| fail("no JWKS body"));
    let jwks: serde_json::Value =
        serde_json::from_slice(answer.get(start + 4..).unwrap_or_default())
            .unwrap_or_else(|_| fail("the JWKS is not JSON"));
    let member = |jwk: &serde_json::Value, name: &str| {
        jwk.get(name)
            .and_then(serde_json::Value::as_str)
            .and_then(|v| B64.decode(v).ok())
            .unwrap_or_else(|| fail(&format!("a JWK lacks {name}")))
    };
    let mut keys = Keys::new();
    let listed = jwks.get("keys").and_then(serde_json::Value::as_array);
    for jwk in listed.into_iter().flatten() {
        let kid = jwk["kid"].as_str().unwrap_or_default().to_owned();
        let parsed = match jwk["kty"].as_str() {
            Some("RSA") => RsaPublicKeyComponents {
                n: member(jwk, "n"),
                e: member(jwk, "e"),
            }
            .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256),
            Some("EC") => {
                let mut point = vec![4];
                point.extend(member(jwk, "x"));
                point.extend(member(jwk, "y"));
                ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
            }
            _ => continue,
        };
        keys.insert(
            kid,
            parsed.unwrap_or_else(|_| fail("a JWK is not a usable key")),
        );
    }
    keys
}

/// The ES256 signing key from a PKCS#8 PEM file, and the JOSE header of its tokens.
fn load_signer(path: &str) -> (EcdsaKeyPair, String) {
    let pem =
        std::fs::read_to_string(path).unwrap_or_else(|e| fail(&format!("cannot read {path}: {e}")));
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap_or_else(|_| fail("the key file is not PEM"));
    let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
        .unwrap_or_else(|_| fail("the key is not an ES256 PKCS#8 key"));
    let header = B64.encode(br#"{"alg":"ES256","kid":"reference","typ":"at+jwt"}"#);
    (key, header)
}

async fn serve(listener: tokio::net::TcpListener, state: Arc<tokio::sync::OnceCell<Minter>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(answer(state.get(), request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    minter: Option<&Minter>,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let Some(minter) = minter else {
        return respond(StatusCode::SERVICE_UNAVAILABLE, Bytes::from_static(b"{}"));
    };
    if request.method() == hyper::Method::GET {
        return respond(StatusCode::OK, Bytes::from_static(br#"{"status":"ready"}"#));
    }
    let Ok(body) = request.into_body().collect().await else {
        return respond(StatusCode::BAD_REQUEST, Bytes::new());
    };
    match minter.exchange(&body.to_bytes()) {
        Some(token) => {
            let mut response = respond(StatusCode::OK, token);
            let headers = response.headers_mut();
            headers.insert("cache-control", http::HeaderValue::from_static("no-store"));
            headers.insert("pragma", http::HeaderValue::from_static("no-cache"));
            response
        }
        None => respond(StatusCode::BAD_REQUEST, Bytes::from_static(b"{}")),
    }
}

fn respond(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// The subject of a token whose signature verifies, read from its payload.
#[derive(serde::Deserialize)]
struct Payload {
    sub: String,
}

#[derive(serde::Deserialize)]
struct Header {
    kid: String,
}

impl Minter {
    /// Verifies the form's tokens and mints one: `None` when a signature does not
    /// verify or a token is malformed.
    fn exchange(&self, form: &[u8]) -> Option<Bytes> {
        let (mut subject, mut actor) = (None, None);
        for pair in form.split(|&b| b == b'&') {
            let mut kv = pair.splitn(2, |&b| b == b'=');
            match (kv.next(), kv.next()) {
                (Some(b"subject_token"), Some(v)) => subject = Some(percent_decode(v)),
                (Some(b"actor_token"), Some(v)) => actor = Some(percent_decode(v)),
                _ => {}
            }
        }
        let subject = self.verify(&subject?)?;
        let actor = match actor {
            Some(actor) => Some(self.verify(&actor)?),
            None => None,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).ok()?;
        let mut claims = serde_json::json!({
            "iss": self.issuer, "sub": subject.sub, "aud": "orders-api",
            "exp": now + 300, "iat": now, "nbf": now, "jti": B64.encode(jti),
            "client_id": "bff", "scope": "orders:read",
        });
        if let (Some(actor), Some(claims)) = (actor, claims.as_object_mut()) {
            claims.insert("act".into(), serde_json::json!({ "sub": actor.sub }));
        }
        let (key, header) = &self.signer;
        let mut token = format!("{header}.{}", B64.encode(claims.to_string()));
        let signature = key.sign(&self.rng, token.as_bytes()).ok()?;
        token.push('.');
        token.push_str(&B64.encode(signature.as_ref()));
        let body = serde_json::json!({
            "access_token": token,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer", "expires_in": 300, "scope": "orders:read",
        });
        Some(Bytes::from(body.to_string()))
    }

    /// The payload of a compact JWS whose signature verifies with the key its `kid` names.
    fn verify(&self, token: &str) -> Option<Payload> {
        let mut parts = token.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        let header: Header = serde_json::from_slice(&B64.decode(header).ok()?).ok()?;
        let claims: Payload = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
        let signed = token.get(..header_len(token)?)?;
        self.keys
            .get(&header.kid)?
            .verify_sig(signed.as_bytes(), &B64.decode(signature).ok()?)
            .ok()?;
        Some(claims)
    }
}

/// The length of `header.payload`, the signed part of a compact JWS.
fn header_len(token: &str) -> Option<usize> {
    token.rfind('.')
}

/// `application/x-www-form-urlencoded` value decoding (`+` is a space, `%XX` a byte).
fn percent_decode(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while let Some(&b) = value.get(i) {
        let hex = |j: usize| {
            value
                .get(j)
                .and_then(|&c| char::from(c).to_digit(16))
                .and_then(|d| u8::try_from(d).ok())
        };
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi * 16 + lo);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
