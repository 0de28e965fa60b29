// The client protocol as the official centrifuge-js v5 client and a bare `ws` client see it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { makeClient, once } from './lib/centrifuge.mjs';
import { sleep, withHerald } from './lib/herald.mjs';
import { sign, nowSeconds } from './lib/jwt.mjs';
import { ProtoClient } from './lib/proto.mjs';

const T = { timeout: 30000 };

async function apiOk(h, method, body) {
    const r = await h.api(method, body);
    assert.equal(r.status, 200, `${method}: HTTP ${r.status} ${r.text}`);
    assert.ok(r.json && r.json.result, `${method}: no result in ${r.text}`);
    return r.json.result;
}

test('centrifuge client connects, subscribes and receives a publication from the API', T, async () => {
    await withHerald({}, async (h) => {
        const { client } = makeClient(h, { token: h.token('alice') });
        try {
            const sub = client.newSubscription('news');
            const subscribed = once(sub, 'subscribed');
            sub.subscribe();
            client.connect();
            const connected = await once(client, 'connected');
            assert.ok(connected.client, 'connected context carries a client id');
            await subscribed;
            const got = once(sub, 'publication');
            await apiOk(h, 'publish', { channel: 'news', data: { text: 'hello', n: 1 } });
            const pub = await got;
            assert.deepEqual(pub.data, { text: 'hello', n: 1 });
            assert.equal(pub.channel, 'news');
        } finally {
            client.disconnect();
        }
    });
});

test('publication data reaches the subscriber byte for byte (spacing, key order, unicode, escapes)', T,
    async () => {
        await withHerald({}, async (h) => {
            const c = await ProtoClient.open(h.wsUrl);
            try {
                await c.connectAndSubscribe(h.token('bob'), ['raw']);
                // Each entry is the exact text of `data` inside a hand-written request body.
                const datas = [
                    `{"z" : 1,\t"a":[1 , 2.50, -0.0e+1,true,null],  "s":"caf\\u00e9 é 😀 \\" \\\\ \\/ \\n \\t" ,"k":{ } }`,
                    '"just a string with \\"quotes\\" and ünïcödé"',
                    '1.50e3',
                    '[ ]',
                    '{"b":2,"a":1}',
                ];
                for (const d of datas) {
                    const body = `{"channel":"raw",   "data":  ${d}  }`;
                    const r = await h.api('publish', body);
                    assert.equal(r.status, 200, r.text);
                    assert.ok(r.json && r.json.result, `publish ${d}: ${r.text}`);
                }
                const pubs = await c.waitPublications(datas.length, 'raw');
                for (let i = 0; i < datas.length; i++) {
                    assert.ok(pubs[i].data !== undefined, `no data in ${pubs[i].raw}`);
                    assert.deepEqual(Buffer.from(pubs[i].data, 'utf8'), Buffer.from(datas[i], 'utf8'),
                        `publication ${i}: expected ${datas[i]} got ${pubs[i].data}`);
                }
            } finally {
                c.close();
            }
        });
    });

test('publication data with raw newlines does not break newline-delimited frames', T, async () => {
    await withHerald({}, async (h) => {
        const { client } = makeClient(h, { token: h.token('carol') });
        const raw = await ProtoClient.open(h.wsUrl);
        try {
            await raw.connectAndSubscribe(h.token('dave'), ['pretty']);
            const sub = client.newSubscription('pretty');
            const subscribed = once(sub, 'subscribed');
            sub.subscribe();
            client.connect();
            await subscribed;
            const got = once(sub, 'publication');
            const before = raw.frames.length;
            const body = '{\n  "channel": "pretty",\n  "data": {\n    "a": 1,\n    "b": [\n      1,\n      2\n    ]\n  }\n}\n';
            const r = await h.api('publish', body);
            assert.equal(r.status, 200, r.text);
            if (r.json && r.json.error) {
                // Refusing such data is acceptable; accepting it and breaking frames is not.
                assert.equal(r.json.error.code, 107, r.text);
                return;
            }
            assert.ok(r.json && r.json.result, r.text);
            await raw.waitUntil(() => raw.frames.length > before, 5000, 'the publication frame');
            for (const l of raw.lines) {
                assert.ok(!l.msg.unparsable, `publish accepted but the push frame has a line that is not JSON `
                    + `(raw newline from data?): ${JSON.stringify(l.raw)}`);
            }
            assert.deepEqual(JSON.parse(raw.publications('pretty')[0].data), { a: 1, b: [1, 2] });
            const pub = await got;
            assert.deepEqual(pub.data, { a: 1, b: [1, 2] });
        } finally {
            client.disconnect();
            raw.close();
        }
    });
});

