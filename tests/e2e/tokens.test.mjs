// Subscription tokens for private namespaces, connection tokens with exp and their refresh, and
// the "channels" claim (server-side subscriptions), through centrifuge-js and raw ws; RSA, ECDSA
// and JWKS keys (a JWKS served by the test, rotated, its server gone), the URL query's token, and
// several API keys at once.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';
import { test } from 'node:test';
import { makeClient, once } from './lib/centrifuge.mjs';
import { httpRequest, runHerald, sanitizerReport, start, withHerald } from './lib/herald.mjs';
import { nowSeconds, sign, signAsym } from './lib/jwt.mjs';
import { startRedis } from './lib/redis.mjs';
import { ProtoClient } from './lib/proto.mjs';
import { apiResult, sleep, subToken, subscribeOutcome, sharedHerald } from './lib/proxy.mjs';

const T = { timeout: 20000 };

const CONFIG = {
    namespaces: {
        '': {},
        priv: { private: true },
        news: {},
    },
};

const run = sharedHerald({ config: CONFIG });

async function rawClient(h, user) {
    const c = await ProtoClient.open(h.wsUrl);
    const r = await c.connect(h.token(user));
    assert.ok(r.connect, `connect ${user}: ${JSON.stringify(r)}`);
    return c;
}

async function closedWithin(c, ms) {
    return Promise.race([c.closed, sleep(ms).then(() => null)]);
}

test('private namespace: no token -> 103; a valid token subscribes and delivers', T, async () => {
    await run(async (h) => {
        const raw = await rawClient(h, 'ann');
        const m = makeClient(h, { token: h.token('ann') });
        try {
            const r = await raw.command('subscribe', { channel: 'priv:a' });
            assert.equal(r.error?.code, 103, JSON.stringify(r));
            const ok = await raw.command('subscribe', { channel: 'priv:a', token: subToken(h, 'ann', 'priv:a') });
            assert.ok(ok.subscribe, JSON.stringify(ok));
            // A token where none is needed is accepted (or ignored).
            const pub = await raw.command('subscribe', { channel: 'news:x', token: subToken(h, 'ann', 'news:x') });
            assert.ok(pub.subscribe, JSON.stringify(pub));

            m.client.connect();
            await once(m.client, 'connected');
            const none = m.client.newSubscription('priv:b');
            const o1 = subscribeOutcome(none);
            none.subscribe();
            assert.equal((await o1).unsubscribed?.code, 103);
            const withTok = m.client.newSubscription('priv:c', { token: subToken(h, 'ann', 'priv:c') });
            const o2 = subscribeOutcome(withTok);
            withTok.subscribe();
            assert.ok((await o2).subscribed);
            const got = once(withTok, 'publication');
            await apiResult(h, 'publish', { channel: 'priv:c', data: { secret: 1 } });
            assert.deepEqual((await got).data, { secret: 1 });
        } finally {
            raw.close();
            m.client.disconnect();
        }
    });
});

test('a subscription token for another user, another channel or with a bad signature -> close 3500', T,
    async () => {
        await run(async (h) => {
            const cases = {
                'other user': subToken(h, 'bob', 'priv:a'),
                'other channel': subToken(h, 'ann', 'priv:zzz'),
                'bad signature': subToken(h, 'ann', 'priv:a', { secret: 'not-the-secret' }),
                'not a JWT': 'garbage.token',
                'alg none': `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${
                    Buffer.from(JSON.stringify({ sub: 'ann', channel: 'priv:a' })).toString('base64url')}.`,
            };
            for (const [what, token] of Object.entries(cases)) {
                const c = await rawClient(h, 'ann');
                try {
                    c.send({ id: 50, subscribe: { channel: 'priv:a', token } });
                    const info = await closedWithin(c, 3000);
                    assert.ok(info, `${what}: connection not closed; got ${c.frames.map((f) => f.text).join(' | ')}`);
                    assert.equal(info.code, 3500, `${what}: close code`);
                } finally {
                    c.close();
                }
            }
        });
    });

