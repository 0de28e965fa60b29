// Configuration: file, flags and HERALD_* environment; refusal of unknown keys and bad values;
// the genconfig and gentoken subcommands.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { freePort, runHerald, withHerald } from './lib/herald.mjs';
import { ProtoClient } from './lib/proto.mjs';
import { nowSeconds } from './lib/jwt.mjs';

const T = { timeout: 30000 };

function tempDir() {
    return mkdtempSync(path.join(os.tmpdir(), 'herald-e2e-cfg-'));
}

// Runs herald with the given config file text; it must exit non-zero by itself.
async function expectRefused(configText, extraArgs = [], env = {}) {
    const dir = tempDir();
    try {
        const file = path.join(dir, 'herald.json');
        writeFileSync(file, configText);
        const port = await freePort();
        const r = await runHerald(['--config', file, '--listen', `127.0.0.1:${port}`, ...extraArgs],
            { cwd: dir, env, timeout: 5000 });
        assert.ok(!r.timedOut, `herald kept running with config ${configText}; stderr:\n${r.stderr}`);
        assert.notEqual(r.code, 0, `exit status 0 for config ${configText}`);
        assert.equal(r.signal, null, `killed by ${r.signal}: ${r.stderr}`);
        return r;
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
}

function jwtPayload(token) {
    return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

const JWT_RE = /[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/;

test('unknown key in the config file: exit status non-zero and stderr names the key', T, async () => {
    const r = await expectRefused(JSON.stringify({ api_key: 'k', token_hmac_secret: 's', frobnicate_level: 3 }));
    assert.match(r.stderr, /frobnicate_level/, r.stderr);
});

test('bad value in the config file: exit status non-zero and stderr names the key', T, async () => {
    for (const [key, value] of [['threads', 'many'], ['max_message_size', -5], ['allowed_origins', 'http://x'],
        ['ping_interval', { a: 1 }]]) {
        const r = await expectRefused(JSON.stringify({ api_key: 'k', token_hmac_secret: 's', [key]: value }));
        assert.match(r.stderr, new RegExp(key), `${key}=${JSON.stringify(value)}: ${r.stderr}`);
    }
});

test('malformed config file and unknown flag are refused', T, async () => {
    await expectRefused('{"api_key": "k",');
    const r = await expectRefused(JSON.stringify({ api_key: 'k', token_hmac_secret: 's' }), ['--frobnicate', '1']);
    assert.match(r.stderr, /frobnicate/, r.stderr);
});

test('HERALD_API_KEY in the environment sets the API key', T, async () => {
    await withHerald({ apiKey: null, env: { HERALD_API_KEY: 'key-from-env' } }, async (h) => {
        const ok = await h.api('info', {}, { key: 'key-from-env' });
        assert.equal(ok.status, 200, ok.text);
        assert.ok(ok.json.result, ok.text);
        const bad = await h.api('info', {}, { key: 'e2e-api-key' });
        assert.equal(bad.status, 401);
    });
});

test('HERALD_* environment overrides the config file', T, async () => {
    await withHerald({
        config: { api_key: 'key-from-file', token_hmac_secret: 'secret-from-file' },
        env: { HERALD_API_KEY: 'key-from-env' },
    }, async (h) => {
        assert.equal((await h.api('info', {}, { key: 'key-from-env' })).status, 200);
        assert.equal((await h.api('info', {}, { key: 'key-from-file' })).status, 401);
    });
});

test('genconfig prints a config with fresh secrets that herald loads', T, async () => {
    const a = await runHerald(['genconfig']);
    const b = await runHerald(['genconfig']);
    assert.equal(a.code, 0, a.stderr);
    const cfg = JSON.parse(a.stdout);
    const cfg2 = JSON.parse(b.stdout);
    assert.ok(typeof cfg.token_hmac_secret === 'string' && cfg.token_hmac_secret.length >= 32,
        `token_hmac_secret: ${a.stdout}`);
    assert.ok(typeof cfg.api_key === 'string' && cfg.api_key.length >= 16, `api_key: ${a.stdout}`);
    assert.notEqual(cfg.token_hmac_secret, cfg2.token_hmac_secret, 'secrets differ between runs');
    assert.notEqual(cfg.api_key, cfg2.api_key, 'API keys differ between runs');
    await withHerald({ configText: a.stdout }, async (h) => {
        assert.equal(h.apiKey, cfg.api_key);
        const r = await h.api('info', {});
        assert.equal(r.status, 200, r.text);
        const c = await ProtoClient.open(h.wsUrl);
        try {
            const rep = await c.connect(h.token('gen-user'));
            assert.ok(rep.connect, JSON.stringify(rep));
        } finally {
            c.close();
        }
    });
});

test('gentoken prints a token that connects as that user', T, async () => {
    const gen = await runHerald(['genconfig']);
    assert.equal(gen.code, 0, gen.stderr);
    const dir = tempDir();
    try {
        const file = path.join(dir, 'herald.json');
        writeFileSync(file, gen.stdout);
        const t = await runHerald(['gentoken', '--config', file, '--user', 'u42', '--ttl', '120']);
        assert.equal(t.code, 0, t.stderr);
        const m = JWT_RE.exec(t.stdout);
        assert.ok(m, `no token in: ${t.stdout}`);
        const claims = jwtPayload(m[0]);
        assert.equal(claims.sub, 'u42');
        assert.ok(Math.abs(claims.exp - (nowSeconds() + 120)) <= 5, `exp ${claims.exp}`);
        await withHerald({ configText: gen.stdout }, async (h) => {
            const c = await ProtoClient.open(h.wsUrl);
            try {
                const rep = await c.connect(m[0]);
                assert.ok(rep.connect && rep.connect.client, JSON.stringify(rep));
            } finally {
                c.close();
            }
        });
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
});
