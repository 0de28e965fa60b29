/* Unit tests for metrics/: histogram buckets and their cumulative exposition, sums over
 * slots, close and error code indexes, label escaping, and the whole exposition's shape. */
#include "metrics/metrics.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "test.h"

/* The line of out that starts with prefix, copied (NUL-terminated) into line; 0 if none. */
static int find_line(const struct buf *out, const char *prefix, char *line, size_t cap)
{
    size_t n = strlen(prefix);
    for (size_t i = 0; i < out->len;) {
        const uint8_t *nl = memchr(out->p + i, '\n', out->len - i);
        size_t end = nl ? (size_t)(nl - out->p) : out->len;
        if (end - i >= n && memcmp(out->p + i, prefix, n) == 0) {
            size_t len = end - i < cap - 1 ? end - i : cap - 1;
            memcpy(line, out->p + i, len);
            line[len] = '\0';
            return 1;
        }
        i = end + 1;
    }
    return 0;
}

static int has_line(const struct buf *out, const char *whole)
{
    char line[256];
    return find_line(out, whole, line, sizeof(line)) && strcmp(line, whole) == 0;
}

TEST(test_metrics_histogram_bucket_bounds_are_inclusive)
{
    CHECK_EQ(metrics_init(1), 0);
    metrics_set_thread_slot(0);
    metrics_observe(METRIC_H_PUBLISH_TO_WRITE, 0);       /* le 0.0001 */
    metrics_observe(METRIC_H_PUBLISH_TO_WRITE, 100);     /* le 0.0001: the bound itself */
    metrics_observe(METRIC_H_PUBLISH_TO_WRITE, 101);     /* le 0.0005 */
    metrics_observe(METRIC_H_PUBLISH_TO_WRITE, 2500000); /* le 2.5 */
    metrics_observe(METRIC_H_PUBLISH_TO_WRITE, 2500001); /* +Inf only */
    struct metrics_hist h;
    metrics_hist_sum(METRIC_H_PUBLISH_TO_WRITE, &h);
    CHECK_EQ(h.bucket[0], 2);
    CHECK_EQ(h.bucket[1], 1);
    CHECK_EQ(h.bucket[METRIC_BUCKETS - 1], 1);
    CHECK_EQ(h.bucket[METRIC_BUCKETS], 1);
    CHECK_EQ(h.sum_us, 0 + 100 + 101 + 2500000 + 2500001);
    struct buf out = BUF_INIT;
    metrics_write_hist(&out, "x_seconds", &h);
    CHECK(has_line(&out, "x_seconds_bucket{le=\"0.0001\"} 2"));
    CHECK(has_line(&out, "x_seconds_bucket{le=\"0.0005\"} 3"));
    CHECK(has_line(&out, "x_seconds_bucket{le=\"0.001\"} 3"));
    CHECK(has_line(&out, "x_seconds_bucket{le=\"2.5\"} 4"));
    CHECK(has_line(&out, "x_seconds_bucket{le=\"+Inf\"} 5"));
    CHECK(has_line(&out, "x_seconds_sum 5.000202"));
    CHECK(has_line(&out, "x_seconds_count 5"));
    buf_free(&out);
    metrics_free();
}

