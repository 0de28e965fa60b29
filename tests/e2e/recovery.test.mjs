// Recovery of missed publications after a reconnect: centrifuge-js behind a TCP proxy that cuts
// the connection while the API publishes continuously must end with every publication exactly
// once and in order; a gap the history no longer covers gives recovered:false and nothing; the
// raw subscribe shapes (recover, offset, epoch, recovery_max_publications).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { makeClient, once } from './lib/centrifuge.mjs';
import { ProtoClient } from './lib/proto.mjs';
import { TcpProxy, apiResult, sharedHerald, sleep, waitFor } from './lib/proxy.mjs';

const T = { timeout: 30000 };
const MAX_RECOVERY = 200;

const CONFIG = {
    recovery_max_publications: MAX_RECOVERY,
    namespaces: {
        '': {},
        rec: { history_size: 1000, history_ttl: 300, recover: true },
        tiny: { history_size: 3, history_ttl: 300, recover: true },
        norec: { history_size: 100, history_ttl: 300 },
    },
};

const run = sharedHerald({ config: CONFIG });

function proxiedClient(proxy, h, user) {
    return makeClient({ wsUrl: proxy.wsUrl() }, {
        token: h.token(user), minReconnectDelay: 100, maxReconnectDelay: 300,
    });
}

test('through a proxy that cuts the connection 4 times, 300 publications arrive exactly once, in order',
    T, async () => {
        await run(async (h) => {
            const proxy = await TcpProxy.start(h.port);
            const m = proxiedClient(proxy, h, 'rec-user');
            const N = 300;
            const CUTS = [40, 100, 170, 240];
            try {
                m.client.connect();
                await once(m.client, 'connected');
                const sub = m.client.newSubscription('rec:stream');
                const seqs = [];
                const subscribedCtx = [];
                sub.on('publication', (ctx) => seqs.push(ctx.data.seq));
                sub.on('subscribed', (ctx) => subscribedCtx.push(ctx));
                const first = once(sub, 'subscribed');
                sub.subscribe();
                await first;
                assert.equal(subscribedCtx[0].recoverable, true, 'the first subscribe is recoverable');

                const t0 = Date.now();
                let cut = 0;
                const cutSizes = [];
                for (let i = 1; i <= N; i++) {
                    const r = await apiResult(h, 'publish', { channel: 'rec:stream', data: { seq: i } });
                    assert.equal(r.offset, i);
                    if (CUTS.includes(i)) {
                        cutSizes.push(proxy.cutAll());
                        cut++;
                    }
                    const wait = t0 + i * 5 - Date.now(); // ~200 per second
                    if (wait > 0) await sleep(wait);
                }
                assert.equal(cut, CUTS.length);
                if (process.env.E2E_DEBUG) console.log('cut sizes', cutSizes, 'opened', m.stats.opened);
                await waitFor(() => seqs.length >= N && sub.state === 'subscribed', 10000,
                    () => `${N} publications (have ${seqs.length}, sub ${sub.state})`);
                await sleep(200);
                const expected = Array.from({ length: N }, (_, k) => k + 1);
                const missing = expected.filter((x) => !seqs.includes(x));
                const dups = seqs.filter((x, k) => seqs.indexOf(x) !== k);
                assert.deepEqual(seqs, expected,
                    `missing ${JSON.stringify(missing)}, duplicated ${JSON.stringify(dups)}`);
                assert.ok(cutSizes.filter((n) => n > 0).length >= 3,
                    `most cuts hit a live connection: ${JSON.stringify(cutSizes)}`);
                assert.ok(m.stats.opened >= CUTS.length + 1,
                    `the client reconnected after each cut (opened ${m.stats.opened})`);
                const resub = subscribedCtx.slice(1);
                assert.ok(resub.length >= CUTS.length, `resubscribed ${resub.length} times`);
                const withPubs = resub.filter((ctx) => ctx.hasRecoveredPublications).length;
                if (process.env.E2E_DEBUG) console.log('resubscribes with recovered publications', withPubs);
                assert.ok(withPubs >= 2, `publications were missed and recovered (${withPubs} times)`);
                for (const ctx of resub) {
                    assert.equal(ctx.wasRecovering, true, `resubscribe ctx ${JSON.stringify(ctx)}`);
                    assert.equal(ctx.recovered, true, `resubscribe ctx ${JSON.stringify(ctx)}`);
                }
            } finally {
                m.client.disconnect();
                await proxy.close();
            }
        });
    });

