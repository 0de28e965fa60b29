// Who may subscribe and publish where (namespaces, user-limited channels, client_publish), and the
// server-side control API (subscribe, unsubscribe, disconnect) as centrifuge-js and raw ws see it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { makeClient, once } from './lib/centrifuge.mjs';
import { ProtoClient } from './lib/proto.mjs';
import { api, apiResult, sleep, subscribeOutcome, waitFor, sharedHerald } from './lib/proxy.mjs';

const T = { timeout: 20000 };

const CONFIG = {
    namespaces: {
        '': {},
        chat: { client_publish: true },
        ro: {},
    },
};

const run = sharedHerald({ config: CONFIG });

async function connected(h, user, opts = {}) {
    const m = makeClient(h, { token: h.token(user), ...opts });
    const c = once(m.client, 'connected');
    m.client.connect();
    try {
        await c;
    } catch (err) {
        m.client.disconnect(); // no client left reconnecting forever
        throw err;
    }
    return m;
}

async function rawClient(h, user) {
    const c = await ProtoClient.open(h.wsUrl);
    const r = await c.connect(h.token(user));
    assert.ok(r.connect, `connect ${user}: ${JSON.stringify(r)}`);
    return c;
}

test('namespaces: configured ones and the default admit, an unknown one answers 102', T, async () => {
    await run(async (h) => {
        const { client } = await connected(h, 'alice');
        const raw = await rawClient(h, 'bob');
        try {
            for (const ch of ['chat:room', 'ro:feed', 'plain', 'chat:a:b']) {
                const sub = client.newSubscription(ch);
                const out = subscribeOutcome(sub);
                sub.subscribe();
                const r = await out;
                assert.ok(r.subscribed, `${ch}: expected subscribed, got ${JSON.stringify(r)}`);
            }
            const sub = client.newSubscription('nope:room');
            const out = subscribeOutcome(sub);
            sub.subscribe();
            const r = await out;
            assert.ok(r.unsubscribed, `nope:room: expected a refusal, got ${JSON.stringify(r)}`);
            assert.equal(r.unsubscribed.code, 102);

            const e = await raw.command('subscribe', { channel: 'nope:room' });
            assert.equal(e.error?.code, 102, JSON.stringify(e));
            // A namespace name is the part before the FIRST ':' only.
            const e2 = await raw.command('subscribe', { channel: 'nope:chat:x' });
            assert.equal(e2.error?.code, 102, JSON.stringify(e2));
            // The refused subscribe left the connection usable.
            const ok = await raw.command('subscribe', { channel: 'chat:room' });
            assert.ok(ok.subscribe, JSON.stringify(ok));
            // The API refuses publishing into an unknown namespace too.
            const p = await api(h, 'publish', { channel: 'nope:room', data: 1 });
            assert.equal(p.json?.error?.code, 102, p.text);
        } finally {
            client.disconnect();
            raw.close();
        }
    });
});

test('user-limited channels admit only the users after the last #, others get 103', T, async () => {
    await run(async (h) => {
        const clients = {};
        try {
            for (const u of ['42', '43', '44', 'b']) clients[u] = await rawClient(h, u);
            const ch = 'chat:dm#42,43';
            for (const u of ['42', '43']) {
                const r = await clients[u].command('subscribe', { channel: ch });
                assert.ok(r.subscribe, `user ${u} on ${ch}: ${JSON.stringify(r)}`);
            }
            const r44 = await clients['44'].command('subscribe', { channel: ch });
            assert.equal(r44.error?.code, 103, `user 44 on ${ch}: ${JSON.stringify(r44)}`);
            // Only the part after the LAST '#' lists users.
            const rb = await clients.b.command('subscribe', { channel: 'chat:x#b#42' });
            assert.equal(rb.error?.code, 103, `user b on chat:x#b#42: ${JSON.stringify(rb)}`);
            const r42 = await clients['42'].command('subscribe', { channel: 'chat:x#b#42' });
            assert.ok(r42.subscribe, `user 42 on chat:x#b#42: ${JSON.stringify(r42)}`);
            // A user id that merely contains a listed one is not listed.
            const r4 = await clients['44'].command('subscribe', { channel: 'chat:p#4,444' });
            assert.equal(r4.error?.code, 103, JSON.stringify(r4));
            // In the default namespace too.
            const rd = await clients['44'].command('subscribe', { channel: 'personal#42' });
            assert.equal(rd.error?.code, 103, JSON.stringify(rd));
            const rd2 = await clients['42'].command('subscribe', { channel: 'personal#42' });
            assert.ok(rd2.subscribe, JSON.stringify(rd2));

            await apiResult(h, 'publish', { channel: ch, data: { to: 'both' } });
            for (const u of ['42', '43']) {
                const pubs = await clients[u].waitPublications(1, ch);
                assert.deepEqual(pubs[0].pub.data, { to: 'both' });
            }
            await sleep(100);
            assert.equal(clients['44'].publications().length, 0, 'user 44 got nothing');
        } finally {
            for (const c of Object.values(clients)) c.close();
        }
    });
});