TEST(test_metrics_sums_every_slot_and_keeps_them_apart)
{
    CHECK_EQ(metrics_init(3), 0);
    CHECK_EQ(metrics_nslots, 4); /* three loops and the others' */
    CHECK_EQ(metrics_other_slot(), 3);
    for (unsigned s = 0; s < metrics_nslots; s++) {
        metrics_set_thread_slot(s);
        metrics_count(METRIC_MESSAGES_IN, (int64_t)s + 1);
        metrics_observe(METRIC_H_ENGINE_COMMAND, 1000);
        metrics_count_method(METRIC_M_PING);
    }
    CHECK_EQ(metrics_sum(METRIC_MESSAGES_IN), 1 + 2 + 3 + 4);
    CHECK_EQ(atomic_load(&metrics_slots[2].v[METRIC_MESSAGES_IN]), 3);
    struct metrics_hist h;
    metrics_hist_sum(METRIC_H_ENGINE_COMMAND, &h);
    CHECK_EQ(h.bucket[2], 4); /* le 0.001 */
    /* A gauge that went below zero on one slot and up on another sums right. */
    metrics_add(0, METRIC_CLIENTS, -2);
    metrics_add(1, METRIC_CLIENTS, 5);
    CHECK_EQ(metrics_sum(METRIC_CLIENTS), 3);
    /* A slot out of range is slot 0, never out of bounds. */
    metrics_set_thread_slot(99);
    CHECK_EQ(metrics_self, 0);
    struct buf out = BUF_INIT;
    metrics_write(&out);
    CHECK(has_line(&out, "herald_commands_total{method=\"ping\"} 4"));
    CHECK(has_line(&out, "herald_messages_received_total 10"));
    CHECK(has_line(&out, "herald_loop_queued_bytes{loop=\"2\"} 0"));
    char line[256];
    CHECK(!find_line(&out, "herald_loop_queued_bytes{loop=\"3\"}", line, sizeof(line)));
    buf_free(&out);
    metrics_free();
}

TEST(test_metrics_close_codes_by_index_and_zero_not_counted)
{
    CHECK_EQ(metrics_init(1), 0);
    metrics_set_thread_slot(0);
    metrics_count_close(0);
    metrics_count_close(1000);
    metrics_count_close(1015);
    metrics_count_close(3000);
    metrics_count_close(3008);
    metrics_count_close(3008);
    metrics_count_close(4999);
    metrics_count_close(1016); /* other */
    metrics_count_close(5000); /* other */
    metrics_count_error(111);
    metrics_count_error(100);
    metrics_count_error(112);
    metrics_count_error(99); /* other */
    struct buf out = BUF_INIT;
    metrics_write(&out);
    CHECK(has_line(&out, "herald_disconnects_total{code=\"1000\"} 1"));
    CHECK(has_line(&out, "herald_disconnects_total{code=\"1015\"} 1"));
    CHECK(has_line(&out, "herald_disconnects_total{code=\"3000\"} 1"));
    CHECK(has_line(&out, "herald_disconnects_total{code=\"3008\"} 2"));
    CHECK(has_line(&out, "herald_disconnects_total{code=\"4999\"} 1"));
    CHECK(has_line(&out, "herald_disconnects_total{code=\"other\"} 2"));
    char line[256];
    CHECK(!find_line(&out, "herald_disconnects_total{code=\"3001\"}", line, sizeof(line)));
    CHECK(has_line(&out, "herald_command_errors_total{code=\"100\"} 1"));
    CHECK(has_line(&out, "herald_command_errors_total{code=\"111\"} 1"));
    CHECK(has_line(&out, "herald_command_errors_total{code=\"112\"} 1"));
    CHECK(has_line(&out, "herald_command_errors_total{code=\"101\"} 0"));
    CHECK(has_line(&out, "herald_command_errors_total{code=\"other\"} 1"));
    buf_free(&out);
    metrics_free();
}

TEST(test_metrics_label_values_are_escaped)
{
    char out[64];
    metrics_escape_label("a\"b\\c\nd", out, sizeof(out));
    CHECK(strcmp(out, "a\\\"b\\\\c\\nd") == 0);
    /* Cut short rather than past the buffer, and still terminated. */
    metrics_escape_label("\"\"\"\"\"\"", out, 6);
    CHECK(strlen(out) < 6);
    CHECK(strcmp(out, "\\\"\\\"") == 0); /* two whole escapes, never half of one */
}

