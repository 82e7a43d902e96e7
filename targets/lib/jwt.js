'use strict';
// JWT HS256 tokens (sub, iat, exp, jti) for the Node.js targets, like server_stub/tokens.py: node:crypto only.
// Both targets sign with AGENTWS_JWT_SECRET (random when unset), the secret the harness hands its backends.
const crypto = require('node:crypto');

const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');

/** A signer: {issue(sub, ttlS) -> {token, exp}, verify(token) -> claims | {error}}. */
function tokens(secret = process.env.AGENTWS_JWT_SECRET || crypto.randomBytes(32).toString('hex')) {
  const sign = (text) => crypto.createHmac('sha256', secret).update(text).digest();

  function issue(sub, ttlS) {
    const now = Date.now() / 1000;
    const exp = Math.ceil(now + ttlS);
    const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, iat: Math.floor(now), exp,
      jti: crypto.randomBytes(8).toString('hex') })}`;
    return { token: `${body}.${sign(body).toString('base64url')}`, exp };
  }

  /** The token's claims, or a refusal: {error: 'unauthorized' | 'token_expired'}. */
  function verify(token) {
    const parts = typeof token === 'string' ? token.split('.') : [];
    if (parts.length !== 3) return { error: 'unauthorized' };
    const given = Buffer.from(parts[2], 'base64url');
    const want = sign(`${parts[0]}.${parts[1]}`);
    if (given.length !== want.length || !crypto.timingSafeEqual(given, want)) return { error: 'unauthorized' };
    let header, claims;
    try {
      header = JSON.parse(Buffer.from(parts[0], 'base64url'));
      claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
    } catch { return { error: 'unauthorized' }; }
    if (header?.alg !== 'HS256' || typeof claims?.sub !== 'string' || !claims.sub || typeof claims.exp !== 'number') {
      return { error: 'unauthorized' };
    }
    return claims.exp <= Date.now() / 1000 ? { error: 'token_expired' } : claims;
  }

  return { issue, verify };
}

module.exports = { tokens };
