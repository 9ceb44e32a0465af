// An example backend behind session-sidecar, using only Node's `http` module.
//
// The sidecar owns the cookies; this server only ever sees and writes JSON:
//
// * Reading: every request carries `X-Session` (a compact JSON object, `{}` when there is no
//   session) and `X-Session-Status` (`absent`, `valid`, `expired` or `invalid`). The sidecar
//   removes any copy a client sent, so both can be trusted.
// * Writing: answer with `X-Set-Session: <JSON object>` to replace the session, or with `{}`
//   or `null` to clear it. The sidecar turns it into cookies and never forwards it.
//
// Run it with `HOST=127.0.0.1 PORT=8002 node server.js`; it stops cleanly on SIGTERM.

'use strict';

const crypto = require('crypto');
const http = require('http');

const BACKEND = 'node';
const CHUNK = 64 * 1024;
// A 48 KB X-Session beside a 60 KB Cookie must fit; Node's default limit is 16 KB in all.
const MAX_HEADER_BYTES = 128 * 1024;
const MAX_GROW_KB = 4096;
const MAX_SLEEP_SECONDS = 600;
// Bytes that cannot appear in a header value (RFC 9110 section 5.5): controls other than tab.
const UNSENDABLE_IN_HEADER = /[\x00-\x08\x0a-\x1f\x7f]/;

// Serialise for X-Set-Session: compact and ASCII-only, as header values must be.
function dumpSession(session) {
  return JSON.stringify(session).replace(
    /[\u007f-\uffff]/g,
    (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'),
  );
}

// The current session from X-Session, or an empty one if it is missing or unreadable.
function readSession(req) {
  try {
    const session = JSON.parse(req.headers['x-session'] ?? '{}');
    return isObject(session) ? session : {};
  } catch {
    return {};
  }
}

function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function sendJson(res, body, status = 200, headers = {}) {
  // A Buffer, not a string: Node then always writes the header block as latin1.
  const data = Buffer.from(JSON.stringify(body), 'utf8');
  res.writeHead(status, {
    ...headers,
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': data.length,
  });
  res.end(data);
}

function badRequest(res, message) {
  sendJson(res, { error: message }, 400);
}

async function readJsonObject(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  try {
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    return isObject(body) ? body : null;
  } catch {
    return null;
  }
}

function intParam(url, name, fallback, maximum) {
  const raw = url.searchParams.get(name);
  if (raw === null) return fallback;
  if (!/^\d+$/.test(raw)) return null;
  const value = Number(raw);
  return value <= maximum ? value : null;
}

function healthz(req, res) {
  res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
  res.end('ok');
}

function whoami(req, res) {
  const rawSession = req.headers['x-session'] ?? null;
  let session = null;
  try {
    session = rawSession === null ? null : JSON.parse(rawSession);
  } catch {
    session = null;
  }
  // rawHeaders keeps every line as sent; req.headers would drop some repeats.
  const headers = {};
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i].toLowerCase();
    const value = req.rawHeaders[i + 1];
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  sendJson(res, {
    backend: BACKEND,
    path: req.url,
    method: req.method,
    session,
    session_raw: rawSession,
    status: req.headers['x-session-status'] ?? null,
    cookie: req.headers.cookie ?? null, // Node joins repeated Cookie lines with "; ".
    headers,
  });
}

async function replaceSession(req, res) {
  const body = await readJsonObject(req);
  if (body === null) return badRequest(res, 'body must be a JSON object');
  sendJson(res, { ok: true }, 200, { 'X-Set-Session': dumpSession(body) });
}

async function mergeSession(req, res) {
  const body = await readJsonObject(req);
  if (body === null) return badRequest(res, 'body must be a JSON object');
  const merged = { ...readSession(req), ...body };
  sendJson(res, merged, 200, { 'X-Set-Session': dumpSession(merged) });
}

function clearSession(req, res) {
  sendJson(res, { ok: true }, 200, { 'X-Set-Session': '{}' });
}

function growSession(req, res, url) {
  const kb = intParam(url, 'kb', 1, MAX_GROW_KB);
  if (kb === null) return badRequest(res, `kb must be an integer from 0 to ${MAX_GROW_KB}`);
  const session = readSession(req);
  // 768 random bytes are exactly 1024 base64 characters, none of which compress.
  session[url.searchParams.get('key') ?? 'blob'] = crypto
    .randomBytes(768 * kb)
    .toString('base64url');
  const encoded = dumpSession(session);
  sendJson(res, { bytes: Buffer.byteLength(encoded) }, 200, { 'X-Set-Session': encoded });
}

