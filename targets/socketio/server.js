'use strict';
// A reference Socket.IO application for the harness to judge connection state recovery against:
// JWT auth in a middleware, one room per user, streamed replies, pushes from /admin/notify, in-place
// token refresh, and an in-memory or Redis Streams adapter. Planted faults: --push-mode volatile|ack
// (pushes that recovery does not store) and --one-socket-per-user off (duplicate live sockets).
// Usage: node server.js [--port 0] [--adapter memory|redis-streams] ... (README.md).
const crypto = require('node:crypto');
const http = require('node:http');
const { metrics, processCounts } = require('../lib/metrics');
const { tokens } = require('../lib/jwt');
const { Server } = require('socket.io');

const MAX_BODY_BYTES = 64 * 1024;
const MAX_TOKEN_TTL_S = 7 * 24 * 3600;
const MAX_TIMER_MS = 2 ** 31 - 1;
const HISTORY_KEEP = 100;
const REPLY_CHARS = 200;
const PUSH_ACK_TIMEOUT_MS = 5000;
const REDIS_START_TIMEOUT_MS = 4000;
const SHUTDOWN_HARD_MS = 3000;
const RESERVED_EVENTS = ['connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener',
  'msg', 'history'];

const USAGE = 'usage: node server.js [--port N] [--host ADDR] [--parent-pid N] [--ping-interval-ms N] [--ping-timeout-ms N]' +
  ' [--recovery on|off] [--max-disconnection-ms N] [--adapter memory|redis-streams] [--redis-url URL]' +
  ' [--stream-max-len N] [--token-ttl-s S] [--refresh-grace-ms N] [--refresh-event NAME]' +
  ' [--push-mode plain|volatile|ack] [--one-socket-per-user on|off] [--chunks N] [--chunk-delay-ms N]';

function options(argv) {
  const o = { port: 0, host: '127.0.0.1', parentPid: 0, pingIntervalMs: 25000, pingTimeoutMs: 20000, recovery: true,
    maxDisconnectionMs: 120000, adapter: 'memory', redisUrl: 'redis://127.0.0.1:6379', streamMaxLen: 10000,
    tokenTtlS: 300, refreshGraceMs: 5000, refreshEvent: 'refresh', pushMode: 'plain', oneSocketPerUser: true,
    chunks: 8, chunkDelayMs: 20 };
  const numbers = { '--port': 'port', '--parent-pid': 'parentPid', '--ping-interval-ms': 'pingIntervalMs',
    '--ping-timeout-ms': 'pingTimeoutMs', '--max-disconnection-ms': 'maxDisconnectionMs',
    '--stream-max-len': 'streamMaxLen', '--token-ttl-s': 'tokenTtlS', '--refresh-grace-ms': 'refreshGraceMs',
    '--chunks': 'chunks', '--chunk-delay-ms': 'chunkDelayMs' };
  const positive = ['pingIntervalMs', 'pingTimeoutMs', 'maxDisconnectionMs', 'streamMaxLen', 'tokenTtlS', 'chunks'];
  const choices = { '--recovery': ['recovery', { on: true, off: false }],
    '--one-socket-per-user': ['oneSocketPerUser', { on: true, off: false }],
    '--adapter': ['adapter', { memory: 'memory', 'redis-streams': 'redis-streams' }],
    '--push-mode': ['pushMode', { plain: 'plain', volatile: 'volatile', ack: 'ack' }] };
  const strings = { '--host': 'host', '--redis-url': 'redisUrl', '--refresh-event': 'refreshEvent' };
  const bad = (arg, why) => {
    console.error(`${USAGE}\nbad argument: ${arg} (${why})`);
    process.exit(2);
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (!(name in numbers) && !(name in choices) && !(name in strings)) bad(arg, 'unknown option');
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined || value === '') bad(arg, 'a value is required');
    if (name in numbers) {
      const key = numbers[name];
      const n = Number(value);
      if (!Number.isInteger(n) || n < 0 || (positive.includes(key) && n === 0)) {
        bad(`${name} ${value}`, positive.includes(key) ? 'an integer > 0 is required' : 'an integer >= 0 is required');
      }
      o[key] = n;
    } else if (name in choices) {
      const [key, allowed] = choices[name];
      if (!Object.hasOwn(allowed, value)) bad(`${name} ${value}`, `one of ${Object.keys(allowed).join(', ')}`);
      o[key] = allowed[value];
    } else {
      o[strings[name]] = value;
    }
  }
  if (o.port > 65535) bad(`--port ${o.port}`, 'at most 65535');
  if (RESERVED_EVENTS.includes(o.refreshEvent)) bad(`--refresh-event ${o.refreshEvent}`, 'a reserved or used event name');
  return o;
}

