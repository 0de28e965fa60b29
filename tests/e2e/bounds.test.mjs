// Timeouts, sizes and the node-wide output budget (issue 16): a slow or hostile client is cut off
// within its bound, answered with the protocol's code, and herald's memory stays bounded while it
// keeps serving everyone else. Memory is herald's own, from /proc/<pid>/status: its peak
// (VmHWM, reset before each phase) against its RSS before. The ASan build runs with a small
// quarantine here, so that freed memory is reused and the peak is what herald holds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';

import { withHerald, httpRequest, sleep } from './lib/herald.mjs';
import { OP, RawConn, frame, handshakeRequest, wsOpen } from './lib/raw.mjs';
import { ProtoClient } from './lib/proto.mjs';
import { makeClient, once } from './lib/centrifuge.mjs';

const T = (seconds) => ({ timeout: seconds * 1000 });
const ASAN_ENV = {
    ASAN_OPTIONS: `${process.env.ASAN_OPTIONS ? `${process.env.ASAN_OPTIONS}:` : ''}quarantine_size_mb=1`,
};

// ---- memory ----

function statusKB(pid, field) {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
    return Number(m[1]);
}

// herald's RSS now, with its peak reset to it (clear_refs 5): a later peakKB is what came after.
function rssMark(h) {
    try { writeFileSync(`/proc/${h.child.pid}/clear_refs`, '5'); } catch { /* kernel refuses: peak since start */ }
    return statusKB(h.child.pid, 'VmRSS');
}

function peakKB(h) {
    return statusKB(h.child.pid, 'VmHWM');
}

const mb = (kb) => (kb / 1024).toFixed(1);

// A bound on herald's growth, in kB, for a build: ThreadSanitizer's shadow and allocator cost
// several times what the other builds do (HERALD_BIN=build/herald-tsan).
function boundKB(h, megabytes) {
    return (h.bin.includes('tsan') ? 4 : 1) * megabytes * 1024;
}

function assertGrowth(h, rss0, megabytes, what) {
    const grown = peakKB(h) - rss0;
    console.log(`# ${what}: herald's RSS grew by ${mb(grown)} MB (bound ${mb(boundKB(h, megabytes))} MB)`);
    assert.ok(grown < boundKB(h, megabytes), `herald's RSS grew by ${mb(grown)} MB ${what}`);
}

// ---- helpers ----

async function info(h) {
    const r = await h.api('info', {});
    assert.equal(r.status, 200, r.text);
    return r.json.result.nodes[0];
}

