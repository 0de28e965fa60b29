/* The messages herald's nodes send each other on a channel's Redis pub/sub channel:
 *   p<offset> <info length> <info><data>   a publication (offset 0: no history)
 *   j<info> / l<info>                      a join / a leave
 * Anyone who can write to Redis can write these, so they are parsed as hostile input. */
#ifndef HERALD_ENGINE_REDIS_MSG_H
#define HERALD_ENGINE_REDIS_MSG_H

#include <stddef.h>
#include <stdint.h>

enum redis_msg_type { REDIS_MSG_PUBLICATION, REDIS_MSG_JOIN, REDIS_MSG_LEAVE };

struct redis_msg {
    enum redis_msg_type type;
    uint64_t offset;
    const char *info, *data; /* point into the message */
    size_t info_len, data_len;
};

/* 0 and *out filled, or -1: not a message herald sends (dropped by the caller). */
int redis_msg_parse(const char *m, size_t len, struct redis_msg *out);

#endif