const opt = options(process.argv.slice(2));
if (opt.parentPid) { // the harness that started it is gone: do not outlive it
  setInterval(() => { try { process.kill(opt.parentPid, 0); } catch { process.exit(0); } }, 1000).unref();
}
const log = (...args) => console.error(new Date().toISOString(), ...args);
process.stderr.on('error', () => {}); // a log reader that went away (EPIPE) is no reason to crash
const adminToken = process.env.AGENTWS_ADMIN_TOKEN || crypto.randomBytes(16).toString('hex');
const epoch = crypto.randomBytes(4).toString('hex');
const started = process.hrtime.bigint();
const totals = { duplicate_agents_total: 0, takeovers_total: 0, sessions_new_total: 0, sessions_recovered_total: 0,
  recovery_missed_total: 0, zombies_reaped_total: 0, token_expired_closes_total: 0, refreshes_total: 0, pushes_total: 0 };
const users = new Map(); // user -> Set of live sockets (this process only)
const timers = new Map(); // socket -> {expiry, grace}; never in socket.data, which recovery serializes
const streams = new Set(); // timers of replies being streamed; cleared only on shutdown
let draining = false;
let io = null;
let redis = null;

// -- tokens: JWT HS256 (sub, exp, iat, jti), shared with the other Node.js target (../lib/jwt.js) -----------
const { issue, verify } = tokens();

// -- sockets ----------------------------------------------------------------------------------------------------
const guard = (what, fn) => (...args) => {
  try { fn(...args); } catch (err) { log(`error in ${what}:`, err); }
};

function unlist(socket) {
  const set = users.get(socket.data.user);
  if (set && set.delete(socket) && set.size === 0) users.delete(socket.data.user);
}

/** Sends `goodbye` then disconnects. A cluster adapter delivers socket.emit only after its XADD: disconnecting
 *  at once would drop the goodbye, so wait for a Redis round trip behind it (same connection, in order). */
function goodbye(socket, reason) {
  unlist(socket);
  socket.emit('goodbye', { reason });
  const close = () => socket.disconnect(true); // a second call does nothing
  if (!redis) return close();
  const anyway = setTimeout(close, 1000); // Redis is down: do not wait for it
  redis.ping().catch(() => {}).finally(() => { clearTimeout(anyway); setImmediate(close); });
}

function armExpiry(socket) {
  const t = timers.get(socket);
  if (!t) return;
  clearTimeout(t.expiry);
  clearTimeout(t.grace);
  const exp = socket.data.exp;
  t.expiry = setTimeout(() => {
    socket.emit('refresh_required', { grace_ms: opt.refreshGraceMs, exp });
    t.grace = setTimeout(() => {
      if (!socket.connected) return;
      totals.token_expired_closes_total++;
      goodbye(socket, 'token_expired');
    }, opt.refreshGraceMs);
  }, Math.min(MAX_TIMER_MS, Math.max(0, exp * 1000 - Date.now())));
}

/** The deterministic reply to one turn: `reply to "<text>" (turn N) ` repeated to ~REPLY_CHARS characters. */
function replyTo(text, turn) {
  const unit = `reply to ${JSON.stringify(text)} (turn ${turn}) `;
  return unit.repeat(Math.max(1, Math.ceil(REPLY_CHARS / unit.length)));
}

