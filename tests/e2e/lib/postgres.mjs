// A real PostgreSQL 15 for one test file (or one test): initdb into a fresh temporary directory,
// the server started directly (not through pg_ctl, so its pid is known) on a free port on
// 127.0.0.1 with trust authentication, logical decoding on by default; stopped by pid (stop(),
// and on process exit).
//
// initdb and postgres refuse to run as root. Run as root (the project's machines), the directory
// is given to the Debian `postgres` user and both run under `runuser -u postgres --`; runuser
// forks (it opens a PAM session), so the server's pid is read from postmaster.pid, not taken
// from the spawned process. psql itself runs as whoever we are (-U postgres over TCP).
import { spawn, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, sleep } from './herald.mjs';

export const PG_BIN = process.env.HERALD_PG_BIN || '/usr/lib/postgresql/15/bin';
const pgBin = (name) => path.join(PG_BIN, name);
const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;

// Servers started here and not stopped yet: {pid (postmaster, once known), child (runuser or
// postgres), dir}. On exit: SIGKILL the postmaster and its backends, remove the directory.
const live = new Set();
process.on('exit', () => {
    for (const s of live) {
        const pids = s.pid ? [s.pid, ...childPids(s.pid)] : [];
        for (const pid of pids) {
            try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
        }
        try { s.child.kill('SIGKILL'); } catch { /* gone */ }
        try { rmSync(s.dir, { recursive: true, force: true }); } catch { /* busy */ }
    }
});

// The pids whose parent is pid (the postmaster's backends, walsenders and helpers).
function childPids(pid) {
    try {
        return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)
            .filter(Boolean).map(Number);
    } catch {
        return [];
    }
}

// A zombie counts as gone: orphaned backends are reparented to pid 1, which may reap late.
function pidAlive(pid) {
    try {
        process.kill(pid, 0);
    } catch (err) {
        if (err.code !== 'EPERM') return false;
    }
    try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
    } catch {
        return false;
    }
}

// Account lookup for the Debian postgres user: {uid, gid}.
function postgresUser() {
    const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'));
    if (!line) throw new Error('startPostgres: running as root but there is no "postgres" user (apt-get install postgresql)');
    const f = line.split(':');
    return { uid: Number(f[2]), gid: Number(f[3]) };
}

// argv run as the postgres user when we are root, as ourselves otherwise.
function asPostgres(argv) {
    return asRoot ? ['runuser', ['-u', 'postgres', '--', ...argv]] : [argv[0], argv.slice(1)];
}

function psqlArgs(port, dbname, extra) {
    return ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(port),
        '-U', 'postgres', '-d', dbname, ...extra];
}

const PSQL_ENV = { ...process.env, PGCONNECT_TIMEOUT: '5', PGOPTIONS: '', PGAPPNAME: 'herald-e2e' };

function psqlSync(port, dbname, sql, timeout = 30000) {
    const r = spawnSync(pgBin('psql'), psqlArgs(port, dbname, ['-c', sql]),
        { encoding: 'utf8', env: PSQL_ENV, timeout, maxBuffer: 64 * 1024 * 1024 });
    if (r.error) throw new Error(`psql: ${r.error.message}`);
    if (r.status !== 0) throw new Error(`psql failed (${r.status}): ${r.stderr.trim()}\nsql: ${sql.slice(0, 500)}`);
    return r.stdout.trim();
}

