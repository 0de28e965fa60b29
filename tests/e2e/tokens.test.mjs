// Subscription tokens for private namespaces, connection tokens with exp and their refresh, and
// the "channels" claim (server-side subscriptions), through centrifuge-js and raw ws.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { makeClient, once } from './lib/centrifuge.mjs';
import { nowSeconds, sign } from './lib/jwt.mjs';
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
