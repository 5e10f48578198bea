// A real OpenID Connect provider for the auth service's tests: the certified `oidc-provider`
// package with one public client (PKCE S256 required, no client secret) and its built-in login
// and consent pages. Any login name signs in; the accounts below carry the claims the tests need.
//
//   node provider.mjs <port> <redirect_uri>
//
// Prints `ready <issuer>` on stdout once it listens on 127.0.0.1:<port>.
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [port, redirectUri] = process.argv.slice(2);
if (!port || !redirectUri) {
  console.error('usage: node provider.mjs <port> <redirect_uri>');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

// Accounts by login name. `email_verified: false` is how a provider says "we never checked".
const accounts = {
  alice: { email: 'alice@example.com', email_verified: true, name: 'Alice Liddell' },
  bob: { email: 'bob@example.com', email_verified: false, name: 'Bob Unverified' },
  carol: { email: 'carol@example.com', email_verified: true, name: 'Carol Newcomer' },
  dave: { email: 'dave@example.com', email_verified: true, name: 'Dave Twofactor' },
};

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'tienda',
      token_endpoint_auth_method: 'none',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: ['tienda-test-cookie-key'] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true, methods: ['S256'] },
  ttl: { Interaction: 600, Session: 3600, Grant: 3600, AuthorizationCode: 60, AccessToken: 600, IdToken: 600 },
  async findAccount(_ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...account };
      },
    };
  },
});
provider.on('server_error', (_ctx, err) => console.error('server_error', err));

provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