// psql with the SQL on stdin (-f -: each statement its own transaction unless the script says
// BEGIN), or with -c (one implicit transaction for the whole string). -> Promise trimmed stdout.
function psqlRun(port, dbname, sql, { stdin = false, timeout = 120000 } = {}) {
    return new Promise((resolve, reject) => {
        const child = spawn(pgBin('psql'), psqlArgs(port, dbname, stdin ? ['-f', '-'] : ['-c', sql]),
            { env: PSQL_ENV, stdio: [stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        child.stdout.on('data', (c) => { out += c; });
        child.stderr.on('data', (c) => { err += c; });
        const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
        child.on('error', (e) => { clearTimeout(timer); reject(new Error(`psql: ${e.message}`)); });
        child.on('close', (code, signal) => {
            clearTimeout(timer);
            if (code === 0) resolve(out.trim());
            else reject(new Error(`psql failed (${code ?? signal}): ${err.trim()}\nsql: ${sql.slice(0, 500)}`));
        });
        if (stdin) {
            child.stdin.on('error', () => { /* psql gone: its exit says why */ });
            child.stdin.end(sql);
        }
    });
}

/**
 * A psql session whose stdin stays open, driven statement by statement (a transaction that
 * stays open while others commit). -> {query(sql) -> Promise trimmed output of that statement,
 * pid (its backend's pid), close() -> Promise (ends psql: an open transaction rolls back)}.
 * A failing statement rejects its query and ends the session (ON_ERROR_STOP).
 */
async function openSession(port, dbname) {
    const child = spawn(pgBin('psql'), psqlArgs(port, dbname, []),
        { env: PSQL_ENV, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let seq = 0;
    const waiting = [];
    let closed = null;
    const exited = new Promise((resolve) => child.on('close', (code, signal) => {
        closed = `psql exited (${code ?? signal}): ${err.trim()}`;
        for (const w of waiting.splice(0)) w.reject(new Error(closed));
        resolve();
    }));
    child.on('error', (e) => { err += e.message; });
    child.stdin.on('error', () => { /* psql gone */ });
    child.stderr.on('data', (c) => { err += c; });
    child.stdout.on('data', (c) => {
        out += c;
        while (waiting.length) {
            const w = waiting[0];
            const at = out.indexOf(w.marker);
            if (at < 0) break;
            waiting.shift();
            const text = out.slice(0, at);
            out = out.slice(at + w.marker.length).replace(/^\n/, '');
            w.resolve(text.trim());
        }
    });
    const query = (sql) => new Promise((resolve, reject) => {
        if (closed) { reject(new Error(closed)); return; }
        const marker = `__herald_e2e_done_${++seq}__`;
        waiting.push({ marker, resolve, reject });
        // \echo goes through psql's stdout after the statement's output, flushed.
        child.stdin.write(`${sql.trim().replace(/;?$/, ';')}\n\\echo ${marker}\n`);
    });
    const pid = Number(await query('SELECT pg_backend_pid()'));
    return {
        pid,
        query,
        close: async () => {
            if (!closed) child.stdin.end();
            const t = setTimeout(() => child.kill('SIGKILL'), 5000);
            await exited;
            clearTimeout(t);
        },
    };
}

/**
 * startPostgres({walLevel, settings}) -> a running PostgreSQL 15.
 * walLevel: 'logical' (default) or 'replica' (no logical decoding); settings: more
 * postgresql.conf lines as {name: value} (values written as given, quote strings yourself).
 * handle: {port, pid (the postmaster's), dir, dataDir, conninfo ('host=127.0.0.1 port=P
 *          dbname=postgres user=postgres'), url (the same as a postgresql:// URL),
 *          psql(sql) (sync, -c: one transaction; trimmed stdout; throws with stderr),
 *          psqlAsync(sql) -> Promise (the same without blocking), script(sql) -> Promise (on
 *          stdin: each statement its own transaction), session() -> Promise session (see
 *          openSession), log() (the server log so far), alive(),
 *          stop() (SIGINT by pid, SIGKILL after 5 s, wait, remove the directory),
 *          kill() -> Promise (SIGKILL the postmaster and every backend, wait; data kept),
 *          down() / up() -> Promise (fast shutdown keeping the data; start again, same port),
 *          restart() -> Promise (stop if running, start again on the same directory and port)}
 */
export async function startPostgres({ walLevel = 'logical', settings = {}, port = null } = {}) {
    if (!existsSync(pgBin('postgres'))) {
        throw new Error(`PostgreSQL 15 not found in ${PG_BIN} (scripts/test-deps installs postgresql)`);
    }
    port = port ?? await freePort();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'herald-pg-'));
    const dataDir = path.join(dir, 'data');
    const sockDir = path.join(dir, 'sock');
    const logFile = path.join(dir, 'postgres.log');
    mkdirSync(sockDir);
    if (asRoot) {
        const { uid, gid } = postgresUser();
        for (const p of [dir, sockDir]) chownSync(p, uid, gid);
    }
    const [icmd, iargs] = asPostgres([pgBin('initdb'), '-D', dataDir, '-U', 'postgres', '-A', 'trust',
        '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions']);
    const init = spawnSync(icmd, iargs, { encoding: 'utf8', cwd: dir, timeout: 60000 });
    if (init.status !== 0) {
        rmSync(dir, { recursive: true, force: true });
        throw new Error(`initdb failed (${init.status ?? init.error?.message}):\n${init.stdout}\n${init.stderr}`);
    }
    const conf = {
        listen_addresses: "'127.0.0.1'",
        port,
        unix_socket_directories: `'${sockDir}'`,
        wal_level: walLevel,
        max_wal_senders: 10,
        max_replication_slots: 10,
        // Speed without losing a commit when the server is killed: fsync off only matters if
        // the machine dies; synchronous_commit stays on (off loses the last commits to SIGKILL,
        // the WAL still in shared memory).
        fsync: 'off',
        shared_buffers: "'32MB'",
        max_connections: 50,
        timezone: "'UTC'",
        log_min_messages: 'warning',
        log_line_prefix: "'%m [%p] %b '",
        ...settings,
    };
    const confPath = path.join(dataDir, 'postgresql.conf');
    writeFileSync(confPath, readFileSync(confPath, 'utf8') + '\n# herald e2e\n'
        + Object.entries(conf).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n');
    // Trust from 127.0.0.1 only, ordinary and replication connections; local socket too.
    writeFileSync(path.join(dataDir, 'pg_hba.conf'), [
        'local all all trust',
        'local replication all trust',
        'host all all 127.0.0.1/32 trust',
        'host replication all 127.0.0.1/32 trust',
        '',
    ].join('\n'));
    if (asRoot) {
        const { uid, gid } = postgresUser();
        for (const f of ['postgresql.conf', 'pg_hba.conf']) chownSync(path.join(dataDir, f), uid, gid);
    }

    const server = { pid: null, child: null, dir, exited: null };
    live.add(server);
    const ready = () => spawnSync(pgBin('pg_isready'), ['-q', '-h', '127.0.0.1', '-p', String(port),
        '-U', 'postgres', '-d', 'postgres', '-t', '1'], { timeout: 3000 }).status === 0;

    const launch = async () => {
        // A postmaster.pid left by a killed server whose pid is gone or a zombie: ours to remove
        // (postgres itself takes a zombie for a live postmaster).
        const pidFile = path.join(dataDir, 'postmaster.pid');
        if (existsSync(pidFile)) {
            const old = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
            if (!pidAlive(old)) rmSync(pidFile, { force: true });
        }
        const [cmd, args] = asPostgres([pgBin('postgres'), '-D', dataDir]);
        // The log is appended by us (postgres's stderr): readable as root, kept across restarts.
        const child = spawn(cmd, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
        server.child = child;
        server.pid = null;
        const append = (c) => { try { writeFileSync(logFile, c, { flag: 'a' }); } catch { /* removed */ } };
        child.stdout.on('data', append);
        child.stderr.on('data', append);
        server.exited = new Promise((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) resolve();
            child.once('exit', () => resolve());
            child.once('error', () => resolve());
        });
        const deadline = Date.now() + 30000;
        for (;;) {
            if (child.exitCode !== null || child.signalCode !== null) {
                throw new Error(`postgres exited during start (${child.exitCode ?? child.signalCode}):\n${readLog()}`);
            }
            if (ready()) break;
            if (Date.now() > deadline) throw new Error(`postgres not ready after 30 s:\n${readLog()}`);
            await sleep(50);
        }
        // postmaster.pid: first line the postmaster's pid (runuser's child when we are root).
        const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
        if (!Number.isInteger(pid) || pid <= 0 || !pidAlive(pid)) throw new Error(`postmaster.pid names no live process (${pid})`);
        server.pid = pid;
    };
    const readLog = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
    const alive = () => server.pid !== null && pidAlive(server.pid)
        && server.child.exitCode === null && server.child.signalCode === null;

    // Signals the postmaster (fast shutdown on SIGINT: sessions, walsenders included, are ended;
    // SIGTERM would be a smart shutdown that waits for herald's connections to go away),
    // SIGKILL after graceMs; resolves once it and the spawned process have exited.
    const shutdown = async (signal, graceMs) => {
        if (!server.child) return;
        const pid = server.pid;
        const children = pid ? childPids(pid) : [];
        const killAll = () => {
            for (const p of [pid, ...childPids(pid ?? 0), ...children]) {
                if (p) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
            }
        };
        if (pid && pidAlive(pid)) {
            if (signal === 'SIGKILL') killAll();
            else { try { process.kill(pid, signal); } catch { /* gone */ } }
        } else {
            /* not up yet: the spawned process (runuser passes the signal on) */
            try { server.child.kill(signal); } catch { /* gone */ }
        }
        // runuser is left to reap the postmaster: killed, it would leave a zombie (reaped late
        // by pid 1 here) whose pid in postmaster.pid makes the next postmaster refuse to start.
        const wait = (ms) => new Promise((resolve) => {
            const t = setTimeout(() => resolve(false), ms);
            server.exited.then(() => { clearTimeout(t); resolve(true); });
        });
        if (!await wait(graceMs)) {
            killAll();
            if (!await wait(3000)) {
                try { server.child.kill('SIGKILL'); } catch { /* gone */ }
                await server.exited;
            }
        }
        // Orphaned backends notice the postmaster's death on their own; wait until they have
        // (a new postmaster refuses to start while one still holds the shared memory).
        const t = Date.now();
        while (children.some(pidAlive) && Date.now() - t < 5000) await sleep(20);
        for (const p of children) {
            if (pidAlive(p)) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
        }
        server.pid = null;
    };

    try {
        await launch();
    } catch (err) {
        await shutdown('SIGKILL', 0);
        live.delete(server);
        rmSync(dir, { recursive: true, force: true });
        throw err;
    }

    const conninfo = `host=127.0.0.1 port=${port} dbname=postgres user=postgres`;
    let stopped = false;
    return {
        port,
        get pid() { return server.pid; },
        dir,
        dataDir,
        conninfo,
        url: `postgresql://postgres@127.0.0.1:${port}/postgres`,
        psql: (sql, { db = 'postgres', timeout } = {}) => psqlSync(port, db, sql, timeout),
        psqlAsync: (sql, { db = 'postgres', timeout } = {}) => psqlRun(port, db, sql, { timeout }),
        script: (sql, { db = 'postgres', timeout } = {}) => psqlRun(port, db, sql, { stdin: true, timeout }),
        session: ({ db = 'postgres' } = {}) => openSession(port, db),
        log: readLog,
        alive,
        stop: async () => {
            if (stopped) return;
            stopped = true;
            await shutdown('SIGINT', 5000);
            live.delete(server);
            rmSync(dir, { recursive: true, force: true });
        },
        kill: async () => { await shutdown('SIGKILL', 0); },
        // The server away for a while (fast shutdown, data kept) and back on the same port.
        down: async () => { if (alive()) await shutdown('SIGINT', 5000); },
        up: async () => {
            if (stopped) throw new Error('up() after stop(): the directory is gone');
            if (!alive()) await launch();
        },
        restart: async () => {
            if (stopped) throw new Error('restart after stop(): the directory is gone');
            if (alive()) await shutdown('SIGINT', 5000);
            await launch();
        },
    };
}
