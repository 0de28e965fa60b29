// A real redis-server for one test: a free port on 127.0.0.1, a temporary directory, no
// persistence; stopped by pid (stop(), and on process exit).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, sleep } from './herald.mjs';

const live = new Set();
process.on('exit', () => {
    for (const child of live) {
        try { child.kill('SIGKILL'); } catch { /* gone */ }
    }
});

export function redisCli(port, ...args) {
    const r = spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' });
    return r.stdout.trim();
}

// port: reuse one (a restart); default a free one.
export async function startRedis({ port = null } = {}) {
    port = port ?? await freePort();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-redis-'));
    const child = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '',
        '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
    live.add(child);
    for (let i = 0; i < 100; i++) {
        if (redisCli(port, 'ping') === 'PONG') break;
        await sleep(50);
    }
    const exited = new Promise((resolve) => child.once('exit', resolve));
    return {
        port,
        url: `redis://127.0.0.1:${port}`,
        pid: child.pid,
        cli: (...args) => redisCli(port, ...args),
        stop: async () => {
            if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
            await exited;
            live.delete(child);
            rmSync(dir, { recursive: true, force: true });
        },
    };
}
