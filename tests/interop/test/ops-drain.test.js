'use strict';
// `ferrio serve` draining on SIGTERM, seen by the official client: a transport close, after
// which the client tries to reconnect (to another node behind a load balancer); the server
// exits 0. The HTTP API reaching the official client.

const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServe, serverKind } = require('../lib/server');
const { connect, once, closeAll } = require('../lib/client');

const KEY = 'interop-api-key-0123456789';
const skip = serverKind() === 'node' ? 'operations endpoints are ferrio serve only' : false;

after(() => closeAll());

describe('ferrio serve operations (socket.io-client)', { skip }, () => {
  it('without API keys /api/ is off', async () => {
    const server = await startServe([]);
    try {
      const s = await connect(server.url, { transports: ['websocket'] });
      const res = await fetch(`${server.url}/api/stats`, { headers: { authorization: `Bearer ${KEY}` } });
      assert.equal(res.status, 404, 'no keys: the API is off');
      s.disconnect();
    } finally {
      await server.stop();
    }
  });

  for (const transports of [['websocket'], ['polling']]) {
    it(`SIGTERM: ${transports[0]} clients see "transport close" and try to reconnect; exit 0`, async () => {
      process.env.FERRIO_API__KEYS = KEY;
      const server = await startServe(['--shutdown-timeout', 3]);
      delete process.env.FERRIO_API__KEYS;
      // A failure before the SIGTERM must not leave the server (and this test file) running.
      try {
        await drainsAndExits(server, transports);
      } finally {
        if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL');
      }
    });
  }
});

async function drainsAndExits(server, transports) {
  const sockets = await Promise.all([0, 1, 2].map(() => connect(server.url, {
    transports, reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 100,
  })));
  // Listening before the request: the event may arrive before the HTTP answer does.
  const hellos = sockets.map((s) => once(s, 'hello'));
  const res = await fetch(`${server.url}/api/emit`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ event: 'hello', data: { from: 'backend' } }),
  });
  assert.equal(res.status, 200);
  const got = await Promise.all(hellos);
  for (const args of got) assert.deepEqual(args, [{ from: 'backend' }]);

  const reasons = sockets.map((s) => once(s, 'disconnect'));
  const attempts = sockets.map((s) => once(s.io, 'reconnect_attempt'));
  const exited = new Promise((r) => server.child.once('exit', (code, signal) => r({ code, signal })));
  process.kill(server.pid, 'SIGTERM');
  for (const [reason] of await Promise.all(reasons)) assert.equal(reason, 'transport close');
  await Promise.all(attempts);
  const { code } = await exited;
  assert.equal(code, 0);
  for (const s of sockets) s.disconnect();
}