test('an expired subscription token -> 109; centrifuge-js then gets a fresh one with getToken', T,
    async () => {
        await run(async (h) => {
            const raw = await rawClient(h, 'cat');
            const m = makeClient(h, { token: h.token('cat') });
            try {
                const old = subToken(h, 'cat', 'priv:e', { ttl: -10 });
                const r = await raw.command('subscribe', { channel: 'priv:e', token: old });
                assert.equal(r.error?.code, 109, JSON.stringify(r));
                assert.equal(raw.closeInfo, null, 'an expired token is no reason to disconnect');

                const calls = [];
                m.client.connect();
                await once(m.client, 'connected');
                const sub = m.client.newSubscription('priv:e', {
                    token: old,
                    getToken: async (ctx) => {
                        calls.push(ctx.channel);
                        return subToken(h, 'cat', 'priv:e');
                    },
                });
                const errors = [];
                sub.on('error', (ctx) => errors.push(ctx.error?.code));
                const sd = once(sub, 'subscribed');
                sub.subscribe();
                await sd;
                assert.deepEqual(errors, [109], 'the first subscribe was answered 109');
                assert.deepEqual(calls, ['priv:e']);
            } finally {
                raw.close();
                m.client.disconnect();
            }
        });
    });

test('connect reply of a token with exp carries expires and ttl; no exp -> no expires', T, async () => {
    await run(async (h) => {
        const a = await ProtoClient.open(h.wsUrl);
        const b = await ProtoClient.open(h.wsUrl);
        try {
            const ra = await a.connect(h.token('dan', { ttl: 100 }));
            assert.equal(ra.connect?.expires, true, JSON.stringify(ra));
            assert.ok(ra.connect.ttl > 95 && ra.connect.ttl <= 100, `ttl ${ra.connect.ttl}`);
            const rb = await b.connect(h.token('dan', { ttl: null }));
            assert.ok(rb.connect, JSON.stringify(rb));
            assert.ok(!rb.connect.expires, `no exp claim, yet ${JSON.stringify(rb)}`);
            // refresh with a new token renews the connection.
            const rr = await a.command('refresh', { token: h.token('dan', { ttl: 200 }) });
            assert.ok(rr.refresh, JSON.stringify(rr));
            assert.equal(rr.refresh.expires, true);
            assert.ok(rr.refresh.ttl > 195 && rr.refresh.ttl <= 200, JSON.stringify(rr));
            // A refresh token of another user is refused by disconnecting.
            a.send({ id: 90, refresh: { token: h.token('eve') } });
            const info = await closedWithin(a, 3000);
            assert.ok(info, `refresh with another user's token: ${a.frames.map((f) => f.text).join(' | ')}`);
            assert.equal(info.code, 3500);
        } finally {
            a.close();
            b.close();
        }
    });
});

test('raw sub_refresh renews a subscription token; a token for another channel is refused', T,
    async () => {
        await run(async (h) => {
            const c = await rawClient(h, 'fox');
            try {
                const r = await c.command('subscribe',
                    { channel: 'priv:r', token: subToken(h, 'fox', 'priv:r', { ttl: 60 }) });
                assert.ok(r.subscribe, JSON.stringify(r));
                assert.equal(r.subscribe.expires, true, `subscribe reply of a token with exp: ${JSON.stringify(r)}`);
                assert.ok(r.subscribe.ttl > 55 && r.subscribe.ttl <= 60, JSON.stringify(r));
                const rr = await c.command('sub_refresh',
                    { channel: 'priv:r', token: subToken(h, 'fox', 'priv:r', { ttl: 120 }) });
                assert.ok(rr.sub_refresh, JSON.stringify(rr));
                assert.equal(rr.sub_refresh.expires, true);
                assert.ok(rr.sub_refresh.ttl > 115 && rr.sub_refresh.ttl <= 120, JSON.stringify(rr));
                c.send({ id: 77, sub_refresh: { channel: 'priv:r', token: subToken(h, 'fox', 'priv:other') } });
                const info = await closedWithin(c, 3000);
                assert.ok(info, `sub_refresh with a token for another channel: ${c.frames.map((f) => f.text).join(' | ')}`);
                assert.equal(info.code, 3500);
            } finally {
                c.close();
            }
        });
    });

