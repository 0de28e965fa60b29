// The listener: an address already in use is refused (another herald's included, which
// SO_REUSEPORT would otherwise let in to take half of the clients), and TLS on the listener
// (wss:// and the API over https on one port, hostile handshakes, SIGHUP reload, refused
// misconfigurations).
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import tls from 'node:tls';
import WebSocket from 'ws';
import { makeClient, once } from './lib/centrifuge.mjs';
import { DEFAULT_API_KEY, DEFAULT_SECRET, heraldBin, keepLog, runHerald, sanitizerReport, sleep, withHerald } from './lib/herald.mjs';

const T = { timeout: 60000 };

function tempDir() {
    return mkdtempSync(path.join(os.tmpdir(), 'herald-listen-'));
}

// A self-signed certificate for 127.0.0.1 made by the openssl CLI: {cert, key} paths, pem,
// fingerprint (as node prints it).
function makeCert(dir, name) {
    const cert = path.join(dir, `${name}.crt`);
    const key = path.join(dir, `${name}.key`);
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
        '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=herald-${name}`,
        '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
    const pem = readFileSync(cert, 'utf8');
    return { cert, key, pem, fingerprint: new X509Certificate(pem).fingerprint256 };
}

// The certificate a new TLS connection is shown: its SHA-256 fingerprint.
function peerFingerprint(port, ca) {
    return new Promise((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port, ca }, () => {
            const fp = s.getPeerCertificate().fingerprint256;
            s.end();
            resolve(fp);
        });
        s.setTimeout(5000, () => s.destroy(new Error('TLS connect: timeout')));
        s.on('error', reject);
    });
}

// A WebSocket class for centrifuge that trusts ca.
function tlsWebSocket(ca) {
    return class extends WebSocket {
        constructor(url, protocols) {
            super(url, protocols, { ca });
        }
    };
}

async function waitFor(what, fn, timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        if (await fn()) return;
        if (Date.now() > deadline) throw new Error(`timeout waiting for ${what}`);
        await sleep(50);
    }
}

// Raw bytes to the port; resolves {closed: ms until herald closed it, or null after waitMs}.
function rawSend(port, bytes, waitMs) {
    return new Promise((resolve, reject) => {
        const t0 = Date.now();
        const s = net.connect(port, '127.0.0.1', () => s.write(bytes));
        s.on('data', () => {});
        const timer = setTimeout(() => { s.destroy(); resolve({ closed: null }); }, waitMs);
        s.on('close', () => { clearTimeout(timer); resolve({ closed: Date.now() - t0 }); });
        s.on('error', (err) => { if (err.code !== 'ECONNRESET') reject(err); });
    });
}

// The ClientHello node's TLS client sends, caught by a plain TCP server of ours.
function captureClientHello() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer((sock) => {
            sock.once('data', (d) => {
                resolve(d);
                sock.destroy();
                srv.close();
            });
        });
        srv.listen(0, '127.0.0.1', () => {
            const c = tls.connect({ host: '127.0.0.1', port: srv.address().port, rejectUnauthorized: false });
            c.on('error', () => {});
        });
        srv.on('error', reject);
    });
}

async function apiOk(h, method, body) {
    const r = await h.api(method, body);
    assert.equal(r.status, 200, `${method}: HTTP ${r.status} ${r.text}`);
    assert.ok(r.json && r.json.result, `${method}: no result in ${r.text}`);
    return r.json.result;
}

// n centrifuge clients subscribed to channel; resolves [{client, sub}].
async function subscribers(h, n, channel, options = {}) {
    const out = [];
    for (let i = 0; i < n; i++) {
        const { client } = makeClient(h, { token: h.token(`u${i}`), ...options });
        const sub = client.newSubscription(channel);
        const subscribed = once(sub, 'subscribed');
        sub.subscribe();
        client.connect();
        out.push({ client, sub, subscribed });
    }
    await Promise.all(out.map((o) => o.subscribed));
    return out;
}

