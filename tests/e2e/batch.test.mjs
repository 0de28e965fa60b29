// The server API's batch method, in Centrifugo's shape: {"commands": [{"publish": {...}}, ...]}
// answered {"replies": [{"publish": {...}}, {"error": {...}}, ...]} in the order of the
// commands; its publications reach a subscriber in that order, on the memory engine and across
// two nodes on Redis; a bad command is an error in its place, not the batch's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { start, withHerald } from './lib/herald.mjs';
import { makeClient } from './lib/centrifuge.mjs';
import { startRedis } from './lib/redis.mjs';

const NS = { '': {}, h: { history_size: 100, history_ttl: 300 } };

async function subscriber(h, channel, want) {
    const { client } = makeClient(h, { token: h.token('watcher') });
    const sub = client.newSubscription(channel);
    const got = [];
    const all = new Promise((resolve) => sub.on('publication', (ctx) => {
        got.push(ctx.data);
        if (got.length === want) resolve(got);
    }));
    const subscribed = new Promise((resolve) => sub.once('subscribed', resolve));
    sub.subscribe();
    client.connect();
    await subscribed;
    return { client, all };
}

async function batchCase(pub, sub) {
    const watch = await subscriber(sub, 'h:b', 50);
    try {
        const commands = [];
        for (let i = 0; i < 50; i++) commands.push({ publish: { channel: 'h:b', data: { i } } });
        commands.splice(10, 0, { publish: { channel: '', data: 1 } }); // bad: no channel
        commands.splice(20, 0, { nope: {} });                          // unknown method
        commands.splice(30, 0, { broadcast: { channels: ['x1', 'x2'], data: { b: 1 } } });
        commands.push({ history: { channel: 'h:b', limit: 3, reverse: true } });
        const r = await pub.api('batch', { commands });
        assert.equal(r.status, 200);
        const replies = r.json.replies;
        assert.equal(replies.length, commands.length);
        assert.deepEqual(replies[10], { error: { code: 107, message: 'bad request' } });
        assert.deepEqual(replies[20], { error: { code: 104, message: 'method not found' } });
        assert.equal(replies[30].broadcast.responses.length, 2);
        const offsets = replies.filter((x, k) => commands[k].publish && x.publish).map((x) => x.publish.offset);
        assert.equal(offsets.length, 50);
        for (let k = 1; k < offsets.length; k++) assert.equal(offsets[k], offsets[k - 1] + 1, 'offsets in order');
        const hist = replies[replies.length - 1].history.publications.map((p) => p.data.i);
        assert.deepEqual(hist, [49, 48, 47]);
        assert.deepEqual(await watch.all, Array.from({ length: 50 }, (_, i) => ({ i })));
    } finally {
        watch.client.disconnect();
    }
}

test('batch: replies in command order, errors in place, publications delivered in order', async () => {
    await withHerald({ config: { namespaces: NS } }, async (h) => {
        await batchCase(h, h);
        // Not a batch: no commands array, a batch inside a batch, more than 1,000 commands.
        assert.deepEqual((await h.api('batch', {})).json, { error: { code: 107, message: 'bad request' } });
        const inner = await h.api('batch', { commands: [{ batch: { commands: [] } }] });
        assert.deepEqual(inner.json.replies, [{ error: { code: 104, message: 'method not found' } }]);
        const many = Array.from({ length: 1001 }, () => ({ info: {} }));
        assert.deepEqual((await h.api('batch', { commands: many })).json,
            { error: { code: 106, message: 'limit exceeded' } });
        assert.deepEqual((await h.api('batch', { commands: [] })).json, { replies: [] });
    });
});

test('batch: the replies one batch holds are bounded by client_queue_max (error 106 past it), memory measured', async () => {
    const config = { client_queue_max: 8 << 20, namespaces: { '': {}, h: { history_size: 100, history_ttl: 300 } } };
    // The release build: ASan's quarantine keeps freed answers resident and says nothing of herald.
    await withHerald({ config, bin: 'release' }, async (h) => {
        const pad = 'p'.repeat(60000);
        for (let i = 0; i < 100; i += 10) {
            const r = await h.api('batch', { commands: Array.from({ length: 10 }, (_, k) => ({ publish: { channel: 'h:big', data: { i: i + k, pad } } })) });
            assert.ok(r.json.replies.every((x) => x.publish), JSON.stringify(r.json).slice(0, 200));
        }
        // Each history answer is about 6 MB: 40 of them would hold 240 MB until the last.
        const hwm = () => Number(/^VmHWM:\s+(\d+)/m.exec(readFileSync(`/proc/${h.child.pid}/status`, 'utf8'))[1]) / 1024;
        const before = hwm();
        const r = await h.api('batch', { commands: Array.from({ length: 40 }, () => ({ history: { channel: 'h:big', limit: -1 } })) });
        const grew = hwm() - before;
        assert.ok(grew < 100, `peak RSS grew by ${grew.toFixed(1)} MB`);
        const replies = r.json.replies;
        assert.equal(replies.length, 40);
        assert.equal(replies[0].history.publications.length, 100);
        assert.ok(replies.slice(1).every((x) => x.error && x.error.code === 106), 'past the bound: 106');
    });
});

test('batch through Redis: one node publishes a batch, a subscriber on the other gets it in order', async () => {
    const redis = await startRedis();
    const prefix = `batch${Math.floor(Math.random() * 1e9)}`;
    const config = { engine: 'redis', redis_urls: [redis.url], redis_prefix: prefix, namespaces: NS };
    const a = await start({ config, threads: 2 });
    const b = await start({ config, threads: 2 });
    try {
        await batchCase(a, b);
    } finally {
        await a.stop('SIGTERM', 3000);
        await b.stop('SIGTERM', 3000);
        await redis.stop();
    }
});
