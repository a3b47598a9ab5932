'use strict';
// `ferrio serve`: namespace / with the built-in events join, leave and publish.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startServe } = require('../lib/server');
const { connect, once, ack, closeAll } = require('../lib/client');
const raw = require('../lib/raw');

let server;
before(async () => {
  server = await startServe(['--ping-interval', 1500, '--ping-timeout', 1000, '--max-payload', 50000]);
});
after(async () => { closeAll(); raw.closeAllRaw(); if (server) await server.stop(); });

let seq = 0;
const freshRoom = (p = 'room') => `${p}-${process.pid}-${++seq}`;

function record(socket, event) {
  const got = [];
  socket.on(event, (...args) => got.push(args));
  return got;
}

/** Joining a throwaway room is a round trip: everything queued for the socket before has been sent. */
async function barrier(...sockets) {
  await Promise.all(sockets.map(async (s) => {
    assert.deepEqual(await ack(s, 'join', freshRoom('barrier')), { ok: true });
  }));
}

describe('ferrio serve: command line', () => {
  it('--ping-interval, --ping-timeout and --max-payload reach the handshake', async () => {
    const { open } = await raw.pollingHandshake(server.url);
    assert.equal(open.pingInterval, 1500);
    assert.equal(open.pingTimeout, 1000);
    assert.equal(open.maxPayload, 50000);
    assert.equal(open.sid.length, 20);
    assert.deepEqual(open.upgrades, ['websocket']);
  });
});

for (const transports of [['websocket'], ['polling'], ['polling', 'websocket']]) {
  const label = transports.join('+');

  describe(`ferrio serve built-ins (${label})`, () => {
    it('join and leave acknowledge {ok:true}', async () => {
      const s = await connect(server.url, { transports });
      const room = freshRoom();
      assert.deepEqual(await ack(s, 'join', room), { ok: true });
      assert.deepEqual(await ack(s, 'join', room), { ok: true });
      assert.deepEqual(await ack(s, 'leave', room), { ok: true });
      assert.deepEqual(await ack(s, 'leave', room), { ok: true }, 'leaving a room one is not in');
      s.disconnect();
    });

    it('publish reaches every other member, not the sender, not non-members, not other rooms', async () => {
      const room = freshRoom();
      const other = freshRoom('other');
      const [a, b, c, outsider, elsewhere] = await Promise.all(
        [1, 2, 3, 4, 5].map(() => connect(server.url, { transports })),
      );
      for (const s of [a, b, c]) assert.deepEqual(await ack(s, 'join', room), { ok: true });
      assert.deepEqual(await ack(elsewhere, 'join', other), { ok: true });
      const got = new Map([a, b, c, outsider, elsewhere].map((s) => [s, record(s, 'chat')]));

      const data = { text: 'hi', list: [1, 'two', null, { deep: true }] };
      const bGets = once(b, 'chat');
      const cGets = once(c, 'chat');
      assert.deepEqual(await ack(a, 'publish', { room, event: 'chat', data }), { ok: true });
      assert.deepEqual(await bGets, [data]);
      assert.deepEqual(await cGets, [data]);
      await barrier(a, outsider, elsewhere);
      assert.equal(got.get(a).length, 0, 'not the sender');
      assert.equal(got.get(outsider).length, 0, 'not a non-member');
      assert.equal(got.get(elsewhere).length, 0, 'not a member of another room');
      assert.equal(got.get(b).length, 1);
      assert.equal(got.get(c).length, 1);

      // Leave stops delivery.
      assert.deepEqual(await ack(c, 'leave', room), { ok: true });
      const aGets = once(a, 'chat');
      assert.deepEqual(await ack(b, 'publish', { room, event: 'chat', data: 'second' }), { ok: true });
      assert.deepEqual(await aGets, ['second']);
      await barrier(b, c);
      assert.equal(got.get(c).length, 1, 'c left before the second publish');
      assert.equal(got.get(b).length, 1, 'not the sender');

      // A non-member may publish into the room.
      const both = Promise.all([once(a, 'chat'), once(b, 'chat')]);
      assert.deepEqual(await ack(outsider, 'publish', { room, event: 'chat', data: 3 }), { ok: true });
      assert.deepEqual(await both, [[3], [3]]);

      // A member that disconnected is gone from the room; publishing still works.
      a.disconnect();
      const bLast = once(b, 'chat');
      assert.deepEqual(await ack(outsider, 'publish', { room, event: 'chat', data: 'last' }), { ok: true });
      assert.deepEqual(await bLast, ['last']);
      for (const s of [b, c, outsider, elsewhere]) s.disconnect();
    });

    it('publish with various data types and event names', async () => {
      const room = freshRoom();
      const [a, b] = await Promise.all([1, 2].map(() => connect(server.url, { transports })));
      await ack(b, 'join', room);
      for (const [event, data] of [
        ['n', 42], ['s', 'text ✓'], ['t', true], ['z', null], ['arr', [1, [2, [3]]]], ['with space', { a: 1 }],
      ]) {
        const next = once(b, event);
        assert.deepEqual(await ack(a, 'publish', { room, event, data }), { ok: true });
        assert.deepEqual(await next, [data], event);
      }
      a.disconnect();
      b.disconnect();
    });

    it('invalid arguments get {ok:false, error:<reason>} and change nothing', async () => {
      const room = freshRoom();
      const [s, member] = await Promise.all([1, 2].map(() => connect(server.url, { transports })));
      await ack(member, 'join', room);
      const memberGot = record(member, 'x');
      const cases = [
        ['join', 42],
        ['join', null],
        ['join', { room }],
        ['join'],
        ['leave', 42],
        ['leave'],
        ['publish', { event: 'x', data: 1 }], // no room
        ['publish', { room: 7, event: 'x', data: 1 }],
        ['publish', 'not an object'],
        ['publish', 12],
        ['publish', [room, 'x', 1]],
        ['publish', null],
        ['publish'],
        ['publish', { room, data: 1 }], // no event
        ['publish', { room, event: 5, data: 1 }],
      ];
      for (const [event, ...args] of cases) {
        const res = await ack(s, event, ...args);
        const what = `${event}(${args.map((a) => JSON.stringify(a)).join(', ')})`;
        assert.equal(res && res.ok, false, what);
        assert.equal(typeof res.error, 'string', what);
        assert.ok(res.error.length > 0, what);
      }
      await barrier(member);
      assert.equal(memberGot.length, 0, 'no invalid publish was delivered');
      // The socket still works after all that.
      assert.deepEqual(await ack(s, 'join', room), { ok: true });
      const next = once(member, 'x');
      assert.deepEqual(await ack(s, 'publish', { room, event: 'x', data: 'valid' }), { ok: true });
      assert.deepEqual(await next, ['valid']);
      s.disconnect();
      member.disconnect();
    });
  });
}
