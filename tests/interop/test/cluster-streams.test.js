'use strict';
// Streams mode ([cluster] mode = "streams", wire-compatible with @socket.io/redis-streams-adapter
// 0.3.1): connection-state recovery on any node. The client reaches the cluster through a TCP
// proxy that a test points at another node, as a load balancer does when a node dies.
//
// * two ferrio serve nodes: the client's node is SIGKILLed, messages are published on the
//   other, the client comes back through the proxy to the survivor: recovered, same id, rooms
//   kept, every missed message once and in order;
// * a mixed cluster (a Node socket.io 4.8 server with @socket.io/redis-streams-adapter from npm,
//   and a ferrio node): recovery from the Node node onto the ferrio node and back, and
//   broadcasts in both directions;
// * a stream trimmed past the client's offset: recovered === false, nothing stale.
// * rooms with windows of their own ([[history.rooms]]) and a stream that keeps almost nothing:
//   after the client's node is SIGKILLed, a quiet room's member recovers on the survivor from
//   that node's window of the room, a busy room's member whose window was trimmed is refused.
// * a survivor whose reader was stopped while the stream was trimmed past it refuses (it cannot
//   prove the replay complete), nothing stale.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { io: connectClient } = require('socket.io-client');
const procs = require('../cluster/procs');
const { startServeNode, waitReadyz, metrics, counterSum, sleep } = require('../lib/cluster-serve');
const { serverKind } = require('../lib/server');

const TIMEOUT = 5000;
const skip = !procs.haveRedis()
  ? 'redis-server is not installed'
  : serverKind() === 'node' ? 'drives ferrio serve processes' : false;

