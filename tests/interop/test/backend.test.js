'use strict';
// The backend surface with the official socket.io-client and a Node HTTP backend that checks
// every signature the way docs/webhooks.md tells backends to: presence (the event and the
// announcements), a payload refused by its JSON Schema, webhooks of what the client did, and an
// RPC event answered by the backend, on both transports.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { connect, once, ack, closeAll } = require('../lib/client');
const sec = require('../lib/security');
const procs = require('../cluster/procs');
const { signed } = require('../lib/webhooks');

const SECRET = 'interop-backend-secret-0123456789abcdef';
const HOOK_SECRET = 'interop-webhook-secret-0123';
const token = (sub) => sec.hsToken(SECRET, sub);

/** What both suites configure: JWTs, `chat:*` rooms for everyone, announced presence. */
const PRESENCE_CONFIG = [
  '[auth]',
  `secret = "${SECRET}"`,
  '[origin]',
  'allow_missing = true',
  '[rooms]',
  'join = ["chat:*"]',
  '[presence]',
  'announce = ["chat:*"]',
];

/** A backend: records signed event batches, answers RPCs with what `rpc` returns. */
function startBackend(rpc) {
  const events = [];
  const unsigned = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (!signed(req.headers, body, HOOK_SECRET)) {
        unsigned.push(body.toString());
        res.writeHead(401).end();
        return;
      }
      const msg = JSON.parse(body);
      if (msg.type === 'events') {
        events.push(...msg.events);
        res.writeHead(204).end();
      } else {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(rpc(msg)));
      }
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({
      url: `http://127.0.0.1:${server.address().port}/ferrio`,
      events,
      unsigned,
      close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
    }));
  });
}

