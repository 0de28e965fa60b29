// /api/info counts distinct users, not connections.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { withHerald, sleep } from './lib/herald.mjs';
import { wsOpen } from './lib/raw.mjs';

async function connectAs(h, user) {
    const conn = await wsOpen(h.port);
    conn.sendText(JSON.stringify({ id: 1, connect: { token: h.token(user) } }));
    const f = await conn.readFrame(5000);
    assert.match(f.payload.toString(), /"id":1,"connect"/);
    return conn;
}

async function node(h) {
    const r = await h.api('info', {});
    return r.json.result.nodes[0];
}

test('info: three connections of two users are 3 clients and 2 users, and drop on disconnect', async () => {
    await withHerald({ threads: 2 }, async (h) => {
        const a1 = await connectAs(h, 'alice');
        const a2 = await connectAs(h, 'alice');
        const b = await connectAs(h, 'bob');
        let n = await node(h);
        assert.equal(n.num_clients, 3);
        assert.equal(n.num_users, 2);
        a1.destroy();
        b.destroy();
        for (let i = 0; i < 50; i++) {
            n = await node(h);
            if (n.num_clients === 1) break;
            await sleep(50);
        }
        assert.equal(n.num_clients, 1);
        assert.equal(n.num_users, 1);
        a2.destroy();
    });
});
