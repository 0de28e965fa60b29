// Raw TCP for the RFC 6455 and HTTP cases: hand-built (masked) frames, handshake requests,
// and a reader for server frames and HTTP responses. No WebSocket library in the way.
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';

export const OP = { CONT: 0, TEXT: 1, BINARY: 2, CLOSE: 8, PING: 9, PONG: 10 };
export const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export function acceptFor(key) {
    return createHash('sha1').update(key + WS_GUID).digest('base64');
}

// One frame as a client sends it (RFC 6455 5.2): masked unless masked:false.
export function frame({ opcode, payload = Buffer.alloc(0), fin = true, rsv = 0, masked = true,
    maskKey = null } = {}) {
    const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
    const len = data.length;
    let head;
    if (len < 126) {
        head = Buffer.alloc(2);
        head[1] = len;
    } else if (len < 65536) {
        head = Buffer.alloc(4);
        head[1] = 126;
        head.writeUInt16BE(len, 2);
    } else {
        head = Buffer.alloc(10);
        head[1] = 127;
        head.writeBigUInt64BE(BigInt(len), 2);
    }
    head[0] = (fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0x0f);
    if (!masked) return Buffer.concat([head, data]);
    head[1] |= 0x80;
    const key = maskKey || randomBytes(4);
    const body = Buffer.alloc(len);
    for (let i = 0; i < len; i++) body[i] = data[i] ^ key[i & 3];
    return Buffer.concat([head, key, body]);
}

export function closePayload(code, reason = '') {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(code, 0);
    return Buffer.concat([b, Buffer.from(reason)]);
}

// A TCP connection with a byte buffer that readers take from.
export class RawConn {
    static connect(port, host = '127.0.0.1') {
        return new Promise((resolve, reject) => {
            const sock = net.connect({ port, host }, () => {
                sock.off('error', reject);
                resolve(new RawConn(sock));
            });
            sock.once('error', reject);
        });
    }

    constructor(sock) {
        this.sock = sock;
        this.buf = Buffer.alloc(0);
        this.eof = false;
        this.error = null;
        this.waiters = [];
        sock.setNoDelay(true);
        sock.on('data', (c) => { this.buf = Buffer.concat([this.buf, c]); this.wake(); });
        sock.on('end', () => { this.eof = true; this.wake(); });
        sock.on('close', () => { this.eof = true; this.wake(); });
        // Writes after the server closed (EPIPE, ECONNRESET) are expected in these tests.
        sock.on('error', (err) => { this.error = err; this.eof = true; this.wake(); });
    }

    wake() {
        const w = this.waiters;
        this.waiters = [];
        for (const f of w) f();
    }

    write(data) {
        if (this.sock.destroyed) return false;
        try {
            return this.sock.write(data);
        } catch {
            return false;
        }
    }

    end() {
        this.sock.end();
    }

    destroy() {
        this.sock.destroy();
    }

    // Waits until parse(buf) returns a non-undefined value: {value, used} or null at EOF.
    async take(parse, timeout, what) {
        const deadline = Date.now() + timeout;
        for (;;) {
            const r = parse(this.buf);
            if (r !== undefined) {
                this.buf = this.buf.subarray(r.used);
                return r.value;
            }
            if (this.eof) return null;
            const left = deadline - Date.now();
            if (left <= 0) throw new Error(`timeout waiting for ${what} (${this.buf.length} bytes buffered)`);
            await new Promise((resolve) => {
                const t = setTimeout(resolve, left);
                this.waiters.push(() => { clearTimeout(t); resolve(); });
            });
        }
    }

    // HTTP response head: {status, reason, headers (lower-case names; repeated joined by ', '),
    // raw}. null when the connection ended first.
    readHead(timeout = 5000) {
        return this.take((b) => {
            const end = b.indexOf('\r\n\r\n');
            if (end < 0) return undefined;
            const raw = b.subarray(0, end).toString('latin1');
            const lines = raw.split('\r\n');
            const m = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(lines[0]);
            if (!m) throw new Error(`bad status line: ${JSON.stringify(lines[0])}`);
            const headers = {};
            for (const line of lines.slice(1)) {
                const i = line.indexOf(':');
                const k = line.slice(0, i).trim().toLowerCase();
                const v = line.slice(i + 1).trim();
                headers[k] = k in headers ? `${headers[k]}, ${v}` : v;
            }
            return { value: { status: Number(m[1]), reason: m[2], headers, raw }, used: end + 4 };
        }, timeout, 'HTTP response head');
    }

