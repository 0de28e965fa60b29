// Fan-out across both event loops: many raw clients, many publications, the server API views.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withHerald } from './lib/herald.mjs';
import { ProtoClient } from './lib/proto.mjs';

const CLIENTS = 200;
const PUBLICATIONS = 100;

async function openMany(h, n, channels) {
    const clients = [];
    // In groups, so the accept queue and the handshakes stay modest.
    for (let i = 0; i < n; i += 50) {
        const group = [];
        for (let j = i; j < Math.min(n, i + 50); j++) {
            group.push((async () => {
                const c = await ProtoClient.open(h.wsUrl);
                await c.connectAndSubscribe(h.token(`user${j}`), channels);
                return c;
            })());
        }
        clients.push(...await Promise.all(group));
    }
    return clients;
}

function closeAll(clients) {
    for (const c of clients) c.terminate();
}

test('200 clients on 2 threads each receive all 100 publications in order', { timeout: 90000 }, async () => {
    await withHerald({ threads: 2 }, async (h) => {
        let clients = [];
        try {
            clients = await openMany(h, CLIENTS, ['fan']);
            for (let i = 0; i < PUBLICATIONS; i++) {
                const r = await h.api('publish', { channel: 'fan', data: { n: i } });
                assert.equal(r.status, 200, r.text);
                assert.ok(r.json && r.json.result, `publish ${i}: ${r.text}`);
            }
            await Promise.all(clients.map((c) => c.waitPublications(PUBLICATIONS, 'fan', 30000)));
            clients.forEach((c, k) => {
                const got = c.publications('fan').map((p) => JSON.parse(p.data).n);
                assert.equal(got.length, PUBLICATIONS, `client ${k}: ${got.length} publications`);
                for (let i = 0; i < PUBLICATIONS; i++) {
                    assert.equal(got[i], i, `client ${k}: publication ${i} out of order: ${got.slice(0, i + 1).join(',')}`);
                }
                assert.equal(c.closeInfo, null, `client ${k} was disconnected`);
            });

            const info = await h.api('info', {});
            assert.equal(info.status, 200, info.text);
            const nodes = info.json.result.nodes;
            assert.ok(Array.isArray(nodes) && nodes.length >= 1, info.text);
            const numClients = nodes.reduce((s, n) => s + n.num_clients, 0);
            assert.equal(numClients, CLIENTS, `info: ${info.text}`);
            assert.ok(nodes[0].num_channels >= 1, `info num_channels: ${info.text}`);
            assert.ok(nodes[0].num_subs >= CLIENTS, `info num_subs: ${info.text}`);

            const ch = await h.api('channels', { pattern: '' });
            assert.equal(ch.status, 200, ch.text);
            const list = ch.json.result.channels;
            assert.ok(list && list.fan, `channels: ${ch.text}`);
            assert.equal(list.fan.num_clients, CLIENTS, `channels: ${ch.text}`);
        } finally {
            closeAll(clients);
        }
    });
});

test('broadcast delivers to every listed channel and answers per channel', { timeout: 30000 }, async () => {
    await withHerald({ threads: 2 }, async (h) => {
        const channels = ['bc-a', 'bc-b', 'bc-c'];
        let clients = [];
        try {
            // Every client on its own channel, and one client on all three.
            clients = [
                ...await openMany(h, 6, [channels[0]]),
                ...await openMany(h, 6, [channels[1]]),
                ...await openMany(h, 6, [channels[2]]),
                ...await openMany(h, 2, channels),
            ];
            const r = await h.api('broadcast', { channels, data: { hello: 'all' } });
            assert.equal(r.status, 200, r.text);
            const res = r.json && r.json.result;
            assert.ok(res && Array.isArray(res.responses), `broadcast: ${r.text}`);
            assert.equal(res.responses.length, 3, r.text);
            for (const x of res.responses) assert.ok(x.result && !x.error, `broadcast response: ${JSON.stringify(x)}`);
            await Promise.all(clients.slice(0, 18).map((c) => c.waitPublications(1)));
            await Promise.all(clients.slice(18).map((c) => c.waitPublications(3)));
            for (const c of clients.slice(18)) {
                const got = c.publications().map((p) => p.channel).sort();
                assert.deepEqual(got, [...channels].sort());
            }
            for (const c of clients) {
                for (const p of c.publications()) assert.deepEqual(JSON.parse(p.data), { hello: 'all' });
            }

            const ch = await h.api('channels', {});
            assert.equal(ch.status, 200, ch.text);
            const list = ch.json.result.channels;
            for (const c of channels) assert.equal(list[c]?.num_clients, 8, `channels: ${ch.text}`);
            const only = await h.api('channels', { pattern: channels[1] });
            assert.deepEqual(Object.keys(only.json.result.channels), [channels[1]], `pattern: ${only.text}`);
        } finally {
            closeAll(clients);
        }
    });
});

test('info counts clients, users and subscriptions and drops them after disconnect', { timeout: 30000 }, async () => {
    await withHerald({ threads: 2 }, async (h) => {
        const sum = (nodes, k) => nodes.reduce((s, n) => s + n[k], 0);
        const clients = await openMany(h, 10, ['i1', 'i2']);
        try {
            let info = (await h.api('info', {})).json.result.nodes;
            assert.equal(sum(info, 'num_clients'), 10);
            assert.equal(sum(info, 'num_users'), 10);
            assert.equal(info[0].num_channels, 2);
            assert.equal(info[0].num_subs, 20);
            assert.ok(typeof info[0].uptime === 'number');
            assert.ok(info[0].version, 'version');
            closeAll(clients.slice(0, 5));
            const deadline = Date.now() + 5000;
            for (;;) {
                info = (await h.api('info', {})).json.result.nodes;
                if (sum(info, 'num_clients') === 5 || Date.now() > deadline) break;
                await new Promise((r) => setTimeout(r, 100));
            }
            assert.equal(sum(info, 'num_clients'), 5, JSON.stringify(info));
            assert.equal(info[0].num_subs, 10, JSON.stringify(info));
        } finally {
            closeAll(clients);
        }
    });
});
