// Presence: who is subscribed (API and client commands, conn_info from the connection token,
// chan_info from the subscription token), presence_stats, join/leave pushes, and error 108 where
// a namespace keeps no presence.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { makeClient, once } from './lib/centrifuge.mjs';
import { ProtoClient } from './lib/proto.mjs';
import { api, apiResult, sharedHerald, sleep, subToken, waitFor } from './lib/proxy.mjs';

const T = { timeout: 20000 };

const CONFIG = {
    namespaces: {
        '': {},
        pres: { presence: true, join_leave: true },
        pp: { presence: true, join_leave: true, private: true },
        quiet: { presence: true },
        none: { history_size: 10, history_ttl: 60 },
    },
};

const run = sharedHerald({ config: CONFIG });

async function client(h, user, info) {
    const extra = info === undefined ? {} : { info };
    const m = makeClient(h, { token: h.token(user, { extra }) });
    const c = once(m.client, 'connected');
    m.client.connect();
    try {
        const ctx = await c;
        return { ...m, id: ctx.client };
    } catch (err) {
        m.client.disconnect(); // no client left reconnecting forever
        throw err;
    }
}

async function subscribed(m, channel, opts = {}) {
    const sub = m.client.newSubscription(channel, opts);
    const sd = once(sub, 'subscribed');
    sub.subscribe();
    await sd;
    return sub;
}

test('presence and presence_stats with two users: API and centrifuge-js agree, infos included', T,
    async () => {
        await run(async (h) => {
            const ch = 'pp:room';
            const a1 = await client(h, 'alice', { name: 'A' });
            const a2 = await client(h, 'alice', { name: 'A2' });
            const b = await client(h, 'bob', { name: 'B' });
            try {
                const subs = [];
                for (const [m, role] of [[a1, 'owner'], [a2, 'owner2'], [b, 'guest']]) {
                    subs.push(await subscribed(m, ch, {
                        token: subToken(h, m === b ? 'bob' : 'alice', ch, { extra: { info: { role } } }),
                    }));
                }
                const p = await apiResult(h, 'presence', { channel: ch });
                const expected = {
                    [a1.id]: { user: 'alice', client: a1.id, conn_info: { name: 'A' }, chan_info: { role: 'owner' } },
                    [a2.id]: { user: 'alice', client: a2.id, conn_info: { name: 'A2' }, chan_info: { role: 'owner2' } },
                    [b.id]: { user: 'bob', client: b.id, conn_info: { name: 'B' }, chan_info: { role: 'guest' } },
                };
                assert.deepEqual(p.presence, expected);
                assert.deepEqual(await apiResult(h, 'presence_stats', { channel: ch }),
                    { num_clients: 3, num_users: 2 });

                const cp = await subs[2].presence();
                assert.deepEqual(Object.keys(cp.clients).sort(), [a1.id, a2.id, b.id].sort());
                assert.equal(cp.clients[a1.id].user, 'alice');
                assert.equal(cp.clients[a1.id].client, a1.id);
                assert.deepEqual(cp.clients[a1.id].connInfo, { name: 'A' });
                assert.deepEqual(cp.clients[a1.id].chanInfo, { role: 'owner' });
                assert.deepEqual(cp.clients[b.id].chanInfo, { role: 'guest' });
                const cs = await subs[0].presenceStats();
                assert.deepEqual(cs, { numClients: 3, numUsers: 2 });

                // One of alice's connections leaves: still 2 users, 2 clients.
                subs[1].unsubscribe();
                await waitFor(async () => (await apiResult(h, 'presence_stats', { channel: ch })).num_clients === 2,
                    3000, 'num_clients 2 after an unsubscribe');
                assert.deepEqual(await apiResult(h, 'presence_stats', { channel: ch }),
                    { num_clients: 2, num_users: 2 });
                b.client.disconnect();
                await waitFor(async () => (await apiResult(h, 'presence_stats', { channel: ch })).num_clients === 1,
                    3000, 'num_clients 1 after a disconnect');
                const left = await apiResult(h, 'presence', { channel: ch });
                assert.deepEqual(Object.keys(left.presence), [a1.id]);
                assert.deepEqual(await subs[0].presenceStats(), { numClients: 1, numUsers: 1 });
            } finally {
                for (const m of [a1, a2, b]) m.client.disconnect();
            }
        });
    });

test('a connection without info has no conn_info; an empty channel has empty presence', T, async () => {
    await run(async (h) => {
        const m = await client(h, 'carl');
        try {
            await subscribed(m, 'quiet:plain');
            const p = await apiResult(h, 'presence', { channel: 'quiet:plain' });
            assert.deepEqual(p.presence, { [m.id]: { user: 'carl', client: m.id } });
            // The join push of a connection without info is valid JSON too.
            const w = await ProtoClient.open(h.wsUrl);
            const x = await ProtoClient.open(h.wsUrl);
            try {
                await w.connectAndSubscribe(h.token('watcher', { extra: { info: 1 } }), ['pres:plain']);
                await x.connectAndSubscribe(h.token('noinfo'), ['pres:plain']);
                const join = await w.waitUntil(() => w.lines.find((l) => l.raw.includes('"noinfo"')), 3000,
                    'join of noinfo');
                assert.ok(!join.msg.unparsable, `join push is not valid JSON: ${join.raw}`);
            } finally {
                w.close();
                x.close();
            }
            assert.deepEqual(await apiResult(h, 'presence', { channel: 'pres:nobody' }), { presence: {} });
            assert.deepEqual(await apiResult(h, 'presence_stats', { channel: 'pres:nobody' }),
                { num_clients: 0, num_users: 0 });
        } finally {
            m.client.disconnect();
        }
    });
});