TEST(test_metrics_writer_lines)
{
    struct buf out = BUF_INIT;
    metrics_write_family(&out, "a_total", "counter", "What a is.");
    metrics_write_counter(&out, "a_total", "", 18446744073709551615ull);
    metrics_write_counter(&out, "a_total", "k=\"v\"", 3);
    metrics_write_sample(&out, "g", "", 2.5);
    metrics_write_sample(&out, "g", "", 1e12);
    CHECK_MEM(out.p, out.len,
              "# HELP a_total What a is.\n# TYPE a_total counter\n"
              "a_total 18446744073709551615\na_total{k=\"v\"} 3\ng 2.500000\ng 1000000000000\n");
    buf_free(&out);
}

/* Every line is a comment or "name[{labels}] value", every family has HELP and TYPE
 * before its samples, and the names the dashboard reads are there. */
TEST(test_metrics_exposition_is_well_formed)
{
    CHECK_EQ(metrics_init(2), 0);
    struct metrics_sources src = {.version = "1.2\"3", .commit = "abc", .feed = 1, .history = 1};
    metrics_set_sources(&src);
    metrics_engine_shard(0, "redis://127.0.0.1:6379");
    metrics_engine_up(0, 1);
    metrics_engine_shard(0, "ignored: named once");
    metrics_refresh_open_fds(); /* main.c's timer, off the loops */
    struct buf out = BUF_INIT;
    metrics_write(&out);
    CHECK(!out.oom);
    CHECK(has_line(&out, "herald_build_info{version=\"1.2\\\"3\",commit=\"abc\"} 1"));
    CHECK(has_line(&out, "herald_engine_up{shard=\"redis://127.0.0.1:6379\"} 1"));
    CHECK(has_line(&out, "herald_feed_up 0"));
    CHECK(has_line(&out, "# TYPE herald_publish_to_write_seconds histogram"));
    CHECK(has_line(&out, "# TYPE herald_engine_command_seconds histogram"));
    char line[256];
    const char *names[] = {"process_cpu_seconds_total ",  "process_resident_memory_bytes ",
                           "process_open_fds ",           "process_max_fds ",
                           "process_start_time_seconds ", "herald_threads ",
                           "herald_history_entries ",     "herald_feed_slot_lag_bytes "};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        CHECK(find_line(&out, names[i], line, sizeof(line)));
    char typed[64] = "";
    for (size_t i = 0; i < out.len;) {
        const uint8_t *nl = memchr(out.p + i, '\n', out.len - i);
        CHECK(nl != NULL); /* the last line ends too */
        if (nl == NULL)
            break;
        size_t end = (size_t)(nl - out.p);
        char l[512];
        size_t n = end - i < sizeof(l) - 1 ? end - i : sizeof(l) - 1;
        memcpy(l, out.p + i, n);
        l[n] = '\0';
        i = end + 1;
        if (strncmp(l, "# TYPE ", 7) == 0) {
            sscanf(l + 7, "%63s", typed);
            continue;
        }
        if (l[0] == '#')
            continue;
        /* A sample of the family typed last (histograms: _bucket, _sum, _count). */
        size_t tl = strlen(typed);
        CHECK(tl > 0 && strncmp(l, typed, tl) == 0);
        const char *sp = strrchr(l, ' ');
        CHECK(sp != NULL && sp[1] != '\0');
        if (sp) {
            char *endp;
            strtod(sp + 1, &endp);
            CHECK(*endp == '\0' || strcmp(sp + 1, "+Inf") == 0);
        }
    }
    buf_free(&out);
    metrics_free();
}

int main(void)
{
    RUN(test_metrics_histogram_bucket_bounds_are_inclusive);
    RUN(test_metrics_sums_every_slot_and_keeps_them_apart);
    RUN(test_metrics_close_codes_by_index_and_zero_not_counted);
    RUN(test_metrics_label_values_are_escaped);
    RUN(test_metrics_writer_lines);
    RUN(test_metrics_exposition_is_well_formed);
    return test_summary("metrics");
}
