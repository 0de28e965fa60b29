// The status page at /status: refused without a credential (401 and a Basic challenge), served
// with the admin password or an API key; opened in headless Debian Chromium (playwright-core),
// it shows the connection count rising as official centrifuge clients connect (screenshot kept
// in build/test-artifacts/status.png), and it computes rates, p99, per-loop load and engine and
// feed state from a /metrics exposition (served to the page by the test, with known values;
// build/test-artifacts/status-metrics.png).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { REPO, httpRequest, withHerald } from './lib/herald.mjs';
import { makeClient } from './lib/centrifuge.mjs';

const CHROMIUM = '/usr/bin/chromium';
const PASSWORD = 'e2e-admin-password';
const ARTIFACTS = path.join(REPO, 'build', 'test-artifacts');

function basic(user, password) {
    return `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
}

async function status(h, urlPath, headers = {}) {
    return httpRequest(h.port, 'GET', urlPath, { headers });
}

async function withBrowser(fn, { prompt = true } = {}) {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: scripts/test-deps installs Debian chromium`);
    const profile = mkdtempSync(path.join(os.tmpdir(), 'herald-chromium-'));
    const browser = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        // What an operator types into the browser's Basic prompt.
        ...(prompt ? { httpCredentials: { username: 'admin', password: PASSWORD } } : {}),
        viewport: { width: 1280, height: 800 },
        args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
            '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    try {
        return await fn(browser);
    } finally {
        await browser.close();
        rmSync(profile, { recursive: true, force: true });
    }
}

async function connected(h, user) {
    const { client } = makeClient(h, { token: h.token(user) });
    await new Promise((resolve, reject) => {
        client.once('connected', resolve);
        client.once('error', (e) => reject(new Error(`client ${user}: ${JSON.stringify(e.error)}`)));
        client.connect();
    });
    return client;
}

test('status: /status and /status/info are refused without the admin password or an API key', async () => {
    await withHerald({ args: ['--admin_password', PASSWORD] }, async (h) => {
        for (const p of ['/status', '/status/info', '/status/metrics']) {
            const none = await status(h, p);
            assert.equal(none.status, 401, `${p} without a credential`);
            assert.match(none.headers['www-authenticate'] ?? '', /^Basic realm="herald status"/);
            assert.doesNotMatch(none.text, /herald status|num_clients/);
            for (const [what, headers] of [
                ['a wrong password', { Authorization: basic('admin', 'not-it') }],
                ['the password with a suffix', { Authorization: basic('admin', `${PASSWORD}x`) }],
                ['a password prefix', { Authorization: basic('admin', PASSWORD.slice(0, -1)) }],
                ['no colon', { Authorization: `Basic ${Buffer.from(PASSWORD).toString('base64')}` }],
                ['not base64', { Authorization: 'Basic !!!!' }],
                ['an overlong Basic value', { Authorization: basic('admin'.repeat(1000), PASSWORD) }],
                ['a wrong API key', { 'X-API-Key': 'nope' }],
                ['the password as an API key', { 'X-API-Key': PASSWORD }],
                ['the password as a bearer token', { Authorization: `Bearer ${PASSWORD}` }],
            ]) {
                const r = await status(h, p, headers);
                assert.equal(r.status, 401, `${p} with ${what}`);
            }
            for (const [what, headers] of [
                ['the admin password', { Authorization: basic('admin', PASSWORD) }],
                ['the admin password, any user', { Authorization: basic('', PASSWORD) }],
                ['the API key as the Basic password', { Authorization: basic('ops', h.apiKey) }],
                ['X-API-Key', { 'X-API-Key': h.apiKey }],
                ['Authorization: apikey', { Authorization: `apikey ${h.apiKey}` }],
                ['Authorization: Bearer', { Authorization: `Bearer ${h.apiKey}` }],
            ]) {
                const r = await status(h, p, headers);
                assert.equal(r.status, 200, `${p} with ${what}`);
                assert.equal(r.headers['cache-control'], 'no-store');
            }
        }
        const page = await status(h, '/status', { Authorization: basic('admin', PASSWORD) });
        assert.match(page.headers['content-type'], /^text\/html/);
        assert.match(page.text, /<title>herald status<\/title>/);
        const info = await status(h, '/status/info', { 'X-API-Key': h.apiKey });
        assert.equal(info.json.num_clients, 0);
        const post = await httpRequest(h.port, 'POST', '/status', { body: '', headers: { 'X-API-Key': h.apiKey } });
        assert.equal(post.status, 405);
        // HEAD: the same status and length, no body.
        const headOk = await httpRequest(h.port, 'HEAD', '/status', { headers: { 'X-API-Key': h.apiKey } });
        assert.equal(headOk.status, 200);
        assert.equal(Number(headOk.headers['content-length']), Buffer.byteLength(page.text));
        assert.equal(headOk.text, '');
        const headNo = await httpRequest(h.port, 'HEAD', '/status');
        assert.equal(headNo.status, 401);
        assert.equal(headNo.text, '');
    });
    // Neither an admin password nor an API key: there is no status page.
    await withHerald({ apiKey: null }, async (h) => {
        assert.equal((await status(h, '/status')).status, 404);
        assert.equal((await status(h, '/status/info', { Authorization: basic('admin', '') })).status, 404);
    });
    // The admin password alone: Basic works, nothing else does.
    await withHerald({ apiKey: null, args: ['--admin_password', PASSWORD] }, async (h) => {
        assert.equal((await status(h, '/status', { Authorization: basic('a', PASSWORD) })).status, 200);
        assert.equal((await status(h, '/status', { Authorization: basic('a', '') })).status, 401);
        assert.equal((await status(h, '/status', { 'X-API-Key': PASSWORD })).status, 401);
    });
});

