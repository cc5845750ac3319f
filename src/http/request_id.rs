//! The request id: the caller's `x-request-id` when it is well-formed (one header, 1 to
//! [`MAX_LEN`] characters of a safe set), so a gateway's or a client's id finds our log
//! lines, audit record and span; otherwise 128 random bits in hex. It is echoed in the
//! response. A caller chooses its own id, so an id it sent is a correlation key, not
//! proof that two records are one request.

use http::HeaderMap;

use super::REQUEST_ID_HEADER;

/// Longest request id kept (a UUID is 36 characters, a W3C trace id 32).
pub const MAX_LEN: usize = 128;

/// The id of the request with these headers.
pub fn of(headers: &HeaderMap) -> String {
    let mut values = headers.get_all(REQUEST_ID_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(value), None) if well_formed(value.as_bytes()) => {
            // Only ASCII passed: the conversion cannot fail.
            value.to_str().map_or_else(|_| new(), str::to_owned)
        }
        _ => new(),
    }
}

/// Letters, digits and `-._:+/=` (UUIDs, hex, base64, ULIDs, Envoy's and most gateways'
/// ids): nothing a log line, a JSON string or a header would need to escape.
fn well_formed(value: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:+/=".contains(b))
}

/// 128 random bits, hex: unique enough to find a request in the logs.
fn new() -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return "unknown".into();
    }
    let mut id = String::with_capacity(32);
    for b in bytes {
        let _ = std::fmt::Write::write_fmt(&mut id, format_args!("{b:02x}"));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(REQUEST_ID_HEADER, http::HeaderValue::from_bytes(v).unwrap());
        }
        headers
    }

    fn generated(id: &str) -> bool {
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
    }

    #[test]
    fn a_well_formed_incoming_id_is_kept() {
        let longest = "x".repeat(MAX_LEN);
        for id in [
            "f47ac10b-58cc-4372-a567-0e02b2c3d479",
            "req_01HZX3:9/abc+def==",
            "a",
            longest.as_str(),
        ] {
            assert_eq!(of(&with(&[id.as_bytes()])), id);
        }
    }

    #[test]
    fn a_missing_malformed_or_repeated_id_is_replaced() {
        let long = "x".repeat(MAX_LEN + 1);
        let cases: [&[&[u8]]; 7] = [
            &[],
            &[b""],
            &[long.as_bytes()],
            &[b"has space"],
            &[b"quote\"d"],
            &[b"caf\xc3\xa9"],
            &[b"one", b"two"],
        ];
        for values in cases {
            let id = of(&with(values));
            assert!(generated(&id), "{values:?} -> {id}");
        }
        assert_ne!(of(&HeaderMap::new()), of(&HeaderMap::new()));
    }
}
