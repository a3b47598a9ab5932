'use strict';
// Connect and exchange events with the official client over each transport setup.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startInteropServer } = require('../lib/server');
const { createClient, waitConnected, once, ackAll, closeAll, waitUntil } = require('../lib/client');

let server;
before(async () => { server = await startInteropServer(); });
after(async () => { closeAll(); if (server) await server.stop(); });

const ARGS = [1, 'two', { three: [3, true, null] }, [4.5, 'x'], 'üñí©ødé ✓ 🚀', false];

async function exchange(socket) {
  const back = once(socket, 'message-back');
  socket.emit('message', ...ARGS);
  assert.deepEqual(await back, ARGS);
  assert.deepEqual(await ackAll(socket, 'message-with-ack', ...ARGS), ARGS);
  // No arguments at all.
  const empty = once(socket, 'message-back');
  socket.emit('message');
  assert.deepEqual(await empty, []);
}

describe('transports', () => {
  it('websocket only', async () => {
    const socket = createClient(server.url, { transports: ['websocket'] });
    const auth = once(socket, 'auth');
    await waitConnected(socket);
    assert.deepEqual(await auth, [{}]);
    assert.equal(socket.io.engine.transport.name, 'websocket');
    await exchange(socket);
    assert.equal(socket.io.engine.transport.name, 'websocket');
    socket.disconnect();
  });

  it('polling only', async () => {
    const socket = createClient(server.url, { transports: ['polling'] });
    const auth = once(socket, 'auth');
    await waitConnected(socket);
    assert.deepEqual(await auth, [{}]);
    await exchange(socket);
    assert.equal(socket.io.engine.transport.name, 'polling');
    socket.disconnect();
  });

  it('polling then upgrade to websocket', async () => {
    const socket = createClient(server.url, { transports: ['polling', 'websocket'] });
    const auth = once(socket, 'auth');
    // The upgrade may finish before or after the namespace connect; listen from the start.
    const upgraded = once(socket.io, 'open').then(() => {
      if (socket.io.engine.transport.name === 'websocket') return [socket.io.engine.transport];
      return once(socket.io.engine, 'upgrade');
    });
    await waitConnected(socket);
    assert.deepEqual(await auth, [{}]);
    const [transport] = await upgraded;
    assert.equal(transport.name, 'websocket');
    assert.equal(socket.io.engine.transport.name, 'websocket');
    await exchange(socket);
    socket.disconnect();
  });

  it('many events in a burst keep their order', async () => {
    for (const transports of [['websocket'], ['polling']]) {
      const socket = createClient(server.url, { transports });
      await waitConnected(socket);
      const got = [];
      socket.on('message-back', (n) => got.push(n));
      for (let i = 0; i < 200; i++) socket.emit('message', i);
      await waitUntil(() => got.length >= 200 || !socket.connected, { what: '200 message-back events' });
      assert.deepEqual(got, Array.from({ length: 200 }, (_, i) => i), transports.join());
      socket.disconnect();
    }
  });
});
