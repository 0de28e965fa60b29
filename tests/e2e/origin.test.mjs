// Origin checks on the WebSocket handshake against allowed_origins (exact match).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withHerald } from './lib/herald.mjs';
import { wsHandshake } from './lib/raw.mjs';

const T = { timeout: 30000 };

async function status(h, headers) {
    const { conn, head } = await wsHandshake(h.port, { headers });
    conn.destroy();
    return head.status;
}

test('allowed_origins: foreign Origin 403, listed Origin 101, no Origin (non-browser) 101', T, async () => {
    await withHerald({ args: ['--allowed_origins', '["http://good.example"]'] }, async (h) => {
        assert.equal(await status(h, { Origin: 'http://evil.example' }), 403, 'evil origin');
        assert.equal(await status(h, { Origin: 'http://good.example' }), 101, 'good origin');
        assert.equal(await status(h, {}), 101, 'no Origin header');
        // Exact match: no prefix, suffix, scheme or port games.
        for (const o of ['http://good.example.evil.example', 'https://good.example', 'http://good.example:8080',
            'http://evil.example/http://good.example', 'null']) {
            assert.equal(await status(h, { Origin: o }), 403, o);
        }
    });
});

test('no allowed_origins: any Origin is accepted', T, async () => {
    await withHerald({}, async (h) => {
        assert.equal(await status(h, { Origin: 'http://anything.example' }), 101);
    });
});
