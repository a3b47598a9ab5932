#!/usr/bin/env node
// A Socket.IO reference server with connection-state recovery on, for ferrio-client's tests.
//
//   node recovery-server.js --listen 127.0.0.1:0 [--max-disconnection MS]
//
// Prints `listening on ADDR`. Every socket joins room `news` on a fresh connection (a
// recovered one keeps its rooms).
//   publish(data, ack)  → every socket in `news` receives `news(data)` (a broadcast, so it
//                          carries an offset); acks {ok:true}
//   whoami(ack)         → acks {id, recovered, rooms, auth}
'use strict';

const path = require('node:path');
const http = require('node:http');
// Resolve socket.io from tests/interop/node_modules whatever the working directory.
const { Server } = require(path.join(__dirname, '..', 'node_modules', 'socket.io'));

let host = '127.0.0.1';
let port = 0;
let maxDisconnectionDuration = 60000;
const args = process.argv.slice(2);
while (args.length) {
  const a = args.shift();
  if (a === '--listen') {
    const m = /^(.*):(\d+)$/.exec(args.shift() || '');
    if (!m) throw new Error('--listen needs HOST:PORT');
    host = m[1];
    port = Number(m[2]);
  } else if (a === '--max-disconnection') {
    maxDisconnectionDuration = Number(args.shift());
  } else {
    throw new Error(`unknown argument ${a}`);
  }
}

const httpServer = http.createServer();
const io = new Server(httpServer, {
  connectionStateRecovery: { maxDisconnectionDuration, skipMiddlewares: true },
});

io.on('connection', (socket) => {
  if (!socket.recovered) socket.join('news');
  socket.on('publish', (data, ack) => {
    io.to('news').emit('news', data);
    if (typeof ack === 'function') ack({ ok: true });
  });
  socket.on('whoami', (ack) => {
    if (typeof ack !== 'function') return;
    ack({
      id: socket.id,
      recovered: socket.recovered,
      rooms: Array.from(socket.rooms).sort(),
      auth: socket.handshake.auth,
    });
  });
});

httpServer.listen(port, host, () => {
  const addr = httpServer.address();
  process.stdout.write(`listening on ${addr.address}:${addr.port}\n`);
});
const stop = () => io.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
