// Limits: out of file descriptors, herald neither spins nor stops (it pauses accepting for a
// second, keeps serving what it has, and accepts again once descriptors are free); and each
// configured limit (connections in total, per IP and per user, new connections per IP,
// commands per connection, publishes per user and per channel, subscriptions per
// connection) is answered with its code, on one node and across two nodes on Redis.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';

import { heraldBin, freePort, httpRequest, keepLog, sleep, sanitizerReport, start, withHerald, runHerald }
    from './lib/herald.mjs';
import { makeClient, once } from './lib/centrifuge.mjs';
import { ProtoClient } from './lib/proto.mjs';
import { wsHandshake } from './lib/raw.mjs';
import { startRedis } from './lib/redis.mjs';

function cpuSeconds(pid) {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in ticks of 10 ms
}

test('with its descriptors exhausted herald pauses accepting, does not spin, and recovers', async () => {
    const port = await freePort();
    const env = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('HERALD_')) env[k] = v;
    // 64 descriptors: a few for herald itself, the rest for connections.
    const child = spawn('sh', ['-c', 'ulimit -n 64 && exec "$0" "$@"', heraldBin(),
        '--listen', `127.0.0.1:${port}`, '--threads', '1', '--allow_anonymous', '--api_key', 'k'],
    { env, stdio: ['ignore', 'ignore', 'pipe'] });
    keepLog(child);
    let stderr = '';
    child.stderr.on('data', (c) => { stderr += c; });
    const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    const socks = [];
    try {
        for (let i = 0; i < 50; i++) {
            try {
                if ((await httpRequest(port, 'GET', '/health')).status === 200) break;
            } catch { /* not up yet */ }
            await sleep(100);
        }
        for (let i = 0; i < 100; i++) {
            const s = net.connect(port, '127.0.0.1');
            s.on('error', () => {});
            socks.push(s);
        }
        await sleep(500);
        const before = cpuSeconds(child.pid);
        await sleep(2000);
        const spent = cpuSeconds(child.pid) - before;
        assert.ok(spent < 0.5, `herald used ${spent} s of CPU in 2 s with a full descriptor table`);
        assert.match(stderr, /pausing accepts/);
        for (const s of socks) s.destroy();
        await sleep(1500);
        const r = await httpRequest(port, 'GET', '/health');
        assert.equal(r.status, 200);
    } finally {
        for (const s of socks) s.destroy();
        child.kill('SIGTERM');
        const res = await exited;
        assert.equal(res.code, 0, `exit ${JSON.stringify(res)}\n${stderr}`);
        assert.equal(sanitizerReport(stderr), '', stderr);
    }
});

// ---- connection, command, publish and subscription limits (limit/node.h) ----


const T = { timeout: 60000 };

// A raw handshake: its HTTP status (the connection stays open on 101, and is returned).
async function handshake(h, headers = {}) {
    const r = await wsHandshake(h.port, { headers });
    if (r.head.status !== 101) r.conn.destroy();
    return { status: r.head.status, headers: r.head.headers, conn: r.conn };
}

// Polls until a handshake is accepted (counts drop once the server has seen the close).
async function handshakeEventually(h, headers = {}, ms = 5000) {
    const deadline = Date.now() + ms;
    for (;;) {
        const r = await handshake(h, headers);
        if (r.status === 101 || Date.now() > deadline) return r;
        await sleep(50);
    }
}

// A ProtoClient connected as user (asserted); its socket reconnects nothing.
async function connected(h, user, headers = {}) {
    const c = await ProtoClient.open(h.wsUrl, { wsOptions: { headers } });
    const r = await c.connect(h.token(user));
    assert.ok(r.connect, `connect ${user}: ${JSON.stringify(r)}`);
    return c;
}

