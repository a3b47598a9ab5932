'use strict';
// The origin policy of `ferrio serve` on both transports: the official socket.io-client
// (polling over fetch, which can set an Origin header in Node, and WebSocket) and raw
// http/ws requests, for an evil, a `null` and look-alike origins.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Fetch } = require('engine.io-client');
const { connect, createClient, ack, closeAll, forget } = require('../lib/client');
const raw = require('../lib/raw');
const sec = require('../lib/security');

const SECRET = 'interop-origin-secret-0123456789abcdef-012';
const ALLOWED = ['https://app.example.com', 'https://a.b.example.org'];
const REFUSED = [
  'https://evil.com',
  'null',
  'https://app.example.com.evil.com',
  'https://evilexample.org',
  'https://example.org',
  'http://app.example.com',
  'https://app.example.com:8443',
];

describe('ferrio serve: origin policy', sec.ferrioOnly, () => {
  let server;
  before(async () => {
    server = await sec.startSecure([
      '[auth]',
      `secret = "${SECRET}"`,
      '[origin]',
      'allowed = ["https://app.example.com", "https://*.example.org"]',
      'credentials = true',
    ].join('\n'));
  });
  after(async () => {
    closeAll();
    raw.closeAllRaw();
    if (server) await server.stop();
    sec.removeFiles();
  });

  const auth = () => ({ token: sec.hsToken(SECRET, 'olga', { rooms: ['x'] }) });
  const transportsOf = { polling: [Fetch], websocket: ['websocket'] };

  for (const [name, transports] of Object.entries(transportsOf)) {
    it(`allowed origins connect (${name})`, async () => {
      for (const origin of ALLOWED) {
        const s = await connect(server.url, { transports, extraHeaders: { Origin: origin }, auth: auth() });
        assert.deepEqual(await ack(s, 'join', 'x'), { ok: true }, origin);
        s.disconnect();
      }
    });

    it(`refused origins never get a session (${name})`, async () => {
      for (const origin of [...REFUSED, undefined]) {
        const extraHeaders = origin === undefined ? {} : { Origin: origin };
        const s = createClient(server.url, { transports, extraHeaders, auth: auth() });
        const err = await new Promise((resolve) => {
          s.once('connect', () => resolve(null));
          s.once('connect_error', resolve);
        });
        assert.ok(err, `${origin} connected`);
        assert.ok(!s.io.engine || !s.io.engine.id, `${origin}: the client got a session id`);
        s.close();
        forget(s);
      }
    });
  }

  it('raw requests see 403 before any session or upgrade, and CORS only for allowed origins', async () => {
    for (const origin of REFUSED) {
      const polling = await raw.request(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { Origin: origin } });
      assert.equal(polling.status, 403, origin);
      assert.deepEqual(JSON.parse(polling.body), { code: 4, message: 'origin not allowed' });
      assert.equal(polling.headers['access-control-allow-origin'], undefined, origin);
      assert.equal(await sec.wsStatus(raw.wsUrl(server.url), { Origin: origin }), 403, origin);
    }
    const ok = await raw.request(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { Origin: ALLOWED[1] } });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers['access-control-allow-origin'], ALLOWED[1]);
    assert.equal(ok.headers['access-control-allow-credentials'], 'true');
    assert.equal(ok.headers.vary, 'Origin');
    assert.equal(await sec.wsStatus(raw.wsUrl(server.url), { Origin: ALLOWED[0] }), 101);
  });
});
