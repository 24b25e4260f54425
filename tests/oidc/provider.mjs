// A real OpenID Connect provider for Tollgate's tests: oidc-provider with client-credentials
// clients (one per test user), JWT access tokens carrying `preferred_username` and `groups`.
// With CONSOLE_REDIRECT set, also a `console` client for the authorization-code flow (PKCE,
// secret `console-secret`) redirecting there, and oidc-provider's development sign-in page:
// any login with any password, the user `admin` in the group `admins`.
//
//   node provider.mjs PORT KEYS_FILE [ISSUER_PATH]
//
// KEYS_FILE holds the signing keys (a JWKS with private parts); it is created on first use,
// so restarting with the same file keeps the keys and with another file rotates them.
// Prints "ready" when listening.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const [port, keysFile, issuerPath = ''] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}${issuerPath}`;

function keys() {
  if (existsSync(keysFile)) return JSON.parse(readFileSync(keysFile, 'utf8'));
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const ed = generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' });
  const jwks = {
    keys: [
      { ...rsa, kid: `rsa-${randomUUID()}`, alg: 'RS256', use: 'sig' },
      { ...ec, kid: `ec-${randomUUID()}`, alg: 'ES256', use: 'sig' },
      { ...ed, kid: `ed-${randomUUID()}`, alg: 'EdDSA', use: 'sig' },
    ],
  };
  writeFileSync(keysFile, JSON.stringify(jwks));
  return jwks;
}

// Test users: each a client. `alg` picks the signing algorithm of its tokens.
const users = {
  'lead-client': { preferred_username: 'lead', groups: ['gemini-access'], alg: 'RS256' },
  'dev-client': { preferred_username: 'dev', groups: [], alg: 'ES256' },
  'admin-client': { preferred_username: 'admin', groups: ['admins'], alg: 'EdDSA' },
  'stranger-client': { preferred_username: 'stranger', groups: [], alg: 'RS256' },
};

// Users of the browser sign-in, by login.
const people = { admin: ['admins'], dev: [] };
const consoleRedirect = process.env.CONSOLE_REDIRECT;

const ttl = Number(process.env.TOKEN_TTL || 300);
const provider = new Provider(issuer, {
  clients: [
    ...Object.keys(users).map((id) => ({
      client_id: id,
      client_secret: `${id}-secret`,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_post',
    })),
    ...(consoleRedirect
      ? [{
          client_id: 'console',
          client_secret: 'console-secret',
          grant_types: ['authorization_code'],
          response_types: ['code'],
          redirect_uris: [consoleRedirect],
          token_endpoint_auth_method: 'client_secret_basic',
        }]
      : []),
  ],
  jwks: keys(),
  scopes: ['api'],
  claims: { openid: ['sub'], profile: ['preferred_username'], groups: ['groups'] },
  // The ID token carries the user's claims (the console reads the groups from it).
  conformIdTokenClaims: false,
  findAccount: (ctx, sub) => ({
    accountId: sub,
    claims: () => ({ sub, preferred_username: sub, groups: people[sub] || [] }),
  }),
  // The console is a first-party client: no consent screen.
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile groups');
    await grant.save();
    return grant;
  },
  features: {
    devInteractions: { enabled: Boolean(consoleRedirect) },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:kong-ai-gateway',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => ({
        scope: 'api',
        audience: resource,
        accessTokenTTL: ttl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: users[client.clientId]?.alg || 'RS256' } },
      }),
    },
  },
  extraTokenClaims: (ctx, token) => {
    const user = users[token.clientId];
    return user ? { preferred_username: user.preferred_username, groups: user.groups } : {};
  },
});

provider.listen(Number(port), '127.0.0.1', () => console.log('ready'));
