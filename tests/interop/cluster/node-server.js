'use strict';
// A Node.js Socket.IO node of a Redis-backed cluster (socket.io 4.8.4 + @socket.io/redis-adapter,
// or @socket.io/redis-streams-adapter 0.3.1 in streams mode): the reference side of the mixed
// Node/ferrio cluster tests. It offers the same events as ferrio's examples/redis-cluster node
// with --cluster-events, so a test can drive either.
//
//   node node-server.js --listen 127.0.0.1:0 --redis redis://127.0.0.1:6379
//        [--mode classic|sharded|streams] [--key socket.io] [--recovery MS]
//
// Prints "listening on 127.0.0.1:<port>" once ready.

const http = require('node:http');
const { Server } = require('socket.io');
const { createAdapter, createShardedAdapter } = require('@socket.io/redis-adapter');
const { createAdapter: createStreamsAdapter } = require('@socket.io/redis-streams-adapter');
const { createClient } = require('redis');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

async function main() {
  const [host, port] = arg('listen', '127.0.0.1:0').split(':');
  const url = arg('redis', 'redis://127.0.0.1:6379');
  const mode = arg('mode', 'classic');
  const key = arg('key', 'socket.io');
  const pub = createClient({ url });
  const sub = pub.duplicate();
  for (const c of [pub, sub]) c.on('error', () => { /* reconnects by itself */ });
  await Promise.all([pub.connect(), sub.connect()]);
  let adapter;
  if (mode === 'streams') adapter = createStreamsAdapter(pub, { channelPrefix: key });
  else if (mode === 'sharded') adapter = createShardedAdapter(pub, sub, { channelPrefix: key });
  else adapter = createAdapter(pub, sub, { key });
  const recovery = arg('recovery', null);
  const server = http.createServer();
  const io = new Server(server, {
    adapter,
    ...(recovery ? { connectionStateRecovery: { maxDisconnectionDuration: Number(recovery) } } : {}),
  });
  let myPort = 0;
  const select = (room) => (room ? io.in(room) : io);

  io.of('/').on('hello', (...args) => {
    const ack = typeof args[args.length - 1] === 'function' ? args.pop() : null;
    io.local.emit('server-event', args);
    if (ack) ack(`ack from ${myPort}`);
  });

  io.on('connection', (socket) => {
    socket.on('join', (room, cb) => { socket.join(room); cb && cb({ ok: true }); });
    socket.on('leave', (room, cb) => { socket.leave(room); cb && cb({ ok: true }); });
    socket.on('publish', (msg, cb) => { socket.to(msg.room).emit(msg.event, msg.data); cb && cb({ ok: true }); });
    socket.on('broadcast', (name, data, cb) => { io.emit(name, data); cb && cb(true); });
    socket.on('to-room', (room, name, data, cb) => { io.to(room).emit(name, data); cb && cb(true); });
    socket.on('emit-ack', (room, name, data, cb) => {
      io.to(room).timeout(3000).emit(name, data, (err, responses) => {
        cb(err ? { error: err.message, responses } : responses);
      });
    });
    socket.on('fetch', async (room, cb) => {
      try {
        const sockets = await select(room).fetchSockets();
        cb(sockets.map((s) => ({ id: s.id, rooms: [...s.rooms], data: s.data })));
      } catch (e) { cb({ error: e.message }); }
    });
    socket.on('sockets-join', (room, name, cb) => { select(room).socketsJoin(name); cb(true); });
    socket.on('sockets-leave', (room, name, cb) => { select(room).socketsLeave(name); cb(true); });
    socket.on('disconnect-room', (room, cb) => { select(room).disconnectSockets(); cb(true); });
    socket.on('server-emit', (name, data, cb) => { io.serverSideEmit(name, data); cb(true); });
    socket.on('server-emit-ack', (name, data, cb) => {
      io.serverSideEmit(name, data, (err, responses) => cb(err ? { error: err.message, responses } : responses));
    });
    socket.on('set-data', (value, cb) => { socket.data = value; cb(true); });
    socket.on('server-count', async (cb) => cb(await io.of('/').adapter.serverCount()));
    socket.on('node-info', (cb) => cb({ port: myPort, transport: socket.conn.transport.name }));
  });

  server.listen(Number(port), host, () => {
    myPort = server.address().port;
    process.stderr.write(`listening on ${host}:${myPort}\n`);
  });
  const stop = () => { io.close(); pub.destroy(); sub.destroy(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => { process.stderr.write(`${e.stack}\n`); process.exit(1); });
