// Graceful shutdown: every WebSocket client is told (close 3001 "shutdown"), then exit status 0.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sanitizerReport, start } from './lib/herald.mjs';
import { ProtoClient } from './lib/proto.mjs';

for (const signal of ['SIGTERM', 'SIGINT']) {
    test(`${signal} with 20 connected clients: each gets close 3001, exit 0 within 5 s`, { timeout: 30000 },
        async () => {
            const h = await start({ threads: 2 });
            const clients = [];
            try {
                for (let i = 0; i < 20; i++) {
                    const c = await ProtoClient.open(h.wsUrl);
                    await c.connectAndSubscribe(h.token(`s${i}`), ['bye']);
                    clients.push(c);
                }
                const res = await h.stop(signal, 5000);
                // Closes that reached the clients before the exit (or the kill after 5 s).
                const infos = await Promise.all(clients.map((c) => Promise.race([
                    c.closed,
                    new Promise((r) => setTimeout(() => r({ code: 'none', reason: '' }), 1000)),
                ])));
                const codes = infos.map((i) => `${i.code}/${i.reason}`);
                const summary = `exit ${res.code} signal ${res.signal} after ${res.ms} ms`
                    + `${res.killedAfterTimeout ? ' (SIGKILLed: no exit within 5 s)' : ''}; client closes: `
                    + `${[...new Set(codes)].join(', ')}\n--- herald stderr ---\n${h.stderr().slice(-3000)}`;
                assert.ok(!res.killedAfterTimeout, summary);
                assert.equal(res.signal, null, summary);
                assert.equal(res.code, 0, summary);
                infos.forEach((info, i) => {
                    assert.equal(info.code, 3001, `client ${i}: ${summary}`);
                    assert.equal(info.reason, 'shutdown', `client ${i}: ${summary}`);
                });
                const report = sanitizerReport(h.stderr());
                assert.equal(report, '', `sanitizer report:\n${report}`);
            } finally {
                for (const c of clients) c.terminate();
                await h.stop('SIGKILL');
            }
        });
}

test('SIGTERM with an idle herald exits 0 quickly', { timeout: 30000 }, async () => {
    const h = await start({});
    try {
        const res = await h.stop('SIGTERM', 5000);
        const summary = `exit ${res.code} signal ${res.signal} after ${res.ms} ms; stderr:\n${h.stderr()}`;
        assert.ok(!res.killedAfterTimeout, summary);
        assert.equal(res.code, 0, summary);
        assert.ok(res.ms < 2000, summary);
        const report = sanitizerReport(h.stderr());
        assert.equal(report, '', `sanitizer report:\n${report}`);
    } finally {
        await h.stop('SIGKILL');
    }
});
