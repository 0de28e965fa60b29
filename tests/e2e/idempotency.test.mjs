// /api/publish with idempotency_key: a repeat within the window is not published again and
// gets the first publication's result; another key, or no key, publishes.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { withHerald, sleep } from './lib/herald.mjs';
import { wsOpen } from './lib/raw.mjs';

async function subscribed(h, channel) {
    const conn = await wsOpen(h.port);
    conn.sendText(JSON.stringify({ id: 1, connect: { token: h.token('u') } }) + '\n' +
        JSON.stringify({ id: 2, subscribe: { channel } }));
    let text = '';
    while (!text.includes('"id":2')) {
        const f = await conn.readFrame(5000);
        assert.ok(f && f.opcode !== 8, 'closed before the subscribe reply');
        text += f.payload.toString() + '\n';
    }
    return conn;
}

// Every publication pushed to conn within ms, as parsed pub objects.
async function pubsWithin(conn, ms) {
    const pubs = [];
    const deadline = Date.now() + ms;
    for (;;) {
        const left = deadline - Date.now();
        if (left <= 0) return pubs;
        let f;
        try { f = await conn.readFrame(left); } catch { return pubs; }
        if (!f) return pubs;
        for (const line of f.payload.toString().split('\n')) {
            if (line.includes('"pub"')) pubs.push(JSON.parse(line).push.pub);
        }
    }
}

test('a repeated idempotency_key publishes once and answers with the first result', async () => {
    const config = { namespaces: { '': {}, h: { history_size: 10, history_ttl: 60 } } };
    await withHerald({ config }, async (h) => {
        const conn = await subscribed(h, 'h:orders');
        const body = { channel: 'h:orders', data: { n: 1 }, idempotency_key: 'order-17' };
        const a = await h.api('publish', body);
        const b = await h.api('publish', body);
        assert.equal(a.status, 200);
        assert.deepEqual(b.json.result, a.json.result);
        const c = await h.api('publish', { ...body, idempotency_key: 'order-18' });
        assert.equal(c.json.result.offset, a.json.result.offset + 1);
        const d = await h.api('publish', { channel: 'h:orders', data: { n: 2 } });
        assert.equal(d.json.result.offset, a.json.result.offset + 2);
        const pubs = await pubsWithin(conn, 500);
        assert.deepEqual(pubs.map((p) => p.offset), [1, 2, 3]);
        conn.destroy();
    });
});

test('idempotency_key works without history and refuses a key over 64 bytes', async () => {
    await withHerald({}, async (h) => {
        const conn = await subscribed(h, 'plain');
        await h.api('publish', { channel: 'plain', data: 1, idempotency_key: 'k' });
        await h.api('publish', { channel: 'plain', data: 1, idempotency_key: 'k' });
        await sleep(100);
        assert.equal((await pubsWithin(conn, 400)).length, 1);
        const long = await h.api('publish', { channel: 'plain', data: 1, idempotency_key: 'x'.repeat(65) });
        assert.equal(long.json.error.code, 107);
        conn.destroy();
    });
});
