// Starts the real herald binary for one test: free port, private temporary directory, readiness
// by GET /health, and a kill that always happens (stop(), withHerald's finally, process exit).
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { userToken } from './jwt.mjs';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const DEFAULT_SECRET = 'e2e-hmac-secret-0123456789abcdef';
export const DEFAULT_API_KEY = 'e2e-api-key';
// A payload marker some tests publish: it must never reach a log (scripts/check-log-secrets).
export const PAYLOAD_MARKER = 'e2e-payload-marker-5c1f';
// The password of the Redis that logs.test.mjs puts in redis_urls.
export const REDIS_PASSWORD = 'e2e-redis-password-91d2';

// Every herald's stderr, kept for the check that no token, key or payload is logged:
// build/e2e-logs/<test file>.<pid>.log, appended by every instance this process starts.
export const LOG_DIR = path.join(REPO, 'build', 'e2e-logs');
const logFile = path.join(LOG_DIR,
    `${path.basename(process.argv[1] || 'e2e', '.mjs')}.${process.pid}.log`);
export function keepLog(child) {
    try { mkdirSync(LOG_DIR, { recursive: true }); } catch { /* exists */ }
    child.stderr.on('data', (c) => {
        try { appendFileSync(logFile, c); } catch { /* the directory went: not the test's failure */ }
    });
}

// bin: 'release' (build/herald) or 'asan' (build/herald-asan) picks a build regardless of
// HERALD_BIN; without it, HERALD_BIN or the ASan build when present.
export function heraldBin(bin = null) {
    if (bin === 'release') return path.join(REPO, 'build', 'herald');
    if (bin === 'asan') return path.join(REPO, 'build', 'herald-asan');
    if (process.env.HERALD_BIN) return path.resolve(process.env.HERALD_BIN);
    const asan = path.join(REPO, 'build', 'herald-asan');
    return existsSync(asan) ? asan : path.join(REPO, 'build', 'herald');
}

const live = new Set();
process.on('exit', () => {
    for (const child of live) {
        try { child.kill('SIGKILL'); } catch { /* already gone */ }
    }
});

export function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

// A port that was free a moment ago: bind 127.0.0.1:0, read it, close (herald refuses port 0).
export function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.unref();
        srv.on('error', reject);
        srv.listen(0, '127.0.0.1', () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

// Environment for herald: ours, minus HERALD_* keys that would leak in from the caller.
function childEnv(extra) {
    const env = {};
    for (const [k, v] of Object.entries(process.env)) {
        if (!k.startsWith('HERALD_')) env[k] = v;
    }
    return { ...env, ...extra };
}

function exitPromise(child) {
    return new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) {
            resolve({ code: child.exitCode, signal: child.signalCode });
            return;
        }
        child.once('exit', (code, signal) => resolve({ code, signal }));
    });
}

