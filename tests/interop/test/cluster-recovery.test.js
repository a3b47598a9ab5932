'use strict';
// Connection-state recovery across a cluster: two `ferrio serve` nodes (N1, N2) on one Redis of
// our own, recovery on. A client C on N1 is the only member of its room on N1; what another node
// (N2) publishes while C is away must come back to C on N1, once each and in order, or, when N1
// cannot prove that it has everything C missed, C must be told `recovered: false` and get none
// of it:
//   - the packet window of N1 ([recovery] max_packets) was trimmed past C's offset;
//   - N1's feed from Redis broke while C was away (Redis killed and restarted).
// Every attempt is counted in ferrio_recovery_total{result, reason} on N1.
//
// How C is brought back: C's transport is cut under socket.io-client (as a network drop would);
// C's automatic reconnection (on, with small delays) is held off until the publications are
// acknowledged (`io.reconnection(false)` before the cut, then `io.reconnection(true)` and
// `connect()`), so C certainly missed them all: the same CONNECT with {pid, offset} as the
// client's own reconnection, always to N1. A witness socket W on N1, in another room, receives
// a probe N2 publishes after the messages: N1 handles its Redis feed in order, so once W has
// the probe, N1 has had every message before it.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const procs = require('../cluster/procs');
const { serverKind } = require('../lib/server');
const { createClient, connect, waitConnected, once, ack, waitUntil, closeAll, forget } = require('../lib/client');
const cs = require('../lib/cluster-serve');

const skip = serverKind() === 'node'
  ? 'a cluster of ferrio serve nodes'
  : (procs.haveRedis() ? false : 'redis-server is not installed');
if (skip) process.stderr.write(`!!! SKIPPED cluster recovery tests: ${skip}\n`);

const RECOVERY_ENV = {
  FERRIO_RECOVERY__ENABLED: 'true',
  FERRIO_RECOVERY__MAX_DISCONNECTION_DURATION: '30s',
};

/** Cuts the TCP connection under a websocket client, as a network drop would. */
function killTransport(socket) {
  const transport = socket.io.engine.transport;
  assert.equal(transport.name, 'websocket');
  transport.ws._socket.destroy();
}

/** The ferrio_recovery_total series of N1, summed by result, and whether each has a reason. */
async function recoveryCounts(node) {
  const text = await cs.metrics(node);
  const all = cs.series(text, 'ferrio_recovery_total');
  return {
    all,
    recovered: cs.counterSum(text, 'ferrio_recovery_total', { result: 'recovered' }),
    failed: cs.counterSum(text, 'ferrio_recovery_total', { result: 'failed' }),
    failedBy: (reason) => cs.counterSum(text, 'ferrio_recovery_total', { result: 'failed', reason }),
  };
}

/** Asserts that exactly one attempt of `result` (with a reason label) was counted since `before`. */
async function assertCounted(node, before, result, reason) {
  const now = await recoveryCounts(node);
  const seen = JSON.stringify(now.all);
  assert.ok(now.all.length > 0, 'ferrio_recovery_total is in /metrics');
  for (const s of now.all) {
    assert.ok(['recovered', 'failed'].includes(s.labels.result), `result label: ${seen}`);
    assert.equal(typeof s.labels.reason, 'string', `every series has a reason label: ${seen}`);
  }
  assert.equal(now[result] - before[result], 1, `one more result="${result}": ${seen}`);
  const other = result === 'recovered' ? 'failed' : 'recovered';
  assert.equal(now[other] - before[other], 0, `no other result counted: ${seen}`);
  if (reason) assert.equal(now.failedBy(reason) - before.failedBy(reason), 1, `reason="${reason}": ${seen}`);
}