test('a gap larger than history_size: recovered:false and none of the gap is delivered', T,
    async () => {
        await run(async (h) => {
            const proxy = await TcpProxy.start(h.port);
            const m = proxiedClient(proxy, h, 'gap-user');
            try {
                m.client.connect();
                await once(m.client, 'connected');
                const sub = m.client.newSubscription('tiny:gap');
                const seqs = [];
                const ctxs = [];
                sub.on('publication', (ctx) => seqs.push(ctx.data.seq));
                sub.on('subscribed', (ctx) => ctxs.push(ctx));
                const first = once(sub, 'subscribed');
                sub.subscribe();
                await first;
                await apiResult(h, 'publish', { channel: 'tiny:gap', data: { seq: 1 } });
                await waitFor(() => seqs.length === 1);

                proxy.blocked = true;
                proxy.cutAll();
                await waitFor(() => m.client.state === 'connecting', 3000, 'the client to notice the cut');
                for (let i = 2; i <= 11; i++) {
                    await apiResult(h, 'publish', { channel: 'tiny:gap', data: { seq: i } });
                }
                const resubscribed = once(sub, 'subscribed', 5000);
                proxy.blocked = false;
                const ctx = await resubscribed;
                assert.equal(ctx.wasRecovering, true, JSON.stringify(ctx));
                assert.equal(ctx.recovered, false, `10 missed, 3 kept: ${JSON.stringify(ctx)}`);
                await apiResult(h, 'publish', { channel: 'tiny:gap', data: { seq: 12 } });
                await waitFor(() => seqs.length >= 2, 3000, () => `seq 12 (have ${JSON.stringify(seqs)})`);
                await sleep(100);
                assert.deepEqual(seqs, [1, 12], 'nothing from the gap (not even the 3 still kept)');

                // A short gap on the same channel is recovered again.
                proxy.blocked = true;
                proxy.cutAll();
                await waitFor(() => m.client.state === 'connecting', 3000, 'the client to notice the cut');
                await apiResult(h, 'publish', { channel: 'tiny:gap', data: { seq: 13 } });
                await apiResult(h, 'publish', { channel: 'tiny:gap', data: { seq: 14 } });
                const again = once(sub, 'subscribed', 5000);
                proxy.blocked = false;
                const ctx2 = await again;
                assert.equal(ctx2.recovered, true, JSON.stringify(ctx2));
                await waitFor(() => seqs.length >= 4, 3000, () => `recovered 13, 14 (have ${JSON.stringify(seqs)})`);
                assert.deepEqual(seqs, [1, 12, 13, 14]);
            } finally {
                m.client.disconnect();
                await proxy.close();
            }
        });
    });

async function rawSub(h, user, params) {
    const c = await ProtoClient.open(h.wsUrl);
    const r = await c.connect(h.token(user));
    assert.ok(r.connect, JSON.stringify(r));
    return { c, reply: await c.command('subscribe', params) };
}

