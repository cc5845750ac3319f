//! Every refusal of the exchange rules (README, "Exchange rules"), over HTTP against the real server.
//!
//! Table-driven: one row per refusal, grouped by section (§2 request parsing, §3 client
//! authentication, §4 subject and actor token validation, §5 delegation rules and policy
//! modes, §7 error mapping). Each row asserts the HTTP status, the OAuth `error`, the
//! headers that go with it (`WWW-Authenticate` on a 401 after header authentication,
//! `Retry-After` on a 503, `Content-Type`), and, through the request's audit record found
//! by its `x-request-id`, the check that refused it (`stage/reason`): many refusals share
//! `400 invalid_request`, and a row must fail when its own check is gone even if another
//! one still answers the same code. Refusals that hinge on one claim or parameter have
//! an `ok_` row beside them in which only that claim is fixed.
//!
//! Tokens in the §4 rows are signed with the issuer's real keys, so each row proves the
//! header or claim check it names, not the signature check.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use support::forms::*;
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

// ---- the table machinery -----------------------------------------------------------------

type Client = (&'static str, &'static str);
type Build = Box<dyn Fn(&Sts) -> reqwest::RequestBuilder>;

const FORM_TYPE: &str = "application/x-www-form-urlencoded";
const REFRESH_TOKEN: &str = "urn:ietf:params:oauth:token-type:refresh_token";
const SAML1: &str = "urn:ietf:params:oauth:token-type:saml1";
const SAML2: &str = "urn:ietf:params:oauth:token-type:saml2";

enum Req {
    /// `POST /token`, form body, HTTP Basic as this client.
    Exchange(Client, Form),
    /// Any request, built against the running STS.
    Raw(Build),
}

enum Want {
    /// 200 with a token whose claims contain these members (`null`: member absent).
    Granted(Value),
    /// A refusal, and the audit `stage/reason` naming the check (`None`: not audited).
    Refused {
        status: u16,
        error: &'static str,
        reason: Option<&'static str>,
    },
}

struct Row {
    name: &'static str,
    req: Req,
    want: Option<Want>,
    /// `WWW-Authenticate` expected (RFC 6749 §5.2); asserted absent otherwise.
    challenge: bool,
    /// Further response headers and their expected values.
    headers: Vec<(&'static str, &'static str)>,
}

fn row(name: &'static str, client: Client, form: Form) -> Row {
    Row {
        name,
        req: Req::Exchange(client, form),
        want: None,
        challenge: false,
        headers: Vec::new(),
    }
}

fn raw(name: &'static str, build: impl Fn(&Sts) -> reqwest::RequestBuilder + 'static) -> Row {
    Row {
        name,
        req: Req::Raw(Box::new(build)),
        want: None,
        challenge: false,
        headers: Vec::new(),
    }
}

impl Row {
    fn granted(mut self, claims: Value) -> Row {
        self.want = Some(Want::Granted(claims));
        self
    }
    fn refused(mut self, status: u16, error: &'static str, reason: &'static str) -> Row {
        self.want = Some(Want::Refused {
            status,
            error,
            reason: Some(reason),
        });
        self
    }
    /// A refusal made before the exchange pipeline (no audit record), e.g. routing.
    fn refused_unaudited(mut self, status: u16, error: &'static str) -> Row {
        self.want = Some(Want::Refused {
            status,
            error,
            reason: None,
        });
        self
    }
    fn challenged(mut self) -> Row {
        self.challenge = true;
        self
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Row {
        self.headers.push((name, value));
        self
    }
}

/// Runs every row, then fails once, naming every row that did not behave.
async fn run(table: &str, sts: &Sts, rows: Vec<Row>) {
    let total = rows.len();
    let mut names: Vec<&str> = rows.iter().map(|r| r.name).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        panic!("{table}: two rows are named {}", w[0]);
    }
    let mut failures = Vec::new();
    for row in &rows {
        if let Err(why) = check(sts, row).await {
            failures.push(format!("  {table}/{}: {why}", row.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} rows of {table} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{table}: {total} rows passed");
}

async fn check(sts: &Sts, row: &Row) -> Result<(), String> {
    let (answer, presented, requested_type) = match &row.req {
        Req::Exchange(client, form) => {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let requested = form
                .iter()
                .find(|(k, v)| *k == "requested_token_type" && !v.is_empty())
                .map(|(_, v)| v.clone());
            let presented: Vec<String> = form.iter().map(|(_, v)| v.clone()).collect();
            (sts.exchange(*client, &pairs).await, presented, requested)
        }
        Req::Raw(build) => (sts.post(build(sts)).await, Vec::new(), None),
    };
    let header = |name: &str| {
        answer
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<not text>").to_owned())
    };
    let mut problems: Vec<String> = Vec::new();
    if header("content-type").as_deref() != Some("application/json") {
        problems.push(format!("content-type {:?}", header("content-type")));
    }
    for (name, value) in &row.headers {
        if header(name).as_deref() != Some(*value) {
            problems.push(format!(
                "header {name}: want {value:?}, got {:?}",
                header(name)
            ));
        }
    }
    let audit = answer.request_id().and_then(support::audit::record);
    match row.want.as_ref().expect("row without expectation") {
        Want::Granted(expect) => {
            if answer.status != 200 || answer.body.get("access_token").is_none() {
                return Err(format!(
                    "want 200 with a token, got {} {}",
                    answer.status, answer.body
                ));
            }
            let claims = answer.claims();
            for (k, v) in expect.as_object().expect("granted(claims) takes an object") {
                let got = claims.get(k).unwrap_or(&Value::Null);
                if got != v {
                    problems.push(format!("claim {k}: want {v}, got {got}"));
                }
            }
            // §6: expires_in is what the token says; §5 rule 11: issued_token_type is always there.
            let lifetime = claims["exp"].as_u64().and_then(|e| e.checked_sub(NOW));
            if lifetime.is_none() || lifetime != answer.body["expires_in"].as_u64() {
                problems.push(format!(
                    "expires_in {} does not match exp {}",
                    answer.body["expires_in"], claims["exp"]
                ));
            }
            let want_type = requested_type.unwrap_or_else(|| AT.to_owned());
            if answer.body["issued_token_type"] != want_type.as_str() {
                problems.push(format!(
                    "issued_token_type {} (want {want_type})",
                    answer.body["issued_token_type"]
                ));
            }
            if audit.as_ref().map(|a| a["decision"].clone()) != Some(json!("granted")) {
                problems.push(format!("audit record: {audit:?}"));
            }
        }
        Want::Refused {
            status,
            error,
            reason,
        } => {
            if answer.status == 200 {
                return Err(format!(
                    "want {status} {error} ({}), but it was granted: {}",
                    reason.unwrap_or("unaudited"),
                    answer.body
                ));
            }
            if answer.status != *status || answer.error() != *error {
                problems.push(format!(
                    "want {status} {error}, got {} {}",
                    answer.status,
                    answer.error()
                ));
            }
            if answer.body.get("access_token").is_some() {
                problems.push("a refusal carries a token".into());
            }
            if !answer.body["error_description"].is_string() {
                problems.push("no error_description".into());
            }
            let text = answer.body.to_string();
            let token_like = |v: &&String| v.len() >= 16 && !v.starts_with("urn:");
            if let Some(echoed) = presented
                .iter()
                .filter(token_like)
                .find(|v| text.contains(v.as_str()))
            {
                problems.push(format!("the answer echoes a presented value: {echoed}"));
            }
            let challenge = header("www-authenticate");
            match (row.challenge, &challenge) {
                (true, Some(c)) if c.starts_with("Basic") => {}
                (false, None) => {}
                _ => problems.push(format!(
                    "WWW-Authenticate: want {}, got {challenge:?}",
                    if row.challenge { "Basic" } else { "none" }
                )),
            }
            let retry_after = header("retry-after");
            if retry_after.is_some() != (*status == 503) {
                problems.push(format!("Retry-After: {retry_after:?} on a {status}"));
            }
            if let Some(reason) = reason {
                let got = answer.request_id().and_then(support::audit::refusal);
                if got.as_deref() != Some(*reason) {
                    problems.push(format!(
                        "refused by {}, want {reason}",
                        got.as_deref().unwrap_or("<no audit record>")
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} [answer: {} {}]",
            problems.join("; "),
            answer.status,
            answer.body
        ))
    }
}

// ---- building requests and tokens --------------------------------------------------------

/// `base` with `changes` applied: members set, `null` members removed.
fn patch(base: &Value, changes: Value) -> Value {
    let mut out = base.clone();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            out.as_object_mut().unwrap().remove(k);
        } else {
            out[k.as_str()] = v.clone();
        }
    }
    out
}

/// A nested `act` for these actors, the most recent first.
fn chain(subs: &[&str]) -> Value {
    subs.iter().rev().fold(Value::Null, |inner, sub| {
        if inner.is_null() {
            json!({ "sub": sub })
        } else {
            json!({ "sub": sub, "act": inner })
        }
    })
}

/// An encoded form body, to send with [`post`].
fn body(form: &[(&str, &str)]) -> String {
    encode_form(form)
}

/// `POST /token` with this body, optional HTTP Basic credentials and content type.
fn post(
    basic: Option<Client>,
    content_type: Option<&'static str>,
    body: String,
) -> impl Fn(&Sts) -> reqwest::RequestBuilder + 'static {
    move |sts: &Sts| {
        let mut request = sts.http.post(sts.token_url()).body(body.clone());
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request
    }
}

/// `POST /token` with a raw Authorization header value and a form body.
fn post_authorization(
    authorization: Option<String>,
    body: String,
) -> impl Fn(&Sts) -> reqwest::RequestBuilder + 'static {
    move |sts: &Sts| {
        let mut request = sts
            .http
            .post(sts.token_url())
            .header("content-type", FORM_TYPE)
            .body(body.clone());
        if let Some(value) = &authorization {
            request = request.header("authorization", value.as_str());
        }
        request
    }
}

fn basic(raw: &str) -> Option<String> {
    Some(format!("Basic {}", STANDARD.encode(raw)))
}

/// The same token with one byte of its signature changed.
fn tamper_signature(token: &str) -> String {
    let (input, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[7] ^= 0x01;
    format!("{input}.{}", b64(&bytes))
}

/// `header.claims.` with an empty signature (an unsecured JWS, RFC 7519 §6).
fn unsigned(header: &Value, claims: &Value) -> String {
    format!("{}.{}.", b64_json(header), b64_json(claims))
}

/// `header.claims` MACed with HS256 under `key`.
fn hs256(header: &Value, claims: &Value, key: &[u8]) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// The largest token signed with `claims` plus padding whose length is at most `cap`,
/// and the smallest one longer than `cap`.
fn tokens_around(issuer: &TestIssuer, claims: &Value, cap: usize) -> (String, String) {
    let pad = |n: usize| issuer.sign(patch(claims, json!({ "pad": "x".repeat(n) })));
    let base = pad(0).len();
    let mut n = (cap - base) * 3 / 4 - 8;
    let mut below = pad(n);
    assert!(below.len() <= cap);
    loop {
        n += 1;
        let next = pad(n);
        if next.len() > cap {
            return (below, next);
        }
        below = next;
    }
}

// ---- §2 request parsing ------------------------------------------------------------------

#[tokio::test]
async fn section2_request_parsing() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let subject = issuer.user_token("alice", "bff", "orders:read");
    let actor = issuer.actor_token("bff");
    let ok = imp(&subject);
    let ok_body = body(&[
        ("grant_type", GRANT),
        ("subject_token", &subject),
        ("subject_token_type", AT),
    ]);
    // Bodies of exactly the cap (64 KiB) and one byte over it, padded with an unknown
    // parameter (ignored, RFC 6749 §3.2).
    let cap = 64 * 1024;
    let padded = |len: usize| {
        let head = format!("{ok_body}&padding=");
        format!("{head}{}", "x".repeat(len - head.len()))
    };

    let rows = vec![
        row("ok_minimal", BFF, ok.clone()).granted(json!({ "sub": "alice" })),
        raw("get_is_405_with_allow", |sts| sts.http.get(sts.token_url()))
            .refused_unaudited(405, "invalid_request")
            .header("allow", "POST"),
        raw("put_is_405_with_allow", {
            let b = ok_body.clone();
            move |sts| {
                sts.http
                    .put(sts.token_url())
                    .basic_auth(BFF.0, Some(BFF.1))
                    .header("content-type", FORM_TYPE)
                    .body(b.clone())
            }
        })
        .refused_unaudited(405, "invalid_request")
        .header("allow", "POST"),
        raw(
            "ok_form_content_type_with_charset",
            post(
                Some(BFF),
                Some("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
                ok_body.clone(),
            ),
        )
        .granted(json!({ "sub": "alice" })),
        raw(
            "json_content_type",
            post(Some(BFF), Some("application/json"), ok_body.clone()),
        )
        .refused(400, "invalid_request", "request/unsupported_content_type"),
        raw(
            "text_plain_content_type",
            post(Some(BFF), Some("text/plain"), ok_body.clone()),
        )
        .refused(400, "invalid_request", "request/unsupported_content_type"),
        raw("no_content_type", post(Some(BFF), None, ok_body.clone())).refused(
            400,
            "invalid_request",
            "request/unsupported_content_type",
        ),
        raw(
            "multipart_content_type",
            post(
                Some(BFF),
                Some("multipart/form-data; boundary=x"),
                ok_body.clone(),
            ),
        )
        .refused(400, "invalid_request", "request/unsupported_content_type"),
        raw(
            "ok_body_exactly_at_cap",
            post(Some(BFF), Some(FORM_TYPE), padded(cap)),
        )
        .granted(json!({ "sub": "alice" })),
        raw(
            "body_one_byte_over_cap",
            post(Some(BFF), Some(FORM_TYPE), padded(cap + 1)),
        )
        .refused(413, "invalid_request", "request/body_too_large"),
        raw(
            "body_of_70_kib",
            post(Some(BFF), Some(FORM_TYPE), padded(70 * 1024)),
        )
        .refused(413, "invalid_request", "request/body_too_large"),
        row("missing_grant_type", BFF, ok.clone().without("grant_type")).refused(
            400,
            "invalid_request",
            "request/missing_parameter",
        ),
        row("empty_grant_type", BFF, ok.clone().set("grant_type", "")).refused(
            400,
            "invalid_request",
            "request/missing_parameter",
        ),
        row(
            "grant_type_client_credentials",
            BFF,
            ok.clone().set("grant_type", "client_credentials"),
        )
        .refused(
            400,
            "unsupported_grant_type",
            "request/unsupported_grant_type",
        ),
        row(
            "grant_type_refresh_token",
            BFF,
            ok.clone().set("grant_type", "refresh_token"),
        )
        .refused(
            400,
            "unsupported_grant_type",
            "request/unsupported_grant_type",
        ),
        row(
            "grant_type_jwt_bearer",
            BFF,
            ok.clone()
                .set("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        )
        .refused(
            400,
            "unsupported_grant_type",
            "request/unsupported_grant_type",
        ),
        row(
            "repeated_grant_type",
            BFF,
            ok.clone().with("grant_type", GRANT),
        )
        .refused(400, "invalid_request", "request/repeated_parameter"),
        row(
            "missing_subject_token",
            BFF,
            ok.clone().without("subject_token"),
        )
        .refused(400, "invalid_request", "request/missing_parameter"),
        row(
            "empty_subject_token",
            BFF,
            ok.clone().set("subject_token", ""),
        )
        .refused(400, "invalid_request", "request/missing_parameter"),
        row(
            "missing_subject_token_type",
            BFF,
            ok.clone().without("subject_token_type"),
        )
        .refused(400, "invalid_request", "request/missing_parameter"),
        row(
            "empty_subject_token_type",
            BFF,
            ok.clone().set("subject_token_type", ""),
        )
        .refused(400, "invalid_request", "request/missing_parameter"),
        row(
            "repeated_subject_token_same_value",
            BFF,
            ok.clone().with("subject_token", &subject),
        )
        .refused(400, "invalid_request", "request/repeated_parameter"),
        row(
            "repeated_subject_token_type",
            BFF,
            ok.clone().with("subject_token_type", AT),
        )
        .refused(400, "invalid_request", "request/repeated_parameter"),
        row(
            "repeated_scope",
            BFF,
            ok.clone()
                .with("scope", "orders:read")
                .with("scope", "orders:read"),
        )
        .refused(400, "invalid_request", "request/repeated_parameter"),
        row(
            "repeated_requested_token_type",
            BFF,
            ok.clone()
                .with("requested_token_type", AT)
                .with("requested_token_type", AT),
        )
        .refused(400, "invalid_request", "request/repeated_parameter"),
        row(
            "ok_repeated_audience",
            BFF,
            ok.clone()
                .with("audience", "orders-api")
                .with("audience", "orders-api"),
        )
        .granted(json!({ "aud": "orders-api" })),
        row(
            "ok_repeated_resource",
            BFF,
            ok.clone()
                .with("resource", "https://orders.example/api")
                .with("resource", "https://orders.example/api"),
        )
        .granted(json!({ "aud": "https://orders.example/api" })),
        row(
            "ok_unknown_parameters_ignored",
            BFF,
            ok.clone()
                .with("foo", "1")
                .with("foo", "2")
                .with("nonce", "x"),
        )
        .granted(json!({ "sub": "alice" })),
        row(
            "actor_token_without_type",
            BFF,
            ok.clone().with("actor_token", &actor),
        )
        .refused(400, "invalid_request", "request/missing_parameter"),
        row(
            "actor_token_with_empty_type",
            BFF,
            ok.clone()
                .with("actor_token", &actor)
                .with("actor_token_type", ""),
        )
        .refused(400, "invalid_request", "request/missing_parameter"),
        row(
            "actor_token_type_without_token",
            BFF,
            ok.clone().with("actor_token_type", AT),
        )
        .refused(400, "invalid_request", "request/actor_type_without_token"),
        row(
            "actor_token_type_with_empty_token",
            BFF,
            ok.clone()
                .with("actor_token", "")
                .with("actor_token_type", AT),
        )
        .refused(400, "invalid_request", "request/actor_type_without_token"),
        row(
            "repeated_actor_token",
            BFF,
            del(&subject, &actor).with("actor_token", &actor),
        )
        .refused(400, "invalid_request", "request/repeated_parameter"),
        row(
            "ok_empty_actor_parameters_are_absent",
            BFF,
            ok.clone()
                .with("actor_token", "")
                .with("actor_token_type", ""),
        )
        .granted(json!({ "sub": "alice", "act": null })),
        row(
            "ok_empty_audience_is_absent",
            BFF,
            ok.clone().with("audience", ""),
        )
        .granted(json!({ "aud": "orders-api" })),
        row(
            "ok_empty_scope_is_absent",
            BFF,
            ok.clone().with("scope", ""),
        )
        .granted(json!({ "scope": "orders:read" })),
        raw(
            "malformed_percent_escape",
            post(
                Some(BFF),
                Some(FORM_TYPE),
                format!("{ok_body}&audience=orders%zzapi"),
            ),
        )
        .refused(400, "invalid_request", "request/malformed_body"),
        raw(
            "truncated_percent_escape",
            post(Some(BFF), Some(FORM_TYPE), format!("{ok_body}&audience=%4")),
        )
        .refused(400, "invalid_request", "request/malformed_body"),
        raw(
            "percent_escape_not_utf8",
            post(
                Some(BFF),
                Some(FORM_TYPE),
                format!("{ok_body}&audience=%FF%FE"),
            ),
        )
        .refused(400, "invalid_request", "request/malformed_body"),
        raw(
            "malformed_escape_in_unknown_parameter",
            post(Some(BFF), Some(FORM_TYPE), format!("{ok_body}&x=%G0")),
        )
        .refused(400, "invalid_request", "request/malformed_body"),
    ];
    run("§2 request", &sts, rows).await;
}

/// A body over the cap is refused before it is read in full: with a declared length, on
/// the headers alone; chunked, as soon as the cap is passed (without the final chunk).
#[tokio::test]
async fn section2_oversized_body_is_refused_before_it_is_read() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let addr = sts.base.trim_start_matches("http://").to_owned();
    let head = |framing: &str| {
        format!(
            "POST /token HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {FORM_TYPE}\r\nauthorization: Basic {}\r\n{framing}\r\n\r\n",
            STANDARD.encode("bff:bff-secret")
        )
    };
    let cases = [
        (
            "declared length, no body sent",
            head("content-length: 71680"),
            0,
        ),
        (
            "chunked, 72 KiB without the last chunk",
            head("transfer-encoding: chunked"),
            9,
        ),
    ];
    for (name, head, chunks) in cases {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let chunk = "a".repeat(8192);
        for _ in 0..chunks {
            stream
                .write_all(format!("2000\r\n{chunk}\r\n").as_bytes())
                .await
                .unwrap();
        }
        // The body is never finished: an answer proves the refusal did not wait for it.
        let mut response = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => response.extend_from_slice(&buf[..n]),
                }
                let text = String::from_utf8_lossy(&response);
                if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
                    break;
                }
            }
        })
        .await;
        let text = String::from_utf8_lossy(&response);
        assert!(read.is_ok(), "{name}: no answer within 5 s: {text:?}");
        assert!(text.starts_with("HTTP/1.1 413"), "{name}: {text}");
        assert!(
            text.contains(r#""error":"invalid_request""#),
            "{name}: {text}"
        );
    }
}