// Sends commands in one WebSocket message; resolves with their replies in order.
async function batch(c, cmds, timeout = 5000) {
    const ids = cmds.map(() => ++c.nextId);
    c.send(cmds.map((cmd, i) => JSON.stringify({ id: ids[i], ...cmd })).join('\n'));
    return Promise.all(ids.map((id) => c.reply(id, timeout)));
}

test('max_connections: past it the handshake gets 503, and a closed connection frees its place', T, async () => {
    await withHerald({ args: ['--max_connections', '2', '--allow_anonymous'] }, async (h) => {
        const a = await handshake(h);
        const b = await handshake(h);
        assert.equal(a.status, 101);
        assert.equal(b.status, 101);
        const c = await handshake(h);
        assert.equal(c.status, 503);
        assert.equal(c.headers['retry-after'], '1');
        // Plain HTTP is not a WebSocket connection: still served.
        assert.equal((await httpRequest(h.port, 'GET', '/health')).status, 200);
        a.conn.destroy();
        const d = await handshakeEventually(h);
        assert.equal(d.status, 101);
        b.conn.destroy();
        d.conn.destroy();
    });
});

test('max_connections_per_ip: 429 at the handshake, counts drop on every way a connection ends', T, async () => {
    await withHerald({ args: ['--max_connections_per_ip', '2'] }, async (h) => {
        // One ends by the client's close frame, one by a reset, one by the server (3501).
        const a = await connected(h, 'a');
        const b = await handshake(h);
        assert.equal(b.status, 101);
        assert.equal((await handshake(h)).status, 429);
        a.close();
        await a.closed;
        const c = await handshakeEventually(h);
        assert.equal(c.status, 101);
        assert.equal((await handshake(h)).status, 429);
        b.conn.destroy();
        const d = await handshakeEventually(h);
        assert.equal(d.status, 101);
        d.conn.sendText('not json'); // bad request: the server closes it
        c.conn.destroy();
        const e = await handshakeEventually(h);
        assert.equal(e.status, 101);
        const f = await handshakeEventually(h);
        assert.equal(f.status, 101, 'the connection the server closed gave its place back');
        e.conn.destroy();
        f.conn.destroy();
    });
});

test('connection_rate_per_ip: the burst is accepted, then 429', T, async () => {
    await withHerald({ args: ['--connection_rate_per_ip', '1', '--connection_burst_per_ip', '3'] }, async (h) => {
        const got = [];
        for (let i = 0; i < 8; i++) {
            const r = await handshake(h);
            got.push(r.status);
            if (r.status === 101) r.conn.destroy();
        }
        assert.deepEqual(got.slice(0, 3), [101, 101, 101]);
        // One comes back a second: eight in a row cannot all pass unless they took 5 s.
        assert.ok(got.slice(3).includes(429), `statuses ${got}`);
        assert.ok(got.every((s) => s === 101 || s === 429), `statuses ${got}`);
    });
});

test('trusted_proxies: X-Forwarded-For and X-Real-IP are believed from a trusted peer only', T, async () => {
    const args = ['--max_connections_per_ip', '1', '--allow_anonymous'];
    await withHerald({ config: { trusted_proxies: ['127.0.0.0/8', '::1/128'] }, args }, async (h) => {
        // The rightmost address that is not a trusted proxy is the client.
        const a = await handshake(h, { 'X-Forwarded-For': '198.51.100.9, 203.0.113.1, 127.0.0.5' });
        assert.equal(a.status, 101);
        assert.equal((await handshake(h, { 'X-Forwarded-For': '203.0.113.1' })).status, 429);
        // The forged left part changes nothing: the same client.
        assert.equal((await handshake(h, { 'X-Forwarded-For': '1.1.1.1, 203.0.113.1' })).status, 429);
        const b = await handshake(h, { 'X-Forwarded-For': '203.0.113.2' });
        assert.equal(b.status, 101);
        const c = await handshake(h, { 'X-Real-IP': '2001:db8::7' });
        assert.equal(c.status, 101);
        assert.equal((await handshake(h, { 'X-Real-IP': '2001:db8::7' })).status, 429);
        // No header: the proxy itself, a client of its own.
        const d = await handshake(h);
        assert.equal(d.status, 101);
        a.conn.destroy();
        assert.equal((await handshakeEventually(h, { 'X-Forwarded-For': '203.0.113.1' })).status, 101);
        for (const x of [b, c, d]) x.conn.destroy();
    });
    // Not a trusted peer: the headers are ignored, everything is 127.0.0.1.
    await withHerald({ config: { trusted_proxies: ['10.0.0.0/8'] }, args }, async (h) => {
        const a = await handshake(h, { 'X-Forwarded-For': '203.0.113.1' });
        assert.equal(a.status, 101);
        assert.equal((await handshake(h, { 'X-Forwarded-For': '203.0.113.2' })).status, 429);
        assert.equal((await handshake(h, { 'X-Real-IP': '203.0.113.3' })).status, 429);
        a.conn.destroy();
    });
});

