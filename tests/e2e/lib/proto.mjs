// A bare client of herald's JSON protocol over the `ws` package: it keeps every frame as the
// server sent it (raw text), so tests can compare bytes; centrifuge-js would re-parse them.
import WebSocket from 'ws';

// The exact text of the JSON value at path (object keys) inside text, or undefined.
// rawValueAt('{"a":{"b": [1, 2] }}', ['a', 'b']) === '[1, 2]'
export function rawValueAt(text, keys) {
    let i = 0;
    const n = text.length;
    const ws = () => { while (i < n && ' \t\r\n'.includes(text[i])) i++; };
    const skipString = () => {
        i++;
        while (i < n) {
            const c = text[i];
            if (c === '\\') i += 2;
            else if (c === '"') { i++; return; } else i++;
        }
        throw new Error('unterminated string');
    };
    const skipValue = () => {
        ws();
        const c = text[i];
        if (c === '"') { skipString(); return; }
        if (c === '{' || c === '[') {
            let depth = 0;
            while (i < n) {
                const d = text[i];
                if (d === '"') { skipString(); continue; }
                if (d === '{' || d === '[') depth++;
                else if (d === '}' || d === ']') {
                    depth--;
                    if (depth === 0) { i++; return; }
                }
                i++;
            }
            throw new Error('unterminated container');
        }
        while (i < n && !',}] \t\r\n'.includes(text[i])) i++;
    };
    const find = (depth) => {
        ws();
        if (depth === keys.length) {
            const s = i;
            skipValue();
            return text.slice(s, i);
        }
        if (text[i] !== '{') return undefined;
        i++;
        for (;;) {
            ws();
            if (text[i] !== '"') return undefined;
            const s = i;
            skipString();
            const key = JSON.parse(text.slice(s, i));
            ws();
            if (text[i] !== ':') return undefined;
            i++;
            if (key === keys[depth]) return find(depth + 1);
            skipValue();
            ws();
            if (text[i] !== ',') return undefined;
            i++;
        }
    };
    return find(0);
}

export class ProtoClient {
    // Opens a WebSocket to url; wsOptions go to `ws` (headers, origin, ...).
    static open(url, { wsOptions = {}, autoPong = true, timeout = 5000 } = {}) {
        return new Promise((resolve, reject) => {
            const sock = new WebSocket(url, { handshakeTimeout: timeout, ...wsOptions });
            const client = new ProtoClient(sock, autoPong);
            sock.once('open', () => resolve(client));
            sock.once('error', reject);
            sock.once('unexpected-response', (req, res) => {
                reject(new Error(`handshake refused: HTTP ${res.statusCode}`));
            });
        });
    }

    constructor(sock, autoPong) {
        this.sock = sock;
        this.autoPong = autoPong;
        this.nextId = 0;
        this.frames = []; // raw text of every frame received
        this.lines = []; // {raw, msg} for every JSON object received, in order
        this.pings = 0;
        this.watchers = new Set();
        this.closeInfo = null;
        this.closed = new Promise((resolve) => {
            sock.on('close', (code, reason) => {
                this.closeInfo = { code, reason: reason.toString('utf8') };
                this.notify();
                resolve(this.closeInfo);
            });
        });
        sock.on('error', () => { /* reported through close */ });
        sock.on('message', (data, isBinary) => {
            const text = Buffer.isBuffer(data) ? data.toString('utf8') : Buffer.from(data).toString('utf8');
            this.frames.push({ text, isBinary });
            for (const raw of text.split('\n')) {
                if (raw.trim() === '') continue;
                let msg;
                try { msg = JSON.parse(raw); } catch { msg = { unparsable: raw }; }
                if (raw.trim() === '{}') {
                    this.pings++;
                    if (this.autoPong) this.send('{}');
                }
                this.lines.push({ raw, msg });
            }
            this.notify();
        });
    }

    notify() {
        for (const w of [...this.watchers]) w();
    }

    send(data) {
        if (this.sock.readyState === WebSocket.OPEN) {
            this.sock.send(typeof data === 'string' ? data : JSON.stringify(data));
        }
    }

    // Resolves with cond()'s first truthy value; rejects after timeout or if the socket closed
    // before cond held.
    waitUntil(cond, timeout = 5000, what = 'condition') {
        return new Promise((resolve, reject) => {
            let timer = null;
            const check = () => {
                let v;
                try { v = cond(); } catch (err) { done(); reject(err); return; }
                if (v) { done(); resolve(v); return; }
                if (this.closeInfo) {
                    done();
                    reject(new Error(`connection closed (${this.closeInfo.code} ${this.closeInfo.reason}) `
                        + `while waiting for ${what}; received: ${this.frames.map((f) => f.text).join(' | ').slice(0, 2000)}`));
                }
            };
            const done = () => { clearTimeout(timer); this.watchers.delete(check); };
            timer = setTimeout(() => {
                done();
                reject(new Error(`timeout waiting for ${what}; received: `
                    + `${this.frames.map((f) => f.text).join(' | ').slice(0, 2000)}`));
            }, timeout);
            this.watchers.add(check);
            check();
        });
    }

    // Sends {id, [method]: params}; resolves with the reply object ({id, <method>|error}).
    command(method, params = {}, timeout = 5000) {
        const id = ++this.nextId;
        this.send({ id, [method]: params });
        return this.reply(id, timeout);
    }

    reply(id, timeout = 5000) {
        return this.waitUntil(() => this.lines.find((l) => l.msg.id === id)?.msg, timeout, `reply ${id}`);
    }

    async connect(token, extra = {}) {
        const params = { ...extra };
        if (token) params.token = token;
        return this.command('connect', params);
    }

    // Connects and subscribes; throws on an error reply.
    async connectAndSubscribe(token, channels = []) {
        const c = await this.connect(token);
        if (!c.connect) throw new Error(`connect failed: ${JSON.stringify(c)}`);
        for (const ch of channels) {
            const r = await this.command('subscribe', { channel: ch });
            if (!r.subscribe) throw new Error(`subscribe ${ch} failed: ${JSON.stringify(r)}`);
        }
        return c;
    }

    // Publication pushes received so far: [{channel, raw (line text), data (raw JSON text), pub}]
    publications(channel = null) {
        const out = [];
        for (const l of this.lines) {
            const push = l.msg.push;
            if (!push || !push.pub) continue;
            if (channel !== null && push.channel !== channel) continue;
            out.push({ channel: push.channel, raw: l.raw, data: rawValueAt(l.raw, ['push', 'pub', 'data']), pub: push.pub });
        }
        return out;
    }

    // Fails at once when the server sent a line that is not JSON.
    waitPublications(count, channel = null, timeout = 5000) {
        return this.waitUntil(() => {
            const bad = this.lines.find((l) => l.msg.unparsable !== undefined);
            if (bad) throw new Error(`server sent a line that is not JSON: ${bad.raw}`);
            const p = this.publications(channel);
            return p.length >= count ? p : null;
        }, timeout, `${count} publications${channel ? ` on ${channel}` : ''}`);
    }

    close(code = 1000) {
        try { this.sock.close(code); } catch { /* already closing */ }
    }

    terminate() {
        this.sock.terminate();
    }
}
