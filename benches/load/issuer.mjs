// The upstream issuer of the load benchmark (benches/load/run), on loopback. Test-only:
// both keys are generated at start and live only in this process; nothing is written but
// public tokens.
//
// usage: node issuer.mjs <out-dir>
//
// Generates an RS256 key (2048 bits) and an ES256 key, serves their JWKS at
// GET /jwks.json (Cache-Control max-age=3600, so gleipnir fetches it once), writes
// long-lived (just under 24 h) RFC 9068 access tokens (header typ at+jwt) to <out-dir>:
//   subject_rs256.jwt  alice's token issued to the client bff (aud bff), RS256: scenario a
//   subject_es256.jwt  the same, ES256: subject of scenario b
//   actor_es256.jwt    bff's own token (sub bff, client_id bff), ES256: actor of scenario b
// and, when the environment sets MANY=<n> (benches/load/egress), n distinct users' ES256
// tokens issued to bff, one per line:
//   many.jwt
// then prints one JSON line {"issuer": ..., "jwks_uri": ...} and serves until killed.
//
// jose comes from tests/interop/node_modules (npm ci --prefix tests/interop).
import { createServer } from 'node:http'
import { createRequire } from 'node:module'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const interop = new URL('../../tests/interop/package.json', import.meta.url)
const { exportJWK, generateKeyPair, SignJWT } = await import(
  pathToFileURL(createRequire(interop).resolve('jose')).href
)

const outDir = process.argv[2]
if (!outDir || process.argv.length !== 3) {
  console.error('usage: node issuer.mjs <out-dir>')
  process.exit(2)
}

const keys = {}
for (const [alg, kid] of [['RS256', 'load-rs256'], ['ES256', 'load-es256']]) {
  const { publicKey, privateKey } = await generateKeyPair(alg, { modulusLength: 2048 })
  keys[alg] = { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } }
}
const jwks = JSON.stringify({ keys: Object.values(keys).map((k) => k.jwk) })

const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/jwks.json') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=3600' })
    res.end(jwks)
  } else {
    res.writeHead(404).end()
  }
})
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const issuer = `http://127.0.0.1:${server.address().port}`

const now = Math.floor(Date.now() / 1000)
const sign = (alg, claims) =>
  // A lifetime (exp - iat) just under 24 h: an issuer's default maximum token lifetime.
  new SignJWT({ iss: issuer, iat: now - 60, exp: now + 86400 - 120, ...claims })
    .setProtectedHeader({ alg, kid: keys[alg].kid, typ: 'at+jwt' })
    .sign(keys[alg].privateKey)
const user = { sub: 'alice', aud: 'bff', scope: 'orders:read orders:write' }

writeFileSync(join(outDir, 'subject_rs256.jwt'), await sign('RS256', { ...user, jti: 'load-a' }))
writeFileSync(join(outDir, 'subject_es256.jwt'), await sign('ES256', { ...user, jti: 'load-b' }))
writeFileSync(join(outDir, 'actor_es256.jwt'), await sign('ES256', { sub: 'bff', client_id: 'bff', jti: 'load-actor' }))

const many = Number(process.env.MANY || 0)
if (many > 0) {
  const lines = []
  for (let i = 0; i < many; i++) {
    lines.push(await sign('ES256', { ...user, sub: `user-${i}`, jti: `load-many-${i}` }))
  }
  writeFileSync(join(outDir, 'many.jwt'), lines.join('\n') + '\n')
}

console.log(JSON.stringify({ issuer, jwks_uri: `${issuer}/jwks.json` }))