function rawSetSession(req, res, url) {
  const values = url.searchParams.getAll('value');
  if (values.length === 0) return badRequest(res, 'value is required');
  if (values.some((value) => UNSENDABLE_IN_HEADER.test(value))) {
    return badRequest(res, 'value cannot be sent in a header');
  }
  // Header strings go out as latin1, one byte per character: spelling the UTF-8 bytes as
  // latin1 characters sends the value's bytes unchanged. Each ?value= is its own header line.
  const raw = values.map((value) => Buffer.from(value, 'utf8').toString('latin1'));
  sendJson(res, { ok: true }, 200, { 'X-Set-Session': raw });
}

function setCookies(req, res) {
  sendJson(res, { ok: true }, 200, {
    'Set-Cookie': [
      'a=1; Path=/',
      'b=2; Path=/; HttpOnly',
      // The sidecar owns session.* cookies and must drop this one.
      'session.0=evil; Path=/',
    ],
  });
}

function slow(req, res, url) {
  const seconds = Number(url.searchParams.get('seconds') ?? '1');
  if (!(seconds >= 0 && seconds <= MAX_SLEEP_SECONDS)) {
    return badRequest(res, `seconds must be from 0 to ${MAX_SLEEP_SECONDS}`);
  }
  const timer = setTimeout(() => sendJson(res, { slept: seconds }), seconds * 1000);
  res.on('close', () => clearTimeout(timer));
}

function echo(req, res) {
  const headers = { 'Content-Type': 'application/octet-stream' };
  if (req.headers['content-length'] !== undefined) {
    headers['Content-Length'] = req.headers['content-length'];
  }
  res.writeHead(200, headers);
  req.pipe(res); // pipe() copies chunk by chunk and pauses the request while res is full.
}

async function upload(req, res) {
  const digest = crypto.createHash('sha256');
  let size = 0;
  for await (const chunk of req) {
    digest.update(chunk);
    size += chunk.length;
  }
  sendJson(res, { bytes: size, sha256: digest.digest('hex') });
}

function download(req, res, url) {
  const size = intParam(url, 'bytes', 0, 2 ** 40);
  if (size === null) return badRequest(res, 'bytes must be a non-negative integer');
  const piece = Buffer.alloc(CHUNK, Buffer.from([...Array(256).keys()]));
  res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': size });
  let remaining = size;
  const writeMore = () => {
    while (remaining > 0) {
      const part = remaining >= CHUNK ? piece : piece.subarray(0, remaining);
      remaining -= part.length;
      // write() returns false once the socket buffer is full: wait for 'drain'.
      if (!res.write(part)) return res.once('drain', writeMore);
    }
    res.end();
  };
  writeMore();
}

// Promise a megabyte, send a kilobyte, hang up: an upstream dying mid-body.
function reset(req, res) {
  res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': 1000000 });
  res.write(Buffer.alloc(1000, 'x'), () => res.socket.destroy());
}

function notFound(req, res) {
  sendJson(res, { error: 'not found' }, 404);
}

const routes = {
  'GET /healthz': healthz,
  'GET /whoami': whoami,
  'POST /session': replaceSession,
  'POST /session/merge': mergeSession,
  'POST /session/clear': clearSession,
  'GET /session/grow': growSession,
  'GET /raw-set-session': rawSetSession,
  'GET /set-cookies': setCookies,
  'GET /slow': slow,
  'POST /echo': echo,
  'POST /upload': upload,
  'GET /download': download,
  'GET /reset': reset,
};

async function handle(req, res) {
  const url = new URL(req.url, 'http://backend');
  // Any other GET says who it reached.
  const fallback = req.method === 'GET' || req.method === 'HEAD' ? whoami : notFound;
  const method = req.method === 'HEAD' ? 'GET' : req.method;
  const handler = routes[`${method} ${url.pathname}`] ?? fallback;
  try {
    await handler(req, res, url);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) sendJson(res, { error: 'internal error' }, 500);
    else res.destroy();
  }
}

const host = process.env.HOST || '127.0.0.1';
const port = Number(process.env.PORT || 8002);
const server = http.createServer({ maxHeaderSize: MAX_HEADER_BYTES }, handle);

server.listen(port, host, () => console.log(`listening on ${host}:${port}`));

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections(); // Do not wait for slow or streaming requests.
  });
}
