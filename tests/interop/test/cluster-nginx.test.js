'use strict';
// deploy/nginx-cluster.conf in front of three ferrio nodes on one Redis: long-polling,
// upgrading and WebSocket-only clients from several source addresses (127.0.0.x) all work,
// polling sessions stay on their node, and messages cross nodes.
//
// Needs Debian's nginx (`apt-get install -y nginx-light`); without it the suite is skipped
// with a loud message.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { io: connectClient } = require('socket.io-client');
const procs = require('../cluster/procs');

const TIMEOUT = 5000;
const NGINX = procs.nginxBinary();
let skip = false;
if (!NGINX) skip = 'nginx is not installed (apt-get install -y nginx-light)';
else if (!procs.haveRedis()) skip = 'redis-server is not installed';
if (skip) {
  process.stderr.write(`\n!!!!!!!! SKIPPED the nginx cluster tests: ${skip} !!!!!!!!\n\n`);
}

function client(url, source, transports) {
  const agent = new http.Agent({ localAddress: source, keepAlive: false });
  const socket = connectClient(url, {
    forceNew: true, reconnection: false, timeout: TIMEOUT, transports, agent, localAddress: source,
  });
  socket.got = [];
  socket.onAny((event, ...args) => socket.got.push([event, ...args]));
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

const call = (socket, event, ...args) => socket.timeout(TIMEOUT).emitWithAck(event, ...args);

async function received(socket, event) {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const got = socket.got.filter(([e]) => e === event);
    if (got.length) return got.map(([, ...a]) => a);
    if (Date.now() > deadline) throw new Error(`no "${event}"; got ${JSON.stringify(socket.got)}`);
    await procs.sleep(10);
  }
}

describe('nginx in front of three ferrio nodes', { skip }, () => {
  let redis;
  let nodes = [];
  let nginx;
  let url;
  const sockets = [];

  before(async () => {
    redis = await procs.startRedis();
    nodes = await Promise.all([0, 1, 2].map(() => procs.startFerrioNode({ redis: redis.url })));
    const port = await procs.freePort();
    const prefix = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrio-nginx-'));
    for (const d of ['tmp', 'logs']) fs.mkdirSync(path.join(prefix, d), { recursive: true });
    fs.chmodSync(prefix, 0o755);
    let conf = fs.readFileSync(path.join(procs.REPO, 'deploy', 'nginx-cluster.conf'), 'utf8');
    conf = conf
      .replace('worker_processes auto;', 'worker_processes 1;')
      .replace('listen 127.0.0.1:3000;', `listen 127.0.0.1:${port};`)
      .replace('server 127.0.0.1:3001;', `server 127.0.0.1:${nodes[0].port};`)
      .replace('server 127.0.0.1:3002;', `server 127.0.0.1:${nodes[1].port};`)
      .replace('server 127.0.0.1:3003;', `server 127.0.0.1:${nodes[2].port};`);
    assert.ok(!/300[0-3];/.test(conf), 'every address replaced');
    nginx = await procs.startNginx(NGINX, prefix, conf, port);
    url = `http://127.0.0.1:${port}`;
  });

  after(async () => {
    for (const s of sockets) s.disconnect();
    for (const p of [nginx, ...nodes, redis]) if (p) await p.stop();
  });

  it('long-polling sessions stay sticky and spread over the nodes', async () => {
    const ports = new Set();
    for (let i = 0; i < 12; i++) {
      const s = await client(url, `127.0.0.${20 + i}`, ['polling']);
      sockets.push(s);
      // Several requests per session: each would fail with "Session ID unknown" on another node.
      const first = await call(s, 'node-info');
      assert.equal(first.transport, 'polling');
      for (let j = 0; j < 3; j++) assert.deepEqual(await call(s, 'node-info'), first);
      ports.add(first.port);
    }
    assert.ok(ports.size >= 2, `sessions spread over ${ports.size} node(s)`);
  });

  it('upgrading and WebSocket-only clients work through nginx, and messages cross nodes', async () => {
    const byPort = new Map();
    for (let i = 0; i < 12; i++) {
      const transports = i % 2 ? ['websocket'] : ['polling', 'websocket'];
      const s = await client(url, `127.0.0.${40 + i}`, transports);
      sockets.push(s);
      if (transports.length === 2) {
        await new Promise((resolve, reject) => {
          if (s.io.engine.transport.name === 'websocket') return resolve();
          const timer = setTimeout(() => reject(new Error('no upgrade')), TIMEOUT);
          s.io.engine.once('upgrade', () => { clearTimeout(timer); resolve(); });
        });
      }
      const info = await call(s, 'node-info');
      assert.equal(info.transport, 'websocket');
      assert.deepEqual(await call(s, 'join', 'lobby'), { ok: true });
      if (!byPort.has(info.port)) byPort.set(info.port, s);
    }
    assert.ok(byPort.size >= 2, 'clients on at least two nodes');
    const [a, b] = [...byPort.values()];
    const poller = sockets[0];
    assert.deepEqual(await call(poller, 'join', 'lobby'), { ok: true });
    await procs.sleep(100);
    assert.deepEqual(await call(a, 'publish', { room: 'lobby', event: 'chat', data: 'via nginx' }), { ok: true });
    assert.deepEqual(await received(b, 'chat'), [['via nginx']]);
    assert.deepEqual(await received(poller, 'chat'), [['via nginx']]);
    await procs.sleep(100);
    assert.equal(a.got.filter(([e]) => e === 'chat').length, 0, 'the sender is left out');
  });
});
