// Tokens that expire and are not refreshed end the connection: 3005 for the connection
// token, 3006 for a subscription token, after expired_close_delay seconds (issue 3).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { withHerald } from './lib/herald.mjs';
import { sign, nowSeconds } from './lib/jwt.mjs';
import { wsOpen } from './lib/raw.mjs';

async function readUntil(conn, pattern, timeout = 5000) {
    let text = '';
    while (!pattern.test(text)) {
        const f = await conn.readFrame(timeout);
        assert.ok(f, `closed before ${pattern}: ${text}`);
        text += f.payload.toString('utf8') + '\n';
    }
    return text;
}

test('a connection token that expires without refresh is closed with 3005', async () => {
    await withHerald({ args: ['--expired_close_delay', '1', '--ping_interval', '1'] }, async (h) => {
        const conn = await wsOpen(h.port);
        const token = sign({ sub: 'u1', exp: nowSeconds() + 2 }, h.secret);
        conn.sendText(JSON.stringify({ id: 1, connect: { token } }));
        const reply = await readUntil(conn, /"id":1/);
        assert.match(reply, /"expires":true/);
        const t0 = Date.now();
        // Answer pings so that only the expiry can end the connection.
        for (;;) {
            const f = await conn.readFrame(8000);
            assert.ok(f, 'connection ended without a close frame');
            if (f.opcode === 8) {
                assert.equal(f.payload.readUInt16BE(0), 3005);
                assert.equal(f.payload.subarray(2).toString(), 'connection expired');
                break;
            }
            if (f.payload.toString() === '{}') conn.sendText('{}');
        }
        const waited = (Date.now() - t0) / 1000;
        assert.ok(waited >= 1 && waited < 7, `closed after ${waited} s`);
        conn.destroy();
    });
});

test('a subscription token that expires without sub_refresh is closed with 3006; refreshed it stays', async () => {
    const config = {
        token_hmac_secret: 'expiry-secret', api_key: 'k', expired_close_delay: 1, ping_interval: 30,
        namespaces: { '': {}, priv: { private: true } },
    };
    await withHerald({ config }, async (h) => {
        const open = async (user) => {
            const conn = await wsOpen(h.port);
            const subToken = sign({ sub: user, channel: 'priv:x', exp: nowSeconds() + 2 }, 'expiry-secret');
            conn.sendText(JSON.stringify({ id: 1, connect: { token: sign({ sub: user }, 'expiry-secret') } }) + '\n' +
                JSON.stringify({ id: 2, subscribe: { channel: 'priv:x', token: subToken } }));
            const text = await readUntil(conn, /"id":2/);
            assert.match(text, /"id":2,"subscribe":\{"expires":true/);
            return conn;
        };
        const lapsed = await open('u1');
        const renewed = await open('u2');
        renewed.sendText(JSON.stringify({ id: 3, sub_refresh: { channel: 'priv:x',
            token: sign({ sub: 'u2', channel: 'priv:x', exp: nowSeconds() + 60 }, 'expiry-secret') } }));
        await readUntil(renewed, /"id":3,"sub_refresh"/);
        let code = null;
        for (;;) {
            const f = await lapsed.readFrame(8000);
            assert.ok(f, 'connection ended without a close frame');
            if (f.opcode === 8) { code = f.payload.readUInt16BE(0); break; }
            if (f.payload.toString() === '{}') lapsed.sendText('{}');
        }
        assert.equal(code, 3006);
        // The renewed one is still subscribed: a publication reaches it.
        await h.api('publish', { channel: 'priv:x', data: { still: 'here' } });
        const text = await (async () => {
            for (;;) {
                const f = await renewed.readFrame(5000);
                assert.ok(f && f.opcode !== 8, 'renewed subscription was closed');
                const s = f.payload.toString();
                if (s === '{}') { renewed.sendText('{}'); continue; }
                if (s.includes('"pub"')) return s;
            }
        })();
        assert.match(text, /"still":"here"/);
        lapsed.destroy();
        renewed.destroy();
    });
});