test('join and leave pushes reach the other subscribers (unsubscribe and disconnect)', T, async () => {
    await run(async (h) => {
        const ch = 'pres:jl';
        const a = await client(h, 'dora', { name: 'D' });
        const b = await client(h, 'emil', { name: 'E' });
        const c = await client(h, 'finn', 'F'); // info present: see the conn_info test
        try {
            const sa = await subscribed(a, ch);
            const joins = [];
            const leaves = [];
            // Its own join (if the server sends one, as Centrifugo does) is not counted.
            sa.on('join', (ctx) => { if (ctx.info.client !== a.id) joins.push(ctx.info); });
            sa.on('leave', (ctx) => leaves.push(ctx.info));
            const sb = await subscribed(b, ch);
            await subscribed(c, ch);
            await waitFor(() => joins.length >= 2, 3000, () => `2 joins, have ${JSON.stringify(joins)}`);
            assert.deepEqual(joins[0], { user: 'emil', client: b.id, connInfo: { name: 'E' } });
            assert.deepEqual(joins[1], { user: 'finn', client: c.id, connInfo: 'F' });

            sb.unsubscribe();
            await waitFor(() => leaves.length >= 1, 3000, 'leave after unsubscribe');
            assert.deepEqual(leaves[0], { user: 'emil', client: b.id, connInfo: { name: 'E' } });
            c.client.disconnect();
            await waitFor(() => leaves.length >= 2, 3000, 'leave after disconnect');
            assert.equal(leaves[1].user, 'finn');
            assert.equal(leaves[1].client, c.id);
            await sleep(100);
            assert.equal(joins.length, 2, 'no extra joins');
            assert.equal(leaves.length, 2, 'no extra leaves');
        } finally {
            for (const m of [a, b, c]) m.client.disconnect();
        }
    });
});

test('an abrupt TCP close also produces a leave and clears presence', T, async () => {
    await run(async (h) => {
        const ch = 'pres:abrupt';
        const a = await client(h, 'gwen', { g: 1 });
        const raw = await ProtoClient.open(h.wsUrl);
        try {
            const sa = await subscribed(a, ch);
            const leaves = [];
            sa.on('leave', (ctx) => leaves.push(ctx.info));
            const r = await raw.connect(h.token('hugo', { extra: { info: 1 } }));
            assert.ok((await raw.command('subscribe', { channel: ch })).subscribe);
            raw.terminate();
            await waitFor(() => leaves.length === 1, 3000, 'leave after a TCP reset');
            assert.equal(leaves[0].client, r.connect.client);
            assert.deepEqual(await apiResult(h, 'presence_stats', { channel: ch }),
                { num_clients: 1, num_users: 1 });
        } finally {
            a.client.disconnect();
        }
    });
});

test('presence without join_leave: no join/leave pushes (raw)', T, async () => {
    await run(async (h) => {
        const ch = 'quiet:q';
        const a = await ProtoClient.open(h.wsUrl);
        const b = await ProtoClient.open(h.wsUrl);
        try {
            await a.connectAndSubscribe(h.token('ida', { extra: { info: [] } }), [ch]);
            await b.connectAndSubscribe(h.token('jack', { extra: { info: null } }), [ch]);
            b.close();
            await b.closed;
            await sleep(200);
            const pushes = a.lines.filter((l) => l.msg.push?.join || l.msg.push?.leave);
            assert.deepEqual(pushes.map((l) => l.raw), []);
            const p = await a.command('presence', { channel: ch });
            assert.deepEqual(Object.keys(p.presence?.presence || {}).length, 1, JSON.stringify(p));
        } finally {
            a.close();
        }
    });
});

test('presence on a namespace without presence -> 108 (client and API); not subscribed -> 103', T,
    async () => {
        await run(async (h) => {
            const m = await client(h, 'kai');
            const raw = await ProtoClient.open(h.wsUrl);
            try {
                const sub = await subscribed(m, 'none:x');
                await assert.rejects(sub.presence(), (err) => { assert.equal(err.code, 108); return true; });
                await assert.rejects(sub.presenceStats(), (err) => { assert.equal(err.code, 108); return true; });
                for (const method of ['presence', 'presence_stats']) {
                    for (const ch of ['none:x', 'plain']) {
                        const r = await api(h, method, { channel: ch });
                        assert.equal(r.json?.error?.code, 108, `${method} ${ch}: ${r.text}`);
                    }
                }
                assert.ok((await raw.connect(h.token('lea'))).connect);
                const r = await raw.command('presence', { channel: 'pres:jl' });
                assert.equal(r.error?.code, 103, `presence without a subscription: ${JSON.stringify(r)}`);
            } finally {
                m.client.disconnect();
                raw.close();
            }
        });
    });
