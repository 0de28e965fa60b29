// deploy/: the Prometheus alerts pass `promtool check rules` and their unit tests (`promtool test
// rules`, Debian's prometheus package), and the Grafana dashboard and the alerts name only metrics
// herald's /metrics exposes: a typo'd metric or function name fails here, not on an operator's
// empty panel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { REPO } from './lib/herald.mjs';

const PROMTOOL = '/usr/bin/promtool';
const ALERTS = path.join(REPO, 'deploy', 'prometheus', 'alerts.yml');
const ALERT_TESTS = path.join(REPO, 'deploy', 'prometheus', 'alerts.test.yml');
const DASHBOARD = path.join(REPO, 'deploy', 'grafana', 'herald.json');

// What /metrics exposes (issue 17), histograms by their base name.
const METRICS = new Set([
    'herald_build_info', 'herald_uptime_seconds', 'herald_connections', 'herald_connections_accepted_total',
    'herald_clients', 'herald_users', 'herald_disconnects_total', 'herald_handshakes_refused_total',
    'herald_subscriptions', 'herald_channels', 'herald_commands_total', 'herald_command_errors_total',
    'herald_messages_received_total', 'herald_messages_sent_total', 'herald_bytes_received_total',
    'herald_bytes_sent_total', 'herald_publications_total', 'herald_loop_queued_bytes',
    'herald_slow_consumer_disconnects_total', 'herald_rate_limited_total', 'herald_recoveries_total',
    'herald_engine_up', 'herald_engine_reconnects_total', 'herald_engine_pubsub_messages_total',
    'herald_engine_gaps_filled_total', 'herald_feed_up', 'herald_feed_reconnects_total',
    'herald_feed_slot_lag_bytes', 'herald_feed_seconds_behind', 'herald_feed_changes_published_total',
    'herald_history_entries', 'herald_history_bytes', 'process_cpu_seconds_total',
    'process_resident_memory_bytes', 'process_open_fds', 'herald_threads',
]);
const HISTOGRAMS = new Set(['herald_publish_to_write_seconds', 'herald_engine_command_seconds']);
// Series Prometheus itself makes for every target.
const SCRAPE_SERIES = new Set(['up']);
const FUNCTIONS = new Set(['rate', 'irate', 'increase', 'delta', 'deriv', 'sum', 'min', 'max', 'avg', 'count',
    'group', 'topk', 'bottomk', 'quantile', 'stddev', 'histogram_quantile', 'abs', 'absent', 'absent_over_time',
    'clamp_min', 'clamp_max', 'changes', 'resets', 'max_over_time', 'min_over_time', 'avg_over_time',
    'label_replace', 'time', 'vector', 'scalar', 'round', 'sort', 'sort_desc']);
const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless',
    'bool', 'offset', 'Inf', 'NaN', 'inf', 'nan']);