async function until(fn, timeout, what) {
    const deadline = Date.now() + timeout;
    for (;;) {
        const v = await fn();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timeout waiting for ${what}`);
        await sleep(100);
    }
}

async function connectedProto(h, user = 'u1') {
    const c = await ProtoClient.open(h.wsUrl);
    const r = await c.connect(h.token(user));
    assert.ok(r.connect, `connect: ${JSON.stringify(r)}`);
    return c;
}

// A raw WebSocket, connected and subscribed to channel, reading nothing more until told.
async function rawSubscriber(h, channel, user) {
    const conn = await wsOpen(h.port);
    conn.sendText(`${JSON.stringify({ id: 1, connect: { token: h.token(user) } })}\n`
        + JSON.stringify({ id: 2, subscribe: { channel } }));
    let text = '';
    while (!text.includes('"id":2')) {
        const f = await conn.readFrame(5000);
        assert.ok(f, 'closed before the subscribe reply');
        text += `${f.payload.toString('utf8')}\n`;
    }
    assert.match(text, /"id":2,"subscribe"/);
    return conn;
}

// A connection whose 'close' time is recorded.
function tcpConnect(port) {
    return new Promise((resolve, reject) => {
        const sock = net.connect({ port, host: '127.0.0.1' });
        const rec = { sock, openedAt: 0, closedAt: 0, gotData: false };
        sock.once('connect', () => { rec.openedAt = Date.now(); resolve(rec); });
        sock.once('error', (err) => { if (!rec.openedAt) reject(err); });
        sock.on('error', () => { /* a reset after the close: expected */ });
        sock.on('data', () => { rec.gotData = true; });
        sock.once('close', () => { rec.closedAt = Date.now(); });
    });
}

// ---- time ----

test('slowloris: 2,000 connections dribbling a request head are all closed within handshake_timeout, memory bounded, a client still served',
    T(90), async () => {
        const TIMEOUT = 4;
        await withHerald({ threads: 2, env: ASAN_ENV, args: ['--handshake_timeout', String(TIMEOUT)] }, async (h) => {
            await info(h);
            const rss0 = rssMark(h);
            const head = `GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1:${h.port}\r\n`
                + 'Upgrade: websocket\r\nConnection: Upgrade\r\nX-Padding: '.padEnd(200, 'p');
            const conns = [];
            // One byte a second each, from the accept on, for as long as herald keeps them.
            const dribble = setInterval(() => {
                for (const c of conns) {
                    if (c.closedAt || c.sock.destroyed) continue;
                    c.at = (c.at ?? 0) + 1;
                    c.sock.write(head[c.at % head.length]);
                }
            }, 1000);
            try {
                for (let i = 0; i < 2000; i += 200) {
                    const batch = await Promise.all(Array.from({ length: 200 }, () => tcpConnect(h.port)));
                    for (const c of batch) {
                        c.sock.write(head[0]);
                        conns.push(c);
                    }
                }
                // Meanwhile a normal client connects, subscribes and receives.
                const { client } = makeClient(h, { token: h.token('normal') });
                try {
                    const connected = once(client, 'connected', 10000);
                    client.connect();
                    await connected;
                    const sub = client.newSubscription('news');
                    const subscribed = once(sub, 'subscribed', 10000);
                    sub.subscribe();
                    await subscribed;
                    const pub = once(sub, 'publication', 10000);
                    const r = await h.api('publish', { channel: 'news', data: { n: 1 } });
                    assert.equal(r.status, 200, r.text);
                    assert.deepEqual((await pub).data, { n: 1 });
                } finally {
                    client.disconnect();
                }
                // Every dribbler gone within the timeout (+ the timer wheel's second, + slack).
                await until(() => conns.every((c) => c.closedAt), (TIMEOUT + 6) * 1000, 'every slowloris connection closed');
            } finally {
                clearInterval(dribble);
                for (const c of conns) c.sock.destroy();
            }
            const lived = conns.map((c) => c.closedAt - c.openedAt).sort((a, b) => a - b);
            const shortest = lived[0];
            const longest = lived[lived.length - 1];
            assert.ok(shortest >= (TIMEOUT - 1.5) * 1000,
                `a connection was closed after ${shortest} ms, before handshake_timeout (${TIMEOUT} s)`);
            assert.ok(longest <= (TIMEOUT + 2.5) * 1000,
                `a connection dribbling its head lived ${longest} ms, handshake_timeout is ${TIMEOUT} s`);
            assert.equal(conns.filter((c) => c.gotData).length, 0, 'herald answered a head that never ended');
            assertGrowth(h, rss0, 40, 'holding 2,000 slowloris connections');
            const n = await until(async () => {
                const node = await info(h);
                return node.num_connections <= 1 ? node : null;
            }, 5000, 'connections back to 1');
            assert.ok(n.num_connections <= 1);
        });
    });

test('an idle keep-alive connection after a request is closed as before; the next head gets its own deadline', T(30), async () => {
    await withHerald({ args: ['--handshake_timeout', '2'] }, async (h) => {
        const conn = await RawConn.connect(h.port);
        try {
            conn.write(`GET /health HTTP/1.1\r\nHost: 127.0.0.1:${h.port}\r\n\r\n`);
            const r = await conn.readResponse(5000);
            assert.equal(r.status, 200);
            // Idle for longer than handshake_timeout: still open (the keep-alive bound is 30 s).
            await sleep(3500);
            assert.equal(conn.eof, false, 'an idle keep-alive connection was closed at handshake_timeout');
            // A second request, whole: answered.
            conn.write(`GET /health HTTP/1.1\r\nHost: 127.0.0.1:${h.port}\r\n\r\n`);
            assert.equal((await conn.readResponse(5000)).status, 200);
            // A third, dribbled: closed about handshake_timeout after its first byte.
            const t0 = Date.now();
            const text = `GET /health HTTP/1.1\r\nHost: 127.0.0.1:${h.port}\r\n`;
            for (let i = 0; i < text.length && !conn.eof; i++) {
                conn.write(text[i]);
                await sleep(500);
            }
            await conn.waitEof(5000);
            const lived = Date.now() - t0;
            assert.ok(lived >= 1000 && lived <= 4500, `the dribbled head lived ${lived} ms (handshake_timeout 2 s)`);
        } finally {
            conn.destroy();
        }
    });
});

test('an upgrade request with its first frame in the same write: every one answered (the head deadline ends with the upgrade)',
    T(60), async () => {
        await withHerald({ threads: 1 }, async (h) => {
            let next = 0;
            const failures = [];
            const one = async (i) => {
                const conn = await RawConn.connect(h.port);
                try {
                    const { text } = handshakeRequest({ port: h.port });
                    conn.write(Buffer.concat([Buffer.from(text),
                        frame({ opcode: OP.TEXT, payload: JSON.stringify({ id: 1, connect: { token: h.token(`p${i}`) } }) })]));
                    const head = await conn.readHead(5000);
                    if (!head || head.status !== 101) throw new Error(`handshake: ${head && head.status}`);
                    const f = await conn.readFrame(5000);
                    if (!f || !/"id":1,"connect"/.test(f.payload.toString('utf8'))) {
                        throw new Error(`no connect reply: ${f ? f.payload.toString('utf8').slice(0, 100) : 'EOF'}`);
                    }
                } catch (err) {
                    failures.push(`${i}: ${err.message}`);
                } finally {
                    conn.destroy();
                }
            };
            await Promise.all(Array.from({ length: 50 }, async () => { while (next < 2000) await one(next++); }));
            assert.deepEqual(failures.slice(0, 5), []);
            assert.ok(h.alive(), 'herald died');
        });
    });

test('WebSockets that never send connect are closed after client_connect_timeout with 3502', T(60), async () => {
    await withHerald({ env: ASAN_ENV, args: ['--client_connect_timeout', '2'] }, async (h) => {
        await info(h);
        const rss0 = rssMark(h);
        const idle = [];
        const opened = [];
        for (let i = 0; i < 500; i += 100) {
            const batch = await Promise.all(Array.from({ length: 100 }, () => wsOpen(h.port)));
            for (const c of batch) {
                idle.push(c);
                opened.push(Date.now());
            }
        }
        // One that connects in time stays.
        const ok = await connectedProto(h);
        try {
            const lived = await Promise.all(idle.map(async (c, i) => {
                const close = await c.readClose(8000);
                assert.equal(close.code, 3502, `expected 3502, got ${JSON.stringify({ code: close.code, eof: close.eof })}`);
                assert.equal(close.reason, 'stale');
                return Date.now() - opened[i];
            }));
            lived.sort((a, b) => a - b);
            assert.ok(lived[0] >= 900 && lived[lived.length - 1] <= 4500,
                `closed between ${lived[0]} and ${lived[lived.length - 1]} ms after the upgrade, client_connect_timeout is 2 s`);
            assertGrowth(h, rss0, 24, 'holding 500 WebSockets without connect');
            await sleep(1000);
            assert.equal(ok.closeInfo, null, 'a connected client was closed');
            const r = await ok.command('ping', {});
            assert.ok(r.ping !== undefined, JSON.stringify(r));
        } finally {
            for (const c of idle) c.destroy();
            ok.sock.close();
        }
    });
});

test('a client that never answers pings is closed with 3012; one that answers stays', T(30), async () => {
    await withHerald({ args: ['--ping_interval', '2'] }, async (h) => {
        const mute = await ProtoClient.open(h.wsUrl, { autoPong: false });
        const polite = await ProtoClient.open(h.wsUrl);
        try {
            assert.ok((await mute.connect(h.token('mute'))).connect);
            assert.ok((await polite.connect(h.token('polite'))).connect);
            // Pinged at about 2 s, judged at the next ping, about 4 s: 12 s leaves room for a
            // loaded machine (the sanitizer builds, suites running side by side).
            const close = await Promise.race([mute.closed, sleep(12000).then(() => null)]);
            assert.ok(close, 'the client that does not answer pings is still open after 12 s');
            assert.equal(close.code, 3012);
            assert.ok(mute.pings >= 1, 'no ping was sent');
            // The polite client connected a little later, maybe on the other loop: its second
            // ping (the one that judges its first pong) can come just after mute's close.
            for (const until = Date.now() + 8000; polite.pings < 2 && Date.now() < until;)
                await sleep(100);
            assert.ok(polite.pings >= 2, `the client that answers got ${polite.pings} pings`);
            assert.equal(polite.closeInfo, null, 'the client that answers pings was closed');
        } finally {
            mute.sock.close();
            polite.sock.close();
        }
    });
});

// ---- sizes ----

test('a request head over max_request_head answers 431 and is never buffered past it', T(60), async () => {
    await withHerald({ env: ASAN_ENV, args: ['--max_request_head', '2048'] }, async (h) => {
        const host = `Host: 127.0.0.1:${h.port}\r\n`;
        const ok = await httpRequest(h.port, 'GET', '/health', { headers: { 'X-Pad': 'p'.repeat(1500) } });
        assert.equal(ok.status, 200, 'a head within max_request_head was refused');
        const big = await httpRequest(h.port, 'GET', '/health', { headers: { 'X-Pad': 'p'.repeat(2100) } });
        assert.equal(big.status, 431);
        // The WebSocket upgrade request has the same bound.
        const conn = await RawConn.connect(h.port);
        conn.write(`GET /connection/websocket HTTP/1.1\r\n${host}Upgrade: websocket\r\nConnection: Upgrade\r\n`
            + `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Pad: ${'p'.repeat(3000)}\r\n\r\n`);
        assert.equal((await conn.readHead(5000)).status, 431);
        conn.destroy();

        // 64 connections, each sending a 4 MB head that never ends: 256 MB if buffered.
        await info(h);
        const rss0 = rssMark(h);
        const chunk = Buffer.from(`X-Pad: ${'p'.repeat(65536)}\r\n`);
        const statuses = await Promise.all(Array.from({ length: 64 }, async () => {
            const c = await RawConn.connect(h.port);
            try {
                c.write(`GET /health HTTP/1.1\r\n${host}`);
                for (let i = 0; i < 64 && !c.eof; i++) {
                    if (!c.write(chunk)) await new Promise((resolve) => { c.sock.once('drain', resolve); setTimeout(resolve, 200); });
                }
                const head = await c.readHead(10000);
                return head ? head.status : null;
            } finally {
                c.destroy();
            }
        }));
        assert.deepEqual([...new Set(statuses)], [431]);
        assertGrowth(h, rss0, 16, 'refusing 64 endless heads');
        assert.equal((await httpRequest(h.port, 'GET', '/health')).status, 200);
    });
});

test('a message with more than max_commands_per_message commands is refused whole with 3501', T(60), async () => {
    await withHerald({ env: ASAN_ENV, args: ['--max_commands_per_message', '10', '--max_message_size', '8388608'] }, async (h) => {
        const ok = await connectedProto(h);
        try {
            // 10 commands (and empty lines, which are not commands): all answered.
            const ten = Array.from({ length: 10 }, (_, i) => JSON.stringify({ id: 100 + i, ping: {} }));
            ok.send(`${ten.join('\n')}\n\n`);
            await ok.waitUntil(() => ok.lines.filter((l) => l.msg.id >= 100 && l.msg.id < 110).length === 10,
                5000, '10 ping replies');
        } finally {
            ok.sock.close();
        }

        const c = await connectedProto(h);
        await info(h);
        const rss0 = rssMark(h);
        // 300,000 commands in one 7 MB message: none of them runs.
        const many = Array.from({ length: 300000 }, (_, i) => JSON.stringify({ id: 1000 + i, ping: {} })).join('\n');
        c.send(many);
        const close = await Promise.race([c.closed, sleep(10000).then(() => null)]);
        assert.ok(close, 'still open after a message of 300,000 commands');
        assert.equal(close.code, 3501);
        assert.equal(c.lines.filter((l) => l.msg.id >= 1000).length, 0, 'a command of the refused message ran');
        assertGrowth(h, rss0, 24, 'for one refused message of 7 MB');

        // Eleven is one too many.
        const d = await connectedProto(h);
        d.send(Array.from({ length: 11 }, (_, i) => JSON.stringify({ id: 10 + i, ping: {} })).join('\n'));
        const close11 = await Promise.race([d.closed, sleep(5000).then(() => null)]);
        assert.ok(close11 && close11.code === 3501, `11 commands: ${JSON.stringify(close11)}`);
        assert.equal(d.lines.filter((l) => l.msg.id >= 10).length, 0);
    });
});

test('a channel over max_channel_length: error 107 for subscribe and publish, HTTP 400 with error 107 from the API',
    T(30), async () => {
        const config = { max_channel_length: 16, namespaces: { '': { client_publish: true } } };
        await withHerald({ config }, async (h) => {
            const ok16 = 'c'.repeat(16);
            const long = 'c'.repeat(17);
            const c = await connectedProto(h);
            try {
                let r = await c.command('subscribe', { channel: long });
                assert.equal(r.error?.code, 107, JSON.stringify(r));
                r = await c.command('publish', { channel: long, data: { x: 1 } });
                assert.equal(r.error?.code, 107, JSON.stringify(r));
                r = await c.command('history', { channel: long });
                assert.equal(r.error?.code, 107, JSON.stringify(r));
                // Not a disconnect: the connection goes on, a name within the bound works.
                r = await c.command('subscribe', { channel: ok16 });
                assert.ok(r.subscribe, JSON.stringify(r));
                r = await c.command('publish', { channel: ok16, data: { x: 2 } });
                assert.ok(r.publish, JSON.stringify(r));
                assert.equal(c.closeInfo, null);

                // A channel far over any bound (and the 255 of the old fixed limit).
                r = await c.command('subscribe', { channel: 'x'.repeat(5000) });
                assert.equal(r.error?.code, 107, JSON.stringify(r));

                // API.
                let a = await h.api('publish', { channel: long, data: { x: 3 } });
                assert.equal(a.status, 400, a.text);
                assert.equal(a.json?.error?.code, 107, a.text);
                for (const method of ['history', 'presence', 'presence_stats', 'history_remove']) {
                    a = await h.api(method, { channel: long });
                    assert.equal(a.status, 400, `${method}: ${a.text}`);
                    assert.equal(a.json?.error?.code, 107, `${method}: ${a.text}`);
                }
                a = await h.api('subscribe', { user: 'u1', channel: long });
                assert.equal(a.status, 400, a.text);
                // A broadcast naming one too long channel publishes on none.
                const before = c.publications(ok16).length;
                a = await h.api('broadcast', { channels: [ok16, long], data: { x: 4 } });
                assert.equal(a.status, 400, a.text);
                assert.equal(a.json?.error?.code, 107, a.text);
                // The bound counts the name's bytes after unescaping: 16 written as 96.
                a = await h.api('publish', `{"channel":"${'\\u0063'.repeat(16)}","data":{"x":5}}`);
                assert.equal(a.status, 200, a.text);
                assert.ok(a.json?.result, a.text);
                const pubs = await c.waitPublications(before + 1, ok16);
                assert.deepEqual(pubs.map((p) => p.pub.data), [{ x: 2 }, { x: 5 }]);
            } finally {
                c.sock.close();
            }
        });
    });

test('publication data over a namespace max_data_size: error 106 for the client and in the API', T(30), async () => {
    const config = {
        namespaces: { '': { client_publish: true }, small: { client_publish: true, max_data_size: 100 } },
    };
    await withHerald({ config }, async (h) => {
        const c = await connectedProto(h);
        try {
            assert.ok((await c.command('subscribe', { channel: 'small:a' })).subscribe);
            const fits = { s: 'x'.repeat(100 - 8) }; // {"s":"..."}: 100 bytes
            const over = { s: 'x'.repeat(101 - 8) };
            assert.equal(JSON.stringify(fits).length, 100);
            let r = await c.command('publish', { channel: 'small:a', data: over });
            assert.equal(r.error?.code, 106, JSON.stringify(r));
            r = await c.command('publish', { channel: 'small:a', data: fits });
            assert.ok(r.publish, JSON.stringify(r));
            // The default namespace has no such bound.
            r = await c.command('publish', { channel: 'big', data: { s: 'x'.repeat(5000) } });
            assert.ok(r.publish, JSON.stringify(r));

            let a = await h.api('publish', { channel: 'small:a', data: over });
            assert.equal(a.status, 200, a.text);
            assert.equal(a.json?.error?.code, 106, a.text);
            a = await h.api('broadcast', { channels: ['small:a', 'big'], data: over });
            assert.equal(a.status, 200, a.text);
            const res = a.json.result.responses;
            assert.equal(res[0].error?.code, 106, a.text);
            assert.ok(res[1].result, a.text);
            a = await h.api('publish', { channel: 'small:a', data: fits });
            assert.ok(a.json?.result, a.text);
            // What reached the subscriber: only what fits.
            const pubs = await c.waitPublications(2, 'small:a');
            await sleep(200);
            assert.equal(c.publications('small:a').length, 2);
            for (const p of pubs) assert.deepEqual(p.pub.data, fits);
        } finally {
            c.sock.close();
        }
    });
});

test('a frame announcing a huge length is refused from its head with 1009, nothing buffered', T(30), async () => {
    await withHerald({ env: ASAN_ENV }, async (h) => {
        await info(h);
        const rss0 = rssMark(h);
        const conns = await Promise.all(Array.from({ length: 32 }, () => wsOpen(h.port)));
        const codes = await Promise.all(conns.map(async (c) => {
            // A text frame of 2^40 bytes announced; 1 MB of it sent.
            const head = Buffer.from([0x81, 0xff, 0, 0, 0x01, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
            c.write(head);
            c.write(Buffer.alloc(1 << 20, 0x61));
            const close = await c.readClose(5000);
            c.destroy();
            return close.code;
        }));
        assert.deepEqual([...new Set(codes)], [1009]);
        assertGrowth(h, rss0, 8, 'refusing 32 frames announced at 1 TB');
    });
});

// ---- the node-wide output budget ----

// Watches channel's presence while a flood runs: a user of clients ({user: RawConn, paused})
// that leaves it has been disconnected; its socket is read again at once, so that the close frame
// reaches it within the close grace (3 s), behind what the kernel buffered.
function watchDisconnects(h, channel, clients) {
    let stopped = false;
    const gone = [];
    const done = (async () => {
        while (!stopped) {
            const r = await h.api('presence', { channel });
            assert.equal(r.status, 200, r.text);
            const users = new Set(Object.values(r.json.result.presence).map((ci) => ci.user));
            for (const [user, conn] of Object.entries(clients)) {
                if (!users.has(user) && !gone.includes(user)) {
                    gone.push(user);
                    conn.sock.resume();
                }
            }
            await sleep(50);
        }
    })();
    return { gone, stop: async () => { stopped = true; await done; } };
}

test('client_queue_total_max: the clients furthest behind are disconnected with 3008, a reading client gets everything in order, memory bounded',
    T(120), async () => {
        const SLOW = 8;
        const COUNT = 800;
        const SIZE = 16 * 1024;
        const args = ['--client_queue_total_max', String(4 << 20), '--client_queue_max', String(64 << 20)];
        const config = { namespaces: { '': { presence: true } } };
        await withHerald({ threads: 2, env: ASAN_ENV, args, config }, async (h) => {
            const slow = [];
            const byUser = {};
            for (let i = 0; i < SLOW; i++) {
                const conn = await rawSubscriber(h, 'firehose', `slow${i}`);
                conn.sock.pause(); // reads nothing more (until disconnected)
                slow.push(conn);
                byUser[`slow${i}`] = conn;
            }
            const reader = await connectedProto(h, 'reader');
            assert.ok((await reader.command('subscribe', { channel: 'firehose' })).subscribe);
            assert.equal((await info(h)).num_clients, SLOW + 1);
            const rss0 = rssMark(h);

            // SLOW x COUNT x SIZE = 100 MB queued if nothing bounded it (client_queue_max is 64 MB).
            const pad = 'x'.repeat(SIZE);
            const watch = watchDisconnects(h, 'firehose', byUser);
            try {
                for (let i = 0; i < COUNT; i++) {
                    const r = await h.api('publish', `{"channel":"firehose","data":{"n":${i},"p":"${pad}"}}`);
                    assert.equal(r.status, 200, r.text);
                }
                await until(() => watch.gone.length === SLOW, 5000, 'every slow client disconnected');
            } finally {
                await watch.stop();
            }
            const pubs = await reader.waitPublications(COUNT, 'firehose', 30000);
            assert.deepEqual(pubs.map((p) => p.pub.data.n), Array.from({ length: COUNT }, (_, i) => i),
                'the reading client missed or reordered publications');
            assert.equal(reader.closeInfo, null, 'the reading client was disconnected');
            const node = await until(async () => {
                const n = await info(h);
                return n.num_clients === 1 ? n : null;
            }, 10000, 'only the reading client left');
            assert.equal(node.num_clients, 1);
            assertGrowth(h, rss0, 24, 'with client_queue_total_max at 4 MB (unbounded: ~100 MB)');

            // Each slow client, reading again, finds whole publications, then 3008.
            for (const conn of slow) {
                const close = await conn.readClose(10000);
                assert.equal(close.code, 3008, `expected 3008, got ${JSON.stringify({ code: close.code, eof: close.eof })}`);
                assert.equal(close.reason, 'slow');
                for (const f of close.frames) {
                    for (const line of f.payload.toString('utf8').split('\n')) JSON.parse(line);
                }
                assert.ok(close.frames.length < COUNT, 'a slow client got every publication: nothing was dropped');
                conn.destroy();
            }
            // herald serves on.
            const after = await connectedProto(h, 'after');
            assert.ok((await after.command('subscribe', { channel: 'firehose' })).subscribe);
            after.sock.close();
            reader.sock.close();
        });
    });

test('client_queue_total_max: a client somewhat behind outlives the ones furthest behind', T(120), async () => {
    const args = ['--client_queue_total_max', String(3 << 20), '--client_queue_max', String(64 << 20)];
    const config = { namespaces: { '': { presence: true } } };
    await withHerald({ threads: 2, env: ASAN_ENV, args, config }, async (h) => {
        // Two that never read, subscribed to both channels; one that never reads, only to the
        // light channel: it falls behind, but by far less.
        const heavy = [await rawSubscriber(h, 'heavy', 'h1'), await rawSubscriber(h, 'heavy', 'h2')];
        for (const c of heavy) {
            c.sendText(JSON.stringify({ id: 3, subscribe: { channel: 'light' } }));
            const f = await c.readFrame(5000);
            assert.match(f.payload.toString('utf8'), /"id":3,"subscribe"/);
            c.sock.pause();
        }
        const light = await rawSubscriber(h, 'light', 'l1');
        light.sock.pause();
        const pad = 'x'.repeat(16 * 1024);
        const lightPad = 'y'.repeat(16 * 1024);
        const watch = watchDisconnects(h, 'heavy', { h1: heavy[0], h2: heavy[1] });
        try {
            for (let i = 0; i < 600; i++) {
                assert.equal((await h.api('publish', `{"channel":"heavy","data":{"n":${i},"p":"${pad}"}}`)).status, 200);
                if (i % 4 === 0) {
                    assert.equal((await h.api('publish', `{"channel":"light","data":{"n":${i},"p":"${lightPad}"}}`)).status, 200);
                }
            }
            await until(() => watch.gone.length === 2, 5000, 'the two furthest behind disconnected');
        } finally {
            await watch.stop();
        }
        const r = await h.api('presence', { channel: 'light' });
        assert.deepEqual(Object.values(r.json.result.presence).map((ci) => ci.user), ['l1'],
            'the client least behind was disconnected');
        // The one left is the one that was least behind: it reads every light publication.
        light.sock.resume();
        let text = '';
        const deadline = Date.now() + 5000;
        while ((text.match(/"n":/g) || []).length < 150 && Date.now() < deadline) {
            const f = await light.readFrame(Math.max(1, deadline - Date.now()));
            assert.ok(f && f.opcode === 1, `the light client got ${f ? `opcode ${f.opcode}` : 'EOF'}`);
            text += `${f.payload.toString('utf8')}\n`;
        }
        const ns = [...text.matchAll(/"n":(\d+)/g)].map((m) => Number(m[1]));
        assert.deepEqual(ns, Array.from({ length: 150 }, (_, i) => i * 4));
        for (const c of heavy) {
            const close = await c.readClose(10000);
            assert.equal(close.code, 3008);
            c.destroy();
        }
        light.destroy();
    });
});
