'use strict';
// Starts the server under test as a child process on a free port and stops it (by PID) afterwards.
//
//   INTEROP_SERVER=ferrio (default)  FERRIO_INTEROP_BIN, else <repo>/target/debug/interop-server
//                                    FERRIO_BIN, else <repo>/target/debug/ferrio   (for `ferrio serve`)
//   INTEROP_SERVER=node              tests/interop/reference-server.js for both
//
// Set INTEROP_VERBOSE=1 to copy the child's stderr to ours.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const REPO = path.resolve(__dirname, '..', '..', '..');
const REFERENCE = path.join(__dirname, '..', 'reference-server.js');
const STARTUP_TIMEOUT_MS = Number(process.env.INTEROP_STARTUP_TIMEOUT_MS || 30000);
const LISTENING_RE = /^listening on 127\.0\.0\.1:(\d+)$/;

const live = new Set();

function killAllSync() {
  for (const h of live) {
    try { process.kill(h.pid, 'SIGCONT'); } catch { /* gone */ }
    try { process.kill(h.pid, 'SIGKILL'); } catch { /* gone */ }
  }
  live.clear();
}
process.on('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    killAllSync();
    process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
  });
}

function serverKind() {
  const kind = (process.env.INTEROP_SERVER || 'ferrio').toLowerCase();
  if (kind !== 'ferrio' && kind !== 'node') {
    throw new Error(`INTEROP_SERVER must be "ferrio" or "node", not "${kind}"`);
  }
  return kind;
}

function requireBinary(file, envName, hint) {
  if (!fs.existsSync(file)) {
    throw new Error(
      `${file} does not exist (set ${envName}, build it with \`${hint}\`, or run with INTEROP_SERVER=node)`,
    );
  }
  return file;
}

function commandFor(mode, args) {
  const kind = serverKind();
  if (kind === 'node') {
    const pre = mode === 'serve' ? ['serve'] : [];
    return { kind, file: process.execPath, argv: [REFERENCE, ...pre, '--listen', '127.0.0.1:0', ...args] };
  }
  if (mode === 'serve') {
    const file = requireBinary(
      process.env.FERRIO_BIN || path.join(REPO, 'target', 'debug', 'ferrio'),
      'FERRIO_BIN', 'cargo build -p ferrio-server');
    return { kind, file, argv: ['serve', '--listen', '127.0.0.1:0', ...args] };
  }
  const file = requireBinary(
    process.env.FERRIO_INTEROP_BIN || path.join(REPO, 'target', 'debug', 'interop-server'),
    'FERRIO_INTEROP_BIN', 'cargo build -p interop-server');
  return { kind, file, argv: ['--listen', '127.0.0.1:0', ...args] };
}

function start(mode, args = [], { env = {} } = {}) {
  const { kind, file, argv } = commandFor(mode, args.map(String));
  const verbose = !!process.env.INTEROP_VERBOSE;
  const child = spawn(file, argv, {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let stderrTail = '';
  let stdoutBuf = '';
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      live.delete(handle);
      resolve(exited);
    });
  });
  const handle = {
    kind,
    mode,
    pid: child.pid,
    child,
    url: null,
    port: null,
    host: '127.0.0.1',
    paused: false,
    get exited() { return exited; },
    stderr() { return stderrTail; },
    pause() {
      process.kill(handle.pid, 'SIGSTOP');
      handle.paused = true;
    },
    resume() {
      if (exited) return;
      process.kill(handle.pid, 'SIGCONT');
      handle.paused = false;
    },
    async stop() {
      if (exited) return exited;
      try { process.kill(handle.pid, 'SIGCONT'); } catch { /* gone */ }
      try { process.kill(handle.pid, 'SIGTERM'); } catch { /* gone */ }
      let t;
      const timedOut = await Promise.race([
        exitPromise.then(() => false),
        new Promise((r) => { t = setTimeout(() => r(true), 5000); }),
      ]);
      clearTimeout(t);
      if (timedOut && !exited) {
        try { process.kill(handle.pid, 'SIGKILL'); } catch { /* gone */ }
        await exitPromise;
      }
      return exited;
    },
  };
  if (child.pid === undefined) {
    return Promise.reject(new Error(`could not spawn ${file}`));
  }
  live.add(handle);

  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    if (verbose) process.stderr.write(chunk);
    stderrTail = (stderrTail + chunk).slice(-8000);
  });
  child.stdout.setEncoding('utf8');

  return new Promise((resolve, reject) => {
    let done = false;
    const fail = (msg) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      handle.stop().finally(() => {
        reject(new Error(`${msg}\ncommand: ${file} ${argv.join(' ')}\nstderr:\n${stderrTail}`));
      });
    };
    const timer = setTimeout(() => fail(`server did not print "listening on" within ${STARTUP_TIMEOUT_MS} ms`),
      STARTUP_TIMEOUT_MS);
    child.once('error', (err) => fail(`spawn error: ${err.message}`));
    exitPromise.then((e) => fail(`server exited before listening (code ${e.code}, signal ${e.signal})`));
    child.stdout.on('data', (chunk) => {
      if (verbose) process.stderr.write(`[server stdout] ${chunk}`);
      if (done) return;
      stdoutBuf += chunk;
      let nl;
      while ((nl = stdoutBuf.indexOf('\n')) >= 0) {
        const line = stdoutBuf.slice(0, nl).replace(/\r$/, '');
        stdoutBuf = stdoutBuf.slice(nl + 1);
        const m = LISTENING_RE.exec(line);
        if (m) {
          done = true;
          clearTimeout(timer);
          handle.port = Number(m[1]);
          handle.url = `http://127.0.0.1:${handle.port}`;
          resolve(handle);
          return;
        }
      }
    });
  });
}

/** The interop-server contract (examples/interop-server/README.md). */
function startInteropServer(args = []) {
  return start('interop', args);
}

/**
 * `ferrio serve` (only the built-in join/leave/publish events on `/`). `env` adds variables
 * (FERRIO_<SECTION>__<KEY>) to this process's environment for this child only.
 */
function startServe(args = [], { env } = {}) {
  return start('serve', args, { env });
}

module.exports = { startInteropServer, startServe, serverKind, killAllSync, REPO };
