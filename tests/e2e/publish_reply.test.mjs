// A client publication in a namespace with history is answered with the offset and
// epoch it got, the same as /api/publish answers (issue 3: publication replies carry
// the offset and epoch).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { withHerald } from './lib/herald.mjs';
import { wsOpen } from './lib/raw.mjs';

async function readLine(conn, pattern) {
    for (;;) {
        const f = await conn.readFrame(5000);
        assert.ok(f && f.opcode !== 8, 'connection closed');
        for (const line of f.payload.toString().split('\n')) if (pattern.test(line)) return JSON.parse(line);
    }
}

test('client publish reply carries offset and epoch with history, nothing without', async () => {
    const config = {
        token_hmac_secret: 's', api_key: 'k',
        namespaces: { '': { client_publish: true }, h: { history_size: 10, history_ttl: 60, client_publish: true } },
    };
    await withHerald({ config }, async (h) => {
        const conn = await wsOpen(h.port);
        conn.sendText(JSON.stringify({ id: 1, connect: { token: h.token('u') } }));
        await readLine(conn, /"id":1/);
        const api = await h.api('publish', { channel: 'h:x', data: { n: 1 } });
        assert.equal(api.json.result.offset, 1);
        conn.sendText(JSON.stringify({ id: 2, publish: { channel: 'h:x', data: { n: 2 } } }));
        const r2 = await readLine(conn, /"id":2/);
        assert.deepEqual(r2.publish, { offset: 2, epoch: api.json.result.epoch });
        conn.sendText(JSON.stringify({ id: 3, publish: { channel: 'plain', data: { n: 3 } } }));
        const r3 = await readLine(conn, /"id":3/);
        assert.deepEqual(r3.publish, {});
        conn.destroy();
    });
});
