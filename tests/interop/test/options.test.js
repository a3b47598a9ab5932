'use strict';
// Command line options of the test server: --transports and --connect-timeout.

const { describe, it, after } = require('node:test');
const assert = require('node:assert/strict');
const { startInteropServer } = require('../lib/server');
const { connect, ack, closeAll } = require('../lib/client');
const raw = require('../lib/raw');

const servers = [];
async function start(args) {
  const s = await startInteropServer(args);
  servers.push(s);
  return s;
}
after(async () => {
  closeAll();
  raw.closeAllRaw();
  await Promise.all(servers.map((s) => s.stop()));
});

describe('--transports', () => {
  it('polling only: no upgrades offered, WebSocket refused, polling clients work', async () => {
    const server = await start(['--transports', 'polling']);
    const { open } = await raw.pollingHandshake(server.url);
    assert.deepEqual(open.upgrades, []);
    const ws = raw.openWs(raw.wsUrl(server.url));
    await assert.rejects(ws.opened, (err) => err.statusCode === 400);
    const s = await connect(server.url, { transports: ['polling', 'websocket'] });
    assert.equal(await ack(s, 'message-with-ack', 'p'), 'p');
    assert.equal(s.io.engine.transport.name, 'polling');
    s.disconnect();
  });

  it('websocket only: polling handshake → 400 code 0, WebSocket clients work', async () => {
    const server = await start(['--transports', 'websocket']);
    const res = await raw.request(`${server.url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(res.status, 400);
    assert.deepEqual(JSON.parse(res.body), { code: 0, message: 'Transport unknown' });
    const s = await connect(server.url, { transports: ['websocket'] });
    assert.equal(await ack(s, 'message-with-ack', 'w'), 'w');
    s.disconnect();
  });
});

describe('--connect-timeout', () => {
  it('a connection without CONNECT is closed after the connect timeout; a connected one stays', async () => {
    const server = await start(['--connect-timeout', 500]);
    const t0 = Date.now();
    const idle = await raw.wsHandshake(server.url);
    const connected = await raw.sioConnect(server.url);
    await idle.ws.waitClosed(500 + 5000);
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 450, `closed after ${elapsed} ms`);
    connected.ws.send('421["message-with-ack","here"]');
    assert.equal(await connected.ws.next(), '431["here"]');
    assert.equal(connected.ws.isClosed, false);
  });
});
