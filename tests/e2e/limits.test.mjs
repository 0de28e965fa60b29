// Out of file descriptors, herald neither spins nor stops: it pauses accepting for a
// second, keeps serving what it has, and accepts again once descriptors are free.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';

import { heraldBin, freePort, httpRequest, sleep, sanitizerReport } from './lib/herald.mjs';

function cpuSeconds(pid) {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in ticks of 10 ms
}

test('with its descriptors exhausted herald pauses accepting, does not spin, and recovers', async () => {
    const port = await freePort();
    const env = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('HERALD_')) env[k] = v;
    // 64 descriptors: a few for herald itself, the rest for connections.
    const child = spawn('sh', ['-c', 'ulimit -n 64 && exec "$0" "$@"', heraldBin(),
        '--listen', `127.0.0.1:${port}`, '--threads', '1', '--allow_anonymous', '--api_key', 'k'],
    { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c) => { stderr += c; });
    const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    const socks = [];
    try {
        for (let i = 0; i < 50; i++) {
            try {
                if ((await httpRequest(port, 'GET', '/health')).status === 200) break;
            } catch { /* not up yet */ }
            await sleep(100);
        }
        for (let i = 0; i < 100; i++) {
            const s = net.connect(port, '127.0.0.1');
            s.on('error', () => {});
            socks.push(s);
        }
        await sleep(500);
        const before = cpuSeconds(child.pid);
        await sleep(2000);
        const spent = cpuSeconds(child.pid) - before;
        assert.ok(spent < 0.5, `herald used ${spent} s of CPU in 2 s with a full descriptor table`);
        assert.match(stderr, /pausing accepts/);
        for (const s of socks) s.destroy();
        await sleep(1500);
        const r = await httpRequest(port, 'GET', '/health');
        assert.equal(r.status, 200);
    } finally {
        for (const s of socks) s.destroy();
        child.kill('SIGTERM');
        const res = await exited;
        assert.equal(res.code, 0, `exit ${JSON.stringify(res)}\n${stderr}`);
        assert.equal(sanitizerReport(stderr), '', stderr);
    }
});
