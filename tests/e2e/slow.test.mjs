// A client that cannot keep up is disconnected with 3008 instead of growing herald's
// memory (issue 2: bounded per-connection outbound queues).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { withHerald, sleep } from './lib/herald.mjs';
import { wsOpen } from './lib/raw.mjs';

const QUEUE_MAX = 256 * 1024;

async function subscribedRawClient(h, channel) {
    const conn = await wsOpen(h.port);
    conn.sendText(JSON.stringify({ id: 1, connect: { token: h.token('slow') } }) + '\n' +
        JSON.stringify({ id: 2, subscribe: { channel } }));
    // Replies may arrive in one frame or two.
    let text = '';
    while (!(text.includes('"id":2'))) {
        const f = await conn.readFrame(5000);
        assert.ok(f, 'connection closed before the subscribe reply');
        text += f.payload.toString('utf8') + '\n';
    }
    assert.match(text, /"id":2,"subscribe"/);
    return conn;
}

async function numClients(h) {
    const r = await h.api('info', {});
    return r.json.result.nodes[0].num_clients;
}

async function flood(h, channel, count, size) {
    const data = JSON.stringify({ p: 'x'.repeat(size) });
    for (let i = 0; i < count; i++) {
        const r = await h.api('publish', `{"channel":"${channel}","data":${data}}`);
        assert.equal(r.status, 200);
    }
}

test('a client that stops reading is disconnected (3008) once its queue passes client_queue_max', async () => {
    await withHerald({ args: ['--client_queue_max', String(QUEUE_MAX)] }, async (h) => {
        const conn = await subscribedRawClient(h, 'firehose');
        conn.sock.pause(); // stop reading: the kernel buffers fill, then herald's queue
        assert.equal(await numClients(h), 1);
        // 400 x 32 KB = 12.8 MB: far past the socket buffers and the queue limit.
        await flood(h, 'firehose', 400, 32 * 1024);
        let n = 1;
        for (let i = 0; i < 50 && n !== 0; i++) {
            await sleep(100);
            n = await numClients(h);
        }
        assert.equal(n, 0, 'the slow client is still counted as connected');
        // herald keeps serving others.
        const other = await subscribedRawClient(h, 'other');
        other.destroy();
        conn.destroy();
    });
});

test('the slow client that resumes reading finds close code 3008 after what was queued', async () => {
    await withHerald({ args: ['--client_queue_max', String(QUEUE_MAX)] }, async (h) => {
        const conn = await subscribedRawClient(h, 'firehose');
        conn.sock.pause();
        await flood(h, 'firehose', 400, 32 * 1024);
        await sleep(200);
        conn.sock.resume(); // within the close grace period: the queue drains, then the close frame
        const close = await conn.readClose(10000);
        assert.equal(close.code, 3008, `expected close 3008, got ${JSON.stringify({ code: close.code, eof: close.eof })}`);
        assert.equal(close.reason, 'slow');
        // Every data frame before the close is a whole publication (nothing torn).
        for (const f of close.frames) {
            for (const line of f.payload.toString('utf8').split('\n')) JSON.parse(line);
        }
        assert.ok(close.frames.length > 0 && close.frames.length < 400,
            `expected some but not all publications before the close, got ${close.frames.length}`);
        conn.destroy();
    });
});