test('a second herald on the same address exits non-zero naming it; the first keeps every client', T,
    async () => {
        await withHerald({ threads: 2 }, async (h) => {
            const addr = `127.0.0.1:${h.port}`;
            const second = runHerald(['--listen', addr, '--token_hmac_secret', DEFAULT_SECRET,
                '--api_key', DEFAULT_API_KEY, '--threads', '2'], { timeout: 8000 });
            // Clients connect while the second one runs, if it does: through a shared
            // SO_REUSEPORT group half of them, and of the API calls, would reach it.
            await Promise.race([second, sleep(1500)]);
            const subs = await subscribers(h, 20, 'news');
            try {
                const got = subs.map((s) => once(s.sub, 'publication'));
                await apiOk(h, 'publish', { channel: 'news', data: { n: 1 } });
                const pubs = await Promise.all(got);
                pubs.forEach((p) => assert.deepEqual(p.data, { n: 1 }));
            } finally {
                for (const s of subs) s.client.disconnect();
            }
            const res = await second;
            assert.equal(res.timedOut, false, `the second herald kept running:\n${res.stderr}`);
            assert.notEqual(res.code, 0, res.stderr);
            assert.match(res.stderr, new RegExp(`listen ${addr.replace(/\./g, '\\.')}: address already in use`));
            assert.equal(sanitizerReport(res.stderr), '');
            assert.ok(h.alive(), 'the first herald is gone');
        });
    });

test('an address held otherwise is refused too: the wildcard over a herald, a server without SO_REUSEPORT', T,
    async () => {
        await withHerald({}, async (h) => {
            const res = await runHerald(['--listen', `0.0.0.0:${h.port}`, '--api_key', 'k'], { timeout: 8000 });
            assert.equal(res.timedOut, false, res.stderr);
            assert.notEqual(res.code, 0);
            assert.match(res.stderr, new RegExp(`listen 0\\.0\\.0\\.0:${h.port}: address already in use`));
        });
        const srv = net.createServer();
        await new Promise((r) => srv.listen(0, '127.0.0.1', r));
        try {
            const { port } = srv.address();
            const res = await runHerald(['--listen', `127.0.0.1:${port}`, '--api_key', 'k'], { timeout: 8000 });
            assert.equal(res.timedOut, false, res.stderr);
            assert.notEqual(res.code, 0);
            assert.match(res.stderr, new RegExp(`listen 127\\.0\\.0\\.1:${port}: address already in use`));
        } finally {
            srv.close();
        }
    });

test('an IPv6 address is listened on ([::1]:port): a WebSocket connects, and a second herald there is refused', T,
    async () => {
        const port = await new Promise((resolve, reject) => {
            const srv = net.createServer();
            srv.on('error', reject);
            srv.listen(0, '::1', () => { const p = srv.address().port; srv.close(() => resolve(p)); });
        });
        const child = spawn(heraldBin(), ['--listen', `[::1]:${port}`, '--allow_anonymous', 'true',
            '--api_key', DEFAULT_API_KEY], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env } });
        keepLog(child);
        let stderr = '';
        child.stderr.on('data', (c) => { stderr += c; });
        const exited = new Promise((r) => child.on('close', (code, signal) => r({ code, signal })));
        try {
            await waitFor('herald on [::1]', () => new Promise((r) => {
                const s = net.connect(port, '::1', () => { s.destroy(); r(true); });
                s.on('error', () => r(false));
            }), 10000);
            const ws = new WebSocket(`ws://[::1]:${port}/connection/websocket`);
            const reply = await new Promise((resolve, reject) => {
                ws.on('open', () => ws.send(JSON.stringify({ id: 1, connect: {} })));
                ws.on('message', (m) => resolve(JSON.parse(m.toString())));
                ws.on('error', reject);
            });
            ws.close();
            assert.equal(reply.id, 1);
            assert.ok(reply.connect && reply.connect.client, JSON.stringify(reply));
            const res = await runHerald(['--listen', `[::1]:${port}`, '--api_key', 'k'], { timeout: 8000 });
            assert.equal(res.timedOut, false, res.stderr);
            assert.notEqual(res.code, 0);
            assert.match(res.stderr, new RegExp(`listen ::1:${port}: address already in use`));
        } finally {
            child.kill('SIGTERM');
            const end = await exited;
            assert.equal(end.code, 0, stderr);
            assert.equal(sanitizerReport(stderr), '');
        }
    });

