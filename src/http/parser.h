/* HTTP/1.1 request-head parser (RFC 9112), strict and zero-copy: fields point into
 * the caller's buffer. Hand-written: it is on the path of every connection and of
 * every API call. Not the router or the handlers (http/server.h, http/api.h). */
#ifndef HERALD_HTTP_PARSER_H
#define HERALD_HTTP_PARSER_H

#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEADERS 64

enum http_method {
    HTTP_OTHER = 0,
    HTTP_GET,
    HTTP_HEAD,
    HTTP_POST,
    HTTP_PUT,
    HTTP_DELETE,
    HTTP_OPTIONS
};

struct http_header {
    const uint8_t *name;
    size_t name_len;
    const uint8_t *value; /* leading and trailing spaces/tabs trimmed */
    size_t value_len;
};

struct http_request {
    enum http_method method;
    const uint8_t *method_str;
    size_t method_len;
    const uint8_t *path; /* request target up to '?' in origin-form (starts with '/'; of an
                            absolute-form target, its path, or "/") */
    size_t path_len;
    const uint8_t *query; /* after '?', without it; NULL if none */
    size_t query_len;
    int minor_version; /* HTTP/1.x */
    size_t num_headers;
    struct http_header headers[HTTP_MAX_HEADERS];
    /* derived from the headers: */
    int64_t content_length; /* -1 when absent */
    int keep_alive; /* 1.1 default on, "Connection: close" off; 1.0 default off, "keep-alive" on */
    int has_transfer_encoding;
    /* chunked is the final transfer coding, and the only chunked (RFC 9112 §6.1, §6.3):
     * a request with Transfer-Encoding and not this has no length a server can find. */
    int transfer_chunked;
};

struct http_limits {
    size_t max_head;    /* bytes of request line + headers + final CRLF */
    size_t max_headers; /* <= HTTP_MAX_HEADERS */
};

/* Parse a request head from p[0..len). Returns the head length (> 0, through the
 * empty line) when complete; 0 when more bytes are needed (and len is still within
 * max_head); a negated HTTP status on error: -400 (malformed request line, header
 * syntax, bare CR/LF rules, obs-fold, control characters, invalid or duplicate
 * conflicting Content-Length, Content-Length with Transfer-Encoding, missing Host
 * on 1.1, non-origin-form target), -431 (head over max_head or more than
 * max_headers headers), -505 (HTTP version other than 1.0/1.1). Only CRLF line ends
 * are accepted... bare LF is tolerated as the RFC permits (§2.2). */
int http_parse_request(const uint8_t *p, size_t len, const struct http_limits *lim,
                       struct http_request *req);

/* First header with this name (ASCII case-insensitive), or NULL. */
const struct http_header *http_find_header(const struct http_request *req, const char *name);

/* Does a comma-separated header value contain token (case-insensitive), e.g.
 * "keep-alive, Upgrade" has "upgrade"? */
int http_value_has_token(const uint8_t *value, size_t len, const char *token);

/* Reason phrase for a status code ("Not Found"), "Unknown" if none. */
const char *http_status_reason(int status);

#endif
