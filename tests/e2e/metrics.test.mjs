// GET /metrics against the real binary: the exposition passes promtool's parser, and a scripted
// session (3 clients, 10 publications, one disconnect with a known code, one rate-limited
// command) moves each counter by exactly that much; metrics_key and metrics_listen; a Redis
// shard's herald_engine_up follows redis-server going away and coming back; the change feed's
// herald_feed_* follow its stream and its changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

import { freePort, httpRequest, withHerald } from './lib/herald.mjs';
import { makeClient, once } from './lib/centrifuge.mjs';
import { ProtoClient } from './lib/proto.mjs';
import { waitFor } from './lib/proxy.mjs';
import { startPostgres } from './lib/postgres.mjs';
import { startRedis } from './lib/redis.mjs';

const T = { timeout: 60000 };

// promtool's own verdict on an exposition: '' when it has nothing to say.
function promtool(text) {
    const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    if (r.error) throw new Error(`promtool: ${r.error.message} (scripts/test-deps installs it)`);
    return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() };
}

// The samples of an exposition: "name{labels}" -> number. Checks every sample line's shape.
function parse(text) {
    const samples = new Map();
    for (const line of text.split('\n')) {
        if (line === '' || line.startsWith('#')) continue;
        const m = /^([a-z_:][a-z0-9_:]*(?:\{[^}]*\})?) (\S+)$/i.exec(line);
        assert.ok(m, `not a sample line: ${line}`);
        samples.set(m[1], Number(m[2]));
    }
    return samples;
}

let scrapes = 0; // each one a connection of its own (httpRequest takes no agent)

async function scrape(port, headers = {}) {
    scrapes++;
    const r = await httpRequest(port, 'GET', '/metrics', { headers });
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers['content-type'], /^text\/plain; version=0\.0\.4/);
    return { text: r.text, m: parse(r.text) };
}

function value(m, key) {
    assert.ok(m.has(key), `no sample ${key}`);
    return m.get(key);
}

// What moved between two scrapes, for the keys asked (absent before: 0).
function delta(before, after, key) {
    return value(after, key) - (before.has(key) ? before.get(key) : 0);
}

