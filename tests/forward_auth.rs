//! The forward-auth endpoint on the real server, called as the gateways call it (the
//! original request's headers, the proxy's own credentials in a header of their own):
//! grants, routes, the cache, and every refusal with its status, code header, challenge
//! and audit reason, never a token. The same endpoint behind a real nginx is
//! `tests/forward_auth_nginx.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use base64::Engine as _;
use support::*;

pub const SECTION: &str = r#"
[forward_auth]

[[forward_auth.routes]]
host = "orders.example"
path_prefix = "/orders"
audiences = ["orders-api"]
scope = "orders:read"

[[forward_auth.routes]]
host = "orders.example"
path_prefix = "/orders/admin"
audiences = ["inventory-api"]

[[forward_auth.routes]]
host = "*"
path_prefix = "/inventory"
audiences = ["inventory-api"]
"#;

fn basic(client: (&str, &str)) -> String {
    let pair = format!("{}:{}", client.0, client.1);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Calls `path` (with `GET`) with these headers.
async fn call(sts: &Sts, path: &str, headers: &[(&str, String)]) -> Answer {
    let mut request = sts.http.get(format!("{}{path}", sts.base));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    sts.post(request).await
}

/// What a gateway sends for `GET https://orders.example:8443<uri>` with `subject`.
fn gateway(subject: &str, uri: &str) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("Bearer {subject}")),
        ("x-gleipnir-client-authorization", basic(BFF)),
        ("x-forwarded-host", "orders.example:8443".into()),
        ("x-forwarded-uri", uri.into()),
    ]
}

fn injected(answer: &Answer) -> String {
    let value = answer.headers["authorization"].to_str().unwrap();
    value.strip_prefix("Bearer ").unwrap().to_owned()
}

#[tokio::test]
async fn a_granted_request_gets_a_token_for_its_route() {
    audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .extra(SECTION)
        .start()
        .await;
    let subject = issuer.user_token("alice", "bff", "orders:read orders:write");

    let answer = call(&sts, "/forward-auth", &gateway(&subject, "/orders/17?x=1")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.headers["cache-control"], "no-store");
    assert_eq!(answer.body, "", "the token travels in the header only");
    let token = injected(&answer);
    let claims = claims_of(&token);
    assert_eq!(claims["aud"], "orders-api");
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["client_id"], "bff");
    assert!(
        claims.get("act").is_none(),
        "the proxy acts as the client, no actor token"
    );
    let record = audit::record(answer.request_id().unwrap()).unwrap();
    assert_eq!(
        (record["decision"].as_str(), record["cached"].as_bool()),
        (Some("granted"), Some(false))
    );

    // Again: the same token, from the cache.
    let again = call(&sts, "/forward-auth", &gateway(&subject, "/orders/18")).await;
    assert_eq!(injected(&again), token);
    let record = audit::record(again.request_id().unwrap()).unwrap();
    assert_eq!(record["cached"], true);

    // The longest whole-segment prefix decides.
    let admin = call(&sts, "/forward-auth", &gateway(&subject, "/orders/admin/x")).await;
    assert_eq!(claims_of(&injected(&admin))["aud"], "inventory-api");

    // Envoy's shape: no forwarded headers; the original path follows the endpoint's
    // path and the host is the request's own. A `*` route takes any host.
    let envoy = [
        ("authorization", format!("Bearer {subject}")),
        ("x-gleipnir-client-authorization", basic(BFF)),
    ];
    let answer = call(&sts, "/forward-auth/inventory/5", &envoy).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(claims_of(&injected(&answer))["aud"], "inventory-api");
    assert_eq!(
        metric_value(
            &sts.admin,
            "gleipnir_forward_auth_requests_total{result=\"granted\"}"
        )
        .await,
        Some(4.0)
    );
}

