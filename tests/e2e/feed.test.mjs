// The PostgreSQL change feed: herald streams a logical replication slot (pgoutput) of a real
// PostgreSQL 15 and publishes every committed row change to `table:<schema>.<table>` (and to
// `table:<schema>.<table>#<owner>` where the table has an owner column), with typed values,
// excluded columns left out, in commit order, exactly once across a terminated walsender, a
// herald restart and a node takeover; `herald.publish(channel, data)` publishes from SQL iff
// its transaction commits. Where the feed's real commit order is needed it is read from a
// second slot of the test's own (test_decoding) and compared with what the clients got.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { DEFAULT_API_KEY, DEFAULT_SECRET, freePort, httpRequest, runHerald, sanitizerReport, start }
    from './lib/herald.mjs';
import { makeClient, once } from './lib/centrifuge.mjs';
import { TcpProxy, apiResult, sleep, subscribeOutcome, waitFor } from './lib/proxy.mjs';
import { startPostgres } from './lib/postgres.mjs';
import { startRedis } from './lib/redis.mjs';

const T = { timeout: 60000 };
const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}(:?\d{2})?)$/;

const NAMESPACES = {
    '': {},
    table: { history_size: 1000, history_ttl: 300, recover: true },
    chat: { history_size: 100, history_ttl: 300 },
};

const ORDERS_SQL = `CREATE TABLE public.orders (id serial PRIMARY KEY, user_id text, item text,
    status text, password text)`;

function slotName() {
    return `herald_${randomBytes(5).toString('hex')}`;
}

// herald's configuration for the feed; redis: {redis, prefix} for the Redis engine.
function feedConfig(pg, slot, tables, { publication = null, redis = null, prefix = null } = {}) {
    const cfg = {
        postgres: pg.conninfo,
        change_feed: { slot, tables, ...(publication ? { publication } : {}) },
        namespaces: NAMESPACES,
    };
    if (redis) Object.assign(cfg, { engine: 'redis', redis_urls: [redis.url], redis_prefix: prefix });
    return cfg;
}

function tail(s, n) {
    return s.length > n ? `...${s.slice(-n)}` : s;
}

// A failing test's message gets the tails of herald's stderr and of the server log.
function decorate(err, heralds, pg) {
    if (!err || typeof err !== 'object') return;
    let extra = '';
    for (const h of heralds.filter(Boolean)) extra += `\n--- herald :${h.port} stderr ---\n${tail(h.stderr(), 3000)}`;
    if (pg) extra += `\n--- postgres log ---\n${tail(pg.log(), 2000)}`;
    try { err.message += extra; } catch { /* frozen */ }
}

async function stopChecked(h, failed) {
    const res = await h.stop(failed ? 'SIGKILL' : 'SIGTERM', 3000);
    if (!failed && process.env.HERALD_E2E_SANITIZER_CHECK !== '0') {
        const report = sanitizerReport(h.stderr());
        if (report) throw new Error(`sanitizer report in herald's stderr (exit ${res.code}/${res.signal}):\n${report}`);
    }
    return res;
}

// The slot exists (every commit from here on is kept for herald) and /ready says 200.
async function feedUp(h, pg, slot, ms = 15000) {
    await waitFor(async () => (await pg.psqlAsync(
        `SELECT count(*) FROM pg_replication_slots WHERE slot_name = '${slot}'`)) === '1', ms,
    () => `herald to create the slot ${slot}`);
    await waitFor(async () => (await httpRequest(h.port, 'GET', '/ready')).status === 200, ms,
        () => '/ready to answer 200');
}

/**
 * A fresh PostgreSQL (schema applied) and one herald streaming it; fn({pg, h, slot, config}).
 * Both stopped after; on success herald's stderr must hold no sanitizer report.
 */
async function withFeed({ schema, tables, threads = 2, pgOpts = {}, feedOpts = {} }, fn) {
    const pg = await startPostgres(pgOpts);
    let h = null;
    let failed = null;
    try {
        if (schema) pg.psql(schema);
        const slot = slotName();
        const config = feedConfig(pg, slot, tables, feedOpts);
        h = await start({ config, threads });
        await feedUp(h, pg, slot);
        return await fn({ pg, h, slot, config });
    } catch (err) {
        failed = err;
        decorate(err, [h], pg);
        throw err;
    } finally {
        try {
            if (h) await stopChecked(h, failed);
        } finally {
            await pg.stop();
        }
    }
}

/**
 * One centrifuge-js client of user `user` subscribed to each of channels (through wsUrl when
 * given, e.g. a proxy). -> {client, all: [{channel, data, offset}] in arrival order over the
 * connection, on(channel) -> [data], subs: {channel: Subscription}, events: {channel:
 * [subscribed ctx]}, close()}
 */
async function listen(h, channels, { user = 'watcher', wsUrl = null } = {}) {
    const m = makeClient(wsUrl ? { wsUrl } : h, { token: h.token(user) });
    const all = [];
    const subs = {};
    const events = {};
    const connected = once(m.client, 'connected');
    m.client.connect();
    try {
        await connected;
        for (const ch of channels) {
            const sub = m.client.newSubscription(ch);
            subs[ch] = sub;
            events[ch] = [];
            sub.on('publication', (ctx) => all.push({ channel: ch, data: ctx.data, offset: ctx.offset }));
            sub.on('subscribed', (ctx) => events[ch].push(ctx));
            const ok = once(sub, 'subscribed');
            sub.subscribe();
            await ok;
        }
    } catch (err) {
        m.client.disconnect();
        throw err;
    }
    return {
        ...m,
        all,
        subs,
        events,
        on: (ch) => all.filter((p) => p.channel === ch).map((p) => p.data),
        close: () => m.client.disconnect(),
    };
}

