// The HTTP side: health, routing errors, API authentication, limits, keep-alive and pipelining.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { httpRequest, withHerald } from './lib/herald.mjs';
import { RawConn, rawHttp } from './lib/raw.mjs';

const T = { timeout: 30000 };

function get(path, host) {
    return `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
}

function post(path, host, body, headers = {}) {
    let req = `POST ${path} HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\n`
        + `Content-Length: ${Buffer.byteLength(body)}\r\n`;
    for (const [k, v] of Object.entries(headers)) req += `${k}: ${v}\r\n`;
    return `${req}\r\n${body}`;
}

test('GET /health answers 200 {"status":"ok"}', T, async () => {
    await withHerald({}, async (h) => {
        const r = await httpRequest(h.port, 'GET', '/health');
        assert.equal(r.status, 200);
        assert.deepEqual(r.json, { status: 'ok' });
        assert.match(r.headers['content-type'] || '', /json/);
    });
});

test('GET / serves the demo HTML page', T, async () => {
    await withHerald({}, async (h) => {
        const r = await httpRequest(h.port, 'GET', '/');
        assert.equal(r.status, 200);
        assert.match(r.headers['content-type'] || '', /text\/html/);
        assert.match(r.text, /<html/i);
    });
});

test('unknown path answers 404', T, async () => {
    await withHerald({}, async (h) => {
        const r = await httpRequest(h.port, 'GET', '/no/such/thing');
        assert.equal(r.status, 404);
    });
});

test('GET on an API method answers 405', T, async () => {
    await withHerald({}, async (h) => {
        const r = await httpRequest(h.port, 'GET', '/api/publish', {
            headers: { Authorization: `apikey ${h.apiKey}` },
        });
        assert.equal(r.status, 405);
    });
});

test('API without a key or with a wrong key answers 401; X-API-Key works too', T, async () => {
    await withHerald({}, async (h) => {
        const body = { channel: 'c', data: {} };
        assert.equal((await h.api('publish', body, { key: null })).status, 401, 'no key');
        assert.equal((await h.api('publish', body, { key: 'wrong-key' })).status, 401, 'wrong key');
        assert.equal((await h.api('publish', body, { key: `${h.apiKey}x` })).status, 401, 'key with a suffix');
        assert.equal((await h.api('publish', body, { key: h.apiKey.slice(0, -1) })).status, 401, 'key prefix');
        const ok = await h.api('publish', body, { key: null, headers: { 'X-API-Key': h.apiKey } });
        assert.equal(ok.status, 200, ok.text);
        assert.ok(ok.json.result, ok.text);
        const ok2 = await h.api('publish', body);
        assert.equal(ok2.status, 200, ok2.text);
        assert.ok(ok2.json.result, ok2.text);
    });
});

test('request body over --max_request_body answers 413', T, async () => {
    await withHerald({ args: ['--max_request_body', '1024'] }, async (h) => {
        const big = JSON.stringify({ channel: 'c', data: 'x'.repeat(4096) });
        const r = await rawHttp(h.port, post('/api/publish', `127.0.0.1:${h.port}`, big,
            { Authorization: `apikey ${h.apiKey}` }));
        assert.ok(r, 'no response');
        assert.equal(r.status, 413, r.raw);
        const small = await h.api('publish', { channel: 'c', data: 'x'.repeat(500) });
        assert.equal(small.status, 200, small.text);
    });
});

test('head over 16 KB or with more than 64 headers answers 431', T, async () => {
    await withHerald({}, async (h) => {
        const host = `127.0.0.1:${h.port}`;
        const big = await rawHttp(h.port, `GET /health HTTP/1.1\r\nHost: ${host}\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`);
        assert.ok(big, 'no response to a 20 KB header');
        assert.equal(big.status, 431, big.raw);
        let many = `GET /health HTTP/1.1\r\nHost: ${host}\r\n`;
        for (let i = 0; i < 80; i++) many += `X-H${i}: v\r\n`;
        const r = await rawHttp(h.port, `${many}\r\n`);
        assert.ok(r, 'no response to 81 headers');
        assert.equal(r.status, 431, r.raw);
    });
});

test('malformed request line or header answers 400', T, async () => {
    await withHerald({}, async (h) => {
        for (const [what, req] of [
            ['garbage request line', 'GARBAGE\r\n\r\n'],
            ['missing version', 'GET /health\r\n\r\n'],
            ['unknown version', 'GET /health HTTP/7.3\r\nHost: x\r\n\r\n'],
            ['header without colon', 'GET /health HTTP/1.1\r\nHost x\r\n\r\n'],
            ['bad content-length', 'POST /api/info HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n'],
        ]) {
            const r = await rawHttp(h.port, req);
            assert.ok(r, `${what}: no response`);
            assert.ok(r.status === 400 || (what === 'unknown version' && r.status === 505),
                `${what}: ${r.raw}`);
        }
        const ok = await httpRequest(h.port, 'GET', '/health');
        assert.equal(ok.status, 200, 'server still serves after bad requests');
    });
});

test('keep-alive: two requests on one connection', T, async () => {
    await withHerald({}, async (h) => {
        const host = `127.0.0.1:${h.port}`;
        const conn = await RawConn.connect(h.port);
        try {
            conn.write(get('/health', host));
            const a = await conn.readResponse();
            assert.equal(a.status, 200);
            assert.deepEqual(a.json, { status: 'ok' });
            conn.write(post('/api/info', host, '{}', { Authorization: `apikey ${h.apiKey}` }));
            const b = await conn.readResponse();
            assert.equal(b.status, 200, b.raw);
            assert.ok(b.json.result.nodes, b.text);
        } finally {
            conn.destroy();
        }
    });
});

test('an absolute-form request target is served as its path (RFC 9112 section 3.2.2)', T, async () => {
    await withHerald({}, async (h) => {
        const host = `127.0.0.1:${h.port}`;
        const conn = await RawConn.connect(h.port);
        try {
            conn.write(`GET http://${host}/health HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
            const a = await conn.readResponse();
            assert.equal(a.status, 200, a.raw);
            assert.deepEqual(a.json, { status: 'ok' });
            conn.write(post(`HTTP://${host}/api/info`, host, '{}', { 'X-API-Key': h.apiKey }));
            const b = await conn.readResponse();
            assert.equal(b.status, 200, b.raw);
            assert.ok(b.json.result.nodes, b.text);
        } finally {
            conn.destroy();
        }
    });
});

