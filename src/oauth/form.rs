//! Strict `application/x-www-form-urlencoded` decoding (the body of every token request).
//!
//! Stricter than the WHATWG parser on purpose: a malformed percent escape or bytes
//! that are not UTF-8 are errors instead of being replaced, because a token that was
//! silently altered in transit must not reach the validator as something else.
//! `+` is a space (HTML form encoding, RFC 6749 appendix B). Empty values count as
//! absent (RFC 6749 §3.1). Repetition is checked when a parameter is read as single
//! valued (RFC 6749 §3.2); unknown parameters are ignored (RFC 6749 §3.2).

use thiserror::Error;

/// Why a form body could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormError {
    /// A `%` not followed by two hex digits.
    #[error("malformed percent escape")]
    BadEscape,
    /// The decoded bytes are not UTF-8.
    #[error("parameter is not valid UTF-8")]
    NotUtf8,
}

/// A single-valued parameter appeared more than once (RFC 6749 §3.2); it names the
/// parameter.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("parameter {0} appears more than once")]
pub struct Repeated(pub &'static str);

/// Why a request's form body could not be had: the transport, before any parameter is
/// read (the size cap, the deadline, the media type, the form encoding).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// The body is larger than `server.max_body_bytes`.
    #[error("request body too large")]
    TooLarge,
    /// The body did not arrive in time.
    #[error("request body timed out")]
    Timeout,
    /// The connection failed while reading the body.
    #[error("request body could not be read")]
    Read,
    /// Content type other than `application/x-www-form-urlencoded`.
    #[error("content type is not application/x-www-form-urlencoded")]
    UnsupportedContentType,
    /// The body is not valid form encoding (bad escape, not UTF-8).
    #[error("malformed form body")]
    Malformed,
    /// The bodies being read at once already hold `server.max_buffered_body_bytes`.
    #[error("request body buffer budget exhausted")]
    BudgetExhausted,
}

impl BodyError {
    /// A stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyError::TooLarge => "body_too_large",
            BodyError::Timeout => "body_timeout",
            BodyError::Read => "body_read",
            BodyError::UnsupportedContentType => "unsupported_content_type",
            BodyError::Malformed => "malformed_body",
            BodyError::BudgetExhausted => "body_budget_exhausted",
        }
    }
}

impl From<FormError> for BodyError {
    fn from(_: FormError) -> Self {
        BodyError::Malformed
    }
}

/// A decoded form: the name/value pairs with a non-empty value, in order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FormBody {
    pairs: Vec<(String, String)>,
}

// Values carry tokens and secrets: never print them.
impl std::fmt::Debug for FormBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.pairs.iter().map(|(name, _)| name))
            .finish()
    }
}

impl FormBody {
    /// Decodes a form body.
    pub fn parse(body: &[u8]) -> Result<Self, FormError> {
        let mut pairs = Vec::new();
        for piece in body.split(|&b| b == b'&') {
            if piece.is_empty() {
                continue;
            }
            let (name, value) = match piece.iter().position(|&b| b == b'=') {
                Some(eq) => (
                    piece.get(..eq).unwrap_or_default(),
                    piece.get(eq + 1..).unwrap_or_default(),
                ),
                None => (piece, &b""[..]),
            };
            let name = decode(name)?;
            let value = decode(value)?;
            if !name.is_empty() && !value.is_empty() {
                pairs.push((name, value));
            }
        }
        Ok(Self { pairs })
    }

    /// The value of a single-valued parameter; absent when missing or empty.
    pub fn single(&self, name: &'static str) -> Result<Option<&str>, Repeated> {
        let mut values = self.all(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(Repeated(name));
        }
        Ok(first)
    }

    /// Every non-empty value of a parameter that may repeat (`audience`, `resource`).
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Percent-decodes one name or value, `+` as space, strictly. Also used for the two
/// halves of HTTP Basic client credentials (RFC 6749 §2.3.1).
pub fn decode(input: &[u8]) -> Result<String, FormError> {
    // A token needs no decoding (base64url and dots): copied whole, not byte by byte.
    if !input.iter().any(|&b| b == b'%' || b == b'+') {
        return std::str::from_utf8(input)
            .map(str::to_owned)
            .map_err(|_| FormError::NotUtf8);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut bytes = input.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.next().and_then(|&h| hex(h));
                let lo = bytes.next().and_then(|&l| hex(l));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(FormError::BadEscape),
                }
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes a value for a form body (used by the client side of `gleipnir dev`
/// and by tests); unreserved characters are kept, everything else is escaped.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_plus_and_escapes() {
        let form = FormBody::parse(b"a=x+y%2Bz&b=%C3%A9").unwrap();
        assert_eq!(form.single("a").unwrap(), Some("x y+z"));
        assert_eq!(form.single("b").unwrap(), Some("é"));
    }

    #[test]
    fn empty_values_are_absent_and_not_repeats() {
        let form = FormBody::parse(b"scope=&scope=read&&=x&audience").unwrap();
        assert_eq!(form.single("scope").unwrap(), Some("read"));
        assert_eq!(form.single("audience").unwrap(), None);
    }

    #[test]
    fn repeated_single_parameter_is_refused() {
        let form = FormBody::parse(b"scope=a&scope=b").unwrap();
        assert_eq!(form.single("scope"), Err(Repeated("scope")));
        let all: Vec<_> = form.all("scope").collect();
        assert_eq!(all, ["a", "b"]);
    }

    #[test]
    fn malformed_escapes_and_bad_utf8_are_refused() {
        for body in [&b"a=%"[..], b"a=%4", b"a=%zz", b"a=%4g", b"%=1"] {
            assert_eq!(FormBody::parse(body), Err(FormError::BadEscape), "{body:?}");
        }
        assert_eq!(FormBody::parse(b"a=%FF"), Err(FormError::NotUtf8));
        assert_eq!(FormBody::parse(b"a=\xff"), Err(FormError::NotUtf8));
    }

    #[test]
    fn debug_never_prints_values() {
        let form = FormBody::parse(b"client_secret=hunter2").unwrap();
        let printed = format!("{form:?}");
        assert!(printed.contains("client_secret"));
        assert!(!printed.contains("hunter2"));
    }

    proptest! {
        #[test]
        fn encode_then_parse_round_trips(pairs in proptest::collection::vec(("[a-z_]{1,12}", "\\PC{1,40}"), 0..8)) {
            let body = pairs
                .iter()
                .map(|(n, v)| format!("{}={}", encode(n), encode(v)))
                .collect::<Vec<_>>()
                .join("&");
            let form = FormBody::parse(body.as_bytes()).unwrap();
            let decoded: Vec<(String, String)> = form.pairs.clone();
            prop_assert_eq!(decoded, pairs);
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = FormBody::parse(&body);
        }
    }
}