test('trusted_proxies: of two X-Real-IP headers the last (the proxy\'s) is believed', T, async () => {
    const args = ['--max_connections_per_ip', '1', '--allow_anonymous'];
    await withHerald({ config: { trusted_proxies: ['127.0.0.0/8'] }, args }, async (h) => {
        const a = await handshake(h, { 'X-Real-IP': '203.0.113.50' });
        assert.equal(a.status, 101);
        // The client's own header first, the one a proxy appended after it.
        const b = await handshake(h, { 'X-Real-IP': '198.51.100.1', 'x-real-ip': '203.0.113.50' });
        assert.equal(b.status, 429, 'a forged first X-Real-IP escapes the per-IP limit');
        a.conn.destroy();
    });
});

test('trusted_proxies that are not CIDRs: herald refuses to start, naming the key', T, async () => {
    const r = await runHerald(['--listen', '127.0.0.1:1', '--allow_anonymous', '--trusted_proxies',
        '10.0.0.0/33']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /trusted_proxies/);
});

test('max_connections_per_user: the next connection of the user is disconnected 3504, others connect', T, async () => {
    await withHerald({ args: ['--max_connections_per_user', '2'] }, async (h) => {
        const a1 = await connected(h, 'alice');
        const a2 = await connected(h, 'alice');
        const a3 = await ProtoClient.open(h.wsUrl);
        a3.send({ id: 1, connect: { token: h.token('alice') } });
        const closed = await a3.closed;
        assert.equal(closed.code, 3504);
        assert.equal(closed.reason, 'connection limit');
        const b = await connected(h, 'bob');
        // The official client: a terminal disconnect, no reconnect.
        const { client, events } = makeClient(h, { token: h.token('alice') });
        const disc = once(client, 'disconnected', 10000);
        client.connect();
        const ctx = await disc;
        assert.equal(ctx.code, 3504);
        await sleep(300);
        assert.equal(events.filter((e) => e.ev === 'connecting').length, 1, JSON.stringify(events));
        // Gone, it counts no more.
        a1.close();
        await a1.closed;
        let again = null;
        for (let i = 0; i < 50 && !again; i++) {
            const c = await ProtoClient.open(h.wsUrl);
            c.send({ id: 1, connect: { token: h.token('alice') } });
            const r = await Promise.race([c.reply(1).catch(() => null), c.closed.then(() => null)]);
            if (r && r.connect) again = c;
            else await sleep(50);
        }
        assert.ok(again, 'alice could connect again after one of hers left');
        for (const c of [a2, b, again]) c.close();
    });
});