test('pipelined requests are answered in order', T, async () => {
    await withHerald({}, async (h) => {
        const host = `127.0.0.1:${h.port}`;
        const conn = await RawConn.connect(h.port);
        try {
            conn.write(get('/health', host)
                + post('/api/info', host, '{}', { 'X-API-Key': h.apiKey })
                + post('/api/publish', host, '{"channel":"p","data":1}', { 'X-API-Key': h.apiKey })
                + get('/no-such-page', host));
            const r1 = await conn.readResponse();
            const r2 = await conn.readResponse();
            const r3 = await conn.readResponse();
            const r4 = await conn.readResponse();
            assert.equal(r1.status, 200);
            assert.deepEqual(r1.json, { status: 'ok' });
            assert.equal(r2.status, 200);
            assert.ok(r2.json.result.nodes, r2.text);
            assert.equal(r3.status, 200);
            assert.deepEqual(r3.json, { result: {} });
            assert.equal(r4.status, 404);
        } finally {
            conn.destroy();
        }
    });
});

test('a request that closes, its body in two parts, is answered; nothing after it is', T, async () => {
    await withHerald({}, async (h) => {
        const conn = await RawConn.connect(h.port);
        try {
            const body = JSON.stringify({ channel: 'parts', data: { p: 'x'.repeat(4000) } });
            const head = `POST /api/publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\n`
                + `X-API-Key: ${h.apiKey}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`;
            conn.write(head + body.slice(0, 1000));
            await new Promise((resolve) => setTimeout(resolve, 100));
            conn.write(body.slice(1000) + get('/health', 'x'));
            const r = await conn.readResponse();
            assert.equal(r.status, 200, r.raw);
            assert.deepEqual(r.json, { result: {} });
            await conn.waitEof(3000);
        } finally {
            conn.destroy();
        }
    });
});

test('Connection: close is honoured', T, async () => {
    await withHerald({}, async (h) => {
        const conn = await RawConn.connect(h.port);
        try {
            conn.write(`GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
            const r = await conn.readResponse();
            assert.equal(r.status, 200);
            await conn.waitEof(3000);
        } finally {
            conn.destroy();
        }
    });
});

test('invalid JSON body answers error 107', T, async () => {
    await withHerald({}, async (h) => {
        for (const body of ['{"channel":', 'not json', '', '{"channel":"c","data":}', '[1,2]']) {
            const r = await h.api('publish', body);
            assert.ok(r.status === 200 || r.status === 400, `${JSON.stringify(body)}: HTTP ${r.status}`);
            assert.ok(r.json && r.json.error, `${JSON.stringify(body)}: ${r.text}`);
            assert.equal(r.json.error.code, 107, `${JSON.stringify(body)}: ${r.text}`);
        }
        const missing = await h.api('publish', { data: 1 });
        assert.ok(missing.json && missing.json.error, `publish without channel: ${missing.text}`);
    });
});

test('unknown API method answers 404 or error 104', T, async () => {
    await withHerald({}, async (h) => {
        const r = await h.api('frobnicate', {});
        assert.ok(r.status === 404 || (r.json && r.json.error && r.json.error.code === 104),
            `HTTP ${r.status} ${r.text}`);
    });
});
