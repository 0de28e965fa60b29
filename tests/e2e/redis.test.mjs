// Several herald nodes on one real Redis (engine "redis"): a publication on any node reaches
// the subscribers of every node in order; history, presence and recovery are the same from
// every node; an idempotency key holds across nodes.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { httpRequest, start, sleep } from './lib/herald.mjs';
import { makeClient, once } from './lib/centrifuge.mjs';
import { apiResult, waitFor } from './lib/proxy.mjs';
import { RawConn, wsOpen } from './lib/raw.mjs';
import { startRedis } from './lib/redis.mjs';

const T = { timeout: 60000 };

function config(redis, prefix, more = []) {
    return {
        engine: 'redis',
        redis_urls: [redis.url, ...more.map((r) => r.url)],
        redis_prefix: prefix,
        presence_ttl: 3, /* refreshed every second while a connection lives */
        namespaces: {
            '': {},
            rec: { history_size: 100, history_ttl: 300, recover: true },
            big: { history_size: 2000, history_ttl: 300, recover: true },
            room: { presence: true, join_leave: true },
        },
    };
}

// Redis and n herald nodes sharing it; fn(nodes, redis); everything stopped after.
async function withNodes(n, fn, more = {}) {
    const redis = await startRedis();
    const prefix = `e2e${Math.floor(Math.random() * 1e9)}`;
    const nodes = [];
    try {
        for (let i = 0; i < n; i++) nodes.push(await start({ config: { ...config(redis, prefix), ...more }, threads: 2 }));
        return await fn(nodes, redis);
    } finally {
        for (const h of nodes) await h.stop('SIGTERM', 3000);
        await redis.stop();
    }
}

async function subscribed(h, channel, user = 'u') {
    const m = makeClient(h, { token: h.token(user) });
    const sub = m.client.newSubscription(channel);
    const got = [];
    sub.on('publication', (ctx) => got.push(ctx));
    m.client.connect();
    await once(m.client, 'connected');
    const ok = once(sub, 'subscribed');
    sub.subscribe();
    await ok;
    return { ...m, sub, got };
}

test('a publication on any node reaches the subscribers of every node, in the same order', T, async () => {
    await withNodes(2, async ([a, b]) => {
        const subs = [await subscribed(a, 'rec:feed'), await subscribed(b, 'rec:feed'),
            await subscribed(a, 'news'), await subscribed(b, 'news')];
        try {
            for (let i = 1; i <= 40; i++) {
                const node = i % 2 ? a : b;
                await apiResult(node, 'publish', { channel: 'rec:feed', data: { i } });
                await apiResult(node, 'publish', { channel: 'news', data: { i } });
            }
            await waitFor(() => subs.every((s) => s.got.length === 40), 10000,
                () => `received: ${subs.map((s) => s.got.length).join(', ')}`);
            for (const s of subs.slice(0, 2)) {
                assert.deepEqual(s.got.map((p) => p.data.i), Array.from({ length: 40 }, (_, k) => k + 1));
                assert.deepEqual(s.got.map((p) => p.offset), Array.from({ length: 40 }, (_, k) => k + 1));
            }
            for (const s of subs.slice(2))
                assert.deepEqual(s.got.map((p) => p.data.i), Array.from({ length: 40 }, (_, k) => k + 1));
        } finally {
            for (const s of subs) s.client.disconnect();
        }
    });
});

