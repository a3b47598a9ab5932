'use strict';
// Raw Engine.IO / Socket.IO protocol tests (Node's http + ws). Every expectation is the Node
// reference's exact answer (socket.io 4.8.4 / engine.io 6.6.12 / socket.io-parser 4.2.7); where the
// reference does something surprising the test says so.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startInteropServer, serverKind } = require('../lib/server');
const { assertHealthy, closeAll, waitUntil } = require('../lib/client');
const raw = require('../lib/raw');

const { SEP, request, parseJson, pollingHandshake, pollGet, pollPost, openWs, wsUrl, wsHandshake, sioConnect } = raw;

const PING_INTERVAL = 10000;
const PING_TIMEOUT = 5000;
const MAX_PAYLOAD = 100000;

let main; // --ping-interval 10000 --ping-timeout 5000 --max-payload 100000
let conf; // --conformance: ping 300/200, connect timeout 1000
let base;

before(async () => {
  [main, conf] = await Promise.all([
    startInteropServer([
      '--ping-interval', PING_INTERVAL, '--ping-timeout', PING_TIMEOUT, '--max-payload', MAX_PAYLOAD,
    ]),
    startInteropServer(['--conformance']),
  ]);
  base = main.url;
});

after(async () => {
  raw.closeAllRaw();
  closeAll();
  await Promise.all([main && main.stop(), conf && conf.stop()]);
});

function sio(query = '') {
  return `${base}/socket.io/?${query}`;
}

function assertJsonError(res, status, code, message) {
  assert.equal(res.status, status, `status (body ${res.body})`);
  assert.match(res.headers['content-type'] || '', /^application\/json/);
  assert.deepEqual(JSON.parse(res.body), { code, message });
}

function assertOpenPacket(open, upgrades) {
  assert.deepEqual(Object.keys(open).sort(), ['maxPayload', 'pingInterval', 'pingTimeout', 'sid', 'upgrades']);
  assert.equal(typeof open.sid, 'string');
  assert.equal(open.sid.length, 20);
  assert.deepEqual(open.upgrades, upgrades);
  assert.equal(open.pingInterval, PING_INTERVAL);
  assert.equal(open.pingTimeout, PING_TIMEOUT);
  assert.equal(open.maxPayload, MAX_PAYLOAD);
}

/** A Socket.IO packet: exact prefix, then JSON compared as a value (key order is free). */
function assertPacket(packet, prefix, json) {
  assert.equal(typeof packet, 'string');
  assert.equal(packet.slice(0, prefix.length), prefix, packet);
  assert.deepEqual(JSON.parse(packet.slice(prefix.length)), json, packet);
}

/** GET on a polling session until the packets matching `pred` show up (bounded). */
async function pollUntil(url, pred, what) {
  const seen = [];
  for (let i = 0; i < 10; i++) {
    const res = await pollGet(url);
    assert.equal(res.status, 200, `poll status (body ${res.body})`);
    seen.push(...res.body.split(SEP));
    if (pred(seen)) return seen;
  }
  throw new Error(`never saw ${what}; got ${JSON.stringify(seen)}`);
}

describe('Engine.IO handshake', () => {
  it('polling handshake: open packet with sid, upgrades, pingInterval, pingTimeout, maxPayload', async () => {
    const res = await request(sio('EIO=4&transport=polling'));
    assert.equal(res.status, 200);
    assert.match(res.headers['content-type'], /^text\/plain/);
    assert.equal(res.body[0], '0');
    assertOpenPacket(JSON.parse(res.body.slice(1)), ['websocket']);
    const again = await pollingHandshake(base);
    assert.notEqual(again.sid, JSON.parse(res.body.slice(1)).sid);
  });

  it('WebSocket-only handshake: open packet first, upgrades empty', async () => {
    const { ws, open } = await wsHandshake(base);
    assertOpenPacket(open, []);
    ws.close();
  });

  it('the bare Engine.IO endpoint at /engine.io/ has the same handshake', async () => {
    const { open } = await pollingHandshake(base, '/engine.io/');
    assertOpenPacket(open, ['websocket']);
  });
});

