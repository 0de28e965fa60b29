// Several herald nodes on one real Redis Cluster (engine "redis", redis_cluster_urls: three
// masters with a replica each, redis-server 7): delivery, history, presence, recovery and
// idempotency hold across nodes for channels on every master; pub/sub connections killed, a
// slot moved by hand and a master killed mid-stream. One cluster for the file; the test that
// kills a master runs last.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { httpRequest, sanitizerReport, start, sleep } from './lib/herald.mjs';
import { makeClient, once } from './lib/centrifuge.mjs';
import { api, apiResult, waitFor } from './lib/proxy.mjs';
import { wsOpen } from './lib/raw.mjs';
import { startRedisCluster } from './lib/redis.mjs';

const T = { timeout: 60000 };

let cluster = null;
before(async () => { cluster = await startRedisCluster({ masters: 3, replicas: 1 }); }, { timeout: 40000 });
after(async () => { if (cluster) await cluster.stop(); });

function config(prefix) {
    return {
        engine: 'redis',
        redis_cluster_urls: cluster.seeds,
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

function tail(s, n = 1500) {
    return s.length > n ? `...${s.slice(-n)}` : s;
}

// n herald nodes on the shared cluster with a fresh prefix; fn(nodes, prefix); all stopped after
// (a failure's message gets the tail of every node's stderr; a clean run must leave no
// sanitizer report).
async function withNodes(n, fn) {
    const prefix = `e2e${Math.floor(Math.random() * 1e9)}`;
    const nodes = [];
    let failed = false;
    try {
        for (let i = 0; i < n; i++) nodes.push(await start({ config: config(prefix), threads: 2 }));
        return await fn(nodes, prefix);
    } catch (err) {
        failed = true;
        if (err && typeof err === 'object' && nodes.length) {
            const logs = nodes.map((h, k) => `--- herald node ${k} stderr ---\n${tail(h.stderr())}`).join('\n');
            try { err.message = `${err.message}\n${logs}`; } catch { /* frozen */ }
        }
        throw err;
    } finally {
        for (const h of nodes) await h.stop(failed ? 'SIGKILL' : 'SIGTERM', 3000);
        if (!failed) {
            for (const h of nodes) {
                const report = sanitizerReport(h.stderr());
                // eslint-disable-next-line no-unsafe-finally
                if (report) throw new Error(`sanitizer report in herald's stderr:\n${report}`);
            }
        }
    }
}

// The slot of a channel is that of its keys, prefix:{channel}:...: the hash tag's.
const slotKey = (ch) => `{${ch}}`;

// perMaster names `${base}${k}` for every master now serving slots: {names, byMaster: Map port ->
// names}; fails unless every master got its share.
async function spread(base, perMaster) {
    const masters = await cluster.masters();
    assert.equal(masters.length, 3, `masters: ${masters.map((m) => m.port)}`);
    const byMaster = new Map(masters.map((m) => [m.port, []]));
    for (let k = 0; k < 200 && [...byMaster.values()].some((v) => v.length < perMaster); k++) {
        const ch = `${base}${k}`;
        const owner = await cluster.slotOwner(slotKey(ch));
        const list = byMaster.get(owner?.port);
        if (list && list.length < perMaster) list.push(ch);
    }
    for (const [port, list] of byMaster) assert.equal(list.length, perMaster, `channels on master ${port}`);
    return { names: [...byMaster.values()].flat(), byMaster };
}

// What a subscription went through that tells its app something was lost: a resubscribe asked by
// the server (an unsubscribe push with a code >= 2500: the SDK's 'subscribing' event carries it),
// an unsubscribe for good, or a resubscribe that says it could not recover.
function isLoss(e) {
    return (e.ev === 'subscribing' && e.code >= 2500) || e.ev === 'unsubscribed'
        || (e.ev === 'subscribed' && e.wasRecovering && !e.recovered);
}

// One centrifuge-js client on h subscribed to each of channels. -> {client, subs: {ch: {sub, got,
// timeline}}, sub, got, timeline (those of the first channel)}. timeline: in order, {pub} for a
// publication and {ev, ...} for the subscription's events after the first subscribe.
async function follow(h, channels, user = 'u') {
    const m = makeClient(h, { token: h.token(user) });
    const subs = {};
    for (const ch of channels) {
        const sub = m.client.newSubscription(ch);
        const s = { sub, got: [], timeline: [] };
        sub.on('publication', (ctx) => { s.got.push(ctx); s.timeline.push({ pub: ctx }); });
        sub.on('subscribing', (ctx) => s.timeline.push({ ev: 'subscribing', code: ctx.code, reason: ctx.reason }));
        sub.on('subscribed', (ctx) => s.timeline.push({ ev: 'subscribed', wasRecovering: ctx.wasRecovering,
            recovered: ctx.recovered }));
        sub.on('unsubscribed', (ctx) => s.timeline.push({ ev: 'unsubscribed', code: ctx.code, reason: ctx.reason }));
        subs[ch] = s;
    }
    m.client.connect();
    await once(m.client, 'connected');
    await Promise.all(Object.values(subs).map((s) => {
        const ok = once(s.sub, 'subscribed');
        s.sub.subscribe();
        return ok;
    }));
    for (const s of Object.values(subs)) s.timeline.length = 0; /* nothing published yet */
    return { ...m, subs, ...subs[channels[0]] };
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, k) => from + k);

test('a publication on any node reaches the subscribers of every node, in order, on every master', T, async () => {
    await withNodes(3, async (nodes, prefix) => {
        const rec = await spread('rec:spread', 2);
        const plain = await spread('news', 1);
        const channels = [...rec.names, ...plain.names];
        const clients = [];
        for (const h of nodes) clients.push(await follow(h, channels));
        try {
            const N = 20;
            await Promise.all(channels.map(async (ch) => {
                for (let i = 1; i <= N; i++) await apiResult(nodes[i % nodes.length], 'publish', { channel: ch, data: { ch, i } });
            }));
            const all = clients.flatMap((c) => Object.values(c.subs));
            await waitFor(() => all.every((s) => s.got.length >= N), 10000,
                () => `received: ${all.map((s) => s.got.length).join(',')}`);
            await sleep(200);
            for (const [k, c] of clients.entries()) {
                for (const ch of channels) {
                    const got = c.subs[ch].got;
                    assert.deepEqual(got.map((p) => [p.data.ch, p.data.i]), range(1, N).map((i) => [ch, i]),
                        `node ${k}, ${ch}: every publication once, in order`);
                    if (ch.startsWith('rec:')) assert.deepEqual(got.map((p) => p.offset), range(1, N), `node ${k}, ${ch}`);
                }
            }
            // The streams are where the cluster says: every master holds keys of this test.
            for (const m of await cluster.masters()) {
                const keys = (await m.cliAsync('KEYS', `${prefix}:*`)).split('\n').filter(Boolean);
                assert.ok(keys.length > 0, `no key of ${prefix} on master ${m.port}`);
                for (const ch of rec.byMaster.get(m.port)) {
                    assert.ok(keys.some((key) => key.includes(`{${ch}}`)), `${ch}'s keys on ${m.port}: ${keys}`);
                }
            }
        } finally {
            for (const c of clients) c.client.disconnect();
        }
    });
});

test('history, presence and an idempotency key are the same from every node, on every master', T, async () => {
    await withNodes(3, async (nodes) => {
        const [a, b, c] = nodes;
        const { names: hist } = await spread('rec:h', 1);
        for (const ch of hist) {
            for (let i = 1; i <= 5; i++) await apiResult(nodes[i % 3], 'publish', { channel: ch, data: { i } });
            const h = await Promise.all(nodes.map((x) => apiResult(x, 'history', { channel: ch, limit: -1 })));
            assert.deepEqual(h[1], h[0], ch);
            assert.deepEqual(h[2], h[0], ch);
            assert.deepEqual(h[0].publications.map((p) => p.data.i), [1, 2, 3, 4, 5], ch);
            assert.equal(h[0].offset, 5, ch);

            const k = await Promise.all([a, b, c].map((x) => apiResult(x, 'publish',
                { channel: ch, data: { k: 1 }, idempotency_key: 'once' })));
            assert.deepEqual(k[1], k[0], `${ch}: the same result from b`);
            assert.deepEqual(k[2], k[0], `${ch}: the same result from c`);
            assert.equal((await apiResult(c, 'history', { channel: ch, limit: -1 })).offset, 6, `${ch}: published once`);
        }

        const { names: rooms } = await spread('room:r', 1);
        const ann = await follow(a, rooms, 'ann');
        const bob = await follow(b, rooms, 'bob');
        const bob2 = await follow(c, rooms, 'bob');
        try {
            for (const room of rooms) {
                const stats = await Promise.all(nodes.map((x) => apiResult(x, 'presence_stats', { channel: room })));
                for (const s of stats) assert.deepEqual(s, { num_clients: 3, num_users: 2 }, room);
                const members = await apiResult(c, 'presence', { channel: room });
                assert.equal(Object.keys(members.presence).length, 3, room);
            }
            // channels asks every node (controls by SPUBLISH on the cluster) and sums: once all
            // three have announced themselves, each lists every room with its three clients.
            await waitFor(async () => (await Promise.all(nodes.map(async (x) =>
                (await apiResult(x, 'info', {})).nodes.length))).every((n) => n === 3), 12000,
            () => 'three nodes in info');
            for (const x of nodes) {
                const chs = (await apiResult(x, 'channels', { pattern: 'room:r' })).channels;
                assert.deepEqual(Object.keys(chs).sort(), [...rooms].sort());
                for (const room of rooms) assert.deepEqual(chs[room], { num_clients: 3 }, room);
            }
            // join/leave reach every node: ann (on a) sees bob's connection on c leave, in every room
            const leaves = [];
            for (const room of rooms) ann.subs[room].sub.on('leave', (ctx) => leaves.push([room, ctx.info.user]));
            bob2.client.disconnect();
            await waitFor(() => rooms.every((r) => leaves.some(([x, u]) => x === r && u === 'bob')), 5000,
                () => `leave pushes on node a: ${JSON.stringify(leaves)}`);
            for (const room of rooms) {
                await waitFor(async () => (await apiResult(a, 'presence_stats', { channel: room })).num_clients === 2,
                    5000, () => `presence of ${room} after the leave`);
                assert.deepEqual(await apiResult(b, 'presence_stats', { channel: room }), { num_clients: 2, num_users: 2 });
            }
        } finally {
            for (const s of [ann, bob, bob2]) s.client.disconnect();
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
    assert.ok(reply.subscribe, `subscribe refused: ${JSON.stringify(reply)}`);
    return reply.subscribe;
}

test('a client that moves to another node recovers exactly what it missed, on every master', T, async () => {
    await withNodes(2, async ([a, b]) => {
        const { names } = await spread('rec:move', 1);
        for (const ch of names) {
            for (let i = 1; i <= 3; i++) await apiResult(a, 'publish', { channel: ch, data: { i } });
            const first = await rawSubscribe(a, ch, {});
            assert.equal(first.offset, 3, ch);
            for (let i = 4; i <= 10; i++) await apiResult(b, 'publish', { channel: ch, data: { i } });
            const back = await rawSubscribe(b, ch, { recover: true, offset: 3, epoch: first.epoch });
            assert.equal(back.recovered, true, ch);
            assert.deepEqual(back.publications.map((p) => p.data.i), [4, 5, 6, 7, 8, 9, 10], ch);
            assert.deepEqual(back.publications.map((p) => p.offset), [4, 5, 6, 7, 8, 9, 10], ch);
            const wrong = await rawSubscribe(b, ch, { recover: true, offset: 3, epoch: 'deadbeef' });
            assert.equal(wrong.recovered, false, ch);
            assert.equal(wrong.publications, undefined, ch);
        }
    });
});

test('pub/sub connections killed on every Redis node while another node publishes 1,000: all, once, in order', T, async () => {
    await withNodes(3, async ([a, b, c]) => {
        const subs = [await follow(a, ['big:gap']), await follow(a, ['big:gap'], 'v'), await follow(c, ['big:gap'], 'w')];
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
            let killed = 0;
            while (next <= N && kills < 50) {
                await sleep(30);
                for (const r of await cluster.cliAll('CLIENT', 'KILL', 'TYPE', 'pubsub')) killed += Number(r.out) || 0;
                kills++;
            }
            await publisher;
            await waitFor(() => subs.every((s) => s.got.length >= N), 20000,
                () => `received: ${subs.map((s) => s.got.length).join(', ')} after ${kills} rounds of kills`);
            await sleep(300);
            for (const s of subs) {
                assert.equal(s.got.length, N, 'each publication exactly once');
                assert.deepEqual(s.got.map((p) => p.offset), range(1, N), 'in order');
                /* A batch's 20 publishes race each other to Redis: the offsets give the
                 * order, and every one of them arrives once. */
                assert.deepEqual(s.got.map((p) => p.data.i).sort((x, y) => x - y), range(1, N),
                    'every publication once');
                assert.deepEqual(s.timeline.filter((e) => e.ev), [], 'no resubscribe was needed');
            }
            assert.ok(killed > 0, `${kills} rounds of CLIENT KILL TYPE pubsub killed no connection`);
        } finally {
            for (const s of subs) s.client.disconnect();
        }
    });
});

test('the server API\'s info lists every live node', T, async () => {
    await withNodes(3, async (nodes) => {
        const uidsOf = async (h) => (await apiResult(h, 'info', {})).nodes.map((n) => n.uid).sort();
        await waitFor(async () => (await Promise.all(nodes.map(uidsOf))).every((u) => u.length === 3), 12000,
            () => 'all three nodes in info');
        const lists = await Promise.all(nodes.map(uidsOf));
        assert.equal(new Set(lists[0]).size, 3);
        assert.deepEqual(lists[1], lists[0]);
        assert.deepEqual(lists[2], lists[0]);
    });
});

// Publishes {i} to channel through h, one at a time, until stop(): acked (i -> the result and
// when) and failed (i -> status, body), so a test can tell what was confirmed.
function publisher(h, channel, pauseMs = 10) {
    const acked = new Map();
    const failed = [];
    let stopping = false;
    let i = 0;
    const done = (async () => {
        while (!stopping) {
            const n = ++i;
            let r;
            try {
                r = await api(h, 'publish', { channel, data: { i: n } });
            } catch (err) {
                failed.push({ i: n, at: Date.now(), status: 'no answer', text: err.message });
                continue;
            }
            if (r.status === 200 && r.json && 'result' in r.json) acked.set(n, { ...r.json.result, at: Date.now() });
            else failed.push({ i: n, at: Date.now(), status: r.status, text: r.text, error: r.json?.error });
            await sleep(pauseMs);
        }
    })();
    return {
        acked, failed, done,
        last: () => Math.max(0, ...acked.keys()),
        stop: async () => { stopping = true; await done; },
    };
}

// A publish that failed must say so as a temporary failure: HTTP 503 or an error with code 100.
function assertHonestFailures(failed) {
    for (const f of failed) {
        assert.ok(f.status === 503 || f.error?.code === 100,
            `publish ${f.i} failed otherwise than 503 / code 100: ${f.status} ${f.text}`);
    }
}

// One subscriber's record against what the publisher was told: split at every loss report,
// each stretch in order with consecutive offsets (no gap, no duplicate); a publication received
// at most once and with the offset its publish returned; every acknowledged publication received
// or, after the last one received before it, a loss reported.
function assertNoSilentGap(label, timeline, acked) {
    const stretches = [[]];
    const seen = new Map();
    timeline.forEach((e, k) => {
        if (e.pub) {
            const i = e.pub.data.i;
            assert.ok(!seen.has(i), `${label}: publication ${i} received twice`);
            seen.set(i, k);
            stretches.at(-1).push(e.pub);
            if (acked.has(i)) {
                assert.equal(e.pub.offset, acked.get(i).offset,
                    `${label}: publication ${i} came with offset ${e.pub.offset}, its publish said ${acked.get(i).offset}`);
            }
        } else if (isLoss(e)) {
            stretches.push([]);
        }
    });
    for (const [n, st] of stretches.entries()) {
        for (let k = 1; k < st.length; k++) {
            assert.equal(st[k].offset, st[k - 1].offset + 1,
                `${label}, stretch ${n}: offset ${st[k].offset} (publication ${st[k].data.i}) after ${st[k - 1].offset} `
                + `(publication ${st[k - 1].data.i}) with no loss reported in between`);
            assert.ok(st[k].data.i > st[k - 1].data.i, `${label}, stretch ${n}: out of order`);
        }
    }
    for (const i of acked.keys()) {
        if (seen.has(i)) continue;
        let lastBefore = -1;
        for (const [j, k] of seen) if (j < i && k > lastBefore) lastBefore = k;
        assert.ok(timeline.some((e, k) => k > lastBefore && isLoss(e)),
            `${label}: acknowledged publication ${i} never arrived and no loss was reported; events: `
            + JSON.stringify(timeline.filter((e) => e.ev)));
    }
}

// OPTIONAL case, beyond the required set: a slot moved by hand mid-stream, the way
// redis-cli --cluster reshard does it (IMPORTING/MIGRATING, MIGRATE of its keys, SETSLOT NODE).
test('a channel\'s slot moved to another master mid-stream: delivery goes on with no gap or duplicate', T, async (t) => {
    await withNodes(3, async ([a, b, c]) => {
        const ch = 'rec:migrate';
        const slot = await cluster.slot(slotKey(ch));
        const src = await cluster.slotOwner(slotKey(ch));
        const dst = (await cluster.masters()).find((m) => m.port !== src.port);
        const srcId = src.cli('CLUSTER', 'MYID');
        const dstId = dst.cli('CLUSTER', 'MYID');
        const subs = [await follow(a, [ch]), await follow(b, [ch], 'v')];
        const pub = publisher(c, ch);
        let settled = false;
        try {
            await waitFor(() => subs.every((s) => s.got.length >= 20), 10000,
                () => `before the move: ${subs.map((s) => s.got.length)}; failed ${JSON.stringify(pub.failed.slice(0, 3))}`);
            const tMigrating = Date.now();
            assert.equal(dst.cli('CLUSTER', 'SETSLOT', slot, 'IMPORTING', srcId), 'OK');
            assert.equal(src.cli('CLUSTER', 'SETSLOT', slot, 'MIGRATING', dstId), 'OK');
            await sleep(300);
            for (let round = 0; ; round++) {
                assert.ok(round < 50, 'keys still on the source after 50 MIGRATE rounds');
                const keys = (await src.cliAsync('CLUSTER', 'GETKEYSINSLOT', String(slot), '1000')).split('\n').filter(Boolean);
                if (!keys.length) break;
                const r = await src.cliAsync('MIGRATE', '127.0.0.1', String(dst.port), '', '0', '5000', 'KEYS', ...keys);
                assert.match(r, /^(OK|NOKEY)$/, `MIGRATE: ${r}`);
                await sleep(100);
            }
            const tAsk = Date.now();
            await sleep(300); /* the keys are on the target: the source answers ASK for them meanwhile */
            const others = (await cluster.masters()).filter((m) => m.port !== src.port && m.port !== dst.port);
            for (const m of [dst, src, ...others]) assert.equal(m.cli('CLUSTER', 'SETSLOT', slot, 'NODE', dstId), 'OK');
            settled = true;
            const tMoved = Date.now();
            const ackedIn = (from, to) => [...pub.acked.values()].filter((r) => r.at > from && r.at <= to).length;
            await waitFor(() => ackedIn(tMoved, Infinity) >= 30, 10000,
                () => `30 publishes acknowledged after the move: ${ackedIn(tMoved, Infinity)}; last failures `
                    + JSON.stringify(pub.failed.slice(-3)));
            await pub.stop();
            const last = pub.last();
            await waitFor(() => subs.every((s) => s.got.some((p) => p.data.i === last)), 10000,
                () => `the last publication (${last}): ${subs.map((s) => s.got.at(-1)?.data.i)}`);
            await sleep(200);

            t.diagnostic(`${pub.acked.size} acknowledged (${ackedIn(tMigrating, tMoved)} while the slot was `
                + `migrating, ${ackedIn(tAsk, tMoved)} of them once its keys had moved), ${pub.failed.length} failed; `
                + 'subscriber events: '
                + subs.map((s) => JSON.stringify(s.timeline.filter((e) => e.ev))).join(' / '));
            // A cluster client follows ASK: publishing does not stop while the slot moves.
            assert.ok(ackedIn(tAsk, tMoved) > 0, `no publish acknowledged in the ${tMoved - tAsk} ms the source `
                + `answered ASK (${pub.failed.filter((f) => f.at > tAsk && f.at <= tMoved).length} failed: `
                + `${JSON.stringify(pub.failed.find((f) => f.at > tAsk))})`);
            assert.equal((await cluster.slotOwner(slotKey(ch)))?.port, dst.port, 'the slot is on the target');
            assert.ok(Number(dst.cli('CLUSTER', 'COUNTKEYSINSLOT', String(slot))) > 0, 'the keys are on the target');
            assert.equal(src.cli('CLUSTER', 'COUNTKEYSINSLOT', String(slot)), '0');
            assertHonestFailures(pub.failed);
            for (const [k, s] of subs.entries()) {
                const label = `subscriber ${k}`;
                assert.deepEqual(s.timeline.filter(isLoss).filter((e) => e.ev !== 'subscribing'), [],
                    `${label}: nothing lost, nothing to report`);
                const offsets = s.got.map((p) => p.offset);
                assert.deepEqual(offsets, range(1, offsets.length), `${label}: every offset once, in order`);
                const got = new Set(s.got.map((p) => p.data.i));
                const missing = [...pub.acked.keys()].filter((i) => !got.has(i));
                assert.deepEqual(missing, [], `${label}: acknowledged publications that never arrived`);
                assertNoSilentGap(label, s.timeline, pub.acked);
            }
        } finally {
            await pub.stop();
            for (const s of subs) s.client.disconnect();
            // A move left half done would confuse the tests after: the slot back to normal.
            if (!settled) for (const m of await cluster.masters()) m.cli('CLUSTER', 'SETSLOT', slot, 'STABLE');
        }
    });
});

// Kills a master of the shared cluster: last in the file.
test('a master killed mid-stream: publishing comes back after the failover, no acknowledged publication silently lost', T, async (t) => {
    await withNodes(3, async ([a, b, c]) => {
        const ch = 'rec:failover';
        const victim = await cluster.slotOwner(slotKey(ch));
        assert.ok(victim && victim.alive(), 'the channel has a live master');
        const subs = [await follow(a, [ch]), await follow(b, [ch], 'v')];
        const pub = publisher(c, ch);
        try {
            await waitFor(() => subs.every((s) => s.got.length >= 20), 10000,
                () => `before the kill: ${subs.map((s) => s.got.length)}; failed ${JSON.stringify(pub.failed.slice(0, 3))}`);
            const tKill = Date.now();
            await victim.kill();
            await cluster.waitFailover(victim.port, 20000);
            const tFailover = Date.now();
            assert.notEqual((await cluster.slotOwner(slotKey(ch)))?.port, victim.port);
            const again = await waitFor(() => [...pub.acked].find(([, r]) => r.at > tFailover), 10000,
                () => `a publish acknowledged after the failover; last failures: ${JSON.stringify(pub.failed.slice(-3))}`);
            await waitFor(() => pub.last() >= again[0] + 30, 10000, () => 'publishing after the failover');
            await pub.stop();
            const last = pub.last();
            await waitFor(() => subs.every((s) => s.got.some((p) => p.data.i === last)), 15000,
                () => `the last publication (${last}) on every subscriber: ${subs.map((s) => s.got.at(-1)?.data.i)}; `
                    + `events: ${subs.map((s) => JSON.stringify(s.timeline.filter((e) => e.ev))).join(' / ')}`);
            for (const h of [a, b, c]) {
                await waitFor(async () => (await httpRequest(h.port, 'GET', '/ready')).status === 200, 10000,
                    () => `/ready on ${h.port} after the failover`);
            }
            await sleep(200);

            // Timings and counts, for whoever reads a failure.
            const label = `(kill at +0, failover ${tFailover - tKill} ms, ${pub.acked.size} acknowledged, `
                + `${pub.failed.length} failed)`;
            t.diagnostic(`failover ${tFailover - tKill} ms; first acknowledged publish ${again[1].at - tFailover} ms `
                + `after it; ${pub.acked.size} acknowledged, ${pub.failed.length} failed `
                + `(${[...new Set(pub.failed.map((f) => f.status))].join(',')}); loss reports: `
                + subs.map((s) => s.timeline.filter(isLoss).length).join(','));
            assertHonestFailures(pub.failed);
            const late = [...pub.acked].filter(([, r]) => r.at > tFailover).map(([i]) => i);
            for (const [k, s] of subs.entries()) {
                assert.ok(s.got.some((p) => late.includes(p.data.i)), `subscriber ${k}: publications after the failover`);
                assertNoSilentGap(`subscriber ${k} ${label}`, s.timeline, pub.acked);
            }
            assert.ok(a.alive() && b.alive() && c.alive(), 'every herald node is up');
        } finally {
            await pub.stop();
            for (const s of subs) s.client.disconnect();
        }
    });
});

// A master that dies with publications its replica never got: the promoted replica's stream is
// behind what the subscribers were given. That must reach them as a loss (the unsubscribe push
// with 2500, then a resubscribe), never as silently skipped or repeated offsets. The replica's
// link is cut first (a password it does not have keeps it from coming back), so the case is
// certain, not a race. Its own cluster: it kills a master.
test('a master that dies before its replica got the last publications: the subscribers are told of the loss', T, async (t) => {
    const own = await startRedisCluster({ masters: 3, replicas: 1 });
    const prefix = `e2e${Math.floor(Math.random() * 1e9)}`;
    const cfg = { ...config(prefix), redis_cluster_urls: own.seeds };
    const nodes = [await start({ config: cfg, threads: 2 }), await start({ config: cfg, threads: 2 })];
    const [a, b] = nodes;
    let subs = [];
    try {
        const ch = 'rec:unreplicated';
        const master = await own.slotOwner(slotKey(ch));
        const replica = own.nodes.find((n) => n !== master && n.alive()
            && n.cli('INFO', 'replication').includes(`master_port:${master.port}`));
        assert.ok(master && replica, 'the channel\'s master and its replica');
        subs = [await follow(a, [ch]), await follow(b, [ch], 'v')];
        const publish = async (i) => apiResult(b, 'publish', { channel: ch, data: { i } });
        for (let i = 1; i <= 10; i++) await publish(i);
        await waitFor(() => subs.every((s) => s.got.length === 10), 10000, () => 'the first ten');
        const replOffset = (n, field) => Number((n.cli('INFO', 'replication').match(new RegExp(`${field}:(\\d+)`)) || [])[1]);
        await waitFor(() => replOffset(replica, 'slave_repl_offset') === replOffset(master, 'master_repl_offset'),
            10000, () => 'replicated');

        // Cut the replica off, publish five it will never have, then kill the master.
        const pw = ['-a', 'not-the-replicas', '--no-auth-warning'];
        master.cli('CONFIG', 'SET', 'requirepass', 'not-the-replicas');
        assert.equal(master.cli(...pw, 'CLIENT', 'KILL', 'TYPE', 'replica'), '1', 'the replica\'s link cut');
        for (let i = 11; i <= 15; i++) assert.equal((await publish(i)).offset, i);
        await waitFor(() => subs.every((s) => s.got.length === 15), 10000, () => 'the five unreplicated');
        assert.ok(replOffset(replica, 'slave_repl_offset') < Number((master.cli(...pw, 'INFO', 'replication')
            .match(/master_repl_offset:(\d+)/) || [])[1]), 'the replica has not got them');
        await master.kill();
        await own.waitFailover(master.port, 20000);

        // Publishing resumes on the promoted replica, from its offset; each subscriber is told
        // of the loss and resubscribes (what was published before it did may be gone for it:
        // that is what the report says). Then new publications reach everyone.
        let i = 16;
        await waitFor(async () => {
            try { await publish(i); i++; return true; } catch { return false; }
        }, 15000, () => 'a publish after the failover');
        await waitFor(() => subs.every((s) => {
            const at = s.timeline.findIndex(isLoss);
            return at >= 0 && s.timeline.slice(at).some((e) => e.ev === 'subscribed');
        }), 15000, () => `every subscriber told and resubscribed: `
            + subs.map((s) => JSON.stringify(s.timeline.filter((e) => e.ev))).join(' / '));
        for (let k = 0; k < 10; k++, i++) await publish(i);
        await waitFor(() => subs.every((s) => s.got.some((p) => p.data.i === i - 1)), 15000,
            () => `the newest publication on every subscriber: ${subs.map((s) => s.got.at(-1)?.data.i)}; events: `
                + subs.map((s) => JSON.stringify(s.timeline.filter((e) => e.ev))).join(' / '));
        t.diagnostic(`events: ${subs.map((s) => JSON.stringify(s.timeline.filter((e) => e.ev))).join(' / ')}`);
        for (const [k, s] of subs.entries()) {
            const lossAt = s.timeline.findIndex(isLoss);
            assert.ok(lossAt >= 0, `subscriber ${k}: the loss was reported`);
            /* The stream took a new epoch: nobody recovers across the hole. */
            const resub = s.timeline.slice(lossAt).find((e) => e.ev === 'subscribed');
            assert.equal(resub?.recovered, false, `subscriber ${k}: resubscribed without recovering`);
            const before = s.timeline.slice(0, lossAt).filter((e) => e.pub).map((e) => e.pub.offset);
            assert.deepEqual(before, range(1, 15), `subscriber ${k}: all fifteen, before the report`);
            const after = s.timeline.slice(lossAt).filter((e) => e.pub).map((e) => e.pub.data.i);
            assert.ok(after.length > 0 && after.every((x) => x > 15), `subscriber ${k}: only new ones after: ${after}`);
            assert.ok(after.every((x, n) => n === 0 || x === after[n - 1] + 1), `subscriber ${k}: in order: ${after}`);
        }
        for (const h of nodes) assert.doesNotMatch(h.stderr(), /redis: ERR/, 'no command refused by Redis');
    } catch (err) {
        const logs = nodes.map((h, k) => `--- herald node ${k} stderr ---\n${tail(h.stderr())}`).join('\n');
        try { err.message = `${err.message}\n${logs}`; } catch { /* frozen */ }
        throw err;
    } finally {
        for (const s of subs) s.client.disconnect();
        for (const h of nodes) await h.stop('SIGTERM', 3000);
        await own.stop();
    }
    for (const h of nodes) {
        const report = sanitizerReport(h.stderr());
        assert.ok(!report, `sanitizer report:\n${report}`);
    }
});