test('client_command_rate: a flood gets 111, then 3013; a normal client on the node is unaffected', T, async () => {
    await withHerald({ threads: 1, args: ['--client_command_rate', '5', '--client_command_burst', '10'] },
        async (h) => {
            const normal = await connected(h, 'calm');
            const flood = await connected(h, 'flood'); // connect took one of its ten
            // Eight pings fit in what is left of the burst; the next four get 111.
            const r = await batch(flood, Array.from({ length: 13 }, () => ({ ping: {} })));
            assert.equal(r.filter((x) => x.ping).length, 9, JSON.stringify(r));
            assert.deepEqual(r.slice(9).map((x) => x.error?.code), [111, 111, 111, 111]);
            // It keeps going: disconnected.
            flood.send(Array.from({ length: 5 }, (_, i) => JSON.stringify({ id: 100 + i, ping: {} })).join('\n'));
            const closed = await flood.closed;
            assert.equal(closed.code, 3013);
            assert.equal(closed.reason, 'too many requests');
            const p = await normal.command('ping');
            assert.ok(p.ping, JSON.stringify(p));
            assert.equal(normal.closeInfo, null);
            normal.close();
        });
});

test('user_publish_rate and channel_publish_rate: error 111 past them', T, async () => {
    const ns = { namespaces: { '': { client_publish: true } } };
    await withHerald({ config: ns, args: ['--user_publish_rate', '1', '--user_publish_burst', '2'] }, async (h) => {
        const a = await connected(h, 'alice');
        const r = await batch(a, [0, 1, 2].map((i) => ({ publish: { channel: `c${i}`, data: { i } } })));
        assert.ok(r[0].publish && r[1].publish, JSON.stringify(r));
        assert.equal(r[2].error?.code, 111);
        const b = await connected(h, 'bob');
        const rb = await b.command('publish', { channel: 'c0', data: {} });
        assert.ok(rb.publish, JSON.stringify(rb));
        a.close();
        b.close();
    });
    await withHerald({ config: ns, args: ['--channel_publish_rate', '1', '--channel_publish_burst', '2'] }, async (h) => {
        const a = await connected(h, 'alice');
        const b = await connected(h, 'bob');
        const r = await batch(a, [0, 1, 2].map((i) => ({ publish: { channel: 'busy', data: { i } } })));
        assert.ok(r[0].publish && r[1].publish, JSON.stringify(r));
        assert.equal(r[2].error?.code, 111);
        // Another user on the same channel: the channel's limit (at most one came back since).
        const rb = await batch(b, [0, 1].map((i) => ({ publish: { channel: 'busy', data: { i } } })));
        assert.ok(rb.some((x) => x.error?.code === 111), JSON.stringify(rb));
        const other = await b.command('publish', { channel: 'quiet', data: {} });
        assert.ok(other.publish, JSON.stringify(other));
        a.close();
        b.close();
    });
});

test('max_subscriptions_per_connection: the next subscribe gets 106', T, async () => {
    await withHerald({ args: ['--max_subscriptions_per_connection', '3'] }, async (h) => {
        const c = await connected(h, 'alice');
        const r = await batch(c, ['a', 'b', 'c', 'd'].map((ch) => ({ subscribe: { channel: ch } })));
        assert.ok(r.slice(0, 3).every((x) => x.subscribe), JSON.stringify(r));
        assert.equal(r[3].error?.code, 106);
        await c.command('unsubscribe', { channel: 'a' });
        const again = await c.command('subscribe', { channel: 'd' });
        assert.ok(again.subscribe, JSON.stringify(again));
        c.close();
    });
});

// ---- across nodes on Redis ----

function redisConfig(redis, prefix) {
    return {
        engine: 'redis',
        redis_urls: [redis.url],
        redis_prefix: prefix,
        presence_ttl: 3,
        namespaces: { '': { client_publish: true } },
    };
}

async function withRedisNodes(args, fn) {
    const redis = await startRedis();
    const prefix = `lim${Math.floor(Math.random() * 1e9)}`;
    const nodes = [];
    try {
        for (let i = 0; i < 2; i++) nodes.push(await start({ config: redisConfig(redis, prefix), threads: 2, args }));
        return await fn(nodes, redis);
    } finally {
        for (const h of nodes) {
            const res = await h.stop('SIGTERM', 3000);
            if (h.killed) continue; // by the test
            assert.equal(res.code, 0, `exit ${JSON.stringify(res)}\n${h.stderr()}`);
            assert.equal(sanitizerReport(h.stderr()), '', h.stderr());
        }
        await redis.stop();
    }
}

