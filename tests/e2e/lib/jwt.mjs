// HS256 JSON Web Tokens for connection tests, signed with node:crypto (RFC 7519, RFC 7515).
import { createHmac } from 'node:crypto';

function b64url(buf) {
    return Buffer.from(buf).toString('base64url');
}

// sign({sub:'u1', exp: ...}, secret) -> 'header.payload.signature'
export function sign(claims, secret, header = { alg: 'HS256', typ: 'JWT' }) {
    const head = b64url(JSON.stringify(header));
    const body = b64url(JSON.stringify(claims));
    const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest();
    return `${head}.${body}.${b64url(sig)}`;
}

export function nowSeconds() {
    return Math.floor(Date.now() / 1000);
}

// A token for user `sub` valid for ttl seconds (no exp claim when ttl is null).
export function userToken(sub, secret, { ttl = 3600, extra = {} } = {}) {
    const claims = { sub, ...extra };
    if (ttl !== null) claims.exp = nowSeconds() + ttl;
    return sign(claims, secret);
}