// The metric names and function names in a PromQL expression (Grafana's $variables removed).
export function promqlNames(expr) {
    const s = expr
        .replace(/"(?:[^"\\]|\\.)*"/g, '""')              // label values, regexes
        .replace(/\{[^}]*\}/g, ' ')                         // label matchers
        .replace(/\[[^\]]*\]/g, ' ')                        // ranges
        .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ') // label lists
        .replace(/\$\{?\w+\}?/g, ' ');
    const metrics = [];
    const functions = [];
    for (const m of s.matchAll(/(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
        if (KEYWORDS.has(m[1])) continue;
        (m[2] ? functions : metrics).push(m[1]);
    }
    return { metrics, functions };
}

function known(metric) {
    if (METRICS.has(metric) || SCRAPE_SERIES.has(metric)) return true;
    const h = /^(.*)_(bucket|sum|count)$/.exec(metric);
    return Boolean(h && HISTOGRAMS.has(h[1]));
}

// Every problem of the expressions: names /metrics does not expose, functions PromQL lacks.
function problems(exprs) {
    const out = [];
    for (const { where, expr } of exprs) {
        const { metrics, functions } = promqlNames(expr);
        if (metrics.length === 0) out.push(`${where}: no metric in ${expr}`);
        for (const m of metrics) if (!known(m)) out.push(`${where}: unknown metric ${m} in ${expr}`);
        for (const f of functions) if (!FUNCTIONS.has(f)) out.push(`${where}: unknown function ${f} in ${expr}`);
    }
    return out;
}

function dashboardExprs(d) {
    const exprs = [];
    const walk = (panels) => {
        for (const p of panels || []) {
            for (const t of p.targets || []) exprs.push({ where: `panel "${p.title}" ${t.refId}`, expr: t.expr });
            walk(p.panels);
        }
    };
    walk(d.panels);
    return exprs;
}

function alertExprs(text) {
    return [...text.matchAll(/^\s*- alert:\s*(\S+)\s*\n\s*expr:\s*(.+)$/gm)]
        .map((m) => ({ where: `alert ${m[1]}`, expr: m[2] }));
}

function promtool(args) {
    const r = spawnSync(PROMTOOL, args, { encoding: 'utf8', timeout: 60000 });
    assert.ifError(r.error);
    return r;
}

test('deploy: the name check finds a typo in a metric or a function, and passes good expressions', () => {
    assert.deepEqual(promqlNames('sum by (code) (rate(herald_disconnects_total{instance=~"$instance",code!="3000"}[$__rate_interval]))'),
        { metrics: ['herald_disconnects_total'], functions: ['sum', 'rate'] });
    assert.deepEqual(promqlNames('herald_feed_slot_lag_bytes > 256 * 1024 * 1e3'),
        { metrics: ['herald_feed_slot_lag_bytes'], functions: [] });
    assert.deepEqual(problems([{ where: 'x', expr: 'histogram_quantile(0.99, sum by (le) (rate(herald_publish_to_write_seconds_bucket[5m])))' }]), []);
    assert.equal(problems([{ where: 'x', expr: 'sum(herald_clinets)' }]).length, 1);
    assert.equal(problems([{ where: 'x', expr: 'rate(herald_publications[5m])' }]).length, 1);
    assert.equal(problems([{ where: 'x', expr: 'herald_publish_to_write_seconds' }]).length, 1, 'a histogram without its suffix');
    assert.equal(problems([{ where: 'x', expr: 'herald_engine_command_seconds_bucket_total' }]).length, 1);
    assert.equal(problems([{ where: 'x', expr: 'histogram_quantil(0.5, herald_engine_command_seconds_bucket)' }]).length, 1);
});

test('deploy: the Grafana dashboard is a JSON model over the exposed metrics only', () => {
    const d = JSON.parse(readFileSync(DASHBOARD, 'utf8'));
    assert.equal(d.uid, 'herald');
    assert.ok(d.__inputs.some((i) => i.name === 'DS_PROMETHEUS' && i.pluginId === 'prometheus'));
    const vars = Object.fromEntries(d.templating.list.map((v) => [v.name, v]));
    assert.equal(vars.datasource.type, 'datasource');
    assert.equal(vars.datasource.query, 'prometheus');
    assert.equal(vars.instance.type, 'query');
    const exprs = dashboardExprs(d);
    assert.ok(exprs.length >= 30, `${exprs.length} queries`);
    assert.deepEqual(problems(exprs), []);
    // Every query of a panel asks the chosen data source and the chosen nodes.
    const ids = new Set();
    const walk = (panels) => {
        for (const p of panels || []) {
            assert.ok(!ids.has(p.id), `panel id ${p.id} twice`);
            ids.add(p.id);
            assert.ok(p.gridPos && p.gridPos.w > 0 && p.gridPos.x + p.gridPos.w <= 24, `panel "${p.title}" gridPos`);
            for (const t of p.targets || []) {
                assert.equal(t.datasource.uid, '${datasource}', `panel "${p.title}"`);
                assert.match(t.expr, /instance=~"\$instance"/, `panel "${p.title}": ${t.expr}`);
            }
            walk(p.panels);
        }
    };
    walk(d.panels);
    // What the dashboard must show (issue 17).
    const shown = new Set(exprs.flatMap((e) => promqlNames(e.expr).metrics));
    for (const m of ['herald_connections', 'herald_clients', 'herald_subscriptions', 'herald_channels',
        'herald_publications_total', 'herald_messages_sent_total', 'herald_publish_to_write_seconds_bucket',
        'herald_disconnects_total', 'herald_rate_limited_total', 'herald_slow_consumer_disconnects_total',
        'herald_engine_up', 'herald_engine_command_seconds_bucket', 'herald_feed_slot_lag_bytes',
        'herald_feed_seconds_behind', 'process_cpu_seconds_total', 'process_resident_memory_bytes']) {
        assert.ok(shown.has(m), `the dashboard shows ${m}`);
    }
    const quantiles = exprs.filter((e) => /histogram_quantile\(0\.(5|99), sum by \(le\) \(rate\(herald_publish_to_write_seconds_bucket/.test(e.expr));
    assert.equal(quantiles.length, 2, 'p50 and p99 of publish-to-write');
});

test('deploy: promtool checks the alerting rules and their unit tests pass', () => {
    const check = promtool(['check', 'rules', ALERTS]);
    assert.equal(check.status, 0, `promtool check rules:\n${check.stdout}${check.stderr}`);
    assert.match(check.stdout, /SUCCESS: \d+ rules found/);
    const unit = promtool(['test', 'rules', ALERT_TESTS]);
    assert.equal(unit.status, 0, `promtool test rules:\n${unit.stdout}${unit.stderr}`);
    const text = readFileSync(ALERTS, 'utf8');
    const alerts = alertExprs(text);
    assert.deepEqual(alerts.map((a) => a.where).sort(), ['alert HeraldDown', 'alert HeraldFeedDown',
        'alert HeraldFeedLagBytes', 'alert HeraldFeedSecondsBehind', 'alert HeraldNotReady',
        'alert HeraldRedisDown', 'alert HeraldSlowConsumerDisconnects']);
    assert.equal(alerts.length, (text.match(/^\s*- alert:/gm) || []).length, 'every alert has a one-line expr');
    assert.deepEqual(problems(alerts), []);
});
