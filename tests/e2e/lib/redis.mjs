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

// port: reuse one (a restart); default a free one. tls: TLS only (--port 0), with a
// certificate for 127.0.0.1 made here by openssl; the handle's ca names its file.
export async function startRedis({ port = null, tls = false } = {}) {
    port = port ?? await freePort();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-redis-'));
    const args = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
    let ca = null;
    if (tls) {
        ca = path.join(dir, 'cert.pem');
        const key = path.join(dir, 'key.pem');
        const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key,
            '-out', ca, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
        { stdio: 'ignore' });
        if (r.status !== 0) throw new Error('openssl could not make a certificate');
        args.push('--port', '0', '--tls-port', String(port), '--tls-cert-file', ca, '--tls-key-file', key,
            '--tls-ca-cert-file', ca, '--tls-auth-clients', 'no');
    } else {
        args.push('--port', String(port));
    }
    const child = spawn('redis-server', args, { stdio: 'ignore' });
    live.add(child);
    const tlsArgs = tls ? ['--tls', '--cacert', ca] : [];
    for (let i = 0; i < 100; i++) {
        if (redisCli(port, ...tlsArgs, 'ping') === 'PONG') break;
        await sleep(50);
    }
    const exited = new Promise((resolve) => child.once('exit', resolve));
    return {
        port,
        url: `${tls ? 'rediss' : 'redis'}://127.0.0.1:${port}`,
        ca,
        pid: child.pid,
        cli: (...args) => redisCli(port, ...tlsArgs, ...args),
        stop: async () => {
            if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
            await exited;
            live.delete(child);
            rmSync(dir, { recursive: true, force: true });
        },
    };
}
