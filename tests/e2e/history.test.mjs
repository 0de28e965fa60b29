// Channel history: offsets and epoch from /api/publish, /api/history (limit, since, reverse,
// wrong epoch), /api/history_remove, history_size and history_ttl, and the client history command.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { makeClient, once } from './lib/centrifuge.mjs';
import { ProtoClient, rawValueAt } from './lib/proto.mjs';
import { api, apiResult, sharedHerald, sleep } from './lib/proxy.mjs';

const T = { timeout: 20000 };

const CONFIG = {
    namespaces: {
        '': {},
        h: { history_size: 1000, history_ttl: 300 },
        small: { history_size: 5, history_ttl: 300 },
        short: { history_size: 10, history_ttl: 1 },
        none: { presence: true },
    },
};

const run = sharedHerald({ config: CONFIG });

async function publishN(h, channel, n, from = 1) {
    const out = [];
    for (let i = from; i < from + n; i++) out.push(await apiResult(h, 'publish', { channel, data: { i } }));
    return out;
}

test('each publication gets the next offset 1, 2, 3... under one string epoch', T, async () => {
    await run(async (h) => {
        const res = await publishN(h, 'h:seq', 5);
        assert.deepEqual(res.map((r) => r.offset), [1, 2, 3, 4, 5]);
        assert.equal(typeof res[0].epoch, 'string');
        assert.ok(res[0].epoch.length > 0);
        for (const r of res) assert.equal(r.epoch, res[0].epoch);
        // Another channel has its own offsets and (normally) another epoch.
        const other = await apiResult(h, 'publish', { channel: 'h:seq2', data: 0 });
        assert.equal(other.offset, 1);
        // Without history: {} (no offset).
        assert.deepEqual(await apiResult(h, 'publish', { channel: 'none:x', data: 1 }), {});
        assert.deepEqual(await apiResult(h, 'publish', { channel: 'plain', data: 1 }), {});
    });
});

test('/api/history: limit absent/0 -> position only, -1 -> all, N -> first N, since, reverse', T,
    async () => {
        await run(async (h) => {
            const pubs = await publishN(h, 'h:q', 6);
            const epoch = pubs[0].epoch;
            const pos = await apiResult(h, 'history', { channel: 'h:q' });
            assert.deepEqual(pos, { publications: [], epoch, offset: 6 });
            assert.deepEqual(await apiResult(h, 'history', { channel: 'h:q', limit: 0 }),
                { publications: [], epoch, offset: 6 });

            const all = await apiResult(h, 'history', { channel: 'h:q', limit: -1 });
            assert.equal(all.epoch, epoch);
            assert.equal(all.offset, 6);
            assert.deepEqual(all.publications.map((p) => [p.offset, p.data.i]),
                [[1, 1], [2, 2], [3, 3], [4, 4], [5, 5], [6, 6]]);

            const first2 = await apiResult(h, 'history', { channel: 'h:q', limit: 2 });
            assert.deepEqual(first2.publications.map((p) => p.offset), [1, 2]);
            assert.equal(first2.offset, 6, 'offset is the top of the stream, not the last returned');

            const since = await apiResult(h, 'history',
                { channel: 'h:q', limit: -1, since: { offset: 3, epoch } });
            assert.deepEqual(since.publications.map((p) => p.offset), [4, 5, 6]);
            const since2 = await apiResult(h, 'history',
                { channel: 'h:q', limit: 2, since: { offset: 3, epoch } });
            assert.deepEqual(since2.publications.map((p) => p.offset), [4, 5]);
            const sinceTop = await apiResult(h, 'history',
                { channel: 'h:q', limit: -1, since: { offset: 6, epoch } });
            assert.deepEqual(sinceTop.publications, []);

            const rev = await apiResult(h, 'history', { channel: 'h:q', limit: -1, reverse: true });
            assert.deepEqual(rev.publications.map((p) => p.offset), [6, 5, 4, 3, 2, 1]);
            const rev2 = await apiResult(h, 'history', { channel: 'h:q', limit: 2, reverse: true });
            assert.deepEqual(rev2.publications.map((p) => p.offset), [6, 5]);

            const wrong = await api(h, 'history',
                { channel: 'h:q', limit: -1, since: { offset: 1, epoch: `${epoch}x` } });
            assert.equal(wrong.status, 200, wrong.text);
            assert.equal(wrong.json?.error?.code, 112, `wrong epoch: ${wrong.text}`);

            // A channel never published to: offset 0, some epoch, nothing.
            const empty = await apiResult(h, 'history', { channel: 'h:never', limit: -1 });
            assert.deepEqual(empty.publications, []);
            assert.equal(empty.offset, 0);
            assert.equal(typeof empty.epoch, 'string');
        });
    });

test('/api/history reverse with since: the publications before that offset, newest first (Centrifugo)',
    T, async () => {
        await run(async (h) => {
            const pubs = await publishN(h, 'h:rs', 6);
            const epoch = pubs[0].epoch;
            const revSince = await apiResult(h, 'history',
                { channel: 'h:rs', limit: -1, reverse: true, since: { offset: 4, epoch } });
            assert.deepEqual(revSince.publications.map((p) => p.offset), [3, 2, 1]);
            const revSince2 = await apiResult(h, 'history',
                { channel: 'h:rs', limit: 2, reverse: true, since: { offset: 4, epoch } });
            assert.deepEqual(revSince2.publications.map((p) => p.offset), [3, 2]);
        });
    });

