'use strict';
// --max-payload 1000: an oversize packet closes only the offending client.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startInteropServer } = require('../lib/server');
const { connect, once, ack, ackAll, closeAll, assertHealthy } = require('../lib/client');
const raw = require('../lib/raw');

const LIMIT = 1000;

let server;
before(async () => { server = await startInteropServer(['--max-payload', LIMIT]); });
after(async () => { closeAll(); if (server) await server.stop(); });

describe('max payload', () => {
  it('the handshake announces maxPayload', async () => {
    const { open } = await raw.pollingHandshake(server.url);
    assert.equal(open.maxPayload, LIMIT);
  });

  for (const transports of [['websocket'], ['polling']]) {
    const label = transports.join('+');
    for (const kind of ['text', 'binary']) {
      it(`an oversize ${kind} packet closes only the offending client (${label})`, async () => {
        const bystander = await connect(server.url, { transports });
        const offender = await connect(server.url, { transports });
        // Just under the limit is fine.
        const small = 'y'.repeat(LIMIT - 100);
        assert.deepEqual(await ackAll(offender, 'message-with-ack', small), [small]);

        const gone = once(offender, 'disconnect');
        const big = kind === 'text' ? 'x'.repeat(LIMIT * 2) : Buffer.alloc(LIMIT * 2, 7);
        offender.emit('message', big);
        const [reason] = await gone;
        assert.ok(['transport close', 'transport error'].includes(reason), `reason ${reason}`);

        // The other client keeps working.
        assert.equal(bystander.connected, true);
        const back = once(bystander, 'message-back');
        bystander.emit('message', 'still here');
        assert.deepEqual(await back, ['still here']);
        assert.equal(await ack(bystander, 'message-with-ack', 'ok'), 'ok');
        bystander.disconnect();
        await assertHealthy(server.url, transports);
      });
    }
  }
});