function pieces(text, n) { // n pieces of nearly equal length, never splitting a character
  const chars = Array.from(text);
  const out = [];
  for (let i = 0; i < n; i++) out.push(chars.slice(Math.floor((i * chars.length) / n), Math.floor(((i + 1) * chars.length) / n)).join(''));
  return out;
}

function onMsg(socket, payload) {
  if (payload === null || typeof payload !== 'object' || typeof payload.cid !== 'string' || typeof payload.text !== 'string') return;
  const { cid, text } = payload;
  const turn = ++socket.data.turns;
  const reply = replyTo(text, turn);
  const sha256 = crypto.createHash('sha256').update(reply, 'utf8').digest('hex');
  // recorded now, while connected: a redis session is serialized at the disconnect, later changes would be lost
  socket.data.history.push({ turn, cid, text, reply_sha256: sha256 });
  if (socket.data.history.length > HISTORY_KEEP) socket.data.history.splice(0, socket.data.history.length - HISTORY_KEEP);
  socket.emit('accepted', { cid, turn });
  const deltas = pieces(reply, opt.chunks);
  let i = 0;
  const next = () => { // goes on after a disconnect: with recovery on, the rest is stored for the session
    streams.delete(timer);
    if (draining) return;
    socket.emit('chunk', { turn, i, delta: deltas[i] });
    if (++i < deltas.length) { timer = setTimeout(guard('chunk', next), opt.chunkDelayMs); streams.add(timer); return; }
    socket.emit('done', { turn, n: deltas.length, sha256 });
  };
  let timer = setTimeout(guard('chunk', next), opt.chunkDelayMs);
  streams.add(timer);
}

function onRefresh(socket, args) {
  const ack = typeof args[args.length - 1] === 'function' ? args.pop() : null;
  if (!ack) return;
  const claims = verify(args[0]?.token);
  if (claims.error) return ack({ ok: false, error: claims.error });
  if (claims.sub !== socket.data.user) return ack({ ok: false, error: 'wrong_user' });
  socket.data.exp = claims.exp;
  armExpiry(socket);
  totals.refreshes_total++;
  ack({ ok: true, exp: claims.exp });
}

function authenticate(socket, next) {
  const claims = verify(socket.handshake.auth?.token);
  if (claims.error) {
    const err = new Error(claims.error);
    err.data = { code: claims.error };
    return next(err);
  }
  socket.data = { user: claims.sub, exp: claims.exp, turns: 0, history: [] };
  next();
}

function onConnection(socket) {
  const user = socket.data?.user;
  if (typeof user !== 'string') { log('a socket without a user: closed'); socket.disconnect(true); return; }
  socket.join(`user:${user}`);
  if (socket.recovered) totals.sessions_recovered_total++;
  else {
    totals.sessions_new_total++;
    if (socket.handshake.auth?.pid !== undefined) totals.recovery_missed_total++;
  }
  if (!socket.recovered && opt.oneSocketPerUser) {
    for (const other of [...(users.get(user) || [])]) {
      totals.takeovers_total++;
      goodbye(other, 'taken_over'); // unlists it (and the user, when it was the last)
    }
  }
  let live = users.get(user);
  if (!live) users.set(user, (live = new Set()));
  live.add(socket);
  if (live.size >= 2) totals.duplicate_agents_total++;
  socket.emit('session', { user, sid: socket.id, recovered: socket.recovered, turns: socket.data.turns,
    token_exp: socket.data.exp, ping_interval_ms: opt.pingIntervalMs, ping_timeout_ms: opt.pingTimeoutMs,
    max_disconnection_ms: opt.recovery ? opt.maxDisconnectionMs : 0, recovery: opt.recovery });
  timers.set(socket, { expiry: null, grace: null });
  armExpiry(socket);

  socket.on(opt.refreshEvent, guard('refresh', (...args) => onRefresh(socket, args)));
  socket.on('msg', guard('msg', (payload) => onMsg(socket, payload)));
  socket.on('history', guard('history', (...args) => {
    const ack = args[args.length - 1];
    if (typeof ack === 'function') ack({ turns: socket.data.history });
  }));
  socket.on('disconnect', guard('disconnect', (reason) => {
    const t = timers.get(socket);
    if (t) { clearTimeout(t.expiry); clearTimeout(t.grace); }
    timers.delete(socket);
    unlist(socket);
    if (reason === 'ping timeout') totals.zombies_reaped_total++;
  }));
}

