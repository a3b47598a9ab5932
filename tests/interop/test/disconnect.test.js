'use strict';
// Server-initiated disconnects: one namespace (close false) or the whole connection (close true).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startInteropServer } = require('../lib/server');
const {
  connect, createManager, waitConnected, once, ack, ackAll, closeAll, assertHealthy, waitUntil,
} = require('../lib/client');
const raw = require('../lib/raw');

let server;
before(async () => { server = await startInteropServer(); });
after(async () => { closeAll(); raw.closeAllRaw(); if (server) await server.stop(); });

for (const transports of [['websocket'], ['polling']]) {
  const label = transports.join('+');

  describe(`disconnect-me (${label})`, () => {
    it('close false: "io server disconnect" on /, the connection and /custom stay up', async () => {
      const watcher = await connect(server.url, { transports });
      await ack(watcher, 'watch');
      const manager = createManager(server.url, { transports });
      const root = manager.socket('/');
      const custom = manager.socket('/custom');
      root.connect();
      custom.connect();
      await Promise.all([waitConnected(root), waitConnected(custom)]);
      const id = root.id;
      const left = once(watcher, 'left', { filter: (info) => info.id === id });
      const rootGone = once(root, 'disconnect');
      const managerClosed = [];
      manager.on('close', (reason) => managerClosed.push(reason));
      root.emit('disconnect-me', false);
      assert.equal((await rootGone)[0], 'io server disconnect');
      assert.deepEqual(await left, [{ id, reason: 'server namespace disconnect' }]);
      // The other namespace on the same connection still works.
      assert.deepEqual(await ackAll(custom, 'message-with-ack', 'alive'), ['alive']);
      assert.equal(custom.connected, true);
      assert.deepEqual(managerClosed, []);
      assert.equal(manager.engine.readyState, 'open');
      // The client may connect to / again over the same connection.
      root.connect();
      await waitConnected(root);
      assert.deepEqual(await ackAll(root, 'message-with-ack', 'again'), ['again']);
      custom.disconnect();
      root.disconnect();
      watcher.disconnect();
    });

    it('close true: every namespace is disconnected and the whole connection closes', async () => {
      const watcher = await connect(server.url, { transports });
      await ack(watcher, 'watch');
      const manager = createManager(server.url, { transports });
      const root = manager.socket('/');
      const custom = manager.socket('/custom');
      root.connect();
      custom.connect();
      await Promise.all([waitConnected(root), waitConnected(custom)]);
      const id = root.id;
      const left = once(watcher, 'left', { filter: (info) => info.id === id });
      const rootGone = once(root, 'disconnect');
      const customGone = once(custom, 'disconnect');
      const managerClosed = once(manager, 'close');
      root.emit('disconnect-me', true);
      assert.equal((await rootGone)[0], 'io server disconnect');
      assert.equal((await customGone)[0], 'io server disconnect');
      await managerClosed;
      // Once every namespace is gone the client closes its side too, so which side closed the
      // connection first is not visible here; the wire test below checks the server.
      await waitUntil(() => manager.engine.readyState === 'closed', { what: 'engine closed' });
      assert.deepEqual(await left, [{ id, reason: 'server namespace disconnect' }]);
      watcher.disconnect();
      await assertHealthy(server.url, transports);
    });
  });
}

describe('disconnect-me on the wire', () => {
  async function twoNamespaces() {
    const { ws } = await raw.sioConnect(server.url);
    ws.send('40/custom,');
    assert.match(await ws.next(), /^40\/custom,\{"sid":"[^"]{20}"\}$/);
    assert.equal(await ws.next(), '42/custom,["auth",{}]');
    return ws;
  }

  it('close false: the server sends DISCONNECT for / only and keeps the connection', async () => {
    const ws = await twoNamespaces();
    ws.send('42["disconnect-me",false]');
    assert.equal(await ws.next(), '41');
    ws.send('42/custom,1["message-with-ack","still"]');
    assert.equal(await ws.next(), '43/custom,1["still"]');
    assert.equal(ws.isClosed, false);
    ws.close();
  });

  it('close true: the server sends DISCONNECT for every namespace, then closes the connection', async () => {
    const ws = await twoNamespaces();
    ws.send('42["disconnect-me",true]');
    const got = [await ws.next(), await ws.next()].sort();
    assert.deepEqual(got, ['41', '41/custom,']);
    await ws.waitClosed();
    await assertHealthy(server.url);
  });
});