// "X/Y" -> BigInt, for comparing LSNs.
function lsnValue(lsn) {
    const m = /^([0-9A-F]+)\/([0-9A-F]+)$/i.exec(lsn);
    assert.ok(m, `lsn ${JSON.stringify(lsn)} is not X/Y`);
    return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

// The fields every change event carries, checked; op, table as expected.
function checkEnvelope(d, table, op) {
    assert.equal(d.table, table, JSON.stringify(d).slice(0, 300));
    assert.equal(d.op, op, JSON.stringify(d).slice(0, 300));
    lsnValue(d.lsn);
    assert.ok(Number.isInteger(d.xid) && d.xid > 0, `xid ${JSON.stringify(d.xid)}`);
    assert.match(d.commit_time, ISO_8601);
    const skew = Math.abs(Date.parse(d.commit_time) - Date.now());
    assert.ok(skew < 120000, `commit_time ${d.commit_time} is ${skew} ms from now`);
    if (op === 'INSERT' || op === 'TRUNCATE') assert.ok(!('old' in d), `${op} has no old: ${JSON.stringify(d.old)}`);
}

function assertIncreasingLsn(events, what) {
    for (let i = 1; i < events.length; i++) {
        assert.ok(lsnValue(events[i].lsn) > lsnValue(events[i - 1].lsn),
            `${what}: lsn not increasing at ${i}: ${events[i - 1].lsn} then ${events[i].lsn}`);
    }
}

// A timestamptz as text ("2024-05-06 07:08:09.123+00") or ISO 8601 -> ms since the epoch.
function instant(text) {
    assert.equal(typeof text, 'string', `a timestamptz is text: ${JSON.stringify(text)}`);
    let s = text.replace(' ', 'T');
    if (/[+-]\d{2}$/.test(s)) s += ':00';
    const t = Date.parse(s);
    assert.ok(!Number.isNaN(t), `not a timestamp: ${text}`);
    return t;
}

// The test's own slot, decoded by test_decoding: the committed INSERTs into table, in commit
// order, as objects of their columns' text values.
function createCheckSlot(pg, name = 'e2e_check') {
    pg.psql(`SELECT 1 FROM pg_create_logical_replication_slot('${name}', 'test_decoding')`);
    return () => {
        const out = pg.psql(`SELECT data FROM pg_logical_slot_get_changes('${name}', NULL, NULL,
            'include-xids', '0', 'skip-empty-xacts', '1')`);
        const rows = [];
        for (const line of out.split('\n')) {
            const m = /^table ([^:]+): INSERT: (.*)$/.exec(line);
            if (!m) continue;
            const row = { table: m[1] };
            for (const f of m[2].matchAll(/(\w+)\[[^\]]+\]:('(?:[^']|'')*'|\S+)/g))
                row[f[1]] = f[2].startsWith("'") ? f[2].slice(1, -1).replace(/''/g, "'") : f[2];
            rows.push(row);
        }
        return rows;
    };
}

// Which of the nodes streams the slot now: the walsender holding it (active_pid) has a TCP
// client port; the node with the socket bound to it (its inode among the node's descriptors).
async function streamingNode(pg, slot, nodes) {
    const port = await pg.psqlAsync(`SELECT r.client_port FROM pg_replication_slots s
        JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = '${slot}'`);
    if (!/^\d+$/.test(port)) return null;
    const local = `0100007F:${Number(port).toString(16).toUpperCase().padStart(4, '0')}`;
    let inode = null;
    for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
        const f = line.trim().split(/\s+/);
        if (f[1] === local && f[9] !== '0') inode = f[9]; /* a TIME_WAIT twin has inode 0 */
    }
    if (!inode) return null;
    for (const n of nodes) {
        if (!n.alive()) continue;
        let fds = [];
        try { fds = readdirSync(`/proc/${n.child.pid}/fd`); } catch { continue; }
        for (const fd of fds) {
            try {
                if (readlinkSync(`/proc/${n.child.pid}/fd/${fd}`) === `socket:[${inode}]`) return n;
            } catch { /* closed meanwhile */ }
        }
    }
    return null;
}

// The pid of the walsender streaming the slot, once there is one (and it is not `not`).
async function walsenderPid(pg, slot, not = null, ms = 15000) {
    let pid = null;
    await waitFor(async () => {
        const r = await pg.psqlAsync(`SELECT active_pid FROM pg_replication_slots
            WHERE slot_name = '${slot}' AND active`);
        pid = /^\d+$/.test(r) && r !== String(not) ? Number(r) : null;
        return pid !== null;
    }, ms, () => `a walsender (other than ${not})`);
    return pid;
}

// a
test('INSERT, UPDATE, DELETE and TRUNCATE arrive with op, row, old and values typed as JSON', T, async () => {
    const schema = `CREATE TABLE public.typed (id int PRIMARY KEY, small smallint, big bigint,
        amount numeric(12,2), flag boolean, note text, doc jsonb, raw json, at timestamptz,
        missing text, tags text[], uid uuid)`;
    await withFeed({ schema, tables: [{ table: 'public.typed' }] }, async ({ pg, h, slot }) => {
        // What herald set up at start: the publication (default name), the slot, the identity.
        assert.equal(pg.psql(`SELECT plugin || ' ' || slot_type FROM pg_replication_slots WHERE slot_name = '${slot}'`),
            'pgoutput logical');
        assert.equal(pg.psql("SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = 'herald'"),
            'public.typed');
        assert.equal(pg.psql("SELECT relreplident FROM pg_class WHERE oid = 'public.typed'::regclass"), 'f',
            'REPLICA IDENTITY FULL');
        assert.equal(pg.psql("SELECT 'herald.publish(text,jsonb)'::regprocedure::text"), 'herald.publish(text,jsonb)');

        const w = await listen(h, ['table:public.typed']);
        try {
            const note = 'hello "quoted" \\ back, ünïcode ✓';
            pg.psql(`INSERT INTO public.typed VALUES (1, 7, 9007199254740991, 12.50, true,
                '${note}', '{"a": [1, 2, {"b": null}], "s": "x"}', '{"k": 1}',
                '2024-05-06 07:08:09.123+00', NULL, '{a,b}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')`);
            const xmin = Number(pg.psql("SELECT xmin::text FROM public.typed WHERE id = 1"));
            pg.psql(`UPDATE public.typed SET flag = false, amount = -3.75, doc = '{"z": true}',
                missing = 'now set', big = -42 WHERE id = 1`);
            pg.psql('DELETE FROM public.typed WHERE id = 1');
            pg.psql("INSERT INTO public.typed (id, note) VALUES (2, 'before truncate')");
            pg.psql('TRUNCATE public.typed');
            await waitFor(() => w.all.length >= 5, 10000, () => `5 events, got ${JSON.stringify(w.all)}`);
            await sleep(300);
            const ev = w.on('table:public.typed');
            assert.deepEqual(ev.map((d) => d.op), ['INSERT', 'UPDATE', 'DELETE', 'INSERT', 'TRUNCATE']);
            const [ins, upd, del, ins2, trunc] = ev;

            const inserted = {
                id: 1, small: 7, big: 9007199254740991, amount: 12.5, flag: true, note,
                doc: { a: [1, 2, { b: null }], s: 'x' }, raw: { k: 1 }, missing: null, tags: '{a,b}',
                uid: 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
            };
            const at = Date.parse('2024-05-06T07:08:09.123Z');
            checkEnvelope(ins, 'public.typed', 'INSERT');
            assert.equal(ins.xid, xmin, 'xid is the inserting transaction (the row\'s xmin)');
            const { at: insAt, ...insRest } = ins.row;
            assert.equal(instant(insAt), at, `timestamptz as its text: ${insAt}`);
            assert.deepEqual(insRest, inserted);
            assert.ok('missing' in ins.row && ins.row.missing === null, 'NULL is null, not left out');

            checkEnvelope(upd, 'public.typed', 'UPDATE');
            const { at: updAt, ...updRest } = upd.row;
            assert.equal(instant(updAt), at);
            assert.deepEqual(updRest, { ...inserted, flag: false, amount: -3.75, doc: { z: true },
                missing: 'now set', big: -42 });
            const { at: oldAt, ...oldRest } = upd.old;
            assert.equal(instant(oldAt), at);
            assert.deepEqual(oldRest, inserted, 'UPDATE old: the whole row before (REPLICA IDENTITY FULL)');

            checkEnvelope(del, 'public.typed', 'DELETE');
            const { at: delAt, ...delRest } = del.old;
            assert.equal(instant(delAt), at);
            assert.deepEqual(delRest, updRest, 'DELETE old: the whole row deleted');

            checkEnvelope(ins2, 'public.typed', 'INSERT');
            assert.equal(ins2.row.note, 'before truncate');
            assert.equal(ins2.row.big, null);
            checkEnvelope(trunc, 'public.typed', 'TRUNCATE');

            assert.ok(new Set(ev.map((d) => d.xid)).size === 5, 'one transaction each');
            assertIncreasingLsn(ev, 'table:public.typed');
            for (let i = 1; i < ev.length; i++)
                assert.ok(Date.parse(ev[i].commit_time) >= Date.parse(ev[i - 1].commit_time), 'commit_time in order');
            // The channel's history holds the same events (namespace table keeps history).
            const hist = await apiResult(h, 'history', { channel: 'table:public.typed', limit: -1 });
            assert.deepEqual(hist.publications.map((p) => p.data), ev);
        } finally {
            w.close();
        }
    });
});