// ---- §3 client authentication ------------------------------------------------------------

#[tokio::test]
async fn section3_client_authentication() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let subject = issuer.user_token("alice", "bff", "orders:read");
    let form = body(&[
        ("grant_type", GRANT),
        ("subject_token", &subject),
        ("subject_token_type", AT),
    ]);
    let with = |extra: &str| format!("{form}&{extra}");
    let auth = post_authorization;
    let twice = |first: Option<String>, second: Option<String>, body: String| {
        move |sts: &Sts| {
            sts.http
                .post(sts.token_url())
                .header("content-type", FORM_TYPE)
                .header("authorization", first.clone().unwrap())
                .header("authorization", second.clone().unwrap())
                .body(body.clone())
        }
    };

    let rows = vec![
        raw("ok_basic", auth(basic("bff:bff-secret"), form.clone()))
            .granted(json!({ "client_id": "bff" })),
        raw(
            "ok_basic_scheme_any_case",
            auth(
                Some(format!("bAsIc {}", STANDARD.encode("bff:bff-secret"))),
                form.clone(),
            ),
        )
        .granted(json!({ "client_id": "bff" })),
        raw(
            "ok_basic_credentials_are_form_decoded",
            auth(basic("%62ff:bff%2Dsecret"), form.clone()),
        )
        .granted(json!({ "client_id": "bff" })),
        raw(
            "ok_basic_with_same_client_id_in_body",
            auth(basic("bff:bff-secret"), with("client_id=bff")),
        )
        .granted(json!({ "client_id": "bff" })),
        raw(
            "ok_client_secret_post",
            auth(None, with("client_id=bff&client_secret=bff-secret")),
        )
        .granted(json!({ "client_id": "bff" })),
        raw("no_credentials", auth(None, form.clone())).refused(
            401,
            "invalid_client",
            "client_auth/missing_credentials",
        ),
        raw("client_id_only_in_body", auth(None, with("client_id=bff"))).refused(
            401,
            "invalid_client",
            "client_auth/missing_credentials",
        ),
        raw(
            "empty_client_secret_is_absent",
            auth(None, with("client_id=bff&client_secret=")),
        )
        .refused(401, "invalid_client", "client_auth/missing_credentials"),
        raw(
            "client_secret_without_client_id",
            auth(None, with("client_secret=bff-secret")),
        )
        .refused(400, "invalid_request", "client_auth/secret_without_id"),
        raw(
            "wrong_secret_basic",
            auth(basic("bff:not-the-secret"), form.clone()),
        )
        .refused(401, "invalid_client", "client_auth/wrong_secret")
        .challenged(),
        raw(
            "other_clients_secret_basic",
            auth(basic("bff:orders-secret"), form.clone()),
        )
        .refused(401, "invalid_client", "client_auth/wrong_secret")
        .challenged(),
        raw(
            "wrong_secret_post",
            auth(None, with("client_id=bff&client_secret=not-the-secret")),
        )
        .refused(401, "invalid_client", "client_auth/wrong_secret"),
        raw(
            "unknown_client_basic",
            auth(basic("nobody:bff-secret"), form.clone()),
        )
        .refused(401, "invalid_client", "client_auth/unknown_client")
        .challenged(),
        raw(
            "client_id_is_case_sensitive",
            auth(basic("BFF:bff-secret"), form.clone()),
        )
        .refused(401, "invalid_client", "client_auth/unknown_client")
        .challenged(),
        raw(
            "unknown_client_post",
            auth(None, with("client_id=nobody&client_secret=bff-secret")),
        )
        .refused(401, "invalid_client", "client_auth/unknown_client"),
        raw(
            "basic_and_client_secret_in_body",
            auth(basic("bff:bff-secret"), with("client_secret=bff-secret")),
        )
        .refused(400, "invalid_request", "client_auth/multiple_methods"),
        raw(
            "basic_and_other_client_id_in_body",
            auth(basic("bff:bff-secret"), with("client_id=orders-api")),
        )
        .refused(400, "invalid_request", "client_auth/client_id_mismatch"),
        raw(
            "repeated_client_id_in_body",
            auth(
                None,
                with("client_id=bff&client_id=bff&client_secret=bff-secret"),
            ),
        )
        .refused(400, "invalid_request", "client_auth/repeated_parameter"),
        raw(
            "bearer_scheme",
            auth(Some(format!("Bearer {subject}")), form.clone()),
        )
        .refused(401, "invalid_client", "client_auth/unsupported_scheme")
        .challenged(),
        raw(
            "basic_not_base64",
            auth(Some("Basic !!not-base64!!".into()), form.clone()),
        )
        .refused(401, "invalid_client", "client_auth/malformed_basic")
        .challenged(),
        raw(
            "basic_without_colon",
            auth(basic("bff-bff-secret"), form.clone()),
        )
        .refused(401, "invalid_client", "client_auth/malformed_basic")
        .challenged(),
        // One Authorization header: with two, which one counts would be a guess.
        raw(
            "two_authorization_headers_alike",
            twice(
                basic("bff:bff-secret"),
                basic("bff:bff-secret"),
                form.clone(),
            ),
        )
        .refused(
            400,
            "invalid_request",
            "client_auth/multiple_authorization_headers",
        ),
        raw(
            "two_authorization_headers_first_valid",
            twice(
                basic("bff:bff-secret"),
                basic("mallory:mallory-secret"),
                form.clone(),
            ),
        )
        .refused(
            400,
            "invalid_request",
            "client_auth/multiple_authorization_headers",
        ),
        raw(
            "two_authorization_headers_second_valid",
            twice(
                Some("Basic !!".into()),
                basic("bff:bff-secret"),
                form.clone(),
            ),
        )
        .refused(
            400,
            "invalid_request",
            "client_auth/multiple_authorization_headers",
        ),
        raw("basic_not_visible_ascii", {
            let form = form.clone();
            move |sts: &Sts| {
                let value =
                    http::HeaderValue::from_bytes(b"Basic YmZm\xffOmJmZi1zZWNyZXQ=").unwrap();
                sts.http
                    .post(sts.token_url())
                    .header("content-type", FORM_TYPE)
                    .header("authorization", value)
                    .body(form.clone())
            }
        })
        .refused(401, "invalid_client", "client_auth/malformed_basic")
        .challenged(),
    ];
    run("§3 client auth", &sts, rows).await;
}

// ---- §4 validating subject and actor tokens ----------------------------------------------