test('/metrics parses with promtool, and a scripted session moves each counter by exactly that much', T, async () => {
    // One loop: the publications of the session are written by it alone. ping_interval far
    // off: no server ping frame lands among the counted ones. Burst 2: connect and subscribe
    // fit, a third command at once does not.
    await withHerald({
        threads: 1,
        args: ['--client_command_rate', '1', '--client_command_burst', '2', '--ping_interval', '3600'],
    }, async (h) => {
        const first = await scrape(h.port);
        const scrapesBefore = scrapes;
        const check = promtool(first.text);
        assert.equal(check.status, 0, `promtool check metrics:\n${check.out}`);
        assert.equal(check.out, '', `promtool check metrics:\n${check.out}`);
        const m0 = first.m;

        // Two clients with the official SDK, one raw; all on "news".
        const sdk = [makeClient(h, { token: h.token('alice') }), makeClient(h, { token: h.token('bob') })];
        const got = [[], []];
        for (const [i, s] of sdk.entries()) {
            const sub = s.client.newSubscription('news');
            sub.on('publication', (ctx) => got[i].push(ctx.data));
            const subscribed = once(sub, 'subscribed');
            sub.subscribe();
            s.client.connect();
            await subscribed;
        }
        const raw = await ProtoClient.open(h.wsUrl);
        // connect, subscribe and a ping in one message: the ping is over the burst (111).
        raw.send([
            JSON.stringify({ id: 1, connect: { token: h.token('carol') } }),
            JSON.stringify({ id: 2, subscribe: { channel: 'news' } }),
            JSON.stringify({ id: 3, ping: {} }),
        ].join('\n'));
        assert.ok((await raw.reply(1)).connect);
        assert.ok((await raw.reply(2)).subscribe);
        assert.equal((await raw.reply(3)).error?.code, 111);

        const connected = (await scrape(h.port)).m;
        assert.equal(delta(m0, connected, 'herald_clients'), 3);
        assert.equal(delta(m0, connected, 'herald_users'), 3);
        assert.equal(delta(m0, connected, 'herald_subscriptions'), 3);
        assert.equal(delta(m0, connected, 'herald_channels'), 1);

        // Ten publications, each delivered to all three before the next (so that each is a
        // frame of its own, written once: the histogram counts ten).
        for (let i = 1; i <= 10; i++) {
            const r = await h.api('publish', { channel: 'news', data: { i } });
            assert.equal(r.status, 200, r.text);
            await waitFor(() => got[0].length === i && got[1].length === i
                && raw.publications('news').length === i, 5000, () => `publication ${i}`);
        }
        const published = (await scrape(h.port)).m;
        assert.equal(delta(connected, published, 'herald_publications_total'), 10);
        assert.equal(delta(connected, published, 'herald_messages_sent_total'), 30);
        assert.equal(delta(connected, published, 'herald_publish_to_write_seconds_count'), 10);
        assert.equal(delta(connected, published, 'herald_publish_to_write_seconds_bucket{le="+Inf"}'), 10);
        assert.ok(delta(connected, published, 'herald_publish_to_write_seconds_sum') > 0);
        assert.ok(delta(connected, published, 'herald_bytes_sent_total') > 10 * 3 * 20);

        // The raw client disconnected by the server API with a code of ours.
        const r = await h.api('disconnect', { user: 'carol', disconnect: { code: 4321, reason: 'metrics test' } });
        assert.equal(r.status, 200, r.text);
        assert.equal((await raw.closed).code, 4321);
        await waitFor(async () => value((await scrape(h.port)).m, 'herald_clients') === value(m0, 'herald_clients') + 2,
            5000, () => 'the disconnected client to go');

        const last = await scrape(h.port);
        const lastCheck = promtool(last.text);
        assert.equal(lastCheck.status, 0, `promtool check metrics:\n${lastCheck.out}`);
        const m1 = last.m;
        assert.equal(delta(m0, m1, 'herald_clients'), 2);
        assert.equal(delta(m0, m1, 'herald_disconnects_total{code="4321"}'), 1);
        assert.equal(delta(m0, m1, 'herald_rate_limited_total{limit="commands"}'), 1);
        assert.equal(delta(m0, m1, 'herald_command_errors_total{code="111"}'), 1);
        assert.equal(delta(m0, m1, 'herald_commands_total{method="connect"}'), 3);
        assert.equal(delta(m0, m1, 'herald_commands_total{method="subscribe"}'), 3);
        assert.equal(delta(m0, m1, 'herald_commands_total{method="ping"}'), 1);
        assert.equal(delta(m0, m1, 'herald_commands_total{method="publish"}'), 0);
        assert.equal(delta(m0, m1, 'herald_publications_total'), 10);
        assert.equal(delta(m0, m1, 'herald_slow_consumer_disconnects_total'), 0);
        assert.equal(value(m1, 'herald_engine_up{shard="memory"}'), 1);
        assert.ok(value(m1, 'process_resident_memory_bytes') > 1e6);
        assert.ok(value(m1, 'process_open_fds') >= 3);
        assert.ok(value(m1, 'herald_threads') >= 2);
        assert.equal(value(m1, 'herald_build_info{version="0.1.0",commit="' + /commit="([^"]*)"/.exec(last.text)[1] + '"}'), 1);
        // Every connection of the session was accepted: 3 WebSockets, 10 publishes and a
        // disconnect call, and every scrape after the first.
        assert.equal(delta(m0, m1, 'herald_connections_accepted_total'), 3 + 10 + 1 + (scrapes - scrapesBefore));

        for (const s of sdk) s.client.disconnect();
    });
});

test('metrics_key: /metrics answers 401 without it, 200 with it as Bearer or X-API-Key', T, async () => {
    await withHerald({ args: ['--metrics_key', 'scrape-secret'] }, async (h) => {
        assert.equal((await httpRequest(h.port, 'GET', '/metrics')).status, 401);
        assert.equal((await httpRequest(h.port, 'GET', '/metrics', { headers: { Authorization: 'Bearer wrong' } })).status, 401);
        assert.equal((await httpRequest(h.port, 'GET', '/metrics', { headers: { 'X-API-Key': h.apiKey } })).status, 401);
        const bearer = await scrape(h.port, { Authorization: 'Bearer scrape-secret' });
        assert.ok(bearer.m.has('herald_connections'));
        const header = await scrape(h.port, { 'X-API-Key': 'scrape-secret' });
        assert.ok(header.m.has('herald_connections'));
    });
});

