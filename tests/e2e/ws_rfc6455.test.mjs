// RFC 6455 at the byte level: handshake, framing rules, control frames, close codes, UTF-8,
// size limits. Hand-built frames over node:net; no WebSocket library in the way.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withHerald } from './lib/herald.mjs';
import { OP, acceptFor, closePayload, wsHandshake, wsOpen } from './lib/raw.mjs';

const T = { timeout: 30000 };

// Reads until the server's close frame and checks its code; then the TCP connection must end.
async function expectClose(conn, code, what = '') {
    const c = await conn.readClose(5000);
    assert.ok(!c.eof, `${what}: connection ended without a close frame (expected ${code})`);
    assert.equal(c.code, code, `${what}: close code ${c.code} (reason ${JSON.stringify(c.reason)}), expected ${code}`);
    assert.equal(c.frame.masked, false, 'server frames are not masked');
    // Answer the close as a client does; the server then closes the TCP connection.
    conn.sendFrame({ opcode: OP.CLOSE, payload: closePayload(code) });
    await conn.waitEof(5000);
    conn.destroy();
    return c;
}

test('handshake answers 101 with the RFC 6455 accept value', T, async () => {
    await withHerald({}, async (h) => {
        const key = 'dGhlIHNhbXBsZSBub25jZQ==';
        const { conn, head } = await wsHandshake(h.port, { key });
        try {
            assert.equal(head.status, 101, head.raw);
            assert.equal(head.headers['sec-websocket-accept'], 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
            assert.equal(acceptFor(key), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
            assert.equal(head.headers.upgrade.toLowerCase(), 'websocket');
            assert.ok(/upgrade/i.test(head.headers.connection), head.raw);
        } finally {
            conn.destroy();
        }
    });
});

test('handshake with version 12 is refused with 426 and Sec-WebSocket-Version: 13', T, async () => {
    await withHerald({}, async (h) => {
        const { conn, head } = await wsHandshake(h.port, { version: '12' });
        conn.destroy();
        assert.equal(head.status, 426, head.raw);
        assert.equal(head.headers['sec-websocket-version'], '13', head.raw);
    });
});

test('handshake without Sec-WebSocket-Key, without Upgrade or with a bad key is refused with 400', T,
    async () => {
        await withHerald({}, async (h) => {
            for (const [what, opts] of [
                ['missing key', { omit: ['Sec-WebSocket-Key'] }],
                ['missing Upgrade', { omit: ['Upgrade'] }],
                ['Upgrade not websocket', { headers: { Upgrade: 'h2c' } }],
                ['key not 16 bytes of base64', { key: 'c2hvcnQ=' }],
            ]) {
                const { conn, head } = await wsHandshake(h.port, opts);
                conn.destroy();
                assert.equal(head.status, 400, `${what}: ${head.raw}`);
            }
        });
    });

test('handshake on an unknown path is refused with 404', T, async () => {
    await withHerald({}, async (h) => {
        const { conn, head } = await wsHandshake(h.port, { path: '/connection/nope' });
        conn.destroy();
        assert.equal(head.status, 404, head.raw);
    });
});

test('unmasked client frame is closed with 1002', T, async () => {
    await withHerald({}, async (h) => {
        const conn = await wsOpen(h.port);
        conn.sendText('{"id":1,"connect":{}}', { masked: false });
        await expectClose(conn, 1002, 'unmasked');
    });
});

test('frame with a reserved bit set (no extension) is closed with 1002', T, async () => {
    await withHerald({}, async (h) => {
        for (const rsv of [4, 2, 1]) {
            const conn = await wsOpen(h.port);
            conn.sendFrame({ opcode: OP.TEXT, payload: '{}', rsv });
            await expectClose(conn, 1002, `rsv ${rsv}`);
        }
    });
});

test('reserved opcodes are closed with 1002', T, async () => {
    await withHerald({}, async (h) => {
        for (const opcode of [3, 7, 0xb, 0xf]) {
            const conn = await wsOpen(h.port);
            conn.sendFrame({ opcode, payload: 'x' });
            await expectClose(conn, 1002, `opcode ${opcode}`);
        }
    });
});

test('ping is answered by a pong with the same payload', T, async () => {
    await withHerald({}, async (h) => {
        const conn = await wsOpen(h.port);
        try {
            for (const payload of [Buffer.from('hello-ping'), Buffer.alloc(0), Buffer.alloc(125, 0xa5)]) {
                conn.sendFrame({ opcode: OP.PING, payload });
                const f = await conn.readFrame();
                assert.ok(f, 'connection ended');
                assert.equal(f.opcode, OP.PONG);
                assert.equal(f.fin, true);
                assert.equal(f.masked, false);
                assert.deepEqual(f.payload, payload);
            }
        } finally {
            conn.destroy();
        }
    });
});

test('fragmented text with a ping between fragments is delivered (connect command)', T, async () => {
    await withHerald({}, async (h) => {
        const conn = await wsOpen(h.port);
        try {
            const cmd = Buffer.from(JSON.stringify({ id: 1, connect: { token: h.token('frag'), name: 'é-client' } }));
            // Split inside the two-byte 'é' as well: UTF-8 is checked over the whole message.
            const e = cmd.indexOf(Buffer.from('é'));
            const parts = [cmd.subarray(0, 10), cmd.subarray(10, e + 1), cmd.subarray(e + 1)];
            conn.sendFrame({ opcode: OP.TEXT, payload: parts[0], fin: false });
            conn.sendFrame({ opcode: OP.PING, payload: 'between' });
            conn.sendFrame({ opcode: OP.CONT, payload: parts[1], fin: false });
            conn.sendFrame({ opcode: OP.CONT, payload: parts[2], fin: true });
            let pong = null;
            let reply = null;
            while (!pong || !reply) {
                const f = await conn.readFrame();
                assert.ok(f, `connection ended (pong ${!!pong}, reply ${!!reply})`);
                assert.notEqual(f.opcode, OP.CLOSE, `closed: ${f.payload.length >= 2 ? f.payload.readUInt16BE(0) : ''} ${f.payload.subarray(2)}`);
                if (f.opcode === OP.PONG) pong = f;
                else if (f.opcode === OP.TEXT) {
                    for (const line of f.payload.toString().split('\n')) {
                        if (line.trim() && JSON.parse(line).id === 1) reply = JSON.parse(line);
                    }
                }
            }
            assert.equal(pong.payload.toString(), 'between');
            assert.ok(reply.connect && reply.connect.client, JSON.stringify(reply));
        } finally {
            conn.destroy();
        }
    });
});

test('fragmentation errors are closed with 1002 (continuation first, new text inside a message)', T,
    async () => {
        await withHerald({}, async (h) => {
            let conn = await wsOpen(h.port);
            conn.sendFrame({ opcode: OP.CONT, payload: '{}', fin: true });
            await expectClose(conn, 1002, 'continuation without a start');
            conn = await wsOpen(h.port);
            conn.sendFrame({ opcode: OP.TEXT, payload: '{"id"', fin: false });
            conn.sendFrame({ opcode: OP.TEXT, payload: ':1}', fin: true });
            await expectClose(conn, 1002, 'text frame inside a fragmented message');
        });
    });

test('control frame with a payload over 125 bytes is closed with 1002', T, async () => {
    await withHerald({}, async (h) => {
        const conn = await wsOpen(h.port);
        conn.sendFrame({ opcode: OP.PING, payload: Buffer.alloc(126, 0x61) });
        await expectClose(conn, 1002, 'ping of 126 bytes');
    });
});

test('fragmented control frame is closed with 1002', T, async () => {
    await withHerald({}, async (h) => {
        const conn = await wsOpen(h.port);
        conn.sendFrame({ opcode: OP.PING, payload: 'abc', fin: false });
        await expectClose(conn, 1002, 'ping with FIN clear');
    });
});

test('close handshake echoes the code 1000 and the server ends the connection', T, async () => {
    await withHerald({}, async (h) => {
        const conn = await wsOpen(h.port);
        conn.sendFrame({ opcode: OP.CLOSE, payload: closePayload(1000, 'bye') });
        const c = await conn.readClose(5000);
        assert.ok(!c.eof, 'no close frame in answer');
        assert.equal(c.code, 1000);
        await conn.waitEof(5000);
        conn.destroy();

        // An empty close frame is answered with an empty one or with 1000.
        const conn2 = await wsOpen(h.port);
        conn2.sendFrame({ opcode: OP.CLOSE });
        const c2 = await conn2.readClose(5000);
        assert.ok(!c2.eof, 'no close frame in answer to an empty close');
        assert.ok(c2.code === null || c2.code === 1000, `code ${c2.code}`);
        await conn2.waitEof(5000);
        conn2.destroy();
    });
});

test('close with an invalid code or a one-byte payload is closed with 1002', T, async () => {
    await withHerald({}, async (h) => {
        for (const code of [0, 999, 1004, 1005, 1006, 1015, 5000, 65535]) {
            const conn = await wsOpen(h.port);
            conn.sendFrame({ opcode: OP.CLOSE, payload: closePayload(code) });
            await expectClose(conn, 1002, `close code ${code}`);
        }
        const conn = await wsOpen(h.port);
        conn.sendFrame({ opcode: OP.CLOSE, payload: Buffer.from([0x03]) });
        await expectClose(conn, 1002, 'one-byte close payload');
    });
});

test('invalid UTF-8 in text (split across fragments or whole) is closed with 1007', T, async () => {
    await withHerald({}, async (h) => {
        let conn = await wsOpen(h.port);
        // E2 82 starts a three-byte sequence; 28 is not a continuation byte.
        conn.sendFrame({ opcode: OP.TEXT, payload: Buffer.from([0x7b, 0x22, 0xe2, 0x82]), fin: false });
        conn.sendFrame({ opcode: OP.CONT, payload: Buffer.from([0x28, 0x22, 0x7d]), fin: true });
        await expectClose(conn, 1007, 'split invalid sequence');
        for (const bad of [[0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xff]]) {
            conn = await wsOpen(h.port);
            conn.sendFrame({ opcode: OP.TEXT, payload: Buffer.from([0x22, ...bad, 0x22]) });
            await expectClose(conn, 1007, `bytes ${Buffer.from(bad).toString('hex')}`);
        }
    });
});

test('message over --max_message_size is closed with 1009 (single frame and fragmented)', T, async () => {
    await withHerald({ args: ['--max_message_size', '1024'] }, async (h) => {
        let conn = await wsOpen(h.port);
        conn.sendText(`"${'a'.repeat(2000)}"`);
        await expectClose(conn, 1009, 'one frame of 2002 bytes');
        conn = await wsOpen(h.port);
        conn.sendFrame({ opcode: OP.TEXT, payload: `"${'b'.repeat(499)}`, fin: false });
        conn.sendFrame({ opcode: OP.CONT, payload: 'c'.repeat(500), fin: false });
        conn.sendFrame({ opcode: OP.CONT, payload: `${'d'.repeat(499)}"`, fin: true });
        await expectClose(conn, 1009, 'three fragments of 500 bytes');
        // A message within the limit is fine.
        conn = await wsOpen(h.port);
        conn.sendText(JSON.stringify({ id: 1, connect: { token: h.token('small'), name: 'x'.repeat(500) } }));
        const f = await conn.readFrame();
        assert.ok(f && f.opcode === OP.TEXT, `expected the connect reply, got ${f && f.opcode}`);
        conn.destroy();
    });
});

test('binary frame is closed with 1003', T, async () => {
    await withHerald({}, async (h) => {
        const conn = await wsOpen(h.port);
        conn.sendFrame({ opcode: OP.BINARY, payload: Buffer.from([1, 2, 3]) });
        await expectClose(conn, 1003, 'binary frame');
    });
});

test('several commands in one frame separated by newlines are all answered', T, async () => {
    await withHerald({}, async (h) => {
        const conn = await wsOpen(h.port);
        try {
            const batch = [
                { id: 1, connect: { token: h.token('batch') } },
                { id: 2, subscribe: { channel: 'x1' } },
                { id: 3, subscribe: { channel: 'x2' } },
            ].map((c) => JSON.stringify(c)).join('\n');
            conn.sendText(batch);
            const seen = new Map();
            while (seen.size < 3) {
                const f = await conn.readFrame();
                assert.ok(f && f.opcode === OP.TEXT, `unexpected frame ${f && f.opcode}`);
                for (const line of f.payload.toString().split('\n')) {
                    if (!line.trim()) continue;
                    const m = JSON.parse(line);
                    if (m.id) seen.set(m.id, m);
                }
            }
            assert.ok(seen.get(1).connect, JSON.stringify(seen.get(1)));
            assert.ok(seen.get(2).subscribe && !seen.get(2).error, JSON.stringify(seen.get(2)));
            assert.ok(seen.get(3).subscribe && !seen.get(3).error, JSON.stringify(seen.get(3)));
        } finally {
            conn.destroy();
        }
    });
});