#[tokio::test]
async fn section4_subject_token_validation() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let claims = issuer.user_claims("alice", "bff", "orders:read");
    let header = json!({ "alg": "ES256", "kid": "es-1", "typ": "at+jwt" });
    let jwks = issuer.default_jwks();
    let (ec_jwk, rsa_jwk) = (jwks["keys"][0].clone(), jwks["keys"][1].clone());
    let never_fetched = |what: &str| format!("http://{}/{what}-must-not-be-fetched", issuer.addr);

    let with_claims = |changes: Value| issuer.sign(patch(&claims, changes));
    let with_header =
        |changes: Value| issuer.sign_with(Alg::Es256, patch(&header, changes), claims.clone());
    let raw_claims = |text: &str| issuer.sign_raw(Alg::Es256, &header.to_string(), text);
    let raw_header = |text: &str| issuer.sign_raw(Alg::Es256, text, &claims.to_string());
    let valid = issuer.sign(claims.clone());
    let segments: Vec<&str> = valid.split('.').collect();
    let (at_cap, over_cap) = tokens_around(&issuer, &claims, 16 * 1024);
    assert!(at_cap.len() > 16 * 1024 - 4, "{}", at_cap.len());
    let mallory_claims = patch(&claims, json!({ "sub": "mallory" }));
    let spliced_signature = {
        let theirs = issuer.sign(mallory_claims.clone());
        let (_, sig) = valid.rsplit_once('.').unwrap();
        let (input, _) = theirs.rsplit_once('.').unwrap();
        format!("{input}.{sig}")
    };
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));

    let s = |name: &'static str, token: String| row(name, BFF, imp(&token));
    let bad = |name: &'static str, token: String, reason: &'static str| {
        s(name, token).refused(400, "invalid_request", reason)
    };
    let rows = vec![
        s("ok_valid", valid.clone()).granted(json!({ "sub": "alice" })),
        // Header: the algorithm comes from the key, never from the token alone.
        bad(
            "alg_none_unsigned",
            unsigned(&json!({ "alg": "none", "typ": "at+jwt" }), &claims),
            "subject_token/unsupported_algorithm",
        ),
        bad(
            "alg_none_with_kid",
            unsigned(
                &json!({ "alg": "none", "kid": "es-1", "typ": "at+jwt" }),
                &claims,
            ),
            "subject_token/unsupported_algorithm",
        ),
        bad(
            "alg_none_capitalised",
            unsigned(&json!({ "alg": "None", "typ": "at+jwt" }), &claims),
            "subject_token/unsupported_algorithm",
        ),
        bad(
            "hs256_keyed_with_rsa_public_jwk",
            hs256(
                &json!({ "alg": "HS256", "kid": "rs-1", "typ": "at+jwt" }),
                &claims,
                rsa_jwk.to_string().as_bytes(),
            ),
            "subject_token/unsupported_algorithm",
        ),
        bad(
            "hs256_keyed_with_ec_public_x",
            hs256(
                &json!({ "alg": "HS256", "kid": "es-1", "typ": "at+jwt" }),
                &claims,
                ec_jwk["x"].as_str().unwrap().as_bytes(),
            ),
            "subject_token/unsupported_algorithm",
        ),
        bad(
            "alg_unknown",
            with_header(json!({ "alg": "ES999" })),
            "subject_token/unsupported_algorithm",
        ),
        bad(
            "alg_missing",
            with_header(json!({ "alg": null })),
            "subject_token/malformed_header",
        ),
        bad(
            "es256_header_on_rsa_kid",
            issuer.sign_with(
                Alg::Es256,
                json!({ "alg": "ES256", "kid": "rs-1", "typ": "at+jwt" }),
                claims.clone(),
            ),
            "subject_token/algorithm_key_mismatch",
        ),
        bad(
            "rs256_header_on_ec_kid",
            issuer.sign_with(
                Alg::Rs256,
                json!({ "alg": "RS256", "kid": "es-1", "typ": "at+jwt" }),
                claims.clone(),
            ),
            "subject_token/algorithm_key_mismatch",
        ),
        bad(
            "eddsa_header_on_ec_kid",
            issuer.sign_with(
                Alg::EdDsa,
                json!({ "alg": "EdDSA", "kid": "es-1", "typ": "at+jwt" }),
                claims.clone(),
            ),
            "subject_token/algorithm_key_mismatch",
        ),
        // Key-carrying headers are refused, never followed; each names the real key.
        bad(
            "embedded_jwk",
            with_header(json!({ "jwk": ec_jwk })),
            "subject_token/key_in_header",
        ),
        bad(
            "jku",
            with_header(json!({ "jku": never_fetched("jku") })),
            "subject_token/key_in_header",
        ),
        bad(
            "x5u",
            with_header(json!({ "x5u": never_fetched("x5u") })),
            "subject_token/key_in_header",
        ),
        bad(
            "x5c",
            with_header(json!({ "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"] })),
            "subject_token/key_in_header",
        ),
        bad(
            "jku_null",
            raw_header(r#"{"alg":"ES256","kid":"es-1","typ":"at+jwt","jku":null}"#),
            "subject_token/key_in_header",
        ),
        bad(
            "crit",
            with_header(json!({ "crit": ["exp"] })),
            "subject_token/crit_header",
        ),
        bad(
            "crit_empty",
            with_header(json!({ "crit": [] })),
            "subject_token/crit_header",
        ),
        bad(
            "enc_header_of_a_jwe",
            with_header(json!({ "enc": "A256GCM" })),
            "subject_token/malformed_header",
        ),
        bad(
            "kid_not_a_string",
            with_header(json!({ "kid": 1 })),
            "subject_token/malformed_header",
        ),
        bad(
            "kid_null",
            raw_header(r#"{"alg":"ES256","kid":null,"typ":"at+jwt"}"#),
            "subject_token/malformed_header",
        ),
        bad(
            "kid_an_object",
            with_header(json!({ "kid": { "id": "es-1" } })),
            "subject_token/malformed_header",
        ),
        bad(
            "typ_null",
            raw_header(r#"{"alg":"ES256","kid":"es-1","typ":null}"#),
            "subject_token/malformed_header",
        ),
        bad(
            "typ_a_number",
            with_header(json!({ "typ": 1 })),
            "subject_token/malformed_header",
        ),
        s(
            "ok_kid_absent_one_key_fits",
            raw_header(r#"{"alg":"ES256","typ":"at+jwt"}"#),
        )
        .granted(json!({ "sub": "alice" })),
        bad(
            "kid_is_not_a_path",
            with_header(json!({ "kid": "../jwks.json" })),
            "subject_token/unknown_kid",
        ),
        // The row above forced a refetch (the kid stays unknown in keys fetched after the
        // token came: 400); within 30 s of it another unknown kid cannot be checked against
        // fresh keys, and may be a key we could not fetch yet: 503, not the client's fault.
        s(
            "unknown_kid_within_refetch_cooldown",
            with_header(json!({ "kid": "es-2" })),
        )
        .refused(
            503,
            "temporarily_unavailable",
            "subject_token/keys_unavailable",
        ),
        bad(
            "duplicate_header_member",
            raw_header(r#"{"alg":"ES256","kid":"es-1","typ":"at+jwt","alg":"none"}"#),
            "subject_token/malformed_header",
        ),
        bad(
            "header_not_json",
            raw_header("not json"),
            "subject_token/malformed_header",
        ),
        // iss.
        bad(
            "iss_as_array",
            with_claims(json!({ "iss": [issuer.iss] })),
            "subject_token/invalid_claim",
        ),
        bad(
            "iss_unknown",
            with_claims(json!({ "iss": "https://evil.example" })),
            "subject_token/unknown_issuer",
        ),
        bad(
            "iss_with_trailing_slash",
            with_claims(json!({ "iss": format!("{}/", issuer.iss) })),
            "subject_token/unknown_issuer",
        ),
        bad(
            "iss_names_the_sts_but_upstream_key",
            with_claims(json!({ "iss": sts.base })),
            "subject_token/unknown_kid",
        ),
        bad(
            "iss_missing",
            with_claims(json!({ "iss": null })),
            "subject_token/missing_claim",
        ),
        // exp, nbf, iat against our clock with the 30 s leeway.
        bad(
            "exp_missing",
            with_claims(json!({ "exp": null })),
            "subject_token/missing_claim",
        ),
        bad(
            "exp_as_string",
            with_claims(json!({ "exp": (NOW + 600).to_string() })),
            "subject_token/invalid_claim",
        ),
        bad(
            "exp_1e19_float",
            with_claims(json!({ "exp": 1e19 })),
            "subject_token/invalid_claim",
        ),
        bad(
            "exp_1e19_integer",
            with_claims(json!({ "exp": 10_000_000_000_000_000_000_u64 })),
            "subject_token/invalid_claim",
        ),
        bad(
            "exp_negative",
            with_claims(json!({ "exp": -1 })),
            "subject_token/invalid_claim",
        ),
        bad(
            "exp_beyond_leeway",
            with_claims(json!({ "exp": NOW - 31 })),
            "subject_token/expired",
        ),
        bad(
            "exp_at_leeway",
            with_claims(json!({ "exp": NOW - 30 })),
            "subject_token/expired",
        ),
        s(
            "ok_nbf_within_leeway",
            with_claims(json!({ "nbf": NOW + 30 })),
        )
        .granted(json!({ "sub": "alice" })),
        bad(
            "nbf_beyond_leeway",
            with_claims(json!({ "nbf": NOW + 31 })),
            "subject_token/not_yet_valid",
        ),
        bad(
            "nbf_as_bool",
            with_claims(json!({ "nbf": true })),
            "subject_token/invalid_claim",
        ),
        s(
            "ok_iat_within_leeway",
            with_claims(json!({ "iat": NOW + 30 })),
        )
        .granted(json!({ "sub": "alice" })),
        bad(
            "iat_beyond_leeway",
            with_claims(json!({ "iat": NOW + 31 })),
            "subject_token/issued_in_future",
        ),
        bad(
            "iat_as_string",
            with_claims(json!({ "iat": "yesterday" })),
            "subject_token/invalid_claim",
        ),
        // sub and the other claims we read: wrong JSON types are refused, not ignored.
        bad(
            "sub_missing",
            with_claims(json!({ "sub": null })),
            "subject_token/missing_claim",
        ),
        bad(
            "sub_empty",
            with_claims(json!({ "sub": "" })),
            "subject_token/missing_claim",
        ),
        bad(
            "sub_as_number",
            with_claims(json!({ "sub": 42 })),
            "subject_token/invalid_claim",
        ),
        bad(
            "aud_as_number",
            with_claims(json!({ "aud": 7 })),
            "subject_token/invalid_claim",
        ),
        bad(
            "scope_as_array",
            with_claims(json!({ "scope": ["orders:read"] })),
            "subject_token/invalid_claim",
        ),
        bad(
            "client_id_as_number",
            with_claims(json!({ "client_id": 1 })),
            "subject_token/invalid_claim",
        ),
        bad(
            "act_as_string",
            with_claims(json!({ "act": "gateway" })),
            "subject_token/invalid_claim",
        ),
        bad(
            "act_without_sub",
            with_claims(json!({ "act": { "iss": issuer.iss } })),
            "subject_token/invalid_claim",
        ),
        bad(
            "may_act_as_string",
            with_claims(json!({ "may_act": "bff" })),
            "subject_token/invalid_claim",
        ),
        bad(
            "duplicate_claim",
            raw_claims(&format!(
                r#"{{"iss":"{}","sub":"alice","aud":"bff","exp":{},"sub":"mallory"}}"#,
                issuer.iss,
                NOW + 600
            )),
            "subject_token/malformed_claims",
        ),
        bad(
            "claims_not_json",
            raw_claims("alice"),
            "subject_token/malformed_claims",
        ),
        bad(
            "claims_an_array",
            raw_claims(&format!(r#"["{}"]"#, issuer.iss)),
            "subject_token/malformed_claims",
        ),
        bad(
            "claims_nested_too_deep",
            with_claims(json!({ "x": serde_json::from_str::<Value>(&deep).unwrap() })),
            "subject_token/malformed_claims",
        ),
        // The signature.
        bad(
            "signature_byte_flipped",
            tamper_signature(&valid),
            "subject_token/bad_signature",
        ),
        bad(
            "signature_of_another_token",
            spliced_signature,
            "subject_token/bad_signature",
        ),
        bad(
            "signature_empty",
            format!("{}.{}.", segments[0], segments[1]),
            "subject_token/bad_signature",
        ),
        // The signature comes before what the token says: a forged token is audited as
        // forged, whatever else is wrong with it (the pattern of CVE-2024-51744).
        bad(
            "expired_and_forged",
            tamper_signature(&with_claims(json!({ "exp": NOW - 31 }))),
            "subject_token/bad_signature",
        ),
        bad(
            "wrong_typ_and_forged",
            tamper_signature(&with_header(json!({ "typ": "JWT" }))),
            "subject_token/bad_signature",
        ),
        // A claim of the wrong type is judged only once the token is genuine.
        bad(
            "exp_a_string_and_forged",
            tamper_signature(&with_claims(json!({ "exp": "soon" }))),
            "subject_token/bad_signature",
        ),
        bad(
            "may_act_an_array_and_forged",
            tamper_signature(&with_claims(json!({ "may_act": ["bff"] }))),
            "subject_token/bad_signature",
        ),
        bad(
            "exp_a_string",
            with_claims(json!({ "exp": "soon" })),
            "subject_token/invalid_claim",
        ),
        bad(
            "not_yet_valid_and_forged",
            tamper_signature(&with_claims(json!({ "nbf": NOW + 31 }))),
            "subject_token/bad_signature",
        ),
        bad(
            "sub_missing_and_forged",
            tamper_signature(&with_claims(json!({ "sub": null }))),
            "subject_token/bad_signature",
        ),
        // An unknown kid after the earlier rows' forced refetch: the key lookup answers
        // (503 within the refetch cooldown), not the typ check.
        s(
            "wrong_typ_and_signed_by_no_key_of_the_issuer",
            with_header(json!({ "typ": "JWT", "kid": "es-2" })),
        )
        .refused(
            503,
            "temporarily_unavailable",
            "subject_token/keys_unavailable",
        ),
        // Size and shape, before any decoding.
        s("ok_token_at_size_cap", at_cap).granted(json!({ "sub": "alice" })),
        bad("token_over_size_cap", over_cap, "subject_token/too_large"),
        bad(
            "two_segments",
            format!("{}.{}", segments[0], segments[1]),
            "subject_token/not_compact_jws",
        ),
        bad(
            "four_segments",
            format!("{valid}.{}", segments[2]),
            "subject_token/not_compact_jws",
        ),
        bad(
            "five_segments_like_a_jwe",
            format!(
                "{}.{}.{}.{}.{}",
                segments[0], "", segments[1], segments[2], "tag"
            ),
            "subject_token/not_compact_jws",
        ),
        bad(
            "opaque_token",
            "2YotnFZFEjr1zCsicMWpAA".into(),
            "subject_token/not_compact_jws",
        ),
        bad(
            "header_not_base64url",
            format!("{}!.{}.{}", segments[0], segments[1], segments[2]),
            "subject_token/not_compact_jws",
        ),
        bad(
            "claims_not_base64url",
            format!("{}.{}*.{}", segments[0], segments[1], segments[2]),
            "subject_token/not_compact_jws",
        ),
        bad(
            "claims_base64_padded",
            format!("{}.{}==.{}", segments[0], segments[1], segments[2]),
            "subject_token/not_compact_jws",
        ),
    ];
    run("§4 subject token", &sts, rows).await;

    // Nothing named by a token was ever fetched; the recorder itself works.
    let asked = issuer.urls_requested();
    assert!(asked.iter().any(|u| u == "/jwks.json"), "{asked:?}");
    assert!(
        !asked.iter().any(|u| u.contains("must-not-be-fetched")),
        "a URL from a token header was fetched: {asked:?}"
    );
}

#[tokio::test]
async fn section4_actor_token_validation() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let subject = issuer.user_token("alice", "bff", "orders:read");
    let claims = issuer.actor_claims("bff");
    let header = json!({ "alg": "ES256", "kid": "es-1", "typ": "at+jwt" });
    let jwks = issuer.default_jwks();
    let never_fetched = format!("http://{}/actor-jku-must-not-be-fetched", issuer.addr);
    let valid = issuer.sign(claims.clone());
    let (_, over_cap) = tokens_around(&issuer, &claims, 16 * 1024);

    let with_claims = |changes: Value| issuer.sign(patch(&claims, changes));
    let with_header =
        |changes: Value| issuer.sign_with(Alg::Es256, patch(&header, changes), claims.clone());
    let a = |name: &'static str, actor: String| row(name, BFF, del(&subject, &actor));
    let bad = |name: &'static str, actor: String, reason: &'static str| {
        a(name, actor).refused(400, "invalid_request", reason)
    };
    let rows = vec![
        a("ok_valid_actor", valid.clone()).granted(json!({ "act": { "sub": "bff" } })),
        bad(
            "alg_none",
            unsigned(&json!({ "alg": "none", "typ": "at+jwt" }), &claims),
            "actor_token/unsupported_algorithm",
        ),
        bad(
            "hs256_keyed_with_public_jwk",
            hs256(
                &json!({ "alg": "HS256", "kid": "rs-1", "typ": "at+jwt" }),
                &claims,
                jwks["keys"][1].to_string().as_bytes(),
            ),
            "actor_token/unsupported_algorithm",
        ),
        bad(
            "es256_header_on_rsa_kid",
            issuer.sign_with(
                Alg::Es256,
                json!({ "alg": "ES256", "kid": "rs-1", "typ": "at+jwt" }),
                claims.clone(),
            ),
            "actor_token/algorithm_key_mismatch",
        ),
        bad(
            "embedded_jwk",
            with_header(json!({ "jwk": jwks["keys"][0] })),
            "actor_token/key_in_header",
        ),
        bad(
            "jku",
            with_header(json!({ "jku": never_fetched })),
            "actor_token/key_in_header",
        ),
        bad(
            "crit",
            with_header(json!({ "crit": ["exp"] })),
            "actor_token/crit_header",
        ),
        bad(
            "unknown_kid",
            with_header(json!({ "kid": "es-2" })),
            "actor_token/unknown_kid",
        ),
        bad(
            "signature_byte_flipped",
            tamper_signature(&valid),
            "actor_token/bad_signature",
        ),
        bad(
            "expired_and_forged",
            tamper_signature(&with_claims(json!({ "exp": NOW - 31 }))),
            "actor_token/bad_signature",
        ),
        bad(
            "wrong_typ_and_forged",
            tamper_signature(&with_header(json!({ "typ": "JWT" }))),
            "actor_token/bad_signature",
        ),
        bad(
            "iss_unknown",
            with_claims(json!({ "iss": "https://evil.example" })),
            "actor_token/unknown_issuer",
        ),
        bad(
            "iss_as_array",
            with_claims(json!({ "iss": [issuer.iss] })),
            "actor_token/invalid_claim",
        ),
        bad(
            "exp_missing",
            with_claims(json!({ "exp": null })),
            "actor_token/missing_claim",
        ),
        bad(
            "exp_as_string",
            with_claims(json!({ "exp": "never" })),
            "actor_token/invalid_claim",
        ),
        bad(
            "exp_beyond_leeway",
            with_claims(json!({ "exp": NOW - 31 })),
            "actor_token/expired",
        ),
        bad(
            "nbf_beyond_leeway",
            with_claims(json!({ "nbf": NOW + 31 })),
            "actor_token/not_yet_valid",
        ),
        bad(
            "iat_beyond_leeway",
            with_claims(json!({ "iat": NOW + 31 })),
            "actor_token/issued_in_future",
        ),
        bad(
            "sub_missing",
            with_claims(json!({ "sub": null })),
            "actor_token/missing_claim",
        ),
        bad(
            "duplicate_claim",
            issuer.sign_raw(
                Alg::Es256,
                &header.to_string(),
                &format!(
                    r#"{{"iss":"{}","sub":"bff","client_id":"bff","exp":{},"sub":"orders-api"}}"#,
                    issuer.iss,
                    NOW + 600
                ),
            ),
            "actor_token/malformed_claims",
        ),
        bad(
            "typ_jwt_declared_access_token",
            with_header(json!({ "typ": "JWT" })),
            "actor_token/typ_mismatch",
        ),
        bad("over_size_cap", over_cap, "actor_token/too_large"),
        bad(
            "not_compact",
            "opaque-actor-token-value".into(),
            "actor_token/not_compact_jws",
        ),
    ];
    run("§4 actor token", &sts, rows).await;
    let asked = issuer.urls_requested();
    assert!(
        !asked.iter().any(|u| u.contains("must-not-be-fetched")),
        "a URL from a token header was fetched: {asked:?}"
    );
}

/// The algorithm allow-list is per issuer: an algorithm the issuer's key could verify is
/// still refused when the issuer's configuration does not list it.
#[tokio::test]
async fn section4_issuer_algorithm_allow_list() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "algorithms = [\"ES256\", \"EdDSA\"]")
        .start()
        .await;
    let claims = issuer.user_claims("alice", "bff", "orders:read");
    let rows = vec![
        row(
            "ok_es256_listed",
            BFF,
            imp(&issuer.sign_as(Alg::Es256, claims.clone())),
        )
        .granted(json!({ "sub": "alice" })),
        row(
            "ok_eddsa_listed",
            BFF,
            imp(&issuer.sign_as(Alg::EdDsa, claims.clone())),
        )
        .granted(json!({ "sub": "alice" })),
        row(
            "rs256_not_listed",
            BFF,
            imp(&issuer.sign_as(Alg::Rs256, claims.clone())),
        )
        .refused(
            400,
            "invalid_request",
            "subject_token/algorithm_not_allowed",
        ),
        row(
            "ps256_not_listed",
            BFF,
            imp(&issuer.sign_as(Alg::Ps256, claims.clone())),
        )
        .refused(
            400,
            "invalid_request",
            "subject_token/algorithm_not_allowed",
        ),
        row(
            "rs256_actor_not_listed",
            BFF,
            del(
                &issuer.sign(claims.clone()),
                &issuer.sign_as(Alg::Rs256, issuer.actor_claims("bff")),
            ),
        )
        .refused(400, "invalid_request", "actor_token/algorithm_not_allowed"),
    ];
    run("§4 algorithm allow-list", &sts, rows).await;
}

// ---- §5 the delegation chain --------------------------------------------------------------

/// Rules 1 (actor binding) and 2 (subject binding).
#[tokio::test]
async fn section5_actor_and_subject_binding() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let alice = issuer.user_claims("alice", "bff", "orders:read");
    let alice_bff = issuer.sign(alice.clone());
    let subject = |changes: Value| issuer.sign(patch(&alice, changes));
    let bff_actor = issuer.actor_claims("bff");
    let actor = |changes: Value| issuer.sign(patch(&bff_actor, changes));
    let mallory_actor = issuer.actor_token("mallory");
    let not_bound = "policy/actor_not_bound_to_client";
    let not_issued_to = "policy/subject_not_bound_to_client";

    let rows = vec![
        // Rule 1: an actor token must belong to the authenticated client.
        row(
            "ok_actor_token_of_the_client",
            BFF,
            del(&alice_bff, &actor(json!({}))),
        )
        .granted(json!({ "act": { "sub": "bff" } })),
        row(
            "actor_token_of_another_client",
            BFF,
            del(&alice_bff, &issuer.actor_token("orders-api")),
        )
        .refused(400, "invalid_request", not_bound),
        row(
            "actor_client_id_names_another_client",
            BFF,
            del(
                &alice_bff,
                &actor(json!({ "sub": "svc-7", "client_id": "orders-api" })),
            ),
        )
        .refused(400, "invalid_request", not_bound),
        // The actor token is the client itself: azp/client_id naming the client are
        // necessary, never sufficient (a user's token issued to the BFF names it too).
        row(
            "actor_client_id_names_the_client_sub_is_someone_else",
            BFF,
            del(
                &alice_bff,
                &actor(json!({ "sub": "svc-7", "client_id": "bff" })),
            ),
        )
        .refused(400, "invalid_request", not_bound),
        row(
            "ok_actor_client_id_and_sub_are_the_client",
            BFF,
            del(
                &alice_bff,
                &actor(json!({ "sub": "bff", "client_id": "bff" })),
            ),
        )
        .granted(json!({ "act": { "sub": "bff" } })),
        row(
            "actor_azp_names_another_client",
            BFF,
            del(
                &alice_bff,
                &actor(json!({ "sub": "bff", "client_id": null, "azp": "orders-api" })),
            ),
        )
        .refused(400, "invalid_request", not_bound),
        row(
            "user_token_issued_to_the_client_as_actor",
            BFF,
            del(
                &alice_bff,
                &issuer.sign(patch(
                    &issuer.user_claims("bob", "bff", "orders:read"),
                    json!({ "azp": "bff" }),
                )),
            ),
        )
        .refused(400, "invalid_request", not_bound),
        row(
            "ok_actor_azp_and_sub_are_the_client",
            BFF,
            del(
                &alice_bff,
                &actor(json!({ "sub": "bff", "client_id": null, "azp": "bff" })),
            ),
        )
        .granted(json!({ "act": { "sub": "bff" } })),
        row(
            "actor_sub_is_another_client",
            BFF,
            del(
                &alice_bff,
                &actor(json!({ "sub": "orders-api", "client_id": null })),
            ),
        )
        .refused(400, "invalid_request", not_bound),
        row(
            "actor_sub_is_the_client_client_id_another",
            BFF,
            del(
                &alice_bff,
                &actor(json!({ "sub": "bff", "client_id": "orders-api" })),
            ),
        )
        .refused(400, "invalid_request", not_bound),
        row(
            "ok_actor_sub_is_the_client",
            BFF,
            del(
                &alice_bff,
                &actor(json!({ "sub": "bff", "client_id": null })),
            ),
        )
        .granted(json!({ "act": { "sub": "bff" } })),
        // Rule 2: the subject token must name this exchange's client or actor. The splice:
        // mallory presents alice's token that was issued to the BFF.
        row(
            "splice_delegation_token_issued_to_bff",
            MALLORY,
            del(&alice_bff, &mallory_actor),
        )
        .refused(400, "invalid_request", not_issued_to),
        row(
            "ok_delegation_token_issued_to_mallory",
            MALLORY,
            del(&subject(json!({ "aud": "mallory" })), &mallory_actor),
        )
        .granted(json!({ "sub": "alice", "client_id": "mallory", "act": { "sub": "mallory" } })),
        row(
            "splice_impersonation_token_issued_to_bff",
            MALLORY,
            imp(&alice_bff),
        )
        .refused(400, "invalid_request", not_issued_to),
        row(
            "ok_impersonation_token_issued_to_mallory",
            MALLORY,
            imp(&subject(json!({ "aud": "mallory" }))),
        )
        .granted(json!({ "sub": "alice", "client_id": "mallory", "act": null })),
        row(
            "subject_client_id_names_another_client",
            MALLORY,
            imp(&subject(json!({ "aud": "some-api", "client_id": "bff" }))),
        )
        .refused(400, "invalid_request", not_issued_to),
        row(
            "ok_subject_client_id_names_the_client",
            MALLORY,
            imp(&subject(
                json!({ "aud": "some-api", "client_id": "mallory" }),
            )),
        )
        .granted(json!({ "sub": "alice" })),
        row(
            "subject_azp_names_another_client",
            MALLORY,
            imp(&subject(json!({ "aud": "some-api", "azp": "bff" }))),
        )
        .refused(400, "invalid_request", not_issued_to),
        row(
            "ok_subject_azp_names_the_client",
            MALLORY,
            imp(&subject(json!({ "aud": "some-api", "azp": "mallory" }))),
        )
        .granted(json!({ "sub": "alice" })),
        row(
            "subject_without_aud_or_client",
            MALLORY,
            imp(&subject(json!({ "aud": null }))),
        )
        .refused(400, "invalid_request", not_issued_to),
        row(
            "ok_subject_aud_array_names_the_client",
            MALLORY,
            imp(&subject(json!({ "aud": ["some-api", "mallory"] }))),
        )
        .granted(json!({ "sub": "alice" })),
    ];
    run("§5 rules 1-2", &sts, rows).await;
}

/// Rule 1, audience: where an issuer declares the `aud` values that name this STS
/// (`sts_audiences`), its actor tokens must carry one; a token minted for another service
/// (or for none, or for `"*"`) is refused even though it belongs to the client.
#[tokio::test]
async fn section5_actor_token_audience() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer(
            "corp",
            &issuer,
            r#"sts_audiences = ["https://sts.test", "gleipnir"]"#,
        )
        .start()
        .await;
    let alice = issuer.user_token("alice", "bff", "orders:read");
    let bff_actor = issuer.actor_claims("bff");
    let actor = |aud: Value| issuer.sign(patch(&bff_actor, json!({ "aud": aud })));
    let mismatch = "policy/actor_audience_mismatch";
    let rows = vec![
        row(
            "ok_actor_aud_names_the_sts",
            BFF,
            del(&alice, &actor(json!("gleipnir"))),
        )
        .granted(json!({ "sub": "alice", "act": { "sub": "bff" } })),
        row(
            "ok_actor_aud_array_holds_the_sts",
            BFF,
            del(&alice, &actor(json!(["orders-api", "https://sts.test"]))),
        )
        .granted(json!({ "sub": "alice", "act": { "sub": "bff" } })),
        row(
            "actor_aud_another_service",
            BFF,
            del(&alice, &actor(json!("orders-api"))),
        )
        .refused(400, "invalid_request", mismatch),
        row("actor_aud_empty_array", BFF, del(&alice, &actor(json!([])))).refused(
            400,
            "invalid_request",
            mismatch,
        ),
        row("actor_aud_star", BFF, del(&alice, &actor(json!("*")))).refused(
            400,
            "invalid_request",
            mismatch,
        ),
        row("actor_aud_missing", BFF, del(&alice, &actor(Value::Null))).refused(
            400,
            "invalid_request",
            mismatch,
        ),
    ];
    run("§5 rule 1 actor audience", &sts, rows).await;
}