test('history, presence and an idempotency key are the same from every node', T, async () => {
    await withNodes(2, async ([a, b]) => {
        for (let i = 1; i <= 5; i++) await apiResult(i % 2 ? a : b, 'publish', { channel: 'rec:h', data: { i } });
        const ha = await apiResult(a, 'history', { channel: 'rec:h', limit: -1 });
        const hb = await apiResult(b, 'history', { channel: 'rec:h', limit: -1 });
        assert.deepEqual(ha, hb);
        assert.equal(ha.publications.length, 5);
        assert.equal(ha.offset, 5);

        const k1 = await apiResult(a, 'publish', { channel: 'rec:h', data: { k: 1 }, idempotency_key: 'once' });
        const k2 = await apiResult(b, 'publish', { channel: 'rec:h', data: { k: 1 }, idempotency_key: 'once' });
        assert.deepEqual(k2, k1);
        assert.equal((await apiResult(b, 'history', { channel: 'rec:h', limit: -1 })).offset, 6);

        const pa = await subscribed(a, 'room:1', 'ann');
        const pb = await subscribed(b, 'room:1', 'bob');
        const pb2 = await subscribed(b, 'room:1', 'bob');
        try {
            /* A subscribe is answered once its presence entry is in Redis: no waiting. */
            const sa = await apiResult(a, 'presence_stats', { channel: 'room:1' });
            const sb = await apiResult(b, 'presence_stats', { channel: 'room:1' });
            assert.deepEqual(sa, { num_clients: 3, num_users: 2 });
            assert.deepEqual(sb, sa);
            const members = await apiResult(b, 'presence', { channel: 'room:1' });
            assert.equal(Object.keys(members.presence).length, 3);
            // join/leave reach every node: ann (on a) sees bob's second connection leave
            const leaves = [];
            pa.sub.on('leave', (ctx) => leaves.push(ctx.info.user));
            pb2.client.disconnect();
            await waitFor(() => leaves.includes('bob'), 5000, () => 'a leave push for bob on node a');
            await waitFor(async () => (await apiResult(a, 'presence_stats', { channel: 'room:1' })).num_clients === 2,
                5000, () => 'presence after the leave');
        } finally {
            for (const s of [pa, pb, pb2]) s.client.disconnect();
        }
    });
});

// A raw client's subscribe with recovery (what centrifuge-js sends after a reconnect).
async function rawSubscribe(h, channel, rec) {
    const conn = await wsOpen(h.port);
    conn.sendText(JSON.stringify({ id: 1, connect: { token: h.token('mover') } }) + '\n' +
        JSON.stringify({ id: 2, subscribe: { channel, ...rec } }));
    let reply = null;
    while (!reply) {
        const f = await conn.readFrame(5000);
        assert.ok(f && f.opcode !== 8, 'closed before the subscribe reply');
        for (const line of f.payload.toString().split('\n')) {
            if (line.includes('"id":2')) reply = JSON.parse(line);
        }
    }
    conn.destroy();
    return reply.subscribe;
}

test('a client that moves to another node recovers exactly what it missed', T, async () => {
    await withNodes(2, async ([a, b]) => {
        for (let i = 1; i <= 3; i++) await apiResult(a, 'publish', { channel: 'rec:move', data: { i } });
        const first = await rawSubscribe(a, 'rec:move', {});
        assert.equal(first.offset, 3);
        for (let i = 4; i <= 10; i++) await apiResult(b, 'publish', { channel: 'rec:move', data: { i } });
        const back = await rawSubscribe(b, 'rec:move', { recover: true, offset: 3, epoch: first.epoch });
        assert.equal(back.recovered, true);
        assert.deepEqual(back.publications.map((p) => p.data.i), [4, 5, 6, 7, 8, 9, 10]);
        assert.deepEqual(back.publications.map((p) => p.offset), [4, 5, 6, 7, 8, 9, 10]);
        const wrong = await rawSubscribe(b, 'rec:move', { recover: true, offset: 3, epoch: 'deadbeef' });
        assert.equal(wrong.recovered, false);
        assert.equal(wrong.publications, undefined);
        await sleep(10);
    });
});

test('pub/sub connections killed while another node publishes 1,000: every subscriber gets all, once, in order', T, async () => {
    await withNodes(2, async ([a, b], redis) => {
        const subs = [await subscribed(a, 'big:gap'), await subscribed(a, 'big:gap', 'v')];
        const unsubs = [];
        for (const s of subs) s.sub.on('unsubscribed', (ctx) => unsubs.push(ctx));
        try {
            const N = 1000;
            let next = 1;
            const publisher = (async () => {
                while (next <= N) {
                    const batch = [];
                    for (let k = 0; k < 20 && next <= N; k++, next++)
                        batch.push(apiResult(b, 'publish', { channel: 'big:gap', data: { i: next } }));
                    await Promise.all(batch);
                }
            })();
            let kills = 0;
            while (next <= N && kills < 50) {
                await sleep(30);
                redis.cli('CLIENT', 'KILL', 'TYPE', 'pubsub');
                kills++;
            }
            await publisher;
            await waitFor(() => subs.every((s) => s.got.length >= N), 20000,
                () => `received: ${subs.map((s) => s.got.length).join(', ')} after ${kills} kills; `
                    + `node a's log:\n${a.stderr().slice(-1500)}`);
            await sleep(300);
            for (const s of subs) {
                const offsets = s.got.map((p) => p.offset);
                assert.equal(offsets.length, N, 'each publication exactly once');
                assert.deepEqual(offsets, Array.from({ length: N }, (_, k) => k + 1), 'in order');
            }
            assert.equal(unsubs.length, 0, 'no resubscribe was needed');
            assert.ok(kills > 0);
        } finally {
            for (const s of subs) s.client.disconnect();
        }
    });
});

