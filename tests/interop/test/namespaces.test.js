'use strict';
// Namespaces: auth payloads, a connect middleware that refuses, dynamic and unknown namespaces.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startInteropServer } = require('../lib/server');
const {
  createClient, createManager, waitConnected, expectConnectError, once, ack, ackAll, closeAll,
} = require('../lib/client');

let server;
before(async () => { server = await startInteropServer(); });
after(async () => { closeAll(); if (server) await server.stop(); });

for (const transports of [['websocket'], ['polling']]) {
  const label = transports.join('+');

  describe(`namespaces (${label})`, () => {
    it('the auth payload is echoed on / and /custom', async () => {
      const auth = { token: 'abc', n: 1, nested: { list: [1, 'two', null] } };
      for (const nsp of ['/', '/custom']) {
        const socket = createClient(server.url, { nsp, transports, auth });
        const got = once(socket, 'auth');
        await waitConnected(socket);
        assert.deepEqual(await got, [auth], nsp);
        socket.disconnect();
      }
      // No auth payload: the server sees {}.
      const socket = createClient(server.url, { nsp: '/custom', transports });
      const got = once(socket, 'auth');
      await waitConnected(socket);
      assert.deepEqual(await got, [{}]);
      assert.deepEqual(await ackAll(socket, 'message-with-ack', 'c', 1), ['c', 1]);
      socket.disconnect();
    });

    it('/private accepts auth.token "secret" and sends welcome', async () => {
      const socket = createClient(server.url, { nsp: '/private', transports, auth: { token: 'secret' } });
      const welcome = once(socket, 'welcome');
      await waitConnected(socket);
      assert.deepEqual(await welcome, [{ ok: true }]);
      socket.disconnect();
    });

    it('/private refuses other clients with CONNECT_ERROR message and data', async () => {
      for (const auth of [undefined, { token: 'wrong' }]) {
        const socket = createClient(server.url, { nsp: '/private', transports, auth });
        const err = await expectConnectError(socket);
        assert.equal(err.message, 'not authorized');
        assert.deepEqual(err.data, { reason: 'no token' });
        assert.equal(socket.connected, false);
        socket.disconnect();
      }
    });

    it('dynamic namespace /dyn-abc: whoami', async () => {
      for (const nsp of ['/dyn-abc', '/dyn-42x']) {
        const socket = createClient(server.url, { nsp, transports });
        await waitConnected(socket);
        assert.equal(await ack(socket, 'whoami'), nsp);
        socket.disconnect();
      }
    });

    it('unknown namespaces get connect_error "Invalid namespace"', async () => {
      for (const nsp of ['/nope', '/dyn-ABC', '/dyn-']) {
        const socket = createClient(server.url, { nsp, transports });
        const err = await expectConnectError(socket);
        assert.equal(err.message, 'Invalid namespace', nsp);
        socket.disconnect();
      }
    });

    it('several namespaces over one connection', async () => {
      const manager = createManager(server.url, { transports });
      const root = manager.socket('/');
      const custom = manager.socket('/custom', { auth: { who: 'custom' } });
      const priv = manager.socket('/private', { auth: { token: 'secret' } });
      const denied = manager.socket('/nope'); // one socket per namespace per Manager
      const rootAuth = once(root, 'auth');
      const customAuth = once(custom, 'auth');
      const welcome = once(priv, 'welcome');
      const deniedErr = expectConnectError(denied);
      for (const s of [root, custom, priv, denied]) s.connect();
      await Promise.all([waitConnected(root), waitConnected(custom), waitConnected(priv)]);
      assert.equal((await deniedErr).message, 'Invalid namespace');
      assert.deepEqual(await rootAuth, [{}]);
      assert.deepEqual(await customAuth, [{ who: 'custom' }]);
      assert.deepEqual(await welcome, [{ ok: true }]);
      assert.deepEqual(await ackAll(root, 'message-with-ack', 'r'), ['r']);
      assert.deepEqual(await ackAll(custom, 'message-with-ack', 'c'), ['c']);
      // Leaving one namespace keeps the others.
      custom.disconnect();
      assert.deepEqual(await ackAll(root, 'message-with-ack', 'still'), ['still']);
      assert.notEqual(root.id, priv.id);
      root.disconnect();
      priv.disconnect();
    });
  });
}