/// Rules 3 (`may_act`), 4 (delegation stays delegation: a delegated actor token is
/// refused) and 6 (no cycles).
#[tokio::test]
async fn section5_may_act_delegated_actor_and_cycles() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let alice = issuer.user_claims("alice", "bff", "orders:read");
    let alice_bff = issuer.sign(alice.clone());
    let subject = |changes: Value| issuer.sign(patch(&alice, changes));
    let bff_actor_claims = issuer.actor_claims("bff");
    let bff_actor = issuer.sign(bff_actor_claims.clone());
    let mismatch = "policy/may_act_mismatch";
    let in_chain = "policy/actor_in_chain";

    let rows = vec![
        // Rule 3: may_act restricts, whatever else would allow the exchange.
        row(
            "may_act_names_another_with_actor_token",
            BFF,
            del(
                &subject(json!({ "may_act": { "sub": "orders-api" } })),
                &bff_actor,
            ),
        )
        .refused(400, "invalid_request", mismatch),
        row(
            "may_act_names_another_without_actor_token",
            BFF,
            imp(&subject(json!({ "may_act": { "sub": "orders-api" } }))),
        )
        .refused(400, "invalid_request", mismatch),
        row(
            "may_act_iss_names_another_issuer",
            BFF,
            del(
                &subject(
                    json!({ "may_act": { "sub": "bff", "iss": "https://elsewhere.example" } }),
                ),
                &bff_actor,
            ),
        )
        .refused(400, "invalid_request", mismatch),
        row(
            "ok_may_act_sub_and_iss_name_the_actor",
            BFF,
            del(
                &subject(json!({ "may_act": { "sub": "bff", "iss": issuer.iss } })),
                &bff_actor,
            ),
        )
        .granted(json!({ "act": { "sub": "bff" } })),
        row(
            "aud_names_someone_else_and_no_may_act",
            BFF,
            del(&subject(json!({ "aud": "elsewhere" })), &bff_actor),
        )
        .refused(400, "invalid_request", "policy/subject_not_bound_to_client"),
        row(
            "ok_may_act_binds_when_aud_names_someone_else",
            BFF,
            del(
                &subject(json!({ "aud": "elsewhere", "may_act": { "sub": "bff" } })),
                &bff_actor,
            ),
        )
        .granted(json!({ "sub": "alice", "act": { "sub": "bff" } })),
        row(
            "ok_may_act_names_the_client_without_actor_token",
            BFF,
            imp(&subject(
                json!({ "aud": "elsewhere", "may_act": { "sub": "bff" } }),
            )),
        )
        .granted(json!({ "sub": "alice", "act": null })),
        // Rule 4: an actor token that is itself delegated belongs to another chain.
        row(
            "actor_token_carries_act",
            BFF,
            del(
                &alice_bff,
                &issuer.sign(patch(
                    &bff_actor_claims,
                    json!({ "act": { "sub": "gateway" } }),
                )),
            ),
        )
        .refused(400, "invalid_request", "policy/actor_token_delegated"),
        row(
            "ok_actor_token_without_act",
            BFF,
            del(&alice_bff, &bff_actor),
        )
        .granted(json!({ "act": { "sub": "bff" } })),
        // Rule 6: an actor already in the chain is refused.
        row(
            "actor_is_the_subject",
            BFF,
            del(&subject(json!({ "sub": "bff" })), &bff_actor),
        )
        .refused(400, "invalid_request", in_chain),
        row(
            "actor_is_the_current_actor",
            BFF,
            del(&subject(json!({ "act": chain(&["bff"]) })), &bff_actor),
        )
        .refused(400, "invalid_request", in_chain),
        row(
            "actor_is_a_prior_actor",
            BFF,
            del(
                &subject(json!({ "act": chain(&["gateway", "bff", "edge"]) })),
                &bff_actor,
            ),
        )
        .refused(400, "invalid_request", in_chain),
        row(
            "ok_actor_not_in_chain",
            BFF,
            del(
                &subject(json!({ "act": chain(&["gateway", "edge"]) })),
                &bff_actor,
            ),
        )
        .granted(json!({ "act": chain(&["bff", "gateway", "edge"]) })),
    ];
    run("§5 rules 3, 4, 6", &sts, rows).await;
}