test('short-lived connection and subscription tokens are renewed by getToken across expiry', T,
    async () => {
        await run(async (h) => {
            const connCalls = [];
            const subCalls = [];
            const m = makeClient(h, {
                token: h.token('gil', { ttl: 3 }),
                getToken: async () => {
                    connCalls.push(Date.now());
                    return h.token('gil', { ttl: 3 });
                },
            });
            try {
                const connected = once(m.client, 'connected');
                m.client.connect();
                await connected;
                const sub = m.client.newSubscription('priv:live', {
                    token: subToken(h, 'gil', 'priv:live', { ttl: 3 }),
                    getToken: async () => {
                        subCalls.push(Date.now());
                        return subToken(h, 'gil', 'priv:live', { ttl: 3 });
                    },
                });
                const sd = once(sub, 'subscribed');
                sub.subscribe();
                await sd;
                const seen = [];
                sub.on('publication', (ctx) => seen.push(ctx.data.n));
                // Past the first expiry, and the second one.
                for (let i = 1; i <= 7; i++) {
                    await sleep(800);
                    await apiResult(h, 'publish', { channel: 'priv:live', data: { n: i } });
                }
                await sleep(200);
                assert.ok(connCalls.length >= 1, 'the connection token was refreshed');
                assert.ok(subCalls.length >= 1, 'the subscription token was refreshed');
                assert.equal(m.stats.opened, 1, 'one WebSocket for the whole time: no disconnect');
                assert.equal(m.client.state, 'connected');
                assert.equal(sub.state, 'subscribed');
                assert.deepEqual(seen, [1, 2, 3, 4, 5, 6, 7]);
                const sent = m.stats.sent.join('\n');
                assert.match(sent, /"refresh"/, 'a refresh command went out');
                assert.match(sent, /"sub_refresh"/, 'a sub_refresh command went out');
            } finally {
                m.client.disconnect();
            }
        });
    });

test('an expired connection token: centrifuge-js is answered 109 and connects with getToken', T,
    async () => {
        await run(async (h) => {
            const raw = await ProtoClient.open(h.wsUrl);
            let calls = 0;
            const m = makeClient(h, {
                token: h.token('hal', { ttl: -30 }),
                getToken: async () => { calls++; return h.token('hal'); },
            });
            try {
                const r = await raw.connect(h.token('hal', { ttl: -30 }));
                assert.equal(r.error?.code, 109, JSON.stringify(r));
                const connected = once(m.client, 'connected');
                m.client.connect();
                await connected;
                assert.equal(calls, 1);
            } finally {
                raw.close();
                m.client.disconnect();
            }
        });
    });

test('the "channels" claim subscribes server-side: subs in the connect reply, client publications', T,
    async () => {
        await run(async (h) => {
            const token = h.token('ivy', { extra: { channels: ['news:a', 'plain'] } });
            const raw = await ProtoClient.open(h.wsUrl);
            const m = makeClient(h, { token });
            try {
                const r = await raw.connect(token);
                assert.ok(r.connect, JSON.stringify(r));
                assert.deepEqual(Object.keys(r.connect.subs || {}).sort(), ['news:a', 'plain']);

                const subscribed = [];
                m.client.on('subscribed', (ctx) => subscribed.push(ctx.channel));
                const pubs = [];
                m.client.on('publication', (ctx) => pubs.push([ctx.channel, ctx.data]));
                const connected = once(m.client, 'connected');
                m.client.connect();
                await connected;
                assert.deepEqual(subscribed.sort(), ['news:a', 'plain']);
                await apiResult(h, 'publish', { channel: 'news:a', data: { x: 1 } });
                await apiResult(h, 'publish', { channel: 'plain', data: { x: 2 } });
                await raw.waitPublications(2);
                for (let i = 0; i < 50 && pubs.length < 2; i++) await sleep(20);
                assert.deepEqual(pubs, [['news:a', { x: 1 }], ['plain', { x: 2 }]]);
                // A client-side subscribe to the same channel is "already subscribed" (105).
                const dup = await raw.command('subscribe', { channel: 'news:a' });
                assert.equal(dup.error?.code, 105, JSON.stringify(dup));
            } finally {
                raw.close();
                m.client.disconnect();
            }
        });
    });

