// The quick start's promise, in a real browser: the demo page served by herald at /
// connects with the official centrifuge client (embedded from npm) and shows a
// publication made through the API. Headless Debian Chromium driven by playwright-core.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { withHerald } from './lib/herald.mjs';

const CHROMIUM = '/usr/bin/chromium';

test('the demo page at / shows a publication in a browser', async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: scripts/test-deps installs Debian chromium`);
    await withHerald({}, async (h) => {
        const profile = mkdtempSync(path.join(os.tmpdir(), 'herald-chromium-'));
        const browser = await chromium.launchPersistentContext(profile, {
            executablePath: CHROMIUM,
            headless: true,
            args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                '--disable-background-networking', '--disable-component-update', '--disable-sync'],
        });
        try {
            const page = await browser.newPage();
            const token = h.token('browser-user');
            await page.goto(`${h.url}/?token=${encodeURIComponent(token)}`);
            await page.waitForFunction(() => document.getElementById('state').textContent.startsWith('connected'),
                null, { timeout: 10000 });
            await page.waitForFunction(() => document.getElementById('log').textContent.includes('subscribed to news'),
                null, { timeout: 10000 });
            const r = await h.api('publish', { channel: 'news', data: { text: 'hello from the API' } });
            assert.equal(r.status, 200);
            await page.waitForFunction(() => document.getElementById('log').textContent.includes('hello from the API'),
                null, { timeout: 10000 });
        } finally {
            await browser.close();
            rmSync(profile, { recursive: true, force: true });
        }
    });
});
