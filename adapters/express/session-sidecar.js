// Express (or any Node.js `http`) middleware for sessions behind session-sidecar.
//
//   const sessionSidecar = require('./session-sidecar');
//   app.use(sessionSidecar());
//   app.get('/', (req, res) => { req.session.views = (req.session.views ?? 0) + 1; ... });
//
// `req.session` is the session the proxy sent in `X-Session` (trusted: the proxy strips any
// copy a client sent), as a plain object, when `X-Session-Status` is `valid`; for every other
// status (`absent`, `expired`, `invalid`, `revoked`, or one added later) and without one it is
// `{}`. `req.sessionStatus` is that status (`absent` when missing). Just before the response
// head is written, the session is compared with what was read, key by key, by its JSON, so
// nested changes (`req.session.cart.push(1)`) count. Only if something changed, one header is
// set:
//
// * an emptied session (or `req.session = null`) as `X-Set-Session: {}`;
// * a change to some keys as `X-Patch-Session`, an RFC 7396 merge patch of just those keys (a
//   deleted key as null), so keys the request did not touch are never sent back;
// * anything a merge patch cannot say (a value set to null), or a patch no shorter than the
//   whole session, as a full `X-Set-Session`.
//
// JSON is written ASCII only: `JSON.stringify` leaves non-ASCII raw, which Node sends as
// Latin-1 (or refuses), so every character from U+007F up is escaped as \uXXXX.
//
// Big integers: `JSON.parse` turns 12345678901234567890 into 12345678901234567000. A key the
// request does not change is never re-sent, so its exact digits stay in the session; a key it
// does change is written as JavaScript sees it. A full `X-Set-Session` is used only when it
// re-sends no such number, unless a merge patch cannot express the change.
//
// No dependencies; `express` is a peer. A response that already carries `X-Set-Session` or
// `X-Patch-Session` is left alone.

'use strict';

const SESSION_HEADER = 'x-session';
const STATUS_HEADER = 'x-session-status';
const SET_HEADER = 'X-Set-Session';
const PATCH_HEADER = 'X-Patch-Session';

function sessionSidecar() {
  return function sessionSidecarMiddleware(req, res, next) {
    req.sessionStatus = req.headers[STATUS_HEADER] ?? 'absent';
    const raw = req.sessionStatus === 'valid' ? req.headers[SESSION_HEADER] : undefined;
    const original = readSession(raw);
    req.session = readSession(raw);
    req.sessionMigrated = req.headers[`${SESSION_HEADER}-migrated`] !== undefined;

    const writeHead = res.writeHead;
    res.writeHead = function writeHeadWithSession(...args) {
      res.writeHead = writeHead;
      if (!res.hasHeader(SET_HEADER) && !res.hasHeader(PATCH_HEADER)) {
        const header = sessionHeader(original, req.session);
        if (header !== null) res.setHeader(header[0], header[1]);
      }
      return writeHead.apply(this, args);
    };
    next();
  };
}

// The session in an `X-Session` value, `{}` if it is missing or not a JSON object.
function readSession(raw) {
  try {
    const session = JSON.parse(raw ?? '{}');
    return isObject(session) ? session : {};
  } catch {
    return {};
  }
}

// [name, value] of the header that turns `old` into `current`, or null if they are the same.
function sessionHeader(old, current) {
  const now = isObject(current) ? JSON.parse(JSON.stringify(current)) : {};
  if (Object.keys(now).length === 0) {
    return Object.keys(old).length === 0 ? null : [SET_HEADER, '{}'];
  }
  const patch = mergePatchDiff(old, now);
  if (patch !== null && Object.keys(patch).length === 0) return null;
  const full = toHeaderJson(now);
  if (patch !== null) {
    const patchJson = toHeaderJson(patch);
    const untouchedUnsafe = Object.keys(now).some((k) => !(k in patch) && holdsUnsafeNumber(now[k]));
    if (patchJson.length < full.length || untouchedUnsafe) return [PATCH_HEADER, patchJson];
  }
  return [SET_HEADER, full];
}

// An RFC 7396 merge patch that turns `old` into `now`, or null if none can: a member that is
// an object on both sides is diffed in turn (a whole object would merge, not replace), and a
// null kept as a value cannot be said by a merge patch.
function mergePatchDiff(old, now) {
  const patch = Object.create(null); // a member named __proto__ stays a member
  for (const name of Object.keys(old)) {
    if (!Object.hasOwn(now, name)) patch[name] = null;
  }
  for (const [name, value] of Object.entries(now)) {
    const before = old[name];
    if (Object.hasOwn(old, name) && JSON.stringify(before) === JSON.stringify(value)) continue;
    if (isObject(value) && Object.hasOwn(old, name) && isObject(before)) {
      const inner = mergePatchDiff(before, value);
      if (inner === null) return null;
      patch[name] = inner;
    } else if (value === null || (isObject(value) && holdsMemberNull(value))) {
      return null;
    } else {
      patch[name] = value;
    }
  }
  return patch;
}

function holdsMemberNull(object) {
  return Object.values(object).some((v) => v === null || (isObject(v) && holdsMemberNull(v)));
}

function holdsUnsafeNumber(value) {
  if (typeof value === 'number') return Number.isInteger(value) && !Number.isSafeInteger(value);
  if (value !== null && typeof value === 'object') return Object.values(value).some(holdsUnsafeNumber);
  return false;
}

// Compact JSON, ASCII only: U+007F and up as \uXXXX (an astral character is already two
// UTF-16 code units, so it becomes a surrogate pair).
function toHeaderJson(value) {
  return JSON.stringify(value).replace(
    /[\u007f-\uffff]/g,
    (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'),
  );
}

function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

module.exports = sessionSidecar;
module.exports.sessionSidecar = sessionSidecar;
module.exports.sessionHeader = sessionHeader;
module.exports.toHeaderJson = toHeaderJson;
