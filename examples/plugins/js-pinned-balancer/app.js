// A BBProxy balancer written in JavaScript: a request that names a backend in
// a header goes to that backend; every other request goes to the backend that
// has been sent the fewest requests so far.
//
// Configuration (optional): {"header": "x-backend"}. The header's value is a
// backend id: its position in the upstream's list in config.json, from 0. A
// pin to a backend that is not a candidate (unknown, or its circuit breaker is
// open) is ignored.

import { log } from 'bbproxy:plugin/host@0.1.1';

// Module state is per component instance; `init` runs once per instance.
let header = 'x-backend';

export function init(config) {
  let parsed;
  try {
    parsed = config.trim() === '' ? {} : JSON.parse(config);
  } catch (e) {
    throw `invalid pinned-balancer config: ${e.message}`;
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw 'invalid pinned-balancer config: expected a JSON object';
  }
  for (const key of Object.keys(parsed)) {
    if (key !== 'header') {
      throw `invalid pinned-balancer config: unknown key "${key}" (known: header)`;
    }
  }
  if ('header' in parsed) {
    if (typeof parsed.header !== 'string' || parsed.header === '') {
      throw 'invalid pinned-balancer config: "header" must be a non-empty string';
    }
    header = parsed.header;
  }
  log('debug', `pinned balancer: pins by header ${header}`);
}

export function pick(req, upstream, candidates) {
  const pin = req.header(header);
  if (pin !== undefined && /^[0-9]+$/.test(pin)) {
    const index = candidates.findIndex((b) => b.id === Number(pin));
    if (index >= 0) {
      return index;
    }
  }
  // `requests` is a u64, so a BigInt.
  let best = 0;
  for (let i = 1; i < candidates.length; i++) {
    if (candidates[i].requests < candidates[best].requests) {
      best = i;
    }
  }
  return best;
}