test('a token signed with another secret or without sub/exp shape is refused at connect', T,
    async () => {
        await run(async (h) => {
            const bad = sign({ sub: 'kim', exp: nowSeconds() + 60 }, 'wrong-secret');
            const c = await ProtoClient.open(h.wsUrl);
            try {
                c.send({ id: 1, connect: { token: bad } });
                const info = await closedWithin(c, 3000);
                assert.ok(info, `not closed: ${c.frames.map((f) => f.text).join(' | ')}`);
                assert.equal(info.code, 3500);
            } finally {
                c.close();
            }
        });
    });

// ---- RSA, ECDSA and JWKS keys ----

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsaOther = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ed1 = generateKeyPairSync('ed25519');
const ed2 = generateKeyPairSync('ed25519');
const pem = (pair) => pair.publicKey.export({ type: 'spki', format: 'pem' });
const jwk = (pair, kid, alg) => ({ ...pair.publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' });
const claims = (sub, extra = {}) => ({ sub, exp: nowSeconds() + 600, ...extra });

// 'connected' or 'closed <code>' for a connect with token through raw ws.
async function rawConnect(h, token, timeout = 12000) {
    const c = await ProtoClient.open(h.wsUrl);
    try {
        c.send({ id: 1, connect: { token } });
        const r = await Promise.race([
            c.reply(1, timeout).then((m) => (m.connect ? 'connected' : `error ${m.error?.code}`), () => null),
            c.closed.then((info) => `closed ${info.code}`),
        ]);
        return r ?? `closed ${c.closeInfo?.code}`;
    } finally {
        c.close();
    }
}

// centrifuge-js connects with token; resolves the client id, always disconnects.
async function officialConnect(h, token) {
    const m = makeClient(h, { token });
    try {
        const connected = once(m.client, 'connected', 12000);
        m.client.connect();
        return (await connected).client;
    } finally {
        m.client.disconnect();
    }
}

test('RS256, PS256 and ES256 tokens (PEM keys) connect the official client; key confusion, aud, iss, exp, nbf, iat', T,
    async () => {
        await withHerald({
            config: {
                token_rsa_public_key: pem(rsa), token_ecdsa_public_key: pem(ec), token_audience: 'herald',
                token_issuer: 'https://auth.example',
            },
        }, async (h) => {
            const aud = { aud: ['web', 'herald'], iss: 'https://auth.example' };
            assert.ok(await officialConnect(h, signAsym(claims('rs', aud), 'RS256', rsa.privateKey)));
            assert.ok(await officialConnect(h, signAsym(claims('es', aud), 'ES256', ec.privateKey)));
            const got = {
                ps256: await rawConnect(h, signAsym(claims('ps', aud), 'PS256', rsa.privateKey)),
                hs256: await rawConnect(h, sign(claims('hs', aud), h.secret)),
                otherRsa: await rawConnect(h, signAsym(claims('x', aud), 'RS256', rsaOther.privateKey)),
                // HS256 with the RSA public key's PEM as the HMAC secret: checked with the
                // secret (it has one), so it does not verify.
                hsWithRsaPem: await rawConnect(h, sign(claims('x', aud), pem(rsa))),
                esAsEs384: await rawConnect(h, signAsym(claims('x', aud), 'ES384',
                    generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey)),
                noAud: await rawConnect(h, signAsym(claims('x', { iss: aud.iss }), 'RS256', rsa.privateKey)),
                otherAud: await rawConnect(h, signAsym(claims('x', { ...aud, aud: 'web' }), 'RS256', rsa.privateKey)),
                otherIss: await rawConnect(h, signAsym(claims('x', { ...aud, iss: 'https://evil.example' }), 'RS256',
                    rsa.privateKey)),
                noIss: await rawConnect(h, signAsym(claims('x', { aud: 'herald' }), 'ES256', ec.privateKey)),
                expired: await rawConnect(h, signAsym(claims('x', { ...aud, exp: nowSeconds() - 30 }), 'ES256',
                    ec.privateKey)),
                notYet: await rawConnect(h, signAsym(claims('x', { ...aud, nbf: nowSeconds() + 600 }), 'RS256',
                    rsa.privateKey)),
                issuedLater: await rawConnect(h, signAsym(claims('x', { ...aud, iat: nowSeconds() + 600 }), 'RS256',
                    rsa.privateKey)),
            };
            assert.deepEqual(got, {
                ps256: 'connected',
                hs256: 'connected',
                otherRsa: 'closed 3500',
                hsWithRsaPem: 'closed 3500',
                esAsEs384: 'closed 3500',
                noAud: 'closed 3500',
                otherAud: 'closed 3500',
                otherIss: 'closed 3500',
                noIss: 'closed 3500',
                expired: 'error 109',
                notYet: 'closed 3500',
                issuedLater: 'closed 3500',
            });
        });
        // Only the RSA key: HS256 signed with its PEM has no key to verify with.
        await withHerald({ secret: null, config: { token_rsa_public_key: pem(rsa) } }, async (h) => {
            assert.equal(await rawConnect(h, sign(claims('x'), pem(rsa))), 'closed 3500');
            assert.equal(await rawConnect(h, signAsym(claims('x'), 'ES256', ec.privateKey)), 'closed 3500');
            assert.equal(await rawConnect(h, signAsym(claims('x'), 'RS256', rsa.privateKey)), 'connected');
        });
    });

test('a PEM key that does not parse, or of the wrong type, stops herald at start naming the key', T,
    async () => {
        const bad = await runHerald(['--listen', '127.0.0.1:1', '--token_rsa_public_key', 'garbage']);
        assert.notEqual(bad.code, 0);
        assert.match(bad.stderr, /token_rsa_public_key/);
        const wrong = await runHerald(['--listen', '127.0.0.1:1', '--token_ecdsa_public_key', pem(rsa)]);
        assert.notEqual(wrong.code, 0);
        assert.match(wrong.stderr, /token_ecdsa_public_key/);
    });

// A JWKS over HTTP on a free port of 127.0.0.1, served from `keys`; `down` answers 503.
async function jwksServer(keys) {
    const state = { keys, requests: 0, down: false, huge: false, hold: false, held: [] };
    const server = http.createServer((req, res) => {
        state.requests++;
        if (state.hold) { // answered later by release(), with the keys of now
            state.held.push({ res, body: JSON.stringify({ keys: state.keys }) });
            return;
        }
        if (state.down) {
            res.writeHead(503).end('down');
            return;
        }
        if (state.huge) { // a body over herald's 1 MiB bound
            res.writeHead(200, { 'Content-Type': 'application/json' })
                .end(JSON.stringify({ keys: state.keys, pad: 'x'.repeat(2 * 1024 * 1024) }));
            return;
        }
        res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ keys: state.keys }));
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    state.url = `http://127.0.0.1:${server.address().port}/.well-known/jwks.json`;
    state.release = () => {
        for (const { res, body } of state.held.splice(0)) res.writeHead(200, { 'Content-Type': 'application/json' }).end(body);
    };
    state.close = () => { state.release(); return new Promise((resolve) => server.close(resolve)); };
    return state;
}

async function until(cond, timeout, what) {
    const deadline = Date.now() + timeout;
    while (!cond()) {
        if (Date.now() > deadline) throw new Error(`timeout: ${what}`);
        await sleep(50);
    }
}

test('JWKS served by the test: EdDSA and RSA keys by kid; an unknown kid refetches and finds a rotated key; '
    + 'a JWKS server that fails keeps the cached keys', { timeout: 60000 }, async () => {
    const jwks = await jwksServer([jwk(ed1, 'ed-1', 'EdDSA'), jwk(rsa, 'rsa-1', 'RS256')]);
    try {
        await withHerald({ config: { token_jwks_url: jwks.url, namespaces: { '': {}, priv: { private: true } } } }, async (h) => {
            await until(() => jwks.requests >= 1, 5000, 'the first JWKS fetch');
            assert.ok(await officialConnect(h, signAsym(claims('ed'), 'EdDSA', ed1.privateKey, { kid: 'ed-1' })));
            assert.ok(await officialConnect(h, signAsym(claims('rs'), 'RS256', rsa.privateKey, { kid: 'rsa-1' })));
            // The JWK says RS256: PS256 with the same key is refused, as is a kid's key misused.
            assert.equal(await rawConnect(h, signAsym(claims('x'), 'PS256', rsa.privateKey, { kid: 'rsa-1' })),
                'closed 3500');
            assert.equal(await rawConnect(h, signAsym(claims('x'), 'EdDSA', ed2.privateKey, { kid: 'ed-1' })),
                'closed 3500');
            const before = jwks.requests;

            // Rotation: the issuer adds ed-2 and signs with it at once; the connect waits for
            // the refetch its kid triggers (paced: at most one per 5 s) and succeeds.
            jwks.keys = [...jwks.keys, jwk(ed2, 'ed-2', 'EdDSA')];
            const t0 = Date.now();
            assert.ok(await officialConnect(h, signAsym(claims('ed2'), 'EdDSA', ed2.privateKey, { kid: 'ed-2' })));
            assert.ok(jwks.requests > before, 'the unknown kid caused a fetch');
            assert.ok(Date.now() - t0 < 8000, `waited ${Date.now() - t0} ms`);

            // A kid nobody publishes: refused (3500) after the refetch.
            const n = jwks.requests;
            assert.equal(await rawConnect(h, signAsym(claims('x'), 'EdDSA', ed1.privateKey, { kid: 'nope' })),
                'closed 3500');
            assert.equal(jwks.requests, n + 1, 'one fetch for the unknown kid');

            // A connect and a subscribe in one message, both under kids published since the
            // last fetch: the subscribe waits behind the connect, both for the same refetch.
            jwks.keys = [...jwks.keys, jwk(ec, 'ec-3', 'ES256'), jwk(ed1, 'ed-3', 'EdDSA')];
            const c = await ProtoClient.open(h.wsUrl);
            try {
                const ct = signAsym(claims('sub3'), 'EdDSA', ed1.privateKey, { kid: 'ed-3' });
                const st = signAsym(claims('sub3', { channel: 'priv:x' }), 'ES256', ec.privateKey, { kid: 'ec-3' });
                const n3 = jwks.requests;
                c.send(`${JSON.stringify({ id: 1, connect: { token: ct } })}\n${
                    JSON.stringify({ id: 2, subscribe: { channel: 'priv:x', token: st } })}`);
                const r = await c.reply(1, 12000);
                assert.ok(r.connect, JSON.stringify(r));
                const sr = await c.reply(2, 3000);
                assert.ok(sr.subscribe, JSON.stringify(sr));
                assert.equal(jwks.requests, n3 + 1, 'one fetch for both');
            } finally {
                c.close();
            }
            jwks.keys = jwks.keys.filter((k) => k.kid !== 'ec-3' && k.kid !== 'ed-3');

            // The JWKS server fails (a body over 1 MiB, then 503): the keys fetched before stay.
            jwks.huge = true;
            assert.equal(await rawConnect(h, signAsym(claims('x'), 'EdDSA', ed1.privateKey, { kid: 'nope-1' })),
                'closed 3500');
            await until(() => /token_jwks_url: body over 1048576 bytes; 5 cached keys kept/.test(h.stderr()), 3000,
                'the oversized body refused');
            jwks.huge = false;
            jwks.down = true;
            assert.equal(await rawConnect(h, signAsym(claims('x'), 'EdDSA', ed1.privateKey, { kid: 'nope-2' })),
                'closed 3500');
            await until(() => /token_jwks_url: HTTP 503; 5 cached keys kept/.test(h.stderr()), 3000,
                'the failed fetch logged');
            await jwks.close();
            assert.equal(await rawConnect(h, signAsym(claims('ed'), 'EdDSA', ed1.privateKey, { kid: 'ed-1' })),
                'connected');
            assert.equal(await rawConnect(h, signAsym(claims('ed2'), 'EdDSA', ed2.privateKey, { kid: 'ed-2' })),
                'connected');
            // HS256 tokens without a kid still go to the secret.
            assert.equal(await rawConnect(h, h.token('plain')), 'connected');
        });
    } finally {
        await jwks.close().catch(() => {});
    }
});

test('a key rotated while a JWKS fetch is under way: a token of the new kid waits for the next fetch, not refused', T, async () => {
    const jwks = await jwksServer([jwk(ed1, 'ed-1', 'EdDSA')]);
    try {
        await withHerald({ config: { token_jwks_url: jwks.url } }, async (h) => {
            await until(() => jwks.requests >= 1, 5000, 'the first JWKS fetch');
            assert.equal(await rawConnect(h, signAsym(claims('a'), 'EdDSA', ed1.privateKey, { kid: 'ed-1' })), 'connected');
            // A token under a kid not published yet asks for a fetch; the JWKS server takes
            // the request with the old keys and holds its answer.
            jwks.hold = true;
            const n = jwks.requests;
            const early = rawConnect(h, signAsym(claims('early'), 'EdDSA', ed2.privateKey, { kid: 'ed-2' }));
            await until(() => jwks.requests === n + 1, 8000, 'the fetch for ed-2');
            // Meanwhile the key is published, and a client comes with a token under it.
            jwks.hold = false;
            jwks.keys = [...jwks.keys, jwk(ed2, 'ed-2', 'EdDSA')];
            const late = rawConnect(h, signAsym(claims('late'), 'EdDSA', ed2.privateKey, { kid: 'ed-2' }));
            await sleep(300);
            jwks.release(); // the old document: no ed-2 in it
            // The first asked before the key existed: refused, as the document it waited for
            // says. The second came while that fetch was under way: the next one finds its key.
            assert.equal(await early, 'closed 3500');
            assert.equal(await late, 'connected');
            assert.equal(jwks.requests, n + 2, 'one more fetch, for the token that came during the first');
        });
    } finally {
        await jwks.close().catch(() => {});
    }
});

test('a connection token in the URL query: refused at the upgrade unless allow_query_token', T, async () => {
    const upgrade = (h, token) => ProtoClient.open(`${h.wsUrl}?token=${encodeURIComponent(token)}`)
        .then((c) => c, (err) => err);
    await withHerald({}, async (h) => {
        const token = h.token('q1');
        const r = await upgrade(h, token);
        assert.ok(r instanceof Error && /HTTP 400/.test(r.message), `upgrade with ?token=: ${r}`);
        const plain = await httpRequest(h.port, 'GET', `/connection/websocket?token=${token}`, {
            headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13',
                'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' },
        });
        assert.equal(plain.status, 400);
        assert.match(plain.text, /allow_query_token/);
        assert.ok(!h.stderr().includes(token), 'the token is not logged');
    });
    await withHerald({ args: ['--allow_query_token', 'true'] }, async (h) => {
        const token = h.token('q2');
        const c = await upgrade(h, token);
        assert.ok(!(c instanceof Error), `upgrade: ${c}`);
        try {
            const r = await c.command('connect', {});
            assert.ok(r.connect, JSON.stringify(r));
            // The connect command's own token, when it has one, counts.
            const c2 = await upgrade(h, token);
            const r2 = await c2.command('connect', { token: h.token('q3') });
            assert.ok(r2.connect, JSON.stringify(r2));
            c2.close();
            const bad = await upgrade(h, sign(claims('x'), 'wrong'));
            bad.send({ id: 1, connect: {} });
            assert.equal((await bad.closed).code, 3500);
        } finally {
            c.close();
        }
        assert.ok(!h.stderr().includes(token), 'the token is not logged');
    });
});

