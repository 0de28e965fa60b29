/* herald command line: serve (default), genconfig, gentoken, version. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/jwt.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "net/loop.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: herald [serve] [--config FILE] [--key value ...]   run the server\n"
            "       herald genconfig [-o FILE]                        write a config with fresh "
            "secrets\n"
            "       herald gentoken --config FILE --user ID [--ttl SECONDS] [--channel CH]\n"
            "                                                         print a connection token\n"
            "                                                         (a subscription token with "
            "--channel)\n"
            "       herald version\n"
            "Every config key is also a flag (--listen 127.0.0.1:8000) and an environment\n"
            "variable (HERALD_LISTEN); see docs/configuration.md.\n");
}

static int cmd_genconfig(int argc, char **argv)
{
    FILE *out = stdout;
    if (argc >= 2 && (strcmp(argv[0], "-o") == 0 || strcmp(argv[0], "--output") == 0)) {
        out = fopen(argv[1], "wx");
        if (out == NULL) {
            fprintf(stderr, "herald genconfig: cannot create %s (it must not exist yet)\n",
                    argv[1]);
            return 1;
        }
    } else if (argc > 0) {
        usage(stderr);
        return 2;
    }
    int rc = config_generate(out);
    if (out != stdout)
        fclose(out);
    return rc == 0 ? 0 : 1;
}

static int cmd_gentoken(int argc, char **argv)
{
    const char *user = NULL, *channel = NULL;
    long long ttl = 0;
    char **rest = calloc((size_t)argc + 1, sizeof(char *));
    int nrest = 0;
    if (rest == NULL)
        return 1;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--user") == 0 && i + 1 < argc)
            user = argv[++i];
        else if (strcmp(argv[i], "--channel") == 0 && i + 1 < argc)
            channel = argv[++i];
        else if (strcmp(argv[i], "--ttl") == 0 && i + 1 < argc) {
            char *end;
            ttl = strtoll(argv[++i], &end, 10);
            if (*end || ttl < 0) {
                fprintf(stderr, "herald gentoken: --ttl: expected seconds\n");
                free(rest);
                return 2;
            }
        } else
            rest[nrest++] = argv[i];
    }
    if (user == NULL) {
        fprintf(stderr, "herald gentoken: --user ID is required\n");
        free(rest);
        return 2;
    }
    struct config c;
    char err[256];
    if (config_load(&c, nrest, rest, err, sizeof(err)) != 0) {
        fprintf(stderr, "herald gentoken: %s\n", err);
        free(rest);
        return 2;
    }
    free(rest);
    if (c.token_hmac_secret == NULL) {
        fprintf(stderr, "herald gentoken: token_hmac_secret is not set\n");
        config_free(&c);
        return 2;
    }
    struct buf payload = BUF_INIT;
    buf_append_str(&payload, "{\"sub\":");
    buf_append_json_str(&payload, (const uint8_t *)user, strlen(user));
    if (channel) {
        buf_append_str(&payload, ",\"channel\":");
        buf_append_json_str(&payload, (const uint8_t *)channel, strlen(channel));
    }
    long long now = (long long)time(NULL);
    buf_appendf(&payload, ",\"iat\":%lld", now);
    if (ttl > 0)
        buf_appendf(&payload, ",\"exp\":%lld", now + ttl);
    buf_append_char(&payload, '}');
    char *token = jwt_sign_hs256(payload.p, payload.len, (const uint8_t *)c.token_hmac_secret,
                                 strlen(c.token_hmac_secret));
    buf_free(&payload);
    config_free(&c);
    if (token == NULL)
        return 1;
    printf("%s\n", token);
    free(token);
    return 0;
}

static int cmd_serve(int argc, char **argv)
{
    struct config c;
    char err[256];
    if (config_load(&c, argc, argv, err, sizeof(err)) != 0) {
        fprintf(stderr, "herald: %s\n", err);
        return 2;
    }
    if (c.token_hmac_secret == NULL && !c.allow_anonymous)
        log_warn("token_hmac_secret is not set and allow_anonymous is off: no client can "
                 "connect (run: herald genconfig -o herald.json)");
    if (c.api_key == NULL)
        log_warn("api_key is not set: the server API answers 401 to everything");
    int rc = server_run(&c);
    config_free(&c);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 2) {
        const char *cmd = argv[1];
        if (strcmp(cmd, "genconfig") == 0)
            return cmd_genconfig(argc - 2, argv + 2);
        if (strcmp(cmd, "gentoken") == 0)
            return cmd_gentoken(argc - 2, argv + 2);
        if (strcmp(cmd, "serve") == 0)
            return cmd_serve(argc - 2, argv + 2);
        if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
            printf("herald 0.1.0\n");
            return 0;
        }
        if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
            usage(stdout);
            return 0;
        }
    }
    return cmd_serve(argc - 1, argv + 1);
}
