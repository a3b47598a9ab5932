'use strict';
// Room permissions from token claims with the official socket.io-client: `rooms` and `publish`
// claims with patterns, grants for every user from the configuration, the automatic
// `user:<sub>` room, a refresh that narrows the rooms, and the per-socket room and
// per-connection namespace limits.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { connect, createManager, waitConnected, expectConnectError, once, ack, closeAll } = require('../lib/client');
const sec = require('../lib/security');

const SECRET = 'interop-rooms-secret-0123456789abcdef-0123';
const token = (sub, claims = {}) => sec.hsToken(SECRET, sub, claims);

function record(socket, event) {
  const got = [];
  socket.on(event, (...args) => got.push(args));
  return got;
}

/** A join of an allowed throwaway room: a round trip, so everything sent before has arrived. */
async function barrier(...sockets) {
  for (const s of sockets) assert.deepEqual(await ack(s, 'join', 'public:barrier'), { ok: true });
}

describe('ferrio serve: room permissions', sec.ferrioOnly, () => {
  let server;
  before(async () => {
    server = await sec.startSecure([
      'namespaces = ["/", "/a", "/b"]',
      '[auth]',
      `secret = "${SECRET}"`,
      '[origin]',
      'allow_missing = true',
      '[rooms]',
      'join = ["public:*"]',
      'publish = ["public:*"]',
      '[limits]',
      'max_rooms_per_socket = 4',
      'max_namespaces_per_connection = 2',
    ].join('\n'));
  });
  after(async () => {
    closeAll();
    if (server) await server.stop();
    sec.removeFiles();
  });

  const as = (sub, claims, transports = ['websocket']) =>
    connect(server.url, { transports, auth: { token: token(sub, claims) } });

  it('joins and publishes only where the token or the configuration allows', async () => {
    const alice = await as('alice', { rooms: ['chat:*'], publish: ['chat:lobby'] });
    const bob = await as('bob', { rooms: ['chat:*'] }, ['polling']);
    const carol = await as('carol');

    assert.deepEqual(await ack(alice, 'join', 'chat:lobby'), { ok: true });
    assert.deepEqual(await ack(alice, 'join', 'public:news'), { ok: true }, 'granted by the configuration');
    assert.deepEqual(await ack(alice, 'join', 'admin'), { ok: false, error: 'forbidden' });
    assert.deepEqual(await ack(alice, 'join', 'chatroom'), { ok: false, error: 'forbidden' }, 'not chat:*');
    assert.deepEqual(await ack(carol, 'join', 'chat:lobby'), { ok: false, error: 'forbidden' }, 'no rooms claim');
    assert.deepEqual(await ack(bob, 'join', 'chat:lobby'), { ok: true });
    assert.deepEqual(await ack(bob, 'join', 'chat:other'), { ok: true });

    const bobGot = record(bob, 'msg');
    const delivered = once(bob, 'msg');
    assert.deepEqual(await ack(alice, 'publish', { room: 'chat:lobby', event: 'msg', data: 'hi' }), { ok: true });
    assert.deepEqual(await delivered, ['hi']);
    // Joining is not publishing: alice may join chat:other but not publish there; bob may not publish at all.
    assert.deepEqual(
      await ack(alice, 'publish', { room: 'chat:other', event: 'msg', data: 'no' }),
      { ok: false, error: 'forbidden' },
    );
    assert.deepEqual(
      await ack(carol, 'publish', { room: 'chat:lobby', event: 'msg', data: 'no' }),
      { ok: false, error: 'forbidden' },
    );
    await barrier(bob);
    assert.deepEqual(bobGot, [['hi']], 'nothing forbidden was delivered');

    // Everyone may publish where the configuration grants it.
    assert.deepEqual(await ack(bob, 'join', 'public:town'), { ok: true });
    const town = once(bob, 'msg');
    assert.deepEqual(await ack(carol, 'publish', { room: 'public:town', event: 'msg', data: 'all' }), { ok: true });
    assert.deepEqual(await town, ['all']);
    for (const s of [alice, bob, carol]) s.disconnect();
  });

  it('every socket of a user is in user:<sub>', async () => {
    const phone = await as('dora');
    const laptop = await as('dora', {}, ['polling']);
    const backend = await as('svc', { publish: ['user:*'] });
    const eve = await as('eve');
    const both = Promise.all([once(phone, 'notice'), once(laptop, 'notice')]);
    assert.deepEqual(await ack(backend, 'publish', { room: 'user:dora', event: 'notice', data: 1 }), { ok: true });
    assert.deepEqual(await both, [[1], [1]]);
    assert.deepEqual(
      await ack(eve, 'publish', { room: 'user:dora', event: 'notice', data: 2 }),
      { ok: false, error: 'forbidden' },
    );
    assert.deepEqual(await ack(eve, 'join', 'user:dora'), { ok: false, error: 'forbidden' }, 'not her room');
    assert.deepEqual(await ack(phone, 'join', 'user:dora'), { ok: true }, 'her own');
    for (const s of [phone, laptop, backend, eve]) s.disconnect();
  });

  it('a refreshed token with fewer rooms leaves the rooms it no longer allows', async () => {
    const frank = await as('frank', { rooms: ['chat:*'] });
    const publisher = await as('pub', { publish: ['chat:*'] });
    assert.deepEqual(await ack(frank, 'join', 'chat:secret'), { ok: true });
    const got = record(frank, 'msg');
    const first = once(frank, 'msg');
    assert.deepEqual(await ack(publisher, 'publish', { room: 'chat:secret', event: 'msg', data: 1 }), { ok: true });
    await first;
    assert.equal((await ack(frank, 'refresh', token('frank', { rooms: [] }))).ok, true);
    assert.deepEqual(await ack(publisher, 'publish', { room: 'chat:secret', event: 'msg', data: 2 }), { ok: true });
    await barrier(frank);
    assert.deepEqual(got, [[1]]);
    assert.deepEqual(await ack(frank, 'join', 'chat:secret'), { ok: false, error: 'forbidden' });
    frank.disconnect();
    publisher.disconnect();
  });

  it('a socket joins at most max_rooms_per_socket rooms', async () => {
    const s = await as('gina');
    for (const room of ['public:1', 'public:2', 'public:3', 'public:4']) {
      assert.deepEqual(await ack(s, 'join', room), { ok: true }, room);
    }
    assert.deepEqual(await ack(s, 'join', 'public:5'), { ok: false, error: 'too_many_rooms' });
    assert.deepEqual(await ack(s, 'join', 'public:2'), { ok: true }, 'already in it');
    assert.deepEqual(await ack(s, 'leave', 'public:2'), { ok: true });
    assert.deepEqual(await ack(s, 'join', 'public:5'), { ok: true });
    s.disconnect();
  });

  it('a connection joins at most max_namespaces_per_connection namespaces', async () => {
    const manager = createManager(server.url);
    const auth = { token: token('hank') };
    const root = manager.socket('/', { auth });
    const a = manager.socket('/a', { auth });
    root.connect();
    a.connect();
    await Promise.all([waitConnected(root), waitConnected(a)]);
    const b = manager.socket('/b', { auth });
    b.connect();
    const err = await expectConnectError(b);
    assert.equal(err.message, 'forbidden');
    assert.deepEqual(err.data, { reason: 'too_many_namespaces' });
    // Leaving one frees its place.
    a.disconnect();
    const b2 = manager.socket('/b', { auth, forceNew: false });
    b2.connect();
    await waitConnected(b2);
    root.disconnect();
    b2.disconnect();
  });
});
