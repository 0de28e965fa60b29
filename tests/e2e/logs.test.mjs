// Operating herald: its log (one JSON object per line, or text), log_level, a bad client's
// flood held to the rate limit and summarised, disconnect lines naming whom; /ready naming the
// store that does not answer (Redis, PostgreSQL) and 200 once it is back; /api/info per node.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { DEFAULT_API_KEY, DEFAULT_SECRET, PAYLOAD_MARKER, REDIS_PASSWORD, freePort, httpRequest, runHerald, start, withHerald }
    from './lib/herald.mjs';
import { makeClient, once } from './lib/centrifuge.mjs';
import { apiResult, sleep, waitFor } from './lib/proxy.mjs';
import { handshakeRequest, rawHttp, wsOpen, frame, OP } from './lib/raw.mjs';
import { startRedis } from './lib/redis.mjs';
import { startPostgres } from './lib/postgres.mjs';

const T = { timeout: 60000 };
const TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// core/log.h's LOG_CLIENT_RATE: lines per second per event and loop.
const RATE = 10;

// Every line of herald's stderr as an object; throws naming the first line that is not one.
function jsonLines(stderr) {
    return stderr.split('\n').filter((l) => l !== '').map((l) => {
        let o;
        try { o = JSON.parse(l); } catch { throw new Error(`not a JSON line: ${l}`); }
        assert.equal(typeof o, 'object', `not an object: ${l}`);
        return o;
    });
}

function noSecrets(h, extra = []) {
    const s = h.stderr();
    for (const needle of [DEFAULT_SECRET, DEFAULT_API_KEY, PAYLOAD_MARKER, REDIS_PASSWORD, ...extra]) {
        assert.ok(!s.includes(needle), `${needle} in herald's log:\n${s}`);
    }
    assert.doesNotMatch(s, /eyJ[A-Za-z0-9_-]{10,}\./, 'a JWT in the log');
}

async function connected(h, user) {
    const m = makeClient(h, { token: h.token(user) });
    const c = once(m.client, 'connected');
    m.client.connect();
    return { m, ctx: await c };
}

test('every line is one JSON object with time, level, event and node; a disconnect names client, user, addr and code', T, async () => {
    await withHerald({ threads: 1, config: { namespaces: { '': {}, chat: { client_publish: true } } } }, async (h) => {
        const info = await apiResult(h, 'info', {});
        const uid = info.nodes[0].uid;
        const { m, ctx } = await connected(h, 'logger');
        const sub = m.client.newSubscription('chat:a');
        const subscribed = once(sub, 'subscribed');
        sub.subscribe();
        await subscribed;
        // Payloads through the API and the client: neither is logged.
        await apiResult(h, 'publish', { channel: 'chat:a', data: { marker: PAYLOAD_MARKER } });
        await sub.publish({ marker: PAYLOAD_MARKER });
        const gone = once(m.client, 'disconnected');
        await apiResult(h, 'disconnect', { user: 'logger', disconnect: { code: 4500, reason: 'go away' } });
        const d = await gone;
        assert.equal(d.code, 4500);
        let line = null;
        await waitFor(() => {
            line = jsonLines(h.stderr()).find((o) => o.event === 'client_disconnected' && o.code === 4500);
            return line;
        }, 5000, () => `a client_disconnected line:\n${h.stderr()}`);
        assert.equal(line.client, ctx.client);
        assert.equal(line.user, 'logger');
        assert.equal(line.addr, '127.0.0.1');
        assert.equal(line.level, 'info');
        assert.match(line.msg, /go away/);
        // A bad request with the marker in it: the client is disconnected (3501), nothing of
        // what it sent is logged.
        const conn = await wsOpen(h.port);
        conn.write(frame({ opcode: OP.TEXT, payload: Buffer.from(`{"id":1,"connect":{"token":"${h.token('x')}"}}\n{"id":2,"bogus":"${PAYLOAD_MARKER}"`) }));
        await waitFor(() => jsonLines(h.stderr()).some((o) => o.event === 'client_disconnected' && o.code === 3501),
            5000, () => `the bad request's disconnect:\n${h.stderr()}`);
        conn.destroy();
        // An unmasked frame (RFC 6455 5.1): closed with 1002, logged as a protocol error.
        const bad = await wsOpen(h.port);
        bad.write(frame({ opcode: OP.TEXT, payload: Buffer.from('{}'), masked: false }));
        await waitFor(() => jsonLines(h.stderr()).some((o) => o.event === 'protocol_error' && o.code === 1002
            && o.addr === '127.0.0.1'), 5000, () => `a protocol_error line:\n${h.stderr()}`);
        bad.destroy();
        m.client.disconnect();
        await h.stop();
        const lines = jsonLines(h.stderr());
        assert.ok(lines.length >= 4, h.stderr());
        for (const o of lines) {
            assert.match(o.time, TIME, JSON.stringify(o));
            assert.ok(['debug', 'info', 'warn', 'error'].includes(o.level), JSON.stringify(o));
            assert.match(o.event, /^[a-z][a-z0-9_]*$/, JSON.stringify(o));
            assert.equal(o.node, uid, JSON.stringify(o));
            assert.equal(typeof o.msg, 'string', JSON.stringify(o));
        }
        const events = lines.map((o) => o.event);
        for (const e of ['listening', 'shutting_down', 'stopped']) assert.ok(events.includes(e), `${e} in ${events}`);
        noSecrets(h);
    });
});

