//! An upstream issuer's JWKS, parsed key by key.
#![no_main]

use gleipnir::jose::{JwsAlgorithm, KeySet};
use libfuzzer_sys::fuzz_target;

const ALL: [JwsAlgorithm; 9] = [
    JwsAlgorithm::Rs256,
    JwsAlgorithm::Rs384,
    JwsAlgorithm::Rs512,
    JwsAlgorithm::Ps256,
    JwsAlgorithm::Ps384,
    JwsAlgorithm::Ps512,
    JwsAlgorithm::Es256,
    JwsAlgorithm::Es384,
    JwsAlgorithm::EdDsa,
];

fuzz_target!(|data: &[u8]| {
    let _ = KeySet::from_jwks(data, &ALL);
});
