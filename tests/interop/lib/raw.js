'use strict';
// Hand-driven Engine.IO / Socket.IO clients (Node's http + ws) for the raw protocol tests.

const http = require('node:http');
const WebSocket = require('ws');
const { TIMEOUT } = require('./client');

const SEP = '\x1e';

/** One HTTP request on a fresh connection. Resolves with {status, headers, body, raw}. */
function request(url, { method = 'GET', headers = {}, body, timeout = TIMEOUT, agent = false, onRequest } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        const raw = Buffer.concat(chunks);
        resolve({ status: res.statusCode, headers: res.headers, raw, body: raw.toString('utf8') });
      });
      res.on('error', (err) => { clearTimeout(timer); reject(err); });
    });
    const timer = setTimeout(() => {
      req.destroy(new Error(`${method} ${url}: no response within ${timeout} ms`));
    }, timeout);
    req.on('error', (err) => { clearTimeout(timer); reject(err); });
    if (onRequest) onRequest(req);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

function parseJson(body) {
  try { return JSON.parse(body); } catch { return undefined; }
}

/** Polling handshake on `path` (default /socket.io/). Resolves with {sid, open, url}. */
async function pollingHandshake(base, path = '/socket.io/') {
  const res = await request(`${base}${path}?EIO=4&transport=polling`);
  if (res.status !== 200 || res.body[0] !== '0') {
    throw new Error(`handshake failed: ${res.status} ${res.body}`);
  }
  const open = JSON.parse(res.body.slice(1));
  return { sid: open.sid, open, url: `${base}${path}?EIO=4&transport=polling&sid=${open.sid}` };
}

function pollGet(sessionUrl, opts) {
  return request(sessionUrl, opts);
}

function pollPost(sessionUrl, body, opts = {}) {
  return request(sessionUrl, {
    ...opts,
    method: 'POST',
    body,
    headers: { 'Content-Type': 'text/plain;charset=UTF-8', ...(opts.headers || {}) },
  });
}

/**
 * A WebSocket with a message queue. Engine.IO pings (`2`) are answered with `3` and not queued
 * when autoPong is true.
 */
class RawWs {
  constructor(url, { autoPong = true, maxPayload } = {}) {
    this.url = url;
    this.autoPong = autoPong;
    this.queue = [];
    this.waiters = [];
    this.pings = 0;
    this.ws = new WebSocket(url, maxPayload ? { maxPayload } : {});
    this.isClosed = false;
    this.closeInfo = null;
    let finish;
    this.closed = new Promise((resolve) => {
      finish = (info) => {
        if (this.isClosed) return;
        this.isClosed = true;
        this.closeInfo = info;
        resolve(info);
        for (const w of this.waiters.splice(0)) w.reject(new Error(`socket closed (${info.code}) while waiting`));
      };
    });
    this.ws.once('close', (code, reason) => finish({ code, reason: reason.toString() }));
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
      // An upgrade refused at the HTTP level: {code: 'http', status}.
      this.ws.once('unexpected-response', (req, res) => {
        this.httpStatus = res.statusCode;
        reject(Object.assign(new Error(`unexpected response ${res.statusCode}`), { statusCode: res.statusCode }));
        res.resume();
        req.destroy();
        finish({ code: 'http', status: res.statusCode, reason: '' });
      });
    });
    this.opened.catch(() => {});
    this.ws.on('error', () => { /* surfaced through `closed` */ });
    this.ws.on('message', (data, isBinary) => {
      const msg = isBinary ? Buffer.from(data) : data.toString('utf8');
      if (!isBinary && msg === '2') {
        this.pings++;
        if (this.autoPong) {
          this.send('3');
          return;
        }
      }
      const w = this.waiters.shift();
      if (w) w.resolve(msg);
      else this.queue.push(msg);
    });
  }

  send(data) {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(data);
  }

  /** Next queued message (string for text frames, Buffer for binary frames). */
  next(timeout = TIMEOUT) {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.isClosed) return Promise.reject(new Error(`socket closed (${this.closeInfo.code})`));
    return new Promise((resolve, reject) => {
      const w = {
        resolve: (v) => { clearTimeout(timer); resolve(v); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`no message within ${timeout} ms`));
      }, timeout);
      this.waiters.push(w);
    });
  }

  /** Next message for which `pred` is true (others are dropped). */
  async nextMatching(pred, timeout = TIMEOUT) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no matching message within ${timeout} ms`);
      const m = await this.next(left);
      if (pred(m)) return m;
    }
  }

  /** Resolves with {code, reason} once closed, rejects after `timeout`. */
  waitClosed(timeout = TIMEOUT) {
    let timer;
    return Promise.race([
      this.closed.finally(() => clearTimeout(timer)),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`WebSocket still open after ${timeout} ms`)), timeout);
      }),
    ]);
  }

  close() {
    try { this.ws.terminate(); } catch { /* ignore */ }
  }
}

const rawSockets = new Set();

function wsUrl(base, path = '/socket.io/', query = '') {
  return `${base.replace(/^http/, 'ws')}${path}?EIO=4&transport=websocket${query}`;
}

function openWs(url, opts) {
  const ws = new RawWs(url, opts);
  rawSockets.add(ws);
  return ws;
}

/** WebSocket-only Engine.IO handshake. Resolves with {ws, open}. */
async function wsHandshake(base, { path = '/socket.io/', autoPong = true } = {}) {
  const ws = openWs(wsUrl(base, path), { autoPong });
  await ws.opened;
  const first = await ws.next();
  if (typeof first !== 'string' || first[0] !== '0') throw new Error(`expected open packet, got ${first}`);
  return { ws, open: JSON.parse(first.slice(1)) };
}

/**
 * WebSocket-only Engine.IO handshake plus a Socket.IO CONNECT to `/`.
 * Resolves with {ws, open, sid} (sid: the Socket.IO socket id); the `auth` event is consumed.
 */
async function sioConnect(base, { autoPong = true } = {}) {
  const { ws, open } = await wsHandshake(base, { autoPong });
  ws.send('40');
  const connect = await ws.nextMatching((m) => typeof m === 'string' && m.startsWith('40'));
  const { sid } = JSON.parse(connect.slice(2));
  await ws.nextMatching((m) => typeof m === 'string' && m.startsWith('42["auth"'));
  return { ws, open, sid };
}

function closeAllRaw() {
  for (const ws of rawSockets) ws.close();
  rawSockets.clear();
}

module.exports = {
  SEP,
  request,
  parseJson,
  pollingHandshake,
  pollGet,
  pollPost,
  RawWs,
  wsUrl,
  openWs,
  wsHandshake,
  sioConnect,
  closeAllRaw,
};
