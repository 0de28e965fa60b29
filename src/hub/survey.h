/* Every node's channels, through the engine's controls (survey.c): the hub's own. */
#ifndef HERALD_HUB_SURVEY_H
#define HERALD_HUB_SURVEY_H

#include <stddef.h>
#include <stdint.h>

#include "hub/hub.h"

struct loop;

/* The two control kinds of a survey (a session's controls are below 0x20). */
#define SURVEY_REQUEST 0x20
#define SURVEY_REPLY 0x21

void survey_init(unsigned nloops, struct loop *const *loops);
/* Loop thread, at its end: the surveys still waiting there answer with what they have. */
void survey_loop_exit(struct loop *loop);
/* A control message from some node (any thread): 1 if it was a survey's (taken here),
 * 0 if not. */
int survey_control(const uint8_t *msg, size_t len);

/* A reply's parts (borrowed from the message); -1 unless the message is a whole one. */
struct survey_reply {
    uint64_t id;
    const uint8_t *asker, *from, *entries;
    size_t asker_len, from_len, entries_len;
};
int survey_parse_reply(const uint8_t *msg, size_t len, struct survey_reply *out);
/* The channels of a run of whole entries, sorted, each name's subscribers summed: cb
 * once (status -1 out of memory). */
void survey_merge(const uint8_t *p, size_t len, hub_channels_cb cb, void *ud);

#endif
