'use strict';
// Helpers for the security suites of `ferrio serve`: JWTs signed with node:crypto (including
// tokens no JWT library would sign), key pairs, and servers started from a TOML configuration.

const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startServe, serverKind } = require('./server');

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

/** `header.payload.signature`, signed according to `header.alg` with `key` (a secret or a PEM). */
function signJwt(header, claims, key) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const alg = header.alg;
  let sig;
  if (/^HS(256|384|512)$/.test(alg)) {
    sig = crypto.createHmac(`sha${alg.slice(2)}`, key).update(input).digest();
  } else if (/^RS(256|384|512)$/.test(alg)) {
    sig = crypto.sign(`sha${alg.slice(2)}`, Buffer.from(input), key);
  } else if (/^ES(256|384)$/.test(alg)) {
    sig = crypto.sign(`sha${alg.slice(2)}`, Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  } else if (alg === 'EdDSA') {
    sig = crypto.sign(null, Buffer.from(input), key);
  } else {
    sig = Buffer.alloc(0); // "none" and anything else: no signature
  }
  return `${input}.${b64url(sig)}`;
}

/** An HS256 token for `sub`, valid for an hour unless `extra` says otherwise. */
function hsToken(secret, sub, extra = {}) {
  return signJwt({ alg: 'HS256', typ: 'JWT' }, { sub, exp: now() + 3600, iat: now(), ...extra }, secret);
}

/** {privateKey, publicKey} PEM strings. */
function keyPair(type, options = {}) {
  return crypto.generateKeyPairSync(type, {
    ...options,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
}

/** The public JWK of a PEM public key, with `kid` and `alg`. */
function publicJwk(publicPem, kid, alg) {
  return { ...crypto.createPublicKey(publicPem).export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

/**
 * Opens a WebSocket to `url` with these headers (from `localAddress`, e.g. 127.0.0.2). Resolves
 * with 101 once upgraded (and closes it) or with the HTTP status the server answered instead.
 */
function wsStatus(url, headers = {}, { localAddress, timeout = 10000 } = {}) {
  const WebSocket = require('ws');
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, localAddress });
    const timer = setTimeout(() => { ws.terminate(); reject(new Error(`no answer from ${url}`)); }, timeout);
    ws.once('open', () => { clearTimeout(timer); ws.terminate(); resolve(101); });
    ws.once('unexpected-response', (req, res) => {
      clearTimeout(timer);
      res.resume();
      req.destroy();
      resolve(res.statusCode);
    });
    ws.once('error', (err) => { clearTimeout(timer); reject(err); });
  });
}

const tmpDirs = [];

/** Writes `files` ({name: text}) into a fresh directory; returns name -> path. */
function writeFiles(files) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferrio-security-'));
  tmpDirs.push(dir);
  const out = {};
  for (const [name, text] of Object.entries(files)) {
    out[name] = path.join(dir, name);
    fs.writeFileSync(out[name], text);
  }
  return out;
}

function removeFiles() {
  for (const dir of tmpDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
}

/** `ferrio serve --config <file>` with this TOML text (the harness picks the port). */
async function startSecure(toml, extraArgs = []) {
  const { config } = writeFiles({ config: `shutdown_timeout = "1s"\n${toml}` });
  return startServe(['--config', config, ...extraArgs]);
}

/** These suites test ferrio's own security layer: the Node reference server has none. */
const ferrioOnly = serverKind() === 'ferrio' ? {} : { skip: 'ferrio serve only' };

module.exports = {
  b64url,
  now,
  signJwt,
  hsToken,
  keyPair,
  publicJwk,
  writeFiles,
  removeFiles,
  startSecure,
  wsStatus,
  ferrioOnly,
};
