'use strict';
// `ferrio serve` /dashboard in headless Chromium: the page needs the admin credential, goes
// live over its own Engine.IO WebSocket client, shows a connection the test opens and the
// room it joins, its events/s number moves when messages flow, and it reconnects (with a
// fresh token) after losing the server for longer than its token lives.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { startServe, serverKind } = require('../lib/server');
const { connect, ack, closeAll } = require('../lib/client');

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const PASSWORD = 'interop-dashboard-password';
const WAIT = { timeout: 15000 };

function skipReason() {
  if (serverKind() === 'node') return 'the dashboard is ferrio serve only';
  if (!fs.existsSync(CHROMIUM)) return `${CHROMIUM} is missing (apt-get install chromium)`;
  return false;
}

describe('ferrio serve /dashboard (headless Chromium)', { skip: skipReason() }, () => {
  let server;
  let browser;

  before(async () => {
    const { chromium } = require('playwright-core');
    process.env.FERRIO_DASHBOARD__PASSWORD = PASSWORD;
    process.env.FERRIO_DASHBOARD__INTERVAL = '250ms';
    process.env.FERRIO_DASHBOARD__TOKEN_LIFETIME = '1s';
    try {
      server = await startServe(['--ping-interval', 500, '--ping-timeout', 500]);
    } finally {
      delete process.env.FERRIO_DASHBOARD__PASSWORD;
      delete process.env.FERRIO_DASHBOARD__INTERVAL;
      delete process.env.FERRIO_DASHBOARD__TOKEN_LIFETIME;
    }
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  });

  after(async () => {
    closeAll();
    if (browser) await browser.close();
    if (server) await server.stop();
  });

  it('without the right credentials the page is 401', async () => {
    for (const httpCredentials of [undefined, { username: 'admin', password: 'not-the-password' }]) {
      const context = await browser.newContext({ httpCredentials });
      try {
        const res = await context.request.get(`${server.url}/dashboard`);
        assert.equal(res.status(), 401);
        assert.equal(res.headers()['www-authenticate'], 'Basic realm="ferrio"');
      } finally {
        await context.close();
      }
    }
  });

  it('goes live, shows a new connection and its room, and counts events', async () => {
    const context = await browser.newContext({
      httpCredentials: { username: 'admin', password: PASSWORD },
    });
    const problems = [];
    try {
      const page = await context.newPage();
      // A Content-Security-Policy violation or a script error shows up here.
      page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
      page.on('console', (m) => {
        // The 401s this test asks for are logged too.
        if (m.type() === 'error' && !/status of 401/.test(m.text())) problems.push(`console: ${m.text()}`);
      });

      const res = await page.goto(`${server.url}/dashboard`);
      assert.equal(res.status(), 200);
      const csp = res.headers()['content-security-policy'];
      assert.match(csp, /connect-src 'self'/);
      assert.match(csp, /script-src 'nonce-/);
      assert.equal(res.headers()['x-frame-options'], 'DENY');
      // The browser's own requests without the credential, or with a wrong one, get 401.
      const refused = await page.evaluate(async () => Promise.all([
        fetch('/dashboard', { credentials: 'omit' }).then((r) => r.status),
        fetch('/dashboard', { credentials: 'omit', headers: { authorization: `Basic ${btoa('admin:wrong')}` } })
          .then((r) => r.status),
      ]));
      assert.deepEqual(refused, [401, 401]);

      await page.waitForFunction(() => document.getElementById('status').textContent === 'live', null, WAIT);
      const number = (id) => Number(document.getElementById(id).textContent.replace(/,/g, ''));
      const before = await page.evaluate(number, 'connections');
      assert.equal(before, 0, 'the page does not count its own connection');

      const room = `dashboard-${process.pid}`;
      const socket = await connect(server.url, { transports: ['websocket'] });
      assert.deepEqual(await ack(socket, 'join', room), { ok: true });
      await page.waitForFunction(([want, name]) => {
        const shown = Number(document.getElementById('connections').textContent.replace(/,/g, ''));
        const rooms = Array.from(document.querySelectorAll('#rooms tr'), (tr) => tr.children[1].textContent);
        return shown === want && rooms.includes(name);
      }, [before + 1, room], WAIT);

      // Messages flow until the page's events/s moves (the rate is over the last interval).
      let flowing = true;
      const pump = (async () => {
        while (flowing) {
          await Promise.all(Array.from({ length: 20 },
            () => ack(socket, 'publish', { room, event: 'tick', data: 1 })));
        }
      })();
      try {
        await page.waitForFunction(
          () => Number(document.getElementById('events-rate').textContent.replace(/,/g, '')) > 0, null, WAIT);
      } finally {
        flowing = false;
        await pump;
      }
      assert.match(await page.textContent('#node'), /\S/);
      socket.disconnect();
      await page.waitForFunction((want) => Number(document.getElementById('connections').textContent) === want,
        before, WAIT);

      // The server stops answering: the page misses its pings, gives the connection up and
      // retries; by then its first token (1 s) has expired, so it must fetch a fresh one.
      server.pause();
      try {
        await page.waitForFunction(() => document.getElementById('status').textContent === 'reconnecting',
          null, WAIT);
      } finally {
        server.resume();
      }
      await page.waitForFunction(() => document.getElementById('status').textContent === 'live', null, WAIT);
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });
});
