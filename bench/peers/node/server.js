#!/usr/bin/env node
// The benchmark peer contract on Node's socket.io, written as its documentation suggests:
//   `bcast` with one payload: emitted as `bcast` to every connected socket of `/`;
//   `echo` with an ack: acknowledged with the same payload.
//
//   node server.js --listen 127.0.0.1:PORT     (prints `listening on ADDR` when ready)
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');

let listen = '127.0.0.1:3000';
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--listen') listen = argv[++i];
  else {
    process.stderr.write(`unknown argument ${argv[i]}\n`);
    process.exit(2);
  }
}
const m = /^(.*):(\d+)$/.exec(listen);
if (!m) {
  process.stderr.write('--listen needs HOST:PORT\n');
  process.exit(2);
}

const httpServer = http.createServer();
const io = new Server(httpServer);

io.on('connection', (socket) => {
  socket.on('bcast', (data) => {
    io.emit('bcast', data);
  });
  socket.on('echo', (data, ack) => {
    if (typeof ack === 'function') ack(data);
  });
});

httpServer.listen(Number(m[2]), m[1], () => {
  const { address, port } = httpServer.address();
  process.stdout.write(`listening on ${address}:${port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
