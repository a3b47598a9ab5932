'use strict';
// A mixed cluster: a Node.js Socket.IO node (socket.io 4.8.4 + @socket.io/redis-adapter) and a
// ferrio node (ferrio-redis) on one Redis, clients on both, in classic and sharded mode.
// Broadcasts, io.to(socketId), fetchSockets, remote join/leave/disconnect, server-side emits
// and broadcasts with acks cross in both directions; @socket.io/redis-emitter drives the cluster.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { io: connectClient } = require('socket.io-client');
const { createClient } = require('redis');
const { Emitter } = require('@socket.io/redis-emitter');
const procs = require('../cluster/procs');

const TIMEOUT = 5000;

function client(url) {
  const socket = connectClient(url, { forceNew: true, reconnection: false, transports: ['websocket'], timeout: TIMEOUT });
  socket.got = [];
  socket.onAny((event, ...args) => socket.got.push([event, ...args]));
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

function call(socket, event, ...args) {
  return socket.timeout(TIMEOUT).emitWithAck(event, ...args);
}

/** Waits until `socket` received `count` events named `event`; returns their arguments. */
async function received(socket, event, count = 1) {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const got = socket.got.filter(([e]) => e === event).map(([, ...a]) => a);
    if (got.length >= count) return got;
    if (Date.now() > deadline) {
      throw new Error(`${socket.id} got ${got.length}/${count} "${event}"; all: ${JSON.stringify(socket.got)}`);
    }
    await procs.sleep(10);
  }
}

/** After a marker broadcast, nobody got more than `counts` says (exactly once). */
async function exactlyOnce(marker, sockets, counts) {
  await call(sockets[0], 'broadcast', marker, null);
  for (const s of sockets) await received(s, marker);
  for (const [i, s] of sockets.entries()) {
    for (const [event, n] of Object.entries(counts[i] || {})) {
      const got = s.got.filter(([e]) => e === event).length;
      assert.equal(got, n, `client ${i} got "${event}" ${got} times, expected ${n}`);
    }
  }
}

const skip = procs.haveRedis() ? false : 'redis-server is not installed';
if (skip) process.stderr.write('!!! SKIPPED cluster tests: /usr/bin/redis-server not found\n');