test('raw subscribe with recover: recovered:true with the missed publications in order', T,
    async () => {
        await run(async (h) => {
            const res = [];
            for (let i = 1; i <= 5; i++) {
                res.push(await apiResult(h, 'publish', { channel: 'rec:raw', data: { seq: i } }));
            }
            const { epoch } = res[0];
            const { c, reply } = await rawSub(h, 'raw1',
                { channel: 'rec:raw', recover: true, offset: 2, epoch });
            try {
                const s = reply.subscribe;
                assert.ok(s, JSON.stringify(reply));
                assert.equal(s.recoverable, true);
                assert.equal(s.recovered, true, JSON.stringify(reply));
                assert.equal(s.was_recovering, true, JSON.stringify(reply));
                assert.equal(s.epoch, epoch);
                assert.deepEqual((s.publications || []).map((p) => [p.offset, p.data.seq]),
                    [[3, 3], [4, 4], [5, 5]]);
                // Live publications continue after the recovered ones.
                await apiResult(h, 'publish', { channel: 'rec:raw', data: { seq: 6 } });
                const pubs = await c.waitPublications(1, 'rec:raw');
                assert.equal(pubs[0].pub.offset, 6);
            } finally {
                c.close();
            }
            // Nothing missed: recovered:true, no publications.
            const top = await rawSub(h, 'raw2', { channel: 'rec:raw', recover: true, offset: 6, epoch });
            try {
                assert.equal(top.reply.subscribe?.recovered, true, JSON.stringify(top.reply));
                assert.deepEqual(top.reply.subscribe.publications || [], []);
                assert.equal(top.reply.subscribe.offset, 6);
            } finally {
                top.c.close();
            }
        });
    });

test('raw recover with a wrong epoch, or beyond recovery_max_publications: recovered:false, nothing',
    T, async () => {
        await run(async (h) => {
            let epoch = null;
            for (let i = 1; i <= MAX_RECOVERY + 50; i++) {
                const r = await apiResult(h, 'publish', { channel: 'rec:max', data: { seq: i } });
                epoch = r.epoch;
            }
            const wrong = await rawSub(h, 'raw3', { channel: 'rec:max', recover: true, offset: 240, epoch: 'other' });
            try {
                const s = wrong.reply.subscribe;
                assert.ok(s, JSON.stringify(wrong.reply));
                assert.ok(!s.recovered, `wrong epoch: ${JSON.stringify(s).slice(0, 300)}`);
                assert.deepEqual(s.publications || [], []);
                assert.equal(s.epoch, epoch, 'the reply tells the current epoch');
                assert.equal(s.offset, MAX_RECOVERY + 50, 'the reply tells the current top offset');
            } finally {
                wrong.c.close();
            }
            const tooMany = await rawSub(h, 'raw4', { channel: 'rec:max', recover: true, offset: 10, epoch });
            try {
                const s = tooMany.reply.subscribe;
                assert.ok(s, JSON.stringify(tooMany.reply));
                assert.ok(!s.recovered, `240 missed > ${MAX_RECOVERY}: recovered ${s.recovered}`);
                assert.deepEqual((s.publications || []).length, 0);
            } finally {
                tooMany.c.close();
            }
            const exact = await rawSub(h, 'raw5',
                { channel: 'rec:max', recover: true, offset: 50, epoch });
            try {
                const s = exact.reply.subscribe;
                assert.equal(s?.recovered, true, `exactly ${MAX_RECOVERY} missed`);
                assert.equal(s.publications.length, MAX_RECOVERY);
                assert.equal(s.publications[0].offset, 51);
                assert.equal(s.publications[MAX_RECOVERY - 1].offset, MAX_RECOVERY + 50);
            } finally {
                exact.c.close();
            }
        });
    });

test('a namespace with history but without recover does not recover', T, async () => {
    await run(async (h) => {
        const r1 = await apiResult(h, 'publish', { channel: 'norec:x', data: { seq: 1 } });
        await apiResult(h, 'publish', { channel: 'norec:x', data: { seq: 2 } });
        const { c, reply } = await rawSub(h, 'raw6',
            { channel: 'norec:x', recover: true, offset: 0, epoch: r1.epoch });
        try {
            assert.ok(reply.subscribe, JSON.stringify(reply));
            assert.ok(!reply.subscribe.recoverable, JSON.stringify(reply));
            assert.ok(!reply.subscribe.recovered, JSON.stringify(reply));
            assert.deepEqual(reply.subscribe.publications || [], []);
        } finally {
            c.close();
        }
    });
});
