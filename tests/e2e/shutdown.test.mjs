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
                const t0 = Date.now();
                const res = await h.stop(signal, 5000);
                assert.ok(!res.killedAfterTimeout, `herald did not exit within 5 s of ${signal}`);
                assert.ok(res.ms <= 5000, `exit took ${res.ms} ms`);
                assert.equal(res.signal, null, `herald died of ${res.signal}`);
                assert.equal(res.code, 0, `exit status ${res.code}; stderr:\n${h.stderr().slice(-3000)}`);
                const infos = await Promise.all(clients.map((c) => Promise.race([
                    c.closed,
                    new Promise((r) => setTimeout(() => r({ code: 'none' }), Math.max(1, 6000 - (Date.now() - t0)))),
                ])));
                infos.forEach((info, i) => {
                    assert.equal(info.code, 3001, `client ${i}: close ${info.code} ${info.reason}`);
                    assert.equal(info.reason, 'shutdown', `client ${i}: reason ${JSON.stringify(info.reason)}`);
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
        assert.equal(res.code, 0, h.stderr());
        assert.ok(res.ms < 2000, `idle shutdown took ${res.ms} ms`);
    } finally {
        await h.stop('SIGKILL');
    }
});