for (const mode of ['classic', 'sharded']) {
  describe(`cluster recovery, two ferrio serve nodes (${mode})`, { skip }, () => {
    let redis;
    let n1;
    let n2;
    const started = [];
    const node = async (name, env = {}) => {
      const n = await cs.startServeNode({ redis, mode, name, env: { ...RECOVERY_ENV, ...env } });
      started.push(n);
      return n;
    };

    before(async () => {
      redis = await procs.startRedis();
      n1 = await node(`n1-${mode}`);
      n2 = await node(`n2-${mode}`);
      await cs.waitReadyz([n1, n2], 200);
      await cs.waitSubscribed(redis.url, mode, { nodes: 2 });
    });

    after(async () => {
      closeAll();
      for (const n of started) await n.stop();
      if (redis) await redis.stop();
    });

    /**
     * C (recoverable, on `home`) in `room`, publishers P1 on `home` and P2 on N2, witness W on
     * `home` in a probe room. Returns them with what C and W received.
     */
    async function setUp(home, room, nodesSubscribed) {
      const c = createClient(home.url, {
        transports: ['websocket'], reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200,
      });
      await waitConnected(c);
      assert.equal(c.recovered, false, 'a first connection is not a recovery');
      const [p1, p2, w] = await Promise.all([connect(home.url), connect(n2.url), connect(home.url)]);
      const probeRoom = `${room}-probe`;
      assert.deepEqual(await ack(c, 'join', room), { ok: true });
      assert.deepEqual(await ack(w, 'join', probeRoom), { ok: true });
      const got = [];
      c.on(room, (n) => got.push(n));
      const probes = [];
      w.on('probe', (n) => probes.push(n));
      await cs.waitSubscribed(redis.url, mode, { nodes: nodesSubscribed, rooms: [[room, 1], [probeRoom, 1]] });
      let probeSeq = 0;
      /** P2 publishes a probe; resolves once W (on `home`) has it. */
      const probe = async () => {
        const n = ++probeSeq;
        assert.deepEqual(await ack(p2, 'publish', { room: probeRoom, event: 'probe', data: n }), { ok: true });
        await waitUntil(() => probes.includes(n), { timeout: 5000, what: `probe ${n} at the witness` });
      };
      return { c, p1, p2, w, got, probe };
    }

    /** C holds an offset (message 0 from P1 on C's own node), then its transport is cut. */
    async function holdAndCut({ c, p1, got }, room) {
      assert.deepEqual(await ack(p1, 'publish', { room, event: room, data: 0 }), { ok: true });
      await waitUntil(() => got.length === 1, { timeout: 5000, what: 'message 0' });
      assert.equal(typeof c._lastOffset, 'string', 'the client holds an offset');
      c.io.reconnection(false);
      const dropped = once(c, 'disconnect');
      killTransport(c);
      const [reason] = await dropped;
      assert.equal(reason, 'transport close');
    }

    /** C reconnects (to the same node), as its own reconnection would. */
    async function reconnect(c) {
      c.io.reconnection(true);
      c.connect();
      await waitConnected(c, 10000);
    }

    /** Everything queued for `socket` before has been sent: a join round trip, then a pause. */
    /**
     * While C is away: `count` messages (1..count) published to `room` through N2, each
     * acknowledged ok, and the probe through N1's witness; then C reconnects to `node`.
     * Returns the recovery counters from before the reconnection.
     */
    async function publishThenReconnect(s, room, count, node) {
      for (let n = 1; n <= count; n++) {
        assert.deepEqual(await ack(s.p2, 'publish', { room, event: room, data: n }), { ok: true }, `publish ${n}`);
      }
      await s.probe();
      const counts = await recoveryCounts(node);
      await reconnect(s.c);
      return counts;
    }

    async function settle(socket, ms = 300) {
      assert.deepEqual(await ack(socket, 'join', `settle-${Math.random().toString(36).slice(2)}`), { ok: true });
      await cs.sleep(ms);
    }

    it('what another node published while C was away comes back once, in order; C keeps its id and room', async () => {
      const room = 'news';
      const s = await setUp(n1, room, 2);
      const { c, p2, got } = s;
      const id = c.id;
      await holdAndCut(s, room);
      const counts = await publishThenReconnect(s, room, 20, n1);
      assert.equal(c.recovered, true, 'recovered');
      assert.equal(c.id, id, 'same socket id');
      await waitUntil(() => got.length >= 21, { timeout: 5000, what: 'the 20 missed messages' });
      await settle(c);
      assert.deepEqual(got, Array.from({ length: 21 }, (_, i) => i), 'each once, in order');
      // Still in the room, without joining again.
      assert.deepEqual(await ack(p2, 'publish', { room, event: room, data: 21 }), { ok: true });
      await waitUntil(() => got.length >= 22, { timeout: 5000, what: 'a live message after recovery' });
      await settle(c, 100);
      assert.deepEqual(got, Array.from({ length: 22 }, (_, i) => i));
      await assertCounted(n1, counts, 'recovered');
      for (const x of [c, s.p1, p2, s.w]) { x.disconnect(); forget(x); }
    });

    it('a packet window trimmed past C\'s offset: recovered is false and nothing missed is replayed', async () => {
      // N1 with a window of 5 packets; the default N1 stays up (and out of this room).
      const n1t = await node(`n1t-${mode}`, { FERRIO_RECOVERY__MAX_PACKETS: '5' });
      await cs.waitReadyz([n1t], 200);
      const room = 'news-trimmed';
      const s = await setUp(n1t, room, 3);
      const { c, p2, got } = s;
      const id = c.id;
      await holdAndCut(s, room);
      const counts = await publishThenReconnect(s, room, 20, n1t);
      assert.equal(c.recovered, false, 'not recovered: C missed more than the window holds');
      assert.notEqual(c.id, id, 'a new socket');
      await settle(c);
      assert.deepEqual(got, [0], 'none of the 20 missed messages');
      await assertCounted(n1t, counts, 'failed', 'history_trimmed');
      for (const x of [c, s.p1, p2, s.w]) { x.disconnect(); forget(x); }
    });

    it('Redis lost and back while C was away: recovered is false (N1 cannot prove it has everything)', async () => {
      const room = 'news-outage';
      const s = await setUp(n1, room, started.length);
      const { c, p2, got } = s;
      const id = c.id;
      await holdAndCut(s, room);

      await redis.stop(); // SIGKILL
      try {
        const t = await cs.waitReadyz([n1, n2], 503, 5000);
        console.log(`[${mode}] both nodes reported adapter_unhealthy ${t} ms after Redis was killed`);
      } catch (e) {
        console.log(`[${mode}] (not seen unready while Redis was down: ${e.message})`);
      }
      await redis.restart(); // same port, empty
      const back = await cs.waitReadyz(started, 200, 15000);
      console.log(`[${mode}] every node ready ${back} ms after Redis was back`);
      // Every node has subscribed again.
      await cs.waitSubscribed(redis.url, mode, { nodes: started.length, rooms: [[`${room}-probe`, 1]] });
      if (mode === 'sharded') {
        // C's room has no live member on N1, only C's kept session: N1 should subscribe to its
        // channel again, so that it gets the 3 messages below (either way it must not claim
        // to have everything C missed).
        try {
          await cs.waitSubscribed(redis.url, mode, { nodes: started.length, rooms: [[room, 1]], timeout: 3000 });
        } catch (e) {
          console.log(`[${mode}] N1 is not subscribed to ${room} again: ${e.message}`);
        }
      }

      const counts = await publishThenReconnect(s, room, 3, n1);
      assert.equal(c.recovered, false, 'not recovered: N1\'s feed from Redis had a gap while C was away');
      assert.notEqual(c.id, id, 'a new socket');
      await settle(c);
      assert.deepEqual(got, [0], 'nothing replayed');
      await assertCounted(n1, counts, 'failed', 'cluster_gap');
      for (const x of [c, s.p1, p2, s.w]) { x.disconnect(); forget(x); }
    });
  });
}
