// A real OpenID Provider for tests: panva/node-oidc-provider with its development login pages
// (any login name, any password). The account name decides the groups claim:
// "admin-*" -> bridge-admins, "op-*" -> bridge-operators, "view-*" -> bridge-viewers, else none.
// Usage: PORT=... CLIENT_ID=... CLIENT_SECRET=... REDIRECT_URI=... node server.mjs
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const groupsOf = (id) => (id.startsWith('admin-') ? ['bridge-admins']
  : id.startsWith('op-') ? ['bridge-operators']
    : id.startsWith('view-') ? ['bridge-viewers'] : []);

const provider = new Provider(issuer, {
  clients: [{
    client_id: process.env.CLIENT_ID,
    client_secret: process.env.CLIENT_SECRET,
    redirect_uris: [process.env.REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  claims: { openid: ['sub'], profile: ['preferred_username', 'name'], groups: ['groups'] },
  scopes: ['openid', 'profile', 'groups'],
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, name: id, groups: groupsOf(id) };
      },
    };
  },
  cookies: { keys: ['test-only-cookie-key-0123456789'] },
});
provider.proxy = false;
provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
