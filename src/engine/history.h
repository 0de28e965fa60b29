/* A channel's history in the memory engine: a ring of the latest publications, bounded
 * by size and by age. Each entry holds its publication as a refcounted frame (data
 * bytes, then info bytes), so that readers take references under the channel's lock
 * and render after releasing it. Offsets and epochs belong to the stream
 * (engine/memory.c); the ring only keeps entries. Not thread-safe: the caller holds
 * the channel's lock. */
#ifndef HERALD_ENGINE_HISTORY_H
#define HERALD_ENGINE_HISTORY_H

#include <stdint.h>

struct frame;

struct history_entry {
    uint64_t offset;
    uint64_t time_ms;
    struct frame *pub;  /* data then info; one reference held by the ring */
    uint32_t data_len;  /* the rest of pub->len is info */
    uint32_t info_len;  /* 0: no info */
};

/* The ring starts small and doubles up to max as publications arrive, so a channel
 * that holds one publication costs a few entries, not history_size of them. */
struct history {
    uint32_t max, cap, count, head; /* head: index of the oldest entry */
    struct history_entry *e;
};

/* A ring for up to max entries (max >= 1), or NULL. */
struct history *history_new(uint32_t max);
void history_free(struct history *h);
/* Append (the ring takes over the entry's reference); evicts the oldest when it holds
 * max entries (or when it cannot grow: out of memory). */
void history_push(struct history *h, const struct history_entry *e);
/* Drop entries with time_ms + ttl_ms <= now_ms (ttl_ms 0: keep). Returns how many remain. */
uint32_t history_expire(struct history *h, uint64_t now_ms, uint64_t ttl_ms);
/* i-th entry from the oldest (i < count). */
const struct history_entry *history_at(const struct history *h, uint32_t i);
/* Oldest offset held, or 0 when empty. */
uint64_t history_first_offset(const struct history *h);
/* Remove everything. */
void history_clear(struct history *h);

#endif