test('Redis restarted with its data lost: nodes stay up, delivery resumes, the loss is reported', T, async () => {
    let redis = await startRedis();
    const prefix = `e2e${Math.floor(Math.random() * 1e9)}`;
    const a = await start({ config: config(redis, prefix), threads: 1 });
    const b = await start({ config: config(redis, prefix), threads: 1 });
    const s = await subscribed(a, 'rec:restart');
    const subscribedEvents = [];
    s.sub.on('subscribed', (ctx) => subscribedEvents.push(ctx));
    try {
        for (let i = 1; i <= 5; i++) await apiResult(b, 'publish', { channel: 'rec:restart', data: { i } });
        await waitFor(() => s.got.length === 5, 5000, () => `got ${s.got.length}`);
        const port = redis.port;
        await redis.stop();
        // While Redis is away: publishing fails temporarily (503), never a false success;
        // /ready names the shard, /health stays 200, herald stays up.
        await waitFor(async () => (await httpRequest(b.port, 'GET', '/ready')).status === 503, 5000,
            () => '/ready to turn 503');
        const ready = await httpRequest(b.port, 'GET', '/ready');
        assert.equal(ready.json.status, 'unavailable');
        assert.deepEqual(ready.json.unavailable.map((u) => u.name), [`redis://127.0.0.1:${port}`]);
        assert.equal((await httpRequest(b.port, 'GET', '/health')).status, 200);
        const down = await b.api('publish', { channel: 'rec:restart', data: { i: 'lost' } });
        assert.equal(down.status, 503, `publish while down: ${down.text}`);
        assert.deepEqual(down.json.error, { code: 100, message: 'internal server error', temporary: true });
        // channels cannot ask the other nodes: temporary too, not this node's list alone
        const listDown = await b.api('channels', {});
        assert.equal(listDown.status, 503, `channels while down: ${listDown.text}`);
        assert.deepEqual(listDown.json.error, { code: 100, message: 'internal server error', temporary: true });
        redis = await startRedis({ port });
        // Delivery resumes; the new stream's epoch differs: the subscriber is told (2500),
        // resubscribes and learns it did not recover.
        await waitFor(async () => {
            const r = await b.api('publish', { channel: 'rec:restart', data: { i: 'after' } });
            return r.status === 200 && r.json.result;
        }, 15000, () => 'publishing again after the restart');
        await waitFor(() => subscribedEvents.some((e) => e.wasRecovering && !e.recovered), 15000,
            () => `subscribed events: ${JSON.stringify(subscribedEvents.map((e) => [e.wasRecovering, e.recovered]))}`);
        await waitFor(async () => (await httpRequest(b.port, 'GET', '/ready')).status === 200, 10000,
            () => '/ready to come back');
        await apiResult(b, 'publish', { channel: 'rec:restart', data: { i: 'final' } });
        await waitFor(() => s.got.some((p) => p.data.i === 'final'), 10000, () => 'the publication after');
        assert.ok(a.alive() && b.alive());
    } finally {
        s.client.disconnect();
        await a.stop('SIGTERM', 3000);
        await b.stop('SIGTERM', 3000);
        await redis.stop();
    }
});