// One HTTP request; resolves {status, headers, text, json} (json null when the body is not JSON).
// With ca (PEM certificates to trust) the request goes over https.
export function httpRequest(port, method, urlPath, { body = null, headers = {}, timeout = 5000, ca = null } = {}) {
    // Always a Content-Length: herald, like many servers, refuses chunked request bodies (411).
    if (body !== null) headers = { ...headers, 'Content-Length': Buffer.byteLength(body) };
    return new Promise((resolve, reject) => {
        const req = (ca ? https : http).request({
            host: '127.0.0.1', port, method, path: urlPath, headers, agent: false, timeout,
            ...(ca ? { ca } : {}),
        }, (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => {
                const text = Buffer.concat(chunks).toString('utf8');
                let json = null;
                try { json = JSON.parse(text); } catch { /* not JSON */ }
                resolve({ status: res.statusCode, headers: res.headers, text, json });
            });
            res.on('error', reject);
        });
        req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath}: timeout`)));
        req.on('error', reject);
        if (body !== null) req.write(body);
        req.end();
    });
}

// Runs herald to completion (subcommands, configurations that must be refused).
export function runHerald(args, { env = {}, cwd = null, timeout = 10000 } = {}) {
    return new Promise((resolve, reject) => {
        const child = spawn(heraldBin(), args, {
            cwd: cwd || os.tmpdir(), env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'],
        });
        live.add(child);
        keepLog(child);
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (c) => { stdout += c; });
        child.stderr.on('data', (c) => { stderr += c; });
        const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
        child.on('error', (err) => { clearTimeout(timer); live.delete(child); reject(err); });
        child.on('close', (code, signal) => {
            clearTimeout(timer);
            live.delete(child);
            resolve({ code, signal, stdout, stderr, timedOut: signal === 'SIGKILL' });
        });
    });
}

const SANITIZER_REPORT = /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: .*Sanitizer/;

// Sanitizer findings in herald's stderr (empty string when none).
export function sanitizerReport(stderr) {
    const m = SANITIZER_REPORT.exec(stderr);
    return m ? stderr.slice(Math.max(0, m.index - 200), m.index + 3000) : '';
}

// The configuration file's keys (opts.config, or opts.configText parsed), {} when none.
function configObject(opts) {
    if (opts.config && typeof opts.config === 'object') return opts.config;
    if (opts.configText) {
        try { return JSON.parse(opts.configText); } catch { return {}; }
    }
    return {};
}

function buildArgs(port, opts, configPath) {
    const args = [];
    if (configPath) args.push('--config', configPath);
    const cfg = configObject(opts);
    if (!opts.noListen) args.push('--listen', `127.0.0.1:${port}`);
    if (opts.secret !== null && !('token_hmac_secret' in cfg)) {
        args.push('--token_hmac_secret', opts.secret ?? DEFAULT_SECRET);
    }
    if (opts.apiKey !== null && !('api_key' in cfg)) {
        args.push('--api_key', opts.apiKey ?? DEFAULT_API_KEY);
    }
    return args.concat(opts.args || []);
}

async function waitHealthy(port, child, getStderr, timeoutMs, ca) {
    const deadline = Date.now() + timeoutMs;
    let lastErr = null;
    while (Date.now() < deadline) {
        if (child.exitCode !== null || child.signalCode !== null) {
            return { exited: true, reason: `herald exited (code ${child.exitCode}, signal ${child.signalCode})` };
        }
        try {
            const r = await httpRequest(port, 'GET', '/health', { timeout: 1000, ca });
            if (r.status === 200) return { ok: true };
            lastErr = `GET /health -> ${r.status}`;
        } catch (err) {
            lastErr = err.message;
        }
        await sleep(50);
    }
    return { exited: false, reason: `not healthy after ${timeoutMs} ms (${lastErr}); stderr:\n${getStderr()}` };
}

/**
 * start(opts) -> herald handle.
 * opts: args (extra argv), env (extra environment), config (object written to herald.json and
 * passed with --config) or configText (the file's exact text), secret / apiKey (null: do not
 * pass the flag; keys present in the config file are never passed), threads, noListen,
 * readyTimeout (ms), bin ('release' | 'asan': which build, see heraldBin), ca (PEM: herald
 * serves TLS with a certificate it signs; readiness, url, wsUrl and api go over TLS).
 * handle: {port, url, wsUrl, dir, bin (the binary's path), secret, apiKey, api(method, body, {key, raw}),
 *          token(sub, opts), stop(signal, timeoutMs) -> {code, signal, ms}, stderr(), alive()}
 */
export async function start(opts = {}) {
    let lastFailure = '';
    for (let attempt = 0; attempt < 3; attempt++) {
        const port = await freePort();
        const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-e2e-'));
        let configPath = null;
        if (opts.config || opts.configText) {
            configPath = path.join(dir, 'herald.json');
            writeFileSync(configPath, opts.configText ?? JSON.stringify(opts.config, null, 2));
        }
        const args = buildArgs(port, opts, configPath);
        if (opts.threads) args.push('--threads', String(opts.threads));
        const bin = heraldBin(opts.bin ?? null);
        const child = spawn(bin, args, {
            cwd: dir, env: childEnv(opts.env || {}), stdio: ['ignore', 'pipe', 'pipe'],
        });
        live.add(child);
        keepLog(child);
        let stderr = '';
        let stdout = '';
        child.stderr.on('data', (c) => { stderr += c; });
        child.stdout.on('data', (c) => { stdout += c; });
        const spawnError = new Promise((resolve) => child.once('error', resolve));
        const exited = exitPromise(child);
        exited.then(() => live.delete(child));
        const ready = await Promise.race([
            waitHealthy(port, child, () => stderr, opts.readyTimeout ?? 15000, opts.ca ?? null),
            spawnError.then((err) => ({ exited: true, reason: `spawn ${bin}: ${err.message}` })),
        ]);
        if (ready.ok) {
            return makeHandle({ child, bin, port, dir, args, opts, exited, getStderr: () => stderr,
                getStdout: () => stdout });
        }
        child.kill('SIGKILL');
        await exited;
        rmSync(dir, { recursive: true, force: true });
        lastFailure = `${ready.reason}\nargs: ${args.join(' ')}\nstderr:\n${stderr}`;
        // Only a lost race for the port is worth another try.
        if (!/in use|EADDRINUSE/i.test(stderr)) break;
    }
    throw new Error(`herald did not start: ${lastFailure}`);
}

function makeHandle({ child, bin, port, dir, args, opts, exited, getStderr, getStdout }) {
    const cfg = configObject(opts);
    const secret = opts.secret ?? cfg.token_hmac_secret ?? DEFAULT_SECRET;
    const apiKey = opts.apiKey ?? cfg.api_key ?? DEFAULT_API_KEY;
    let stopped = null;
    const h = {
        port, dir, args, secret, apiKey, child, bin,
        url: `${opts.ca ? 'https' : 'http'}://127.0.0.1:${port}`,
        wsUrl: `${opts.ca ? 'wss' : 'ws'}://127.0.0.1:${port}/connection/websocket`,
        stderr: getStderr,
        stdout: getStdout,
        alive: () => child.exitCode === null && child.signalCode === null,
        exited,
        token: (sub = 'user1', tokenOpts = {}) => userToken(sub, secret, tokenOpts),
        // POST /api/<method>; body is an object (JSON-encoded) or a raw string sent as is.
        api: async (method, body = {}, { key = apiKey, headers = {} } = {}) => {
            const text = typeof body === 'string' ? body : JSON.stringify(body);
            const hdrs = { 'Content-Type': 'application/json', ...headers };
            if (key !== null) hdrs.Authorization = `apikey ${key}`;
            return httpRequest(port, 'POST', `/api/${method}`, { body: text, headers: hdrs, ca: opts.ca ?? null });
        },
        // Signals herald and waits for its exit; SIGKILL after timeoutMs. -> {code, signal, ms}
        stop: (signal = 'SIGTERM', timeoutMs = 5000) => {
            if (stopped) return stopped;
            stopped = (async () => {
                const t0 = Date.now();
                if (h.alive()) child.kill(signal);
                let timer;
                const killed = new Promise((resolve) => {
                    timer = setTimeout(() => {
                        child.kill('SIGKILL');
                        resolve(true);
                    }, timeoutMs);
                });
                const first = await Promise.race([exited.then(() => false), killed]);
                clearTimeout(timer);
                const res = await exited;
                // Let the stderr pipe drain before anyone reads it.
                await new Promise((resolve) => (child.stderr.readableEnded ? resolve()
                    : child.stderr.once('close', resolve)));
                rmSync(dir, { recursive: true, force: true });
                return { ...res, ms: Date.now() - t0, killedAfterTimeout: first };
            })();
            return stopped;
        },
    };
    return h;
}

