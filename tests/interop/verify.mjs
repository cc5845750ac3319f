// Independent verification of a gleipnir token with panva's `jose`, a JOSE library that
// shares no code with gleipnir (tests/interop_jose.rs drives it).
//
// usage: node verify.mjs <jwks-url> <token> <expected-iss> <expected-aud>
//
// Fetches the JWKS over HTTP, verifies the signature, `typ: at+jwt` (RFC 9068 §2.1),
// iss, aud and the time claims, then prints one JSON line {protectedHeader, payload}.
// Any failure: a message on stderr and a non-zero exit.
//
// The test server's clock is fixed (tests/support NOW, in 2030), so "now" for the time
// checks is the token's own `iat`: exp and nbf are still checked against it.
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose'

const [jwksUrl, token, issuer, audience] = process.argv.slice(2)
if (!jwksUrl || !token || !issuer || !audience || process.argv.length !== 6) {
  console.error('usage: node verify.mjs <jwks-url> <token> <expected-iss> <expected-aud>')
  process.exit(2)
}

try {
  const { iat } = decodeJwt(token)
  if (typeof iat !== 'number') {
    throw new Error('token has no numeric iat')
  }
  const jwks = createRemoteJWKSet(new URL(jwksUrl), { timeoutDuration: 5000 })
  const { protectedHeader, payload } = await jwtVerify(token, jwks, {
    algorithms: ['ES256', 'EdDSA'],
    typ: 'at+jwt',
    issuer,
    audience,
    currentDate: new Date(iat * 1000),
    requiredClaims: ['iat', 'exp', 'sub', 'jti'],
  })
  console.log(JSON.stringify({ protectedHeader, payload }))
} catch (e) {
  console.error(`verification failed: ${e?.code ?? e?.name ?? 'error'}: ${e?.message ?? e}`)
  process.exit(1)
}