test('user-limited channel through centrifuge-js: the stranger is unsubscribed with 103', T, async () => {
    await run(async (h) => {
        const a = await connected(h, '42');
        const z = await connected(h, '99');
        try {
            const ok = a.client.newSubscription('chat:dm#42,43');
            const o1 = subscribeOutcome(ok);
            ok.subscribe();
            assert.ok((await o1).subscribed);
            const no = z.client.newSubscription('chat:dm#42,43');
            const o2 = subscribeOutcome(no);
            no.subscribe();
            const r = await o2;
            assert.equal(r.unsubscribed?.code, 103, JSON.stringify(r));
            assert.equal(z.client.state, 'connected', 'a refused subscribe does not disconnect');
        } finally {
            a.client.disconnect();
            z.client.disconnect();
        }
    });
});

test('client publication push is valid JSON with the publisher info (conn_info absent or the token info)',
    T, async () => {
        await run(async (h) => {
            const sub = await rawClient(h, 'reader');
            const plain = await rawClient(h, 'plain-user');
            const rich = await ProtoClient.open(h.wsUrl);
            try {
                assert.ok((await rich.connect(h.token('rich-user', { extra: { info: { name: 'R' } } }))).connect);
                assert.ok((await sub.command('subscribe', { channel: 'chat:pp' })).subscribe);
                for (const c of [plain, rich]) {
                    assert.ok((await c.command('subscribe', { channel: 'chat:pp' })).subscribe);
                }
                assert.ok((await plain.command('publish', { channel: 'chat:pp', data: { n: 1 } })).publish);
                assert.ok((await rich.command('publish', { channel: 'chat:pp', data: { n: 2 } })).publish);
                await sub.waitUntil(() => sub.lines.filter((l) => l.raw.includes('"chat:pp"')).length >= 2,
                    3000, 'two pushes');
                const lines = sub.lines.filter((l) => l.raw.includes('"chat:pp"'));
                for (const l of lines) {
                    assert.ok(!l.msg.unparsable, `push is not valid JSON: ${l.raw}`);
                }
                const [p1, p2] = sub.publications('chat:pp');
                assert.deepEqual(p1.pub.data, { n: 1 });
                assert.equal(p1.pub.info?.user, 'plain-user');
                assert.deepEqual(p2.pub.data, { n: 2 });
                assert.equal(p2.pub.info?.user, 'rich-user');
                assert.deepEqual(p2.pub.info?.conn_info, { name: 'R' });
            } finally {
                for (const c of [sub, plain, rich]) c.close();
            }
        });
    });

test('client_publish per namespace: allowed in chat (others receive it), 103 in ro', T, async () => {
    await run(async (h) => {
        // Tokens with info: the push of a publisher without info is another test's subject.
        const a = await connected(h, 'alice', { token: h.token('alice', { extra: { info: 'a' } }) });
        const b = await connected(h, 'bob', { token: h.token('bob', { extra: { info: 'b' } }) });
        try {
            const subs = {};
            for (const [who, m] of [['a', a], ['b', b]]) {
                for (const ch of ['chat:room', 'ro:feed']) {
                    const s = m.client.newSubscription(ch);
                    const sd = once(s, 'subscribed');
                    s.subscribe();
                    await sd;
                    subs[`${who}:${ch}`] = s;
                }
            }
            const got = once(subs['b:chat:room'], 'publication');
            await subs['a:chat:room'].publish({ hello: 'chat' });
            const pub = await got;
            assert.deepEqual(pub.data, { hello: 'chat' });
            assert.equal(pub.info?.user, 'alice');
            assert.equal(pub.info?.connInfo, 'a');

            await assert.rejects(subs['a:ro:feed'].publish({ hello: 'ro' }), (err) => {
                assert.equal(err.code, 103, JSON.stringify(err));
                return true;
            });
            // The top-level default (client_publish false) holds for the default namespace.
            const raw = await rawClient(h, 'carol');
            try {
                const r = await raw.command('publish', { channel: 'plain', data: 1 });
                assert.equal(r.error?.code, 103, JSON.stringify(r));
            } finally {
                raw.close();
            }
        } finally {
            a.client.disconnect();
            b.client.disconnect();
        }
    });
});