function tail(s, n = 3000) {
    return s.length > n ? `...${s.slice(-n)}` : s;
}

/**
 * Runs fn(herald) against a fresh herald and always stops it. On success herald gets SIGTERM and
 * its stderr must hold no sanitizer report (set HERALD_E2E_SANITIZER_CHECK=0 to skip). A failing
 * test's error carries the tail of herald's stderr.
 */
export async function withHerald(opts, fn) {
    const h = await start(opts);
    let failed = null;
    try {
        return await fn(h);
    } catch (err) {
        failed = err;
        if (err && typeof err === 'object') {
            try { err.message = `${err.message}\n--- herald stderr ---\n${tail(h.stderr())}`; } catch { /* frozen */ }
        }
        throw err;
    } finally {
        // shutdown.test.mjs holds herald to its 5 s; here a hang costs 3 s, then SIGKILL.
        const res = await h.stop(failed ? 'SIGKILL' : 'SIGTERM', 3000);
        if (!failed && process.env.HERALD_E2E_SANITIZER_CHECK !== '0') {
            const report = sanitizerReport(h.stderr());
            if (report) {
                // eslint-disable-next-line no-unsafe-finally
                throw new Error(`sanitizer report in herald's stderr (exit ${res.code}/${res.signal}):\n${report}`);
            }
        }
    }
}