test('the URL query\'s token waits with the upgrade for the per-IP limit across nodes (Redis)', T, async () => {
    const redis = await startRedis();
    try {
        await withHerald({
            config: { engine: 'redis', redis_urls: [redis.url], redis_prefix: `tok${Math.floor(Math.random() * 1e9)}` },
            args: ['--allow_query_token', '--max_connections_per_ip', '5'],
        }, async (h) => {
            const c = await ProtoClient.open(`${h.wsUrl}?token=${h.token('qr')}`);
            try {
                const r = await c.command('connect', {});
                assert.ok(r.connect, JSON.stringify(r));
                const info = await h.api('presence_stats', { channel: 'x' }); // the node still answers
                assert.equal(info.status, 200);
            } finally {
                c.close();
            }
        });
    } finally {
        await redis.stop();
    }
});

test('api_keys: every listed key and api_key are valid at once; another is not; none is logged', T, async () => {
    await withHerald({ config: { api_key: 'old-key-0123', api_keys: ['new-key-4567', 'next-key-89ab'] } }, async (h) => {
        const got = {};
        for (const key of ['old-key-0123', 'new-key-4567', 'next-key-89ab', 'third-key-cdef', 'new-key-456', '']) {
            got[key] = (await h.api('info', {}, { key })).status;
        }
        got['X-API-Key new'] = (await httpRequest(h.port, 'POST', '/api/info',
            { body: '{}', headers: { 'X-API-Key': 'new-key-4567' } })).status;
        assert.deepEqual(got, {
            'old-key-0123': 200, 'new-key-4567': 200, 'next-key-89ab': 200, 'third-key-cdef': 401,
            'new-key-456': 401, '': 401, 'X-API-Key new': 200,
        });
        for (const key of ['old-key-0123', 'new-key-4567', 'next-key-89ab']) {
            assert.ok(!h.stderr().includes(key), `${key} is not logged`);
        }
    });
});