test('/api/subscribe makes a server-side subscription; /api/unsubscribe ends it', T, async () => {
    await run(async (h) => {
        const m = await connected(h, 'dave');
        const other = await connected(h, 'erin');
        try {
            const subscribed = once(m.client, 'subscribed');
            assert.deepEqual(await apiResult(h, 'subscribe', { user: 'dave', channel: 'chat:srv' }), {});
            const ctx = await subscribed;
            assert.equal(ctx.channel, 'chat:srv');

            const got = once(m.client, 'publication');
            await apiResult(h, 'publish', { channel: 'chat:srv', data: { n: 1 } });
            const pub = await got;
            assert.equal(pub.channel, 'chat:srv');
            assert.deepEqual(pub.data, { n: 1 });

            const unsub = once(m.client, 'unsubscribed');
            assert.deepEqual(await apiResult(h, 'unsubscribe', { user: 'dave', channel: 'chat:srv' }), {});
            assert.equal((await unsub).channel, 'chat:srv');
            let late = 0;
            m.client.on('publication', () => { late++; });
            await apiResult(h, 'publish', { channel: 'chat:srv', data: { n: 2 } });
            await sleep(200);
            assert.equal(late, 0, 'no publication after the server-side unsubscribe');
            // erin was never subscribed.
            assert.equal(other.client.state, 'connected');
        } finally {
            m.client.disconnect();
            other.client.disconnect();
        }
    });
});

test('/api/unsubscribe of a client-side subscription: the client is told (unsubscribe push)', T,
    async () => {
        await run(async (h) => {
            const m = await connected(h, 'fay');
            const raw = await rawClient(h, 'fay');
            try {
                const sub = m.client.newSubscription('chat:c');
                const sd = once(sub, 'subscribed');
                sub.subscribe();
                await sd;
                assert.ok((await raw.command('subscribe', { channel: 'chat:c' })).subscribe);
                const unsub = once(sub, 'unsubscribed');
                await apiResult(h, 'unsubscribe', { user: 'fay', channel: 'chat:c' });
                const ctx = await unsub;
                assert.equal(typeof ctx.code, 'number', JSON.stringify(ctx));
                const push = await raw.waitUntil(() => raw.lines.find((l) => l.msg.push?.unsubscribe)?.msg,
                    3000, 'unsubscribe push');
                assert.equal(push.push.channel, 'chat:c');
                await apiResult(h, 'publish', { channel: 'chat:c', data: 'after' });
                await sleep(200);
                assert.equal(raw.publications('chat:c').length, 0, 'raw client no longer subscribed');
            } finally {
                m.client.disconnect();
                raw.close();
            }
        });
    });

test('/api/disconnect closes every connection of the user with the given code and reason', T,
    async () => {
        await run(async (h) => {
            const r1 = await rawClient(h, 'gus');
            const r2 = await rawClient(h, 'gus');
            const keep = await rawClient(h, 'hal');
            try {
                assert.deepEqual(await apiResult(h, 'disconnect',
                    { user: 'gus', disconnect: { code: 4501, reason: 'bye' } }), {});
                for (const c of [r1, r2]) {
                    const info = await Promise.race([c.closed, sleep(3000).then(() => null)]);
                    assert.ok(info, 'connection closed');
                    assert.equal(info.code, 4501);
                    assert.equal(info.reason, 'bye');
                }
                await sleep(100);
                assert.equal(keep.closeInfo, null, 'another user stays connected');
                const ok = await keep.command('subscribe', { channel: 'chat:still' });
                assert.ok(ok.subscribe);
            } finally {
                for (const c of [r1, r2, keep]) c.close();
            }
        });
    });

test('/api/disconnect: centrifuge-js does not reconnect after 4500+, does after 4000', T, async () => {
    await run(async (h) => {
        const stay = await connected(h, 'ivy');
        const back = await connected(h, 'jon');
        try {
            const gone = once(stay.client, 'disconnected');
            await apiResult(h, 'disconnect', { user: 'ivy', disconnect: { code: 4500, reason: 'go away' } });
            const ctx = await gone;
            assert.equal(ctx.code, 4500);
            assert.equal(ctx.reason, 'go away');

            const reconnecting = once(back.client, 'connecting');
            await apiResult(h, 'disconnect', { user: 'jon', disconnect: { code: 4000, reason: 'again' } });
            const rc = await reconnecting;
            assert.equal(rc.code, 4000);
            await once(back.client, 'connected');
            assert.equal(back.stats.opened, 2, 'jon reconnected once');

            await sleep(600);
            assert.equal(stay.stats.opened, 1, 'ivy never reconnected');
            assert.equal(stay.client.state, 'disconnected');
        } finally {
            stay.client.disconnect();
            back.client.disconnect();
        }
    });
});

test('/api/disconnect refuses a code outside 3000-4999 and disconnects nobody', T, async () => {
    await run(async (h) => {
        const c = await rawClient(h, 'kim');
        try {
            for (const code of [1000, 2999, 5000]) {
                const r = await api(h, 'disconnect', { user: 'kim', disconnect: { code, reason: 'x' } });
                assert.ok(r.json?.error, `code ${code}: expected an error, got ${r.status} ${r.text}`);
            }
            await sleep(100);
            assert.equal(c.closeInfo, null);
            await waitFor(async () => (await c.command('subscribe', { channel: 'chat:z' })).subscribe);
        } finally {
            c.close();
        }
    });
});