// b
test('a 1 MB row arrives whole, also in an UPDATE that leaves the big column unchanged', T, async () => {
    const schema = 'CREATE TABLE public.blobs (id int PRIMARY KEY, body text, status text)';
    await withFeed({ schema, tables: [{ table: 'public.blobs' }] }, async ({ pg, h }) => {
        const w = await listen(h, ['table:public.blobs']);
        try {
            const body = randomBytes(512 * 1024).toString('hex'); /* 1 MiB of text, stored out of line */
            /* on stdin: an argument of 1 MB is over Linux's per-argument limit */
            await pg.script(`INSERT INTO public.blobs VALUES (1, '${body}', 'new');`);
            assert.equal(pg.psql('SELECT length(body) FROM public.blobs'), String(body.length));
            assert.ok(Number(pg.psql("SELECT pg_column_size(body) FROM public.blobs")) > 8192, 'TOASTed');
            await waitFor(() => w.all.length >= 1, 15000, () => 'the 1 MB INSERT');
            const ins = w.all[0].data;
            checkEnvelope(ins, 'public.blobs', 'INSERT');
            assert.equal(ins.row.body.length, body.length);
            assert.ok(ins.row.body === body, 'the body byte for byte');
            assert.equal(ins.row.status, 'new');

            /* pgoutput sends an unchanged TOASTed value of the new row as "unchanged", not the
             * value; the old row (REPLICA IDENTITY FULL) has it. */
            pg.psql("UPDATE public.blobs SET status = 'seen' WHERE id = 1");
            await waitFor(() => w.all.length >= 2, 15000, () => 'the UPDATE');
            const upd = w.all[1].data;
            checkEnvelope(upd, 'public.blobs', 'UPDATE');
            assert.equal(upd.row.status, 'seen');
            assert.equal(typeof upd.row.body, 'string', `UPDATE row.body: ${String(upd.row.body).slice(0, 100)}`);
            assert.ok(upd.row.body === body, `UPDATE row.body whole (length ${upd.row.body.length})`);
            assert.ok(upd.old.body === body, 'UPDATE old.body whole');
            assert.equal(upd.old.status, 'new');
        } finally {
            w.close();
        }
    });
});

// c
test('commit order: B written later but committed first arrives first, not held back while A is open', T, async () => {
    await withFeed({ schema: ORDERS_SQL, tables: [{ table: 'public.orders', owner_column: 'user_id' }] },
        async ({ pg, h }) => {
            const commits = createCheckSlot(pg);
            const w = await listen(h, ['table:public.orders']);
            const a = await pg.session();
            const b = await pg.session();
            try {
                await a.query('BEGIN');
                await a.query("INSERT INTO public.orders (user_id, item) VALUES ('ua', 'A')");
                const xidA = Number(await a.query('SELECT txid_current()'));
                await b.query('BEGIN');
                await b.query("INSERT INTO public.orders (user_id, item) VALUES ('ub', 'B')");
                const xidB = Number(await b.query('SELECT txid_current()'));
                assert.ok(xidA < xidB, 'A wrote first');
                const tb = Date.now();
                await b.query('COMMIT');
                await waitFor(() => w.all.length >= 1, 5000, () => 'B while A is still open');
                const bLatency = Date.now() - tb;
                await sleep(500);
                assert.deepEqual(w.on('table:public.orders').map((d) => d.row.item), ['B'], 'A not yet: it is open');
                await a.query('COMMIT');
                await waitFor(() => w.all.length >= 2, 5000, () => 'A after its commit');
                await sleep(200);
                const ev = w.on('table:public.orders');
                assert.deepEqual(ev.map((d) => d.row.item), ['B', 'A']);
                assert.equal(ev[0].xid, xidB % 2 ** 32);
                assert.equal(ev[1].xid, xidA % 2 ** 32);
                assert.deepEqual(commits().map((r) => r.item), ['B', 'A'], 'PostgreSQL\'s own commit order');
                assert.ok(bLatency < 5000, `B took ${bLatency} ms`);
                /* A's row was written before B's: only a commit position increases here */
                assertIncreasingLsn(ev, 'lsn in delivery (commit) order');
            } finally {
                await a.close();
                await b.close();
                w.close();
            }
        });
});

// d
test('herald.publish: nothing from a rolled-back transaction, once from a committed one, in order with its rows', T, async () => {
    await withFeed({ schema: ORDERS_SQL, tables: [{ table: 'public.orders', owner_column: 'user_id' }], threads: 1 },
        async ({ pg, h }) => {
            /* one connection on both channels: arrival order over it is herald's order */
            const w = await listen(h, ['table:public.orders', 'chat:room1']);
            try {
                pg.psql(`BEGIN;
                    INSERT INTO public.orders (user_id, item) VALUES ('u1', 'rolled-before');
                    SELECT herald.publish('chat:room1', '{"text":"rolled back"}'::jsonb);
                    INSERT INTO public.orders (user_id, item) VALUES ('u1', 'rolled-after');
                    ROLLBACK;`);
                pg.psql(`BEGIN;
                    INSERT INTO public.orders (user_id, item) VALUES ('u1', 'before');
                    SELECT herald.publish('chat:room1', '{"text":"hi"}'::jsonb);
                    INSERT INTO public.orders (user_id, item) VALUES ('u1', 'after');
                    COMMIT;`);
                /* a transaction of its own with only a publish, then a row after it */
                pg.psql(`SELECT herald.publish('chat:room1', '{"text":"alone"}'::jsonb)`);
                pg.psql("INSERT INTO public.orders (user_id, item) VALUES ('u1', 'sentinel')");
                await waitFor(() => w.all.some((p) => p.data?.row?.item === 'sentinel'), 10000,
                    () => `the sentinel row; got ${JSON.stringify(w.all.map((p) => p.data))}`);
                await sleep(500);
                const seq = w.all.map((p) => (p.channel === 'chat:room1' ? `chat:${p.data.text}` : `row:${p.data.row.item}`));
                assert.deepEqual(seq, ['row:before', 'chat:hi', 'row:after', 'chat:alone', 'row:sentinel']);
                assert.deepEqual(w.on('chat:room1'), [{ text: 'hi' }, { text: 'alone' }], 'data as given, nothing else');
                const rows = w.on('table:public.orders');
                assert.equal(rows[0].xid, rows[1].xid, 'before and after: one transaction');
                const hist = await apiResult(h, 'history', { channel: 'chat:room1', limit: -1 });
                assert.deepEqual(hist.publications.map((p) => p.data), [{ text: 'hi' }, { text: 'alone' }]);
            } finally {
                w.close();
            }
        });
});

