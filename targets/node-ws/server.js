'use strict';
// A small agentws/1 backend on Node.js and the `ws` library (docs/PROTOCOL.md): the subset that
// FlappingUser and HeartbeatUser use. It exists to judge the leak verdict on a managed runtime
// (V8's heap grows in steps and keeps what it reserved): clean, or with --leak, which keeps
// ~64 KiB per connection forever. Usage: node server.js [--port 0] [--leak] ... (README.md).
const crypto = require('node:crypto');
const http = require('node:http');
const { metrics, processCounts } = require('../lib/metrics');
const { tokens } = require('../lib/jwt');
const { WebSocketServer } = require('ws');

const LEAK_BYTES_PER_CONNECTION = 64 * 1024;
const CLOSE_TIMEOUT_MS = 2000; // a server-side close waits this long for the client's close frame
const MAX_BODY_BYTES = 64 * 1024;
const MAX_TOKEN_TTL_S = 7 * 24 * 3600;

function options(argv) {
  const o = { port: 0, host: '127.0.0.1', leak: false, hbIntervalMs: 15000, idleTimeoutMs: 0,
    resumeWindowS: 120, tokenTtlS: 300, refreshGraceMs: 5000, maxFrameBytes: 64 * 1024 };
  const numbers = { '--port': 'port', '--hb-interval-ms': 'hbIntervalMs', '--idle-timeout-ms': 'idleTimeoutMs',
    '--resume-window-s': 'resumeWindowS', '--token-ttl-s': 'tokenTtlS', '--refresh-grace-ms': 'refreshGraceMs',
    '--max-frame-bytes': 'maxFrameBytes', '--parent-pid': 'parentPid' };
  for (let i = 0; i < argv.length; i++) {
    const [name, inline] = argv[i].split('=', 2);
    if (name === '--leak') { o.leak = true; continue; }
    const value = inline ?? argv[++i];
    if (name === '--host' && value) { o.host = value; continue; }
    if (!(name in numbers) || value === undefined || !(Number(value) >= 0)) {
      console.error(`usage: node server.js [--port N] [--host ADDR] [--leak] [--hb-interval-ms N] [--idle-timeout-ms N]` +
        ` [--resume-window-s S] [--token-ttl-s S] [--refresh-grace-ms N] [--max-frame-bytes N] [--parent-pid N]; bad: ${argv[i]}`);
      process.exit(2);
    }
    o[numbers[name]] = Number(value);
  }
  o.idleTimeoutMs = o.idleTimeoutMs || Math.round(1.5 * o.hbIntervalMs); // MQTT's 1.5 x keepalive
  return o;
}

const opt = options(process.argv.slice(2));
if (opt.parentPid) { // the harness that started it is gone: do not outlive it
  setInterval(() => { try { process.kill(opt.parentPid, 0); } catch { process.exit(0); } }, 1000).unref();
}
const epoch = crypto.randomBytes(4).toString('hex');
const started = process.hrtime.bigint();
const sessions = new Map(); // id -> {id, sub, agent: {id, turns}, conn, expiry}
const conns = new Set();
const leaked = []; // --leak: what every connection leaves behind, forever
const totals = { agents_created_total: 0, agents_destroyed_total: 0, zombies_reaped_total: 0, takeovers_total: 0,
  token_expired_closes_total: 0, refreshes_total: 0 };
let draining = false;

// -- tokens: JWT HS256 (sub, exp, iat, jti), shared with the other Node.js target (../lib/jwt.js) -----------
const { issue, verify } = tokens();

// -- sessions ------------------------------------------------------------------------------------
function newSession(sub) {
  const session = { id: `${epoch}.${crypto.randomBytes(8).toString('hex')}`, sub, conn: null, expiry: null,
    agent: { id: `a-${crypto.randomBytes(8).toString('hex')}`, turns: 0 } };
  sessions.set(session.id, session);
  totals.agents_created_total++;
  return session;
}

function destroy(session) {
  clearTimeout(session.expiry);
  if (sessions.delete(session.id)) totals.agents_destroyed_total++;
}

function detach(conn) {
  const session = conn.session;
  conn.session = null;
  if (!session || session.conn !== conn) return;
  session.conn = null; // kept for the resume window, then destroyed with its agent
  session.expiry = setTimeout(() => destroy(session), opt.resumeWindowS * 1000);
}

const summary = (agent) => ({ id: agent.id, turns: agent.turns,
  ctx_hash: crypto.createHash('sha256').update(`${agent.id}|${agent.turns}`).digest('hex').slice(0, 16) });

// -- one connection --------------------------------------------------------------------------------
function send(conn, frame) {
  if (!conn.closing) conn.ws.send(JSON.stringify(frame));
}

