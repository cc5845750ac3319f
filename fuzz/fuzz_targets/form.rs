//! The token endpoint's form body: strict decoding, then the RFC 8693 §2.1 parameters.
#![no_main]

use gleipnir::oauth::form::FormBody;
use gleipnir::request::TokenExchangeRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(form) = FormBody::parse(data) {
        let _ = TokenExchangeRequest::from_form(&form);
    }
});
