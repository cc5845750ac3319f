//! The request id: a caller's well-formed `x-request-id` is kept, echoed and names the
//! audit record; a malformed or missing one is replaced by a new id.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use support::*;

#[tokio::test]
async fn a_well_formed_request_id_is_kept_and_a_malformed_one_replaced() {
    support::audit::capture();
    let issuer = TestIssuer::start().await;
    let sts = Sts::start(&issuer).await;
    let subject = issuer.user_token("alice", "bff", "orders:read");
    let send = |id: &'static str| {
        sts.http
            .post(sts.token_url())
            .basic_auth(BFF.0, Some(BFF.1))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-request-id", id)
            .body(encode_form(&impersonation(&subject)))
    };
    let kept = sts.post(send("f47ac10b-58cc-4372-a567-0e02b2c3d479")).await;
    assert_eq!(kept.status, 200, "{}", kept.body);
    assert_eq!(
        kept.request_id(),
        Some("f47ac10b-58cc-4372-a567-0e02b2c3d479")
    );
    let record = support::audit::record("f47ac10b-58cc-4372-a567-0e02b2c3d479").unwrap();
    assert_eq!(record["decision"], "granted");

    let replaced = sts.post(send("not well formed")).await;
    assert_eq!(replaced.status, 200);
    let id = replaced.request_id().unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(support::audit::record(id).unwrap()["decision"], "granted");
    assert!(support::audit::record("not well formed").is_none());
}
