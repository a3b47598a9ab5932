'use strict';
// Heartbeat loss seen from both sides, with short pings (--ping-interval 300 --ping-timeout 200).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startInteropServer } = require('../lib/server');
const { connect, once, ack, closeAll, assertHealthy, waitUntil } = require('../lib/client');
const raw = require('../lib/raw');

const PING = ['--ping-interval', 300, '--ping-timeout', 200];

describe('heartbeat', () => {
  let server;
  before(async () => { server = await startInteropServer(PING); });
  after(async () => { closeAll(); raw.closeAllRaw(); if (server) await server.stop(); });

  it('a healthy client survives many ping cycles (websocket and polling)', async () => {
    const ws = await connect(server.url, { transports: ['websocket'] });
    const polling = await connect(server.url, { transports: ['polling'] });
    let pings = 0;
    ws.io.engine.on('ping', () => { pings++; });
    const disconnects = [];
    for (const s of [ws, polling]) s.on('disconnect', (r) => disconnects.push(r));
    await waitUntil(() => pings >= 5, { what: 'five pings' });
    assert.deepEqual(disconnects, []);
    assert.equal(await ack(polling, 'message-with-ack', 'ok'), 'ok');
    ws.disconnect();
    polling.disconnect();
  });

  it('server side: a WebSocket client that never answers pings is dropped with "ping timeout"', async () => {
    const watcher = await connect(server.url);
    assert.deepEqual(await ack(watcher, 'watch'), { ok: true });
    const { ws, sid, open } = await raw.sioConnect(server.url, { autoPong: false });
    assert.equal(open.pingInterval, 300);
    assert.equal(open.pingTimeout, 200);
    const left = once(watcher, 'left', { filter: (info) => info.id === sid });
    const [info] = await left;
    assert.deepEqual(info, { id: sid, reason: 'ping timeout' });
    await ws.waitClosed();
    assert.ok(ws.pings >= 1, 'the server pinged');
    // The watcher itself answered every ping and is still there.
    assert.equal(watcher.connected, true);
    assert.equal(await ack(watcher, 'message-with-ack', 'x'), 'x');
    watcher.disconnect();
  });

  it('server side: a polling client that stops polling is dropped with "ping timeout"', async () => {
    const watcher = await connect(server.url);
    await ack(watcher, 'watch');
    const h = await raw.pollingHandshake(server.url);
    assert.equal((await raw.pollPost(h.url, '40')).status, 200);
    let sid;
    for (let i = 0; i < 10 && !sid; i++) {
      const res = await raw.pollGet(h.url);
      const connect = res.body.split(raw.SEP).find((p) => p.startsWith('40{'));
      if (connect) sid = JSON.parse(connect.slice(2)).sid;
    }
    assert.ok(sid, 'CONNECT reply');
    const [info] = await once(watcher, 'left', { filter: (i) => i.id === sid });
    assert.deepEqual(info, { id: sid, reason: 'ping timeout' });
    await waitUntil(async () => (await raw.pollGet(h.url)).status === 400, { what: 'session gone' });
    watcher.disconnect();
  });
});

describe('heartbeat: server paused with SIGSTOP', () => {
  let server;
  before(async () => { server = await startInteropServer(PING); });
  after(async () => {
    closeAll();
    if (server) {
      if (server.paused) server.resume();
      await server.stop();
    }
  });

  for (const transports of [['websocket'], ['polling']]) {
    it(`the client notices with "ping timeout" (${transports.join('+')})`, async () => {
      const socket = await connect(server.url, { transports });
      // Wait for one ping so the heartbeat is running.
      await once(socket.io.engine, 'ping');
      const gone = once(socket, 'disconnect', { timeout: 10000 });
      const t0 = Date.now();
      server.pause();
      let reason;
      try {
        [reason] = await gone;
      } finally {
        server.resume();
      }
      assert.equal(reason, 'ping timeout');
      assert.ok(Date.now() - t0 < 5000, `noticed after ${Date.now() - t0} ms`);
      await assertHealthy(server.url, transports);
    });
  }
});
