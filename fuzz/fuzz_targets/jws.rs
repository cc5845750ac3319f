//! A presented token as the JWS path reads it: three segments, the strict header and the
//! strict claims set (nested `act`, `may_act`, `aud` shapes, NumericDates).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        gleipnir::token::fuzzing::parse_compact(token);
    }
});