test('several subscriptions sent in one batch with connect all succeed and receive', T, async () => {
    await withHerald({}, async (h) => {
        const { client, stats } = makeClient(h, { token: h.token('erin') });
        const channels = ['b1', 'b2', 'b3', 'b4', 'b5'];
        try {
            const subs = channels.map((ch) => client.newSubscription(ch));
            const subscribed = subs.map((s) => once(s, 'subscribed'));
            for (const s of subs) s.subscribe();
            client.connect();
            await Promise.all(subscribed);
            const batched = stats.sent.some((f) => f.split('\n').filter((l) => l.includes('"subscribe"')).length >= 2);
            assert.ok(batched, `the client did not batch subscribes; frames sent: ${stats.sent.join(' | ')}`);
            const got = subs.map((s) => once(s, 'publication'));
            for (const ch of channels) await apiOk(h, 'publish', { channel: ch, data: { ch } });
            const pubs = await Promise.all(got);
            pubs.forEach((p, i) => assert.deepEqual(p.data, { ch: channels[i] }));
        } finally {
            client.disconnect();
        }
    });
});

test('client publish is refused with 103 without --client_publish', T, async () => {
    await withHerald({}, async (h) => {
        const { client } = makeClient(h, { token: h.token('frank') });
        try {
            client.connect();
            await once(client, 'connected');
            await assert.rejects(client.publish('chat', { text: 'hi' }), (err) => {
                assert.equal(err.code, 103, `expected 103, got ${JSON.stringify(err)}`);
                return true;
            });
            assert.equal(client.state, 'connected', 'a refused publish keeps the connection');
        } finally {
            client.disconnect();
        }
    });
});

test('client publish reaches subscribers with --client_publish', T, async () => {
    await withHerald({ args: ['--client_publish'] }, async (h) => {
        const pub = makeClient(h, { token: h.token('gina') });
        const rx = await ProtoClient.open(h.wsUrl);
        try {
            await rx.connectAndSubscribe(h.token('hank'), ['chat']);
            pub.client.connect();
            await once(pub.client, 'connected');
            await pub.client.publish('chat', { text: 'from a client' });
            const pubs = await rx.waitPublications(1, 'chat');
            assert.deepEqual(JSON.parse(pubs[0].data), { text: 'from a client' });
        } finally {
            pub.client.disconnect();
            rx.close();
        }
    });
});

test('invalid token: close 3500 and the client does not reconnect', T, async () => {
    await withHerald({}, async (h) => {
        const bad = sign({ sub: 'mallory', exp: nowSeconds() + 3600 }, 'not-the-server-secret');
        const { client, stats, events } = makeClient(h, { token: bad });
        try {
            const disconnected = once(client, 'disconnected');
            client.connect();
            const ctx = await disconnected;
            assert.equal(ctx.code, 3500, `disconnect code: ${JSON.stringify(ctx)}`);
            await sleep(1500); // several reconnect delays (min 100 ms)
            assert.equal(client.state, 'disconnected');
            assert.equal(stats.opened, 1, `connection attempts: ${stats.opened}`);
            assert.ok(!events.some((e) => e.ev === 'connected'), 'never connected');
        } finally {
            client.disconnect();
        }
    });
});

test('malformed token (not a JWT) is refused with close 3500', T, async () => {
    await withHerald({}, async (h) => {
        const c = await ProtoClient.open(h.wsUrl);
        c.send({ id: 1, connect: { token: 'not.a.jwt' } });
        const info = await Promise.race([c.closed, sleep(5000).then(() => null)]);
        assert.ok(info, `connection not closed; received: ${c.frames.map((f) => f.text).join(' | ')}`);
        assert.equal(info.code, 3500);
    });
});

test('expired token gets error 109 on connect', T, async () => {
    await withHerald({}, async (h) => {
        const c = await ProtoClient.open(h.wsUrl);
        try {
            const r = await c.connect(h.token('ivan', { ttl: -60 }));
            assert.ok(r.error, `expected an error reply: ${JSON.stringify(r)}`);
            assert.equal(r.error.code, 109);
        } finally {
            c.close();
        }
    });
});

test('expired token: centrifuge client refreshes through getToken and connects', T, async () => {
    await withHerald({}, async (h) => {
        let calls = 0;
        const { client, events, stats } = makeClient(h, {
            token: h.token('judy', { ttl: -60 }),
            getToken: async () => { calls++; return h.token('judy', { ttl: 3600 }); },
        });
        try {
            client.connect();
            await once(client, 'connected', 10000);
            const errs = events.filter((e) => e.ev === 'error').map((e) => e.ctx.error && e.ctx.error.code);
            assert.ok(errs.includes(109), `expected a 109 connect error first; errors: ${JSON.stringify(errs)}`);
            assert.ok(calls >= 1, 'getToken was called');
            assert.ok(stats.opened >= 2, 'a second connection carried the fresh token');
        } finally {
            client.disconnect();
        }
    });
});

