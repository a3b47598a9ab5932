'use strict';
// Connection-state recovery with the official client (socket.io-client >= 4.6): the transport is
// killed under the client, messages are published while it is away, and on reconnection it gets
// every one of them once, in order, with recovered === true. After the session expired it gets
// recovered === false and nothing stale.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startInteropServer } = require('../lib/server');
const { connect, waitConnected, once, ack, waitUntil, closeAll } = require('../lib/client');

const SESSION_MS = 1500;
let server;
before(async () => { server = await startInteropServer(['--recovery', String(SESSION_MS)]); });
after(async () => { closeAll(); if (server) await server.stop(); });

/** Cuts the TCP connection under the client, as a network drop would. */
function killTransport(socket) {
  const transport = socket.io.engine.transport;
  if (transport.name === 'websocket') {
    transport.ws._socket.destroy();
  } else {
    // Long-polling: abort the pending request's socket.
    const req = transport.pollXhr && transport.pollXhr._xhr;
    if (req && req.abort) req.abort();
    socket.io.engine.close();
  }
}

for (const transports of [['websocket'], ['polling', 'websocket']]) {
  const label = transports.join('+');
  describe(`recovery (${label})`, () => {
    it('missed room messages arrive once, in order, and the socket keeps its id and rooms', async () => {
      const publisher = await connect(server.url, { transports: ['websocket'] });
      const client = await connect(server.url, { transports, reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200 });
      if (transports.length > 1) await waitUntil(() => client.io.engine.transport.name === 'websocket', { what: 'upgrade' });
      assert.equal(client.recovered, false, 'a first connection is not a recovery');
      assert.deepEqual(await ack(client, 'join', 'news'), { ok: true });
      const got = [];
      client.on('news', (n) => got.push(n));

      // One message while connected, so the client holds an offset.
      assert.deepEqual(await ack(publisher, 'publish', { room: 'news', event: 'news', data: 0 }), { ok: true });
      await waitUntil(() => got.length === 1, { what: 'first message' });
      const id = client.id;

      const dropped = once(client, 'disconnect');
      killTransport(client);
      const [reason] = await dropped;
      assert.equal(reason, 'transport close');
      for (let n = 1; n <= 20; n++) {
        assert.deepEqual(await ack(publisher, 'publish', { room: 'news', event: 'news', data: n }), { ok: true });
      }
      await waitConnected(client);
      assert.equal(client.recovered, true);
      assert.equal(client.id, id, 'same socket id');
      await waitUntil(() => got.length === 21, { what: 'missed messages' });
      assert.deepEqual(got, Array.from({ length: 21 }, (_, i) => i));
      // Still in the room, without joining again.
      assert.deepEqual(await ack(publisher, 'publish', { room: 'news', event: 'news', data: 21 }), { ok: true });
      await waitUntil(() => got.length === 22, { what: 'live message after recovery' });
      const rooms = await ack(client, 'rooms');
      assert.ok(rooms.includes('news') && rooms.includes(id), JSON.stringify(rooms));
      client.disconnect();
      publisher.disconnect();
    });
  });
}

describe('recovery after the session expired', () => {
  it('recovered is false and nothing stale is replayed', async () => {
    const publisher = await connect(server.url, { transports: ['websocket'] });
    const client = await connect(server.url, {
      transports: ['websocket'],
      reconnection: true,
      reconnectionDelay: SESSION_MS + 700,
      reconnectionDelayMax: SESSION_MS + 700,
      randomizationFactor: 0,
    });
    assert.deepEqual(await ack(client, 'join', 'late'), { ok: true });
    const got = [];
    client.on('late', (n) => got.push(n));
    assert.deepEqual(await ack(publisher, 'publish', { room: 'late', event: 'late', data: 'seen' }), { ok: true });
    await waitUntil(() => got.length === 1, { what: 'first message' });
    const id = client.id;
    killTransport(client);
    assert.deepEqual(await ack(publisher, 'publish', { room: 'late', event: 'late', data: 'stale' }), { ok: true });
    await waitConnected(client, SESSION_MS + 10000);
    await waitUntil(() => client.connected, { what: 'reconnected' });
    assert.equal(client.recovered, false);
    assert.notEqual(client.id, id, 'a new socket');
    // Give a replay, if any were wrongly sent, the time to arrive.
    await ack(client, 'rooms');
    assert.deepEqual(got, ['seen']);
    client.disconnect();
    publisher.disconnect();
  });
});
