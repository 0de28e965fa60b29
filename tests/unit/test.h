/* Minimal unit-test harness: TEST(name) defines a test, RUN(name) runs it, and
 * test_summary() prints "N passed, N failed" and returns the exit status. */
#ifndef HERALD_TEST_H
#define HERALD_TEST_H

#include <stdio.h>
#include <string.h>

static int test_failed_now, test_passed, test_failed;

#define TEST(name) static void name(void)
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);             \
            test_failed_now = 1;                                                                   \
        }                                                                                          \
    } while (0)
#define CHECK_EQ(a, b)                                                                             \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            fprintf(stderr, "  %s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, #a,  \
                    a_, #b, b_);                                                                   \
            test_failed_now = 1;                                                                   \
        }                                                                                          \
    } while (0)
#define CHECK_MEM(p, n, s) CHECK((n) == strlen(s) && memcmp((p), (s), (n)) == 0)
#define RUN(name)                                                                                  \
    do {                                                                                           \
        test_failed_now = 0;                                                                       \
        name();                                                                                    \
        if (test_failed_now) {                                                                     \
            test_failed++;                                                                         \
            fprintf(stderr, "FAIL %s\n", #name);                                                   \
        } else {                                                                                   \
            test_passed++;                                                                         \
        }                                                                                          \
    } while (0)

static inline int test_summary(const char *suite)
{
    printf("%s: %d passed, %d failed\n", suite, test_passed, test_failed);
    return test_failed ? 1 : 0;
}

#endif