test('status: the page in Chromium shows the connection count rising as clients connect', async () => {
    await withHerald({ args: ['--admin_password', PASSWORD], threads: 2 }, async (h) => {
        await withBrowser(async (browser) => {
            const page = await browser.newPage();
            const res = await page.goto(`${h.url}/status`);
            assert.equal(res.status(), 200);
            const shown = () => page.$eval('#clients', (e) => e.textContent);
            const waitShown = (n) => page.waitForFunction((want) => document.getElementById('clients').textContent === want,
                String(n), { timeout: 10000 }).catch(async (err) => {
                throw new Error(`the page shows ${await shown()} clients, not ${n} (${await page.$eval('#source', (e) => e.textContent)}): ${err.message}`);
            });
            await waitShown(0);
            const clients = [];
            const readings = [0];
            try {
                for (const step of [1, 3, 6]) {
                    while (clients.length < step) clients.push(await connected(h, `status-user-${clients.length}`));
                    await waitShown(step);
                    readings.push(Number(await shown()));
                }
                assert.deepEqual(readings, [0, 1, 3, 6]);
                // The connection chart has drawn the last values, the page says where they came from.
                assert.ok(await page.$$eval('#chart-clients polyline', (ls) => ls.length) >= 1);
                const source = await page.$eval('#source', (e) => e.textContent);
                assert.match(source, /\/status\/info: ok/);
                mkdirSync(ARTIFACTS, { recursive: true });
                const shot = path.join(ARTIFACTS, 'status.png');
                await page.screenshot({ path: shot, fullPage: true });
                assert.ok(statSync(shot).size > 5000, 'screenshot written');
                // And down again as they go.
                for (const c of clients.splice(0, 4)) c.disconnect();
                await waitShown(2);
            } finally {
                for (const c of clients) c.disconnect();
            }
        });
    });
});

test('status: the browser\'s own Basic credentials go with the page\'s requests', async () => {
    await withHerald({ args: ['--admin_password', PASSWORD] }, async (h) => {
        await withBrowser(async (browser) => {
            const page = await browser.newPage();
            const statuses = [];
            page.on('response', (r) => statuses.push(`${new URL(r.url()).pathname} ${r.status()}`));
            // No prompt answered by the test: the credentials of the address, cached by Chromium.
            const res = await page.goto(`http://admin:${PASSWORD}@127.0.0.1:${h.port}/status`);
            assert.equal(res.status(), 200);
            const c = await connected(h, 'status-basic');
            try {
                await page.waitForFunction(() => document.getElementById('clients').textContent === '1', null, { timeout: 10000 });
            } finally {
                c.disconnect();
            }
            assert.match(await page.$eval('#source', (e) => e.textContent), /\/status\/info: ok/);
            assert.ok(statuses.includes('/status/info 200'), statuses.join(', '));
            assert.ok(!statuses.includes('/status/info 401'), statuses.join(', '));
        }, { prompt: false });
    });
});

