// A real OpenID provider (panva's node-oidc-provider) on loopback, as an upstream issuer
// for tests/interop_oidc_provider.rs. Test-only: every key is generated at start, every
// secret below is a fixture of this file.
//
// usage: node op.mjs   -> prints one JSON line {"issuer": "http://127.0.0.1:PORT"} once
// listening, then serves until killed.
//
// Clients (client_credentials only, client_secret_basic):
//   alice-app / alice-app-secret   its tokens are the subject tokens
//   bff       / bff-op-secret      its tokens are the BFF's actor tokens
//   gleipnir  / gleipnir-op-secret gleipnir's own client, for introspection
// Resources (RFC 8707 resource indicators), each with audience "bff" and scope orders:read:
//   urn:gleipnir:es256   JWT access tokens (RFC 9068) signed ES256
//   urn:gleipnir:rs256   JWT access tokens signed RS256
//   urn:gleipnir:opaque  opaque access tokens (introspection; revocable at /token/revocation
//                        by the client they were issued to, tests/lifecycle_upstream.rs)
import { createServer } from 'node:http'
import { exportJWK, generateKeyPair } from 'jose'
import Provider, { errors } from 'oidc-provider'

async function signingKey (alg, kid) {
  const { privateKey } = await generateKeyPair(alg, { extractable: true, modulusLength: 2048 })
  return { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' }
}

const resources = {
  'urn:gleipnir:es256': { accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } },
  'urn:gleipnir:rs256': { accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } },
  'urn:gleipnir:opaque': { accessTokenFormat: 'opaque' }
}

const server = createServer()
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
const issuer = `http://127.0.0.1:${server.address().port}`

const client = (id, secret) => ({
  client_id: id,
  client_secret: secret,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: []
})

const provider = new Provider(issuer, {
  clients: [
    client('alice-app', 'alice-app-secret'),
    client('bff', 'bff-op-secret'),
    { ...client('gleipnir', 'gleipnir-op-secret'), grant_types: [] }
  ],
  jwks: { keys: [await signingKey('ES256', 'op-es256'), await signingKey('RS256', 'op-rs256')] },
  scopes: ['orders:read'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:gleipnir:es256',
      getResourceServerInfo: (_ctx, resource) => {
        const info = resources[resource]
        if (!info) throw new errors.InvalidTarget()
        return { scope: 'orders:read', audience: 'bff', accessTokenTTL: 600, ...info }
      }
    }
  }
})

server.on('request', provider.callback())
console.log(JSON.stringify({ issuer }))