/// Rule 7: the depth limit, from the default (4), from `tokens.max_depth` and from a
/// client's policy `max_depth`.
#[tokio::test]
async fn section5_depth_limit() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let alice = issuer.user_claims("alice", "bff", "orders:read");
    let with_chain = |subs: &[&str]| issuer.sign(patch(&alice, json!({ "act": chain(subs) })));
    let bff_actor = issuer.actor_token("bff");
    let too_deep = "policy/chain_too_deep";

    let sts = Sts::start(&issuer).await;
    let rows = vec![
        row(
            "ok_three_prior_actors_plus_actor",
            BFF,
            del(&with_chain(&["a1", "a2", "a3"]), &bff_actor),
        )
        .granted(json!({ "act": chain(&["bff", "a1", "a2", "a3"]) })),
        row(
            "four_prior_actors_plus_actor",
            BFF,
            del(&with_chain(&["a1", "a2", "a3", "a4"]), &bff_actor),
        )
        .refused(400, "invalid_request", too_deep),
        row(
            "ok_impersonation_carries_four_actors",
            BFF,
            imp(&with_chain(&["a1", "a2", "a3", "a4"])),
        )
        .granted(json!({ "act": chain(&["a1", "a2", "a3", "a4"]) })),
        row(
            "impersonation_of_five_actors",
            BFF,
            imp(&with_chain(&["a1", "a2", "a3", "a4", "a5"])),
        )
        .refused(400, "invalid_request", too_deep),
    ];
    run("§5 rule 7 (default 4)", &sts, rows).await;

    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .tokens("max_depth = 2")
        .start()
        .await;
    let rows = vec![
        row(
            "ok_one_prior_actor_plus_actor",
            BFF,
            del(&with_chain(&["a1"]), &bff_actor),
        )
        .granted(json!({ "act": chain(&["bff", "a1"]) })),
        row(
            "two_prior_actors_plus_actor",
            BFF,
            del(&with_chain(&["a1", "a2"]), &bff_actor),
        )
        .refused(400, "invalid_request", too_deep),
    ];
    run("§5 rule 7 (tokens.max_depth = 2)", &sts, rows).await;

    let policy = DEFAULT_POLICY.replacen(
        "ttl_seconds = 300\n",
        "ttl_seconds = 300\nmax_depth = 1\n",
        1,
    );
    assert!(policy.contains("max_depth = 1"));
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .policy(&policy)
        .start()
        .await;
    let rows = vec![
        row(
            "ok_actor_alone",
            BFF,
            del(&issuer.sign(alice.clone()), &bff_actor),
        )
        .granted(json!({ "act": { "sub": "bff" } })),
        row(
            "one_prior_actor_plus_actor",
            BFF,
            del(&with_chain(&["a1"]), &bff_actor),
        )
        .refused(400, "invalid_request", too_deep),
        row(
            "ok_impersonation_carries_one_actor",
            BFF,
            imp(&with_chain(&["a1"])),
        )
        .granted(json!({ "act": chain(&["a1"]) })),
    ];
    run("§5 rule 7 (policy max_depth = 1)", &sts, rows).await;
}

/// Rules 8 (lifetime never grows), 9 (scope never widens) and 10 (targets allow-listed).
#[tokio::test]
async fn section5_lifetime_scope_and_targets() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let alice = issuer.user_claims("alice", "bff", "orders:read profile");
    let alice_bff = issuer.sign(alice.clone());
    let subject = |changes: Value| issuer.sign(patch(&alice, changes));
    let bff_actor_claims = issuer.actor_claims("bff");
    let actor = |changes: Value| issuer.sign(patch(&bff_actor_claims, changes));
    let bff_actor = actor(json!({}));
    let lifetime = "policy/lifetime_exhausted";

    let rows = vec![
        // Rule 8: exp = min(now + ttl, subject exp, actor exp).
        row("ok_ttl_bounds_exp", BFF, del(&alice_bff, &bff_actor))
            .granted(json!({ "iat": NOW, "exp": NOW + 300 })),
        row(
            "ok_subject_exp_bounds_exp",
            BFF,
            del(&subject(json!({ "exp": NOW + 100 })), &bff_actor),
        )
        .granted(json!({ "exp": NOW + 100 })),
        row(
            "ok_actor_exp_bounds_exp",
            BFF,
            del(
                &subject(json!({ "exp": NOW + 100 })),
                &actor(json!({ "exp": NOW + 50 })),
            ),
        )
        .granted(json!({ "exp": NOW + 50 })),
        row(
            "ok_subject_exp_bounds_impersonation",
            BFF,
            imp(&subject(json!({ "exp": NOW + 1 }))),
        )
        .granted(json!({ "exp": NOW + 1 })),
        row(
            "subject_expired_within_leeway",
            BFF,
            del(&subject(json!({ "exp": NOW - 10 })), &bff_actor),
        )
        .refused(400, "invalid_request", lifetime),
        row(
            "subject_expires_now",
            BFF,
            imp(&subject(json!({ "exp": NOW }))),
        )
        .refused(400, "invalid_request", lifetime),
        row(
            "actor_expired_within_leeway",
            BFF,
            del(&alice_bff, &actor(json!({ "exp": NOW - 10 }))),
        )
        .refused(400, "invalid_request", lifetime),
        // Rule 9: granted = requested ∩ subject scope ∩ ceiling (orders:read, orders:write).
        row(
            "ok_scope_within_subject_and_ceiling",
            BFF,
            imp(&alice_bff).with("scope", "orders:read"),
        )
        .granted(json!({ "scope": "orders:read" })),
        row(
            "ok_no_scope_is_the_intersection",
            BFF,
            imp(&subject(
                json!({ "scope": "orders:read orders:write profile" }),
            )),
        )
        .granted(json!({ "scope": "orders:read orders:write" })),
        row(
            "scope_not_in_subject",
            BFF,
            imp(&alice_bff).with("scope", "orders:write"),
        )
        .refused(400, "invalid_scope", "policy/scope_not_granted"),
        row(
            "scope_in_subject_not_in_ceiling",
            BFF,
            imp(&alice_bff).with("scope", "profile"),
        )
        .refused(400, "invalid_scope", "policy/scope_not_granted"),
        row(
            "one_of_two_scopes_outside",
            BFF,
            imp(&alice_bff).with("scope", "orders:read profile"),
        )
        .refused(400, "invalid_scope", "policy/scope_not_granted"),
        row(
            "scope_requested_subject_has_none",
            BFF,
            imp(&subject(json!({ "scope": null }))).with("scope", "orders:read"),
        )
        .refused(400, "invalid_scope", "policy/scope_not_granted"),
        row(
            "scope_with_quote",
            BFF,
            imp(&alice_bff).with("scope", "orders:read \"x"),
        )
        .refused(400, "invalid_scope", "request/malformed_scope"),
        row(
            "scope_with_backslash",
            BFF,
            imp(&alice_bff).with("scope", "orders\\read"),
        )
        .refused(400, "invalid_scope", "request/malformed_scope"),
        row(
            "scope_not_ascii",
            BFF,
            imp(&alice_bff).with("scope", "ordérs:read"),
        )
        .refused(400, "invalid_scope", "request/malformed_scope"),
        // Rule 10: each audience/resource allowed for this client; one unless allowed more.
        row(
            "ok_allowed_audience",
            BFF,
            imp(&alice_bff).with("audience", "inventory-api"),
        )
        .granted(json!({ "aud": "inventory-api" })),
        row(
            "audience_not_allowed",
            BFF,
            imp(&alice_bff).with("audience", "payments-api"),
        )
        .refused(400, "invalid_target", "policy/target_not_allowed"),
        row(
            "audience_allowed_only_as_resource",
            BFF,
            imp(&alice_bff).with("audience", "https://orders.example/api"),
        )
        .refused(400, "invalid_target", "policy/target_not_allowed"),
        row(
            "ok_allowed_resource",
            BFF,
            imp(&alice_bff).with("resource", "https://orders.example/api"),
        )
        .granted(json!({ "aud": "https://orders.example/api" })),
        row(
            "resource_not_allowed",
            BFF,
            imp(&alice_bff).with("resource", "https://evil.example/api"),
        )
        .refused(400, "invalid_target", "policy/target_not_allowed"),
        row(
            "resource_relative",
            BFF,
            imp(&alice_bff).with("resource", "orders/api"),
        )
        .refused(400, "invalid_target", "request/invalid_resource"),
        row(
            "resource_with_fragment",
            BFF,
            imp(&alice_bff).with("resource", "https://orders.example/api#x"),
        )
        .refused(400, "invalid_target", "request/invalid_resource"),
        row(
            "two_audiences_one_allowed_per_token",
            BFF,
            imp(&alice_bff)
                .with("audience", "orders-api")
                .with("audience", "inventory-api"),
        )
        .refused(400, "invalid_target", "policy/too_many_targets"),
        row(
            "audience_and_resource_one_allowed_per_token",
            BFF,
            imp(&alice_bff)
                .with("audience", "orders-api")
                .with("resource", "https://orders.example/api"),
        )
        .refused(400, "invalid_target", "policy/too_many_targets"),
        row(
            "no_target_and_no_default_audience",
            IMPERSONATOR,
            imp(&subject(json!({ "aud": "impersonator" }))),
        )
        .refused(400, "invalid_request", "policy/no_target"),
        row(
            "ok_target_given_without_default_audience",
            IMPERSONATOR,
            imp(&subject(json!({ "aud": "impersonator" }))).with("audience", "orders-api"),
        )
        .granted(json!({ "aud": "orders-api", "client_id": "impersonator" })),
    ];
    run("§5 rules 8-10", &sts, rows).await;
}

