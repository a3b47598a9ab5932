'use strict';
// Processes for the cluster tests: redis-server on a free port, a Node.js cluster node, a
// ferrio cluster node (examples/redis-cluster), nginx. Each is stopped by its PID, also when
// the test run dies.
//
//   FERRIO_REDIS_NODE_BIN   the ferrio node binary (default <repo>/target/debug/redis-cluster-node)
//   INTEROP_SERVER=node     use a second Node.js node where a ferrio node is asked for
//                           (checks the tests themselves against the reference)

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..', '..');
const NODE_SERVER = path.join(__dirname, 'node-server.js');
const live = new Set();

function killAll() {
  for (const pid of live) {
    try { process.kill(pid, 'SIGCONT'); } catch { /* gone */ }
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
  live.clear();
}
process.on('exit', killAll);

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitForPort(port, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port}`);
    await sleep(20);
  }
}

function track(child, name) {
  live.add(child.pid);
  let stderr = '';
  child.stderr && child.stderr.on('data', (d) => {
    stderr += d;
    if (stderr.length > 65536) stderr = stderr.slice(-32768);
    if (process.env.INTEROP_VERBOSE) process.stderr.write(`[${name}] ${d}`);
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    pid: child.pid,
    exited,
    log: () => stderr,
    async stop() {
      try { process.kill(child.pid, 'SIGCONT'); } catch { /* gone */ }
      try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
      await Promise.race([exited, sleep(3000)]);
      live.delete(child.pid);
    },
    signal(sig) { process.kill(child.pid, sig); },
  };
}

/** Waits for "listening on host:port" on stderr. */
function listening(handle, name, ms = 20000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start:\n${handle.log()}`)), ms);
    const check = () => {
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(handle.log());
      if (m) { clearTimeout(timer); resolve(Number(m[1])); return true; }
      return false;
    };
    const poll = setInterval(() => { if (check()) clearInterval(poll); }, 20);
    handle.exited.then(({ code, signal }) => {
      clearInterval(poll);
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code ?? signal}) before listening:\n${handle.log()}`));
    });
  });
}

function haveRedis() {
  return fs.existsSync('/usr/bin/redis-server');
}

/** A redis-server of our own on a free port (no persistence). */
async function startRedis(extra = []) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrio-redis-'));
  const spawnIt = () => {
    const child = spawn('/usr/bin/redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extra,
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    return track(child, `redis:${port}`);
  };
  let handle = spawnIt();
  await waitForPort(port);
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get pid() { return handle.pid; },
    async stop() { await handle.stop(); },
    async restart() { await handle.stop(); handle = spawnIt(); await waitForPort(port); },
    signal(sig) { handle.signal(sig); },
  };
}

function ferrioBinary() {
  return process.env.FERRIO_REDIS_NODE_BIN || path.join(REPO, 'target', 'debug', 'redis-cluster-node');
}

/** A Node.js node. */
async function startNodeNode({ redis, mode = 'classic', key = 'socket.io', recovery = null }) {
  const extra = recovery ? ['--recovery', String(recovery)] : [];
  const child = spawn(process.execPath, [NODE_SERVER, '--listen', '127.0.0.1:0', '--redis', redis, '--mode', mode, '--key', key, ...extra], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const handle = track(child, 'node');
  const port = await listening(handle, 'node server');
  return { ...handle, port, url: `http://127.0.0.1:${port}`, kind: 'node' };
}

/** A ferrio node (or a Node.js node under INTEROP_SERVER=node). */
async function startFerrioNode({ redis, mode = 'classic', key = 'socket.io', listen = '127.0.0.1:0', extra = [] }) {
  if ((process.env.INTEROP_SERVER || '').toLowerCase() === 'node') {
    return startNodeNode({ redis, mode, key });
  }
  const bin = ferrioBinary();
  if (!fs.existsSync(bin)) {
    throw new Error(`${bin} does not exist: build it with \`cargo build -p redis-cluster\` or set FERRIO_REDIS_NODE_BIN`);
  }
  const child = spawn(bin, ['--listen', listen, '--redis', redis, '--mode', mode, '--key', key, '--cluster-events', ...extra], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const handle = track(child, 'ferrio');
  const port = await listening(handle, 'ferrio node');
  return { ...handle, port, url: `http://127.0.0.1:${port}`, kind: 'ferrio' };
}

/** Path of the nginx binary, or null. */
function nginxBinary() {
  for (const p of ['/usr/sbin/nginx', '/usr/bin/nginx']) {
    if (fs.existsSync(p)) return p;
  }
  const r = spawnSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

/** Runs nginx in the foreground with `conf` (a complete nginx.conf) under `prefix`. */
async function startNginx(bin, prefix, conf, port) {
  fs.mkdirSync(path.join(prefix, 'logs'), { recursive: true });
  const file = path.join(prefix, 'nginx.conf');
  fs.writeFileSync(file, conf);
  const child = spawn(bin, ['-p', prefix, '-c', file, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const handle = track(child, 'nginx');
  await waitForPort(port);
  // Workers outlive a killed master: stop the master with SIGTERM (it stops its workers), and
  // know the workers' PIDs for the cleanup on exit.
  let workers = [];
  try {
    workers = fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch { /* not Linux */ }
  for (const w of workers) live.add(w);
  return {
    ...handle,
    async stop() {
      try { process.kill(child.pid, 'SIGTERM'); } catch { /* gone */ }
      await Promise.race([handle.exited, sleep(3000)]);
      for (const w of workers) {
        try { process.kill(w, 'SIGKILL'); } catch { /* gone */ }
        live.delete(w);
      }
      await handle.stop();
    },
  };
}

module.exports = {
  freePort, sleep, waitForPort, haveRedis, startRedis, startNodeNode, startFerrioNode, nginxBinary, startNginx, REPO,
};