async function until(what, cond, ms = 10000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('ferrio serve: presence, schemas, webhooks and RPC (socket.io-client)', sec.ferrioOnly, () => {
  let server;
  let backend;
  before(async () => {
    backend = await startBackend((msg) => ({ ok: true, echo: msg.args[0], user: msg.user }));
    server = await sec.startSecure([
      ...PRESENCE_CONFIG,
      '[webhooks]',
      `url = "${backend.url}"`,
      `secret = "${HOOK_SECRET}"`,
      '[events."chat:message"]',
      'webhook = true',
      '[events."chat:message".schema]',
      'type = "object"',
      'required = ["text"]',
      'properties.text = { type = "string", maxLength = 10 }',
      '[events."order:create"]',
      'rpc = true',
    ].join('\n'));
  });
  after(async () => {
    closeAll();
    if (server) await server.stop();
    if (backend) await backend.close();
    sec.removeFiles();
  });

  for (const transports of [['websocket'], ['polling']]) {
    it(`over ${transports[0]}`, async () => {
      const room = `chat:${transports[0]}`;
      const alice = await connect(server.url, { transports, auth: { token: token('alice') } });
      assert.deepEqual(await ack(alice, 'join', room), { ok: true });

      // Bob's arrival is announced to alice; the presence event lists both.
      const arrival = once(alice, 'presence:join');
      const bob = await connect(server.url, { transports, auth: { token: token('bob') } });
      assert.deepEqual(await ack(bob, 'join', room), { ok: true });
      const [joined] = await arrival;
      assert.equal(joined.user, 'bob');
      assert.equal(joined.room, room);
      const seen = await ack(bob, 'presence', room);
      assert.equal(seen.ok, true);
      assert.deepEqual(seen.users, [{ user: 'alice', connections: 1 }, { user: 'bob', connections: 1 }]);
      assert.deepEqual(await ack(bob, 'presence', 'user:alice'), { ok: false, error: 'forbidden' });

      // The schema: a refusal with details, then an accepted message forwarded to the backend.
      const refused = await ack(alice, 'chat:message', { text: 'far too long for it' });
      assert.equal(refused.ok, false);
      assert.equal(refused.error, 'invalid_payload');
      assert.equal(refused.details[0].path, '/text');
      assert.deepEqual(await ack(alice, 'chat:message', { text: 'hello' }), { ok: true });

      // RPC: the backend's reply is the ack.
      assert.deepEqual(await ack(bob, 'order:create', { item: 7 }), { ok: true, echo: { item: 7 }, user: 'bob' });

      // Bob leaves: alice hears it, and the backend got the whole story, signed.
      const [aliceId, bobId] = [alice.id, bob.id];
      const departure = once(alice, 'presence:leave');
      bob.disconnect();
      assert.equal((await departure)[0].user, 'bob');
      await until('bob\'s disconnection webhook', () => backend.events.some(
        (e) => e.type === 'disconnection' && e.socket === bobId,
      ));
      const mine = (id) => backend.events.filter((e) => e.socket === id);
      assert.deepEqual(mine(aliceId).filter((e) => e.type === 'event').map((e) => [e.event, e.args]),
        [['chat:message', [{ text: 'hello' }]]], 'only the accepted message');
      assert.deepEqual(mine(bobId).map((e) => e.type), ['connection', 'join', 'leave', 'disconnection']);
      assert.equal(mine(bobId)[0].transport, transports[0]);
      assert.equal(mine(bobId).at(-1).reason, 'client namespace disconnect');
      assert.deepEqual(backend.unsigned, [], 'every request is signed');
      const seqs = backend.events.map((e) => e.seq);
      assert.deepEqual(seqs, seqs.map((_, i) => i + 1), 'numbered from 1 without a gap');
      alice.disconnect();
    });
  }
});

describe('ferrio serve: presence across a cluster of two nodes on one Redis', sec.ferrioOnly, () => {
  const skip = procs.haveRedis() ? false : 'redis-server is not installed';
  let redis;
  const nodes = [];
  before(async () => {
    if (skip) return;
    redis = await procs.startRedis();
    for (const id of ['a', 'b']) {
      nodes.push(await sec.startSecure([
        ...PRESENCE_CONFIG,
        '[cluster]',
        `redis_url = "${redis.url}"`,
        `node_id = "node-${id}"`,
      ].join('\n')));
    }
  });
  after(async () => {
    closeAll();
    for (const n of nodes) await n.stop();
    if (redis) await redis.stop();
    sec.removeFiles();
  });

  it('a user on both nodes is not announced gone until the last socket leaves', { skip }, async () => {
    const [a, b] = nodes;
    const as = (node, sub) => connect(node.url, { transports: ['websocket'], auth: { token: token(sub) } });
    const watcher = await as(a, 'watcher');
    assert.deepEqual(await ack(watcher, 'join', 'chat:x'), { ok: true });
    const heard = [];
    watcher.on('presence:join', (m) => heard.push(['join', m.user]));
    watcher.on('presence:leave', (m) => heard.push(['leave', m.user]));

    const onA = await as(a, 'carol');
    const onB = await as(b, 'carol');
    assert.deepEqual(await ack(onA, 'join', 'chat:x'), { ok: true });
    assert.deepEqual(await ack(onB, 'join', 'chat:x'), { ok: true });
    await until('carol announced', () => heard.some(([k]) => k === 'join'));
    // The presence event sees the whole cluster.
    const seen = await ack(watcher, 'presence', 'chat:x');
    assert.deepEqual(seen.users, [{ user: 'carol', connections: 2 }, { user: 'watcher', connections: 1 }]);

    onA.disconnect();
    // Carol is still in the room on node b: no departure. Node b's answer to a presence
    // request is a round trip through the cluster, after node a's check.
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual((await ack(watcher, 'presence', 'chat:x')).users.map((u) => u.user), ['carol', 'watcher']);
    assert.ok(!heard.some(([k]) => k === 'leave'), JSON.stringify(heard));

    onB.disconnect();
    await until('carol\'s departure', () => heard.some(([k]) => k === 'leave'));
    assert.deepEqual(heard.filter(([k]) => k === 'leave'), [['leave', 'carol']]);
  });
});
