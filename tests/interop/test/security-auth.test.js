'use strict';
// `ferrio serve` with JWT authentication, driven by the official socket.io-client: the token
// in the CONNECT auth payload, every refusal's CONNECT_ERROR reason, token:expiring / refresh,
// and the disconnect of a socket whose token ran out.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { createClient, connect, expectConnectError, once, ack, closeAll, forget } = require('../lib/client');
const raw = require('../lib/raw');
const sec = require('../lib/security');

const SECRET = 'interop-secret-0123456789abcdef-0123456789';
const ISS = 'https://issuer.test';
const AUD = 'ferrio';

const rsa = sec.keyPair('rsa', { modulusLength: 2048 });
const otherRsa = sec.keyPair('rsa', { modulusLength: 2048 });
const ec = sec.keyPair('ec', { namedCurve: 'P-256' });

/** Valid claims for this server, for an hour. */
const claims = (sub, extra = {}) => ({ sub, iss: ISS, aud: AUD, exp: sec.now() + 3600, iat: sec.now(), ...extra });
const hs = (c) => sec.signJwt({ alg: 'HS256', typ: 'JWT' }, c, SECRET);
const rs = (c, kid) => sec.signJwt({ alg: 'RS256', typ: 'JWT', kid }, c, rsa.privateKey);

async function refusal(url, auth, transports = ['websocket']) {
  const socket = createClient(url, { auth, transports });
  const err = await expectConnectError(socket);
  socket.close();
  forget(socket);
  return err;
}

async function reasonOf(url, auth, transports) {
  const err = await refusal(url, auth, transports);
  assert.equal(err.message, 'unauthorized');
  return err.data && err.data.reason;
}

describe('ferrio serve: JWT on connect', sec.ferrioOnly, () => {
  let server;
  let keyOnly;
  let witness;
  before(async () => {
    const files = sec.writeFiles({
      'jwks.json': JSON.stringify({ keys: [sec.publicJwk(rsa.publicKey, 'k1', 'RS256')] }),
      'rsa.pub': rsa.publicKey,
    });
    server = await sec.startSecure([
      '[auth]',
      `secret = "${SECRET}"`,
      `jwks_file = ${JSON.stringify(files['jwks.json'])}`,
      `issuer = "${ISS}"`,
      `audience = ["${AUD}"]`,
      'leeway = "5s"',
      '[origin]',
      'allow_missing = true',
      '[rooms]',
      'join = ["public:*"]',
    ].join('\n'));
    // Only an RSA public key: the server an algorithm-confusion attack aims at.
    keyOnly = await sec.startSecure([
      '[auth]',
      `public_key_file = ${JSON.stringify(files['rsa.pub'])}`,
      '[origin]',
      'allow_missing = true',
    ].join('\n'));
    witness = await connect(server.url, { auth: { token: hs(claims('witness')) } });
  });
  after(async () => {
    closeAll();
    raw.closeAllRaw();
    if (server) await server.stop();
    if (keyOnly) await keyOnly.stop();
    sec.removeFiles();
  });

  for (const transports of [['websocket'], ['polling']]) {
    it(`a valid token in the auth payload connects (${transports})`, async () => {
      const s = await connect(server.url, { transports, auth: { token: hs(claims('alice')) } });
      assert.ok(s.id);
      assert.deepEqual(await ack(s, 'join', 'public:lobby'), { ok: true });
      s.disconnect();
      const viaJwks = await connect(server.url, { transports, auth: { token: rs(claims('bob'), 'k1') } });
      assert.ok(viaJwks.id);
      viaJwks.disconnect();
    });

    it(`no token, or no usable one, is refused (${transports})`, async () => {
      assert.equal(await reasonOf(server.url, undefined, transports), 'token_missing');
      assert.equal(await reasonOf(server.url, { token: 'not-a-jwt' }, transports), 'token_malformed');
    });
  }

  it('every bad token gets its reason', async () => {
    const good = claims('mallory');
    const cases = [
      ['missing', {}, 'token_missing'],
      ['empty', { token: '' }, 'token_missing'],
      ['malformed', { token: 'a.b' }, 'token_malformed'],
      ['not a string', { token: { nested: true } }, 'token_malformed'],
      ['wrong signature', { token: sec.signJwt({ alg: 'HS256' }, good, 'another-secret-0123456789abcdef-012345') }, 'signature_invalid'],
      ['alg none', { token: sec.signJwt({ alg: 'none', typ: 'JWT' }, good, '') }, 'algorithm_not_allowed'],
      ['alg none, HS256 signature kept', { token: hs(good).replace(/^[^.]+/, sec.b64url('{"alg":"none"}')) }, 'algorithm_not_allowed'],
      ['expired', { token: hs(claims('mallory', { exp: sec.now() - 3600 })) }, 'token_expired'],
      ['not yet valid', { token: hs(claims('mallory', { nbf: sec.now() + 3600 })) }, 'token_not_yet_valid'],
      ['wrong iss', { token: hs(claims('mallory', { iss: 'https://evil.test' })) }, 'issuer_invalid'],
      ['wrong aud', { token: hs(claims('mallory', { aud: 'other-service' })) }, 'audience_invalid'],
      ['no exp', { token: hs({ sub: 'mallory', iss: ISS, aud: AUD }) }, 'claims_invalid'],
      ['unknown kid', { token: rs(good, 'k2') }, 'unknown_kid'],
      ['known kid, other key', { token: sec.signJwt({ alg: 'RS256', kid: 'k1' }, good, otherRsa.privateKey) }, 'signature_invalid'],
      ['kid of an RSA key, ES256', { token: sec.signJwt({ alg: 'ES256', kid: 'k1' }, good, ec.privateKey) }, 'unknown_kid'],
    ];
    for (const [what, auth, reason] of cases) {
      assert.equal(await reasonOf(server.url, auth), reason, what);
    }
    // Nobody else noticed.
    assert.ok(witness.connected);
    assert.deepEqual(await ack(witness, 'join', 'public:still-here'), { ok: true });
  });

  it('HS/RS confusion: an HMAC over the public key is refused', async () => {
    const c = { sub: 'mallory', exp: sec.now() + 3600 };
    const confused = sec.signJwt({ alg: 'HS256', typ: 'JWT' }, c, rsa.publicKey);
    assert.equal(await reasonOf(keyOnly.url, { token: confused }), 'algorithm_not_allowed');
    assert.equal(await reasonOf(keyOnly.url, { token: sec.signJwt({ alg: 'none' }, c, '') }), 'algorithm_not_allowed');
    const s = await connect(keyOnly.url, { auth: { token: sec.signJwt({ alg: 'RS256' }, c, rsa.privateKey) } });
    assert.ok(s.id);
    s.disconnect();
  });

  it('refusals are counted and no credential reaches the log', async () => {
    const token = hs(claims('logcheck'));
    const s = await connect(server.url, { auth: { token } });
    const engineId = s.io.engine.id;
    s.disconnect();
    await server.stop();
    const log = server.stderr();
    server = null;
    assert.match(log, /auth\.token_expired=1/);
    assert.match(log, /auth\.algorithm_not_allowed=2/);
    for (const secret of [token, SECRET, engineId]) {
      assert.ok(!log.includes(secret), `${secret.slice(0, 12)}... reached the log`);
    }
  });
});

