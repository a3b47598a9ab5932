'use strict';
// What an acknowledgement means across a cluster: three `ferrio serve` nodes on one Redis of our
// own, two subscribers in room "feed" on each node, a publisher on node 1 sending `publish`
// {room:"feed", event:"tick", data:n} every 10 ms while Redis is killed and restarted, and later
// stopped (SIGSTOP) and continued. Every publication acknowledged {ok:true} must reach every
// subscriber on every node exactly once, the acknowledged ones in the order they were sent;
// any other answer must be {ok:false, error:"unavailable", ...}. After Redis answers again,
// acknowledged delivery must resume within RESUME_MS (the measured figures are printed).
// A smaller variant does the same with POST /api/emit across one SIGSTOP.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const procs = require('../cluster/procs');
const { serverKind } = require('../lib/server');
const { connect, ack, waitUntil, closeAll } = require('../lib/client');
const cs = require('../lib/cluster-serve');

const skip = serverKind() === 'node'
  ? 'a cluster of ferrio serve nodes'
  : (procs.haveRedis() ? false : 'redis-server is not installed');
if (skip) process.stderr.write(`!!! SKIPPED cluster publish-ack tests: ${skip}\n`);

const KEY = 'interop-api-key-0123456789';
const TICK_MS = 10;
const MAX_N = 800;
const LOOP_MS = 8000;
const ACK_TIMEOUT = 5000;
const RESUME_MS = 1500;
// The HTTP status of an /api/emit that the rest of the cluster may not have
// ({ok:false, error:"unavailable", local_recipients, message}): crates/ferrio-server/src/api.
const API_UNAVAILABLE_STATUS = [503];

const sleepUntil = (t) => cs.sleep(Math.max(0, t - Date.now()));

/**
 * What each subscriber got of the acknowledged publications `okSorted` (in sending order):
 * missing ones (with when the first of them was sent and answered, relative to `t0`),
 * duplicates, and how many arrived before one sent earlier.
 */
function check(subscribers, okSorted, answers, t0) {
  const ok = new Set(okSorted);
  const problems = [];
  for (const s of subscribers) {
    const seq = s.got.filter((g) => ok.has(g.n)).map((g) => g.n);
    const seen = new Map();
    for (const n of seq) seen.set(n, (seen.get(n) || 0) + 1);
    const missing = okSorted.filter((n) => !seen.has(n));
    const dup = [...seen].filter(([, c]) => c > 1).map(([n, c]) => `${n}x${c}`);
    let inversions = 0;
    for (let i = 1; i < seq.length; i++) if (seq[i] <= seq[i - 1]) inversions++;
    if (missing.length || dup.length || inversions) {
      problems.push({
        subscriber: s.label,
        missing: missing.length,
        firstMissing: missing.slice(0, 15),
        ...(missing.length ? {
          firstMissingSentAtMs: answers.get(missing[0]).sentAt - t0,
          firstMissingAnsweredAtMs: answers.get(missing[0]).at - t0,
        } : {}),
        duplicates: dup.slice(0, 15),
        inversions,
      });
    }
  }
  return problems;
}

/** When `n` had reached every subscriber (undefined if some never got it). */
function deliveredAll(subscribers, n) {
  let last = 0;
  for (const s of subscribers) {
    const g = s.got.find((x) => x.n === n);
    if (!g) return undefined;
    last = Math.max(last, g.at);
  }
  return last;
}

/**
 * After Redis answered again at `back`: the first publication sent then or later that was
 * acknowledged ok, how long until its ack and until every subscriber had it.
 */
function resumption(label, answers, subscribers, back, until = Infinity) {
  const first = [...answers]
    .filter(([, a]) => a.sentAt >= back && a.sentAt < until && a.ok)
    .sort(([x], [y]) => x - y)[0];
  if (!first) return { label, resumed: false };
  const [n, a] = first;
  const all = deliveredAll(subscribers, n);
  return {
    label,
    resumed: true,
    n,
    sentAfterMs: a.sentAt - back,
    ackedAfterMs: a.at - back,
    deliveredAfterMs: all === undefined ? undefined : all - back,
  };
}

