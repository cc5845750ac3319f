//! An upstream issuer's JWKS, parsed key by key.
#![no_main]

use gleipnir::jose::{JwsAlgorithm, KeySet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = KeySet::from_jwks(data, &JwsAlgorithm::ALL);
});