/// Rule 11: token types, requested and presented.
#[tokio::test]
async fn section5_token_types() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    // This issuer's tokens may be presented as access tokens or as plain JWTs.
    let sts = Sts::builder()
        .issuer("corp", &issuer, "token_types = [\"access_token\", \"jwt\"]")
        .start()
        .await;
    let alice = issuer.user_claims("alice", "bff", "orders:read");
    let alice_bff = issuer.sign(alice.clone());
    let typed = |typ: Value| {
        issuer.sign_with(
            Alg::Es256,
            json!({ "alg": "ES256", "kid": "es-1", "typ": typ }),
            alice.clone(),
        )
    };
    let untyped = issuer.sign_with(
        Alg::Es256,
        json!({ "alg": "ES256", "kid": "es-1" }),
        alice.clone(),
    );
    let bff_actor = issuer.actor_token("bff");
    let unsupported_requested = "request/unsupported_requested_type";
    let unsupported_type = "request/unsupported_token_type";

    let rows = vec![
        row(
            "ok_requested_access_token",
            BFF,
            imp(&alice_bff).with("requested_token_type", AT),
        )
        .granted(json!({ "sub": "alice" })),
        row(
            "ok_requested_jwt",
            BFF,
            imp(&alice_bff).with("requested_token_type", JWT),
        )
        .granted(json!({ "sub": "alice" })),
        row(
            "requested_refresh_token",
            BFF,
            imp(&alice_bff).with("requested_token_type", REFRESH_TOKEN),
        )
        .refused(400, "invalid_request", unsupported_requested),
        row(
            "requested_id_token",
            BFF,
            imp(&alice_bff).with("requested_token_type", ID_TOKEN),
        )
        .refused(400, "invalid_request", unsupported_requested),
        row(
            "requested_saml2",
            BFF,
            imp(&alice_bff).with("requested_token_type", SAML2),
        )
        .refused(400, "invalid_request", unsupported_requested),
        row(
            "requested_unknown_urn",
            BFF,
            imp(&alice_bff).with("requested_token_type", "urn:example:token-type:magic"),
        )
        .refused(400, "invalid_request", unsupported_requested),
        row(
            "subject_type_refresh_token",
            BFF,
            imp(&alice_bff).set("subject_token_type", REFRESH_TOKEN),
        )
        .refused(400, "invalid_request", unsupported_type),
        row(
            "subject_type_saml2",
            BFF,
            imp(&alice_bff).set("subject_token_type", SAML2),
        )
        .refused(400, "invalid_request", unsupported_type),
        row(
            "subject_type_saml1",
            BFF,
            imp(&alice_bff).set("subject_token_type", SAML1),
        )
        .refused(400, "invalid_request", unsupported_type),
        row(
            "subject_type_short_name",
            BFF,
            imp(&alice_bff).set("subject_token_type", "access_token"),
        )
        .refused(400, "invalid_request", unsupported_type),
        row(
            "actor_type_refresh_token",
            BFF,
            del(&alice_bff, &bff_actor).set("actor_token_type", REFRESH_TOKEN),
        )
        .refused(400, "invalid_request", unsupported_type),
        // What the request declares must match what the token is.
        row(
            "access_token_declared_typ_jwt",
            BFF,
            imp(&typed(json!("JWT"))),
        )
        .refused(400, "invalid_request", "subject_token/typ_mismatch"),
        row(
            "ok_jwt_declared_typ_jwt",
            BFF,
            imp(&typed(json!("JWT"))).set("subject_token_type", JWT),
        )
        .granted(json!({ "sub": "alice" })),
        row("access_token_declared_no_typ", BFF, imp(&untyped)).refused(
            400,
            "invalid_request",
            "subject_token/typ_mismatch",
        ),
        row(
            "ok_jwt_declared_no_typ",
            BFF,
            imp(&untyped).set("subject_token_type", JWT),
        )
        .granted(json!({ "sub": "alice" })),
        row(
            "ok_access_token_media_type_typ",
            BFF,
            imp(&typed(json!("application/at+jwt"))),
        )
        .granted(json!({ "sub": "alice" })),
        row(
            "access_token_declared_typ_id_token_like",
            BFF,
            imp(&typed(json!("logout+jwt"))),
        )
        .refused(400, "invalid_request", "subject_token/typ_mismatch"),
        row(
            "id_token_not_accepted_from_issuer",
            BFF,
            imp(&untyped).set("subject_token_type", ID_TOKEN),
        )
        .refused(
            400,
            "invalid_request",
            "subject_token/token_type_not_accepted",
        ),
        row(
            "id_token_not_accepted_from_issuer_and_forged",
            BFF,
            imp(&tamper_signature(&untyped)).set("subject_token_type", ID_TOKEN),
        )
        .refused(400, "invalid_request", "subject_token/bad_signature"),
        row(
            "actor_access_token_declared_typ_jwt",
            BFF,
            del(
                &alice_bff,
                &issuer.sign_with(
                    Alg::Es256,
                    json!({ "alg": "ES256", "kid": "es-1", "typ": "JWT" }),
                    issuer.actor_claims("bff"),
                ),
            ),
        )
        .refused(400, "invalid_request", "actor_token/typ_mismatch"),
    ];
    run("§5 rule 11", &sts, rows).await;

    // An issuer left at the default accepts access tokens only.
    let default_sts = Sts::start(&issuer).await;
    let rows = vec![
        row(
            "jwt_not_accepted_from_default_issuer",
            BFF,
            imp(&typed(json!("JWT"))).set("subject_token_type", JWT),
        )
        .refused(
            400,
            "invalid_request",
            "subject_token/token_type_not_accepted",
        ),
        row("ok_access_token_from_default_issuer", BFF, imp(&alice_bff))
            .granted(json!({ "sub": "alice" })),
    ];
    run("§5 rule 11 (default token types)", &default_sts, rows).await;
}

// ---- policy modes --------------------------------------------------------------------------

#[tokio::test]
async fn policy_modes() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let to = |aud: &str| issuer.user_token("alice", aud, "orders:read");
    let not_enabled = "policy/client_not_enabled";

    let rows = vec![
        row("client_without_policy", NO_POLICY, imp(&to("no-policy"))).refused(
            400,
            "unauthorized_client",
            not_enabled,
        ),
        row(
            "client_without_policy_delegating",
            NO_POLICY,
            del(&to("no-policy"), &issuer.actor_token("no-policy")),
        )
        .refused(400, "unauthorized_client", not_enabled),
        row("disabled_client", DISABLED, imp(&to("disabled"))).refused(
            400,
            "unauthorized_client",
            not_enabled,
        ),
        row(
            "impersonation_by_delegate_only_client",
            ORDERS,
            imp(&to("orders-api")),
        )
        .refused(
            400,
            "unauthorized_client",
            "policy/impersonation_not_allowed",
        ),
        row(
            "ok_delegation_by_delegate_only_client",
            ORDERS,
            del(&to("orders-api"), &issuer.actor_token("orders-api")),
        )
        .granted(json!({ "client_id": "orders-api", "act": { "sub": "orders-api" } })),
        row(
            "delegation_by_impersonate_only_client",
            IMPERSONATOR,
            del(&to("impersonator"), &issuer.actor_token("impersonator"))
                .with("audience", "orders-api"),
        )
        .refused(400, "unauthorized_client", "policy/delegation_not_allowed"),
        row(
            "ok_impersonation_by_impersonate_only_client",
            IMPERSONATOR,
            imp(&to("impersonator")).with("audience", "orders-api"),
        )
        .granted(json!({ "client_id": "impersonator", "act": null })),
    ];
    run("policy modes", &sts, rows).await;
}

/// Which issuers each client accepts for subject and actor tokens, with a second trusted
/// issuer ("partner") and the STS itself ("self").
#[tokio::test]
async fn policy_issuers_per_client() {
    support::audit::capture();
    let corp = TestIssuer::start().await;
    let partner = TestIssuer::start().await;
    let policy = r#"
[clients.bff]
impersonate = true
delegate = true
subject_issuers = ["corp"]
actor_issuers = ["corp"]
audiences = ["orders-api"]
default_audience = "orders-api"
scopes = ["orders:read"]

[clients.mallory]
impersonate = true
delegate = true
subject_issuers = ["corp", "partner", "self"]
subject_namespace = "issuer_claim"
actor_issuers = ["partner"]
audiences = ["orders-api"]
default_audience = "orders-api"
scopes = ["orders:read"]
"#;
    let sts = Sts::builder()
        .issuer("corp", &corp, "")
        .issuer("partner", &partner, "")
        .policy(policy)
        .start()
        .await;
    // A token the STS itself issued (to mallory, for orders-api), naming bff as a party.
    let ours = {
        let subject = corp.user_token("alice", "mallory", "orders:read");
        let answer = sts.exchange(MALLORY, &impersonation(&subject)).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.token().to_owned()
    };
    // Refused before any key work (the policy would refuse them too, later).
    let not_accepted = "subject_token/issuer_not_accepted";
    let actor_not_accepted = "actor_token/issuer_not_accepted";

    let rows = vec![
        row(
            "ok_subject_from_accepted_issuer",
            BFF,
            imp(&corp.user_token("alice", "bff", "orders:read")),
        )
        .granted(json!({ "sub": "alice" })),
        row(
            "subject_from_trusted_issuer_not_accepted_for_client",
            BFF,
            imp(&partner.user_token("alice", "bff", "orders:read")),
        )
        .refused(400, "invalid_request", not_accepted),
        row(
            "ok_same_partner_subject_for_a_client_accepting_it",
            MALLORY,
            imp(&partner.user_token("alice", "mallory", "orders:read")),
        )
        .granted(json!({ "sub": "alice" })),
        row("subject_from_self_not_accepted_for_client", BFF, imp(&ours)).refused(
            400,
            "invalid_request",
            "policy/subject_issuer_not_accepted", // our own tokens skip the early check
        ),
        row(
            "ok_actor_from_accepted_issuer",
            BFF,
            del(
                &corp.user_token("alice", "bff", "orders:read"),
                &corp.actor_token("bff"),
            ),
        )
        .granted(json!({ "act": { "sub": "bff" } })),
        row(
            "actor_from_trusted_issuer_not_accepted_for_client",
            BFF,
            del(
                &corp.user_token("alice", "bff", "orders:read"),
                &partner.actor_token("bff"),
            ),
        )
        .refused(400, "invalid_request", actor_not_accepted),
        row(
            "actor_issuers_are_separate_from_subject_issuers",
            MALLORY,
            del(
                &corp.user_token("alice", "mallory", "orders:read"),
                &corp.actor_token("mallory"),
            ),
        )
        .refused(400, "invalid_request", actor_not_accepted),
        row(
            "ok_actor_from_the_actor_issuer",
            MALLORY,
            del(
                &corp.user_token("alice", "mallory", "orders:read"),
                &partner.actor_token("mallory"),
            ),
        )
        .granted(json!({ "act": { "sub": "mallory" } })),
    ];
    run("policy issuers", &sts, rows).await;
}

// ---- §7 errors ---------------------------------------------------------------------------

/// Upstream keys unavailable and nothing cached: 503 `temporarily_unavailable` with
/// `Retry-After`, for subject and actor tokens alike; other issuers keep working; readiness
/// reports the required issuer missing.
#[tokio::test]
async fn section7_unavailable_upstream_keys_are_503() {
    support::audit::capture();
    let corp = TestIssuer::start().await;
    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let down_iss = format!("http://127.0.0.1:{closed}");
    let down_jwks = format!("{down_iss}/jwks.json");
    let policy = DEFAULT_POLICY.replacen(
        "subject_issuers = [\"corp\"]\nactor_issuers = [\"corp\"]",
        "subject_issuers = [\"corp\", \"down\"]\nsubject_namespace = \"issuer_claim\"\nactor_issuers = [\"corp\", \"down\"]",
        1,
    );
    assert!(policy.contains("\"down\""));
    // Tokens "from" the down issuer; signed by corp's key, which is never reached.
    let from_down = |claims: Value| corp.sign(patch(&claims, json!({ "iss": down_iss })));
    let subject = corp.user_token("alice", "bff", "orders:read");
    let actor = corp.actor_token("bff");
    let down_subject = from_down(corp.user_claims("alice", "bff", "orders:read"));
    let down_actor = from_down(corp.actor_claims("bff"));
    let rows = || {
        vec![
            row("ok_other_issuer_unaffected", BFF, del(&subject, &actor))
                .granted(json!({ "sub": "alice" })),
            row("subject_issuer_keys_unavailable", BFF, imp(&down_subject)).refused(
                503,
                "temporarily_unavailable",
                "subject_token/keys_unavailable",
            ),
            row(
                "actor_issuer_keys_unavailable",
                BFF,
                del(&subject, &down_actor),
            )
            .refused(
                503,
                "temporarily_unavailable",
                "actor_token/keys_unavailable",
            ),
        ]
    };

    for (required, ready) in [("", 503), ("required = false", 200)] {
        let sts = Sts::builder()
            .issuer("corp", &corp, "")
            .issuer_at("down", &down_iss, &down_jwks, required)
            .policy(&policy)
            .start()
            .await;
        let table = format!(
            "§7 503 ({})",
            if required.is_empty() {
                "required"
            } else {
                required
            }
        );
        run(&table, &sts, rows()).await;
        // corp's keys are in (the exchange above succeeded): readiness hangs on "down" only.
        let status = sts
            .http
            .get(format!("{}/readyz", sts.admin))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), ready, "{table}: /readyz");
        let answer = sts.exchange(BFF, &impersonation(&down_subject)).await;
        assert_eq!(
            answer.headers["retry-after"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .map(|s| s > 0),
            Ok(true),
            "{table}: Retry-After is a positive number of seconds"
        );
    }
}

/// §7 "never a 500 for bad input": hostile values in every parameter and claim end in a
/// 4xx naming the check.
#[tokio::test]
async fn section7_bad_input_is_never_a_500() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let claims = issuer.user_claims("alice", "bff", "orders:read");
    let header = json!({ "alg": "ES256", "kid": "es-1", "typ": "at+jwt" });
    let valid = issuer.sign(claims.clone());
    let raw_claims = |text: &str| issuer.sign_raw(Alg::Es256, &header.to_string(), text);
    let raw_header = |text: &str| issuer.sign_raw(Alg::Es256, text, &claims.to_string());
    let with_claims = |changes: Value| issuer.sign(patch(&claims, changes));
    let huge_kid = "k".repeat(8000);

    let rows = vec![
        row("only_dots", BFF, imp("..")).refused(
            400,
            "invalid_request",
            "subject_token/malformed_header",
        ),
        row("non_ascii_token", BFF, imp("é.ü.ß")).refused(
            400,
            "invalid_request",
            "subject_token/not_compact_jws",
        ),
        row("header_null", BFF, imp(&raw_header("null"))).refused(
            400,
            "invalid_request",
            "subject_token/malformed_header",
        ),
        row("header_array", BFF, imp(&raw_header("[]"))).refused(
            400,
            "invalid_request",
            "subject_token/malformed_header",
        ),
        row("claims_null", BFF, imp(&raw_claims("null"))).refused(
            400,
            "invalid_request",
            "subject_token/malformed_claims",
        ),
        row("claims_empty", BFF, imp(&raw_claims(""))).refused(
            400,
            "invalid_request",
            "subject_token/malformed_claims",
        ),
        row("claims_not_utf8", BFF, {
            let input = format!("{}.{}", b64_json(&header), b64(&[0xff, 0xfe, 0x7b]));
            let sig = issuer.signature(Alg::Es256, input.as_bytes());
            imp(&format!("{input}.{}", b64(&sig)))
        })
        .refused(400, "invalid_request", "subject_token/malformed_claims"),
        row(
            "exp_number_out_of_range",
            BFF,
            imp(&raw_claims(&format!(
                r#"{{"iss":"{}","sub":"alice","aud":"bff","exp":1e400}}"#,
                issuer.iss
            ))),
        )
        .refused(400, "invalid_request", "subject_token/invalid_claim"),
        row(
            "exp_null",
            BFF,
            imp(&raw_claims(&format!(
                r#"{{"iss":"{}","sub":"alice","aud":"bff","exp":null}}"#,
                issuer.iss
            ))),
        )
        .refused(400, "invalid_request", "subject_token/invalid_claim"),
        row(
            "huge_kid",
            BFF,
            imp(&issuer.sign_with(
                Alg::Es256,
                patch(&header, json!({ "kid": huge_kid })),
                claims.clone(),
            )),
        )
        .refused(400, "invalid_request", "subject_token/unknown_kid"),
        row(
            "act_nested_beyond_any_depth",
            BFF,
            imp(&with_claims(json!({ "act": chain(&["a"; 20]) }))),
        )
        .refused(400, "invalid_request", "subject_token/invalid_claim"),
        row(
            "audience_with_control_characters",
            BFF,
            imp(&valid).with("audience", "orders-api\r\nx: y"),
        )
        .refused(400, "invalid_target", "policy/target_not_allowed"),
        row(
            "resource_unparseable",
            BFF,
            imp(&valid).with("resource", "https://[::1"),
        )
        .refused(400, "invalid_target", "request/invalid_resource"),
        row("subject_token_with_nul", BFF, imp(&format!("{valid}\u{0}"))).refused(
            400,
            "invalid_request",
            "subject_token/not_compact_jws",
        ),
    ];
    run("§7 bad input", &sts, rows).await;
}

