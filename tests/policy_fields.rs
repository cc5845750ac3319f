//! Every policy field changes a decision, over HTTP against the real server.
//!
//! Table-driven: each case is a pair of policies, A and B, that differ in one field only
//! (both are patches of one base policy), and probes: requests sent to an STS running A
//! and to one running B, with what each must answer. A refusal is asserted by HTTP status,
//! OAuth `error` and the audit record's `stage/reason` (many refusals share a code); a
//! grant by the issued token's claims (and, where it matters, the audit record's `rule`).
//! Every case has a probe on which A and B disagree, so deleting a field's effect from
//! the engine fails its case.
//!
//! The last test is a table of policy files start-up must refuse, each naming the file,
//! the rule and the field (a TOML schema error, such as an unknown field, names the field
//! and its line but not the rule: the table pins the line).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use serde_json::{Value, json};
use support::forms::*;
use support::*;

// ---- the table machinery -----------------------------------------------------------------

type Client = (&'static str, &'static str);

/// Stands, in the second request of [`Req::TwoHops`], for the token the first one got.
const HOP1: &str = "<token issued by the first hop>";

enum Req {
    /// `POST /token` as this client.
    One(Client, Form),
    /// Two exchanges: the first must be granted; in the second, every [`HOP1`] value is
    /// replaced by the token the first one issued.
    TwoHops(Client, Form, Client, Form),
}

#[derive(Debug, Clone, PartialEq)]
enum Want {
    /// 200 with a token whose claims hold these members (`null`: member absent), and,
    /// when given, an audit record whose `rule` ends with this.
    Granted {
        claims: Value,
        rule: Option<&'static str>,
    },
    /// A refusal: status, OAuth error, audit `stage/reason` and, when given, the end of
    /// the audit record's `rule`.
    Refused {
        status: u16,
        error: &'static str,
        reason: &'static str,
        rule: Option<&'static str>,
    },
}

fn granted(claims: Value) -> Want {
    Want::Granted { claims, rule: None }
}

fn granted_by(claims: Value, rule: &'static str) -> Want {
    Want::Granted {
        claims,
        rule: Some(rule),
    }
}

fn refused(status: u16, error: &'static str, reason: &'static str) -> Want {
    Want::Refused {
        status,
        error,
        reason,
        rule: None,
    }
}

fn refused_by(status: u16, error: &'static str, reason: &'static str, rule: &'static str) -> Want {
    Want::Refused {
        status,
        error,
        reason,
        rule: Some(rule),
    }
}

struct Probe {
    name: &'static str,
    req: Req,
    a: Want,
    b: Want,
}

/// Two policies, [`base`] patched by `common` and then by `a` or `b`.
struct Case {
    name: &'static str,
    common: Value,
    a: Value,
    b: Value,
    probes: Vec<Probe>,
}

fn case(name: &'static str, a: Value, b: Value) -> Case {
    Case {
        name,
        common: json!({}),
        a,
        b,
        probes: Vec::new(),
    }
}

impl Case {
    /// A patch applied to both policies before `a` and `b`.
    fn both(mut self, common: Value) -> Case {
        self.common = common;
        self
    }
    fn probe(mut self, name: &'static str, req: Req, a: Want, b: Want) -> Case {
        self.probes.push(Probe { name, req, a, b });
        self
    }
    fn policy(&self, side: &Value) -> String {
        policy_text(&merged(&merged(&base(), &self.common), side))
    }
}

/// The two trusted issuers: "corp" (access tokens and plain JWTs) and "partner".
struct World {
    corp: TestIssuer,
    partner: TestIssuer,
}

impl World {
    async fn new() -> World {
        support::audit::capture();
        World {
            corp: TestIssuer::start().await,
            partner: TestIssuer::start().await,
        }
    }

    fn builder(&self, policy: &str) -> StsBuilder<'_> {
        Sts::builder()
            .issuer(
                "corp",
                &self.corp,
                "token_types = [\"access_token\", \"jwt\"]",
            )
            .issuer("partner", &self.partner, "")
            .policy(policy)
    }
}