// An exposition whose counters grow at known rates from t0 (seconds as floats, as Prometheus
// allows): 10 publications/s, 50 deliveries/s, 100 observations/s of publish-to-write of which
// 98 under 1 ms, one in (1 ms, 5 ms], one in (5 ms, 10 ms]: p99 is 5 ms.
function exposition(t0) {
    const s = (Date.now() - t0) / 1000;
    return [
        '# HELP herald_clients Clients connected.',
        '# TYPE herald_clients gauge',
        'herald_clients 7',
        '# TYPE herald_publications_total counter',
        `herald_publications_total ${10 * s}`,
        '# TYPE herald_messages_sent_total counter',
        `herald_messages_sent_total{} ${50 * s}`,
        '# TYPE herald_publish_to_write_seconds histogram',
        `herald_publish_to_write_seconds_bucket{le="0.0005"} 0`,
        `herald_publish_to_write_seconds_bucket{le="0.001"} ${98 * s}`,
        `herald_publish_to_write_seconds_bucket{le="0.005"} ${99 * s}`,
        `herald_publish_to_write_seconds_bucket{le="0.01"} ${100 * s}`,
        `herald_publish_to_write_seconds_bucket{le="0.05"} ${100 * s}`,
        `herald_publish_to_write_seconds_bucket{le="+Inf"} ${100 * s}`,
        `herald_publish_to_write_seconds_sum ${0.08 * s}`,
        `herald_publish_to_write_seconds_count ${100 * s}`,
        '# TYPE herald_loop_queued_bytes gauge',
        'herald_loop_queued_bytes{loop="0"} 1000',
        'herald_loop_queued_bytes{loop="1"} 2500',
        '# TYPE herald_engine_up gauge',
        'herald_engine_up{shard="0"} 1',
        'herald_engine_up{shard="1"} 0',
        'herald_engine_reconnects_total 3',
        'herald_feed_up 1',
        'herald_feed_slot_lag_bytes 4096',
        'herald_feed_seconds_behind 1.5 1700000000000',
        '',
    ].join('\n');
}

test('status: /status/metrics is the exposition behind the page\'s credential, whatever metrics_key and metrics_listen say', async () => {
    await withHerald({ args: ['--admin_password', PASSWORD, '--metrics_key', 'e2e-metrics-key'] }, async (h) => {
        const client = await connected(h, 'm1');
        try {
            assert.equal((await status(h, '/metrics')).status, 401, '/metrics wants metrics_key');
            const r = await status(h, '/status/metrics', { Authorization: basic('admin', PASSWORD) });
            assert.equal(r.status, 200);
            assert.match(r.headers['content-type'], /^text\/plain; version=0\.0\.4/);
            assert.match(r.text, /^herald_clients 1$/m);
            assert.equal((await status(h, '/status/metrics', { 'X-API-Key': 'e2e-metrics-key' })).status, 401,
                'the metrics key is not the page\'s credential');
        } finally {
            client.disconnect();
        }
    });
});

test('status: the page computes rates, p99, loop load and engine and feed state from /metrics', async () => {
    await withHerald({ args: ['--admin_password', PASSWORD] }, async (h) => {
        await withBrowser(async (browser) => {
            const page = await browser.newPage();
            const t0 = Date.now();
            const seen = [];
            await page.route('**/metrics', (route) => {
                seen.push(route.request().headers());
                return route.fulfill({ status: 200, contentType: 'text/plain; version=0.0.4', body: exposition(t0) });
            });
            await page.goto(`${h.url}/status#key=${encodeURIComponent(h.apiKey)}`);
            // The key left the address bar and goes to /metrics as X-API-Key.
            assert.equal(await page.evaluate(() => location.hash), '');
            await page.waitForFunction(() => document.getElementById('p99').textContent !== '—', null, { timeout: 15000 });
            await page.waitForTimeout(2500);
            const read = (id) => page.$eval(`#${id}`, (e) => e.textContent);
            assert.equal(await read('clients'), '7', 'herald_clients is preferred to /status/info');
            const pubs = Number(await read('pubs'));
            const deliveries = Number(await read('deliveries'));
            assert.ok(pubs > 8 && pubs < 12, `publications/s ${pubs}, want about 10`);
            assert.ok(deliveries > 40 && deliveries < 60, `deliveries/s ${deliveries}, want about 50`);
            const p99 = Number(await read('p99'));
            assert.ok(Math.abs(p99 - 5) < 0.3, `p99 ${p99} ms, want 5`);
            assert.equal(await read('queued'), '3500');
            assert.match(await read('loops'), /loop 0: 1000[\s\S]*loop 1: 2500/);
            assert.match(await read('engine'), /^down 1 of 2 up$/);
            assert.match(await read('engine-detail'), /shard 0: up.*shard 1: down.*reconnects: 3/);
            assert.equal(await read('feed'), 'up');
            assert.match(await read('feed-detail'), /slot lag 4096 bytes, 1\.5 s behind/);
            assert.ok(await page.$$eval('#chart-loops polyline', (ls) => ls.length) >= 2, 'one line per loop');
            mkdirSync(ARTIFACTS, { recursive: true });
            await page.screenshot({ path: path.join(ARTIFACTS, 'status-metrics.png'), fullPage: true });
            assert.ok(seen.length >= 3);
            assert.ok(seen.every((hd) => hd['x-api-key'] === h.apiKey), 'every /metrics request carries X-API-Key');
        });
    });
});