test('--log_format text gives the text line; log_level warn hides info', T, async () => {
    await withHerald({ threads: 1, args: ['--log_format', 'text'] }, async (h) => {
        await waitFor(() => /herald listening/.test(h.stderr()), 3000, () => h.stderr());
        for (const l of h.stderr().split('\n').filter(Boolean)) {
            assert.match(l, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z (debug|info|warn|error) /, l);
        }
        assert.match(h.stderr(), /Z info herald listening on 127\.0\.0\.1:/);
    });
    // No API key: its warning shows; the info lines (listening, stopped) do not.
    const h = await start({ threads: 1, apiKey: null, config: { log_level: 'warn' } });
    const stopped = await h.stop();
    assert.equal(stopped.code, 0);
    const lines = jsonLines(h.stderr());
    assert.ok(lines.some((o) => o.event === 'no_api_key' && o.level === 'warn'), h.stderr());
    assert.ok(lines.every((o) => o.level === 'warn' || o.level === 'error'), h.stderr());
});

test('500 foreign-Origin upgrades in a second: at most the rate limit of lines a second, the rest counted in summaries', T, async () => {
    await withHerald({ threads: 1, config: { allowed_origins: ['https://good.example'] } }, async (h) => {
        const N = 500;
        const { text } = handshakeRequest({ port: h.port, headers: { Origin: 'https://evil.example' } });
        const t0 = Date.now();
        let refused = 0;
        for (let i = 0; i < N; i += 50) {
            const rs = await Promise.all(Array.from({ length: 50 }, () => rawHttp(h.port, text)));
            refused += rs.filter((r) => r && r.status === 403).length;
        }
        assert.equal(refused, N, 'every upgrade refused');
        const ms = Date.now() - t0;
        // The summaries come with the loop's next tick.
        let plain = [];
        let summaries = [];
        await waitFor(() => {
            const lines = jsonLines(h.stderr()).filter((o) => o.event === 'handshake_refused');
            plain = lines.filter((o) => !o.suppressed);
            summaries = lines.filter((o) => o.suppressed);
            return plain.length + summaries.reduce((n, o) => n + o.suppressed, 0) === N;
        }, 5000, () => `${N} refusals accounted for:\n${h.stderr().slice(-3000)}`);
        // Each second (as the lines' time shows it) holds at most RATE of them, and one summary
        // follows each second that held more.
        const perSecond = new Map();
        for (const o of plain) perSecond.set(o.time.slice(0, 19), (perSecond.get(o.time.slice(0, 19)) ?? 0) + 1);
        for (const [sec, n] of perSecond) assert.ok(n <= RATE, `${n} lines in ${sec} (${ms} ms of flood)`);
        assert.ok(summaries.length >= 1 && summaries.length <= perSecond.size, `${summaries.length} summaries`);
        for (const o of plain) {
            assert.equal(o.addr, '127.0.0.1');
            assert.equal(o.code, 403);
        }
        for (const o of summaries) {
            const grouped = o.suppressed.toLocaleString('en-US');
            assert.equal(o.msg, `${grouped} similar line${o.suppressed === 1 ? '' : 's'} suppressed`);
        }
    });
});

test('/ready: 503 naming Redis while it is stopped (the URL without its password), 200 once it is back; /api/info says the same', T, async () => {
    let redis = await startRedis();
    redis.cli('CONFIG', 'SET', 'requirepass', REDIS_PASSWORD);
    const port = redis.port;
    const name = `redis://127.0.0.1:${port}`;
    const h = await start({ threads: 2, config: {
        engine: 'redis', redis_urls: [`redis://:${REDIS_PASSWORD}@127.0.0.1:${port}`],
        redis_prefix: `e2elogs${process.pid}`,
    } });
    try {
        await waitFor(async () => (await httpRequest(h.port, 'GET', '/ready')).status === 200, 10000, () => '/ready 200');
        let node = (await apiResult(h, 'info', {})).nodes[0];
        assert.deepEqual(node.engine, { name: 'redis', shards: [{ name, state: 'up' }], state: 'up' });
        assert.equal(node.database, null);

        await redis.stop();
        let ready = null;
        await waitFor(async () => {
            ready = await httpRequest(h.port, 'GET', '/ready');
            return ready.status === 503 && /refused/.test(ready.text);
        }, 10000, () => `/ready 503 with connection refused: ${ready?.status} ${ready?.text}`);
        assert.equal(ready.headers['content-type'], 'application/json');
        assert.equal(ready.json.status, 'unavailable');
        assert.deepEqual(ready.json.unavailable, [{ name, reason: 'connection refused' }]);
        node = (await apiResult(h, 'info', {})).nodes[0];
        assert.equal(node.engine.state, 'down');
        assert.deepEqual(node.engine.shards, [{ name, state: 'down', reason: 'connection refused' }]);
        assert.equal((await httpRequest(h.port, 'GET', '/health')).status, 200);

        redis = await startRedis({ port });
        redis.cli('CONFIG', 'SET', 'requirepass', REDIS_PASSWORD);
        await waitFor(async () => (await httpRequest(h.port, 'GET', '/ready')).status === 200, 15000,
            () => '/ready 200 once Redis is back');
        assert.deepEqual(JSON.parse((await httpRequest(h.port, 'GET', '/ready')).text), { status: 'ready' });
        assert.equal((await apiResult(h, 'info', {})).nodes[0].engine.state, 'up');
        await h.stop();
        noSecrets(h);
        assert.ok(jsonLines(h.stderr()).some((o) => o.event === 'redis_down' && o.msg.includes(name)), h.stderr());
    } finally {
        await h.stop('SIGKILL');
        await redis.stop();
    }
});