test('the server API acts on a user\'s connections on every node; info lists every live node', T, async () => {
    await withNodes(2, async ([a, b]) => {
        // subscribe on b, for a user connected to a
        const ann = await subscribed(a, 'news', 'ann');
        const pushed = [];
        ann.client.on('subscribed', (ctx) => pushed.push(ctx.channel));
        await apiResult(b, 'subscribe', { user: 'ann', channel: 'rec:server' });
        await waitFor(() => pushed.includes('rec:server'), 5000, () => `server-side subscriptions: ${pushed}`);
        // disconnect on b, for the user on a
        const closed = once(ann.client, 'disconnected', 5000);
        await apiResult(b, 'disconnect', { user: 'ann', disconnect: { code: 4500, reason: 'bye' } });
        const ctx = await closed;
        assert.equal(ctx.code, 4500);
        ann.client.disconnect();

        // Each node announces itself every few seconds: both list both.
        const uidsOf = async (h) => (await apiResult(h, 'info', {})).nodes.map((n) => n.uid).sort();
        await waitFor(async () => (await uidsOf(a)).length === 2 && (await uidsOf(b)).length === 2, 12000,
            () => 'both nodes in info');
        assert.deepEqual(await uidsOf(a), await uidsOf(b));
    });
});

test('channels lists every node\'s channels with their subscribers summed; a dead node costs a wait, not the answer', T, async () => {
    await withNodes(3, async ([a, b, c]) => {
        const uidsOf = async (h) => (await apiResult(h, 'info', {})).nodes.length;
        await waitFor(async () => (await uidsOf(a)) === 3 && (await uidsOf(b)) === 3 && (await uidsOf(c)) === 3,
            12000, () => 'three nodes in info');
        const clients = [];
        try {
            for (const [h, ch, user] of [[a, 'pool-1', 'ann'], [b, 'pool-1', 'bob'], [b, 'pool-1', 'bob'],
                [c, 'pool-2', 'cid'], [b, 'other', 'bob']]) clients.push(await subscribed(h, ch, user));
            const want = { other: { num_clients: 1 }, 'pool-1': { num_clients: 3 }, 'pool-2': { num_clients: 1 } };
            for (const h of [a, b, c]) {
                // Every node answers, so no survey waits for the 2-3 s a silent node costs:
                // the request and the replies go out at once, even from an idle loop (they
                // waited for its next wake-up, up to a second, and often for the timeout).
                const t0 = Date.now();
                assert.deepEqual((await apiResult(h, 'channels', {})).channels, want);
                assert.ok(Date.now() - t0 < 1500, `answered after ${Date.now() - t0} ms`);
            }
            assert.deepEqual((await apiResult(c, 'channels', { pattern: 'pool' })).channels,
                { 'pool-1': { num_clients: 3 }, 'pool-2': { num_clients: 1 } });
            // Through the batch API too (an answer that waits for the other nodes)
            const r = await a.api('batch', { commands: [{ channels: { pattern: 'pool-2' } }, { info: {} }] });
            assert.equal(r.status, 200);
            assert.deepEqual(r.json.replies[0].channels.channels, { 'pool-2': { num_clients: 1 } });
            assert.equal(r.json.replies[1].info.nodes.length, 3);

            // c dies without a word: still in the node list for a while, so a waits for its
            // answer, 2-3 s, then answers with what the live nodes have.
            c.child.kill('SIGKILL');
            const t0 = Date.now();
            const after = (await apiResult(a, 'channels', {})).channels;
            const took = Date.now() - t0;
            assert.deepEqual(after, { other: { num_clients: 1 }, 'pool-1': { num_clients: 3 } });
            assert.ok(took <= 4500, `answered after ${took} ms`);

            // Stopped while a survey waits for the dead node: it ends cleanly (no leak report
            // from the sanitizer build, exit 0), the caller answered or cut off, never hung.
            const pending = apiResult(b, 'channels', {}).then(() => 'answered', () => 'cut off');
            await sleep(300);
            const stopped = await b.stop('SIGTERM', 10000);
            assert.equal(stopped.code, 0, `exit ${JSON.stringify(stopped)}: ${b.stderr().slice(-2000)}`);
            assert.doesNotMatch(b.stderr(), /LeakSanitizer|AddressSanitizer/);
            assert.ok(['answered', 'cut off'].includes(await pending));
        } finally {
            for (const x of clients) x.client.disconnect();
        }
    });
});

