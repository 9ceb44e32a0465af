// Node `http` behind the sidecar, at Node's own limits: no maxHeaderSize option here, so
// `node app.js` runs with the default and `node --max-http-header-size=300000 app.js` with the
// setting docs/backends.md gives. Routes: see __init__.py.
'use strict';

const http = require('http');

const MAX_GROW_KB = 1024;

function handle(req, res) {
  const url = new URL(req.url, 'http://backend');
  if (url.pathname === '/healthz') {
    res.end('ok');
    return;
  }
  if (url.pathname === '/session/grow') {
    const kb = Math.min(Number(url.searchParams.get('kb') ?? 1), MAX_GROW_KB);
    const encoded = JSON.stringify({ blob: 'x'.repeat(kb * 1024) });
    res.setHeader('X-Set-Session', encoded);
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ bytes: encoded.length }));
    return;
  }
  res.setHeader('Content-Type', 'application/json');
  res.end(JSON.stringify({
    status: req.headers['x-session-status'] ?? null,
    session_raw: req.headers['x-session'] ?? null,
  }));
}

http.createServer(handle).listen(Number(process.env.PORT), '127.0.0.1');
