'use strict';
// Small helpers around the official socket.io-client.

const { io, Manager } = require('socket.io-client');

const TIMEOUT = Number(process.env.INTEROP_TIMEOUT_MS || 10000);

const sockets = new Set();
const managers = new Set();

/** Creates (but does not wait for) a client socket. Every socket is closed by closeAll(). */
function createClient(baseUrl, { nsp = '/', transports = ['websocket'], ...opts } = {}) {
  const socket = io(baseUrl + nsp, {
    forceNew: true,
    reconnection: false,
    timeout: TIMEOUT,
    transports,
    ...opts,
  });
  sockets.add(socket);
  return socket;
}

/** A Manager (one Engine.IO connection) on which several namespace sockets can be opened. */
function createManager(baseUrl, { transports = ['websocket'], ...opts } = {}) {
  const manager = new Manager(baseUrl, {
    reconnection: false,
    timeout: TIMEOUT,
    transports,
    autoConnect: false,
    ...opts,
  });
  managers.add(manager);
  return manager;
}

/**
 * A promise that does not count as an unhandled rejection when a test gives up on it early
 * (awaiting it still throws).
 */
function quiet(p) {
  p.catch(() => {});
  return p;
}

/** Resolves with the socket once connected; rejects with the connect_error. */
function waitConnected(socket, timeout = TIMEOUT) {
  if (socket.connected) return Promise.resolve(socket);
  return quiet(new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no connect within ${timeout} ms`));
    }, timeout);
    const onConnect = () => { cleanup(); resolve(socket); };
    const onError = (err) => { cleanup(); reject(err); };
    function cleanup() {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('connect_error', onError);
    }
    socket.on('connect', onConnect);
    socket.on('connect_error', onError);
  }));
}

async function connect(baseUrl, opts = {}) {
  const socket = createClient(baseUrl, opts);
  return waitConnected(socket, opts.connectTimeout || TIMEOUT);
}

/** Resolves with the connect_error the socket receives; rejects if it connects instead. */
function expectConnectError(socket, timeout = TIMEOUT) {
  return quiet(new Promise((resolve, reject) => {
    const timer = setTimeout(() => { cleanup(); reject(new Error('no connect_error')); }, timeout);
    const onConnect = () => { cleanup(); reject(new Error('connected, but a connect_error was expected')); };
    const onError = (err) => { cleanup(); resolve(err); };
    function cleanup() {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('connect_error', onError);
    }
    socket.on('connect', onConnect);
    socket.on('connect_error', onError);
  }));
}

/**
 * Resolves with the argument array of the next `event` on `emitter` (optionally the first one for
 * which `filter(...args)` is true).
 */
function once(emitter, event, { timeout = TIMEOUT, filter } = {}) {
  return quiet(new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      reject(new Error(`no "${event}" within ${timeout} ms`));
    }, timeout);
    function handler(...args) {
      if (filter && !filter(...args)) return;
      clearTimeout(timer);
      emitter.off(event, handler);
      resolve(args);
    }
    emitter.on(event, handler);
  }));
}

/** Emits with an acknowledgement and resolves with the first ack argument. */
function ack(socket, event, ...args) {
  return socket.timeout(TIMEOUT).emitWithAck(event, ...args);
}

/** Emits with an acknowledgement and resolves with all the ack arguments. */
function ackAll(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(TIMEOUT).emit(event, ...args, (err, ...res) => {
      if (err) reject(new Error(`no ack for "${event}" within ${TIMEOUT} ms`));
      else resolve(res);
    });
  });
}

/** Polls `predicate` until it is true (bounded). */
async function waitUntil(predicate, { timeout = TIMEOUT, interval = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** A round trip on `/` of the interop server: proves everything sent before it has been processed. */
async function roundTrip(socket) {
  const token = `rt-${Math.random().toString(36).slice(2)}`;
  const [res] = await ackAll(socket, 'message-with-ack', token);
  if (res !== token) throw new Error(`round trip returned ${JSON.stringify(res)}`);
}

/** Connects a fresh client, checks an ack round trip and disconnects it. */
async function assertHealthy(baseUrl, transports = ['websocket']) {
  const s = await connect(baseUrl, { transports });
  try {
    await roundTrip(s);
  } finally {
    s.disconnect();
    sockets.delete(s);
  }
}

function closeAll() {
  for (const s of sockets) {
    try { s.disconnect(); } catch { /* ignore */ }
    try { s.io.engine && s.io.engine.close(); } catch { /* ignore */ }
  }
  sockets.clear();
  for (const m of managers) {
    try { m._close ? m._close() : m.engine && m.engine.close(); } catch { /* ignore */ }
  }
  managers.clear();
}

function forget(socket) {
  sockets.delete(socket);
}

module.exports = {
  TIMEOUT,
  createClient,
  createManager,
  waitConnected,
  connect,
  expectConnectError,
  once,
  ack,
  ackAll,
  waitUntil,
  quiet,
  roundTrip,
  assertHealthy,
  closeAll,
  forget,
};
