'use strict';
// Binary arguments both ways and acknowledgements both ways, over websocket and polling.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startInteropServer } = require('../lib/server');
const { connect, once, ackAll, closeAll } = require('../lib/client');

let server;
before(async () => { server = await startInteropServer(); });
after(async () => { closeAll(); if (server) await server.stop(); });

function toBuf(x) {
  assert.ok(Buffer.isBuffer(x) || x instanceof ArrayBuffer || ArrayBuffer.isView(x), `not binary: ${typeof x}`);
  return Buffer.isBuffer(x) ? x : Buffer.from(x instanceof ArrayBuffer ? x : x.buffer);
}

const bytes = (n, seed = 0) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));

function assertBinaryArgs(got) {
  // ['text', <3 bytes>, {nested: <256 bytes>, list: [<0 bytes>, 7]}, <64 KiB>]
  assert.equal(got.length, 4);
  assert.equal(got[0], 'text');
  assert.deepEqual(toBuf(got[1]), Buffer.from([1, 2, 3]));
  assert.deepEqual(toBuf(got[2].nested), bytes(256));
  assert.deepEqual(toBuf(got[2].list[0]), Buffer.alloc(0));
  assert.equal(got[2].list[1], 7);
  assert.deepEqual(toBuf(got[3]), bytes(65536, 5));
}

const binaryArgs = () => [
  'text', Buffer.from([1, 2, 3]), { nested: bytes(256), list: [Buffer.alloc(0), 7] }, bytes(65536, 5),
];

for (const transports of [['websocket'], ['polling']]) {
  const label = transports.join('+');

  describe(`binary (${label})`, () => {
    it('Buffer arguments round-trip through message/message-back', async () => {
      const socket = await connect(server.url, { transports });
      const back = once(socket, 'message-back');
      socket.emit('message', ...binaryArgs());
      assertBinaryArgs(await back);
      socket.disconnect();
    });

    it('Buffer arguments round-trip through an ack (message-with-ack)', async () => {
      const socket = await connect(server.url, { transports });
      assertBinaryArgs(await ackAll(socket, 'message-with-ack', ...binaryArgs()));
      socket.disconnect();
    });

    it('binary in a server-initiated ack (call-client)', async () => {
      const socket = await connect(server.url, { transports });
      socket.on('give-bytes', (n, cb) => cb('here', bytes(n, 9)));
      const res = await ackAll(socket, 'call-client', 'give-bytes', 1000);
      assert.equal(res[0], 'here');
      assert.deepEqual(toBuf(res[1]), bytes(1000, 9));
      socket.disconnect();
    });
  });

  describe(`acks (${label})`, () => {
    it('client-requested ack (message-with-ack) returns the same arguments', async () => {
      const socket = await connect(server.url, { transports });
      assert.deepEqual(await ackAll(socket, 'message-with-ack', 1, '2', { 3: [false] }), [1, '2', { 3: [false] }]);
      assert.deepEqual(await ackAll(socket, 'message-with-ack'), []);
      // Many acks in flight at once are matched to their callers.
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) => ackAll(socket, 'message-with-ack', i, `s${i}`)),
      );
      results.forEach((r, i) => assert.deepEqual(r, [i, `s${i}`]));
      socket.disconnect();
    });

    it('server-initiated ack (call-client): the client answers, the server relays the answer', async () => {
      const socket = await connect(server.url, { transports });
      const seen = [];
      socket.on('question', (a, b, cb) => {
        seen.push([a, b]);
        cb({ answer: a + b }, 'extra');
      });
      assert.deepEqual(await ackAll(socket, 'call-client', 'question', 20, 22), [{ answer: 42 }, 'extra']);
      assert.deepEqual(seen, [[20, 22]]);
      socket.disconnect();
    });

    it('server-initiated ack that the client never answers: {"error":"timeout"} after 2 s', async () => {
      const socket = await connect(server.url, { transports });
      const asked = once(socket, 'ignored');
      const t0 = Date.now();
      const res = await ackAll(socket, 'call-client', 'ignored', 'x');
      assert.deepEqual(res, [{ error: 'timeout' }]);
      assert.ok(Date.now() - t0 >= 1500, `timed out after ${Date.now() - t0} ms`);
      const [arg, cb] = await asked;
      assert.equal(arg, 'x');
      assert.equal(typeof cb, 'function');
      socket.disconnect();
    });
  });
}