describe('Engine.IO request errors', () => {
  it('EIO=3 (and a missing EIO) → 400 code 5', async () => {
    assertJsonError(await request(sio('EIO=3&transport=polling')), 400, 5, 'Unsupported protocol version');
    assertJsonError(await request(sio('transport=polling')), 400, 5, 'Unsupported protocol version');
  });

  it('unknown (or missing) transport → 400 code 0', async () => {
    assertJsonError(await request(sio('EIO=4&transport=foo')), 400, 0, 'Transport unknown');
    assertJsonError(await request(sio('EIO=4')), 400, 0, 'Transport unknown');
  });

  it('unknown sid → 400 code 1 (GET and POST)', async () => {
    assertJsonError(await request(sio('EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA')), 400, 1,
      'Session ID unknown');
    assertJsonError(await pollPost(sio('EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA'), '40'), 400, 1,
      'Session ID unknown');
  });

  it('handshake with POST or PUT → 400 code 2', async () => {
    assertJsonError(await request(sio('EIO=4&transport=polling'), { method: 'POST', body: '40' }), 400, 2,
      'Bad handshake method');
    assertJsonError(await request(sio('EIO=4&transport=polling'), { method: 'PUT', body: '40' }), 400, 2,
      'Bad handshake method');
  });

  it('bad request → 400 code 3: WebSocket handshake as plain HTTP, transport mismatch on a session', async () => {
    assertJsonError(await request(sio('EIO=4&transport=websocket')), 400, 3, 'Bad request');
    const { sid } = await pollingHandshake(base);
    assertJsonError(await request(sio(`EIO=4&transport=websocket&sid=${sid}`)), 400, 3, 'Bad request');
  });

  it('WebSocket upgrade with an unknown sid is refused with HTTP 400', async () => {
    const ws = openWs(wsUrl(base, '/socket.io/', '&sid=AAAAAAAAAAAAAAAAAAAA'));
    await assert.rejects(ws.opened, (err) => err.statusCode === 400);
    await assertHealthy(base);
  });
});