test('channels from idle nodes of one loop each: every node answers at once, no survey waits for the timeout', T, async () => {
    // What a loop asks of Redis from a timer or from a message posted to itself (a node's
    // reply to a survey, the survey's request) went out only when the loop next woke for
    // something else: on an idle node up to its one-second tick, so that a survey all nodes
    // answer often waited for its 2-3 s timeout.
    const redis = await startRedis();
    const prefix = `e2e${Math.floor(Math.random() * 1e9)}`;
    const nodes = [];
    try {
        for (let i = 0; i < 2; i++) nodes.push(await start({ config: config(redis, prefix), threads: 1 }));
        const [a, b] = nodes;
        await waitFor(async () => (await apiResult(a, 'info', {})).nodes.length === 2
            && (await apiResult(b, 'info', {})).nodes.length === 2, 12000, () => 'both nodes in info');
        const t0 = Date.now();
        for (let i = 0; i < 6; i++) {
            const h = nodes[i % 2];
            assert.deepEqual((await apiResult(h, 'channels', {})).channels, {});
        }
        const took = Date.now() - t0;
        assert.ok(took < 1500, `six surveys took ${took} ms`);
    } finally {
        for (const h of nodes) await h.stop('SIGTERM', 3000);
        await redis.stop();
    }
});

test('channels: a node\'s answer is cut at 4 MiB, with a warning, so that Redis keeps every node\'s subscriber connection', T, async () => {
    await withNodes(2, async ([a, b]) => {
        await waitFor(async () => (await apiResult(b, 'info', {})).nodes.length === 2, 12000, () => 'both nodes in info');
        // 600 channels of 8,000 bytes on node a: about 4.8 MB of names.
        const conn = await wsOpen(a.port);
        try {
            const N = 600;
            const name = (i) => `cut-${String(i).padStart(6, '0')}-`.padEnd(8000, 'x');
            conn.sendText(JSON.stringify({ id: 1, connect: { token: a.token('many') } }));
            for (let at = 0; at < N; at += 4) {
                const cmds = [];
                for (let i = at; i < Math.min(N, at + 4); i++) cmds.push(JSON.stringify({ id: 2 + i, subscribe: { channel: name(i) } }));
                conn.sendText(cmds.join('\n'));
            }
            let replies = 0;
            while (replies < N + 1) {
                const f = await conn.readFrame(20000);
                assert.ok(f && f.opcode !== 8, `closed while subscribing: ${f && f.payload.toString()}`);
                for (const line of f.payload.toString().split('\n')) {
                    if (!line) continue;
                    if (line === '{}') { conn.sendText('{}'); continue; } // the server's ping
                    const m = JSON.parse(line);
                    assert.ok(!m.error, line.slice(0, 200));
                    if (m.id) replies++;
                }
            }
            const chs = Object.keys((await apiResult(b, 'channels', {})).channels);
            assert.ok(chs.length > 450 && chs.length < N, `${chs.length} channels listed`);
            assert.match(a.stderr(), /"event":"channels_cut"/);
            // A pattern asks for fewer: whole again.
            const few = await apiResult(b, 'channels', { pattern: 'cut-0001' });
            assert.equal(Object.keys(few.channels).length, 100);
            assert.ok(a.alive() && b.alive());
        } finally {
            conn.destroy();
        }
    }, { max_subscriptions_per_connection: 1000, max_channel_length: 8000 });
});

test('a subscribe is answered only when its presence entry is visible from every node', T, async () => {
    await withNodes(2, async ([a, b]) => {
        // Raw clients on node a, each subscribe reply followed at once by node b's presence
        // query: the member is there every time, not a moment later.
        for (let i = 0; i < 30; i++) {
            const channel = `room:seen${i}`;
            const conn = await wsOpen(a.port);
            try {
                conn.sendText(JSON.stringify({ id: 1, connect: { token: a.token(`p${i}`) } }) + '\n' +
                    JSON.stringify({ id: 2, subscribe: { channel } }));
                let client = null, subscribed = false;
                while (!subscribed) {
                    const f = await conn.readFrame(5000);
                    assert.ok(f && f.opcode !== 8, 'closed before the subscribe reply');
                    for (const line of f.payload.toString().split('\n')) {
                        if (!line) continue;
                        const m = JSON.parse(line);
                        if (m.id === 1) client = m.connect.client;
                        if (m.id === 2) {
                            assert.ok(m.subscribe, `subscribe refused: ${line}`);
                            subscribed = true;
                        }
                    }
                }
                const seen = await apiResult(b, 'presence', { channel });
                assert.deepEqual(Object.keys(seen.presence), [client], `presence of ${channel} on node b`);
                assert.equal(seen.presence[client].user, `p${i}`);
            } finally {
                conn.destroy();
            }
        }
    });
});

