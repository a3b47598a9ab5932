'use strict';
// Helpers for tests that run several `ferrio serve` nodes on one redis-server of their own
// (cluster/procs.js starts it): a node per call with its [cluster] settings in its environment,
// /readyz and /metrics over HTTP, and a look into Redis to know that every node has
// (re)subscribed before a test publishes across the cluster.

const { createClient: createRedisClient } = require('redis');
const { startServe } = require('./server');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A `ferrio serve` node on `redis` (a procs.startRedis() handle). `env` adds
 * FERRIO_<SECTION>__<KEY> variables for this node only.
 */
function startServeNode({ redis, mode = 'classic', name, env = {}, args = [] }) {
  return startServe(['--shutdown-timeout', 1, ...args], {
    env: {
      FERRIO_CLUSTER__REDIS_URL: redis.url,
      FERRIO_CLUSTER__MODE: mode,
      ...(name ? { FERRIO_CLUSTER__NODE_ID: name } : {}),
      ...env,
    },
  });
}

/** GET `path` on `node`: {status, text}; status 0 when the request failed. */
async function get(node, path, timeout = 2000) {
  try {
    const res = await fetch(node.url + path, { signal: AbortSignal.timeout(timeout) });
    return { status: res.status, text: await res.text() };
  } catch (e) {
    return { status: 0, text: String(e) };
  }
}

/**
 * Polls /readyz on every node until each answers `want` (bounded). Returns the time it took;
 * throws with the last answers when the bound is reached.
 */
async function waitReadyz(nodes, want = 200, timeout = 15000) {
  const start = Date.now();
  const deadline = start + timeout;
  let last = [];
  for (;;) {
    last = await Promise.all(nodes.map((n) => get(n, '/readyz', 1000)));
    if (last.every((r) => r.status === want)) return Date.now() - start;
    if (Date.now() > deadline) {
      throw new Error(`/readyz did not answer ${want} on every node within ${timeout} ms: ${
        JSON.stringify(last.map((r) => [r.status, r.text.slice(0, 80)]))}`);
    }
    await sleep(50);
  }
}

async function metrics(node) {
  const r = await get(node, '/metrics');
  if (r.status !== 200) throw new Error(`/metrics answered ${r.status}: ${r.text.slice(0, 200)}`);
  return r.text;
}

/**
 * The series of counter `name` in a Prometheus text: [{labels: {k: v}, value}].
 */
function series(text, name) {
  const out = [];
  const re = new RegExp(`^${name}(?:\\{([^}]*)\\})?\\s+(\\S+)`, 'gm');
  for (const m of text.matchAll(re)) {
    const labels = {};
    for (const l of (m[1] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ labels, value: Number(m[2]) });
  }
  return out;
}

/** The sum of the series of `name` whose labels include `match`. */
function counterSum(text, name, match = {}) {
  return series(text, name)
    .filter((s) => Object.entries(match).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

/** A short-lived Redis client for PUBSUB/CLIENT queries (no reconnection). */
async function redisQuery(url, fn) {
  const c = createRedisClient({ url, socket: { reconnectStrategy: false, connectTimeout: 2000 } });
  c.on('error', () => {});
  await c.connect();
  try {
    return await fn((...args) => c.sendCommand(args.map(String)));
  } finally {
    try { c.destroy(); } catch { /* gone */ }
  }
}

/**
 * Waits (bounded) until `nodes` ferrio nodes are subscribed to namespace `/` of key
 * `socket.io` in Redis: classic, `nodes` clients with a pattern subscription and on the
 * request channel; sharded, `nodes` shard subscribers of the namespace channel and, for each
 * entry of `rooms` ([room, count]), `count` shard subscribers of the room's own channel
 * (dynamic subscriptions, made once the room has a local member).
 */
async function waitSubscribed(redisUrl, mode, { nodes, rooms = [], timeout = 10000 }) {
  const deadline = Date.now() + timeout;
  let seen = '';
  for (;;) {
    try {
      const ok = await redisQuery(redisUrl, async (cmd) => {
        if (mode === 'sharded') {
          const counts = [];
          const [, main] = await cmd('PUBSUB', 'SHARDNUMSUB', 'socket.io#/#');
          counts.push(['socket.io#/#', Number(main), nodes]);
          for (const [room, want] of rooms) {
            const ch = `socket.io#/#${room}#`;
            const [, n] = await cmd('PUBSUB', 'SHARDNUMSUB', ch);
            counts.push([ch, Number(n), want]);
          }
          seen = JSON.stringify(counts);
          return counts.every(([, n, want]) => n >= want);
        }
        const [, req] = await cmd('PUBSUB', 'NUMSUB', 'socket.io-request#/#');
        const list = String(await cmd('CLIENT', 'LIST'));
        const psubs = list.split('\n').filter((l) => /\bpsub=([1-9]\d*)\b/.test(l)).length;
        seen = JSON.stringify({ request: Number(req), psub_clients: psubs });
        return Number(req) >= nodes && psubs >= nodes;
      });
      if (ok) return;
    } catch (e) {
      seen = String(e);
    }
    if (Date.now() > deadline) throw new Error(`nodes not subscribed within ${timeout} ms: ${seen}`);
    await sleep(50);
  }
}

module.exports = { startServeNode, get, waitReadyz, metrics, series, counterSum, redisQuery, waitSubscribed, sleep };