function push(user, id, data) {
  const payload = { seq: id, id, data };
  const room = `user:${user}`;
  if (opt.pushMode === 'volatile') io.volatile.to(room).emit('push', payload);
  else if (opt.pushMode === 'ack') io.to(room).timeout(PUSH_ACK_TIMEOUT_MS).emit('push', payload, () => {});
  else io.to(room).emit('push', payload);
  totals.pushes_total++;
}

// -- HTTP: /auth/token, /admin/notify, /stats, /metrics, /healthz -------------------------------------------------
function stats() {
  let agents = 0;
  let most = 0;
  for (const set of users.values()) { agents += set.size; most = Math.max(most, set.size); }
  return { pid: process.pid, epoch, uptime_s: Number(process.hrtime.bigint() - started) / 1e9,
    connections: io ? io.engine.clientsCount : 0, agents_live: agents, users_live: users.size,
    max_agents_per_session: most, ...totals, rss_bytes: process.memoryUsage.rss(), ...processCounts(),
    heap_used_bytes: process.memoryUsage().heapUsed };
}

function json(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
}

function readJson(req, res, then) {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => { size += c.length; if (size <= MAX_BODY_BYTES) chunks.push(c); });
  req.on('end', guard('http body', () => {
    if (size > MAX_BODY_BYTES) return json(res, 413, { error: 'body too large' });
    let body;
    try { body = JSON.parse(Buffer.concat(chunks)); } catch { return json(res, 400, { error: 'body is not valid JSON' }); }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) return json(res, 400, { error: 'body must be a JSON object' });
    then(body);
  }));
}

const validUser = (user) => typeof user === 'string' && user.length >= 1 && user.length <= 128;

function authToken(req, res) {
  readJson(req, res, (body) => {
    const ttl = body.ttl_s ?? opt.tokenTtlS;
    if (!validUser(body.user)) return json(res, 400, { error: 'user must be a non-empty string of at most 128 characters' });
    if (typeof ttl !== 'number' || !(ttl > 0 && ttl <= MAX_TOKEN_TTL_S)) {
      return json(res, 400, { error: `ttl_s must be a number in (0, ${MAX_TOKEN_TTL_S}]` });
    }
    json(res, 200, issue(body.user, ttl));
  });
}

function adminNotify(req, res) {
  const given = Buffer.from(req.headers.authorization || '');
  const want = Buffer.from(`Bearer ${adminToken}`);
  if (given.length !== want.length || !crypto.timingSafeEqual(given, want)) {
    req.resume();
    return json(res, 401, { error: 'Authorization: Bearer <admin token> is required' });
  }
  readJson(req, res, (body) => {
    if (!validUser(body.user)) return json(res, 400, { error: 'user must be a non-empty string of at most 128 characters' });
    if (!Number.isSafeInteger(body.id)) return json(res, 400, { error: 'id must be an integer' });
    if (body.data === null || typeof body.data !== 'object' || Array.isArray(body.data)) {
      return json(res, 400, { error: 'data must be a JSON object' });
    }
    push(body.user, body.id, body.data);
    json(res, 202, { queued: true });
  });
}