test('TLS: centrifuge over wss:// connects, subscribes and receives publications made over https', T,
    async () => {
        const dir = tempDir();
        try {
            const a = makeCert(dir, 'a');
            await withHerald({ threads: 2, ca: a.pem, args: ['--tls_cert', a.cert, '--tls_key', a.key] },
                async (h) => {
                    assert.match(h.wsUrl, /^wss:/);
                    assert.equal(await peerFingerprint(h.port, a.pem), a.fingerprint);
                    const subs = await subscribers(h, 4, 'news', { websocket: tlsWebSocket(a.pem) });
                    try {
                        // Small ones in a burst (many frames in one flush: records in one
                        // buffer), then one far larger than a record and than a round of
                        // encryption (the request body is read across many records, the
                        // publication written in many).
                        const small = [];
                        for (const s of subs) {
                            const seen = [];
                            small.push(new Promise((resolve) => s.sub.on('publication', (p) => {
                                seen.push(p.data);
                                if (seen.length === 51) resolve(seen);
                            })));
                        }
                        for (let i = 0; i < 50; i++) await apiOk(h, 'publish', { channel: 'news', data: { i } });
                        const big = randomBytes(300 * 1024).toString('base64');
                        await apiOk(h, 'publish', { channel: 'news', data: { big } });
                        const all = await Promise.race([Promise.all(small),
                            sleep(20000).then(() => { throw new Error('publications missing'); })]);
                        for (const seen of all) {
                            assert.deepEqual(seen.slice(0, 50), Array.from({ length: 50 }, (_, i) => ({ i })));
                            assert.equal(seen[50].big, big);
                        }
                    } finally {
                        for (const s of subs) s.client.disconnect();
                    }
                    // Plaintext HTTP to the TLS port is not served.
                    const plain = await rawSend(h.port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n', 5000);
                    assert.notEqual(plain.closed, null, 'plaintext request: connection left open');
                });
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
    });

// A bare JSON-protocol client over wss://: resolves {ws, messages (every reply and push
// parsed), next(pred) -> the first message matching pred}.
async function wssClient(h, ca, commands) {
    const ws = new WebSocket(h.wsUrl, { ca, maxPayload: 8 << 20 });
    const messages = [];
    const waiters = [];
    ws.on('message', (data) => {
        for (const line of data.toString('utf8').split('\n')) {
            if (!line) continue;
            const m = JSON.parse(line);
            messages.push(m);
            for (const w of [...waiters]) {
                if (w.pred(m)) {
                    waiters.splice(waiters.indexOf(w), 1);
                    w.resolve(m);
                }
            }
        }
    });
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    ws.on('error', () => {}); // a reset of our own making; the tests look at what arrived
    const next = (pred, timeout = 10000) => {
        const seen = messages.find(pred);
        if (seen) return Promise.resolve(seen);
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`timeout waiting for ${pred}`)), timeout);
            waiters.push({ pred, resolve: (m) => { clearTimeout(timer); resolve(m); } });
        });
    };
    ws.send(commands.map((c) => JSON.stringify(c)).join('\n'));
    return { ws, messages, next };
}