// e
test('the walsender terminated twice during 2,000 commits from 4 writers: all delivered once, in commit order', T, async (t) => {
    const schema = 'CREATE TABLE public.stream (id bigserial PRIMARY KEY, writer int NOT NULL, seq int NOT NULL)';
    await withFeed({ schema, tables: [{ table: 'public.stream' }] }, async ({ pg, h, slot }) => {
        const commits = createCheckSlot(pg);
        const w = await listen(h, ['table:public.stream']);
        const unsubscribed = [];
        w.subs['table:public.stream'].on('unsubscribed', (ctx) => unsubscribed.push(ctx));
        try {
            const N = 500;
            const WRITERS = 4;
            /* paced (~8 ms between commits, ~4 s in all) so the terminations land while they write */
            const writers = Array.from({ length: WRITERS }, (_, k) => pg.script(Array.from({ length: N },
                (_, i) => `INSERT INTO public.stream (writer, seq) VALUES (${k + 1}, ${i + 1}); SELECT pg_sleep(0.008);`)
                .join('\n')));
            let done = false;
            Promise.all(writers).then(() => { done = true; }, () => { done = true; });
            const kills = [];
            let prev = null;
            /* the first after 300 deliveries, the second once herald streams again and 50 more came */
            let atLeast = 300;
            for (let kill = 0; kill < 2; kill++) {
                await waitFor(() => w.all.length >= atLeast || done, 20000, () => `${atLeast} delivered (${w.all.length})`);
                const pid = await walsenderPid(pg, slot, prev);
                const committed = Number(await pg.psqlAsync('SELECT count(*) FROM public.stream'));
                const r = await pg.psqlAsync(`SELECT pg_terminate_backend(${pid})`);
                kills.push({ pid, committed, delivered: w.all.length, terminated: r });
                prev = pid;
                await walsenderPid(pg, slot, pid); /* herald is back before the next one */
                atLeast = w.all.length + 50;
            }
            await Promise.all(writers);
            const total = N * WRITERS;
            await waitFor(() => w.all.length >= total, 30000, () => `${total} delivered, got ${w.all.length}; kills ${JSON.stringify(kills)}`);
            await sleep(500);
            t.diagnostic(`terminations: ${JSON.stringify(kills)}`);
            for (const k of kills) {
                assert.equal(k.terminated, 't', `walsender ${k.pid} terminated`);
                assert.ok(k.committed < total, `terminated while writing: ${JSON.stringify(kills)}`);
            }
            const ev = w.on('table:public.stream');
            assert.equal(ev.length, total, 'each commit exactly once');
            const seen = new Set(ev.map((d) => `${d.row.writer}/${d.row.seq}`));
            assert.equal(seen.size, total, 'no duplicates');
            for (let k = 1; k <= WRITERS; k++) {
                const seqs = ev.filter((d) => d.row.writer === k).map((d) => d.row.seq);
                assert.deepEqual(seqs, Array.from({ length: N }, (_, i) => i + 1), `writer ${k} in order`);
            }
            const order = commits().map((r) => `${r.writer}/${r.seq}`);
            assert.equal(order.length, total);
            assert.deepEqual(ev.map((d) => `${d.row.writer}/${d.row.seq}`), order, 'PostgreSQL\'s commit order');
            assert.deepEqual(w.all.map((p) => p.offset), Array.from({ length: total }, (_, i) => i + 1),
                'offsets 1..2000: published once each');
            assert.equal(unsubscribed.length, 0);
            /* one row a transaction: strictly increasing in commit order (concurrent writers'
             * rows are written in another order than they commit) */
            assertIncreasingLsn(ev, 'table:public.stream');
        } finally {
            w.close();
        }
    });
});

// f
test('herald stopped (SIGTERM) while 100 rows are committed: all published once after it returns, recovered from history', T, async () => {
    const redis = await startRedis();
    const pg = await startPostgres();
    const prefix = `e2e${Math.floor(Math.random() * 1e9)}`;
    const slot = slotName();
    const heralds = [];
    let proxy = null;
    let w = null;
    let failed = null;
    try {
        pg.psql(ORDERS_SQL);
        const cfg = feedConfig(pg, slot, [{ table: 'public.orders', owner_column: 'user_id' }], { redis, prefix });
        const a = await start({ config: cfg, threads: 2 });
        heralds.push(a);
        await feedUp(a, pg, slot);
        proxy = await TcpProxy.start(a.port);
        w = await listen(a, ['table:public.orders'], { wsUrl: proxy.wsUrl(), user: 'recoverer' });
        const CH = 'table:public.orders';
        const items = () => w.on(CH).map((d) => d.row.item);
        const insert = (from, to, pace) => Array.from({ length: to - from + 1 },
            (_, i) => `INSERT INTO public.orders (user_id, item) VALUES ('u${(from + i) % 3}', 'f${from + i}');${pace}`).join('\n');
        await pg.script(insert(1, 10, ''));
        await waitFor(() => w.all.length >= 10, 10000, () => `first 10, got ${w.all.length}`);

        const writer = pg.script(insert(11, 110, 'SELECT pg_sleep(0.015);'));
        await waitFor(() => w.all.length >= 20, 10000, () => `some of the 100 live, got ${w.all.length}`);
        proxy.blocked = true; /* the client stays away until history has everything */
        const stopped = await a.stop('SIGTERM', 5000);
        assert.equal(stopped.killedAfterTimeout, false, 'herald exits on SIGTERM');
        const committedAtStop = Number(pg.psql('SELECT count(*) FROM public.orders'));
        proxy.cutAll();
        await writer;
        assert.ok(committedAtStop < 110, `rows committed while herald was down (${committedAtStop} at its exit)`);

        const b = await start({ config: cfg, threads: 2 });
        heralds.push(b);
        proxy.targetPort = b.port;
        await feedUp(b, pg, slot);
        const want = Array.from({ length: 110 }, (_, i) => `f${i + 1}`);
        let hist = null;
        await waitFor(async () => {
            hist = await apiResult(b, 'history', { channel: CH, limit: -1 });
            return (hist.publications || []).length >= 110;
        }, 15000, () => `110 in history, ${hist?.publications?.length}`);
        await sleep(500);
        hist = await apiResult(b, 'history', { channel: CH, limit: -1 });
        assert.deepEqual(hist.publications.map((p) => p.data.row.item), want, 'history: each row once, in order');
        assert.deepEqual(hist.publications.map((p) => p.offset), want.map((_, i) => i + 1));
        assertIncreasingLsn(hist.publications.map((p) => p.data), 'history');

        const before = w.all.length;
        proxy.blocked = false;
        await waitFor(() => w.all.length >= 110, 15000, () => `the subscriber to recover, ${w.all.length}`);
        await sleep(500);
        assert.deepEqual(items(), want, 'the subscriber: every row once, in order');
        assert.deepEqual(w.all.map((p) => p.offset), want.map((_, i) => i + 1));
        const last = w.events[CH].at(-1);
        assert.equal(last.wasRecovering, true);
        assert.equal(last.recovered, true, 'recovered from history');
        assert.ok(before < 110);
    } catch (err) {
        failed = err;
        decorate(err, heralds, pg);
        throw err;
    } finally {
        w?.close();
        await proxy?.close();
        for (const h of heralds) await stopChecked(h, failed).catch((e) => { if (!failed) throw e; });
        await pg.stop();
        await redis.stop();
    }
});