test('metrics_listen: /metrics on its own port only, and nothing else there', T, async () => {
    const mport = await freePort();
    await withHerald({ args: ['--metrics_listen', `127.0.0.1:${mport}`] }, async (h) => {
        assert.equal((await httpRequest(h.port, 'GET', '/metrics')).status, 404);
        const own = await scrape(mport);
        assert.equal(promtool(own.text).status, 0);
        assert.equal((await httpRequest(mport, 'GET', '/health')).status, 404);
        assert.equal((await httpRequest(mport, 'GET', '/')).status, 404);
        assert.equal((await httpRequest(h.port, 'GET', '/health')).status, 200);
    });
});

test('Redis: herald_engine_up goes 0 when redis-server stops and back to 1 when it returns', T, async () => {
    let redis = await startRedis();
    const port = redis.port;
    const key = `herald_engine_up{shard="redis://127.0.0.1:${port}"}`;
    try {
        await withHerald({ config: { engine: 'redis', redis_urls: [redis.url], redis_prefix: `m${Date.now()}` } }, async (h) => {
            const up = async () => (await scrape(h.port)).m.get(key);
            await waitFor(async () => (await up()) === 1, 10000, () => `${key} to be 1`);
            const before = (await scrape(h.port)).m;
            assert.ok(value(before, 'herald_engine_command_seconds_count') > 0);
            await redis.stop();
            await waitFor(async () => (await up()) === 0, 10000, () => `${key} to be 0`);
            redis = await startRedis({ port });
            await waitFor(async () => (await up()) === 1, 15000, () => `${key} to be 1 again`);
            const after = await scrape(h.port);
            assert.equal(promtool(after.text).status, 0);
            assert.ok(delta(before, after.m, 'herald_engine_reconnects_total') >= 1);
        });
    } finally {
        await redis.stop();
    }
});

test('change feed: herald_feed_up while it streams, each change counted, 0 when PostgreSQL goes', T, async () => {
    const pg = await startPostgres();
    try {
        pg.psql('CREATE TABLE public.items (id int PRIMARY KEY, name text)');
        const slot = `herald_m${Date.now()}`;
        const config = {
            postgres: pg.conninfo,
            change_feed: { slot, tables: [{ table: 'public.items' }] },
            namespaces: { '': {}, table: {} },
        };
        await withHerald({ config }, async (h) => {
            await waitFor(async () => (await scrape(h.port)).m.get('herald_feed_up') === 1, 20000,
                () => 'herald_feed_up to be 1');
            const before = (await scrape(h.port)).m;
            pg.psql("INSERT INTO public.items VALUES (1, 'a'), (2, 'b'); UPDATE public.items SET name = 'c' WHERE id = 1");
            await waitFor(async () => delta(before, (await scrape(h.port)).m, 'herald_feed_changes_published_total') === 3,
                10000, () => 'three changes counted');
            const after = await scrape(h.port);
            assert.equal(promtool(after.text).status, 0);
            assert.equal(delta(before, after.m, 'herald_publications_total'), 3);
            assert.ok(value(after.m, 'herald_feed_slot_lag_bytes') >= 0);
            assert.ok(value(after.m, 'herald_feed_seconds_behind') >= 0);
            await pg.down();
            await waitFor(async () => (await scrape(h.port)).m.get('herald_feed_up') === 0, 15000,
                () => 'herald_feed_up to be 0');
            assert.ok(delta(before, (await scrape(h.port)).m, 'herald_feed_reconnects_total') >= 1);
            await pg.up();
            await waitFor(async () => (await scrape(h.port)).m.get('herald_feed_up') === 1, 20000,
                () => 'herald_feed_up to be 1 again');
        });
    } finally {
        await pg.stop();
    }
});