function close(conn, code, reason = '', frame = null) {
  if (conn.closing) return;
  if (frame) send(conn, frame);
  conn.closing = true;
  conn.ws.close(code, reason.slice(0, 120));
  setTimeout(() => conn.ws.terminate(), CLOSE_TIMEOUT_MS).unref(); // bounded, even if the client stopped reading
}

const refuse = (conn, code, message, closeCode) => close(conn, closeCode, message, { t: 'error', code, message });

function checkIdle(conn) {
  if (conn.closing) return;
  const due = conn.lastFrame + opt.idleTimeoutMs;
  if (Date.now() < due) { conn.idle = setTimeout(checkIdle, due - Date.now(), conn); return; }
  totals.zombies_reaped_total++;
  close(conn, 4001, 'heartbeat timeout');
}

function armExpiry(conn) {
  clearTimeout(conn.expiry);
  clearTimeout(conn.grace);
  conn.expiry = setTimeout(() => {
    send(conn, { t: 'refresh_required', grace_ms: opt.refreshGraceMs });
    conn.grace = setTimeout(() => {
      if (conn.closing) return;
      totals.token_expired_closes_total++;
      refuse(conn, 'token_expired', 'token expired and was not refreshed', 4002);
    }, opt.refreshGraceMs);
  }, Math.max(0, conn.tokenExp * 1000 - Date.now()));
}

function onHello(conn, f) {
  if (f.v !== 1) return refuse(conn, 'bad_version', 'hello.v must be 1', 4400);
  if (typeof f.token !== 'string' || !f.token) return refuse(conn, 'bad_field', 'hello.token must be a non-empty string', 4400);
  if (f.session !== undefined && (typeof f.session !== 'string' || !f.session || f.session.length > 128)) {
    return refuse(conn, 'bad_field', 'hello.session must be a non-empty string of at most 128 characters', 4400);
  }
  if (f.last_seq !== undefined && !(Number.isInteger(f.last_seq) && f.last_seq >= 0)) {
    return refuse(conn, 'bad_field', 'hello.last_seq must be an integer >= 0', 4400);
  }
  const claims = verify(f.token);
  if (claims.error === 'token_expired') return refuse(conn, 'token_expired', 'token expired', 4002);
  if (claims.error) return refuse(conn, 'unauthorized', 'token is invalid', 4401);
  let session = f.session === undefined ? null : sessions.get(f.session);
  let reason = null;
  if (f.session !== undefined && !session) {
    reason = f.session.split('.')[0] === epoch ? 'expired' : 'epoch';
  } else if (session && session.sub !== claims.sub) {
    return refuse(conn, 'forbidden', 'session belongs to another user', 4403);
  } else if (session && (f.last_seq || 0) > 0) { // nothing is ever sequenced here: head_seq stays 0
    if (!session.conn) destroy(session);
    session = null;
    reason = 'gap';
  }
  const resumed = session !== null;
  session = session || newSession(claims.sub);
  clearTimeout(session.expiry);
  const previous = session.conn;
  if (previous && previous !== conn) { // a newer hello takes the session over; the agent stays
    totals.takeovers_total++;
    previous.session = null;
    close(previous, 4409, 'session taken over by a newer connection');
  }
  Object.assign(conn, { session, sub: claims.sub, tokenExp: claims.exp });
  session.conn = conn;
  send(conn, { t: 'welcome', session: session.id, epoch, resumed, ...(reason && { reason }), agent: summary(session.agent),
    head_seq: 0, hb_interval_ms: opt.hbIntervalMs, idle_timeout_ms: opt.idleTimeoutMs, token_exp: claims.exp,
    resume_window_s: opt.resumeWindowS });
  if (resumed) send(conn, { t: 'replayed', through: 0 });
  armExpiry(conn);
}

function onRefresh(conn, f) {
  const claims = verify(f.token);
  if (claims.error || claims.sub !== conn.sub) {
    return refuse(conn, 'unauthorized', 'refresh token is invalid, expired or of another user', 4401);
  }
  conn.tokenExp = claims.exp;
  armExpiry(conn);
  totals.refreshes_total++;
  send(conn, { t: 'refreshed', id: f.id, token_exp: claims.exp });
}

const HANDLERS = {
  hello: onHello,
  hb: (conn, f) => send(conn, { t: 'hb_ack', id: f.id }),
  ack: () => {},
  refresh: onRefresh,
  history: (conn, f) => send(conn, { t: 'history', id: f.id, turns: [] }),
  bye: (conn) => { const s = conn.session; conn.session = null; destroy(s); close(conn, 1000, 'bye'); },
};