test('TLS: a client message of many records; a client that stops reading is disconnected (3008)', T,
    async () => {
        const dir = tempDir();
        try {
            const a = makeCert(dir, 'a');
            await withHerald({ threads: 2, ca: a.pem, args: ['--tls_cert', a.cert, '--tls_key', a.key,
                '--client_publish', 'true', '--max_message_size', String(1 << 20),
                '--client_queue_max', String(256 * 1024)] }, async (h) => {
                const sub = [{ id: 1, connect: { token: h.token('p') } }, { id: 2, subscribe: { channel: 'big' } }];
                const p = await wssClient(h, a.pem, sub);
                const q = await wssClient(h, a.pem, sub);
                await p.next((m) => m.id === 2);
                await q.next((m) => m.id === 2);
                // 200 KB of JSON in one WebSocket message: a dozen TLS records, read by herald
                // into buffers smaller than that (and under client_queue_max going out).
                const big = randomBytes(150 * 1024).toString('base64');
                p.ws.send(JSON.stringify({ id: 3, publish: { channel: 'big', data: { big } } }));
                const reply = await p.next((m) => m.id === 3);
                assert.ok(reply.publish !== undefined, JSON.stringify(reply).slice(0, 300));
                for (const c of [p, q]) {
                    const push = await c.next((m) => m.push && m.push.pub);
                    assert.equal(push.push.pub.data.big, big);
                }
                // q stops reading: the kernel's buffers fill, then herald's queue (encrypted
                // records waiting for the socket included), and it is let go with 3008.
                q.ws._socket.pause();
                const closed = new Promise((resolve) => q.ws.once('close', (code) => resolve(code)));
                const data = JSON.stringify({ p: 'x'.repeat(32 * 1024) });
                for (let i = 0; i < 300; i++) {
                    const r = await h.api('publish', `{"channel":"big","data":${data}}`);
                    assert.equal(r.status, 200, r.text);
                }
                q.ws._socket.resume();
                assert.equal(await Promise.race([closed, sleep(10000).then(() => 'open')]), 3008);
                // p, reading all along, got every one.
                await waitFor('p to read the flood', () => p.messages.filter((m) => m.push).length === 301, 20000);
                p.ws.close();
            });
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
    });

test('TLS: a reader that keeps stalling gets every publication once and in order', T, async () => {
    const dir = tempDir();
    try {
        const a = makeCert(dir, 'a');
        await withHerald({ threads: 2, ca: a.pem, args: ['--tls_cert', a.cert, '--tls_key', a.key,
            '--client_queue_max', String(64 << 20)] }, async (h) => {
            const c = await wssClient(h, a.pem, [{ id: 1, connect: { token: h.token('s') } },
                { id: 2, subscribe: { channel: 'stall' } }]);
            await c.next((m) => m.id === 2);
            // The socket keeps filling: herald holds records it has encrypted and sends
            // them later, reporting the frames written only then (none lost, none twice).
            let stop = false;
            const stalls = (async () => {
                while (!stop) {
                    c.ws._socket.pause();
                    await sleep(150);
                    c.ws._socket.resume();
                    await sleep(30);
                }
            })();
            const pad = 'y'.repeat(40 * 1024);
            for (let i = 0; i < 200; i++) await apiOk(h, 'publish', { channel: 'stall', data: { i, pad } });
            const pushes = () => c.messages.filter((m) => m.push);
            await waitFor('every publication', () => pushes().length >= 200, 30000);
            stop = true;
            await stalls;
            assert.deepEqual(pushes().map((m) => m.push.pub.data.i), Array.from({ length: 200 }, (_, i) => i));
            c.ws.close();
        });
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
});

test('TLS: clients that reset mid-stream do not disturb the others on their loop', T, async () => {
    const dir = tempDir();
    try {
        const a = makeCert(dir, 'a');
        await withHerald({ threads: 1, ca: a.pem, args: ['--tls_cert', a.cert, '--tls_key', a.key] }, async (h) => {
            const sub = [{ id: 1, connect: { token: h.token('r') } }, { id: 2, subscribe: { channel: 'rst' } }];
            const good = [];
            const doomed = [];
            for (let i = 0; i < 10; i++) {
                good.push(await wssClient(h, a.pem, sub));
                doomed.push(await wssClient(h, a.pem, sub));
            }
            await Promise.all([...good, ...doomed].map((c) => c.next((m) => m.id === 2)));
            // Publications keep going out while half of the clients reset their connections
            // (closed with unread data: the kernel sends RST), so that herald's reads and
            // sends on them fail, now and then in the middle of a flush to the others.
            for (const c of doomed) c.ws._socket.pause();
            const pad = 'z'.repeat(8 * 1024);
            for (let i = 0; i < 60; i++) {
                await apiOk(h, 'publish', { channel: 'rst', data: { i, pad } });
                if (i % 6 === 5) doomed[i / 6 | 0].ws._socket.destroy();
            }
            for (const c of good) {
                await waitFor('every publication', () => c.messages.filter((m) => m.push).length >= 60, 10000);
                assert.deepEqual(c.messages.filter((m) => m.push).map((m) => m.push.pub.data.i),
                    Array.from({ length: 60 }, (_, i) => i));
                assert.equal(c.ws.readyState, WebSocket.OPEN);
                c.ws.close();
            }
        });
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
});

test('TLS: garbage and a half ClientHello are closed without harm', T, async () => {
    const dir = tempDir();
    try {
        const a = makeCert(dir, 'a');
        await withHerald({ threads: 2, ca: a.pem,
            args: ['--tls_cert', a.cert, '--tls_key', a.key, '--handshake_timeout', '2'] }, async (h) => {
            // Not TLS at all: closed at once.
            const garbage = await rawSend(h.port, randomBytes(4096), 5000);
            assert.ok(garbage.closed !== null && garbage.closed < 2000, `garbage: ${JSON.stringify(garbage)}`);
            // A record header that announces a ClientHello, then junk inside it.
            const junk = Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0xfc]),
                randomBytes(252)]);
            const bad = await rawSend(h.port, junk, 5000);
            assert.ok(bad.closed !== null && bad.closed < 2000, `bad hello: ${JSON.stringify(bad)}`);
            // Half a real ClientHello, then silence: the handshake timeout (2 s) closes it.
            const hello = await captureClientHello();
            const halves = [];
            for (let i = 0; i < 20; i++) halves.push(rawSend(h.port, hello.subarray(0, hello.length >> 1), 8000));
            const results = await Promise.all(halves);
            for (const r of results) {
                assert.ok(r.closed !== null, 'a half ClientHello was left open past 8 s');
                assert.ok(r.closed >= 1000, `closed after ${r.closed} ms, before the timeout`);
            }
            // herald still serves.
            assert.equal(await peerFingerprint(h.port, a.pem), a.fingerprint);
            const subs = await subscribers(h, 1, 'after', { websocket: tlsWebSocket(a.pem) });
            try {
                const got = once(subs[0].sub, 'publication');
                await apiOk(h, 'publish', { channel: 'after', data: { ok: true } });
                assert.deepEqual((await got).data, { ok: true });
            } finally {
                subs[0].client.disconnect();
            }
        });
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
});