test('/ready: 503 naming postgres while PostgreSQL is down, 200 after it restarts; /api/info database state', T, async () => {
    const pg = await startPostgres();
    let h = null;
    try {
        pg.psql('CREATE TABLE public.notes (id serial PRIMARY KEY, body text)');
        const slot = `e2e_logs_${process.pid}`;
        h = await start({ threads: 2, config: {
            postgres: pg.conninfo, change_feed: { slot, tables: [{ table: 'public.notes' }] },
            namespaces: { '': {}, table: {} },
        } });
        await waitFor(async () => (await httpRequest(h.port, 'GET', '/ready')).status === 200, 20000, () => '/ready 200');
        assert.deepEqual((await apiResult(h, 'info', {})).nodes[0].database, { name: 'postgres', state: 'up' });
        await pg.down();
        let ready = null;
        await waitFor(async () => {
            ready = await httpRequest(h.port, 'GET', '/ready');
            return ready.status === 503;
        }, 15000, () => `/ready 503 while PostgreSQL is down: ${ready?.status}`);
        assert.equal(ready.json.status, 'unavailable');
        assert.equal(ready.json.unavailable.length, 1, ready.text);
        assert.equal(ready.json.unavailable[0].name, 'postgres');
        assert.ok(ready.json.unavailable[0].reason.length > 0, ready.text);
        const db = (await apiResult(h, 'info', {})).nodes[0].database;
        assert.equal(db.state, 'down');
        assert.ok(db.reason.length > 0);
        await pg.up();
        await waitFor(async () => (await httpRequest(h.port, 'GET', '/ready')).status === 200, 30000,
            () => '/ready 200 after PostgreSQL restarted');
        assert.equal((await apiResult(h, 'info', {})).nodes[0].database.state, 'up');
        assert.ok(jsonLines(h.stderr()).some((o) => o.event === 'feed_down'), h.stderr());
    } finally {
        if (h) await h.stop('SIGTERM', 3000);
        await pg.stop();
    }
});

test('/api/info: version, uptime, clients, users, subscriptions, channels, engine and database', T, async () => {
    await withHerald({ threads: 2 }, async (h) => {
        const a = await connected(h, 'ann');
        const b = await connected(h, 'ann');
        const c = await connected(h, 'bob');
        const sub = a.m.client.newSubscription('news');
        const ok = once(sub, 'subscribed');
        sub.subscribe();
        await ok;
        await sleep(1100);
        const info = await apiResult(h, 'info', {});
        assert.equal(info.nodes.length, 1);
        const n = info.nodes[0];
        assert.match(n.uid, UUID);
        assert.equal(typeof n.name, 'string');
        assert.match(n.version, /^\d+\.\d+\.\d+/);
        assert.ok(n.uptime >= 1, `uptime ${n.uptime}`);
        assert.equal(n.num_clients, 3);
        assert.equal(n.num_users, 2);
        assert.equal(n.num_subs, 1);
        assert.equal(n.num_channels, 1);
        assert.deepEqual(n.engine, { name: 'memory', shards: [], state: 'up' });
        assert.equal(n.database, null);
        for (const x of [a, b, c]) x.m.client.disconnect();
    });
});

test('a Redis URL refused at start is named without its password', T, async () => {
    for (const [key, url, want] of [
        ['redis_cluster_urls', `redis://admin:${REDIS_PASSWORD}@127.0.0.1:7000/3`, /redis:\/\/admin:\*\*\*@127\.0\.0\.1:7000\/3: a Redis Cluster has database 0 only/],
        ['redis_urls', `redis://:${REDIS_PASSWORD}@127.0.0.1:x`, /redis:\/\/:\*\*\*@127\.0\.0\.1:x: cannot resolve/],
    ]) {
        const r = await runHerald(['--listen', `127.0.0.1:${await freePort()}`, '--engine', 'redis', `--${key}`, url]);
        assert.notEqual(r.code, 0, r.stderr);
        assert.match(r.stderr, want);
        assert.ok(!r.stderr.includes(REDIS_PASSWORD), r.stderr);
    }
});
