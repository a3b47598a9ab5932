'use strict';
// Many concurrent clients join one room; one publish reaches each of them exactly once.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startInteropServer } = require('../lib/server');
const { createClient, waitConnected, ack, closeAll, waitUntil, forget } = require('../lib/client');

const WS_CLIENTS = Number(process.env.INTEROP_LOAD_WS || 1000);
const POLLING_CLIENTS = Number(process.env.INTEROP_LOAD_POLLING || 200);
const BATCH = 50;

let server;
before(async () => { server = await startInteropServer(); });
after(async () => { closeAll(); if (server) await server.stop(); });

async function crowd(n, transports, room) {
  const clients = [];
  for (let i = 0; i < n; i += BATCH) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + BATCH); j++) {
      const s = createClient(server.url, { transports, timeout: 30000 });
      s.counts = { news: 0, done: 0 };
      s.on('news', (data) => {
        s.counts.news++;
        s.lastNews = data;
      });
      s.on('done', () => { s.counts.done++; });
      batch.push(s);
    }
    await Promise.all(batch.map((s) => waitConnected(s, 30000)));
    const joins = await Promise.all(batch.map((s) => s.timeout(30000).emitWithAck('join', room)));
    joins.forEach((r) => assert.deepEqual(r, { ok: true }));
    clients.push(...batch);
  }
  return clients;
}

async function runCrowd(n, transports) {
  const room = `crowd-${transports.join('-')}-${process.pid}`;
  const t0 = Date.now();
  const clients = await crowd(n, transports, room);
  const connectedMs = Date.now() - t0;
  const publisher = createClient(server.url, { transports: ['websocket'] });
  await waitConnected(publisher);
  let publisherGot = 0;
  publisher.on('news', () => { publisherGot++; });

  const data = { msg: 'to everyone', n };
  assert.deepEqual(await ack(publisher, 'publish', { room, event: 'news', data }), { ok: true });
  await waitUntil(() => clients.every((s) => s.counts.news >= 1), {
    timeout: 30000,
    what: `news on all ${n} clients (have ${clients.filter((s) => s.counts.news >= 1).length})`,
  });
  // A second publish is a barrier: each connection delivers in order, so once `done` arrived
  // everywhere, any duplicate of `news` would have arrived too.
  assert.deepEqual(await ack(publisher, 'publish', { room, event: 'done', data: null }), { ok: true });
  await waitUntil(() => clients.every((s) => s.counts.done >= 1), { timeout: 30000, what: 'done everywhere' });

  const wrong = clients.filter((s) => s.counts.news !== 1 || s.counts.done !== 1);
  assert.equal(wrong.length, 0, `clients with a count other than 1: ${JSON.stringify(wrong.slice(0, 5).map((s) => s.counts))}`);
  for (const s of clients) assert.deepEqual(s.lastNews, data);
  assert.equal(publisherGot, 0);
  assert.ok(clients.every((s) => s.connected), 'every client is still connected');

  for (const s of [...clients, publisher]) {
    s.disconnect();
    forget(s);
  }
  return connectedMs;
}

describe('load', { timeout: 120000 }, () => {
  it(`${WS_CLIENTS} websocket clients each receive one publish exactly once`, { timeout: 120000 }, async (t) => {
    const ms = await runCrowd(WS_CLIENTS, ['websocket']);
    t.diagnostic(`${WS_CLIENTS} websocket clients connected and joined in ${ms} ms`);
  });

  it(`${POLLING_CLIENTS} polling clients each receive one publish exactly once`, { timeout: 120000 }, async (t) => {
    const ms = await runCrowd(POLLING_CLIENTS, ['polling']);
    t.diagnostic(`${POLLING_CLIENTS} polling clients connected and joined in ${ms} ms`);
  });
});
