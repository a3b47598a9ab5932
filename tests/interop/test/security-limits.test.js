'use strict';
// Limits of `ferrio serve` with the official socket.io-client: a socket that floods events is
// rate limited and then disconnected while the others go on; one address that opens too many
// connections is refused (429) while other addresses (127.0.0.x) are not.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { connect, createClient, once, ack, closeAll, forget } = require('../lib/client');
const raw = require('../lib/raw');
const sec = require('../lib/security');

describe('ferrio serve: limits', sec.ferrioOnly, () => {
  let server;
  before(async () => {
    server = await sec.startSecure([
      '[limits]',
      'event_rate = 20',
      'event_burst = 20',
      'event_strikes = 40',
      'event_strike_window = "10s"',
      'max_connections_per_ip = 5',
      'connection_rate_per_ip = 0',
    ].join('\n'));
  });
  after(async () => {
    closeAll();
    raw.closeAllRaw();
    if (server) await server.stop();
    sec.removeFiles();
  });

  it('an event flood is refused, then disconnected; other sockets are unaffected', async () => {
    const flooder = await connect(server.url, { localAddress: '127.0.0.4' });
    const bystander = await connect(server.url, { transports: ['polling'], localAddress: '127.0.0.5' });

    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => ack(flooder, 'join', `r${i % 3}`)));
    const ok = answers.filter((a) => a.ok).length;
    const limited = answers.filter((a) => !a.ok && a.error === 'rate_limited').length;
    assert.equal(ok + limited, 40, JSON.stringify(answers));
    assert.ok(ok >= 20 && ok < 30, `${ok} accepted: the burst is 20`);
    assert.ok(limited >= 10, `${limited} refused`);
    assert.deepEqual(await ack(bystander, 'join', 'calm'), { ok: true }, 'the bystander is served meanwhile');

    // It keeps going: the connection is closed.
    const gone = once(flooder, 'disconnect');
    for (let i = 0; i < 200 && flooder.connected; i++) flooder.emit('join', 'again');
    // The connection is closed (the client may see the DISCONNECT packet or only the close).
    assert.ok(['io server disconnect', 'transport close'].includes((await gone)[0]), (await gone)[0]);
    assert.ok(!flooder.connected);
    assert.deepEqual(await ack(bystander, 'join', 'still-calm'), { ok: true });
    // A new socket from the same address starts with a full bucket.
    const again = await connect(server.url, { localAddress: '127.0.0.4' });
    assert.deepEqual(await ack(again, 'join', 'fresh'), { ok: true });
    again.disconnect();
    bystander.disconnect();
  });

  it('a connection flood from one address is refused; other addresses still connect', async () => {
    const held = [];
    for (let i = 0; i < 5; i++) held.push(await connect(server.url, { localAddress: '127.0.0.2' }));
    assert.equal(await sec.wsStatus(raw.wsUrl(server.url), {}, { localAddress: '127.0.0.2' }), 429);
    const polling = await new Promise((resolve, reject) => {
      const req = require('node:http').get(`${server.url}/socket.io/?EIO=4&transport=polling`, { localAddress: '127.0.0.2' }, (res) => {
        res.resume();
        resolve(res.statusCode);
      });
      req.on('error', reject);
    });
    assert.equal(polling, 429);
    const refused = createClient(server.url, { localAddress: '127.0.0.2' });
    const err = await new Promise((resolve) => {
      refused.once('connect', () => resolve(null));
      refused.once('connect_error', resolve);
    });
    assert.ok(err, 'the sixth client from 127.0.0.2 connected');
    refused.close();
    forget(refused);

    const other = await connect(server.url, { localAddress: '127.0.0.3' });
    assert.deepEqual(await ack(other, 'join', 'x'), { ok: true });
    for (const s of held) assert.ok(s.connected, 'the held connections are untouched');
    // Closing one lets the address in again.
    const closed = held.pop();
    closed.disconnect();
    let status = 0;
    for (let i = 0; i < 100 && status !== 101; i++) {
      status = await sec.wsStatus(raw.wsUrl(server.url), {}, { localAddress: '127.0.0.2' });
      if (status !== 101) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(status, 101);
    for (const s of [...held, other]) s.disconnect();
  });
});
