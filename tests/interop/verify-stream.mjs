// A long-lived verifier of gleipnir tokens, as a resource server runs one: panva's `jose`
// with ONE remote JWKS set for the whole run, so its cache behaves as in production (keys
// kept for `cacheMaxAge`, 10 min by default; on an unknown `kid` a refetch at most every
// `cooldownDuration`, 30 s by default). tests/interop_rotation.rs drives it.
//
// usage: node verify-stream.mjs <jwks-url> <expected-iss> <expected-aud>
// Reads one token per line on stdin; writes one line per token: `ok <kid>`, or
// `fail <kid> <code>: <message>`. "Now" for the time checks is each token's own `iat`
// (the test server's clock is not the wall clock).
import { createInterface } from 'node:readline'
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose'

const [jwksUrl, issuer, audience] = process.argv.slice(2)
if (!jwksUrl || !issuer || !audience || process.argv.length !== 5) {
  console.error('usage: node verify-stream.mjs <jwks-url> <expected-iss> <expected-aud>')
  process.exit(2)
}

const jwks = createRemoteJWKSet(new URL(jwksUrl), { timeoutDuration: 5000 })
const lines = createInterface({ input: process.stdin, crlfDelay: Infinity })
for await (const token of lines) {
  if (!token) continue
  let kid = '?'
  try {
    kid = decodeProtectedHeader(token).kid ?? '?'
    const { iat } = decodeJwt(token)
    await jwtVerify(token, jwks, {
      algorithms: ['ES256', 'EdDSA'],
      typ: 'at+jwt',
      issuer,
      audience,
      currentDate: new Date(iat * 1000),
    })
    console.log(`ok ${kid}`)
  } catch (e) {
    console.log(`fail ${kid} ${e?.code ?? e?.name ?? 'error'}: ${e?.message ?? e}`)
  }
}