test('herald stops at once, cleanly, while a connect waits for a JWKS server that does not answer', T, async () => {
    let served = 0;
    const hung = [];
    const server = http.createServer((req, res) => {
        if (served++ === 0) {
            res.writeHead(200, { 'Content-Type': 'application/json' })
                .end(JSON.stringify({ keys: [jwk(ed1, 'ed-1', 'EdDSA')] }));
        } else {
            hung.push(res); // never answered
        }
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const h = await start({ config: { token_jwks_url: `http://127.0.0.1:${server.address().port}/jwks` } });
    try {
        await until(() => served >= 1, 5000, 'the first fetch');
        assert.equal(await rawConnect(h, signAsym(claims('a'), 'EdDSA', ed1.privateKey, { kid: 'ed-1' })), 'connected');
        const c = await ProtoClient.open(h.wsUrl);
        c.send({ id: 1, connect: { token: signAsym(claims('b'), 'EdDSA', ed2.privateKey, { kid: 'ed-new' }) } });
        await until(() => served >= 2, 8000, 'the refetch');
        const res = await h.stop('SIGTERM', 3000);
        assert.equal(res.code, 0, `exit ${res.code}/${res.signal}`);
        assert.ok(res.ms < 2500, `stopped in ${res.ms} ms`);
        assert.equal(sanitizerReport(h.stderr()), '');
        c.close();
    } finally {
        await h.stop('SIGKILL');
        for (const r of hung) r.destroy();
        server.closeAllConnections?.();
        await new Promise((resolve) => server.close(resolve));
    }
});
