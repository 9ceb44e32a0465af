// A real Node.js `http` backend with the routes an attacker hopes to find behind a proxy.
//
//   /status/<code>   answers with that status; ?upgrade=1 adds Upgrade: websocket and
//                    Connection: Upgrade, ?accept=<v> a Sec-WebSocket-Accept (a status-echo
//                    route, as test and debug endpoints often are)
//   /early           answers 200 at once, before reading the request body
//   /whoami          echoes the session headers it saw, the Cookie header and ?id=
//   /respond         answers 200 with each ?h=<name>&v=<value> pair as a response header,
//                    written by Node as Latin-1 (what plain setHeader does with a JS string)
//   /healthz         200
//   /__requests      every request this process parsed (method, url, headers), then forgets
//
// Every request but /__requests is recorded, so a test can assert what Node itself parsed:
// a request the proxy never meant to send shows up here.
'use strict';

const http = require('http');

const seen = [];

function json(res, status, body, extra = {}) {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': data.length, ...extra });
  res.end(data);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://backend');
  if (url.pathname === '/__requests') {
    const all = seen.splice(0, seen.length);
    json(res, 200, all);
    return;
  }
  seen.push({ method: req.method, url: req.url, headers: req.rawHeaders });
  if (url.pathname === '/healthz') {
    json(res, 200, { ok: true });
    return;
  }
  if (url.pathname.startsWith('/status/')) {
    const code = Number(url.pathname.slice('/status/'.length));
    const headers = {};
    if (url.searchParams.get('upgrade') === '1') {
      headers.Upgrade = 'websocket';
      headers.Connection = 'Upgrade';
    }
    if (url.searchParams.has('accept')) headers['Sec-WebSocket-Accept'] = url.searchParams.get('accept');
    res.writeHead(code, headers);
    res.end();
    return;
  }
  if (url.pathname === '/early') {
    json(res, 200, { early: true });
    return;
  }
  if (url.pathname === '/whoami') {
    let size = 0;
    req.on('data', (chunk) => { size += chunk.length; });
    req.on('end', () => json(res, 200, {
      id: url.searchParams.get('id'),
      session: req.headers['x-session'] ?? null,
      status: req.headers['x-session-status'] ?? null,
      cookie: req.headers.cookie ?? null,
      bytes: size,
    }));
    return;
  }
  if (url.pathname === '/respond') {
    const names = url.searchParams.getAll('h');
    const values = url.searchParams.getAll('v');
    const data = Buffer.from('{"ok":true}');
    res.setHeader('Content-Type', 'application/json');
    res.setHeader('Content-Length', data.length);
    names.forEach((name, i) => res.appendHeader(name, values[i]));
    res.end(data);
    return;
  }
  json(res, 404, { error: 'no route' });
});

// Node answers a parse error with 400 and closes: the symptom of a desynchronised stream.
server.on('clientError', (err, socket) => {
  seen.push({ method: 'PARSE_ERROR', url: String(err.code), headers: [] });
  socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
});
server.keepAliveTimeout = 30000;
server.listen(Number(process.env.PORT), process.env.HOST || '127.0.0.1');