/// Runs every case under both its policies, then fails once, naming every probe that did
/// not behave.
async fn run(table: &str, world: &World, cases: Vec<Case>) {
    let mut failures = Vec::new();
    let mut probes = 0;
    for case in &cases {
        assert!(
            case.probes.iter().any(|p| p.a != p.b),
            "{table}/{}: no probe tells policy A from policy B",
            case.name
        );
        for (side, patch) in [("A", &case.a), ("B", &case.b)] {
            let policy = case.policy(patch);
            let sts = world.builder(&policy).start().await;
            for probe in &case.probes {
                probes += 1;
                let want = if side == "A" { &probe.a } else { &probe.b };
                if let Err(why) = check(&sts, &probe.req, want).await {
                    failures.push(format!(
                        "  {table}/{}/{} under policy {side}: {why}\n    policy {side}:\n      {}",
                        case.name,
                        probe.name,
                        policy.replace('\n', "\n      ")
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {probes} probes of {table} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{table}: {} cases, {probes} probes passed", cases.len());
}

async fn exchange(sts: &Sts, client: Client, form: &Form) -> Answer {
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sts.exchange(client, &pairs).await
}

async fn check(sts: &Sts, req: &Req, want: &Want) -> Result<(), String> {
    let answer = match req {
        Req::One(client, form) => exchange(sts, *client, form).await,
        Req::TwoHops(first_client, first, client, second) => {
            let hop1 = exchange(sts, *first_client, first).await;
            if hop1.status != 200 {
                return Err(format!("first hop: {} {}", hop1.status, hop1.body));
            }
            let fill = |v: &String| if v == HOP1 { hop1.token() } else { v }.to_owned();
            let second: Form = second.iter().map(|(k, v)| (*k, fill(v))).collect();
            exchange(sts, *client, &second).await
        }
    };
    let audit = answer.request_id().and_then(support::audit::record);
    let audited_rule = audit
        .as_ref()
        .and_then(|a| a["rule"].as_str())
        .unwrap_or("<none>")
        .to_owned();
    let mut problems: Vec<String> = Vec::new();
    match want {
        Want::Granted {
            claims: expect,
            rule,
        } => {
            if answer.status != 200 || answer.body.get("access_token").is_none() {
                let why = answer.request_id().and_then(support::audit::refusal);
                return Err(format!(
                    "want 200 with a token, got {} {} (audit: {})",
                    answer.status,
                    answer.body,
                    why.as_deref().unwrap_or("<none>")
                ));
            }
            let claims = answer.claims();
            for (k, v) in expect.as_object().expect("granted(claims) takes an object") {
                match (v, claims.get(k)) {
                    (Value::Null, None) => {}
                    (Value::Null, Some(got)) => {
                        problems.push(format!("claim {k}: want absent, got {got}"));
                    }
                    (v, got) if got != Some(v) => {
                        problems.push(format!("claim {k}: want {v}, got {got:?}"));
                    }
                    _ => {}
                }
            }
            let lifetime = claims["exp"].as_u64().and_then(|e| e.checked_sub(NOW));
            if lifetime.is_none() || lifetime != answer.body["expires_in"].as_u64() {
                problems.push(format!(
                    "expires_in {} does not match exp {}",
                    answer.body["expires_in"], claims["exp"]
                ));
            }
            if audit.as_ref().map(|a| a["decision"].clone()) != Some(json!("granted")) {
                problems.push(format!("audit record: {audit:?}"));
            }
            if let Some(rule) = rule
                && !audited_rule.ends_with(rule)
            {
                problems.push(format!("audit rule {audited_rule:?}, want …{rule}"));
            }
        }
        Want::Refused {
            status,
            error,
            reason,
            rule,
        } => {
            if answer.status == 200 {
                return Err(format!(
                    "want {status} {error} ({reason}), but it was granted: {}",
                    claims_of(answer.token())
                ));
            }
            if answer.status != *status || answer.error() != *error {
                problems.push(format!(
                    "want {status} {error}, got {} {}",
                    answer.status,
                    answer.error()
                ));
            }
            let got = answer.request_id().and_then(support::audit::refusal);
            if got.as_deref() != Some(*reason) {
                problems.push(format!(
                    "refused by {}, want {reason}",
                    got.as_deref().unwrap_or("<no audit record>")
                ));
            }
            if let Some(rule) = rule
                && !audited_rule.ends_with(rule)
            {
                problems.push(format!("audit rule {audited_rule:?}, want …{rule}"));
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

// ---- policies ----------------------------------------------------------------------------

/// The policy every case patches.
fn base() -> Value {
    json!({ "clients": {
        "bff": {
            "impersonate": true,
            "delegate": true,
            "subject_issuers": ["corp"],
            "actor_issuers": ["corp"],
            "audiences": ["orders-api", "inventory-api"],
            "resources": ["https://orders.example/api"],
            "default_audience": "orders-api",
            "scopes": ["orders:read", "orders:write"],
            "ttl_seconds": 300,
        },
        "orders-api": {
            "delegate": true,
            "subject_issuers": ["self", "corp"],
            "subject_namespace": "issuer_claim",
            "actor_issuers": ["corp"],
            "audiences": ["payments-api"],
            "default_audience": "payments-api",
            "scopes": ["orders:read"],
        },
    }})
}

/// `base` with `patch` applied: objects merged member by member, `null` removes a
/// member, anything else replaces it.
fn merged(base: &Value, patch: &Value) -> Value {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            let mut out = base.clone();
            for (k, v) in patch {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let next = merged(out.get(k).unwrap_or(&Value::Null), v);
                    out.insert(k.clone(), next);
                }
            }
            Value::Object(out)
        }
        (_, Value::Object(_)) => merged(&json!({}), patch),
        (_, patch) => patch.clone(),
    }
}

fn policy_text(policy: &Value) -> String {
    toml::to_string(policy).unwrap()
}

/// A patch of client bff's table.
fn bff(fields: Value) -> Value {
    json!({ "clients": { "bff": fields } })
}

/// A patch of client orders-api's table.
fn orders(fields: Value) -> Value {
    json!({ "clients": { "orders-api": fields } })
}

/// A patch of bff's `by_issuer.partner` table.
fn bff_partner(fields: Value) -> Value {
    bff(json!({ "by_issuer": { "partner": fields } }))
}

// ---- requests and tokens -----------------------------------------------------------------

fn one(client: Client, form: Form) -> Req {
    Req::One(client, form)
}

/// A token signed with header `typ` `JWT` (to be declared `jwt`).
fn plain_jwt(issuer: &TestIssuer, claims: Value) -> String {
    issuer.sign_with(
        Alg::Es256,
        json!({ "alg": "ES256", "kid": "es-1", "typ": "JWT" }),
        claims,
    )
}

/// Alice's access token from corp, issued to bff, with scope orders:read orders:write and
/// these extra claims (`null` removes one).
fn alice(world: &World, extra: Value) -> String {
    world.corp.sign(alice_claims(world, extra))
}

fn alice_claims(world: &World, extra: Value) -> Value {
    merged(
        &world
            .corp
            .user_claims("alice", "bff", "orders:read orders:write"),
        &extra,
    )
}

const BOTH_SCOPES: &str = "orders:read orders:write";

// ---- modes, issuers and token types ------------------------------------------------------

#[tokio::test]
async fn modes_issuers_and_token_types() {
    let w = World::new().await;
    let alice_corp = alice(&w, json!({}));
    let alice_partner = w
        .partner
        .user_token("alice", "bff", "orders:read orders:write");
    let alice_jwt = plain_jwt(&w.corp, alice_claims(&w, json!({})));
    let bff_actor = w.corp.actor_token("bff");
    let bff_actor_partner = w.partner.actor_token("bff");
    let bff_actor_jwt = plain_jwt(&w.corp, w.corp.actor_claims("bff"));
    let orders_actor = w.corp.actor_token("orders-api");
    let ok_imp = || granted(json!({ "sub": "alice", "aud": "orders-api", "act": null }));
    let ok_del = || granted(json!({ "sub": "alice", "act": { "sub": "bff" } }));
    // Hop 1: bff delegates alice to orders-api; hop 2: orders-api re-exchanges that token.
    let two_hops = || {
        Req::TwoHops(
            BFF,
            del(&alice_corp, &bff_actor).with("audience", "orders-api"),
            ORDERS,
            del(HOP1, &orders_actor),
        )
    };

    let cases = vec![
        case(
            "enabled",
            bff(json!({ "enabled": true })),
            bff(json!({ "enabled": false })),
        )
        .probe(
            "impersonation",
            one(BFF, imp(&alice_corp)),
            ok_imp(),
            refused(400, "unauthorized_client", "policy/client_not_enabled"),
        )
        .probe(
            "delegation",
            one(BFF, del(&alice_corp, &bff_actor)),
            ok_del(),
            refused(400, "unauthorized_client", "policy/client_not_enabled"),
        ),
        case(
            "impersonate",
            bff(json!({ "impersonate": true })),
            bff(json!({ "impersonate": false })),
        )
        .probe(
            "impersonation",
            one(BFF, imp(&alice_corp)),
            ok_imp(),
            refused(
                400,
                "unauthorized_client",
                "policy/impersonation_not_allowed",
            ),
        )
        .probe(
            "delegation_unaffected",
            one(BFF, del(&alice_corp, &bff_actor)),
            ok_del(),
            ok_del(),
        ),
        case(
            "delegate",
            bff(json!({ "delegate": true })),
            bff(json!({ "delegate": false })),
        )
        .probe(
            "delegation",
            one(BFF, del(&alice_corp, &bff_actor)),
            ok_del(),
            refused(400, "unauthorized_client", "policy/delegation_not_allowed"),
        )
        .probe(
            "impersonation_unaffected",
            one(BFF, imp(&alice_corp)),
            ok_imp(),
            ok_imp(),
        ),
        case(
            "subject_issuers",
            bff(json!({ "subject_issuers": ["corp"] })),
            bff(json!({ "subject_issuers": ["partner"] })),
        )
        .probe(
            "corp_subject",
            one(BFF, imp(&alice_corp)),
            ok_imp(),
            refused(400, "invalid_request", "subject_token/issuer_not_accepted"),
        )
        .probe(
            "partner_subject",
            one(BFF, imp(&alice_partner)),
            refused(400, "invalid_request", "subject_token/issuer_not_accepted"),
            ok_imp(),
        ),
        // gleipnir's own tokens skip the early issuer check: the policy refuses them.
        case(
            "subject_issuers_self",
            orders(json!({ "subject_issuers": ["self", "corp"] })),
            orders(json!({ "subject_issuers": ["corp"] })),
        )
        .probe(
            "second_hop",
            two_hops(),
            granted(json!({
                "sub": "alice", "aud": "payments-api", "client_id": "orders-api",
                "act": { "sub": "orders-api", "act": { "sub": "bff" } },
            })),
            refused(400, "invalid_request", "policy/subject_issuer_not_accepted"),
        ),
        case(
            "actor_issuers",
            bff(json!({ "actor_issuers": ["corp"] })),
            bff(json!({ "actor_issuers": ["partner"] })),
        )
        .probe(
            "corp_actor",
            one(BFF, del(&alice_corp, &bff_actor)),
            ok_del(),
            refused(400, "invalid_request", "actor_token/issuer_not_accepted"),
        )
        .probe(
            "partner_actor",
            one(BFF, del(&alice_corp, &bff_actor_partner)),
            refused(400, "invalid_request", "actor_token/issuer_not_accepted"),
            ok_del(),
        ),
        case(
            "subject_token_types",
            bff(json!({ "subject_token_types": ["access_token"] })),
            bff(json!({ "subject_token_types": ["jwt"] })),
        )
        .probe(
            "access_token",
            one(BFF, imp(&alice_corp)),
            ok_imp(),
            refused(
                400,
                "invalid_request",
                "policy/subject_token_type_not_accepted",
            ),
        )
        .probe(
            "jwt",
            one(BFF, imp(&alice_jwt).set("subject_token_type", JWT)),
            refused(
                400,
                "invalid_request",
                "policy/subject_token_type_not_accepted",
            ),
            ok_imp(),
        ),
        case(
            "actor_token_types",
            bff(json!({ "actor_token_types": ["access_token"] })),
            bff(json!({ "actor_token_types": ["jwt"] })),
        )
        .probe(
            "access_token",
            one(BFF, del(&alice_corp, &bff_actor)),
            ok_del(),
            refused(
                400,
                "invalid_request",
                "policy/actor_token_type_not_accepted",
            ),
        )
        .probe(
            "jwt",
            one(
                BFF,
                del(&alice_corp, &bff_actor_jwt).set("actor_token_type", JWT),
            ),
            refused(
                400,
                "invalid_request",
                "policy/actor_token_type_not_accepted",
            ),
            ok_del(),
        )
        .probe(
            "impersonation_unaffected",
            one(BFF, imp(&alice_corp)),
            ok_imp(),
            ok_imp(),
        ),
    ];
    run("modes, issuers, token types", &w, cases).await;
}

// ---- targets -----------------------------------------------------------------------------

#[tokio::test]
async fn targets() {
    let w = World::new().await;
    let alice = alice(&w, json!({}));
    let to_audience = |aud: &str| one(BFF, imp(&alice).with("audience", aud));
    let to_resource = |res: &str| one(BFF, imp(&alice).with("resource", res));
    let aud = |aud: Value| granted(json!({ "aud": aud }));
    let not_allowed = || refused(400, "invalid_target", "policy/target_not_allowed");

    let cases = vec![
        case(
            "audiences",
            bff(json!({ "audiences": ["orders-api", "inventory-api"] })),
            bff(json!({ "audiences": ["orders-api"] })),
        )
        .probe(
            "listed_in_a_only",
            to_audience("inventory-api"),
            aud(json!("inventory-api")),
            not_allowed(),
        )
        .probe(
            "listed_in_both",
            to_audience("orders-api"),
            aud(json!("orders-api")),
            aud(json!("orders-api")),
        ),
        case(
            "audiences_pattern",
            bff(json!({ "audiences": ["orders-api", "https://*.example.com/"] })),
            bff(json!({ "audiences": ["orders-api"] })),
        )
        .probe(
            "one_host_label",
            to_audience("https://inventory.example.com/"),
            aud(json!("https://inventory.example.com/")),
            not_allowed(),
        )
        .probe(
            "another_host_with_the_suffix_as_path",
            to_audience("https://evil.com/.example.com/"),
            not_allowed(),
            not_allowed(),
        )
        .probe(
            "two_host_labels",
            to_audience("https://a.b.example.com/"),
            not_allowed(),
            not_allowed(),
        )
        .probe(
            "empty_label",
            to_audience("https://.example.com/"),
            not_allowed(),
            not_allowed(),
        ),
        // The same request is allowed by an exact entry: only the pattern refuses it.
        case(
            "audiences_pattern_stays_in_one_label",
            bff(json!({ "audiences": ["orders-api", "https://evil.com/.example.com/"] })),
            bff(json!({ "audiences": ["orders-api", "https://*.example.com/"] })),
        )
        .probe(
            "another_host_with_the_suffix_as_path",
            to_audience("https://evil.com/.example.com/"),
            aud(json!("https://evil.com/.example.com/")),
            not_allowed(),
        ),
        case(
            "resources",
            bff(json!({ "resources": ["https://orders.example/api"] })),
            bff(json!({ "resources": ["https://inventory.example/api"] })),
        )
        .probe(
            "orders",
            to_resource("https://orders.example/api"),
            aud(json!("https://orders.example/api")),
            not_allowed(),
        )
        .probe(
            "inventory",
            to_resource("https://inventory.example/api"),
            not_allowed(),
            aud(json!("https://inventory.example/api")),
        ),
        case(
            "resources_pattern",
            bff(json!({ "resources": ["https://api.example.com/v1/*"] })),
            bff(json!({ "resources": ["https://api.example.com/v1/orders"] })),
        )
        .probe(
            "another_segment",
            to_resource("https://api.example.com/v1/payments"),
            aud(json!("https://api.example.com/v1/payments")),
            not_allowed(),
        )
        .probe(
            "the_exact_one",
            to_resource("https://api.example.com/v1/orders"),
            aud(json!("https://api.example.com/v1/orders")),
            aud(json!("https://api.example.com/v1/orders")),
        )
        .probe(
            "two_segments",
            to_resource("https://api.example.com/v1/orders/items"),
            not_allowed(),
            not_allowed(),
        ),
        case(
            "default_audience",
            bff(json!({ "default_audience": "orders-api" })),
            bff(json!({ "default_audience": "inventory-api" })),
        )
        .probe(
            "none_requested",
            one(BFF, imp(&alice)),
            aud(json!("orders-api")),
            aud(json!("inventory-api")),
        )
        .probe(
            "one_requested",
            to_audience("orders-api"),
            aud(json!("orders-api")),
            aud(json!("orders-api")),
        ),
        case(
            "default_audience_absent",
            bff(json!({ "default_audience": "orders-api" })),
            bff(json!({ "default_audience": null })),
        )
        .probe(
            "none_requested",
            one(BFF, imp(&alice)),
            aud(json!("orders-api")),
            refused(400, "invalid_request", "policy/no_target"),
        ),
        case(
            "max_audiences",
            bff(json!({ "max_audiences": 2 })),
            bff(json!({ "max_audiences": null })),
        )
        .probe(
            "two_audiences",
            one(
                BFF,
                imp(&alice)
                    .with("audience", "orders-api")
                    .with("audience", "inventory-api"),
            ),
            aud(json!(["orders-api", "inventory-api"])),
            refused(400, "invalid_target", "policy/too_many_targets"),
        )
        .probe(
            "audience_and_resource",
            one(
                BFF,
                imp(&alice)
                    .with("audience", "orders-api")
                    .with("resource", "https://orders.example/api"),
            ),
            aud(json!(["orders-api", "https://orders.example/api"])),
            refused(400, "invalid_target", "policy/too_many_targets"),
        )
        .probe(
            "one_audience",
            to_audience("inventory-api"),
            aud(json!("inventory-api")),
            aud(json!("inventory-api")),
        ),
    ];
    run("targets", &w, cases).await;
}

// ---- scopes ------------------------------------------------------------------------------

#[tokio::test]
async fn scopes_and_target_scopes() {
    let w = World::new().await;
    let alice = alice(&w, json!({}));
    let scope = |s: &str| granted(json!({ "scope": s }));
    let not_granted = || refused(400, "invalid_scope", "policy/scope_not_granted");

    let cases = vec![
        case(
            "scopes",
            bff(json!({ "scopes": ["orders:read", "orders:write"] })),
            bff(json!({ "scopes": ["orders:read"] })),
        )
        .probe(
            "none_requested",
            one(BFF, imp(&alice)),
            scope(BOTH_SCOPES),
            scope("orders:read"),
        )
        .probe(
            "write_requested",
            one(BFF, imp(&alice).with("scope", "orders:write")),
            scope("orders:write"),
            not_granted(),
        ),
        case(
            "target_scopes",
            bff(json!({ "target_scopes": null })),
            bff(json!({ "target_scopes": { "inventory-api": ["orders:read"] } })),
        )
        .probe(
            "narrowed_target_none_requested",
            one(BFF, imp(&alice).with("audience", "inventory-api")),
            scope(BOTH_SCOPES),
            scope("orders:read"),
        )
        .probe(
            "narrowed_target_write_requested",
            one(
                BFF,
                imp(&alice)
                    .with("audience", "inventory-api")
                    .with("scope", "orders:write"),
            ),
            scope("orders:write"),
            not_granted(),
        )
        .probe(
            "other_target_unaffected",
            one(BFF, imp(&alice).with("audience", "orders-api")),
            scope(BOTH_SCOPES),
            scope(BOTH_SCOPES),
        ),
        case(
            "target_scopes_of_the_default_audience",
            bff(json!({ "target_scopes": null })),
            bff(json!({ "target_scopes": { "orders-api": ["orders:read"] } })),
        )
        .probe(
            "none_requested",
            one(BFF, imp(&alice)),
            granted(json!({ "aud": "orders-api", "scope": BOTH_SCOPES })),
            granted(json!({ "aud": "orders-api", "scope": "orders:read" })),
        ),
        case(
            "target_scopes_of_a_pattern_and_a_resource",
            bff(json!({ "target_scopes": null })),
            bff(json!({ "target_scopes": {
                "https://*.example.com/": ["orders:read"],
                "https://orders.example/api": ["orders:write"],
            } })),
        )
        .both(bff(json!({
            "audiences": ["orders-api", "inventory-api", "https://*.example.com/"],
        })))
        .probe(
            "pattern_target",
            one(
                BFF,
                imp(&alice).with("audience", "https://shop.example.com/"),
            ),
            scope(BOTH_SCOPES),
            scope("orders:read"),
        )
        .probe(
            "resource_target",
            one(
                BFF,
                imp(&alice).with("resource", "https://orders.example/api"),
            ),
            scope(BOTH_SCOPES),
            scope("orders:write"),
        )
        .probe(
            "resource_target_read_requested",
            one(
                BFF,
                imp(&alice)
                    .with("resource", "https://orders.example/api")
                    .with("scope", "orders:read"),
            ),
            scope("orders:read"),
            not_granted(),
        ),
    ];
    run("scopes", &w, cases).await;
}

/// A `target_scopes` key written once but listed in both `audiences` and `resources`
/// should cap that target however it is asked for. It caps only `audience` requests: the
/// same target asked for as `resource` gets the full scope (the key is looked up in
/// `audiences` first and only that entry gets the ceiling).
#[tokio::test]
async fn target_scopes_cap_a_target_however_it_is_requested() {
    let w = World::new().await;
    let alice = alice(&w, json!({}));
    let scope = |s: &str| granted(json!({ "scope": s }));
    let target = "https://orders.example/api";
    let cases = vec![
        case(
            "target_scopes_of_a_value_in_audiences_and_resources",
            bff(json!({ "target_scopes": null })),
            bff(json!({ "target_scopes": { target: ["orders:read"] } })),
        )
        .both(bff(
            json!({ "audiences": ["orders-api", target], "resources": [target] }),
        ))
        .probe(
            "as_audience",
            one(BFF, imp(&alice).with("audience", target)),
            scope(BOTH_SCOPES),
            scope("orders:read"),
        )
        .probe(
            "as_resource",
            one(BFF, imp(&alice).with("resource", target)),
            scope(BOTH_SCOPES),
            scope("orders:read"),
        ),
        // A ceiling on an exact resource also caps the same value admitted as an audience
        // by a pattern: every entry that admits a target contributes its ceiling.
        case(
            "target_scopes_of_an_exact_entry_reached_through_a_pattern",
            bff(json!({ "target_scopes": null })),
            bff(json!({ "target_scopes": { target: ["orders:read"] } })),
        )
        .both(bff(json!({
            "audiences": ["orders-api", "https://*.example/api"],
            "resources": [target],
        })))
        .probe(
            "as_audience_through_the_pattern",
            one(BFF, imp(&alice).with("audience", target)),
            scope(BOTH_SCOPES),
            scope("orders:read"),
        )
        .probe(
            "as_resource",
            one(BFF, imp(&alice).with("resource", target)),
            scope(BOTH_SCOPES),
            scope("orders:read"),
        ),
    ];
    run("target_scopes bug", &w, cases).await;
}

// ---- lifetime and the chain --------------------------------------------------------------

#[tokio::test]
async fn lifetime_and_chain() {
    let w = World::new().await;
    let alice_plain = alice(&w, json!({}));
    let alice_short = alice(&w, json!({ "exp": NOW + 200 }));
    let alice_via_a1 = alice(&w, json!({ "act": { "sub": "a1" } }));
    let alice_via_a1_at_idp = alice(
        &w,
        json!({ "act": { "sub": "a1", "iss": "https://idp.example" } }),
    );
    let alice_to_orders = w.corp.user_token("alice", "orders-api", "orders:read");
    let bff_actor = w.corp.actor_token("bff");
    let orders_actor = w.corp.actor_token("orders-api");
    let corp = w.corp.iss.clone();
    let exp = |ttl: u64| granted(json!({ "iat": NOW, "exp": NOW + ttl }));
    let act = |act: Value| granted(json!({ "sub": "alice", "act": act }));

    let cases = vec![
        case(
            "ttl_seconds",
            bff(json!({ "ttl_seconds": 300 })),
            bff(json!({ "ttl_seconds": 120 })),
        )
        .probe(
            "long_lived_subject",
            one(BFF, imp(&alice_plain)),
            exp(300),
            exp(120),
        )
        .probe(
            "subject_expiring_in_200s",
            one(BFF, imp(&alice_short)),
            exp(200),
            exp(120),
        ),
        case(
            "max_depth",
            bff(json!({ "max_depth": null })),
            bff(json!({ "max_depth": 1 })),
        )
        .probe(
            "actor_after_a_prior_actor",
            one(BFF, del(&alice_via_a1, &bff_actor)),
            act(json!({ "sub": "bff", "act": { "sub": "a1" } })),
            refused(400, "invalid_request", "policy/chain_too_deep"),
        )
        .probe(
            "actor_alone",
            one(BFF, del(&alice_plain, &bff_actor)),
            act(json!({ "sub": "bff" })),
            act(json!({ "sub": "bff" })),
        ),
        case(
            "actors",
            bff(json!({ "actors": ["bff"] })),
            bff(json!({ "actors": ["svc-batch"] })),
        )
        .probe(
            "delegation",
            one(BFF, del(&alice_plain, &bff_actor)),
            act(json!({ "sub": "bff" })),
            refused(400, "invalid_request", "policy/actor_not_allowed"),
        )
        .probe(
            "impersonation_unaffected",
            one(BFF, imp(&alice_plain)),
            act(Value::Null),
            act(Value::Null),
        ),
        case(
            "prior_actors",
            orders(json!({ "prior_actors": ["bff"] })),
            orders(json!({ "prior_actors": ["svc-batch"] })),
        )
        .probe(
            "second_hop_after_bff",
            Req::TwoHops(
                BFF,
                del(&alice_plain, &bff_actor).with("audience", "orders-api"),
                ORDERS,
                del(HOP1, &orders_actor),
            ),
            granted(json!({
                "sub": "alice", "aud": "payments-api",
                "act": { "sub": "orders-api", "act": { "sub": "bff" } },
            })),
            refused(400, "invalid_request", "policy/prior_actor_not_allowed"),
        )
        .probe(
            "first_hop_has_no_prior_actors",
            one(ORDERS, del(&alice_to_orders, &orders_actor)),
            act(json!({ "sub": "orders-api" })),
            act(json!({ "sub": "orders-api" })),
        ),
        case(
            "act_includes_iss",
            bff(json!({ "act_includes_iss": true })),
            bff(json!({ "act_includes_iss": false })),
        )
        .probe(
            "delegation",
            one(BFF, del(&alice_plain, &bff_actor)),
            act(json!({ "sub": "bff", "iss": corp })),
            act(json!({ "sub": "bff" })),
        )
        .probe(
            "delegation_after_a_prior_actor_with_iss",
            one(BFF, del(&alice_via_a1_at_idp, &bff_actor)),
            act(json!({ "sub": "bff", "iss": corp,
                        "act": { "sub": "a1", "iss": "https://idp.example" } })),
            // The field applies to the new actor; a prior actor keeps the `iss` it was
            // recorded with (rule 4: never rewritten).
            act(json!({ "sub": "bff", "act": { "sub": "a1", "iss": "https://idp.example" } })),
        )
        .probe(
            "impersonation_carrying_a_prior_actor_with_iss",
            one(BFF, imp(&alice_via_a1_at_idp)),
            act(json!({ "sub": "a1", "iss": "https://idp.example" })),
            act(json!({ "sub": "a1", "iss": "https://idp.example" })),
        )
        .probe(
            "impersonation_carrying_a_prior_actor_without_iss",
            one(BFF, imp(&alice_via_a1)),
            act(json!({ "sub": "a1" })),
            act(json!({ "sub": "a1" })),
        ),
    ];
    run("lifetime and chain", &w, cases).await;
}

// ---- passthrough claims ------------------------------------------------------------------

#[tokio::test]
async fn passthrough_claims() {
    let w = World::new().await;
    let groups = json!(["staff", "orders-admins"]);
    let rich = alice(
        &w,
        json!({ "email": "alice@example.com", "groups": groups, "tenant": "acme" }),
    );
    let plain = alice(&w, json!({}));
    // `merged` drops `null` members: set this one after merging.
    let mut with_null = alice_claims(&w, json!({ "department": "sales" }));
    with_null["email"] = Value::Null;
    let nulls = w.corp.sign(with_null);

    let cases = vec![
        case(
            "claims",
            bff(json!({ "claims": ["email", "groups", "department"] })),
            bff(json!({ "claims": null })),
        )
        .probe(
            "subject_with_email_and_groups",
            one(BFF, imp(&rich)),
            granted(json!({
                "sub": "alice", "email": "alice@example.com", "groups": groups,
                "department": null, "tenant": null,
            })),
            granted(json!({
                "sub": "alice", "email": null, "groups": null, "department": null,
                "tenant": null,
            })),
        )
        .probe(
            "subject_without_them",
            one(BFF, imp(&plain)),
            granted(json!({ "email": null, "groups": null, "department": null })),
            granted(json!({ "email": null, "groups": null, "department": null })),
        )
        .probe(
            // A `null` claim is absent, as conditions read it: never copied as `null`.
            "subject_with_a_null_claim",
            one(BFF, imp(&nulls)),
            granted(json!({ "email": null, "department": "sales" })),
            granted(json!({ "email": null, "department": null })),
        ),
        case(
            "claims_narrower",
            bff(json!({ "claims": ["email", "groups"] })),
            bff(json!({ "claims": ["email"] })),
        )
        .probe(
            "delegation",
            one(BFF, del(&rich, &w.corp.actor_token("bff"))),
            granted(json!({
                "email": "alice@example.com", "groups": groups, "act": { "sub": "bff" },
            })),
            granted(json!({
                "email": "alice@example.com", "groups": null, "act": { "sub": "bff" },
            })),
        ),
    ];
    run("passthrough claims", &w, cases).await;
}

// ---- conditions --------------------------------------------------------------------------

#[tokio::test]
async fn conditions() {
    let w = World::new().await;
    let acme = alice(&w, json!({ "tenant": "acme" }));
    let emailed = alice(&w, json!({ "email": "alice@example.com" }));
    let plain = alice(&w, json!({}));
    let admin = alice(
        &w,
        json!({ "realm_access": { "roles": ["user", "admin"] } }),
    );
    let top_level_roles = alice(&w, json!({ "roles": ["admin"] }));
    let level_2 = alice(&w, json!({ "acr_level": 2 }));
    let bff_actor = w.corp.actor_token("bff");
    let ok = || granted(json!({ "sub": "alice" }));
    let not_met = || refused(400, "invalid_request", "policy/condition_not_met");
    let on = |conditions: Value| bff(json!({ "conditions": conditions }));

    let cases = vec![
        case(
            "conditions_equals",
            on(json!([{ "token": "subject", "claim": "tenant", "equals": "acme" }])),
            on(json!([{ "token": "subject", "claim": "tenant", "equals": "globex" }])),
        )
        .probe("tenant_acme", one(BFF, imp(&acme)), ok(), not_met())
        .probe("no_tenant", one(BFF, imp(&plain)), not_met(), not_met()),
        case(
            "conditions_equals_integer",
            on(json!([{ "token": "subject", "claim": "acr_level", "equals": 2 }])),
            on(json!([{ "token": "subject", "claim": "acr_level", "equals": "2" }])),
        )
        .probe("acr_level_2", one(BFF, imp(&level_2)), ok(), not_met()),
        case(
            "conditions_one_of",
            on(json!([{ "token": "subject", "claim": "tenant", "one_of": ["initech", "acme"] }])),
            on(json!([{ "token": "subject", "claim": "tenant", "one_of": ["globex", "initech"] }])),
        )
        .probe("tenant_acme", one(BFF, imp(&acme)), ok(), not_met()),
        case(
            "conditions_present_true",
            on(json!([{ "token": "subject", "claim": "email", "present": true }])),
            on(json!([{ "token": "subject", "claim": "tenant", "present": true }])),
        )
        .probe("email_no_tenant", one(BFF, imp(&emailed)), ok(), not_met()),
        case(
            "conditions_present_false",
            on(json!([{ "token": "subject", "claim": "tenant", "present": false }])),
            on(json!([{ "token": "subject", "claim": "email", "present": false }])),
        )
        .probe("email_no_tenant", one(BFF, imp(&emailed)), ok(), not_met()),
        case(
            "conditions_on_the_actor",
            on(json!([{ "token": "actor", "claim": "client_id", "equals": "bff" }])),
            on(json!([{ "token": "actor", "claim": "client_id", "equals": "svc-batch" }])),
        )
        .probe(
            "delegation",
            one(BFF, del(&plain, &bff_actor)),
            granted(json!({ "act": { "sub": "bff" } })),
            not_met(),
        )
        .probe(
            "impersonation_has_no_actor_token",
            one(BFF, imp(&plain)),
            not_met(),
            not_met(),
        ),
        case(
            "conditions_actor_absent",
            on(json!([{ "token": "actor", "claim": "client_id", "present": false }])),
            on(json!([{ "token": "actor", "claim": "client_id", "present": true }])),
        )
        .probe(
            "impersonation_has_no_actor_token",
            one(BFF, imp(&plain)),
            ok(),
            not_met(),
        )
        .probe(
            "delegation",
            one(BFF, del(&plain, &bff_actor)),
            not_met(),
            granted(json!({ "act": { "sub": "bff" } })),
        ),
        case(
            "conditions_path_into_an_array",
            on(json!([{ "token": "subject", "claim": ["realm_access", "roles"], "equals": "admin" }])),
            on(json!([{ "token": "subject", "claim": ["realm_access", "roles"], "equals": "auditor" }])),
        )
        .probe("realm_admin", one(BFF, imp(&admin)), ok(), not_met())
        .probe(
            "top_level_roles_are_not_the_path",
            one(BFF, imp(&top_level_roles)),
            not_met(),
            not_met(),
        ),
        case(
            "conditions_all_must_hold",
            on(json!([{ "token": "subject", "claim": "tenant", "equals": "acme" }])),
            on(json!([
                { "token": "subject", "claim": "tenant", "equals": "acme" },
                { "token": "subject", "claim": "email", "present": true },
            ])),
        )
        .probe("tenant_acme_no_email", one(BFF, imp(&acme)), ok(), not_met()),
    ];
    run("conditions", &w, cases).await;
}

// ---- [defaults] --------------------------------------------------------------------------

#[tokio::test]
async fn defaults() {
    let w = World::new().await;
    let plain = alice(&w, json!({}));
    let acme_emailed = alice(
        &w,
        json!({ "tenant": "acme", "email": "alice@example.com" }),
    );
    let globex_emailed = alice(
        &w,
        json!({ "tenant": "globex", "email": "alice@example.com" }),
    );
    let acme = alice(&w, json!({ "tenant": "acme" }));
    let rule = "#clients.bff";
    let exp = |ttl: u64| granted_by(json!({ "exp": NOW + ttl }), rule);
    let not_met = || refused(400, "invalid_request", "policy/condition_not_met");
    let defaults = |fields: Value| json!({ "defaults": fields });
    let email_present = json!([{ "token": "subject", "claim": "email", "present": true }]);
    let tenant_acme = json!([{ "token": "subject", "claim": "tenant", "equals": "acme" }]);

    let cases = vec![
        case(
            "defaults_inherited",
            defaults(json!({ "ttl_seconds": 120 })),
            json!({}),
        )
        .both(bff(json!({ "ttl_seconds": null })))
        .probe("impersonation", one(BFF, imp(&plain)), exp(120), exp(300)),
        case(
            "defaults_overridden",
            bff(json!({ "ttl_seconds": 60 })),
            bff(json!({ "ttl_seconds": null })),
        )
        .both(defaults(json!({ "ttl_seconds": 120 })))
        .probe("impersonation", one(BFF, imp(&plain)), exp(60), exp(120)),
        case(
            "defaults_client_only_field_inherited",
            defaults(json!({ "impersonate": true })),
            json!({}),
        )
        .both(bff(json!({ "impersonate": null })))
        .probe(
            "impersonation",
            one(BFF, imp(&plain)),
            granted_by(json!({ "act": null }), rule),
            refused(
                400,
                "unauthorized_client",
                "policy/impersonation_not_allowed",
            ),
        ),
        case(
            "defaults_scopes_overridden",
            bff(json!({ "scopes": ["orders:read", "orders:write"] })),
            bff(json!({ "scopes": null })),
        )
        .both(defaults(json!({ "scopes": ["orders:read"] })))
        .probe(
            "none_requested",
            one(BFF, imp(&plain)),
            granted(json!({ "scope": BOTH_SCOPES })),
            granted(json!({ "scope": "orders:read" })),
        )
        .probe(
            "write_requested",
            one(BFF, imp(&plain).with("scope", "orders:write")),
            granted(json!({ "scope": "orders:write" })),
            refused(400, "invalid_scope", "policy/scope_not_granted"),
        ),
        // A client's conditions add to those of [defaults], never replace them.
        case(
            "defaults_conditions_add_up",
            defaults(json!({ "conditions": tenant_acme })),
            json!({}),
        )
        .both(bff(json!({ "conditions": email_present })))
        .probe(
            "globex_with_email",
            one(BFF, imp(&globex_emailed)),
            not_met(),
            granted(json!({ "sub": "alice" })),
        )
        .probe(
            "acme_with_email",
            one(BFF, imp(&acme_emailed)),
            granted(json!({ "sub": "alice" })),
            granted(json!({ "sub": "alice" })),
        )
        .probe(
            "acme_without_email",
            one(BFF, imp(&acme)),
            not_met(),
            not_met(),
        ),
    ];
    run("[defaults]", &w, cases).await;
}

// ---- by_issuer ---------------------------------------------------------------------------

#[tokio::test]
async fn by_issuer() {
    let w = World::new().await;
    let alice_corp = alice(&w, json!({}));
    let alice_partner = w
        .partner
        .user_token("alice", "bff", "orders:read orders:write");
    let partner_claims = |extra: Value| {
        merged(
            &w.partner
                .user_claims("alice", "bff", "orders:read orders:write"),
            &extra,
        )
    };
    let partner_co_emailed = w.partner.sign(partner_claims(
        json!({ "tenant": "partner-co", "email": "alice@partner.example" }),
    ));
    let other_emailed = w.partner.sign(partner_claims(
        json!({ "tenant": "other", "email": "alice@partner.example" }),
    ));
    let partner_co = w
        .partner
        .sign(partner_claims(json!({ "tenant": "partner-co" })));
    let corp_other_emailed = alice(
        &w,
        json!({ "tenant": "other", "email": "alice@example.com" }),
    );
    let bff_actor_partner = w.partner.actor_token("bff");
    let client_rule = "#clients.bff";
    let partner_rule = "#clients.bff.by_issuer.partner";
    let accepts_partner = bff(json!({
        "subject_issuers": ["corp", "partner"],
        "subject_namespace": "issuer_claim",
    }));
    let not_met = |rule| refused_by(400, "invalid_request", "policy/condition_not_met", rule);

    let cases = vec![
        case(
            "by_issuer_targets_and_scopes",
            bff_partner(json!({
                "audiences": ["partner-api"],
                "default_audience": "partner-api",
                "scopes": ["orders:read"],
            })),
            json!({}),
        )
        .both(accepts_partner.clone())
        .probe(
            "partner_subject",
            one(BFF, imp(&alice_partner)),
            granted_by(
                json!({ "aud": "partner-api", "scope": "orders:read" }),
                partner_rule,
            ),
            granted_by(
                json!({ "aud": "orders-api", "scope": BOTH_SCOPES }),
                client_rule,
            ),
        )
        .probe(
            "corp_subject_unaffected",
            one(BFF, imp(&alice_corp)),
            granted_by(
                json!({ "aud": "orders-api", "scope": BOTH_SCOPES }),
                client_rule,
            ),
            granted_by(
                json!({ "aud": "orders-api", "scope": BOTH_SCOPES }),
                client_rule,
            ),
        )
        .probe(
            "partner_subject_asks_for_orders_api",
            one(BFF, imp(&alice_partner).with("audience", "orders-api")),
            refused_by(
                400,
                "invalid_target",
                "policy/target_not_allowed",
                partner_rule,
            ),
            granted_by(json!({ "aud": "orders-api" }), client_rule),
        )
        .probe(
            "partner_subject_asks_for_write",
            one(BFF, imp(&alice_partner).with("scope", "orders:write")),
            refused_by(
                400,
                "invalid_scope",
                "policy/scope_not_granted",
                partner_rule,
            ),
            granted_by(json!({ "scope": "orders:write" }), client_rule),
        )
        .probe(
            "corp_subject_asks_for_partner_api",
            one(BFF, imp(&alice_corp).with("audience", "partner-api")),
            refused_by(
                400,
                "invalid_target",
                "policy/target_not_allowed",
                client_rule,
            ),
            refused_by(
                400,
                "invalid_target",
                "policy/target_not_allowed",
                client_rule,
            ),
        ),
        // Fields a by_issuer table leaves out come from its client; conditions add up.
        case(
            "by_issuer_conditions_add_up",
            bff_partner(json!({
                "conditions": [{ "token": "subject", "claim": "tenant", "equals": "partner-co" }],
            })),
            bff_partner(json!({})),
        )
        .both(merged(
            &accepts_partner,
            &bff(json!({
                "conditions": [{ "token": "subject", "claim": "email", "present": true }],
            })),
        ))
        .probe(
            "partner_subject_of_another_tenant",
            one(BFF, imp(&other_emailed)),
            not_met(partner_rule),
            granted_by(json!({ "sub": "alice" }), partner_rule),
        )
        .probe(
            "partner_subject_meeting_both",
            one(BFF, imp(&partner_co_emailed)),
            granted_by(json!({ "sub": "alice" }), partner_rule),
            granted_by(json!({ "sub": "alice" }), partner_rule),
        )
        .probe(
            "partner_subject_without_email",
            one(BFF, imp(&partner_co)),
            not_met(partner_rule),
            not_met(partner_rule),
        )
        .probe(
            "corp_subject_of_another_tenant",
            one(BFF, imp(&corp_other_emailed)),
            granted_by(json!({ "sub": "alice" }), client_rule),
            granted_by(json!({ "sub": "alice" }), client_rule),
        ),
        case(
            "by_issuer_ttl_seconds",
            bff_partner(json!({ "ttl_seconds": 60 })),
            bff_partner(json!({})),
        )
        .both(accepts_partner.clone())
        .probe(
            "partner_subject",
            one(BFF, imp(&alice_partner)),
            granted_by(json!({ "exp": NOW + 60 }), partner_rule),
            granted_by(json!({ "exp": NOW + 300 }), partner_rule),
        )
        .probe(
            "corp_subject_unaffected",
            one(BFF, imp(&alice_corp)),
            granted_by(json!({ "exp": NOW + 300 }), client_rule),
            granted_by(json!({ "exp": NOW + 300 }), client_rule),
        ),
        // The actor issuers a partner subject's exchange accepts come from its rule.
        case(
            "by_issuer_actor_issuers",
            bff_partner(json!({ "actor_issuers": ["partner"] })),
            bff_partner(json!({})),
        )
        .both(accepts_partner.clone())
        .probe(
            "partner_subject_partner_actor",
            one(BFF, del(&alice_partner, &bff_actor_partner)),
            granted_by(json!({ "act": { "sub": "bff" } }), partner_rule),
            refused(400, "invalid_request", "actor_token/issuer_not_accepted"),
        ),
    ];
    run("by_issuer", &w, cases).await;
}

// ---- policy files refused at start-up ----------------------------------------------------

/// One policy (a patch of [`base`], plus further files) start-up must refuse with an
/// error naming `file` (its end), `field` (rule and field, exactly) and a reason holding
/// every `…`-separated part of `reason`; or, with `field` empty, must accept. A TOML
/// schema error (`field` `toml`) names no rule: it must name the line of the offending
/// key (`colour` in these rows) instead.
struct Bad {
    name: &'static str,
    patch: Value,
    files: Vec<(&'static str, &'static str)>,
    file: &'static str,
    field: &'static str,
    reason: &'static str,
}

fn bad(name: &'static str, patch: Value, field: &'static str, reason: &'static str) -> Bad {
    Bad {
        name,
        patch,
        files: Vec::new(),
        file: "policies/test.toml",
        field,
        reason,
    }
}

fn accepted(name: &'static str, patch: Value) -> Bad {
    bad(name, patch, "", "")
}

#[tokio::test]
async fn bad_policy_files_are_refused_at_start_up() {
    let w = World::new().await;
    let partner = bff(json!({
        "subject_issuers": ["corp", "partner"],
        "subject_namespace": "issuer_claim",
    }));
    let with_partner = |fields: Value| merged(&partner, &bff_partner(fields));
    let cond = |c: Value| bff(json!({ "conditions": [c] }));
    let tenant_acme = json!({ "token": "subject", "claim": "tenant", "equals": "acme" });
    let with_pattern = |fields: Value| {
        merged(
            &bff(json!({ "audiences": ["orders-api", "https://*.example.com/"] })),
            &bff(fields),
        )
    };
    let defaults_elsewhere = ("z-defaults.toml", "[defaults]\nttl_seconds = 60\n");

    let rows = vec![
        accepted("ok_base", json!({})),
        bad(
            "unknown_field",
            bff(json!({ "colour": "blue" })),
            "toml",
            "unknown field `colour`",
        ),
        bad(
            "unknown_field_in_by_issuer",
            with_partner(json!({ "colour": "blue" })),
            "toml",
            "unknown field `colour`",
        ),
        bad(
            "unknown_field_in_condition",
            cond(merged(&tenant_acme, &json!({ "colour": "blue" }))),
            "toml",
            "unknown field `colour`",
        ),
        accepted("ok_claims", bff(json!({ "claims": ["email", "groups"] }))),
        bad(
            "reserved_claim_act",
            bff(json!({ "claims": ["email", "act"] })),
            "clients.bff.claims",
            "\"act\" is set by gleipnir",
        ),
        bad(
            "reserved_claim_sub",
            bff(json!({ "claims": ["sub"] })),
            "clients.bff.claims",
            "\"sub\" is set by gleipnir",
        ),
        bad(
            "reserved_claim_in_by_issuer",
            with_partner(json!({ "claims": ["may_act"] })),
            "clients.bff.by_issuer.partner.claims",
            "\"may_act\"",
        ),
        bad(
            "reserved_claim_in_defaults",
            json!({ "defaults": { "claims": ["iss"] } }),
            "defaults.claims",
            "\"iss\"",
        ),
        bad(
            "reserved_claim_sub_iss",
            bff(json!({ "claims": ["sub_iss"] })),
            "clients.bff.claims",
            "\"sub_iss\" is set by gleipnir",
        ),
        // Identity is (iss, sub): two subject issuers need a namespace.
        bad(
            "two_subject_issuers_without_namespace",
            bff(json!({ "subject_issuers": ["corp", "partner"] })),
            "clients.bff.subject_issuers",
            "names 2 issuers (\"corp\", \"partner\")…set subject_namespace = \"issuer_claim\"",
        ),
        bad(
            "self_counts_as_a_subject_issuer",
            orders(json!({ "subject_namespace": null })),
            "clients.orders-api.subject_issuers",
            "names 2 issuers (\"self\", \"corp\")",
        ),
        bad(
            "two_subject_issuers_in_defaults",
            json!({ "defaults": { "subject_issuers": ["corp", "partner"] } }),
            "defaults.subject_issuers",
            "names 2 issuers",
        ),
        accepted(
            "ok_one_issuer_listed_twice",
            bff(json!({ "subject_issuers": ["corp", "corp"] })),
        ),
        accepted(
            "ok_namespace_in_defaults",
            merged(
                &json!({ "defaults": { "subject_namespace": "issuer_claim" } }),
                &merged(
                    &bff(json!({ "subject_issuers": ["corp", "partner"] })),
                    &orders(json!({ "subject_namespace": null })),
                ),
            ),
        ),
        bad(
            "subject_namespace_unknown",
            bff(json!({ "subject_namespace": "prefix" })),
            "clients.bff.subject_namespace",
            "\"prefix\" is not \"issuer_claim\"",
        ),
        bad(
            "subject_namespace_in_by_issuer",
            with_partner(json!({ "subject_namespace": "issuer_claim" })),
            "clients.bff.by_issuer.partner.subject_namespace",
            "set per client",
        ),
        accepted(
            "ok_rate_limit",
            bff(json!({ "rate_limit": { "requests": 100, "seconds": 60 } })),
        ),
        bad(
            "rate_limit_zero_requests",
            bff(json!({ "rate_limit": { "requests": 0, "seconds": 60 } })),
            "clients.bff.rate_limit.requests",
            "must be between 1 and",
        ),
        bad(
            "rate_limit_window_too_long",
            bff(json!({ "rate_limit": { "requests": 1, "seconds": 3601 } })),
            "clients.bff.rate_limit.seconds",
            "must be between 1 and 3600",
        ),
        bad(
            "rate_limit_in_by_issuer",
            with_partner(json!({ "rate_limit": { "requests": 1, "seconds": 1 } })),
            "clients.bff.by_issuer.partner.rate_limit",
            "set per client",
        ),
        accepted("ok_by_issuer_of_a_subject_issuer", with_partner(json!({}))),
        bad(
            "by_issuer_not_a_subject_issuer",
            bff_partner(json!({})),
            "clients.bff.by_issuer.partner",
            "not one of this client's subject_issuers",
        ),
        bad(
            "by_issuer_unknown_issuer",
            bff(json!({ "by_issuer": { "nosuch": {} } })),
            "clients.bff.by_issuer.nosuch",
            "not one of this client's subject_issuers",
        ),
        bad(
            "client_only_field_in_by_issuer_delegate",
            with_partner(json!({ "delegate": true })),
            "clients.bff.by_issuer.partner.delegate",
            "set per client",
        ),
        bad(
            "client_only_field_in_by_issuer_subject_issuers",
            with_partner(json!({ "subject_issuers": ["partner"] })),
            "clients.bff.by_issuer.partner.subject_issuers",
            "set per client",
        ),
        bad(
            "by_issuer_nested",
            with_partner(json!({ "by_issuer": { "corp": {} } })),
            "clients.bff.by_issuer.partner.by_issuer",
            "do not nest",
        ),
        bad(
            "by_issuer_in_defaults",
            json!({ "defaults": { "by_issuer": { "corp": {} } } }),
            "defaults.by_issuer",
            "[clients.<id>]",
        ),
        Bad {
            files: vec![defaults_elsewhere],
            ..accepted("ok_defaults_in_another_file", json!({}))
        },
        Bad {
            files: vec![defaults_elsewhere],
            file: "policies/z-defaults.toml",
            ..bad(
                "two_defaults_across_files",
                json!({ "defaults": { "ttl_seconds": 120 } }),
                "defaults",
                "[defaults] is already set in …policies/test.toml",
            )
        },
        accepted("ok_condition", cond(tenant_acme.clone())),
        bad(
            "condition_with_equals_and_present",
            cond(merged(&tenant_acme, &json!({ "present": true }))),
            "clients.bff.conditions[0]",
            "exactly one of equals, one_of, present",
        ),
        bad(
            "condition_without_a_test",
            cond(json!({ "token": "subject", "claim": "tenant" })),
            "clients.bff.conditions[0]",
            "exactly one of equals, one_of, present",
        ),
        bad(
            "condition_on_token_neither",
            bff(json!({ "conditions": [
                tenant_acme,
                { "token": "neither", "claim": "tenant", "present": true },
            ] })),
            "clients.bff.conditions[1]",
            "\"neither\"",
        ),
        accepted("ok_pattern", with_pattern(json!({}))),
        bad(
            "audience_pattern_with_two_stars",
            bff(json!({ "audiences": ["orders-api", "https://*.*.example.com/"] })),
            "clients.bff.audiences",
            "at most one *",
        ),
        bad(
            "resource_pattern_with_two_stars",
            bff(json!({ "resources": ["https://*.example.com/v1/*"] })),
            "clients.bff.resources",
            "at most one *",
        ),
        bad(
            "default_audience_is_a_pattern",
            with_pattern(json!({ "default_audience": "https://*.example.com/" })),
            "clients.bff.default_audience",
            "not a pattern",
        ),
        bad(
            "default_audience_not_in_audiences",
            bff(json!({ "default_audience": "payments-api" })),
            "clients.bff.default_audience",
            "must be one of audiences",
        ),
        accepted(
            "ok_target_scopes",
            with_pattern(json!({ "target_scopes": {
                "https://*.example.com/": ["orders:read"],
                "https://orders.example/api": ["orders:write"],
            } })),
        ),
        bad(
            "target_scopes_key_not_a_target",
            bff(json!({ "target_scopes": { "payments-api": ["orders:read"] } })),
            "clients.bff.target_scopes.\"payments-api\"",
            "not an entry of audiences or resources",
        ),
        bad(
            "target_scopes_key_only_matched_by_a_pattern",
            with_pattern(
                json!({ "target_scopes": { "https://shop.example.com/": ["orders:read"] } }),
            ),
            "clients.bff.target_scopes.\"https://shop.example.com/\"",
            "not an entry of audiences or resources",
        ),
    ];

    let mut failures = Vec::new();
    for row in &rows {
        let policy = policy_text(&merged(&base(), &row.patch));
        let mut builder = w.builder(&policy);
        for (name, text) in &row.files {
            builder = builder.policy_file(name, text);
        }
        let result = builder.try_build_app("http://127.0.0.1:1").map(|_| ());
        let problem = match (result, row.field) {
            (Ok(()), "") => None,
            (Err(e), "") => Some(format!("want accepted, got: {e}")),
            (Ok(()), _) => Some(format!("want refused ({}), but it started", row.field)),
            (Err(e), field) => {
                let named = e.file.ends_with(row.file) && e.field == field;
                let line = policy.lines().position(|l| l.starts_with("colour ="));
                let located = field != "toml"
                    || line.is_some_and(|i| e.reason.ends_with(&format!("(line {})", i + 1)));
                let explained = row.reason.split('…').all(|part| e.reason.contains(part));
                (!named || !located || !explained).then(|| {
                    format!(
                        "want …{}: {field}: …{}…, got {}: {}: {}",
                        row.file, row.reason, e.file, e.field, e.reason
                    )
                })
            }
        };
        if let Some(problem) = problem {
            failures.push(format!(
                "  {}: {problem}\n    policy:\n      {}",
                row.name,
                policy.replace('\n', "\n      ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} start-up rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}