#[tokio::test]
async fn refusals_say_why_in_a_header_and_never_carry_a_token() {
    audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::builder()
        .issuer("corp", &issuer, "")
        .extra(SECTION)
        .start()
        .await;
    let subject = issuer.user_token("alice", "bff", "orders:read");
    let mut expired = issuer.user_claims("alice", "bff", "orders:read");
    expired["exp"] = serde_json::json!(NOW - 100);
    let expired = issuer.sign(expired);
    let mut forged = subject.clone();
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    let foreign = issuer.user_token("alice", "other-app", "orders:read");
    let ok = || gateway(&subject, "/orders/1");
    let set = |mut headers: Vec<(&'static str, String)>, name: &'static str, value: &str| {
        headers.retain(|(n, _)| *n != name);
        headers.push((name, value.to_owned()));
        headers
    };
    let without = |mut headers: Vec<(&'static str, String)>, name: &str| {
        headers.retain(|(n, _)| *n != name);
        headers
    };
    let bearer_challenge = Some(r#"Bearer realm="gleipnir""#);
    let invalid_token = Some(r#"Bearer realm="gleipnir", error="invalid_token""#);
    let invalid_request = Some(r#"Bearer realm="gleipnir", error="invalid_request""#);
    // (what, headers, status, code header, challenge, audited stage/reason)
    type Row<'a> = (
        &'a str,
        Vec<(&'a str, String)>,
        u16,
        &'a str,
        Option<&'a str>,
        &'a str,
    );
    let rows: Vec<Row> = vec![
        (
            "no subject token",
            without(ok(), "authorization"),
            401,
            "invalid_request",
            bearer_challenge,
            "forward_auth/missing_subject_token",
        ),
        (
            "not a Bearer token",
            set(ok(), "authorization", "Basic YWxpY2U6cHc="),
            401,
            "invalid_request",
            invalid_request,
            "forward_auth/malformed_subject_header",
        ),
        (
            "a forged subject token",
            set(ok(), "authorization", &format!("Bearer {forged}")),
            401,
            "invalid_request",
            invalid_token,
            "subject_token/bad_signature",
        ),
        (
            "an expired subject token",
            set(ok(), "authorization", &format!("Bearer {expired}")),
            401,
            "invalid_request",
            invalid_token,
            "subject_token/expired",
        ),
        (
            "no proxy credentials",
            without(ok(), "x-gleipnir-client-authorization"),
            403,
            "invalid_client",
            None,
            "client_auth/missing_credentials",
        ),
        (
            "a wrong proxy secret",
            set(
                ok(),
                "x-gleipnir-client-authorization",
                &basic(("bff", "nope")),
            ),
            403,
            "invalid_client",
            None,
            "client_auth/wrong_secret",
        ),
        (
            "proxy credentials twice",
            {
                let mut h = ok();
                h.push(("x-gleipnir-client-authorization", basic(MALLORY)));
                h
            },
            403,
            "invalid_request",
            None,
            "client_auth/multiple_authorization_headers",
        ),
        (
            "no route for the path",
            set(ok(), "x-forwarded-uri", "/admin"),
            403,
            "invalid_target",
            None,
            "forward_auth/no_route",
        ),
        (
            "a prefix that is not a whole segment",
            set(ok(), "x-forwarded-uri", "/ordersx"),
            403,
            "invalid_target",
            None,
            "forward_auth/no_route",
        ),
        (
            "no route for the host",
            set(ok(), "x-forwarded-host", "evil.example"),
            403,
            "invalid_target",
            None,
            "forward_auth/no_route",
        ),
        (
            "dot segments",
            set(ok(), "x-forwarded-uri", "/public/../orders/1"),
            403,
            "invalid_request",
            None,
            "forward_auth/ambiguous_path",
        ),
        (
            "an encoded slash",
            set(ok(), "x-forwarded-uri", "/orders%2F..%2Fadmin"),
            403,
            "invalid_request",
            None,
            "forward_auth/ambiguous_path",
        ),
        (
            "a list of hosts",
            set(ok(), "x-forwarded-host", "orders.example, evil.example"),
            403,
            "invalid_request",
            None,
            "forward_auth/repeated_target_header",
        ),
        (
            "a subject token not issued to the proxy's client",
            set(ok(), "authorization", &format!("Bearer {foreign}")),
            403,
            "invalid_request",
            None,
            "policy/subject_not_bound_to_client",
        ),
        (
            "a client that may not exchange without an actor token",
            set(ok(), "x-gleipnir-client-authorization", &basic(ORDERS)),
            403,
            "unauthorized_client",
            None,
            "policy/impersonation_not_allowed",
        ),
    ];
    for (what, headers, status, code, challenge, reason) in rows {
        let answer = call(&sts, "/forward-auth", &headers).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        assert_eq!(answer.headers["x-gleipnir-error"], code, "{what}");
        assert_eq!(answer.error(), code, "{what}");
        assert_eq!(
            answer
                .headers
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            challenge,
            "{what}"
        );
        assert!(answer.headers.get("authorization").is_none(), "{what}");
        let everything = format!("{:?} {}", answer.headers, answer.body);
        assert!(
            !everything.contains("eyJ"),
            "{what}: no token: {everything}"
        );
        assert_eq!(
            audit::refusal(answer.request_id().unwrap()).as_deref(),
            Some(reason),
            "{what}"
        );
    }
}

#[tokio::test]
async fn the_endpoint_is_off_unless_configured() {
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let subject = issuer.user_token("alice", "bff", "orders:read");
    let answer = call(&sts, "/forward-auth", &gateway(&subject, "/orders/1")).await;
    assert_eq!(answer.status, 404);
}

#[test]
fn the_configuration_section_is_checked() {
    let route = "[[forward_auth.routes]]\nhost = \"a.example\"\naudiences = [\"orders-api\"]\n";
    for (text, field) in [
        ("[forward_auth]\n", "forward_auth.routes"),
        (
            &format!("[forward_auth]\npath = \"/token\"\n{route}"),
            "forward_auth.path",
        ),
        (
            &format!("[forward_auth]\nclient_auth_header = \"Authorization\"\n{route}"),
            "forward_auth.client_auth_header",
        ),
        (
            &format!("[forward_auth]\nresponse_header = \"bad header\"\n{route}"),
            "forward_auth.response_header",
        ),
        (
            "[forward_auth]\n[[forward_auth.routes]]\nhost = \"a.example:80\"\naudiences = [\"x\"]\n",
            "forward_auth.routes[0].host",
        ),
        (
            "[forward_auth]\n[[forward_auth.routes]]\nhost = \"a.example\"\n",
            "forward_auth.routes[0].audiences",
        ),
        (
            &format!("[forward_auth]\n{route}{route}"),
            "forward_auth.routes[1]",
        ),
        (
            "[forward_auth]\n[[forward_auth.routes]]\nhost = \"a.example\"\nresources = [\"relative\"]\n",
            "forward_auth.routes[0].resources",
        ),
    ] {
        let error = Sts::builder()
            .extra(text)
            .try_build_app("http://127.0.0.1:1")
            .err()
            .unwrap_or_else(|| panic!("accepted: {text}"));
        assert_eq!(error.field, field, "{text}: {error}");
    }
}
