// A TCP proxy the test controls (node:net): it forwards every connection to herald and can cut
// all current connections abruptly (RST where the platform allows), so a client sees a network
// failure rather than a WebSocket close. Also the helpers shared by the recovery, history,
// presence, access and tokens tests.
import net from 'node:net';
import { after, before } from 'node:test';
import { sanitizerReport, start } from './herald.mjs';
import { sign, nowSeconds } from './jwt.mjs';

export class TcpProxy {
    // start(targetPort) -> TcpProxy listening on 127.0.0.1:<free port>.
    static start(targetPort, targetHost = '127.0.0.1') {
        return new Promise((resolve, reject) => {
            const p = new TcpProxy(targetPort, targetHost);
            p.server.once('error', reject);
            p.server.listen(0, '127.0.0.1', () => {
                p.server.off('error', reject);
                p.port = p.server.address().port;
                resolve(p);
            });
        });
    }

    constructor(targetPort, targetHost) {
        this.targetPort = targetPort;
        this.targetHost = targetHost;
        this.pairs = new Set();
        this.accepted = 0;
        this.cuts = 0;
        this.refused = 0;
        this.blocked = false; // true: new connections are dropped at once (the server looks down)
        this.server = net.createServer((client) => this.onClient(client));
    }

    onClient(client) {
        if (this.blocked) {
            this.refused++;
            client.on('error', () => {});
            client.destroy();
            return;
        }
        this.accepted++;
        const upstream = net.connect({ port: this.targetPort, host: this.targetHost });
        const pair = { client, upstream };
        this.pairs.add(pair);
        client.setNoDelay(true);
        upstream.setNoDelay(true);
        client.pipe(upstream);
        upstream.pipe(client);
        const drop = () => {
            if (!this.pairs.delete(pair)) return;
            client.destroy();
            upstream.destroy();
        };
        client.on('error', drop);
        upstream.on('error', drop);
        client.on('close', drop);
        upstream.on('close', drop);
    }

    wsUrl() {
        return `ws://127.0.0.1:${this.port}/connection/websocket`;
    }

    // Connections being forwarded now.
    get active() {
        return this.pairs.size;
    }

    // Cuts every current connection on both sides at once: no close frame, no FIN if RST works.
    cutAll() {
        this.cuts++;
        const n = this.pairs.size;
        for (const pair of [...this.pairs]) {
            this.pairs.delete(pair);
            for (const s of [pair.client, pair.upstream]) {
                if (typeof s.resetAndDestroy === 'function') {
                    try { s.resetAndDestroy(); continue; } catch { /* fall back */ }
                }
                s.destroy();
            }
        }
        return n;
    }

    close() {
        this.cutAll();
        return new Promise((resolve) => this.server.close(() => resolve()));
    }
}

// POST /api/<method> with an explicit Content-Length (h.api from herald.mjs sends a chunked body,
// which herald answers with 411). -> {status, json, text}
export function api(h, method, body) {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    return h.api(method, text, { headers: { 'Content-Length': String(Buffer.byteLength(text)) } });
}

// The API result object; throws with the reply when it is not HTTP 200 {"result":...}.
export async function apiResult(h, method, body) {
    const r = await api(h, method, body);
    if (r.status !== 200 || !r.json || !('result' in r.json)) {
        throw new Error(`/api/${method} ${JSON.stringify(body).slice(0, 200)} -> ${r.status} ${r.text}`);
    }
    return r.json.result;
}

// A subscription token (HS256): sub = user, channel, exp = now + ttl (none when ttl is null).
export function subToken(h, user, channel, { ttl = 3600, extra = {}, secret = null } = {}) {
    const claims = { sub: user, channel, ...extra };
    if (ttl !== null) claims.exp = nowSeconds() + ttl;
    return sign(claims, secret ?? h.secret);
}

export function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

// Polls cond() every 20 ms until truthy; rejects after timeout with what() in the message.
export async function waitFor(cond, timeout = 5000, what = () => 'condition') {
    const deadline = Date.now() + timeout;
    for (;;) {
        const v = await cond();
        if (v) return v;
        if (Date.now() > deadline) {
            throw new Error(`timeout waiting for ${typeof what === 'function' ? what() : what}`);
        }
        await sleep(20);
    }
}

// A subscription's 'error' or 'subscribed' event, whichever comes first (for refused subscribes).
export function subscribeOutcome(sub, timeout = 5000) {
    return new Promise((resolve, reject) => {
        const t = setTimeout(() => { cleanup(); reject(new Error(`no outcome for ${sub.channel}`)); }, timeout);
        const onErr = (ctx) => { cleanup(); resolve({ error: ctx }); };
        const onSub = (ctx) => { cleanup(); resolve({ subscribed: ctx }); };
        const onUnsub = (ctx) => { cleanup(); resolve({ unsubscribed: ctx }); };
        function cleanup() {
            clearTimeout(t);
            sub.removeListener('error', onErr);
            sub.removeListener('subscribed', onSub);
            sub.removeListener('unsubscribed', onUnsub);
        }
        sub.on('error', onErr);
        sub.on('subscribed', onSub);
        sub.on('unsubscribed', onUnsub);
    });
}

/**
 * One herald for every test of a file (herald.mjs's withHerald starts one per test): started in
 * before(), stopped in after(), where a sanitizer report in its stderr fails the file.
 * -> run(fn): calls fn(h); a failure's message gets the tail of herald's stderr.
 */
export function sharedHerald(opts) {
    let h = null;
    before(async () => { h = await start(opts); });
    after(async () => {
        if (!h) return;
        await h.stop('SIGTERM', 2000);
        const report = sanitizerReport(h.stderr());
        if (report) throw new Error(`sanitizer report in herald's stderr:\n${report}`);
    });
    return async (fn) => {
        try {
            return await fn(h);
        } catch (err) {
            if (err && typeof err === 'object') {
                const tail = h.stderr().slice(-2000);
                try { err.message = `${err.message}\n--- herald stderr (tail) ---\n${tail}`; } catch { /* frozen */ }
            }
            throw err;
        }
    };
}