test('two nodes on Redis: max_connections_per_user and user_publish_rate hold across nodes', T, async () => {
    const args = ['--max_connections_per_user', '1', '--user_publish_rate', '1', '--user_publish_burst', '3'];
    await withRedisNodes(args, async ([a, b]) => {
        const onA = await connected(a, 'alice');
        const onB = await ProtoClient.open(b.wsUrl);
        onB.send({ id: 1, connect: { token: b.token('alice') } });
        assert.equal((await onB.closed).code, 3504);
        // The user's publishes: three on A use the burst, B's are refused (one comes back a second).
        const ra = await batch(onA, [0, 1, 2].map((i) => ({ publish: { channel: 'x', data: { i } } })));
        assert.ok(ra.every((x) => x.publish), JSON.stringify(ra));
        onA.close();
        await onA.closed;
        let bob = null;
        for (let i = 0; i < 50 && !bob; i++) {
            const c = await ProtoClient.open(b.wsUrl);
            c.send({ id: 1, connect: { token: b.token('alice') } });
            const r = await Promise.race([c.reply(1).catch(() => null), c.closed.then(() => null)]);
            if (r && r.connect) bob = c;
            else await sleep(50);
        }
        assert.ok(bob, 'alice connects on B once her connection on A has ended');
        const rb = await batch(bob, [0, 1, 2].map((i) => ({ publish: { channel: 'x', data: { i } } })));
        assert.ok(rb.some((x) => x.error?.code === 111), JSON.stringify(rb));
        // A long user name (its shared key ends with a hash) is limited as well, and
        // apart from one that differs only at its end.
        const long = 'u'.repeat(400);
        const l1 = await connected(a, `${long}1`);
        const l2 = await ProtoClient.open(b.wsUrl);
        l2.send({ id: 1, connect: { token: b.token(`${long}1`) } });
        assert.equal((await l2.closed).code, 3504);
        const l3 = await connected(b, `${long}2`);
        l1.close();
        l3.close();
        // Another user is not limited by alice.
        const carol = await connected(a, 'carol');
        const rc = await carol.command('publish', { channel: 'x', data: {} });
        assert.ok(rc.publish, JSON.stringify(rc));
        bob.close();
        carol.close();
    });
});

test('two nodes on Redis: max_connections_per_ip holds across nodes', T, async () => {
    await withRedisNodes(['--max_connections_per_ip', '1', '--allow_anonymous'], async ([a, b]) => {
        const x = await handshake(a);
        assert.equal(x.status, 101);
        assert.equal((await handshake(b)).status, 429);
        assert.equal((await handshake(a)).status, 429);
        x.conn.destroy();
        const y = await handshakeEventually(b);
        assert.equal(y.status, 101);
        y.conn.destroy();
    });
});

test('two nodes on Redis, Redis stopped: the limits apply on each node alone, herald stays up', T, async () => {
    await withRedisNodes(['--max_connections_per_user', '1', '--max_connections_per_ip', '2'], async ([a, b], redis) => {
        await redis.stop();
        await sleep(300);
        const onA = await connected(a, 'alice');
        // This node's own count still holds.
        const again = await ProtoClient.open(a.wsUrl);
        again.send({ id: 1, connect: { token: a.token('alice') } });
        assert.equal((await again.closed).code, 3504);
        // The other node cannot know of A's connection: it decides alone.
        const onB = await connected(b, 'alice');
        const x = await handshake(a);
        assert.equal(x.status, 101);
        assert.equal((await handshake(a)).status, 429, 'the per-IP count of this node holds');
        x.conn.destroy();
        for (const h of [a, b]) {
            assert.ok(h.alive());
            assert.equal((await httpRequest(h.port, 'GET', '/health')).status, 200);
        }
        assert.match(a.stderr(), /limits: .*this node alone/);
        onA.close();
        onB.close();
    });
});

