'use strict';
// [history] in a cluster: the rooms' histories are kept in Redis, so the `history` event and
// GET /api/history/{room} answer on any node with every node's messages, in each format
// (classic, sharded, streams):
//
// * messages published on one node are read on another, and on a node started afterwards;
// * each room keeps its own window (a busy room does not evict a quiet one);
// * `since` returns what came after an earlier answer's offset; after a trimmed offset the
//   answer says it is not complete; an offset that is not one is refused; a socket reads
//   what it would have been sent (not what a broadcast left it out of);
// * while Redis is stopped the answer is `unavailable`, never a partial or empty history;
// * in streams mode a history offset is the offset the clients got with the message.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { io: connectClient } = require('socket.io-client');
const procs = require('../cluster/procs');
const { startServeNode, waitReadyz, sleep } = require('../lib/cluster-serve');
const { serverKind } = require('../lib/server');

const TIMEOUT = 5000;
const KEY = 'history-test-key-0123456789abcdef';
const skip = !procs.haveRedis()
  ? 'redis-server is not installed'
  : serverKind() === 'node' ? 'drives ferrio serve processes' : false;

function connect(url) {
  const socket = connectClient(url, { forceNew: true, transports: ['websocket'], reconnection: false, timeout: TIMEOUT });
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

const ack = (socket, ...args) => socket.timeout(TIMEOUT).emitWithAck(...args);

async function api(node, method, route, body) {
  const res = await fetch(node.url + route, {
    method,
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: body && JSON.stringify(body),
    signal: AbortSignal.timeout(TIMEOUT),
  });
  return { status: res.status, body: await res.json() };
}

const numbers = (answer) => answer.messages.map((m) => m.args[0]);

for (const mode of ['classic', 'sharded', 'streams']) {
  describe(`[history] kept in Redis (${mode})`, { skip }, () => {
    let redis;
    let nodes = [];
    let dir;
    let config;
    const open = [];
    const env = {
      FERRIO_RECOVERY__ENABLED: 'true',
      FERRIO_RECOVERY__MAX_PACKETS: '5',
      FERRIO_API__KEYS: KEY,
    };

    before(async () => {
      redis = await procs.startRedis();
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrio-history-'));
      config = path.join(dir, 'ferrio.toml');
      fs.writeFileSync(config, [
        '[[history.rooms]]', 'pattern = "quiet:*"', 'size = 10', 'ttl = "10m"',
        '[[history.rooms]]', 'pattern = "busy:*"', 'size = 5', 'ttl = "10m"', '',
      ].join('\n'));
      nodes = await Promise.all([1, 2].map((i) => startServeNode({
        redis, mode, name: `h${i}-${mode}`, env, args: ['--config', config],
      })));
      await waitReadyz(nodes);
    });
    after(async () => {
      for (const s of open) s.close();
      await Promise.all(nodes.map((n) => n.stop()));
      if (redis) await redis.stop();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    it('one node\'s messages are read on another, each room in its own window, after an offset', async () => {
      const [a, b] = await Promise.all([connect(nodes[0].url), connect(nodes[1].url)]);
      open.push(a, b);
      const live = [];
      assert.deepEqual(await ack(b, 'join', 'quiet:1'), { ok: true });
      b.on('q', (...args) => live.push(args));
      await sleep(100);
      for (let n = 0; n < 3; n++) {
        assert.deepEqual(await ack(a, 'publish', { room: 'quiet:1', event: 'q', data: n }), { ok: true });
      }
      for (let n = 0; n < 30; n++) {
        const r = await api(nodes[0], 'POST', '/api/emit', { rooms: ['busy:1'], event: 'b', data: n });
        assert.equal(r.status, 200, JSON.stringify(r.body));
      }
      // Read on the other node: the quiet room keeps all 3, the busy room its last 5.
      const quiet = await ack(b, 'history', { room: 'quiet:1' });
      assert.equal(quiet.ok, true, JSON.stringify(quiet));
      assert.deepEqual(numbers(quiet), [0, 1, 2]);
      assert.equal(quiet.complete, true);
      assert.ok(quiet.messages.every((m) => m.event === 'q' && typeof m.offset === 'string'));
      const busy = await api(nodes[1], 'GET', '/api/history/busy%3A1?limit=3');
      assert.equal(busy.status, 200, JSON.stringify(busy.body));
      assert.deepEqual(numbers(busy.body), [27, 28, 29]);
      // After an offset of an earlier answer: only newer ones.
      const since = quiet.messages[0].offset;
      const newer = await ack(b, 'history', { room: 'quiet:1', since });
      assert.deepEqual(numbers(newer), [1, 2]);
      assert.equal(newer.complete, true);
      // After an offset the busy room's window no longer reaches: what is left, incomplete.
      const old = await api(nodes[0], 'GET', `/api/history/busy%3A1?since=${encodeURIComponent(since)}`);
      assert.equal(old.status, 200);
      assert.deepEqual(numbers(old.body), [25, 26, 27, 28, 29]);
      assert.equal(old.body.complete, false);
      // What a socket reads is what it would have been sent: `publish` left the sender out.
      assert.deepEqual(numbers(await ack(a, 'history', { room: 'quiet:1' })), []);
      // Not an offset: refused.
      const bad = await api(nodes[0], 'GET', '/api/history/quiet%3A1?since=yesterday');
      assert.equal(bad.status, 400);
      assert.deepEqual(await ack(a, 'history', { room: 'quiet:1', since: 'yesterday' }), { ok: false, error: 'unknown offset' });
      // Rooms without a rule: not kept.
      assert.equal((await api(nodes[0], 'GET', '/api/history/lobby')).status, 404);
      if (mode === 'streams') {
        // The offsets are the ones the clients got with the messages.
        const got = live.map((args) => args[args.length - 1]);
        assert.equal(got.length, 3);
        assert.deepEqual(quiet.messages.map((m) => m.offset), got);
      }
      // A node started now reads the same history.
      const late = await startServeNode({ redis, mode, name: `h3-${mode}`, env, args: ['--config', config] });
      nodes.push(late);
      await waitReadyz([late]);
      const again = await api(late, 'GET', '/api/history/quiet%3A1');
      assert.deepEqual(again.body.messages, quiet.messages);
    });

    it('while Redis is stopped: unavailable, never a partial answer', async () => {
      const a = await connect(nodes[0].url);
      open.push(a);
      redis.signal('SIGSTOP');
      try {
        const r = await api(nodes[1], 'GET', '/api/history/quiet%3A1').catch((e) => ({ status: 0, error: String(e) }));
        assert.equal(r.status, 503, JSON.stringify(r));
        assert.equal(r.body.error, 'unavailable');
        const answer = await ack(a, 'history', { room: 'quiet:1' });
        assert.deepEqual(answer, { ok: false, error: 'unavailable' });
      } finally {
        redis.signal('SIGCONT');
      }
      await waitReadyz(nodes);
      const r = await api(nodes[1], 'GET', '/api/history/quiet%3A1');
      assert.equal(r.status, 200);
      assert.deepEqual(numbers(r.body), [0, 1, 2]);
    });
  });
}