/** A TCP proxy on a free port whose target can be changed; existing links stay as they are. */
async function startProxy(target) {
  const links = new Set();
  let to = target;
  const server = net.createServer((down) => {
    const up = net.connect(to, '127.0.0.1');
    links.add(down);
    links.add(up);
    down.pipe(up);
    up.pipe(down);
    const end = () => { down.destroy(); up.destroy(); links.delete(down); links.delete(up); };
    down.on('error', end);
    up.on('error', end);
    down.on('close', end);
    up.on('close', end);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    point(port) { to = port; },
    cut() { for (const s of links) s.destroy(); links.clear(); },
    close() { this.cut(); server.close(); },
  };
}

function connect(url, opts = {}) {
  const socket = connectClient(url, {
    forceNew: true,
    transports: ['websocket'],
    reconnectionDelay: 100,
    reconnectionDelayMax: 300,
    timeout: TIMEOUT,
    ...opts,
  });
  socket.got = [];
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

const ack = (socket, ...args) => socket.timeout(TIMEOUT).emitWithAck(...args);

async function until(what, cond, ms = TIMEOUT) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function connected(socket) {
  return socket.connected ? Promise.resolve() : new Promise((r) => socket.once('connect', r));
}

describe('streams mode: recovery on any node', { skip }, () => {
  let redis;
  let nodes = [];
  let proxy;
  const open = [];

  before(async () => {
    redis = await procs.startRedis();
    const env = { FERRIO_RECOVERY__ENABLED: 'true', FERRIO_RECOVERY__MAX_DISCONNECTION_DURATION: '30s' };
    nodes = await Promise.all([1, 2].map((i) => startServeNode({ redis, mode: 'streams', name: `n${i}`, env })));
    await waitReadyz(nodes);
    proxy = await startProxy(nodes[0].port);
  });
  after(async () => {
    for (const s of open) s.close();
    if (proxy) proxy.close();
    await Promise.all(nodes.map((n) => n.stop()));
    if (redis) await redis.stop();
  });

  it('broadcasts cross the nodes once each, in order', async () => {
    const [a, b] = await Promise.all([connect(nodes[0].url), connect(nodes[1].url)]);
    open.push(a, b);
    for (const s of [a, b]) assert.deepEqual(await ack(s, 'join', 'r'), { ok: true });
    const got = { a: [], b: [] };
    a.on('n', (n) => got.a.push(n));
    b.on('n', (n) => got.b.push(n));
    for (let n = 0; n < 50; n++) {
      assert.deepEqual(await ack(n % 2 ? a : b, 'publish', { room: 'r', event: 'n', data: n }), { ok: true });
    }
    // `publish` leaves the sender out: a gets b's, b gets a's.
    await until('deliveries', () => got.a.length === 25 && got.b.length === 25);
    assert.deepEqual(got.a, Array.from({ length: 25 }, (_, i) => 2 * i));
    assert.deepEqual(got.b, Array.from({ length: 25 }, (_, i) => 2 * i + 1));
  });

  it('the client\'s node is SIGKILLed: it recovers on the other node with every missed message', async () => {
    const publisher = await connect(nodes[1].url);
    open.push(publisher);
    const client = await connect(proxy.url, { reconnection: true });
    open.push(client);
    assert.equal(client.recovered, false);
    assert.deepEqual(await ack(client, 'join', 'news'), { ok: true });
    const got = [];
    client.on('news', (n) => got.push(n));
    assert.deepEqual(await ack(publisher, 'publish', { room: 'news', event: 'news', data: 0 }), { ok: true });
    await until('first message', () => got.length === 1);
    const id = client.id;

    // The node dies; the balancer sends new connections to the survivor.
    client.io.reconnection(false);
    nodes[0].child.kill('SIGKILL');
    await until('disconnect', () => !client.connected);
    proxy.point(nodes[1].port);
    for (let n = 1; n <= 20; n++) {
      assert.deepEqual(await ack(publisher, 'publish', { room: 'news', event: 'news', data: n }), { ok: true });
    }
    client.io.reconnection(true);
    client.connect();
    await connected(client);
    assert.equal(client.recovered, true, 'recovered on the other node');
    assert.equal(client.id, id, 'same socket id');
    await until('missed messages', () => got.length === 21);
    assert.deepEqual(got, Array.from({ length: 21 }, (_, i) => i), 'every missed message once, in order');
    // Still in the room on the new node.
    assert.deepEqual(await ack(publisher, 'publish', { room: 'news', event: 'news', data: 21 }), { ok: true });
    await until('a new message', () => got.length === 22);
    await sleep(200);
    assert.equal(got.length, 22, 'nothing twice');
    const m = await metrics(nodes[1]);
    assert.equal(counterSum(m, 'ferrio_recovery_total', { result: 'recovered' }), 1);
  });
});

describe('streams mode: a mixed Node/ferrio cluster', { skip }, () => {
  let redis;
  let nodeSrv;
  let ferrio;
  let proxy;
  const open = [];

  before(async () => {
    redis = await procs.startRedis();
    [nodeSrv, ferrio] = await Promise.all([
      procs.startNodeNode({ redis: redis.url, mode: 'streams', recovery: 30000 }),
      startServeNode({
        redis,
        mode: 'streams',
        name: 'f1',
        env: { FERRIO_RECOVERY__ENABLED: 'true', FERRIO_RECOVERY__MAX_DISCONNECTION_DURATION: '30s' },
      }),
    ]);
    await waitReadyz([ferrio]);
    proxy = await startProxy(nodeSrv.port);
  });
  after(async () => {
    for (const s of open) s.close();
    if (proxy) proxy.close();
    if (nodeSrv) await nodeSrv.stop();
    if (ferrio) await ferrio.stop();
    if (redis) await redis.stop();
  });

  it('broadcasts cross both ways', async () => {
    const [n, f] = await Promise.all([connect(nodeSrv.url), connect(ferrio.url)]);
    open.push(n, f);
    for (const s of [n, f]) assert.deepEqual(await ack(s, 'join', 'mix'), { ok: true });
    const got = { n: [], f: [] };
    n.on('m', (x) => got.n.push(x));
    f.on('m', (x) => got.f.push(x));
    await ack(n, 'publish', { room: 'mix', event: 'm', data: 'from node' });
    await ack(f, 'publish', { room: 'mix', event: 'm', data: 'from ferrio' });
    await until('both', () => got.n.length === 1 && got.f.length === 1);
    assert.deepEqual(got, { n: ['from ferrio'], f: ['from node'] });
  });

  it('a session recovers from the Node node onto the ferrio node, and back', async () => {
    const publisher = await connect(ferrio.url);
    open.push(publisher);
    const client = await connect(proxy.url, { reconnection: true });
    open.push(client);
    assert.deepEqual(await ack(client, 'join', 'moves'), { ok: true });
    const got = [];
    client.on('mv', (x) => got.push(x));
    let next = 0;
    const send = async (count) => {
      for (let i = 0; i < count; i++) {
        assert.deepEqual(await ack(publisher, 'publish', { room: 'moves', event: 'mv', data: next++ }), { ok: true });
      }
    };
    await send(1);
    await until('first', () => got.length === 1);
    const id = client.id;
    for (const [to, label] of [[ferrio.port, 'Node → ferrio'], [nodeSrv.port, 'ferrio → Node']]) {
      client.io.reconnection(false);
      proxy.cut();
      await until('disconnect', () => !client.connected);
      proxy.point(to);
      await send(10);
      client.io.reconnection(true);
      client.connect();
      await connected(client);
      assert.equal(client.recovered, true, `${label}: recovered`);
      assert.equal(client.id, id, `${label}: same id`);
      await until(`${label}: missed`, () => got.length === next);
      assert.deepEqual(got, Array.from({ length: next }, (_, i) => i), `${label}: every message once, in order`);
    }
  });
});

describe('streams mode: a trimmed stream refuses recovery', { skip }, () => {
  let redis;
  let node;
  const open = [];

  before(async () => {
    redis = await procs.startRedis();
    node = await startServeNode({
      redis,
      mode: 'streams',
      env: {
        FERRIO_RECOVERY__ENABLED: 'true',
        FERRIO_RECOVERY__MAX_PACKETS: '5',
        FERRIO_CLUSTER__STREAM_MAX_LEN: '1',
      },
    });
    await waitReadyz([node]);
  });
  after(async () => {
    for (const s of open) s.close();
    if (node) await node.stop();
    if (redis) await redis.stop();
  });

  it('recovered === false and nothing stale when the offset was trimmed away', async () => {
    const publisher = await connect(node.url);
    const client = await connect(node.url, { reconnection: true });
    open.push(publisher, client);
    assert.deepEqual(await ack(client, 'join', 't'), { ok: true });
    const got = [];
    client.on('t', (x) => got.push(x));
    await ack(publisher, 'publish', { room: 't', event: 't', data: 0 });
    await until('first', () => got.length === 1);
    const id = client.id;
    client.io.reconnection(false);
    client.io.engine.transport.ws._socket.destroy();
    await until('disconnect', () => !client.connected);
    // MAXLEN ~ 1 trims whole macro nodes only; enough entries trim the first one away.
    for (let n = 1; n <= 400; n++) await ack(publisher, 'publish', { room: 't', event: 't', data: n });
    client.io.reconnection(true);
    client.connect();
    await connected(client);
    assert.equal(client.recovered, false);
    assert.notEqual(client.id, id);
    await sleep(200);
    assert.deepEqual(got, [0], 'nothing replayed');
  });
});

describe('streams mode: each room keeps its own window, on any node', { skip }, () => {
  let redis;
  let nodes = [];
  let proxy;
  let dir;
  const open = [];

  before(async () => {
    redis = await procs.startRedis();
    // A short stream (MAXLEN ~ 200: Redis keeps 200 to 300 entries) and a namespace window of
    // 5: only the rooms' own windows (20 each) can prove a session complete.
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrio-windows-'));
    const config = path.join(dir, 'ferrio.toml');
    fs.writeFileSync(config, [
      '[[history.rooms]]', 'pattern = "quiet:*"', 'size = 20', 'ttl = "10m"',
      '[[history.rooms]]', 'pattern = "busy:*"', 'size = 20', 'ttl = "10m"', '',
    ].join('\n'));
    const env = {
      FERRIO_RECOVERY__ENABLED: 'true',
      FERRIO_RECOVERY__MAX_DISCONNECTION_DURATION: '30s',
      FERRIO_RECOVERY__MAX_PACKETS: '5',
      FERRIO_CLUSTER__STREAM_MAX_LEN: '200',
    };
    nodes = await Promise.all([1, 2].map((i) => startServeNode({
      redis, mode: 'streams', name: `w${i}`, env, args: ['--config', config],
    })));
    await waitReadyz(nodes);
    proxy = await startProxy(nodes[0].port);
  });
  after(async () => {
    for (const s of open) s.close();
    if (proxy) proxy.close();
    await Promise.all(nodes.map((n) => n.stop()));
    if (redis) await redis.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a busy room trims the stream, the client\'s node dies: the quiet room recovers on the survivor, the busy one refuses', async () => {
    const publisher = await connect(nodes[1].url);
    open.push(publisher);
    const quiet = await connect(proxy.url, { reconnection: true });
    const busy = await connect(proxy.url, { reconnection: true });
    open.push(quiet, busy);
    assert.deepEqual(await ack(quiet, 'join', 'quiet:1'), { ok: true });
    assert.deepEqual(await ack(busy, 'join', 'busy:1'), { ok: true });
    const got = { quiet: [], busy: [] };
    quiet.on('q', (n) => got.quiet.push(n));
    busy.on('b', (n) => got.busy.push(n));
    await ack(publisher, 'publish', { room: 'quiet:1', event: 'q', data: 0 });
    await ack(publisher, 'publish', { room: 'busy:1', event: 'b', data: 0 });
    await until('first messages', () => got.quiet.length === 1 && got.busy.length === 1);
    const ids = { quiet: quiet.id, busy: busy.id };

    for (const s of [quiet, busy]) s.io.reconnection(false);
    nodes[0].child.kill('SIGKILL');
    await until('disconnect', () => !quiet.connected && !busy.connected);
    proxy.point(nodes[1].port);
    // 600 messages to the busy room: past the stream's length and far past its own window.
    for (let n = 1; n <= 600; n++) {
      await ack(publisher, 'publish', { room: 'busy:1', event: 'b', data: n });
      if (n % 200 === 0) await ack(publisher, 'publish', { room: 'quiet:1', event: 'q', data: n / 200 });
    }
    for (const s of [quiet, busy]) { s.io.reconnection(true); s.connect(); }
    await Promise.all([connected(quiet), connected(busy)]);
    assert.equal(quiet.recovered, true, 'the quiet room\'s own window covers the gap');
    assert.equal(quiet.id, ids.quiet);
    await until('missed quiet messages', () => got.quiet.length === 4);
    assert.deepEqual(got.quiet, [0, 1, 2, 3]);
    assert.equal(busy.recovered, false, 'the busy room\'s window was trimmed past the offset');
    assert.notEqual(busy.id, ids.busy);
    await sleep(200);
    assert.deepEqual(got.busy, [0], 'no partial replay');
    const m = await metrics(nodes[1]);
    assert.equal(counterSum(m, 'ferrio_recovery_total', { result: 'recovered' }), 1);
    assert.equal(counterSum(m, 'ferrio_recovery_total', { result: 'failed', reason: 'history_trimmed' }), 1);
  });
});

describe('streams mode: a node whose reader was overtaken by trimming refuses', { skip }, () => {
  let redis;
  let nodes = [];
  let proxy;
  const open = [];

  before(async () => {
    redis = await procs.startRedis();
    // A short stream (MAXLEN ~ 200) and a namespace window that holds everything: only the
    // reader's position can tell that node 2 missed entries.
    const env = {
      FERRIO_RECOVERY__ENABLED: 'true',
      FERRIO_RECOVERY__MAX_DISCONNECTION_DURATION: '30s',
      FERRIO_CLUSTER__STREAM_MAX_LEN: '200',
    };
    nodes = await Promise.all([1, 2, 3].map((i) => startServeNode({ redis, mode: 'streams', name: `o${i}`, env })));
    await waitReadyz(nodes);
    proxy = await startProxy(nodes[0].port);
  });
  after(async () => {
    for (const s of open) s.close();
    if (proxy) proxy.close();
    for (const n of nodes) n.resume();
    await Promise.all(nodes.map((n) => n.stop()));
    if (redis) await redis.stop();
  });

  it('recovered === false, nothing stale, when the survivor was stopped while the stream was trimmed past it', async () => {
    const publisher = await connect(nodes[2].url);
    const client = await connect(proxy.url, { reconnection: true });
    open.push(publisher, client);
    assert.deepEqual(await ack(client, 'join', 'o'), { ok: true });
    const got = [];
    client.on('o', (n) => got.push(n));
    assert.deepEqual(await ack(publisher, 'publish', { room: 'o', event: 'o', data: 0 }), { ok: true });
    await until('first message', () => got.length === 1);
    const id = client.id;
    await sleep(200); // node 2 has read it too

    // Node 2 stops reading; the client's node dies; 1,000 messages trim the stream far past
    // where node 2 stands; node 2 reads on.
    nodes[1].pause();
    client.io.reconnection(false);
    nodes[0].child.kill('SIGKILL');
    await until('disconnect', () => !client.connected);
    for (let n = 1; n <= 1000; n++) {
      assert.deepEqual(await ack(publisher, 'publish', { room: 'o', event: 'o', data: n }), { ok: true });
    }
    nodes[1].resume();
    await sleep(1000);
    proxy.point(nodes[1].port);
    client.io.reconnection(true);
    client.connect();
    await connected(client);
    assert.equal(client.recovered, false, 'node 2 cannot prove the replay complete');
    assert.notEqual(client.id, id);
    await sleep(200);
    assert.deepEqual(got, [0], 'nothing replayed');
    const m = await metrics(nodes[1]);
    assert.equal(counterSum(m, 'ferrio_recovery_total', { result: 'recovered' }), 0);
  });
});
