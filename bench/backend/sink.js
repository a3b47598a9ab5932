'use strict';
// A webhook/RPC backend for bench/backend: verifies every signature, counts the events of each
// batch (and gaps in their sequence numbers), answers an RPC with its first argument, so that
// `ferrio-bench echo` sees its own payload come back through the backend.
//
//   node sink.js <port> <secret>      prints "listening", then a JSON summary on SIGTERM

const http = require('node:http');
const { signed } = require('../../tests/interop/lib/webhooks');

const [port, secret] = [Number(process.argv[2] || 0), process.argv[3] || ''];
const counts = { batches: 0, events: 0, rpcs: 0, bad_signatures: 0, gaps: 0, by_type: {} };
let lastSeq = 0;

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    if (!signed(req.headers, body, secret)) {
      counts.bad_signatures += 1;
      res.writeHead(401).end();
      return;
    }
    const msg = JSON.parse(body);
    if (msg.type === 'events') {
      counts.batches += 1;
      for (const e of msg.events) {
        if (e.seq !== lastSeq + 1) counts.gaps += 1;
        lastSeq = Math.max(lastSeq, e.seq);
        counts.events += 1;
        counts.by_type[e.type] = (counts.by_type[e.type] || 0) + 1;
      }
      res.writeHead(204).end();
    } else {
      counts.rpcs += 1;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(msg.args[0] ?? null));
    }
  });
});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
process.on('SIGTERM', () => {
  console.log(JSON.stringify(counts));
  process.exit(0);
});
