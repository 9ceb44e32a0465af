// An example Express app using session-sidecar.js, also driven by
// tests/integration/test_adapters.py.
//
// Routes: GET /session shows what the app read; POST /update changes the session with a JSON
// body {"clear": true, "delete": [k], "set": {k: v}, "append": {k: item}, "nested": [[k, sub, v]]};
// POST /raw-set writes its body as X-Set-Session itself (the adapter leaves it alone). Every
// response says in X-Adapter-Wrote which session header was sent ("X-Patch-Session {...}",
// "X-Set-Session {...}" or "none"). Run, in this folder: npm install && HOST=127.0.0.1 PORT=8002 node app.js
// (package.json: express, and the adapter from the folder above under its package name).

'use strict';

const express = require('express');
const sessionSidecar = require('session-sidecar-express');

const app = express();

// Installed before the adapter, so its writeHead runs after the adapter's has set the header.
app.use((req, res, next) => {
  const writeHead = res.writeHead;
  res.writeHead = function reportWrites(...args) {
    const name = ['X-Patch-Session', 'X-Set-Session'].find((n) => res.hasHeader(n));
    res.setHeader('X-Adapter-Wrote', name ? `${name} ${res.getHeader(name)}` : 'none');
    return writeHead.apply(this, args);
  };
  next();
});
app.use(sessionSidecar());

app.get('/healthz', (req, res) => res.send('ok'));

app.get('/session', (req, res) => {
  res.json({
    status: req.sessionStatus,
    migrated: req.sessionMigrated,
    raw: req.headers['x-session'] ?? null,
    session: req.session,
  });
});

app.post('/update', express.json(), (req, res) => {
  const u = req.body;
  if (u.clear) for (const key of Object.keys(req.session)) delete req.session[key];
  for (const key of u.delete ?? []) delete req.session[key];
  Object.assign(req.session, u.set ?? {});
  for (const [key, item] of Object.entries(u.append ?? {})) req.session[key].push(item);
  for (const [key, sub, value] of u.nested ?? []) req.session[key][sub] = value;
  res.json({ ok: true });
});

app.post('/raw-set', express.text({ type: '*/*' }), (req, res) => {
  res.setHeader('X-Set-Session', req.body);
  res.json({ ok: true });
});

const server = app.listen(Number(process.env.PORT ?? 8002), process.env.HOST ?? '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
