// A real redis-server for one test: a free port on 127.0.0.1, a temporary directory, no
// persistence; stopped by pid (stop(), and on process exit).
import { execFile, spawn, spawnSync } from 'node:child_process';
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

// redis-cli without blocking the event loop (polls during a test); trimmed stdout, '' when the
// node does not answer within timeoutMs.
function redisCliAsync(port, args, timeoutMs = 3000) {
    return new Promise((resolve) => {
        execFile('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8', timeout: timeoutMs },
            (err, stdout) => resolve(err && !stdout ? '' : String(stdout).trim()));
    });
}

// CLUSTER NODES as a list of {id, port, flags: [...], master, linkState, slots: [[from, to]...]}
// (importing/migrating markers, "[slot-<-id]", are left out of slots).
export function parseClusterNodes(text) {
    const out = [];
    for (const line of text.split('\n')) {
        const f = line.trim().split(/\s+/);
        if (f.length < 8) continue;
        const port = Number(/:(\d+)@/.exec(f[1])?.[1]);
        const slots = [];
        for (const s of f.slice(8)) {
            if (s.startsWith('[')) continue;
            const [a, b] = s.split('-').map(Number);
            slots.push([a, b ?? a]);
        }
        out.push({ id: f[0], port, flags: f[2].split(','), master: f[3], linkState: f[7], slots });
    }
    return out;
}

function infoField(text, name) {
    const m = new RegExp(`^${name}:(.*)$`, 'm').exec(text);
    return m ? m[1].trim() : null;
}

async function pollUntil(cond, ms, what) {
    const deadline = Date.now() + ms;
    let last = '';
    for (;;) {
        const r = await cond();
        if (r === true) return;
        last = r || last;
        if (Date.now() > deadline) throw new Error(`Redis Cluster: ${what} not within ${ms} ms (${last})`);
        await sleep(100);
    }
}

/**
 * startRedisCluster({masters, replicas}) -> a real Redis Cluster on 127.0.0.1 (redis-server 7):
 * masters * (1 + replicas) nodes on free ports (the bus port a free one too, --cluster-port),
 * node timeout 1 s, no persistence, no delay before a replica's first sync, one temporary directory; created with redis-cli --cluster
 * create and returned once every node says cluster_state:ok and every replica's link is up.
 * handle: {nodes: [{port, busPort, pid, url, cli(...args) (sync, trimmed stdout),
 *                   cliAsync(...args) -> Promise, alive(), kill() -> Promise (SIGKILL by pid)}],
 *          seeds (every node's URL), createdMs (how long the start took),
 *          masters() -> Promise [node] (serving slots, not flagged fail, by first slot),
 *          slot(key) -> Promise number (CLUSTER KEYSLOT),
 *          slotOwner(key) -> Promise node (the master whose ranges hold the key's slot now),
 *          waitFailover(deadPort, ms) -> Promise ms waited, cliAll(...args) -> Promise [{port, out}]
 *          (every live node), stop() -> Promise (SIGKILL all, wait, remove the directory)}
 */