describe('ferrio serve: token lifetime', sec.ferrioOnly, () => {
  let server;
  before(async () => {
    server = await sec.startSecure([
      '[auth]',
      `secret = "${SECRET}"`,
      'leeway = "1s"',
      'expiry_warning = "2s"',
      '[origin]',
      'allow_missing = true',
      '[rooms]',
      'join = ["public:*"]',
    ].join('\n'));
  });
  after(async () => {
    closeAll();
    if (server) await server.stop();
    sec.removeFiles();
  });

  const short = (sub, seconds) => sec.hsToken(SECRET, sub, { exp: sec.now() + seconds });

  it('warns before exp, takes a refreshed token, and disconnects the socket that did not refresh', async () => {
    const [refresher, sleeper] = await Promise.all([
      connect(server.url, { auth: { token: short('ann', 3) } }),
      connect(server.url, { auth: { token: short('ann', 3) }, transports: ['polling'] }),
    ]);
    const expiredEvent = once(sleeper, 'token:expired', { timeout: 15000 });
    const sleeperGone = once(sleeper, 'disconnect', { timeout: 15000 });

    const [warning] = await once(refresher, 'token:expiring', { timeout: 10000 });
    assert.equal(typeof warning.exp, 'number');
    assert.ok(warning.expires_in <= 3, JSON.stringify(warning));

    // A refresh must be a valid token of the same user.
    assert.deepEqual(await ack(refresher, 'refresh', 'junk'), { ok: false, error: 'token_malformed' });
    assert.deepEqual(await ack(refresher, 'refresh', { token: sec.hsToken(SECRET, 'bob') }), { ok: false, error: 'subject_mismatch' });
    assert.deepEqual(
      await ack(refresher, 'refresh', sec.hsToken(SECRET, 'ann', { exp: sec.now() - 60 })),
      { ok: false, error: 'token_expired' },
    );
    assert.deepEqual(await ack(refresher, 'refresh', {}), { ok: false, error: 'token_missing' });
    const fresh = sec.hsToken(SECRET, 'ann', { exp: sec.now() + 3600 });
    const answer = await ack(refresher, 'refresh', { token: fresh });
    assert.equal(answer.ok, true);
    assert.ok(answer.exp >= sec.now() + 3500);

    // The socket that did not refresh is told why and disconnected at exp + leeway.
    assert.deepEqual((await expiredEvent)[0], { reason: 'token_expired' });
    assert.equal((await sleeperGone)[0], 'io server disconnect');
    // The refreshed one lives on past the old exp.
    assert.ok(refresher.connected);
    assert.deepEqual(await ack(refresher, 'join', 'public:after-refresh'), { ok: true });
    refresher.disconnect();
  });
});