/** Two subscribers in `room` on every node, each recording `event` with its arrival time. */
async function subscribe(nodes, room, event) {
  const subs = [];
  for (const [i, node] of nodes.entries()) {
    for (const k of [0, 1]) {
      const socket = await connect(node.url, { transports: ['websocket'] });
      assert.deepEqual(await ack(socket, 'join', room), { ok: true });
      const s = { socket, label: `node${i + 1}/sub${k}`, got: [] };
      socket.on(event, (n) => s.got.push({ n, at: Date.now() }));
      subs.push(s);
    }
  }
  return subs;
}

for (const mode of ['classic', 'sharded']) {
  describe(`publish acks across Redis outages, three ferrio serve nodes (${mode})`, { skip }, () => {
    let redis;
    const nodes = [];

    before(async () => {
      redis = await procs.startRedis();
      for (const i of [1, 2, 3]) {
        nodes.push(await cs.startServeNode({
          redis, mode, name: `p${i}-${mode}`, env: { FERRIO_API__KEYS: KEY },
        }));
      }
      await cs.waitReadyz(nodes, 200);
      await cs.waitSubscribed(redis.url, mode, { nodes: 3 });
    });

    after(async () => {
      closeAll();
      for (const n of nodes) await n.stop();
      if (redis) await redis.stop();
    });

    it('socket publish: acked ok = delivered everywhere once, in order; otherwise unavailable', async () => {
      const subs = await subscribe(nodes, 'feed', 'tick');
      await cs.waitSubscribed(redis.url, mode, { nodes: 3, rooms: [['feed', 3]] });
      const pub = await connect(nodes[0].url, { transports: ['websocket'] });

      const answers = new Map(); // n -> {ok, res, timeout, sentAt, at}
      const send = (n) => {
        const sentAt = Date.now();
        pub.timeout(ACK_TIMEOUT).emit('publish', { room: 'feed', event: 'tick', data: n }, (err, res) => {
          const at = Date.now();
          if (err) answers.set(n, { timeout: true, ok: false, sentAt, at });
          else answers.set(n, { res, ok: !!res && res.ok === true, sentAt, at });
        });
      };

      const t0 = Date.now();
      const marks = {};
      const chaos = (async () => {
        await sleepUntil(t0 + 1500);
        await redis.stop(); // SIGKILL
        marks.killed = Date.now();
        await sleepUntil(t0 + 3000);
        await redis.restart(); // same port, listening again when this resolves
        marks.back1 = Date.now();
        await sleepUntil(t0 + 5000);
        redis.signal('SIGSTOP');
        marks.stopped = Date.now();
        await sleepUntil(t0 + 6500);
        redis.signal('SIGCONT');
        marks.back2 = Date.now();
      })();
      chaos.catch(() => {}); // awaited after the loop
      let sent = 0;
      while (sent < MAX_N && Date.now() - t0 < LOOP_MS) {
        send(sent);
        sent++;
        await sleepUntil(t0 + sent * TICK_MS);
      }
      await chaos;
      await waitUntil(() => answers.size === sent, { timeout: ACK_TIMEOUT + 3000, what: 'every answer' });

      const okSorted = [...answers].filter(([, a]) => a.ok).map(([n]) => n).sort((a, b) => a - b);
      // Deliveries settle (bounded), then a pause for late duplicates.
      try {
        await waitUntil(() => subs.every((s) => okSorted.every((n) => s.got.some((g) => g.n === n))),
          { timeout: 5000, interval: 50, what: 'every acknowledged publication at every subscriber' });
      } catch { /* reported below */ }
      await cs.sleep(500);

      const timeouts = [...answers].filter(([, a]) => a.timeout).map(([n]) => n);
      const unavailable = [...answers].filter(([, a]) => a.res && a.res.ok === false && a.res.error === 'unavailable');
      const other = [...answers].filter(([, a]) => !a.timeout && !a.ok && !(a.res && a.res.ok === false && a.res.error === 'unavailable'));
      const okNotExact = [...answers].filter(([, a]) => a.ok && JSON.stringify(a.res) !== '{"ok":true}');
      const rel = (t) => (t === undefined ? undefined : t - t0);
      console.log(`[${mode}] socket publish: sent ${sent}, ok ${okSorted.length}, unavailable ${unavailable.length}, `
        + `ack timeouts ${timeouts.length}${timeouts.length ? ` (n = ${timeouts.slice(0, 20).join(',')}...)` : ''}, other ${other.length}; `
        + `Redis killed at ${rel(marks.killed)} ms, back at ${rel(marks.back1)} ms, stopped at ${rel(marks.stopped)} ms, continued at ${rel(marks.back2)} ms`);
      if (unavailable.length) console.log(`[${mode}] an unavailable answer: ${JSON.stringify(unavailable[0][1].res)}`);
      const phases = [['before the kill', t0, marks.killed], ['Redis down', marks.killed, marks.back1],
        ['restarted', marks.back1, marks.stopped], ['SIGSTOP', marks.stopped, marks.back2], ['after SIGCONT', marks.back2, Infinity]]
        .map(([label, from, to]) => {
          const inPhase = [...answers.values()].filter((a) => a.sentAt >= from && a.sentAt < to);
          return `${label}: ${inPhase.filter((a) => a.ok).length} ok/${inPhase.length}`;
        });
      console.log(`[${mode}] by the time they were sent: ${phases.join(', ')}`);
      const r1 = resumption('after the restart', answers, subs, marks.back1, marks.stopped);
      const r2 = resumption('after SIGCONT', answers, subs, marks.back2);
      console.log(`[${mode}] delivery resumed ${JSON.stringify(r1)}`);
      console.log(`[${mode}] delivery resumed ${JSON.stringify(r2)}`);

      assert.deepEqual(other.slice(0, 5).map(([n, a]) => [n, a.res]), [], 'every answer is {ok:true}, {ok:false, error:"unavailable"} or a (logged) ack timeout');
      assert.deepEqual(okNotExact.slice(0, 5).map(([n, a]) => [n, a.res]), [], 'ok answers are exactly {ok:true}');
      const problems = check(subs, okSorted, answers, t0);
      assert.deepEqual(problems, [], 'every acknowledged publication reached every subscriber once, in order');
      assert.ok(unavailable.length >= 1, 'the outage was seen: at least one unavailable');
      assert.ok(r1.resumed, 'an ok publication after Redis was restarted (before the SIGSTOP)');
      assert.ok(r2.resumed, 'an ok publication after SIGCONT');
      for (const r of [r1, r2]) {
        assert.ok(r.deliveredAfterMs !== undefined && r.deliveredAfterMs <= RESUME_MS,
          `delivery resumed within ${RESUME_MS} ms ${r.label}: ${JSON.stringify(r)}`);
      }
      pub.disconnect();
      for (const s of subs) s.socket.disconnect();
    });

    it('POST /api/emit across a SIGSTOP: 200 ok = delivered everywhere once, in order; otherwise unavailable', async () => {
      // Redis was killed, restarted and stopped above: every node is back first.
      await cs.waitReadyz(nodes, 200, 15000);
      await cs.waitSubscribed(redis.url, mode, { nodes: 3 });
      const subs = await subscribe(nodes, 'feed-api', 'api-tick');
      await cs.waitSubscribed(redis.url, mode, { nodes: 3, rooms: [['feed-api', 3]] });

      const answers = new Map(); // n -> {ok, status, body, timeout, sentAt, at}
      const post = async (n) => {
        const sentAt = Date.now();
        try {
          const res = await fetch(`${nodes[0].url}/api/emit`, {
            method: 'POST',
            headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
            body: JSON.stringify({ namespace: '/', rooms: ['feed-api'], event: 'api-tick', data: n }),
            signal: AbortSignal.timeout(ACK_TIMEOUT),
          });
          const text = await res.text();
          let body;
          try { body = JSON.parse(text); } catch { body = text; }
          answers.set(n, { status: res.status, body, ok: res.status === 200 && !!body && body.ok === true, sentAt, at: Date.now() });
        } catch (e) {
          answers.set(n, { timeout: true, error: String(e), ok: false, sentAt, at: Date.now() });
        }
      };

      // One request at a time (so their order is defined), for 3.5 s; Redis stopped from 1 s
      // to 2.5 s.
      const t0 = Date.now();
      const marks = {};
      const chaos = (async () => {
        await sleepUntil(t0 + 1000);
        redis.signal('SIGSTOP');
        marks.stopped = Date.now();
        await sleepUntil(t0 + 2500);
        redis.signal('SIGCONT');
        marks.back = Date.now();
      })();
      chaos.catch(() => {}); // awaited after the loop
      let sent = 0;
      while (sent < 400 && Date.now() - t0 < 3500) {
        await post(sent);
        sent++;
        await sleepUntil(t0 + sent * TICK_MS);
      }
      await chaos;

      const okSorted = [...answers].filter(([, a]) => a.ok).map(([n]) => n).sort((a, b) => a - b);
      try {
        await waitUntil(() => subs.every((s) => okSorted.every((n) => s.got.some((g) => g.n === n))),
          { timeout: 5000, interval: 50, what: 'every acknowledged emit at every subscriber' });
      } catch { /* reported below */ }
      await cs.sleep(500);

      const isUnavailable = (a) => !a.timeout && API_UNAVAILABLE_STATUS.includes(a.status) && a.body && a.body.ok === false
        && a.body.error === 'unavailable' && typeof a.body.local_recipients === 'number';
      const unavailable = [...answers].filter(([, a]) => isUnavailable(a));
      const timeouts = [...answers].filter(([, a]) => a.timeout);
      const other = [...answers].filter(([, a]) => !a.timeout && !a.ok && !isUnavailable(a));
      const statuses = {};
      for (const [, a] of answers) {
        const k = a.timeout ? 'client timeout' : `${a.status} ${a.body && a.body.ok === true ? 'ok' : (a.body && a.body.error)}`;
        statuses[k] = (statuses[k] || 0) + 1;
      }
      const r = resumption('after SIGCONT', answers, subs, marks.back);
      console.log(`[${mode}] /api/emit: sent ${sent}: ${JSON.stringify(statuses)}; delivery resumed ${JSON.stringify(r)}`);
      if (unavailable.length) console.log(`[${mode}] an unavailable answer: ${unavailable[0][1].status} ${JSON.stringify(unavailable[0][1].body)}`);
      if (timeouts.length) console.log(`[${mode}] client timeouts (counted as failures): ${timeouts.slice(0, 5).map(([n, a]) => `${n}: ${a.error}`).join('; ')}`);

      assert.deepEqual(other.slice(0, 5).map(([n, a]) => [n, a.status, a.body]), [],
        'every answer is 200 {ok:true, local_recipients} or 503 {ok:false, error:"unavailable", local_recipients}');
      for (const [n, a] of answers) {
        if (a.ok) assert.equal(typeof a.body.local_recipients, 'number', `emit ${n}: ${JSON.stringify(a.body)}`);
      }
      const problems = check(subs, okSorted, answers, t0);
      assert.deepEqual(problems, [], 'every acknowledged emit reached every subscriber once, in order');
      assert.ok(okSorted.some((n) => answers.get(n).sentAt < marks.stopped), 'ok before the SIGSTOP');
      assert.ok(r.resumed, 'an ok emit after SIGCONT');
      assert.ok(r.deliveredAfterMs !== undefined && r.deliveredAfterMs <= RESUME_MS,
        `delivery resumed within ${RESUME_MS} ms after SIGCONT: ${JSON.stringify(r)}`);
      for (const s of subs) s.socket.disconnect();
    });
  });
}
