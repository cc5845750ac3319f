//! Reading a form body from hyper: media type, size cap before and while reading, and a
//! deadline, so a slow or oversized body never ties up the service (EXCHANGE-RULES §2).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};

use crate::oauth::form::{BodyError, FormBody};

/// How long a client has to send the whole body.
const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Whether the Content-Type is `application/x-www-form-urlencoded` (parameters such as
/// `charset` allowed; media types compare case-insensitively, RFC 9110 §8.3.1).
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Reads and decodes the form body of a request.
pub async fn read_form(
    headers: &HeaderMap,
    body: Incoming,
    max_bytes: usize,
) -> Result<FormBody, BodyError> {
    if !is_form(headers) {
        return Err(BodyError::UnsupportedContentType);
    }
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_bytes as u64) {
        return Err(BodyError::TooLarge);
    }
    let collected = tokio::time::timeout(BODY_DEADLINE, Limited::new(body, max_bytes).collect())
        .await
        .map_err(|_| BodyError::Timeout)?;
    let bytes: Bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return Err(BodyError::TooLarge),
        Err(_) => return Err(BodyError::Read),
    };
    Ok(FormBody::parse(&bytes)?)
}