function onMessage(conn, data, isBinary) {
  let f;
  try { f = isBinary ? null : JSON.parse(data); } catch { f = null; }
  if (f === null || typeof f !== 'object' || Array.isArray(f)) return refuse(conn, 'bad_json', 'frame is not a JSON object', 4400);
  const handler = Object.hasOwn(HANDLERS, f.t) ? HANDLERS[f.t] : null;
  if (!handler) return refuse(conn, 'unknown_type', `t must be one of ${Object.keys(HANDLERS).join(', ')}`, 4400);
  conn.lastFrame = Date.now();
  if (!conn.session && f.t !== 'hello') return refuse(conn, 'hello_required', 'the first frame must be hello', 4400);
  if (conn.session && f.t === 'hello') return refuse(conn, 'duplicate_hello', 'hello was already sent on this socket', 4400);
  if (['hb', 'refresh', 'history'].includes(f.t) && !['number', 'string'].includes(typeof f.id)) {
    return refuse(conn, 'bad_field', `${f.t}.id must be an integer or a string`, 4400);
  }
  handler(conn, f);
}

const wss = new WebSocketServer({ noServer: true, maxPayload: opt.maxFrameBytes });
wss.on('connection', (ws) => {
  const conn = { ws, session: null, sub: null, tokenExp: 0, lastFrame: Date.now(), closing: false,
    idle: null, expiry: null, grace: null };
  conns.add(conn);
  if (opt.leak) leaked.push(Buffer.alloc(LEAK_BYTES_PER_CONNECTION, 0x4c)); // written, so resident
  conn.idle = setTimeout(checkIdle, opt.idleTimeoutMs, conn);
  ws.on('message', (data, isBinary) => onMessage(conn, data, isBinary));
  ws.on('error', () => {}); // a bad frame (1009, 1002): ws closes the socket itself
  ws.on('close', () => {
    conn.closing = true;
    for (const timer of [conn.idle, conn.expiry, conn.grace]) clearTimeout(timer);
    detach(conn);
    conns.delete(conn);
  });
});

// -- HTTP: /auth/token, /stats, /metrics, /healthz, and the /ws upgrade ----------------------------------
function stats() {
  const attached = [...sessions.values()].filter((s) => s.conn).length;
  return { pid: process.pid, epoch, uptime_s: Number(process.hrtime.bigint() - started) / 1e9,
    connections: conns.size, sessions_attached: attached, sessions_detached: sessions.size - attached,
    agents_live: sessions.size, max_agents_per_session: sessions.size ? 1 : 0, duplicate_agents_total: 0,
    outbox_frames: 0, outbox_bytes: 0, rate_limited_total: 0, ...totals, rss_bytes: process.memoryUsage.rss(),
    ...processCounts(), leaked_bytes: leaked.length * LEAK_BYTES_PER_CONNECTION };
}

function json(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
}

function authToken(req, res) {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => { size += c.length; if (size <= MAX_BODY_BYTES) chunks.push(c); });
  req.on('end', () => {
    if (size > MAX_BODY_BYTES) return json(res, 413, { error: 'body too large' });
    let body;
    try { body = JSON.parse(Buffer.concat(chunks)); } catch { return json(res, 400, { error: 'body is not valid JSON' }); }
    const user = body?.user;
    const ttl = body?.ttl_s ?? opt.tokenTtlS;
    if (typeof user !== 'string' || !user || user.length > 128) {
      return json(res, 400, { error: 'user must be a non-empty string of at most 128 characters' });
    }
    if (typeof ttl !== 'number' || !(ttl > 0 && ttl <= MAX_TOKEN_TTL_S)) {
      return json(res, 400, { error: `ttl_s must be a number in (0, ${MAX_TOKEN_TTL_S}]` });
    }
    json(res, 200, issue(user, ttl));
  });
}

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (req.method === 'POST' && path === '/auth/token') return authToken(req, res);
  if (req.method !== 'GET') return json(res, 405, { error: 'method not allowed' });
  if (path === '/stats') return json(res, 200, stats());
  if (path === '/healthz') return json(res, draining ? 503 : 200, { status: draining ? 'draining' : 'ok' });
  if (path === '/metrics') return res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' }).end(metrics(stats()));
  json(res, 404, { error: 'not found' });
});

server.on('upgrade', (req, socket, head) => {
  const status = req.url.split('?')[0] !== '/ws' ? '404 Not Found' : draining ? '503 Service Unavailable' : null;
  if (status) return socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});

function shutdown() {
  if (draining) return;
  draining = true;
  for (const conn of conns) close(conn, 1012, 'restarting', { t: 'goaway', retry_after_ms: 1000 });
  server.close();
  const deadline = Date.now() + 3000; // at most 3 s for clients to answer, then exit 0
  const poll = setInterval(() => {
    if (conns.size === 0 || Date.now() > deadline) { clearInterval(poll); process.exit(0); }
  }, 50);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.listen(opt.port, opt.host, () => {
  const { address, port } = server.address();
  const host = address.includes(':') ? `[${address}]` : address;
  console.log(JSON.stringify({ event: 'listening', url: `http://${host}:${port}`, ws_url: `ws://${host}:${port}/ws`,
    pid: process.pid, epoch, leak: opt.leak, runtime: `node ${process.version}` }));
});