test('/api/history on a namespace without history answers 108; unknown namespace 102', T, async () => {
    await run(async (h) => {
        for (const ch of ['none:x', 'plain']) {
            const r = await api(h, 'history', { channel: ch, limit: -1 });
            assert.equal(r.json?.error?.code, 108, `${ch}: ${r.text}`);
        }
        const u = await api(h, 'history', { channel: 'nope:x', limit: -1 });
        assert.equal(u.json?.error?.code, 102, u.text);
    });
});

test('history keeps the data bytes as published (spacing, key order)', T, async () => {
    await run(async (h) => {
        const data = '{"z" : 1,  "a":[ 1 ,2.50 ], "s":"caf\\u00e9"}';
        const r = await api(h, 'publish', `{"channel":"h:bytes","data":${data}}`);
        assert.equal(r.json?.result?.offset, 1, r.text);
        const hist = await api(h, 'history', { channel: 'h:bytes', limit: -1 });
        assert.equal(rawValueAt(hist.text, ['result', 'publications']).includes(data), true,
            `history does not hold the exact bytes: ${hist.text}`);
    });
});

test('/api/history_remove empties the history and keeps the offset; publishing continues after it', T,
    async () => {
        await run(async (h) => {
            const pubs = await publishN(h, 'h:rm', 3);
            assert.deepEqual(await apiResult(h, 'history_remove', { channel: 'h:rm' }), {});
            const after = await apiResult(h, 'history', { channel: 'h:rm', limit: -1 });
            assert.deepEqual(after.publications, []);
            assert.equal(after.offset, 3, 'offset unchanged by history_remove');
            assert.equal(after.epoch, pubs[0].epoch, 'epoch unchanged by history_remove');
            const next = await apiResult(h, 'publish', { channel: 'h:rm', data: { i: 4 } });
            assert.equal(next.offset, 4);
            const again = await apiResult(h, 'history', { channel: 'h:rm', limit: -1 });
            assert.deepEqual(again.publications.map((p) => p.offset), [4]);
        });
    });

test('history_size bounds the kept publications (the newest are kept)', T, async () => {
    await run(async (h) => {
        await publishN(h, 'small:b', 12);
        const all = await apiResult(h, 'history', { channel: 'small:b', limit: -1 });
        assert.equal(all.offset, 12);
        assert.deepEqual(all.publications.map((p) => p.offset), [8, 9, 10, 11, 12]);
        assert.deepEqual(all.publications.map((p) => p.data.i), [8, 9, 10, 11, 12]);
        const lim = await apiResult(h, 'history', { channel: 'small:b', limit: 2 });
        assert.deepEqual(lim.publications.map((p) => p.offset), [8, 9]);
        // since an offset no longer held: error 112 is not expected; what is held after it.
        const since = await apiResult(h, 'history',
            { channel: 'small:b', limit: -1, since: { offset: 9, epoch: all.epoch } });
        assert.deepEqual(since.publications.map((p) => p.offset), [10, 11, 12]);
    });
});

test('history_ttl expires the publications', T, async () => {
    await run(async (h) => {
        await publishN(h, 'short:t', 3);
        const now = await apiResult(h, 'history', { channel: 'short:t', limit: -1 });
        assert.equal(now.publications.length, 3);
        await sleep(2300);
        const later = await apiResult(h, 'history', { channel: 'short:t', limit: -1 });
        assert.deepEqual(later.publications, [], `after history_ttl: ${JSON.stringify(later)}`);
    });
});

test('client history command: centrifuge-js sub.history for a subscriber; raw errors', T, async () => {
    await run(async (h) => {
        const pubs = await publishN(h, 'h:cli', 4);
        const m = makeClient(h, { token: h.token('hist-user') });
        const raw = await ProtoClient.open(h.wsUrl);
        try {
            m.client.connect();
            await once(m.client, 'connected');
            const sub = m.client.newSubscription('h:cli');
            const sd = once(sub, 'subscribed');
            sub.subscribe();
            await sd;
            const r = await sub.history({ limit: 10 });
            assert.equal(r.epoch, pubs[0].epoch);
            assert.equal(r.offset, 4);
            assert.deepEqual(r.publications.map((p) => [p.offset, p.data.i]), [[1, 1], [2, 2], [3, 3], [4, 4]]);
            const rev = await sub.history({ limit: 2, reverse: true });
            assert.deepEqual(rev.publications.map((p) => p.offset), [4, 3]);
            const since = await sub.history({ limit: -1, since: { offset: 2, epoch: pubs[0].epoch } });
            assert.deepEqual(since.publications.map((p) => p.offset), [3, 4]);
            await assert.rejects(sub.history({ limit: -1, since: { offset: 2, epoch: 'nope' } }),
                (err) => { assert.equal(err.code, 112, JSON.stringify(err)); return true; });

            assert.ok((await raw.connect(h.token('hist-raw'))).connect);
            // Not subscribed: permission denied.
            const ns = await raw.command('history', { channel: 'h:cli', limit: 10 });
            assert.equal(ns.error?.code, 103, `history without subscription: ${JSON.stringify(ns)}`);
            assert.ok((await raw.command('subscribe', { channel: 'none:x' })).subscribe);
            const nh = await raw.command('history', { channel: 'none:x', limit: 10 });
            assert.equal(nh.error?.code, 108, JSON.stringify(nh));
        } finally {
            m.client.disconnect();
            raw.close();
        }
    });
});