test('two nodes on Redis, Redis stalled: connects are decided locally within a short bound', T, async () => {
    await withRedisNodes(['--max_connections_per_user', '1', '--max_connections_per_ip', '3'], async ([a, b], redis) => {
        process.kill(redis.pid, 'SIGSTOP');
        try {
            // Both waits are bounded (a quarter of a second): far below these timeouts.
            const t0 = Date.now();
            const x = await handshake(a);
            assert.equal(x.status, 101);
            const onA = await ProtoClient.open(a.wsUrl);
            const r = await onA.connect(a.token('alice'));
            assert.ok(r.connect, JSON.stringify(r));
            assert.ok(Date.now() - t0 < 4000, `took ${Date.now() - t0} ms with Redis stalled`);
            const again = await ProtoClient.open(a.wsUrl);
            again.send({ id: 1, connect: { token: a.token('alice') } });
            assert.equal((await again.closed).code, 3504, 'the local count holds meanwhile');
            x.conn.destroy();
            onA.close();
            await onA.closed;
        } finally {
            process.kill(redis.pid, 'SIGCONT');
        }
        // Redis back: what the node holds is told to it again; the limit holds across nodes.
        const onA = await connected(a, 'alice');
        await sleep(1500); // one refresh (presence_ttl / 3)
        const onB = await ProtoClient.open(b.wsUrl);
        onB.send({ id: 1, connect: { token: b.token('alice') } });
        assert.equal((await onB.closed).code, 3504);
        onA.close();
    });
});

