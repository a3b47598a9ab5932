'use strict';
// Rooms: join/leave/rooms, publish to the other members of a room, broadcast with acks, watchers.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startInteropServer } = require('../lib/server');
const { connect, once, ack, roundTrip, closeAll } = require('../lib/client');

let server;
before(async () => { server = await startInteropServer(); });
after(async () => { closeAll(); if (server) await server.stop(); });

let roomSeq = 0;
const freshRoom = (p = 'room') => `${p}-${process.pid}-${++roomSeq}`;

/** Records every `event` a socket receives. */
function record(socket, event) {
  const got = [];
  socket.on(event, (...args) => got.push(args));
  return got;
}

for (const transports of [['websocket'], ['polling']]) {
  const label = transports.join('+');

  describe(`rooms (${label})`, () => {
    it('join, rooms, leave', async () => {
      const s = await connect(server.url, { transports });
      assert.deepEqual(await ack(s, 'rooms'), [s.id]);
      assert.deepEqual(await ack(s, 'join', 'b-room'), { ok: true });
      assert.deepEqual(await ack(s, 'join', 'a-room'), { ok: true });
      assert.deepEqual(await ack(s, 'join', 'a-room'), { ok: true }, 'joining twice is fine');
      assert.deepEqual(await ack(s, 'rooms'), [s.id, 'a-room', 'b-room'].sort());
      assert.deepEqual(await ack(s, 'leave', 'b-room'), { ok: true });
      assert.deepEqual(await ack(s, 'leave', 'not-a-member'), { ok: true });
      assert.deepEqual(await ack(s, 'rooms'), [s.id, 'a-room'].sort());
      s.disconnect();
    });

    it('invalid join/leave/publish arguments get {ok:false, error}', async () => {
      const s = await connect(server.url, { transports });
      for (const [event, ...args] of [
        ['join', 42], ['join', null], ['join', { room: 'x' }], ['leave', 42],
        ['publish', 'not-an-object'], ['publish', { event: 'e', data: 1 }], ['publish', null],
        ['publish', { room: 5, event: 'e', data: 1 }],
      ]) {
        const res = await ack(s, event, ...args);
        assert.equal(res.ok, false, `${event} ${JSON.stringify(args)}`);
        assert.equal(typeof res.error, 'string');
        assert.ok(res.error.length > 0);
      }
      assert.deepEqual(await ack(s, 'rooms'), [s.id]);
      s.disconnect();
    });

    it('publish reaches the other members only (not the sender, not non-members); leave stops delivery', async () => {
      const room = freshRoom();
      const [a, b, c, outsider] = await Promise.all(
        [1, 2, 3, 4].map(() => connect(server.url, { transports })),
      );
      for (const s of [a, b, c]) assert.deepEqual(await ack(s, 'join', room), { ok: true });
      await ack(outsider, 'join', freshRoom('other'));
      const got = new Map([a, b, c, outsider].map((s) => [s, record(s, 'news')]));

      const bGets = once(b, 'news');
      const cGets = once(c, 'news');
      const payload = { text: 'hello', n: [1, 2, { three: true }] };
      assert.deepEqual(await ack(a, 'publish', { room, event: 'news', data: payload }), { ok: true });
      assert.deepEqual(await bGets, [payload]);
      assert.deepEqual(await cGets, [payload]);
      // A round trip on the sender and the outsider proves they have been sent everything
      // queued for them before it.
      await Promise.all([roundTrip(a), roundTrip(outsider)]);
      assert.equal(got.get(a).length, 0, 'the sender does not get its own publish');
      assert.equal(got.get(outsider).length, 0, 'non-members do not get it');
      assert.equal(got.get(b).length, 1);
      assert.equal(got.get(c).length, 1);

      // c leaves: the next publish from b reaches a only.
      assert.deepEqual(await ack(c, 'leave', room), { ok: true });
      const aGets = once(a, 'news');
      assert.deepEqual(await ack(b, 'publish', { room, event: 'news', data: 2 }), { ok: true });
      assert.deepEqual(await aGets, [2]);
      await Promise.all([roundTrip(b), roundTrip(c), roundTrip(outsider)]);
      assert.equal(got.get(a).length, 1);
      assert.equal(got.get(b).length, 1);
      assert.equal(got.get(c).length, 1, 'c left the room');
      assert.equal(got.get(outsider).length, 0);

      // A non-member may publish to a room it is not in.
      const bothGet = Promise.all([once(a, 'news'), once(b, 'news')]);
      assert.deepEqual(await ack(outsider, 'publish', { room, event: 'news', data: 'from outside' }), { ok: true });
      assert.deepEqual(await bothGet, [['from outside'], ['from outside']]);

      // Binary data survives a publish.
      const bin = once(a, 'blob');
      assert.deepEqual(await ack(b, 'publish', { room, event: 'blob', data: Buffer.from([9, 8, 7]) }), { ok: true });
      const [blob] = await bin;
      assert.ok(Buffer.isBuffer(blob) || blob instanceof ArrayBuffer, `binary lost: ${JSON.stringify(blob)}`);
      assert.deepEqual(Buffer.from(blob), Buffer.from([9, 8, 7]));

      for (const s of [a, b, c, outsider]) s.disconnect();
    });

    it('broadcast-ack collects one ack per member', async () => {
      const room = freshRoom();
      const members = await Promise.all([1, 2, 3, 4].map(() => connect(server.url, { transports })));
      const requester = await connect(server.url, { transports });
      for (const [i, s] of members.entries()) {
        await ack(s, 'join', room);
        s.on('survey', (cb) => cb({ id: s.id, i }));
      }
      const requesterGot = record(requester, 'survey');
      const responses = await ack(requester, 'broadcast-ack', room, 'survey');
      assert.equal(requesterGot.length, 0, 'the requester is not in the room');
      assert.ok(Array.isArray(responses));
      const byI = [...responses].sort((x, y) => x.i - y.i);
      assert.deepEqual(byI, members.map((s, i) => ({ id: s.id, i })));

      // An empty room answers with an empty array.
      assert.deepEqual(await ack(requester, 'broadcast-ack', freshRoom('empty'), 'survey'), []);
      for (const s of [...members, requester]) s.disconnect();
    });

    it('watchers get `left` with the server-side reason', async () => {
      const watcher = await connect(server.url, { transports });
      assert.deepEqual(await ack(watcher, 'watch'), { ok: true });
      const leaver = await connect(server.url, { transports });
      const id = leaver.id;
      const left = once(watcher, 'left', { filter: (info) => info.id === id });
      leaver.disconnect();
      assert.deepEqual(await left, [{ id, reason: 'client namespace disconnect' }]);
      watcher.disconnect();
    });
  });
}