test('a node killed with SIGKILL leaves presence within presence_ttl and info within three intervals', T, async () => {
    await withNodes(2, async ([a, b]) => {
        const count = async () => (await apiResult(a, 'info', {})).nodes.length;
        await waitFor(async () => (await count()) === 2, 12000, () => 'two nodes');
        const pa = await subscribed(a, 'room:crash', 'ann');
        const pb = await subscribed(b, 'room:crash', 'bob');
        // Clients left connected by a failed assertion would reconnect forever and keep the
        // test process alive: they go whatever happens.
        try {
            const stats = () => apiResult(a, 'presence_stats', { channel: 'room:crash' });
            assert.deepEqual(await stats(), { num_clients: 2, num_users: 2 });
            await sleep(4000); /* longer than presence_ttl: refreshed, both still there */
            assert.deepEqual(await stats(), { num_clients: 2, num_users: 2 });
            b.child.kill('SIGKILL');
            const tk = Date.now();
            await waitFor(async () => (await stats()).num_clients === 1, 8000, () => 'bob to leave presence');
            assert.ok(Date.now() - tk <= 4500, `left presence after ${Date.now() - tk} ms`);
            assert.deepEqual(await stats(), { num_clients: 1, num_users: 1 });
        } finally {
            pa.client.disconnect();
            pb.client.disconnect();
        }
        const t0 = Date.now();
        await waitFor(async () => (await count()) === 1, 20000, () => 'the killed node to drop out');
        assert.ok(Date.now() - t0 <= 16000, `dropped after ${Date.now() - t0} ms`);
    });
});

test('two independent Redis instances: channels land on both, delivery, history and recovery hold', T, async () => {
    const r1 = await startRedis();
    const r2 = await startRedis();
    const prefix = `e2e${Math.floor(Math.random() * 1e9)}`;
    const a = await start({ config: config(r1, prefix, [r2]), threads: 2 });
    const b = await start({ config: config(r1, prefix, [r2]), threads: 2 });
    try {
        const names = Array.from({ length: 12 }, (_, k) => `rec:shard${k}`);
        const subs = [];
        for (const ch of names) subs.push(await subscribed(a, ch));
        for (const ch of names) {
            for (let i = 1; i <= 3; i++) await apiResult(b, 'publish', { channel: ch, data: { ch, i } });
        }
        await waitFor(() => subs.every((s) => s.got.length === 3), 10000,
            () => `received: ${subs.map((s) => s.got.length).join(',')}`);
        for (const [k, s] of subs.entries())
            assert.deepEqual(s.got.map((p) => [p.data.ch, p.offset]), [1, 2, 3].map((o) => [names[k], o]));
        // The streams are split over the two instances (a consistent hash of the name).
        const on1 = names.filter((ch) => r1.cli('EXISTS', `${prefix}:{${ch}}:s`) === '1').length;
        const on2 = names.filter((ch) => r2.cli('EXISTS', `${prefix}:{${ch}}:s`) === '1').length;
        assert.equal(on1 + on2, names.length);
        assert.ok(on1 > 0 && on2 > 0, `${on1} channels on the first instance, ${on2} on the second`);
        for (const ch of names) {
            const h = await apiResult(a, 'history', { channel: ch, limit: -1 });
            assert.equal(h.offset, 3);
            const back = await rawSubscribe(b, ch, { recover: true, offset: 1, epoch: h.epoch });
            assert.equal(back.recovered, true);
            assert.deepEqual(back.publications.map((p) => p.offset), [2, 3]);
        }
        for (const s of subs) s.client.disconnect();
    } finally {
        await a.stop('SIGTERM', 3000);
        await b.stop('SIGTERM', 3000);
        await r1.stop();
        await r2.stop();
    }
});

