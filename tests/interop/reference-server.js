#!/usr/bin/env node
// The contract of examples/interop-server/README.md implemented on Node's `socket.io`.
// Every interop test can run against this server (INTEROP_SERVER=node) to prove the test itself right.
//
//   node reference-server.js --listen 127.0.0.1:0 [--ping-interval MS] [--ping-timeout MS]
//        [--max-payload BYTES] [--connect-timeout MS] [--transports polling,websocket] [--conformance]
//
// It also accepts a leading `serve` word so that it can stand in for `ferrio serve` (whose built-in
// events `join`, `leave` and `publish` are a subset of this contract).
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');
const engine = require('engine.io');

function usage(msg) {
  process.stderr.write(`reference-server: ${msg}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    host: '127.0.0.1',
    port: 0,
    pingInterval: 25000,
    pingTimeout: 20000,
    maxPayload: 1000000,
    connectTimeout: 45000,
    transports: ['polling', 'websocket'],
  };
  const explicit = {};
  let conformance = false;
  const args = argv.slice();
  if (args[0] === 'serve') args.shift();
  const intArg = (name, v) => {
    if (v === undefined || !/^\d+$/.test(v)) usage(`${name} needs a non-negative integer`);
    return Number(v);
  };
  while (args.length) {
    const a = args.shift();
    switch (a) {
      case '--listen': {
        const v = args.shift();
        const m = /^(.*):(\d+)$/.exec(v || '');
        if (!m) usage('--listen needs HOST:PORT');
        opts.host = m[1].replace(/^\[(.*)\]$/, '$1');
        opts.port = Number(m[2]);
        break;
      }
      case '--ping-interval': explicit.pingInterval = intArg(a, args.shift()); break;
      case '--ping-timeout': explicit.pingTimeout = intArg(a, args.shift()); break;
      case '--max-payload': explicit.maxPayload = intArg(a, args.shift()); break;
      case '--connect-timeout': explicit.connectTimeout = intArg(a, args.shift()); break;
      case '--transports': {
        const v = args.shift() || '';
        const list = v.split(',').map((s) => s.trim()).filter(Boolean);
        if (!list.length || list.some((t) => t !== 'polling' && t !== 'websocket')) {
          usage('--transports takes a comma-separated subset of polling,websocket');
        }
        explicit.transports = list;
        break;
      }
      case '--conformance': conformance = true; break;
      case '--recovery': explicit.recovery = intArg(a, args.shift()); break;
      default: usage(`unknown argument ${a}`);
    }
  }
  if (conformance) {
    Object.assign(opts, { pingInterval: 300, pingTimeout: 200, connectTimeout: 1000 });
  }
  return Object.assign(opts, explicit);
}

const opts = parseArgs(process.argv.slice(2));

const httpServer = http.createServer((req, res) => {
  res.writeHead(404, { 'Content-Type': 'text/plain' });
  res.end('not found');
});

const engineOpts = {
  pingInterval: opts.pingInterval,
  pingTimeout: opts.pingTimeout,
  maxHttpBufferSize: opts.maxPayload,
  transports: opts.transports,
};

// Socket.IO at /socket.io/. Two engines share the http server, so neither may destroy upgrade
// requests that belong to the other one.
const io = new Server(httpServer, {
  ...engineOpts,
  connectTimeout: opts.connectTimeout,
  ...(opts.recovery !== undefined
    ? { connectionStateRecovery: { maxDisconnectionDuration: opts.recovery, skipMiddlewares: true } }
    : {}),
  cors: { origin: '*' },
  destroyUpgrade: false,
});

// Bare Engine.IO echo at /engine.io/.
const eio = new engine.Server(engineOpts);
eio.attach(httpServer, { path: '/engine.io/', destroyUpgrade: false });
eio.on('connection', (socket) => {
  socket.on('message', (data) => socket.send(data));
});

function lastFn(args) {
  return args.length && typeof args[args.length - 1] === 'function' ? args.pop() : null;
}

function checkRoom(room) {
  if (typeof room !== 'string') return 'room must be a string';
  if (room.length === 0) return 'room must not be empty';
  return null;
}

const RESERVED = new Set([
  'connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener',
]);

function checkPublish(p) {
  if (p === null || typeof p !== 'object' || Array.isArray(p)) return 'payload must be an object';
  const roomErr = checkRoom(p.room);
  if (roomErr) return roomErr;
  if (typeof p.event !== 'string' || p.event.length === 0) return 'event must be a non-empty string';
  if (RESERVED.has(p.event)) return 'event name is reserved';
  return null;
}

const root = io.of('/');
root.on('connection', (socket) => {
  socket.emit('auth', socket.handshake.auth);

  socket.on('message', (...args) => {
    socket.emit('message-back', ...args);
  });

  socket.on('message-with-ack', (...args) => {
    const ack = lastFn(args);
    if (ack) ack(...args);
  });

  socket.on('call-client', (...args) => {
    const ack = lastFn(args);
    const eventName = args.shift();
    if (typeof eventName !== 'string') {
      if (ack) ack({ error: 'event name must be a string' });
      return;
    }
    socket.timeout(2000).emit(eventName, ...args, (err, ...response) => {
      if (!ack) return;
      if (err) ack({ error: 'timeout' });
      else ack(...response);
    });
  });

  socket.on('join', (...args) => {
    const ack = lastFn(args);
    const room = args[0];
    if (!ack) return;
    const err = checkRoom(room);
    if (err) return ack({ ok: false, error: err });
    socket.join(room);
    ack({ ok: true });
  });

  socket.on('leave', (...args) => {
    const ack = lastFn(args);
    const room = args[0];
    if (!ack) return;
    const err = checkRoom(room);
    if (err) return ack({ ok: false, error: err });
    socket.leave(room);
    ack({ ok: true });
  });

  socket.on('publish', (...args) => {
    const ack = lastFn(args);
    const payload = args[0];
    const err = checkPublish(payload);
    if (err) {
      if (ack) ack({ ok: false, error: err });
      return;
    }
    socket.to(payload.room).emit(payload.event, payload.data);
    if (ack) ack({ ok: true });
  });

  socket.on('rooms', (ack) => {
    if (typeof ack !== 'function') return;
    ack(Array.from(socket.rooms).sort());
  });

  socket.on('broadcast-ack', (room, event, ack) => {
    if (typeof ack !== 'function') return;
    if (typeof room !== 'string' || typeof event !== 'string') {
      return ack({ ok: false, error: 'room and event must be strings' });
    }
    root.to(room).timeout(2000).emit(event, (err, responses) => {
      ack(responses || []);
    });
  });

  socket.on('watch', (ack) => {
    socket.join('watchers');
    if (typeof ack === 'function') ack({ ok: true });
  });

  socket.on('disconnect-me', (close) => {
    socket.disconnect(close === true);
  });

  socket.on('disconnect', (reason) => {
    root.to('watchers').emit('left', { id: socket.id, reason });
  });
});

const custom = io.of('/custom');
custom.on('connection', (socket) => {
  socket.emit('auth', socket.handshake.auth);
  socket.on('message-with-ack', (...args) => {
    const ack = lastFn(args);
    if (ack) ack(...args);
  });
});

const priv = io.of('/private');
priv.use((socket, next) => {
  const auth = socket.handshake.auth || {};
  if (auth.token === 'secret') return next();
  const err = new Error('not authorized');
  err.data = { reason: 'no token' };
  next(err);
});
priv.on('connection', (socket) => {
  socket.emit('welcome', { ok: true });
});

io.of(/^\/dyn-[a-z0-9]+$/).on('connection', (socket) => {
  socket.on('whoami', (ack) => {
    if (typeof ack === 'function') ack(socket.nsp.name);
  });
});

httpServer.on('error', (err) => {
  process.stderr.write(`reference-server: ${err.stack || err}\n`);
  process.exit(1);
});

httpServer.listen(opts.port, opts.host, () => {
  const addr = httpServer.address();
  process.stdout.write(`listening on ${addr.address}:${addr.port}\n`);
});

let closing = false;
function shutdown() {
  if (closing) return;
  closing = true;
  const force = setTimeout(() => process.exit(0), 2000);
  force.unref();
  eio.close();
  io.close(() => process.exit(0));
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