describe('HTTP long-polling', () => {
  it('POST packets, GET the answers joined by \\x1e', async () => {
    const h = await pollingHandshake(base);
    const post = await pollPost(h.url, '40');
    assert.equal(post.status, 200);
    assert.equal(post.body, 'ok');
    const res = await pollGet(h.url);
    assert.equal(res.status, 200);
    const packets = res.body.split(SEP);
    assert.match(packets[0], /^40\{"sid":"[^"]{20}"\}$/);
    assert.deepEqual(packets.slice(1), ['42["auth",{}]']);
    await pollPost(h.url, '1');
  });

  it('binary attachments travel as b<base64> and are echoed as such', async () => {
    const h = await pollingHandshake(base);
    await pollPost(h.url, '40');
    await pollUntil(h.url, (s) => s.includes('42["auth",{}]'), 'auth');
    const post = await pollPost(h.url, `451-["message",{"_placeholder":true,"num":0}]${SEP}bAQID`);
    assert.equal(post.status, 200);
    const seen = await pollUntil(h.url, (s) => s.includes('bAQID'), 'the attachment');
    assert.deepEqual(seen, ['451-["message-back",{"_placeholder":true,"num":0}]', 'bAQID']);
    await pollPost(h.url, '1');
  });

  it('overlapping GETs: one gets 400, the other completes with a close packet, the session is gone', async () => {
    const h = await pollingHandshake(base);
    // Nothing is buffered (no CONNECT yet, the first ping is 10 s away), so both GETs would hang.
    const [a, b] = await Promise.all([pollGet(h.url), pollGet(h.url)]);
    const statuses = [a.status, b.status].sort();
    assert.deepEqual(statuses, [200, 400]);
    const ok = a.status === 200 ? a : b;
    const bad = a.status === 200 ? b : a;
    assert.equal(ok.body, '1');
    assert.equal(bad.body, '', 'the reference answers the overlapping GET with an empty 400');
    assertJsonError(await pollGet(h.url), 400, 1, 'Session ID unknown');
    await assertHealthy(base, ['polling']);
  });

  it('POST with Content-Type application/octet-stream → 400 and the session closes', async () => {
    const h = await pollingHandshake(base);
    const res = await request(h.url, {
      method: 'POST',
      body: Buffer.from('40'),
      headers: { 'Content-Type': 'application/octet-stream' },
    });
    assert.equal(res.status, 400);
    assertJsonError(await pollGet(h.url), 400, 1, 'Session ID unknown');
    await assertHealthy(base, ['polling']);
  });

  it('POST bigger than maxPayload → 413; the session itself stays usable', async () => {
    const h = await pollingHandshake(base);
    const big = `42["message","${'x'.repeat(MAX_PAYLOAD)}"]`;
    const res = await pollPost(h.url, big).catch((err) => {
      // The server may answer before reading the whole body and reset the connection.
      if (err.code === 'EPIPE' || err.code === 'ECONNRESET') return { status: 'reset' };
      throw err;
    });
    assert.equal(res.status, 413);
    assert.equal(res.body, '');
    // Reference behaviour: the 413 does not close the Engine.IO session.
    const post = await pollPost(h.url, '40');
    assert.equal(post.status, 200);
    await pollUntil(h.url, (s) => s.some((p) => p.startsWith('40{"sid"')), 'CONNECT reply');
    await pollPost(h.url, '1');
    await assertHealthy(base, ['polling']);
  });

  it('a malformed Engine.IO packet closes the session', async () => {
    const h = await pollingHandshake(base);
    const res = await pollPost(h.url, 'abc');
    // Reference behaviour: the POST itself is still answered 200 "ok"; the session is closed.
    assert.equal(res.status, 200);
    assert.equal(res.body, 'ok');
    assertJsonError(await pollGet(h.url), 400, 1, 'Session ID unknown');
    await assertHealthy(base, ['polling']);
  });

  it('a client close packet completes the pending GET with a noop and ends the session', async () => {
    const h = await pollingHandshake(base);
    let flushed;
    const sent = new Promise((resolve) => { flushed = resolve; });
    const pending = pollGet(h.url, { onRequest: (req) => req.on('finish', flushed) });
    await sent; // the GET is on the wire before the POST starts
    const post = await pollPost(h.url, '1');
    assert.equal(post.status, 200);
    assert.equal(post.body, 'ok');
    const res = await pending;
    if (res.status === 400) {
      // Accepted only if the server still saw the POST first: then the session was already gone.
      assert.deepEqual(parseJson(res.body), { code: 1, message: 'Session ID unknown' },
        `pending GET answered 400 ${res.body}; the reference answers a pending GET with 6 (noop)`);
    } else {
      assert.equal(res.status, 200);
      assert.equal(res.body, '6', 'the reference completes the pending GET with a noop');
    }
    assertJsonError(await pollGet(h.url), 400, 1, 'Session ID unknown');
  });
});

describe('WebSocket', () => {
  it('upgrade from polling: 2probe/3probe, noop on the pending GET, 5, then polling is refused', async () => {
    const h = await pollingHandshake(base);
    const pending = pollGet(h.url);
    const ws = openWs(wsUrl(base, '/socket.io/', `&sid=${h.sid}`));
    await ws.opened;
    ws.send('2probe');
    assert.equal(await ws.next(), '3probe');
    const res = await pending;
    assert.equal(res.status, 200);
    assert.equal(res.body, '6');
    ws.send('5');
    ws.send('40');
    assert.match(await ws.next(), /^40\{"sid":"[^"]{20}"\}$/);
    assert.equal(await ws.next(), '42["auth",{}]');
    const after = await pollGet(h.url);
    assert.equal(after.status, 400);
    ws.close();
  });

  it('a second WebSocket on an already upgraded session is closed; the first keeps working', async () => {
    const h = await pollingHandshake(base);
    const ws1 = openWs(wsUrl(base, '/socket.io/', `&sid=${h.sid}`));
    await ws1.opened;
    ws1.send('2probe');
    assert.equal(await ws1.next(), '3probe');
    ws1.send('5');
    ws1.send('40');
    assert.match(await ws1.next(), /^40\{"sid"/);
    const ws2 = openWs(wsUrl(base, '/socket.io/', `&sid=${h.sid}`));
    // Reference behaviour: the second upgrade is accepted (101) and then closed at once.
    await ws2.opened;
    await ws2.waitClosed();
    assert.equal(ws2.queue.length, 0, `second socket received ${JSON.stringify(ws2.queue)}`);
    assert.equal(await ws1.next(), '42["auth",{}]');
    ws1.send('421["message-with-ack","still here"]');
    assert.equal(await ws1.next(), '431["still here"]');
    ws1.close();
    await assertHealthy(base);
  });

  it('a malformed Engine.IO packet closes the WebSocket', async () => {
    const { ws } = await sioConnect(base);
    ws.send('abc');
    await ws.waitClosed();
    await assertHealthy(base);
  });

  it('a frame bigger than maxPayload closes the WebSocket with 1009', async () => {
    const { ws } = await sioConnect(base);
    ws.send(`42["message","${'x'.repeat(MAX_PAYLOAD)}"]`);
    const { code } = await ws.waitClosed();
    assert.equal(code, 1009);
    await assertHealthy(base);
  });

  it('the bare Engine.IO endpoint echoes text and binary', async () => {
    const { ws } = await wsHandshake(base, { path: '/engine.io/' });
    ws.send('4hello');
    assert.equal(await ws.next(), '4hello');
    ws.send(Buffer.from([1, 2, 3]));
    assert.deepEqual(await ws.next(), Buffer.from([1, 2, 3]));
    ws.close();
    const h = await pollingHandshake(base, '/engine.io/');
    await pollPost(h.url, `4hello${SEP}bAQID`);
    const seen = await pollUntil(h.url, (s) => s.includes('bAQID'), 'binary echo');
    assert.deepEqual(seen, ['4hello', 'bAQID']);
    await pollPost(h.url, '1');
  });
});

describe('Socket.IO packets', () => {
  it('event with ack: the exact echo', async () => {
    const { ws } = await sioConnect(base);
    ws.send('42456["message-with-ack",1,"2",{"3":[false]}]');
    assert.equal(await ws.next(), '43456[1,"2",{"3":[false]}]');
    ws.close();
  });

  it('CONNECT to namespaces: /custom with auth, /private refused, unknown refused', async () => {
    const { ws } = await wsHandshake(base);
    ws.send('40/custom,{"token":"1"}');
    assert.match(await ws.next(), /^40\/custom,\{"sid":"[^"]{20}"\}$/);
    assert.equal(await ws.next(), '42/custom,["auth",{"token":"1"}]');
    ws.send('40/private,');
    assertPacket(await ws.next(), '44/private,', { message: 'not authorized', data: { reason: 'no token' } });
    ws.send('40/random,');
    assertPacket(await ws.next(), '44/random,', { message: 'Invalid namespace' });
    ws.send('40/dyn-x1,');
    assert.match(await ws.next(), /^40\/dyn-x1,\{"sid":"[^"]{20}"\}$/);
    ws.send('42/dyn-x1,7["whoami"]');
    assert.equal(await ws.next(), '43/dyn-x1,7["/dyn-x1"]');
    ws.close();
  });

  for (const [name, packet] of [
    ['unknown packet type', '4abc'],
    ['invalid payload format', '42{}'],
    ['invalid ack id', '42abc["message-with-ack",1,"2",{"3":[false]}]'],
  ]) {
    it(`malformed Socket.IO packet (${name}: ${packet}) closes the connection`, async () => {
      const { ws } = await sioConnect(base);
      ws.send(packet);
      await ws.waitClosed();
      assert.equal(ws.queue.length, 0, `got ${JSON.stringify(ws.queue)}`);
      await assertHealthy(base);
    });
  }

  it('an EVENT before CONNECT closes the connection', async () => {
    const { ws } = await wsHandshake(base);
    ws.send('42["message","too early"]');
    await ws.waitClosed();
    assert.equal(ws.queue.length, 0, `got ${JSON.stringify(ws.queue)}`);
    await assertHealthy(base);
  });

  it('10 attachments are fine; 11 close the connection', async () => {
    const { ws } = await sioConnect(base);
    const placeholders = Array.from({ length: 10 }, (_, i) => `{"_placeholder":true,"num":${i}}`).join(',');
    ws.send(`4510-[\"message\",${placeholders}]`);
    for (let i = 0; i < 10; i++) ws.send(Buffer.from([i]));
    assert.equal(await ws.next(), `4510-["message-back",${placeholders}]`);
    for (let i = 0; i < 10; i++) assert.deepEqual(await ws.next(), Buffer.from([i]));

    const p11 = Array.from({ length: 11 }, (_, i) => `{"_placeholder":true,"num":${i}}`).join(',');
    ws.send(`4511-[\"message\",${p11}]`);
    await ws.waitClosed();
    await assertHealthy(base);
  });

  it('ACK for an id the server never used is ignored', async () => {
    const { ws } = await sioConnect(base);
    ws.send('43999["nobody asked"]');
    ws.send('425["message-with-ack","after"]');
    assert.equal(await ws.next(), '435["after"]');
    ws.close();
    await assertHealthy(base);
  });

  it('ack ids: the largest safe integer round-trips; a larger id is refused', async () => {
    const { ws } = await sioConnect(base);
    ws.send('429007199254740991["message-with-ack",1]');
    assert.equal(await ws.next(), '439007199254740991[1]');
    if (serverKind() === 'node') {
      // Surprising reference behaviour: socket.io-parser reads the id with Number() and has no range
      // check, so 99999999999999999999999 becomes 1e+23 and the ACK goes out as `431e+23[1]`; the
      // connection stays open.
      ws.send('4299999999999999999999999["message-with-ack",2]');
      assert.equal(await ws.next(), '431e+23[2]');
      ws.send('423["message-with-ack",3]');
      assert.equal(await ws.next(), '433[3]');
      ws.close();
    } else {
      // ferrio cannot answer an id no client can represent, so it closes the connection as for
      // any other invalid packet (documented in docs/protocol.md).
      ws.send('4299999999999999999999999["message-with-ack",2]');
      await ws.waitClosed();
      assert.equal(ws.queue.length, 0, `got ${JSON.stringify(ws.queue)}`);
    }
    await assertHealthy(base);
  });

  it('JSON depth bomb in an event argument: the server survives', async () => {
    const depth = 20000;
    const { ws } = await sioConnect(base);
    ws.send(`42["no-such-event",${'['.repeat(depth)}${']'.repeat(depth)}]`);
    if (serverKind() === 'node') {
      // Reference behaviour: V8's JSON.parse has no nesting limit, so the reference accepts the
      // packet and, as nothing listens to this event, ignores it; the connection stays open.
      // (Echoing such a value through `message`/`message-with-ack` crashes the Node reference
      // itself with a stack overflow in socket.io-parser's hasBinary / JSON.stringify.)
      ws.send('427["message-with-ack","alive"]');
      assert.equal(await ws.next(), '437["alive"]');
      ws.close();
    } else {
      // ferrio refuses JSON nested deeper than 128 levels (bounded stack, documented in
      // docs/protocol.md): the offending connection is closed.
      await ws.waitClosed();
    }
    await assertHealthy(base);
  });
});

describe('incomplete binary packets (--conformance: ping 300/200, connect timeout 1000)', () => {
  it('attachments that never arrive before CONNECT: closed within the connect timeout', async () => {
    const { ws } = await wsHandshake(conf.url); // answers pings
    ws.send('451-["message",{"_placeholder":true,"num":0}]');
    // The reference closes it when the connect timeout (1000 ms) fires: it only looks at a packet
    // once all its attachments are in. Closing earlier is fine too.
    await ws.waitClosed(1000 + 5000);
    await assertHealthy(conf.url);
  });

  it('attachments that never arrive after CONNECT, client not answering pings: closed by ping timeout', async () => {
    const { ws } = await sioConnect(conf.url, { autoPong: false });
    const t0 = Date.now();
    ws.send('451-["message",{"_placeholder":true,"num":0}]');
    await ws.waitClosed(300 + 200 + 5000);
    assert.ok(Date.now() - t0 < 300 + 200 + 5000);
    await assertHealthy(conf.url);
  });

  it('attachments that never arrive after CONNECT, client answering pings', async () => {
    const { ws } = await sioConnect(conf.url);
    ws.send('451-["message",{"_placeholder":true,"num":0}]');
    if (serverKind() !== 'node') {
      // ferrio gives a binary packet one ping timeout (200 ms here) to complete, then closes the
      // connection: a half-received packet is not held forever.
      const t0 = Date.now();
      await ws.waitClosed(200 + 5000);
      assert.ok(Date.now() - t0 >= 150, 'closed before the ping timeout');
      await assertHealthy(conf.url);
      return;
    }
    // Surprising reference behaviour: socket.io-parser's reconstructor has no timeout, so a client
    // that keeps answering pings holds a half-received packet forever. Three ping cycles later the
    // connection is still open...
    const start = ws.pings;
    await waitUntil(() => ws.pings >= start + 3 || ws.isClosed, { what: 'three pings' });
    assert.equal(ws.isClosed, false);
    // ...and a text packet where an attachment is expected is a decode error that closes it.
    ws.send('42["message","not an attachment"]');
    await ws.waitClosed();
    assert.equal(ws.queue.length, 0, `got ${JSON.stringify(ws.queue)}`);
  });
});
