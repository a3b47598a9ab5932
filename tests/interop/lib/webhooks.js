'use strict';
// What a backend does with a request from ferrio's webhooks and RPC events (docs/webhooks.md):
// the HMAC-SHA256 of "{timestamp}.{body}" compared in constant time, and a timestamp no more
// than five minutes off.

const crypto = require('node:crypto');

/** Whether `body` (the raw bytes) came with a valid signature made with `secret`. */
function signed(headers, body, secret) {
  const ts = headers['x-ferrio-timestamp'] || '';
  const mac = crypto.createHmac('sha256', secret).update(`${ts}.`).update(body).digest('hex');
  const sent = Buffer.from(headers['x-ferrio-signature'] || '');
  const expected = Buffer.from(`v1=${mac}`);
  const fresh = Math.abs(Date.now() / 1000 - Number(ts)) < 300;
  return fresh && sent.length === expected.length && crypto.timingSafeEqual(sent, expected);
}

module.exports = { signed };