    // A full HTTP response (Content-Length or chunked body; else read to EOF).
    async readResponse(timeout = 5000) {
        const head = await this.readHead(timeout);
        if (!head) return null;
        const te = (head.headers['transfer-encoding'] || '').toLowerCase();
        let body;
        if ('content-length' in head.headers) {
            const n = Number(head.headers['content-length']);
            body = await this.take((b) => (b.length >= n ? { value: b.subarray(0, n), used: n } : undefined),
                timeout, 'HTTP body');
            if (body === null) throw new Error('connection ended inside the body');
        } else if (te.includes('chunked')) {
            const parts = [];
            for (;;) {
                const size = await this.take((b) => {
                    const e = b.indexOf('\r\n');
                    if (e < 0) return undefined;
                    return { value: parseInt(b.subarray(0, e).toString(), 16), used: e + 2 };
                }, timeout, 'chunk size');
                if (size === null) throw new Error('connection ended inside chunked body');
                const chunk = await this.take((b) => (b.length >= size + 2
                    ? { value: b.subarray(0, size), used: size + 2 } : undefined), timeout, 'chunk');
                if (size === 0) break;
                parts.push(chunk);
            }
            body = Buffer.concat(parts);
        } else if (head.status === 101 || head.status === 204 || head.status === 304) {
            body = Buffer.alloc(0);
        } else {
            await this.waitEof(timeout);
            body = this.buf;
            this.buf = Buffer.alloc(0);
        }
        const text = body.toString('utf8');
        let json = null;
        try { json = JSON.parse(text); } catch { /* not JSON */ }
        return { ...head, body, text, json };
    }

    // One server frame {fin, rsv, opcode, payload, masked}; null at EOF.
    readFrame(timeout = 5000) {
        return this.take((b) => {
            if (b.length < 2) return undefined;
            let len = b[1] & 0x7f;
            let off = 2;
            if (len === 126) {
                if (b.length < 4) return undefined;
                len = b.readUInt16BE(2);
                off = 4;
            } else if (len === 127) {
                if (b.length < 10) return undefined;
                len = Number(b.readBigUInt64BE(2));
                off = 10;
            }
            const masked = (b[1] & 0x80) !== 0;
            let key = null;
            if (masked) {
                if (b.length < off + 4) return undefined;
                key = b.subarray(off, off + 4);
                off += 4;
            }
            if (b.length < off + len) return undefined;
            let payload = Buffer.from(b.subarray(off, off + len));
            if (masked) payload = payload.map((x, i) => x ^ key[i & 3]);
            return {
                value: {
                    fin: (b[0] & 0x80) !== 0, rsv: (b[0] >> 4) & 7, opcode: b[0] & 0x0f, payload, masked,
                },
                used: off + len,
            };
        }, timeout, 'WebSocket frame');
    }

    // Reads frames until a close frame: {code, reason, frames (those before it)}; {code:null,
    // eof:true} when the TCP connection ended without one.
    async readClose(timeout = 5000) {
        const frames = [];
        const deadline = Date.now() + timeout;
        for (;;) {
            const f = await this.readFrame(Math.max(1, deadline - Date.now()));
            if (f === null) return { code: null, eof: true, frames };
            if (f.opcode === OP.CLOSE) {
                const code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null;
                return { code, reason: f.payload.subarray(2).toString('utf8'), frames, frame: f };
            }
            frames.push(f);
        }
    }

    async waitEof(timeout = 5000) {
        await this.take(() => (this.eof ? { value: true, used: 0 } : undefined), timeout, 'EOF');
    }

    sendFrame(opts) {
        return this.write(frame(opts));
    }

    sendText(text, opts = {}) {
        return this.sendFrame({ opcode: OP.TEXT, payload: Buffer.from(text), ...opts });
    }
}

export function handshakeRequest({ port, path = '/connection/websocket', key = randomBytes(16).toString('base64'),
    version = '13', headers = {}, omit = [] }) {
    const h = {
        Host: `127.0.0.1:${port}`,
        Upgrade: 'websocket',
        Connection: 'Upgrade',
        'Sec-WebSocket-Key': key,
        'Sec-WebSocket-Version': version,
        ...headers,
    };
    for (const k of omit) delete h[k];
    let req = `GET ${path} HTTP/1.1\r\n`;
    for (const [k, v] of Object.entries(h)) req += `${k}: ${v}\r\n`;
    return { text: `${req}\r\n`, key };
}

// Opens a TCP connection and sends a WebSocket handshake. -> {conn, head, key}; head.status is
// 101 on success (then conn reads frames).
export async function wsHandshake(port, opts = {}) {
    const conn = await RawConn.connect(port);
    const { text, key } = handshakeRequest({ port, ...opts });
    conn.write(text);
    const head = await conn.readHead(opts.timeout ?? 5000);
    if (head === null) {
        conn.destroy();
        throw new Error('connection closed before a handshake response');
    }
    return { conn, head, key };
}

// A WebSocket that completed its handshake (asserted) — for frame-level tests.
export async function wsOpen(port, opts = {}) {
    const r = await wsHandshake(port, opts);
    if (r.head.status !== 101) {
        r.conn.destroy();
        throw new Error(`handshake refused: ${r.head.status} ${r.head.reason}`);
    }
    return r.conn;
}

// Sends bytes on a fresh TCP connection and reads one HTTP response.
export async function rawHttp(port, data, timeout = 5000) {
    const conn = await RawConn.connect(port);
    try {
        conn.write(data);
        return await conn.readResponse(timeout);
    } finally {
        conn.destroy();
    }
}