/// RFC 7515 §4 and RFC 7519 §7.2: the JOSE header and the claims set are JSON objects,
/// and so are `act` and `may_act` (RFC 8693 §4.1, §4.4). A JSON array must not be read
/// positionally into their fields.
#[tokio::test]
async fn section4_header_and_claims_must_be_json_objects() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let claims = issuer.user_claims("alice", "bff", "orders:read");
    let header = json!({ "alg": "ES256", "kid": "es-1", "typ": "at+jwt" });
    let array_header = issuer.sign_raw(
        Alg::Es256,
        r#"["ES256","es-1","at+jwt"]"#,
        &claims.to_string(),
    );
    // iss, sub, aud, exp, nbf, iat, jti, scope, client_id, azp, act, may_act, in order.
    let array_claims = issuer.sign_raw(
        Alg::Es256,
        &header.to_string(),
        &format!(
            r#"["{}","alice","bff",{},null,null,null,"orders:read",null,null,null,null]"#,
            issuer.iss,
            NOW + 600
        ),
    );
    let rows = vec![
        row(
            "ok_object_header_and_claims",
            BFF,
            imp(&issuer.sign(claims.clone())),
        )
        .granted(json!({ "sub": "alice" })),
        row("header_a_json_array", BFF, imp(&array_header)).refused(
            400,
            "invalid_request",
            "subject_token/malformed_header",
        ),
        row("claims_a_json_array", BFF, imp(&array_claims)).refused(
            400,
            "invalid_request",
            "subject_token/malformed_claims",
        ),
        // The same for the members that must be objects (RFC 8693 §4.1, §4.4).
        row(
            "act_a_json_array",
            BFF,
            imp(&issuer.sign(patch(&claims, json!({ "act": ["gateway"] })))),
        )
        .refused(400, "invalid_request", "subject_token/invalid_claim"),
        row(
            "may_act_a_json_array",
            BFF,
            imp(&issuer.sign(patch(
                &claims,
                json!({ "aud": "elsewhere", "may_act": ["bff"] }),
            ))),
        )
        .refused(400, "invalid_request", "subject_token/invalid_claim"),
    ];
    run("§4 JSON objects", &sts, rows).await;
}

/// Keycloak-shaped tokens (Keycloak 26: header `typ` `JWT` for every kind, told apart by
/// the claim `typ`: `Bearer`, `ID`, `Refresh`, `Logout`) from an issuer configured with
/// `token_types = ["jwt", "id_token"]`. An ID or refresh token must not pass as a `jwt`,
/// an access token not as an `id_token`.
#[tokio::test]
async fn section4_typ_claim_keeps_token_kinds_apart() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "token_types = [\"jwt\", \"id_token\"]")
        .start()
        .await;
    let header = json!({ "alg": "RS256", "kid": "rs-1", "typ": "JWT" });
    let claims = patch(
        &issuer.user_claims("alice", "bff", "orders:read"),
        json!({ "azp": "bff" }),
    );
    let kind = |typ: Value| {
        issuer.sign_with(
            Alg::Rs256,
            header.clone(),
            patch(&claims, json!({ "typ": typ })),
        )
    };
    let as_type = |token: &str, urn: &str| imp(token).set("subject_token_type", urn);
    // Claims with members replaced, removed (Value::Null via patch) or, for may_act_null,
    // set to JSON null explicitly after patching.
    let kind_with = |changes: Value| {
        let mut c = patch(&claims, changes.clone());
        if changes.get("may_act").is_some_and(Value::is_null) {
            c["may_act"] = Value::Null;
        }
        issuer.sign_with(Alg::Rs256, header.clone(), c)
    };
    let rows = vec![
        row(
            "ok_access_token_as_jwt",
            BFF,
            as_type(&kind(json!("Bearer")), JWT),
        )
        .granted(json!({ "sub": "alice" })),
        row(
            "ok_no_typ_claim_as_jwt",
            BFF,
            as_type(&kind(Value::Null), JWT),
        )
        .granted(json!({ "sub": "alice" })),
        row(
            "ok_id_token_as_id_token",
            BFF,
            as_type(&kind(json!("ID")), ID_TOKEN),
        )
        .granted(json!({ "sub": "alice" })),
        row("id_token_as_jwt", BFF, as_type(&kind(json!("ID")), JWT)).refused(
            400,
            "invalid_request",
            "subject_token/typ_mismatch",
        ),
        row(
            "refresh_token_as_jwt",
            BFF,
            as_type(&kind(json!("Refresh")), JWT),
        )
        .refused(400, "invalid_request", "subject_token/typ_mismatch"),
        row(
            "offline_token_as_jwt",
            BFF,
            as_type(&kind(json!("Offline")), JWT),
        )
        .refused(400, "invalid_request", "subject_token/typ_mismatch"),
        row(
            "logout_token_as_id_token",
            BFF,
            as_type(&kind(json!("Logout")), ID_TOKEN),
        )
        .refused(400, "invalid_request", "subject_token/typ_mismatch"),
        row(
            "access_token_as_id_token",
            BFF,
            as_type(&kind(json!("Bearer")), ID_TOKEN),
        )
        .refused(400, "invalid_request", "subject_token/typ_mismatch"),
        row(
            "typ_claim_not_a_string",
            BFF,
            as_type(&kind(json!(["Bearer"])), JWT),
        )
        .refused(400, "invalid_request", "subject_token/invalid_claim"),
        // ID tokens of any OpenID provider carry at_hash/c_hash; access tokens never do.
        row(
            "oidc_id_token_with_at_hash_as_jwt",
            BFF,
            as_type(
                &kind_with(json!({ "typ": null, "nonce": "n", "at_hash": "x" })),
                JWT,
            ),
        )
        .refused(400, "invalid_request", "subject_token/typ_mismatch"),
        row(
            "oidc_id_token_with_c_hash_as_jwt",
            BFF,
            as_type(&kind_with(json!({ "typ": null, "c_hash": "x" })), JWT),
        )
        .refused(400, "invalid_request", "subject_token/typ_mismatch"),
        row(
            "ok_oidc_id_token_with_at_hash_as_id_token",
            BFF,
            as_type(&kind_with(json!({ "typ": null, "at_hash": "x" })), ID_TOKEN),
        )
        .granted(json!({ "sub": "alice" })),
        // A claim sent as null is refused, not taken as absent.
        row(
            "may_act_null",
            BFF,
            as_type(
                &kind_with(json!({ "typ": "Bearer", "may_act": Value::Null })),
                JWT,
            ),
        )
        .refused(400, "invalid_request", "subject_token/invalid_claim"),
    ];
    run("§4 typ claim", &sts, rows).await;
}

/// Rules 1-3 against gleipnir's own tokens. A token gleipnir issued names
/// its subject and, in `client_id`, the client that asked for it; if it were accepted as an
/// actor token, a client could launder any token it was handed into "that party acts":
/// first impersonate (bob's token, sent to mallory, comes back with client_id = mallory),
/// then present the result as its actor token. Refused in code, whatever the policy says
/// (a policy cannot even name "self" as an actor issuer; see tests/cli.rs).
#[tokio::test]
async fn section5_self_issued_tokens_never_act() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    // No actor_issuers: the default is the subject issuers, and "self" is never inherited.
    let policy = r#"
[clients.mallory]
impersonate = true
delegate = true
subject_issuers = ["corp", "self"]
subject_namespace = "issuer_claim"
audiences = ["orders-api"]
default_audience = "orders-api"
scopes = ["orders:read"]
"#;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .policy(policy)
        .start()
        .await;
    let launder = |token: String| {
        let sts = &sts;
        async move {
            let answer = sts.exchange(MALLORY, &impersonation(&token)).await;
            assert_eq!(answer.status, 200, "laundering step: {}", answer.body);
            assert_eq!(answer.claims()["client_id"], "mallory");
            answer.token().to_owned()
        }
    };
    // bob's own token, sent to mallory's API, and orders-api's service token likewise.
    let bob_as_actor = launder(issuer.user_token("bob", "mallory", "orders:read")).await;
    let orders_as_actor = launder(issuer.sign(patch(
        &issuer.actor_claims("orders-api"),
        json!({ "aud": "mallory" }),
    )))
    .await;
    // alice's token for mallory, and alice's token meant for orders-api only.
    let alice = issuer.user_token("alice", "mallory", "orders:read");
    let alice_for_orders = issuer.sign(patch(
        &issuer.user_claims("alice", "orders-api", "orders:read"),
        json!({ "may_act": { "sub": "orders-api" } }),
    ));
    let self_issued = "policy/actor_token_self_issued";
    let rows = vec![
        row(
            "ok_mallory_own_actor_token",
            MALLORY,
            del(&alice, &issuer.actor_token("mallory")),
        )
        .granted(json!({ "sub": "alice", "act": { "sub": "mallory" } })),
        row(
            "bob_laundered_into_actor",
            MALLORY,
            del(&alice, &bob_as_actor),
        )
        .refused(400, "invalid_request", self_issued),
        row(
            "orders_api_laundered_into_actor_for_may_act",
            MALLORY,
            del(&alice_for_orders, &orders_as_actor),
        )
        .refused(400, "invalid_request", self_issued),
        row(
            "own_delegated_token_as_actor",
            MALLORY,
            del(&alice, &launder(issuer.actor_token("mallory")).await),
        )
        .refused(400, "invalid_request", self_issued),
    ];
    run("§5 self-issued actor tokens", &sts, rows).await;
}

/// Identity is (`iss`, `sub`) end to end. A client accepting subjects of several issuers
/// must set `subject_namespace` (refused at load otherwise: tests/policy_fields.rs); with
/// `issuer_claim` the issued token names the subject's issuer in `sub_iss`, so `alice`
/// of corp and `alice` of partner stay two subjects, hop after hop. Only our own tokens'
/// `sub_iss` is read: an upstream cannot claim another issuer's subject.
#[tokio::test]
async fn section5_subjects_of_two_issuers_stay_apart() {
    support::audit::capture();
    let corp = TestIssuer::start().await;
    let partner = TestIssuer::start().await;
    let policy = r#"
[clients.mallory]
impersonate = true
subject_issuers = ["corp", "partner", "self"]
subject_namespace = "issuer_claim"
audiences = ["orders-api", "mallory"]
default_audience = "mallory"
scopes = ["orders:read"]

[clients.bff]
impersonate = true
subject_issuers = ["corp"]
audiences = ["mallory"]
default_audience = "mallory"
scopes = ["orders:read"]

[clients.orders-api]
impersonate = true
subject_issuers = ["self"]
audiences = ["payments-api"]
default_audience = "payments-api"
scopes = ["orders:read"]
"#;
    let sts = Sts::builder()
        .issuer("corp", &corp, "")
        .issuer("partner", &partner, "")
        .policy(policy)
        .start()
        .await;
    let issued = |client: Client, subject: String, audience: &'static str| {
        let sts = &sts;
        async move {
            let form = impersonation(&subject);
            let mut form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, *v)).collect();
            form.push(("audience", audience));
            let answer = sts.exchange(client, &form).await;
            assert_eq!(answer.status, 200, "first hop: {}", answer.body);
            answer.token().to_owned()
        }
    };
    let corp_alice = corp.user_token("alice", "mallory", "orders:read");
    let partner_alice = partner.user_token("alice", "mallory", "orders:read");
    // partner's alice, issued to mallory (sub_iss = partner), then to mallory for orders-api.
    let ours_partner = issued(MALLORY, partner_alice.clone(), "mallory").await;
    let ours_partner_for_orders = issued(MALLORY, partner_alice.clone(), "orders-api").await;
    // corp's alice, issued to the BFF's single-issuer rule: no sub_iss recorded.
    let ours_unrecorded = issued(
        BFF,
        corp.user_token("alice", "bff", "orders:read"),
        "mallory",
    )
    .await;
    let forged = corp.sign(patch(
        &corp.user_claims("alice", "mallory", "orders:read"),
        json!({ "sub_iss": partner.iss }),
    ));
    let odd_type = corp.sign(patch(
        &corp.user_claims("alice", "mallory", "orders:read"),
        json!({ "sub_iss": { "not": "a string" } }),
    ));
    let rows = vec![
        row("ok_corp_subject_names_corp", MALLORY, imp(&corp_alice))
            .granted(json!({ "sub": "alice", "sub_iss": corp.iss })),
        row(
            "ok_partner_subject_names_partner",
            MALLORY,
            imp(&partner_alice),
        )
        .granted(json!({ "sub": "alice", "sub_iss": partner.iss })),
        row(
            "ok_reexchange_carries_the_recorded_issuer",
            MALLORY,
            imp(&ours_partner),
        )
        .granted(json!({ "sub": "alice", "sub_iss": partner.iss })),
        row(
            "ok_single_issuer_rule_carries_it_too",
            ORDERS,
            imp(&ours_partner_for_orders),
        )
        .granted(json!({ "sub": "alice", "sub_iss": partner.iss, "client_id": "orders-api" })),
        row(
            "ok_single_issuer_rule_records_nothing",
            BFF,
            imp(&corp.user_token("alice", "bff", "orders:read")),
        )
        .granted(json!({ "sub": "alice", "sub_iss": null })),
        row(
            "ok_unrecorded_own_token_names_this_sts",
            MALLORY,
            imp(&ours_unrecorded),
        )
        .granted(json!({ "sub": "alice", "sub_iss": sts.base })),
        row("ok_upstream_sub_iss_is_not_read", MALLORY, imp(&forged))
            .granted(json!({ "sub": "alice", "sub_iss": corp.iss })),
        row("ok_upstream_sub_iss_of_any_type", MALLORY, imp(&odd_type))
            .granted(json!({ "sub": "alice", "sub_iss": corp.iss })),
    ];
    run("§5 identity is (iss, sub)", &sts, rows).await;
}