// g
test('owner_column: u1 on table:public.orders#u1 gets only its rows; u2 subscribing there gets 103', T, async () => {
    const tables = [{ table: 'public.orders', owner_column: 'user_id', columns: ['id', 'user_id', 'item', 'status'] }];
    await withFeed({ schema: ORDERS_SQL, tables }, async ({ pg, h }) => {
        const all = await listen(h, ['table:public.orders']);
        const u1 = await listen(h, ['table:public.orders#u1'], { user: 'u1' });
        const u2 = await listen(h, ['table:public.orders#u2'], { user: 'u2' });
        try {
            const stranger = u2.client.newSubscription('table:public.orders#u1');
            const out = subscribeOutcome(stranger);
            stranger.subscribe();
            const r = await out;
            assert.equal(r.unsubscribed?.code, 103, JSON.stringify(r));
            assert.equal(u2.client.state, 'connected');

            await pg.script(`INSERT INTO public.orders (user_id, item) VALUES ('u1', 'a1');
                INSERT INTO public.orders (user_id, item) VALUES ('u2', 'b1');
                INSERT INTO public.orders (user_id, item) VALUES ('u3', 'c1');
                INSERT INTO public.orders (user_id, item) VALUES (NULL, 'nobody');
                INSERT INTO public.orders (user_id, item) VALUES ('u1', 'a2');
                UPDATE public.orders SET status = 'paid' WHERE item = 'a1';
                DELETE FROM public.orders WHERE item = 'b1';
                INSERT INTO public.orders (user_id, item) VALUES ('u2', 'b2');`);
            await waitFor(() => all.all.length >= 8, 10000, () => `8 on the table channel, ${all.all.length}`);
            await waitFor(() => u1.all.length >= 3 && u2.all.length >= 2, 5000,
                () => `u1 ${u1.all.length}, u2 ${u2.all.length}`);
            await sleep(500);
            const tag = (d) => `${d.op}:${(d.op === 'DELETE' ? d.old : d.row).item}`;
            assert.deepEqual(all.on('table:public.orders').map(tag),
                ['INSERT:a1', 'INSERT:b1', 'INSERT:c1', 'INSERT:nobody', 'INSERT:a2', 'UPDATE:a1', 'DELETE:b1', 'INSERT:b2']);
            assert.deepEqual(u1.on('table:public.orders#u1').map(tag), ['INSERT:a1', 'INSERT:a2', 'UPDATE:a1']);
            assert.deepEqual(u2.on('table:public.orders#u2').map(tag), ['INSERT:b1', 'DELETE:b1', 'INSERT:b2']);
            /* the same event on both channels */
            const onAll = all.on('table:public.orders');
            assert.deepEqual(u1.on('table:public.orders#u1')[0], onAll[0]);
            assert.deepEqual(u2.on('table:public.orders#u2')[1], onAll[6]);
            assert.deepEqual(Object.keys(onAll[0].row).sort(), ['id', 'item', 'status', 'user_id'], 'the allow-list');
            /* nobody else's rows went to a user channel: u3's exists, nothing for NULL */
            const u3 = await apiResult(h, 'history', { channel: 'table:public.orders#u3', limit: -1 });
            assert.deepEqual(u3.publications.map((p) => p.data.row.item), ['c1']);
        } finally {
            for (const c of [all, u1, u2]) c.close();
        }
    });
});

// h
test('excluded columns and columns outside the allow-list never reach a client or the history', T, async () => {
    const schema = `${ORDERS_SQL};
        CREATE TABLE public.accounts (id int PRIMARY KEY, name text, api_token text, balance numeric)`;
    const tables = [
        { table: 'public.orders', owner_column: 'user_id', exclude_columns: ['password'] },
        { table: 'public.accounts', columns: ['id', 'name'] },
    ];
    await withFeed({ schema, tables }, async ({ pg, h }) => {
        const chans = ['table:public.orders', 'table:public.accounts'];
        const w = await listen(h, chans);
        const u1 = await listen(h, ['table:public.orders#u1'], { user: 'u1' });
        try {
            await pg.script(`INSERT INTO public.orders (user_id, item, status, password) VALUES ('u1', 'x', 'new', 'S3CRET-one');
                UPDATE public.orders SET password = 'S3CRET-two' WHERE item = 'x';
                UPDATE public.orders SET status = 'paid', password = 'S3CRET-three' WHERE item = 'x';
                DELETE FROM public.orders WHERE item = 'x';
                INSERT INTO public.accounts VALUES (1, 'ann', 'TOKEN-abc', 100.5);
                UPDATE public.accounts SET api_token = 'TOKEN-def', balance = 7, name = 'ann b' WHERE id = 1;
                DELETE FROM public.accounts WHERE id = 1;
                INSERT INTO public.orders (user_id, item) VALUES ('u1', 'sentinel');
                INSERT INTO public.accounts (id, name) VALUES (2, 'sentinel');`);
            await waitFor(() => w.all.some((p) => p.data.row?.item === 'sentinel')
                && w.all.some((p) => p.data.row?.name === 'sentinel')
                && u1.all.some((p) => p.data.row?.item === 'sentinel'), 10000,
            () => `the sentinels; got ${JSON.stringify(w.all.map((p) => p.data.op))}`);
            await sleep(300);
            const everything = [...w.all, ...u1.all].map((p) => p.data);
            for (const ch of [...chans, 'table:public.orders#u1']) {
                everything.push(...(await apiResult(h, 'history', { channel: ch, limit: -1 })).publications.map((p) => p.data));
            }
            const text = JSON.stringify(everything);
            assert.doesNotMatch(text, /S3CRET|TOKEN-|password|api_token|balance/);
            for (const d of everything) {
                const want = d.table === 'public.orders' ? ['id', 'item', 'status', 'user_id'] : ['id', 'name'];
                if (d.op !== 'DELETE') assert.deepEqual(Object.keys(d.row).sort(), want, JSON.stringify(d));
                else if (d.row) assert.ok(Object.keys(d.row).every((k) => want.includes(k)), JSON.stringify(d));
                if (d.op === 'UPDATE' || d.op === 'DELETE') assert.deepEqual(Object.keys(d.old).sort(), want, JSON.stringify(d));
            }
            const orders = w.on('table:public.orders');
            assert.equal(orders[0].op, 'INSERT');
            assert.deepEqual({ ...orders[0].row, id: 0 }, { id: 0, user_id: 'u1', item: 'x', status: 'new' });
            const accounts = w.on('table:public.accounts').map((d) => d.op);
            assert.deepEqual(accounts, ['INSERT', 'UPDATE', 'DELETE', 'INSERT']);
            assert.deepEqual(w.on('table:public.accounts')[1].row, { id: 1, name: 'ann b' });
            assert.deepEqual(w.on('table:public.accounts')[1].old, { id: 1, name: 'ann' });
        } finally {
            w.close();
            u1.close();
        }
    });
});

