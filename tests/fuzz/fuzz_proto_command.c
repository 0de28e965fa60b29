/* libFuzzer target for proto/command: decode a writable copy of the input and check
 * that every span the command holds stays inside that copy. */
#include "proto/command.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_span(struct json_span s, const uint8_t *p, size_t len)
{
    if (s.p == NULL) {
        assert(s.len == 0);
        return;
    }
    assert(s.p >= p && s.len <= len && (size_t)(s.p - p) <= len - s.len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *p = malloc(size ? size : 1);
    if (p == NULL)
        return 0;
    memcpy(p, data, size);
    struct proto_command cmd;
    if (proto_command_decode(p, size, &cmd) == 0) {
        check_span(cmd.token, p, size);
        check_span(cmd.name, p, size);
        check_span(cmd.version, p, size);
        check_span(cmd.channel, p, size);
        check_span(cmd.data, p, size);
        check_span(cmd.epoch, p, size);
        check_span(cmd.rpc_method, p, size);
        check_span(cmd.since_epoch, p, size);
        assert(cmd.method >= PROTO_EMPTY && cmd.method <= PROTO_SUB_REFRESH);
        if (cmd.method != PROTO_EMPTY && cmd.method != PROTO_SEND)
            assert(cmd.id != 0);
        if (cmd.channel.p != NULL) {
            assert(cmd.channel.len >= 1 && cmd.channel.len <= PROTO_MAX_CHANNEL);
            for (size_t i = 0; i < cmd.channel.len; i++)
                assert(cmd.channel.p[i] >= 0x20);
        }
    }
    free(p);
    return 0;
}