for (const mode of ['classic', 'sharded']) {
  describe(`mixed Node/ferrio cluster (${mode})`, { skip }, () => {
    let redis;
    let nodeSrv;
    let ferrio;
    let n1;
    let f1;
    let f2;

    before(async () => {
      redis = await procs.startRedis();
      [nodeSrv, ferrio] = await Promise.all([
        procs.startNodeNode({ redis: redis.url, mode }),
        procs.startFerrioNode({ redis: redis.url, mode }),
      ]);
      [n1, f1, f2] = await Promise.all([client(nodeSrv.url), client(ferrio.url), client(ferrio.url)]);
      for (const s of [n1, f1]) assert.deepEqual(await call(s, 'join', 'r'), { ok: true });
      assert.deepEqual(await call(f2, 'join', 'other'), { ok: true });
      // Both nodes see each other before the tests start.
      for (const s of [n1, f1]) {
        const deadline = Date.now() + TIMEOUT;
        while ((await call(s, 'server-count')) !== 2) {
          assert.ok(Date.now() < deadline, 'server count never reached 2');
          await procs.sleep(50);
        }
      }
      await procs.sleep(100);
    });

    after(async () => {
      for (const s of [n1, f1, f2]) s && s.disconnect();
      for (const p of [nodeSrv, ferrio, redis]) if (p) await p.stop();
    });

    it('room broadcasts cross both ways, once each', async () => {
      await call(f1, 'to-room', 'r', 'from-ferrio', 1);
      await call(n1, 'to-room', 'r', 'from-node', 2);
      await call(n1, 'broadcast', 'all-from-node', { x: [1, 'two', null, true, 1.5] });
      await call(f1, 'broadcast', 'all-from-ferrio', 'é✓');
      for (const s of [n1, f1]) {
        assert.deepEqual(await received(s, 'from-ferrio'), [[1]]);
        assert.deepEqual(await received(s, 'from-node'), [[2]]);
      }
      for (const s of [n1, f1, f2]) {
        assert.deepEqual(await received(s, 'all-from-node'), [[{ x: [1, 'two', null, true, 1.5] }]]);
        assert.deepEqual(await received(s, 'all-from-ferrio'), [['é✓']]);
      }
      // The built-in publish excludes the sender, on either side.
      assert.deepEqual(await call(n1, 'publish', { room: 'r', event: 'chat', data: 'hi' }), { ok: true });
      await received(f1, 'chat');
      await exactlyOnce('marker-1', [n1, f1, f2], [
        { 'from-ferrio': 1, 'from-node': 1, chat: 0 },
        { 'from-ferrio': 1, 'from-node': 1, chat: 1 },
        { 'from-ferrio': 0, 'from-node': 0, 'all-from-node': 1 },
      ]);
    });

    it('binary arguments cross both ways', async () => {
      await call(n1, 'to-room', 'r', 'bin-from-node', Buffer.from([1, 2, 3]));
      const [[fromNode]] = await received(f1, 'bin-from-node');
      assert.deepEqual([...fromNode], [1, 2, 3]);
      await call(f1, 'to-room', 'r', 'bin-from-ferrio', Buffer.from([4, 5]));
      const [[fromFerrio]] = await received(n1, 'bin-from-ferrio');
      assert.deepEqual([...fromFerrio], [4, 5]);
    });

    it('io.to(socketId) crosses both ways', async () => {
      await call(f1, 'to-room', n1.id, 'direct', 'to node client');
      await call(n1, 'to-room', f1.id, 'direct', 'to ferrio client');
      assert.deepEqual(await received(n1, 'direct'), [['to node client']]);
      assert.deepEqual(await received(f1, 'direct'), [['to ferrio client']]);
    });

    it('fetchSockets sees the other node, both ways', async () => {
      await call(n1, 'set-data', { who: 'node' });
      await call(f1, 'set-data', { who: 'ferrio' });
      for (const [asker, other, data] of [[f1, n1, { who: 'node' }], [n1, f1, { who: 'ferrio' }]]) {
        const sockets = await call(asker, 'fetch', 'r');
        assert.ok(Array.isArray(sockets), JSON.stringify(sockets));
        assert.deepEqual(sockets.map((s) => s.id).sort(), [n1.id, f1.id].sort());
        const remote = sockets.find((s) => s.id === other.id);
        assert.deepEqual(remote.data, data);
        assert.ok(remote.rooms.includes('r') && remote.rooms.includes(other.id), JSON.stringify(remote));
      }
      const all = await call(n1, 'fetch', null);
      assert.equal(all.length, 3);
    });

    it('server-side emits cross both ways, with acks', async () => {
      await call(f1, 'server-emit', 'hello', 'from ferrio');
      assert.deepEqual(await received(n1, 'server-event'), [[['from ferrio']]]);
      await call(n1, 'server-emit', 'hello', 'from node');
      assert.deepEqual(await received(f1, 'server-event'), [[['from node']]]);
      assert.deepEqual(await received(f2, 'server-event'), [[['from node']]]);
      assert.deepEqual(await call(f1, 'server-emit-ack', 'hello', 'ack?'), [`ack from ${nodeSrv.port}`]);
      assert.deepEqual(await call(n1, 'server-emit-ack', 'hello', 'ack?'), [`ack from ${ferrio.port}`]);
      await procs.sleep(100);
      // Each node hears the other's emits only: n1 two, f1 two (no echo of its own).
      assert.equal(n1.got.filter(([e]) => e === 'server-event').length, 2);
      assert.equal(f1.got.filter(([e]) => e === 'server-event').length, 2);
    });

    it('broadcasts with acks collect answers from both nodes', async () => {
      for (const s of [n1, f1]) s.on('question', (q, cb) => cb(`${s.id} answers ${q}`));
      for (const asker of [n1, f1]) {
        const answers = await call(asker, 'emit-ack', 'r', 'question', 'q');
        assert.ok(Array.isArray(answers), JSON.stringify(answers));
        assert.deepEqual(answers.sort(), [`${n1.id} answers q`, `${f1.id} answers q`].sort());
      }
    });

    it('remote join, leave and disconnect cross both ways', async () => {
      assert.equal(await call(f1, 'sockets-join', 'r', 'joined-by-ferrio'), true);
      assert.equal(await call(n1, 'sockets-join', 'other', 'joined-by-node'), true);
      await procs.sleep(200);
      await call(n1, 'to-room', 'joined-by-ferrio', 'j1', null);
      await call(f1, 'to-room', 'joined-by-node', 'j2', null);
      await received(n1, 'j1');
      await received(f1, 'j1');
      await received(f2, 'j2');
      assert.equal(await call(n1, 'sockets-leave', null, 'joined-by-ferrio'), true);
      await procs.sleep(200);
      await call(f1, 'to-room', 'joined-by-ferrio', 'j3', null);
      await exactlyOnce('marker-2', [n1, f1, f2], [{ j1: 1, j3: 0 }, { j1: 1, j3: 0 }, { j2: 1 }]);
      const gone = new Promise((resolve) => f2.once('disconnect', resolve));
      assert.equal(await call(n1, 'disconnect-room', f2.id), true);
      assert.equal(await gone, 'io server disconnect');
    });

    it('@socket.io/redis-emitter drives the cluster', { skip: mode === 'sharded' ? 'the emitter has no sharded mode' : false }, async () => {
      const redisClient = createClient({ url: redis.url });
      await redisClient.connect();
      try {
        const emitter = new Emitter(redisClient);
        emitter.to('r').emit('from-emitter', 42, 'x');
        emitter.emit('emitter-all', Buffer.from([9]));
        assert.deepEqual(await received(n1, 'from-emitter'), [[42, 'x']]);
        assert.deepEqual(await received(f1, 'from-emitter'), [[42, 'x']]);
        const [[bin]] = await received(f1, 'emitter-all');
        assert.deepEqual([...bin], [9]);
        emitter.in('r').socketsJoin('emitter-room');
        await procs.sleep(200);
        emitter.to('emitter-room').except(n1.id).emit('in-emitter-room');
        await received(f1, 'in-emitter-room');
        emitter.serverSideEmit('hello', 'from emitter');
        await received(f1, 'server-event', 3);
        emitter.in('emitter-room').socketsLeave('emitter-room');
        await procs.sleep(200);
        emitter.to('emitter-room').emit('after-leave');
        const gone = new Promise((resolve) => f1.once('disconnect', resolve));
        emitter.in(f1.id).disconnectSockets();
        assert.equal(await gone, 'io server disconnect');
        await procs.sleep(100);
        assert.equal(n1.got.filter(([e]) => e === 'after-leave' || e === 'in-emitter-room').length, 0);
        assert.equal(f1.got.filter(([e]) => e === 'after-leave').length, 0);
      } finally {
        await redisClient.quit();
      }
    });
  });
}