test('connect without a token is refused unless --allow_anonymous', T, async () => {
    await withHerald({}, async (h) => {
        const c = await ProtoClient.open(h.wsUrl);
        c.send({ id: 1, connect: {} });
        const outcome = await Promise.race([
            c.closed.then((i) => ({ close: i.code })),
            c.reply(1).then((r) => ({ reply: r })).catch(() => new Promise(() => {})),
        ]);
        if (outcome.reply) {
            assert.ok(outcome.reply.error, `anonymous connect accepted: ${JSON.stringify(outcome.reply)}`);
            assert.equal(outcome.reply.error.code, 101);
        } else {
            assert.equal(outcome.close, 3500);
        }
        c.terminate();
    });
    await withHerald({ args: ['--allow_anonymous'] }, async (h) => {
        const c = await ProtoClient.open(h.wsUrl);
        try {
            const r = await c.connect(null);
            assert.ok(r.connect, `anonymous connect refused: ${JSON.stringify(r)}`);
        } finally {
            c.close();
        }
    });
});

test('server pings are answered by the client and the connection stays up', T, async () => {
    await withHerald({ args: ['--ping_interval', '1'] }, async (h) => {
        const { client, stats, events } = makeClient(h, { token: h.token('kate') });
        const raw = await ProtoClient.open(h.wsUrl);
        try {
            const r = await raw.connect(h.token('leo'));
            assert.ok(r.connect, JSON.stringify(r));
            assert.equal(r.connect.ping, 1, 'connect reply announces the ping interval');
            assert.equal(r.connect.pong, true, 'connect reply asks for pongs');
            client.connect();
            await once(client, 'connected');
            const settled = events.length;
            await sleep(3500);
            assert.equal(client.state, 'connected');
            assert.equal(stats.opened, 1, 'no reconnect');
            const later = events.slice(settled);
            assert.equal(later.length, 0, `events after connecting: ${later.map((e) => `${e.ev} ${JSON.stringify(e.ctx)}`).join(', ')}`);
            const pongs = stats.sent.filter((f) => f.trim() === '{}').length;
            assert.ok(pongs >= 2, `centrifuge answered ${pongs} pings`);
            assert.ok(raw.pings >= 2, `raw client saw ${raw.pings} pings in 3.5 s`);
            assert.equal(raw.closeInfo, null, 'raw client (answering pings) still connected');
        } finally {
            client.disconnect();
            raw.close();
        }
    });
});

test('rpc (no handler) answers 108; presence and history without the namespace option are refused', T,
    async () => {
    await withHerald({}, async (h) => {
        const { client } = makeClient(h, { token: h.token('mia') });
        try {
            client.connect();
            await once(client, 'connected');
            const expect108 = (what) => (err) => {
                assert.equal(err.code, 108, `${what}: ${JSON.stringify(err)}`);
                return true;
            };
            // Not available (108), or not permitted for clients (103) as Centrifugo answers when
            // the namespace does not enable it.
            const refused = (what) => (err) => {
                assert.ok(err.code === 108 || err.code === 103, `${what}: ${JSON.stringify(err)}`);
                return true;
            };
            await assert.rejects(client.rpc('anything', { x: 1 }), expect108('rpc'));
            await assert.rejects(client.presence('plain'), refused('presence'));
            await assert.rejects(client.history('plain', { limit: 10 }), refused('history'));
            assert.equal(client.state, 'connected');
        } finally {
            client.disconnect();
        }
    });
    });

test('a command with an unknown method is refused: error 104 or disconnect 3501', T, async () => {
    await withHerald({}, async (h) => {
        const c = await ProtoClient.open(h.wsUrl);
        try {
            await c.connectAndSubscribe(h.token('ned'));
            c.send({ id: 7, frobnicate: { channel: 'x' } });
            const outcome = await Promise.race([
                c.closed.then((i) => ({ close: i })),
                c.reply(7).then((r) => ({ reply: r })).catch(() => new Promise(() => {})),
            ]);
            if (outcome.reply) {
                assert.ok(outcome.reply.error, JSON.stringify(outcome.reply));
                assert.equal(outcome.reply.error.code, 104, JSON.stringify(outcome.reply));
            } else {
                assert.equal(outcome.close.code, 3501, JSON.stringify(outcome.close));
            }
        } finally {
            c.terminate();
        }
    });
});
