//! Reading a form body from hyper: media type, size cap before and while reading, a
//! deadline, and a byte budget shared by every body being read at once, so a slow or
//! oversized body, or many of them, never ties up the service or its memory.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use tokio::sync::{Semaphore, SemaphorePermit};

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

/// Reads and decodes the form body of a request. Every byte buffered takes a permit of
/// `budget` (one per byte, shared by all requests) until the form is decoded: when the
/// budget is spent the request is refused at once rather than waiting, since waiting
/// would let a flood of slow bodies queue everyone else behind it.
pub async fn read_form(
    headers: &HeaderMap,
    body: Incoming,
    max_bytes: usize,
    budget: &Semaphore,
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
    let (bytes, _held) = tokio::time::timeout(BODY_DEADLINE, collect(body, max_bytes, budget))
        .await
        .map_err(|_| BodyError::Timeout)??;
    Ok(FormBody::parse(&bytes)?)
}

/// The body's bytes (at most `max_bytes`) and the budget permits they hold.
async fn collect(
    mut body: Incoming,
    max_bytes: usize,
    budget: &Semaphore,
) -> Result<(Bytes, Option<SemaphorePermit<'_>>), BodyError> {
    let mut bytes = BytesMut::new();
    let mut held: Option<SemaphorePermit<'_>> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| BodyError::Read)?.into_data() else {
            continue; // trailers
        };
        if bytes.len().saturating_add(data.len()) > max_bytes {
            return Err(BodyError::TooLarge);
        }
        let n = u32::try_from(data.len()).map_err(|_| BodyError::TooLarge)?;
        let permit = budget
            .try_acquire_many(n)
            .map_err(|_| BodyError::BudgetExhausted)?;
        match held.as_mut() {
            Some(held) => held.merge(permit),
            None => held = Some(permit),
        }
        bytes.extend_from_slice(&data);
    }
    Ok((bytes.freeze(), held))
}
