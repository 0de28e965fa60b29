// HS256 JSON Web Tokens for connection tests, signed with node:crypto (RFC 7519, RFC 7515).
import { constants, createHmac, sign as cryptoSign } from 'node:crypto';

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

// Tokens signed with an asymmetric key (a node:crypto KeyObject): RS256/384/512, PS256,
// ES256/384 (JWS's r||s, 'ieee-p1363'), EdDSA. header adds to {alg, typ[, kid]}.
export function signAsym(claims, alg, privateKey, { kid = null, header = {} } = {}) {
    const head = { alg, typ: 'JWT', ...(kid ? { kid } : {}), ...header };
    const input = `${b64url(JSON.stringify(head))}.${b64url(JSON.stringify(claims))}`;
    const hash = { 256: 'sha256', 384: 'sha384', 512: 'sha512' }[alg.slice(2)] ?? null;
    let key = privateKey;
    if (alg.startsWith('PS')) key = { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 };
    if (alg.startsWith('ES')) key = { key: privateKey, dsaEncoding: 'ieee-p1363' };
    const sig = cryptoSign(alg === 'EdDSA' ? null : hash, Buffer.from(input), key);
    return `${input}.${b64url(sig)}`;
}