test('TLS: SIGHUP loads a new certificate for new connections; old ones stay; a broken file keeps the current one',
    T, async () => {
        const dir = tempDir();
        try {
            const a = makeCert(dir, 'a');
            const b = makeCert(dir, 'b');
            const cert = path.join(dir, 'served.crt');
            const key = path.join(dir, 'served.key');
            copyFileSync(a.cert, cert);
            copyFileSync(a.key, key);
            const both = [a.pem, b.pem];
            await withHerald({ threads: 2, ca: both, args: ['--tls_cert', cert, '--tls_key', key] }, async (h) => {
                assert.equal(await peerFingerprint(h.port, both), a.fingerprint);
                const subs = await subscribers(h, 3, 'live', { websocket: tlsWebSocket(both) });
                try {
                    copyFileSync(b.cert, cert);
                    copyFileSync(b.key, key);
                    h.child.kill('SIGHUP');
                    await waitFor('the reload in the log', () => /TLS reloaded/.test(h.stderr()));
                    // Every loop swaps on its own thread: new connections, on whichever loop,
                    // soon all see the new certificate.
                    await waitFor('the new certificate', async () => {
                        const fps = await Promise.all(Array.from({ length: 8 }, () => peerFingerprint(h.port, both)));
                        return fps.every((fp) => fp === b.fingerprint);
                    });
                    // Those connected before keep their session and keep receiving.
                    const got = subs.map((s) => once(s.sub, 'publication'));
                    await apiOk(h, 'publish', { channel: 'live', data: { after: 'reload' } });
                    for (const p of await Promise.all(got)) assert.deepEqual(p.data, { after: 'reload' });
                    for (const s of subs) assert.equal(s.client.state, 'connected');

                    // A broken certificate: logged, and the current one stays.
                    writeFileSync(cert, '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n');
                    h.child.kill('SIGHUP');
                    await waitFor('the failed reload in the log', () => /TLS not reloaded.*tls_cert/.test(h.stderr()));
                    for (let i = 0; i < 4; i++) assert.equal(await peerFingerprint(h.port, both), b.fingerprint);
                    // A key that does not match: likewise.
                    copyFileSync(a.cert, cert);
                    copyFileSync(b.key, key);
                    h.child.kill('SIGHUP');
                    await waitFor('the refused pair in the log',
                        () => /TLS not reloaded.*tls_key.*does not match/.test(h.stderr()));
                    for (let i = 0; i < 4; i++) assert.equal(await peerFingerprint(h.port, both), b.fingerprint);
                    const again = subs.map((s) => once(s.sub, 'publication'));
                    await apiOk(h, 'publish', { channel: 'live', data: { still: 'here' } });
                    for (const p of await Promise.all(again)) assert.deepEqual(p.data, { still: 'here' });
                } finally {
                    for (const s of subs) s.client.disconnect();
                }
            });
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
    });

test('TLS misconfigurations refuse to start, naming the key', T, async () => {
    const dir = tempDir();
    try {
        const a = makeCert(dir, 'a');
        const b = makeCert(dir, 'b');
        const junk = path.join(dir, 'junk.pem');
        writeFileSync(junk, 'hello\n');
        const cases = [
            { args: ['--tls_cert', path.join(dir, 'missing.crt'), '--tls_key', a.key], want: /tls_cert: .*missing\.crt: No such file/ },
            { args: ['--tls_cert', a.cert, '--tls_key', path.join(dir, 'missing.key')], want: /tls_key: .*missing\.key: No such file/ },
            { args: ['--tls_cert', junk, '--tls_key', a.key], want: /tls_cert: .*junk\.pem: not a PEM certificate/ },
            { args: ['--tls_cert', a.cert, '--tls_key', junk], want: /tls_key: .*junk\.pem: not an unencrypted PEM private key/ },
            { args: ['--tls_cert', a.cert, '--tls_key', b.key], want: /tls_key: .*b\.key does not match the certificate/ },
            { args: ['--tls_cert', a.cert], want: /tls_key/ },
        ];
        for (const c of cases) {
            const port = 20000 + Math.floor(Math.random() * 30000);
            const res = await runHerald(['--listen', `127.0.0.1:${port}`, '--api_key', 'k', ...c.args],
                { timeout: 8000 });
            assert.equal(res.timedOut, false, `${c.args.join(' ')}: still running\n${res.stderr}`);
            assert.notEqual(res.code, 0, `${c.args.join(' ')}: exit 0`);
            assert.match(res.stderr, c.want, c.args.join(' '));
            assert.doesNotMatch(res.stderr, /herald listening/, c.args.join(' '));
            assert.equal(sanitizerReport(res.stderr), '', c.args.join(' '));
        }
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
});