test('a TLS-only Redis over rediss://: two nodes deliver, keep history and recover', T, async () => {
    const redis = await startRedis({ tls: true });
    const prefix = `e2e${Math.floor(Math.random() * 1e9)}`;
    const cfg = { ...config(redis, prefix), redis_tls_ca: redis.ca };
    const a = await start({ config: cfg, threads: 2 });
    const b = await start({ config: cfg, threads: 2 });
    try {
        const s = await subscribed(a, 'rec:tls');
        for (let i = 1; i <= 20; i++) await apiResult(b, 'publish', { channel: 'rec:tls', data: { i } });
        await waitFor(() => s.got.length === 20, 10000, () => `got ${s.got.length}`);
        assert.deepEqual(s.got.map((p) => p.offset), Array.from({ length: 20 }, (_, k) => k + 1));
        const h = await apiResult(a, 'history', { channel: 'rec:tls', limit: -1 });
        assert.equal(h.publications.length, 20);
        const back = await rawSubscribe(b, 'rec:tls', { recover: true, offset: 15, epoch: h.epoch });
        assert.equal(back.recovered, true);
        assert.deepEqual(back.publications.map((p) => p.offset), [16, 17, 18, 19, 20]);
        assert.equal((await httpRequest(a.port, 'GET', '/ready')).status, 200);
        s.client.disconnect();
    } finally {
        await a.stop('SIGTERM', 3000);
        await b.stop('SIGTERM', 3000);
        await redis.stop();
    }
    // A certificate that is not trusted: the node stays up, not ready, naming the instance.
    const other = await startRedis({ tls: true });
    const c = await start({ config: { ...config(other, prefix) } });
    try {
        await sleep(500);
        const ready = await httpRequest(c.port, 'GET', '/ready');
        assert.equal(ready.status, 503);
        assert.deepEqual(ready.json.unavailable.map((u) => u.name), [other.url]);
        assert.match(c.stderr(), /TLS handshake failed/);
    } finally {
        await c.stop('SIGTERM', 3000);
        await other.stop();
    }
});

test('pipelined API calls on one connection answer at once through Redis, in request order', T, async () => {
    await withNodes(1, async ([h]) => {
        const conn = await RawConn.connect(h.port);
        const post = (path, body) => `POST ${path} HTTP/1.1\r\nHost: x\r\nX-API-Key: ${h.apiKey}\r\n`
            + `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
        try {
            /* Publishes (a Redis round trip each), history and info (Redis too), and requests
             * that are not API calls (they wait for the calls ahead of them), in one write. */
            const want = [];
            let req = '';
            for (let i = 1; i <= 200; i++) {
                req += post('/api/publish', JSON.stringify({ channel: 'rec:pipe', data: { i } }));
                want.push({ publish: i });
                if (i % 50 === 0) {
                    req += post('/api/history', JSON.stringify({ channel: 'rec:pipe', limit: -1 }));
                    want.push({ history: i });
                    req += 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n';
                    want.push({ health: i });
                    req += post('/api/info', '{}');
                    want.push({ info: i });
                }
            }
            conn.write(req);
            for (const w of want) {
                const r = await conn.readResponse(10000);
                assert.equal(r.status, 200, `${JSON.stringify(w)}: ${r.raw}`);
                if (w.publish) assert.equal(r.json.result.offset, w.publish, 'offsets in request order');
                if (w.history) {
                    /* rec keeps 100: the newest 100 of those ahead of it */
                    const from = Math.max(1, w.history - 99);
                    assert.deepEqual((r.json.result.publications || []).map((p) => p.data.i),
                        Array.from({ length: w.history - from + 1 }, (_, k) => from + k),
                        'history holds the publishes ahead of it, in order');
                }
                if (w.health) assert.deepEqual(r.json, { status: 'ok' });
                if (w.info) assert.ok(r.json.result.nodes.length >= 1);
            }
        } finally {
            conn.destroy();
        }
    });
});