/// Rule 3 with a client acting without an actor token: where the client's identity names
/// its issuer (`[[clients]] actor_iss`), the acting party is (`actor_iss`, `actor_sub`), so
/// a `may_act` naming the client with that issuer matches; without it the client acts as
/// a party of ours (our `iss`), as before. Rule 1 binds actor tokens by that issuer too.
#[tokio::test]
async fn section5_client_identity_names_its_issuer() {
    support::audit::capture();
    let corp = TestIssuer::start().await;
    let partner = TestIssuer::start().await;
    let policy = r#"
[clients.impersonator]
impersonate = true
subject_issuers = ["corp"]
audiences = ["orders-api"]
default_audience = "orders-api"
scopes = ["orders:read"]

[clients.mallory]
impersonate = true
subject_issuers = ["corp"]
audiences = ["orders-api"]
default_audience = "orders-api"
scopes = ["orders:read"]

[clients.bff]
delegate = true
subject_issuers = ["corp"]
actor_issuers = ["corp", "partner"]
audiences = ["orders-api"]
default_audience = "orders-api"
scopes = ["orders:read"]
"#;
    let actor_iss = format!("actor_iss = {:?}", corp.iss);
    let sts = Sts::builder()
        .issuer("corp", &corp, "")
        .issuer("partner", &partner, "")
        .client("impersonator", &actor_iss)
        .client("bff", &actor_iss)
        .policy(policy)
        .start()
        .await;
    let for_client = |client: &str, may_act: Value| {
        corp.sign(patch(
            &corp.user_claims("alice", client, "orders:read"),
            json!({ "may_act": may_act }),
        ))
    };
    let mismatch = "policy/may_act_mismatch";
    let alice_bff = corp.user_token("alice", "bff", "orders:read");
    let rows = vec![
        row(
            "ok_may_act_names_the_client_as_its_idp_knows_it",
            IMPERSONATOR,
            imp(&for_client(
                "impersonator",
                json!({ "sub": "impersonator", "iss": corp.iss }),
            )),
        )
        .granted(json!({ "sub": "alice", "act": null })),
        row(
            "ok_may_act_without_iss",
            IMPERSONATOR,
            imp(&for_client(
                "impersonator",
                json!({ "sub": "impersonator" }),
            )),
        )
        .granted(json!({ "sub": "alice", "act": null })),
        row(
            "may_act_names_the_client_at_another_issuer",
            IMPERSONATOR,
            imp(&for_client(
                "impersonator",
                json!({ "sub": "impersonator", "iss": partner.iss }),
            )),
        )
        .refused(400, "invalid_request", mismatch),
        row(
            "may_act_names_the_sts_for_a_client_with_actor_iss",
            IMPERSONATOR,
            imp(&for_client(
                "impersonator",
                json!({ "sub": "impersonator", "iss": sts.base }),
            )),
        )
        .refused(400, "invalid_request", mismatch),
        // Without actor_iss: as before, the client is a party of ours.
        row(
            "may_act_with_the_idp_iss_for_a_client_without_actor_iss",
            MALLORY,
            imp(&for_client(
                "mallory",
                json!({ "sub": "mallory", "iss": corp.iss }),
            )),
        )
        .refused(400, "invalid_request", mismatch),
        row(
            "ok_may_act_with_our_iss_for_a_client_without_actor_iss",
            MALLORY,
            imp(&for_client(
                "mallory",
                json!({ "sub": "mallory", "iss": sts.base }),
            )),
        )
        .granted(json!({ "sub": "alice", "act": null })),
        // Rule 1: the client's actor tokens come from its actor_iss.
        row(
            "ok_actor_token_of_the_clients_issuer",
            BFF,
            del(&alice_bff, &corp.actor_token("bff")),
        )
        .granted(json!({ "act": { "sub": "bff" } })),
        row(
            "actor_token_of_the_clients_sub_at_another_issuer",
            BFF,
            del(&alice_bff, &partner.actor_token("bff")),
        )
        .refused(400, "invalid_request", "policy/actor_not_bound_to_client"),
    ];
    run("§5 client identity (actor_iss)", &sts, rows).await;
}

/// Rules §3: without credentials the answer is 401 `invalid_client`, whatever is
/// wrong with the rest of the request; the parameters are read only for an authenticated
/// client.
#[tokio::test]
async fn section3_authentication_comes_before_parameters() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let bad_requests: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("missing_subject_token", vec![("grant_type", GRANT)]),
        (
            "other_grant_type",
            vec![("grant_type", "client_credentials")],
        ),
        (
            "relative_resource",
            vec![("grant_type", GRANT), ("resource", "rel")],
        ),
        (
            "malformed_scope",
            vec![("grant_type", GRANT), ("scope", "a\"b")],
        ),
    ];
    for (name, form) in bad_requests {
        let request = sts
            .http
            .post(sts.token_url())
            .header("content-type", FORM_TYPE)
            .body(encode_form(&form));
        let answer = sts.post(request).await;
        assert_eq!(
            (answer.status, answer.error()),
            (401, "invalid_client"),
            "{name}: {}",
            answer.body
        );
        let request = sts
            .http
            .post(sts.token_url())
            .basic_auth(BFF.0, Some("wrong"))
            .header("content-type", FORM_TYPE)
            .body(encode_form(&form));
        let answer = sts.post(request).await;
        assert_eq!(
            (answer.status, answer.error()),
            (401, "invalid_client"),
            "{name} (wrong secret): {}",
            answer.body
        );
    }
}

/// Rules §4: the optional per-issuer maximum token age. With it, `iat` is
/// required and a token older than the bound (plus leeway) is refused whatever its `exp`.
#[tokio::test]
async fn section4_max_token_age() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        // Tokens living a day and a bit: the lifetime ceiling is not what this tests.
        .issuer(
            "corp",
            &issuer,
            "max_token_age_seconds = 600\nmax_token_lifetime_seconds = 172800",
        )
        .start()
        .await;
    let aged = |iat: Value| {
        let claims = patch(
            &issuer.user_claims("alice", "bff", "orders:read"),
            json!({ "iat": iat, "exp": NOW + 86_400 }),
        );
        imp(&issuer.sign(claims))
    };
    let rows = vec![
        row(
            "ok_exactly_max_age_plus_leeway",
            BFF,
            aged(json!(NOW - 630)),
        )
        .granted(json!({ "sub": "alice" })),
        row("ok_fresh", BFF, aged(json!(NOW))).granted(json!({ "sub": "alice" })),
        row("older_than_max_age", BFF, aged(json!(NOW - 631))).refused(
            400,
            "invalid_request",
            "subject_token/too_old",
        ),
        row("iat_missing", BFF, aged(Value::Null)).refused(
            400,
            "invalid_request",
            "subject_token/missing_claim",
        ),
    ];
    run("§4 max token age", &sts, rows).await;
}

/// The per-issuer ceiling on a token's lifetime (`max_token_lifetime_seconds`, a day by
/// default): `exp - iat`, or `exp - now` (with the leeway) when there is no `iat`. A
/// token an issuer minted for ten years is refused, however fresh.
#[tokio::test]
async fn section4_max_token_lifetime() {
    support::audit::capture();
    const DAY: u64 = 86_400;
    let issuer = TestIssuer::start().await;
    issuer.introspection.answer(
        "opaque-ten-years",
        json!({ "active": true, "iss": issuer.iss, "sub": "carol", "aud": "bff",
                "token_type": "Bearer", "iat": NOW, "exp": NOW + 3650 * DAY }),
    );
    let introspection = format!(
        "[issuers.introspection]\nendpoint = \"http://{}/introspect\"\nclient_id = \"{}\"\nsecret = {{ value = \"{}\" }}\n",
        issuer.addr, INTROSPECTION_CLIENT.0, INTROSPECTION_CLIENT.1
    );
    let sts = Sts::builder()
        .issuer("corp", &issuer, &introspection)
        .start()
        .await;
    let user = issuer.user_claims("alice", "bff", "orders:read");
    let lived =
        |iat: Value, exp: u64| imp(&issuer.sign(patch(&user, json!({ "iat": iat, "exp": exp }))));
    let subject = issuer.user_token("alice", "bff", "orders:read");
    let actor = |exp: u64| {
        let claims = patch(
            &issuer.actor_claims("bff"),
            json!({ "iat": NOW, "exp": exp }),
        );
        del(&subject, &issuer.sign(claims))
    };
    let too_long = "subject_token/lifetime_too_long";
    let rows = vec![
        row("ok_a_day", BFF, lived(json!(NOW), NOW + DAY)).granted(json!({ "sub": "alice" })),
        row("a_day_and_a_second", BFF, lived(json!(NOW), NOW + DAY + 1)).refused(
            400,
            "invalid_request",
            too_long,
        ),
        row("ten_years", BFF, lived(json!(NOW), NOW + 3650 * DAY)).refused(
            400,
            "invalid_request",
            too_long,
        ),
        // An old token that claims a long life is refused even close to its `exp`.
        row(
            "issued_a_day_ago_expiring_soon",
            BFF,
            lived(json!(NOW - DAY), NOW + 60),
        )
        .refused(400, "invalid_request", too_long),
        // Without `iat`: what is left of it, with the 30 s leeway for our clock.
        row(
            "ok_no_iat_a_day_left",
            BFF,
            lived(Value::Null, NOW + DAY + 30),
        )
        .granted(json!({ "sub": "alice" })),
        row(
            "no_iat_more_than_a_day_left",
            BFF,
            lived(Value::Null, NOW + DAY + 31),
        )
        .refused(400, "invalid_request", too_long),
        row(
            "no_iat_ten_years_left",
            BFF,
            lived(Value::Null, NOW + 3650 * DAY),
        )
        .refused(400, "invalid_request", too_long),
        row("actor_ten_years", BFF, actor(NOW + 3650 * DAY)).refused(
            400,
            "invalid_request",
            "actor_token/lifetime_too_long",
        ),
        row("ok_actor_a_day", BFF, actor(NOW + DAY)).granted(json!({ "act": { "sub": "bff" } })),
        row("introspected_ten_years", BFF, imp("opaque-ten-years")).refused(
            400,
            "invalid_request",
            too_long,
        ),
    ];
    run("§4 max token lifetime", &sts, rows).await;

    // The ceiling is per issuer.
    let year = format!("max_token_lifetime_seconds = {}", 365 * DAY);
    let lenient = Sts::builder().issuer("corp", &issuer, &year).start().await;
    let rows = vec![
        row("ok_a_year", BFF, lived(json!(NOW), NOW + 365 * DAY))
            .granted(json!({ "sub": "alice" })),
        row("ten_years_still", BFF, lived(json!(NOW), NOW + 3650 * DAY)).refused(
            400,
            "invalid_request",
            too_long,
        ),
    ];
    run("§4 max token lifetime (a year)", &lenient, rows).await;
}

/// Rules §4/§5: `aud` in every shape a confused issuer might send. Only a string
/// or an array of strings is a valid `aud`; `"*"` is a value like any other, never a
/// wildcard; an absent or empty `aud` binds nothing (the token must then name the client
/// by `client_id`/`azp` or `may_act`).
#[tokio::test]
async fn section4_audience_shapes() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let with_aud = |aud: Value| {
        let claims = patch(
            &issuer.user_claims("alice", "bff", "orders:read"),
            json!({ "aud": aud }),
        );
        imp(&issuer.sign(claims))
    };
    let unbound = "policy/subject_not_bound_to_client";
    let rows = vec![
        row("ok_aud_string", BFF, with_aud(json!("bff"))).granted(json!({ "sub": "alice" })),
        row(
            "ok_aud_array_naming_the_client",
            BFF,
            with_aud(json!(["other", "bff"])),
        )
        .granted(json!({ "sub": "alice" })),
        row("aud_missing", BFF, with_aud(Value::Null)).refused(400, "invalid_request", unbound),
        row("aud_empty_array", BFF, with_aud(json!([]))).refused(400, "invalid_request", unbound),
        row("aud_star", BFF, with_aud(json!("*"))).refused(400, "invalid_request", unbound),
        row("aud_star_in_array", BFF, with_aud(json!(["*"]))).refused(
            400,
            "invalid_request",
            unbound,
        ),
        row("aud_case_differs", BFF, with_aud(json!("BFF"))).refused(
            400,
            "invalid_request",
            unbound,
        ),
        row("aud_array_with_a_number", BFF, with_aud(json!(["bff", 1]))).refused(
            400,
            "invalid_request",
            "subject_token/invalid_claim",
        ),
        row("aud_object", BFF, with_aud(json!({ "bff": true }))).refused(
            400,
            "invalid_request",
            "subject_token/invalid_claim",
        ),
    ];
    run("§4 aud shapes", &sts, rows).await;
}

/// Tokens whose claims say they are not plain bearer access tokens: bound to a key
/// (`cnf`, RFC 7800) or carrying the markers of an ID token (`nonce`), declared otherwise.
#[tokio::test]
async fn section4_sender_constrained_and_disguised_id_tokens() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "token_types = [\"access_token\", \"jwt\"]")
        .start()
        .await;
    let claims = issuer.user_claims("alice", "bff", "orders:read");
    let jwt_header = json!({ "alg": "ES256", "kid": "es-1", "typ": "JWT" });
    let as_jwt = |token: &str| imp(token).set("subject_token_type", JWT);
    let rows = vec![
        row(
            "ok_plain_jwt",
            BFF,
            as_jwt(&issuer.sign_with(Alg::Es256, jwt_header.clone(), claims.clone())),
        )
        .granted(json!({ "sub": "alice" })),
        row(
            "dpop_bound_access_token",
            BFF,
            imp(&issuer.sign(patch(
                &claims,
                json!({ "cnf": { "jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I" } }),
            ))),
        )
        .refused(400, "invalid_request", "subject_token/sender_constrained"),
        row(
            "id_token_with_only_a_nonce_as_jwt",
            BFF,
            as_jwt(&issuer.sign_with(
                Alg::Es256,
                jwt_header,
                patch(
                    &claims,
                    json!({ "nonce": "n-0S6_WzA2Mj", "auth_time": NOW }),
                ),
            )),
        )
        .refused(400, "invalid_request", "subject_token/typ_mismatch"),
    ];
    run("§4 bound and disguised tokens", &sts, rows).await;
}