test('two nodes on Redis, Redis stalled: what a client sends behind its waiting upgrade is not buffered', T, async () => {
    await withRedisNodes(['--max_connections_per_ip', '100'], async ([a], redis) => {
        const rssMB = () => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${a.child.pid}/status`, 'utf8'))[1]) / 1024;
        const base = rssMB();
        let peak = base;
        process.kill(redis.pid, 'SIGSTOP');
        try {
            // Four upgrades wait for Redis (250 ms at most); each client streams 1 MB writes for
            // 400 ms meanwhile, as fast as herald reads them (it was 550 MB of RSS).
            const chunk = Buffer.alloc(1 << 20, 0x41);
            await Promise.all(Array.from({ length: 4 }, async () => {
                const sock = net.connect(a.port, '127.0.0.1');
                sock.on('error', () => {});
                await new Promise((resolve) => sock.once('connect', resolve));
                sock.write(`GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n`
                    + 'Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
                const t0 = Date.now();
                while (Date.now() - t0 < 400 && !sock.destroyed) {
                    if (!sock.write(chunk)) await Promise.race([new Promise((resolve) => sock.once('drain', resolve)), sleep(50)]);
                    peak = Math.max(peak, rssMB());
                }
                sock.destroy();
            }));
        } finally {
            process.kill(redis.pid, 'SIGCONT');
        }
        assert.ok(peak < base + 64, `RSS went from ${base.toFixed(1)} MB to ${peak.toFixed(1)} MB`);
        assert.equal((await httpRequest(a.port, 'GET', '/health')).status, 200);
    });
});

test('Redis stalled: an API client that pipelines publishes is not read past what its waiting calls need', T, async () => {
    await withRedisNodes([], async ([a], redis) => {
        const rssMB = () => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${a.child.pid}/status`, 'utf8'))[1]) / 1024;
        const body = JSON.stringify({ channel: 'p', data: { pad: 'x'.repeat(900) } });
        const one = `POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: ${a.apiKey}\r\n`
            + `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
        const chunk = Buffer.from(one.repeat(1024)); // about 1 MB of requests
        const base = rssMB();
        let peak = base;
        let sent = 0;
        process.kill(redis.pid, 'SIGSTOP');
        const sock = net.connect(a.port, '127.0.0.1');
        sock.on('error', () => {});
        sock.on('data', () => {});
        try {
            await new Promise((resolve) => sock.once('connect', resolve));
            // 1.5 s of requests as fast as herald takes them (it was 1 GB of RSS in 2 s): the
            // 128 calls waiting for Redis hold the rest back, and herald stops reading.
            const t0 = Date.now();
            while (Date.now() - t0 < 1500) {
                if (sock.write(chunk)) sent += chunk.length;
                else await Promise.race([new Promise((resolve) => sock.once('drain', resolve)), sleep(100)]);
                peak = Math.max(peak, rssMB());
            }
        } finally {
            process.kill(redis.pid, 'SIGCONT');
            sock.destroy();
        }
        assert.ok(peak < base + 48, `RSS went from ${base.toFixed(1)} MB to ${peak.toFixed(1)} MB`);
        assert.ok(sent < 64 << 20, `herald took ${sent} bytes of requests while Redis was stopped`);
        assert.equal((await httpRequest(a.port, 'GET', '/health')).status, 200);
    });
});

test('two nodes on Redis: the connections of a node that died stop counting within presence_ttl', T, async () => {
    await withRedisNodes(['--max_connections_per_user', '1'], async ([a, b]) => {
        await connected(a, 'alice');
        a.killed = true;
        await a.stop('SIGKILL');
        const first = await ProtoClient.open(b.wsUrl);
        first.send({ id: 1, connect: { token: b.token('alice') } });
        assert.equal((await first.closed).code, 3504, 'the dead node still counts at first');
        // presence_ttl is 3 s: its entry expires, nothing else removes it.
        let ok = null;
        for (let i = 0; i < 100 && !ok; i++) {
            await sleep(200);
            const c = await ProtoClient.open(b.wsUrl);
            c.send({ id: 1, connect: { token: b.token('alice') } });
            const r = await Promise.race([c.reply(1).catch(() => null), c.closed.then(() => null)]);
            if (r && r.connect) ok = c;
        }
        assert.ok(ok, 'alice connects once the dead node\'s count has expired');
        ok.close();
    });
});

test('a client dropped as slow (3008) gives back its per-IP and per-user places', T, async () => {
    const args = ['--client_queue_max', String(256 * 1024), '--max_connections_per_ip', '1',
        '--max_connections_per_user', '1'];
    await withHerald({ args }, async (h) => {
        const slow = await connected(h, 'slowpoke');
        const r = await slow.command('subscribe', { channel: 'firehose' });
        assert.ok(r.subscribe, JSON.stringify(r));
        slow.sock._socket.pause(); // stop reading: the kernel buffers fill, then herald's queue
        assert.equal((await handshake(h)).status, 429);
        const data = JSON.stringify({ p: 'x'.repeat(32 * 1024) });
        // 400 x 32 KB = 12.8 MB: far past the socket buffers and the queue limit.
        for (let i = 0; i < 400; i++) {
            const p = await h.api('publish', `{"channel":"firehose","data":${data}}`);
            assert.equal(p.status, 200);
        }
        // Its places are free once herald has dropped it, whether or not we have read the close.
        let again = null;
        for (let i = 0; i < 100 && !again; i++) {
            const c = await ProtoClient.open(h.wsUrl).catch(() => null);
            if (c) {
                c.send({ id: 1, connect: { token: h.token('slowpoke') } });
                const x = await Promise.race([c.reply(1).catch(() => null), c.closed.then(() => null)]);
                if (x && x.connect) again = c;
                else c.terminate();
            }
            if (!again) await sleep(100);
        }
        assert.ok(again, 'the slow client\'s IP and user places came back');
        again.close();
        slow.terminate();
    });
});