// i
test('two nodes on Redis: each change published once; the streaming node SIGKILLed, the other takes over within 10 s', T, async (t) => {
    const redis = await startRedis();
    const pg = await startPostgres();
    const prefix = `e2e${Math.floor(Math.random() * 1e9)}`;
    const slot = slotName();
    const nodes = [];
    const clients = [];
    let failed = null;
    const CH = 'table:public.orders';
    try {
        pg.psql(ORDERS_SQL);
        const commits = createCheckSlot(pg);
        const cfg = feedConfig(pg, slot, [{ table: 'public.orders', owner_column: 'user_id' }],
            { redis, prefix, publication: 'herald_two_nodes' });
        for (let i = 0; i < 2; i++) nodes.push(await start({ config: cfg, threads: 2 }));
        for (const n of nodes) await feedUp(n, pg, slot);
        for (const n of nodes) clients.push(await listen(n, [CH], { user: `on${n.port}` }));

        let seq = 0;
        const insertOne = () => pg.psqlAsync(`INSERT INTO public.orders (user_id, item) VALUES ('u1', 'i${++seq}')`);
        for (let i = 0; i < 30; i++) await insertOne();
        await waitFor(() => clients.every((c) => c.all.length >= 30), 10000,
            () => `30 on each node: ${clients.map((c) => c.all.length)}`);
        await sleep(1000);
        for (const c of clients) {
            assert.deepEqual(c.on(CH).map((d) => d.row.item), Array.from({ length: 30 }, (_, i) => `i${i + 1}`),
                'each change once on each node, not once per node');
        }
        assert.equal((await apiResult(nodes[0], 'history', { channel: CH, limit: 0 })).offset, 30, 'published once');
        /* Found through /proc, which a busy machine may show a moment late: asked again. */
        let streamer = null;
        await waitFor(async () => (streamer = await streamingNode(pg, slot, nodes)) !== null, 5000,
            () => 'the node holding the walsender connection');
        const survivor = nodes.find((n) => n !== streamer);
        const watch = clients[nodes.indexOf(survivor)];
        const tk = Date.now();
        streamer.child.kill('SIGKILL');
        await streamer.exited;
        const firstAfter = seq + 1;
        let takeoverMs = null;
        const deadline = Date.now() + 20000;
        while (Date.now() < deadline) {
            await insertOne();
            if (takeoverMs === null && watch.on(CH).some((d) => Number(d.row.item.slice(1)) >= firstAfter))
                takeoverMs = Date.now() - tk;
            if (takeoverMs !== null && seq >= firstAfter + 20) break;
            await sleep(100);
        }
        assert.ok(takeoverMs !== null, 'no row committed after the kill was delivered within 20 s');
        t.diagnostic(`takeover: the first row committed after the SIGKILL delivered ${takeoverMs} ms after it`);
        await waitFor(() => watch.all.length >= seq, 10000, () => `all ${seq} on the survivor, ${watch.all.length}`);
        await sleep(1000);
        const want = Array.from({ length: seq }, (_, i) => `i${i + 1}`);
        assert.deepEqual(watch.on(CH).map((d) => d.row.item), want, 'every row once, in order, across the takeover');
        assert.deepEqual(commits().map((r) => r.item), want, 'PostgreSQL\'s commit order');
        assertIncreasingLsn(watch.on(CH), CH);
        assert.equal((await apiResult(survivor, 'history', { channel: CH, limit: 0 })).offset, seq,
            'the history has each change once');
        await waitFor(async () => (await streamingNode(pg, slot, [survivor])) === survivor, 5000,
            () => `the survivor streams the slot now; its log:\n${survivor.stderr().slice(-1500)}`);
        assert.ok(takeoverMs <= 10000, `taken over after ${takeoverMs} ms`);
    } catch (err) {
        failed = err;
        decorate(err, nodes, pg);
        throw err;
    } finally {
        for (const c of clients) c.close();
        for (const n of nodes) await stopChecked(n, failed || !n.alive()).catch((e) => { if (!failed) throw e; });
        await pg.stop();
        await redis.stop();
    }
});

// j: the configurations herald refuses or survives, and the SQL it prints
test('wal_level=replica: herald stays up and serves clients, /ready 503 naming wal_level, one log line', T, async () => {
    const pg = await startPostgres({ walLevel: 'replica' });
    let h = null;
    let failed = null;
    try {
        pg.psql(ORDERS_SQL);
        h = await start({ config: feedConfig(pg, slotName(), [{ table: 'public.orders' }]), threads: 2 });
        let ready = null;
        await waitFor(async () => {
            ready = await httpRequest(h.port, 'GET', '/ready');
            return ready.status === 503 && /wal_level/.test(ready.text);
        }, 10000, () => `/ready 503 naming wal_level, got ${ready?.status} ${ready?.text}`);
        assert.ok(ready.json, `/ready's body is JSON: ${ready.text}`);
        assert.equal((await httpRequest(h.port, 'GET', '/health')).status, 200);
        const w = await listen(h, ['chat:x']);
        try {
            await apiResult(h, 'publish', { channel: 'chat:x', data: { ok: 1 } });
            await waitFor(() => w.all.length === 1, 5000, () => 'the publication');
        } finally {
            w.close();
        }
        await sleep(2500);
        assert.ok(h.alive());
        const lines = h.stderr().split('\n').filter((l) => /wal_level/.test(l));
        assert.equal(lines.length, 1, `one line about wal_level:\n${lines.join('\n')}`);
        assert.equal((await httpRequest(h.port, 'GET', '/ready')).status, 503);
    } catch (err) {
        failed = err;
        decorate(err, [h], pg);
        throw err;
    } finally {
        if (h) await stopChecked(h, failed);
        await pg.stop();
    }
});

test('an unknown table or column: herald exits nonzero naming it', T, async () => {
    const pg = await startPostgres();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-e2e-feedcfg-'));
    try {
        pg.psql(ORDERS_SQL);
        const cases = [
            { name: 'public.nope', tables: [{ table: 'public.nope' }] },
            { name: 'nope_col', tables: [{ table: 'public.orders', columns: ['id', 'nope_col'] }] },
            { name: 'no_owner', tables: [{ table: 'public.orders', owner_column: 'no_owner' }] },
            { name: 'passwd', tables: [{ table: 'public.orders', exclude_columns: ['passwd'] }] },
        ];
        for (const [k, c] of cases.entries()) {
            const file = path.join(dir, `bad${k}.json`);
            writeFileSync(file, JSON.stringify(feedConfig(pg, slotName(), c.tables)));
            const r = await runHerald(['--config', file, '--listen', `127.0.0.1:${await freePort()}`,
                '--token_hmac_secret', DEFAULT_SECRET, '--api_key', DEFAULT_API_KEY], { timeout: 15000 });
            assert.equal(r.timedOut, false, `${c.name}: herald kept running:\n${r.stderr}`);
            assert.notEqual(r.code, 0, `${c.name}: exit code`);
            assert.doesNotMatch(r.stderr, /unknown key/, `${c.name}: refused for the right reason`);
            assert.ok(r.stderr.includes(c.name), `${c.name} named in:\n${r.stderr}`);
            assert.equal(sanitizerReport(r.stderr), '');
        }
    } finally {
        rmSync(dir, { recursive: true, force: true });
        await pg.stop();
    }
});