export async function startRedisCluster({ masters = 3, replicas = 1, timeoutMs = 20000 } = {}) {
    const t0 = Date.now();
    const total = masters * (1 + replicas);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-redis-cluster-'));
    const used = new Set();
    const port = async () => {
        for (;;) {
            const p = await freePort();
            if (!used.has(p)) { used.add(p); return p; }
        }
    };
    const nodes = [];
    let stopped = false;
    const stop = async () => {
        stopped = true;
        for (const n of nodes) n.signal();
        await Promise.all(nodes.map((n) => n.exited));
        for (const n of nodes) live.delete(n.child);
        rmSync(dir, { recursive: true, force: true });
    };
    try {
        for (let i = 0; i < total; i++) {
            const p = await port();
            const bus = await port();
            const child = spawn('redis-server', ['--cluster-enabled', 'yes',
                '--cluster-config-file', path.join(dir, `nodes-${p}.conf`), '--cluster-node-timeout', '1000',
                '--cluster-port', String(bus), '--bind', '127.0.0.1', '--port', String(p),
                '--save', '', '--appendonly', 'no', '--dir', dir,
                // A replica's first sync at once (7.0 waits 5 s for more replicas by default).
                '--repl-diskless-sync-delay', '0',
                '--logfile', path.join(dir, `redis-${p}.log`)], { stdio: 'ignore' });
            live.add(child);
            const exited = new Promise((resolve) => {
                if (child.exitCode !== null || child.signalCode !== null) resolve();
                child.once('exit', () => resolve());
                child.once('error', () => resolve()); /* could not be started: no exit follows */
            });
            const alive = () => child.exitCode === null && child.signalCode === null;
            const signal = () => {
                if (alive()) {
                    try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
                }
            };
            nodes.push({
                port: p,
                busPort: bus,
                pid: child.pid,
                url: `redis://127.0.0.1:${p}`,
                child,
                exited,
                signal,
                alive,
                log: path.join(dir, `redis-${p}.log`),
                cli: (...args) => spawnSync('redis-cli', ['-p', String(p), ...args],
                    { encoding: 'utf8', timeout: 5000 }).stdout?.trim() ?? '',
                cliAsync: (...args) => redisCliAsync(p, args),
                // SIGKILL of this one node by pid; resolves once it has exited.
                kill: async () => { signal(); await exited; },
            });
        }
        await pollUntil(async () => {
            const r = await Promise.all(nodes.map((n) => n.cliAsync('PING')));
            const down = nodes.filter((n, k) => r[k] !== 'PONG').map((n) => n.port);
            return down.length === 0 || `not answering PING: ${down.join(' ')}`;
        }, 10000, 'every node up');
        const create = spawnSync('redis-cli', ['--cluster', 'create',
            ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', String(replicas), '--cluster-yes'],
        { encoding: 'utf8', timeout: timeoutMs });
        if (create.status !== 0) {
            throw new Error(`redis-cli --cluster create failed (${create.status}):\n${create.stdout}\n${create.stderr}`);
        }
        await pollUntil(async () => {
            const bad = [];
            for (const n of nodes) {
                const info = await n.cliAsync('CLUSTER', 'INFO');
                if (infoField(info, 'cluster_state') !== 'ok'
                    || Number(infoField(info, 'cluster_known_nodes')) !== total) {
                    bad.push(`${n.port}: state ${infoField(info, 'cluster_state')}, `
                        + `${infoField(info, 'cluster_known_nodes')} known`);
                    continue;
                }
                const repl = await n.cliAsync('INFO', 'replication');
                if (infoField(repl, 'role') === 'slave' && infoField(repl, 'master_link_status') !== 'up')
                    bad.push(`${n.port}: replica link ${infoField(repl, 'master_link_status')}`);
            }
            return bad.length === 0 || bad.join('; ');
        }, timeoutMs, 'cluster_state:ok on every node and every replica linked');
    } catch (err) {
        await stop();
        throw err;
    }

    const byPort = new Map(nodes.map((n) => [n.port, n]));
    const liveNodes = () => nodes.filter((n) => n.alive());
    // CLUSTER NODES as seen by the first live node that answers.
    const view = async () => {
        for (const n of liveNodes()) {
            const text = await n.cliAsync('CLUSTER', 'NODES');
            if (text.includes('myself')) return parseClusterNodes(text);
        }
        throw new Error('Redis Cluster: no live node answers CLUSTER NODES');
    };
    const isMaster = (e) => e.flags.includes('master') && !e.flags.includes('fail');
    const api = {
        nodes,
        seeds: nodes.map((n) => n.url),
        createdMs: Date.now() - t0,
        // The masters that serve slots now (not flagged fail), as node objects.
        masters: async () => (await view())
            .filter((e) => isMaster(e) && e.slots.length > 0 && byPort.has(e.port))
            .sort((x, y) => x.slots[0][0] - y.slots[0][0])
            .map((e) => byPort.get(e.port)),
        slot: async (key) => {
            for (const n of liveNodes()) {
                const s = await n.cliAsync('CLUSTER', 'KEYSLOT', key);
                if (/^\d+$/.test(s)) return Number(s);
            }
            throw new Error('Redis Cluster: no live node answers CLUSTER KEYSLOT');
        },
        // The node whose slot ranges hold the key's slot now (possibly a dead master before its
        // failover: check alive()).
        slotOwner: async (key) => {
            const slot = await api.slot(key);
            const owner = (await view()).find((e) => e.flags.includes('master')
                && e.slots.some(([a, b]) => slot >= a && slot <= b));
            return owner ? byPort.get(owner.port) : null;
        },
        // Resolves (with the ms it waited) once every live node says cluster_state:ok and, in
        // every live node's view, all 16384 slots (so every slot the dead node had) belong to a
        // live master that is not flagged fail.
        waitFailover: async (deadPort, ms = 15000) => {
            const t = Date.now();
            await pollUntil(async () => {
                const alive = liveNodes();
                if (alive.some((n) => n.port === deadPort)) return `node ${deadPort} is still running`;
                for (const n of alive) {
                    const info = await n.cliAsync('CLUSTER', 'INFO');
                    if (infoField(info, 'cluster_state') !== 'ok')
                        return `${n.port}: cluster_state ${infoField(info, 'cluster_state')}`;
                    const entries = parseClusterNodes(await n.cliAsync('CLUSTER', 'NODES'));
                    let covered = 0;
                    for (const e of entries) {
                        if (!e.slots.length) continue;
                        if (!isMaster(e) || !byPort.get(e.port)?.alive())
                            return `${n.port} still sees slots on ${e.port} (${e.flags.join(',')})`;
                        for (const [a, b] of e.slots) covered += b - a + 1;
                    }
                    if (covered !== 16384) return `${n.port} sees ${covered} slots served`;
                }
                return true;
            }, ms, `failover after node ${deadPort} died`);
            return Date.now() - t;
        },
        // The command on every live node at once: [{port, out}].
        cliAll: async (...args) => Promise.all(liveNodes().map(async (n) => ({ port: n.port,
            out: await n.cliAsync(...args) }))),
        stop: async () => { if (!stopped) await stop(); },
    };
    return api;
}