function onRequest(req, res) {
  const path = req.url.split('?')[0];
  const routes = { 'POST /auth/token': authToken, 'POST /admin/notify': adminNotify,
    'GET /stats': () => json(res, 200, stats()),
    'GET /healthz': () => json(res, draining ? 503 : 200, { status: draining ? 'draining' : 'ok' }),
    'GET /metrics': () => res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' }).end(metrics(stats())) };
  const route = routes[`${req.method} ${path}`];
  if (route) return route(req, res);
  req.resume();
  json(res, 404, { error: `not found: ${req.method} ${path}` });
}

// -- start and stop -------------------------------------------------------------------------------------------------
async function connectRedis() {
  const { createClient } = require('redis');
  let up = false; // until the first connect: fail at once rather than retry forever
  const client = createClient({ url: opt.redisUrl, socket: { connectTimeout: REDIS_START_TIMEOUT_MS - 1000,
    reconnectStrategy: (retries, cause) => (up ? Math.min(50 * 2 ** retries, 2000) : cause) } });
  let lastError = '';
  client.on('error', (err) => { if (up && err.message !== lastError) log('redis:', (lastError = err.message)); });
  client.on('ready', () => { if (lastError) log('redis: connected again'); lastError = ''; });
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${REDIS_START_TIMEOUT_MS} ms`)), REDIS_START_TIMEOUT_MS);
  });
  try {
    await Promise.race([client.connect(), timeout]);
    await Promise.race([client.ping(), timeout]);
  } finally { clearTimeout(timer); }
  up = true;
  return client;
}

async function shutdown(signal) {
  if (draining) return;
  draining = true;
  log(`${signal}: closing`);
  setTimeout(() => process.exit(0), SHUTDOWN_HARD_MS); // exit anyway
  for (const timer of streams) clearTimeout(timer);
  streams.clear();
  try {
    if (io) await io.close(); // sockets close with "server shutting down": recoverable; redis keeps the sessions
    if (redis) await redis.close(); // waits for the sessions' SETs already sent
  } catch (err) { log('error while closing:', err); }
  process.exit(0);
}

async function main() {
  if (opt.adapter === 'redis-streams') {
    try {
      redis = await connectRedis();
    } catch (err) {
      console.error(`redis-streams adapter: cannot connect to Redis at ${opt.redisUrl}: ${err.message || err}`);
      process.exit(1);
    }
  }
  const server = http.createServer(onRequest);
  io = new Server(server, {
    serveClient: false,
    pingInterval: opt.pingIntervalMs,
    pingTimeout: opt.pingTimeoutMs,
    ...(opt.recovery && { connectionStateRecovery: { maxDisconnectionDuration: opt.maxDisconnectionMs, skipMiddlewares: true } }),
    ...(redis && { adapter: require('@socket.io/redis-streams-adapter').createAdapter(redis, { maxLen: opt.streamMaxLen }) }),
  });
  io.use(authenticate);
  io.on('connection', guard('connection', onConnection));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  server.on('error', (err) => { console.error(`cannot listen on ${opt.host}:${opt.port}: ${err.message}`); process.exit(1); });
  server.listen(opt.port, opt.host, () => {
    const { address, port } = server.address();
    const host = address.includes(':') ? `[${address}]` : address;
    console.log(JSON.stringify({ event: 'listening', url: `http://${host}:${port}`,
      ws_url: `ws://${host}:${port}/socket.io/?EIO=4&transport=websocket`, pid: process.pid, admin_token: adminToken,
      epoch, adapter: opt.adapter, recovery: opt.recovery }));
    log(`listening on ${host}:${port} (adapter ${opt.adapter}, recovery ${opt.recovery ? 'on' : 'off'},` +
      ` push-mode ${opt.pushMode}, one-socket-per-user ${opt.oneSocketPerUser ? 'on' : 'off'})`);
  });
}

process.on('unhandledRejection', (err) => log('unhandled rejection:', err)); // e.g. an adapter's write while Redis is down
main().catch((err) => { console.error('cannot start:', err); process.exit(1); });