test('herald pg sql prints the setup SQL; applied with psql, herald then starts on it and streams', T, async () => {
    const pg = await startPostgres();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-e2e-feedsql-'));
    let h = null;
    let failed = null;
    try {
        pg.psql(`${ORDERS_SQL}; CREATE TABLE public.accounts (id int PRIMARY KEY, name text)`);
        const slot = slotName();
        const cfg = feedConfig(pg, slot, [{ table: 'public.orders', owner_column: 'user_id' },
            { table: 'public.accounts' }], { publication: 'herald_e2e_pub' });
        const file = path.join(dir, 'herald.json');
        writeFileSync(file, JSON.stringify(cfg));
        const r = await runHerald(['pg', 'sql', '--config', file]);
        assert.equal(r.code, 0, `herald pg sql: ${r.code}\n${r.stderr}`);
        const sql = r.stdout;
        assert.match(sql, /CREATE PUBLICATION\s+"?herald_e2e_pub"?/i);
        assert.match(sql, /"?public"?\."?orders"?/);
        assert.match(sql, /"?public"?\."?accounts"?/);
        assert.match(sql, /REPLICA IDENTITY FULL/i);
        assert.match(sql, /pg_create_logical_replication_slot/i);
        assert.ok(sql.includes(slot), 'the slot named');
        assert.match(sql, /pgoutput/);
        assert.match(sql, /FUNCTION\s+"?herald"?\."?publish"?/i);
        assert.equal(pg.psql(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = '${slot}'`), '0',
            'printing changed nothing');

        await pg.script(sql);
        assert.equal(pg.psql(`SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY tablename)
            FROM pg_publication_tables WHERE pubname = 'herald_e2e_pub'`), 'public.accounts,public.orders');
        assert.equal(pg.psql(`SELECT string_agg(relreplident::text, ',') FROM pg_class
            WHERE oid IN ('public.orders'::regclass, 'public.accounts'::regclass)`), 'f,f');
        assert.equal(pg.psql(`SELECT plugin FROM pg_replication_slots WHERE slot_name = '${slot}'`), 'pgoutput');
        assert.equal(pg.psql("SELECT 'herald.publish(text,jsonb)'::regprocedure::text"), 'herald.publish(text,jsonb)');

        /* herald on what the SQL made: nothing to create, it streams */
        h = await start({ config: cfg, threads: 2 });
        await feedUp(h, pg, slot);
        const w = await listen(h, ['table:public.accounts', 'chat:room1']);
        try {
            pg.psql("INSERT INTO public.accounts VALUES (1, 'ann')");
            pg.psql(`SELECT herald.publish('chat:room1', '{"text":"hi"}'::jsonb)`);
            await waitFor(() => w.all.length >= 2, 10000, () => `2 events, ${JSON.stringify(w.all)}`);
            assert.deepEqual(w.on('table:public.accounts')[0].row, { id: 1, name: 'ann' });
            assert.deepEqual(w.on('chat:room1'), [{ text: 'hi' }]);
        } finally {
            w.close();
        }
    } catch (err) {
        failed = err;
        decorate(err, [h], pg);
        throw err;
    } finally {
        if (h) await stopChecked(h, failed);
        rmSync(dir, { recursive: true, force: true });
        await pg.stop();
    }
});

// PostgreSQL away: herald up and serving, /ready names postgres, and what is committed right
// after it returns is delivered.
test('PostgreSQL unreachable: herald serves clients, /ready 503 naming postgres; once back nothing committed is lost', T, async () => {
    const pg = await startPostgres();
    let h = null;
    let failed = null;
    try {
        pg.psql(ORDERS_SQL);
        await pg.down();
        const slot = slotName();
        h = await start({ config: feedConfig(pg, slot, [{ table: 'public.orders' }]), threads: 2 });
        let ready = null;
        await waitFor(async () => {
            ready = await httpRequest(h.port, 'GET', '/ready');
            return ready.status === 503;
        }, 10000, () => `/ready 503 while PostgreSQL is down, got ${ready?.status}`);
        assert.match(ready.text, /postgres/i, `/ready names postgres: ${ready.text}`);
        const w = await listen(h, ['table:public.orders', 'chat:x']);
        try {
            await apiResult(h, 'publish', { channel: 'chat:x', data: { while: 'down' } });
            await waitFor(() => w.all.length === 1, 5000, () => 'a publication while PostgreSQL is down');

            await pg.up();
            await feedUp(h, pg, slot, 20000);
            await pg.script(Array.from({ length: 5 }, (_, i) => `INSERT INTO public.orders (item) VALUES ('k${i + 1}');`).join('\n'));
            await waitFor(() => w.on('table:public.orders').length >= 5, 10000, () => 'the first 5');

            /* away again while herald streams; rows committed the moment it is back */
            await pg.down();
            await waitFor(async () => (await httpRequest(h.port, 'GET', '/ready')).status === 503, 10000,
                () => '/ready 503 after PostgreSQL went away');
            await pg.up();
            await pg.script(Array.from({ length: 20 }, (_, i) => `INSERT INTO public.orders (item) VALUES ('k${i + 6}');`).join('\n'));
            await waitFor(() => w.on('table:public.orders').length >= 25, 20000,
                () => `25 rows, got ${w.on('table:public.orders').length}`);
            await waitFor(async () => (await httpRequest(h.port, 'GET', '/ready')).status === 200, 10000,
                () => '/ready 200 again');
            await sleep(500);
            assert.deepEqual(w.on('table:public.orders').map((d) => d.row.item),
                Array.from({ length: 25 }, (_, i) => `k${i + 1}`), 'every row once, in order');
            assert.ok(h.alive());
        } finally {
            w.close();
        }
    } catch (err) {
        failed = err;
        decorate(err, [h], pg);
        throw err;
    } finally {
        if (h) await stopChecked(h, failed);
        await pg.stop();
    }
});

// k: a slot PostgreSQL invalidated while herald was away (it fell behind max_slot_wal_keep_size)
test('an invalidated slot: logged as an error, replaced by a new one; the change channels start a new epoch (2500 to their subscribers, recovered:false across the hole)', T, async (t) => {
    const redis = await startRedis();
    /* 1MB is less than one 16 MB segment: a checkpoint whose redo point is in a later segment
     * than the slot's restart_lsn invalidates the (inactive) slot */
    const pg = await startPostgres({ settings: { max_slot_wal_keep_size: "'1MB'" } });
    const prefix = `e2e${Math.floor(Math.random() * 1e9)}`;
    const slot = slotName();
    const heralds = [];
    const clients = [];
    let proxy = null;
    let failed = null;
    let polling = false;
    let poller = null;
    const CH = 'table:public.t';
    const OWN = 'table:public.t#u1';
    const { wsOpen } = await import('./lib/raw.mjs');
    const slotRow = async () => pg.psqlAsync(`SELECT CASE WHEN active THEN 't' ELSE 'f' END || ' ' || coalesce(wal_status, '-')
        FROM pg_replication_slots WHERE slot_name = '${slot}'`);
    // A raw client's subscribe as centrifuge-js sends it after a reconnect: -> the reply's subscribe.
    const rawSubscribe = async (h, user, channel, rec) => {
        const conn = await wsOpen(h.port);
        try {
            conn.sendText(`${JSON.stringify({ id: 1, connect: { token: h.token(user) } })}\n${
                JSON.stringify({ id: 2, subscribe: { channel, ...rec } })}`);
            let reply = null;
            while (!reply) {
                const f = await conn.readFrame(5000);
                assert.ok(f && f.opcode !== 8, `closed before the subscribe reply (${channel})`);
                for (const line of f.payload.toString().split('\n')) {
                    if (line.includes('"id":2')) reply = JSON.parse(line);
                }
            }
            assert.ok(reply.subscribe, `subscribe ${channel}: ${JSON.stringify(reply)}`);
            return reply.subscribe;
        } finally {
            conn.destroy();
        }
    };
    try {
        pg.psql(`CREATE TABLE public.t (id serial PRIMARY KEY, owner text, v text);
            CREATE TABLE public.filler (x text)`);
        const cfg = feedConfig(pg, slot, [{ table: 'public.t', owner_column: 'owner' }], { redis, prefix });
        cfg.namespaces = { ...NAMESPACES, table: { history_size: 100, history_ttl: 300, recover: true } };
        const a = await start({ config: cfg, threads: 2 });
        heralds.push(a);
        await feedUp(a, pg, slot);
        proxy = await TcpProxy.start(a.port);
        /* u1 on the table's channel and on its own: recoverable, it reconnects through the proxy */
        const w = await listen(a, [CH, OWN], { wsUrl: proxy.wsUrl(), user: 'u1' });
        clients.push(w);
        const subscribing = { [CH]: [], [OWN]: [] };
        const unsubscribed = [];
        for (const ch of [CH, OWN]) {
            w.subs[ch].on('subscribing', (ctx) => subscribing[ch].push(ctx));
            w.subs[ch].on('unsubscribed', (ctx) => unsubscribed.push({ ch, ...ctx }));
        }
        await pg.script(['old1', 'old2', 'old3'].map((v) => `INSERT INTO public.t (owner, v) VALUES ('u1', '${v}');`).join('\n'));
        await waitFor(() => w.on(CH).length >= 3 && w.on(OWN).length >= 3, 10000,
            () => `the 3 rows on both channels, got ${JSON.stringify(w.all.map((p) => [p.channel, p.offset]))}`);
        const oldEpoch = {};
        for (const ch of [CH, OWN]) {
            assert.deepEqual(w.all.filter((p) => p.channel === ch).map((p) => p.offset), [1, 2, 3], ch);
            const hist = await apiResult(a, 'history', { channel: ch, limit: 0 });
            assert.equal(hist.offset, 3, `${ch}: history offset`);
            assert.ok(hist.epoch, `${ch}: an epoch`);
            assert.equal(w.events[ch][0].streamPosition?.epoch, hist.epoch, `${ch}: the subscribe's epoch`);
            oldEpoch[ch] = hist.epoch;
        }

        /* herald away: the client keeps knocking at the proxy */
        proxy.blocked = true;
        const stopped = await a.stop('SIGTERM', 5000);
        assert.equal(stopped.killedAfterTimeout, false, 'herald exits on SIGTERM');
        proxy.cutAll();
        await waitFor(async () => (await slotRow()).startsWith('f '), 10000, () => `the slot inactive: ${pg.psql(
            `SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = '${slot}'`)}`);
        pg.psql("INSERT INTO public.t (owner, v) VALUES ('u1', 'lost1')");
        /* WAL past max_slot_wal_keep_size, and a checkpoint (where PostgreSQL 15 invalidates) */
        const ti = Date.now();
        let rounds = 0;
        let row = await slotRow();
        while (row !== 'f lost') {
            assert.ok(rounds < 10, `the slot not invalidated after ${rounds} rounds of WAL + CHECKPOINT: ${row}\n${tail(pg.log(), 1500)}`);
            rounds++;
            await pg.script(`INSERT INTO public.filler SELECT repeat('x', 1000) FROM generate_series(1, ${1000 * rounds});
                SELECT pg_switch_wal();
                CHECKPOINT;`);
            row = await slotRow();
        }
        t.diagnostic(`slot invalidated after ${rounds} round(s) of filler + pg_switch_wal() + CHECKPOINT, ${Date.now() - ti} ms`);
        assert.match(pg.log(), /invalidating slot/, 'PostgreSQL says it invalidated the slot');

        /* herald back while PostgreSQL is away: the client resubscribes before herald can know */
        await pg.down();
        const b = await start({ config: cfg, threads: 2 });
        heralds.push(b);
        await waitFor(async () => (await httpRequest(b.port, 'GET', '/ready')).status === 503, 10000,
            () => '/ready 503 while PostgreSQL is down');
        proxy.targetPort = b.port;
        proxy.blocked = false;
        await waitFor(() => w.events[CH].length >= 2 && w.events[OWN].length >= 2, 15000,
            () => `u1 subscribed again on node b: ${JSON.stringify(w.events)}`);
        const before = { [CH]: w.events[CH].length, [OWN]: w.events[OWN].length };
        const subscribingBefore = { [CH]: subscribing[CH].length, [OWN]: subscribing[OWN].length };

        /* every /ready answer from here until herald streams again */
        const readies = [];
        polling = true;
        poller = (async () => {
            while (polling) {
                try {
                    const r = await httpRequest(b.port, 'GET', '/ready', { timeout: 2000 });
                    readies.push({ status: r.status, text: r.text });
                } catch { /* herald busy */ }
                await sleep(25);
            }
        })();
        const tu = Date.now();
        await pg.up();
        await waitFor(() => /"level":"error".*invalidated/.test(b.stderr()), 20000,
            () => `an error line mentioning 'invalidated' in herald's log`);
        let now = '';
        await waitFor(async () => {
            now = await slotRow();
            return now !== '' && now !== 'f lost' && now.startsWith('t ') && !now.endsWith(' lost');
        }, 20000, () => `a new slot ${slot}, active, not lost (now: ${JSON.stringify(now)})`);
        await waitFor(async () => (await httpRequest(b.port, 'GET', '/ready')).status === 200, 15000,
            () => '/ready 200 once streaming again');
        polling = false;
        await poller;
        t.diagnostic(`streaming again ${Date.now() - tu} ms after PostgreSQL came back; /ready meanwhile: ${
            JSON.stringify([...new Set(readies.map((r) => `${r.status} ${r.text}`))]).slice(0, 600)}`);

        /* this node's subscribers of both channels told to resubscribe (2500), then recovered:false */
        for (const ch of [CH, OWN]) {
            await waitFor(() => subscribing[ch].slice(subscribingBefore[ch]).some((c) => c.code === 2500), 10000,
                () => `${ch}: an unsubscribe push with code 2500; subscribing events ${JSON.stringify(subscribing[ch])}`);
            await waitFor(() => w.events[ch].length > before[ch], 10000, () => `${ch}: subscribed again after the 2500`);
            const last = w.events[ch].at(-1);
            assert.equal(last.wasRecovering, true, `${ch}: it recovered from offset 3: ${JSON.stringify(last)}`);
            assert.equal(last.recovered, false, `${ch}: recovered:false across the hole: ${JSON.stringify(last)}`);
            assert.notEqual(last.streamPosition?.epoch, oldEpoch[ch], `${ch}: a new epoch`);
        }
        assert.deepEqual(unsubscribed, [], 'resubscribed, never unsubscribed for good');

        /* a recovery across the hole from anywhere: recovered:false, none of the old stream */
        for (const ch of [CH, OWN]) {
            const back = await rawSubscribe(b, 'u1', ch, { recover: true, offset: 3, epoch: oldEpoch[ch] });
            assert.notEqual(back.recovered, true, `${ch}: never a silent recovered:true: ${JSON.stringify(back)}`);
            assert.notEqual(back.epoch, oldEpoch[ch], `${ch}: the subscribe reply's epoch is new`);
            assert.deepEqual(back.publications ?? [], [], `${ch}: nothing recovered from the old stream`);
        }

        /* what is committed now is delivered: to u1 and to a fresh subscriber */
        const fresh = await listen(b, [CH], { user: 'fresh' });
        clients.push(fresh);
        const seen = w.all.length;
        await pg.script(`INSERT INTO public.t (owner, v) VALUES ('u1', 'new1');
            INSERT INTO public.t (owner, v) VALUES ('u1', 'new2');`);
        await waitFor(() => fresh.on(CH).length >= 2 && w.all.length >= seen + 4, 10000,
            () => `new1, new2 delivered: fresh ${fresh.on(CH).length}, u1 ${w.all.length - seen}`);
        await sleep(300);
        assert.deepEqual(fresh.on(CH).map((d) => d.row.v), ['new1', 'new2']);
        for (const ch of [CH, OWN]) {
            assert.deepEqual(w.all.slice(seen).filter((p) => p.channel === ch).map((p) => p.data.row.v), ['new1', 'new2'], ch);
            const hist = await apiResult(b, 'history', { channel: ch, limit: -1 });
            assert.notEqual(hist.epoch, oldEpoch[ch], `${ch}: the history's epoch is new`);
            const vs = hist.publications.map((p) => p.data.row?.v);
            assert.deepEqual(vs.filter((v) => /^old/.test(v)), [], `${ch}: the old stream is gone from history: ${JSON.stringify(vs)}`);
            assert.deepEqual(vs.filter((v) => /^new/.test(v)), ['new1', 'new2'], `${ch}: history`);
        }
        assert.ok(b.alive());
    } catch (err) {
        failed = err;
        decorate(err, heralds, pg);
        throw err;
    } finally {
        polling = false;
        await poller?.catch(() => {});
        for (const c of clients) c.close();
        await proxy?.close();
        for (const h of heralds) await stopChecked(h, failed).catch((e) => { if (!failed) throw e; });
        await pg.stop();
        await redis.stop();
    }
});
