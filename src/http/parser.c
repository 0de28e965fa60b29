/* HTTP/1.1 request-head parser (RFC 9112), see parser.h: one validating pass over the
 * head, fields point into the caller's buffer. Not the body reader or the router. */
#include "http/parser.h"

#include <limits.h>
#include <string.h>

/* tchar (RFC 9110 §5.6.2): "!#$%&'*+-.^_`|~", DIGIT, ALPHA. */
static const uint8_t token_char[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

/* Bytes allowed in a field value (RFC 9110 §5.5): VCHAR, obs-text (>= 0x80), SP, HTAB.
 * CR and LF are not in it: the scan stops there and decides. */
static const uint8_t value_char[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

/* Used when the caller passes no limits. */
static const struct http_limits default_limits = {8192, HTTP_MAX_HEADERS};

static inline uint8_t ascii_lower(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c | 0x20) : c;
}

/* p[0..len) equals the lowercase literal lc, ASCII case-insensitively. */
static int equals_lower(const uint8_t *p, size_t len, const char *lc, size_t lc_len)
{
    if (len != lc_len)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (ascii_lower(p[i]) != (uint8_t)lc[i])
            return 0;
    return 1;
}

/* Advance *i over bytes of class table, stopping at the first other byte or at n. The
 * unrolled part checks eight bytes per bound test: values and names are most of a head. */
static inline size_t scan_class(const uint8_t *p, size_t i, size_t n, const uint8_t *table)
{
    while (n - i >= 8) {
        if (!table[p[i]])
            return i;
        if (!table[p[i + 1]])
            return i + 1;
        if (!table[p[i + 2]])
            return i + 2;
        if (!table[p[i + 3]])
            return i + 3;
        if (!table[p[i + 4]])
            return i + 4;
        if (!table[p[i + 5]])
            return i + 5;
        if (!table[p[i + 6]])
            return i + 6;
        if (!table[p[i + 7]])
            return i + 7;
        i += 8;
    }
    while (i < n && table[p[i]])
        i++;
    return i;
}

#define NAME_IS(p, len, lit) equals_lower((p), (len), (lit), sizeof(lit) - 1)

static enum http_method method_of(const uint8_t *m, size_t len)
{
    /* Methods are case-sensitive (RFC 9110 §9.1). */
    switch (len) {
    case 3:
        if (memcmp(m, "GET", 3) == 0)
            return HTTP_GET;
        if (memcmp(m, "PUT", 3) == 0)
            return HTTP_PUT;
        break;
    case 4:
        if (memcmp(m, "HEAD", 4) == 0)
            return HTTP_HEAD;
        if (memcmp(m, "POST", 4) == 0)
            return HTTP_POST;
        break;
    case 6:
        if (memcmp(m, "DELETE", 6) == 0)
            return HTTP_DELETE;
        break;
    case 7:
        if (memcmp(m, "OPTIONS", 7) == 0)
            return HTTP_OPTIONS;
        break;
    }
    return HTTP_OTHER;
}

/* Line end at p[*i], which the caller saw is CR or LF: CRLF, or a bare LF (RFC 9112 §2.2
 * lets a recipient accept it). A CR not followed by LF is an error (bare CR). Returns
 * 1 and advances past it, 0 if the LF has not arrived, -1 on a bare CR. */
static int line_end(const uint8_t *p, size_t n, size_t *i)
{
    if (p[*i] == '\n') {
        *i += 1;
        return 1;
    }
    if (*i + 1 >= n)
        return 0;
    if (p[*i + 1] != '\n')
        return -1;
    *i += 2;
    return 1;
}

/* Content-Length (RFC 9110 §8.6): 1*DIGIT, no sign, no list, must fit int64_t. */
static int64_t parse_content_length(const uint8_t *v, size_t len)
{
    if (len == 0)
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        int d = v[i] - '0';
        if (n > (INT64_MAX - d) / 10)
            return -1;
        n = n * 10 + d;
    }
    return n;
}

/* One Transfer-Encoding field line: its codings (a list, empty elements ignored, RFC
 * 9110 §5.6.1) appended to those of the lines before. *last_chunked says whether the
 * final coding so far is chunked, *chunked counts them. */
static void transfer_codings(const uint8_t *v, size_t len, int *last_chunked, int *chunked)
{
    size_t i = 0;
    while (i < len) {
        const uint8_t *comma = memchr(v + i, ',', len - i);
        size_t end = comma ? (size_t)(comma - v) : len;
        size_t s = i, e = end;
        while (s < e && (v[s] == ' ' || v[s] == '\t'))
            s++;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e > s) {
            *last_chunked = equals_lower(v + s, e - s, "chunked", 7);
            *chunked += *last_chunked;
        }
        i = end + 1;
    }
}

/* The length of "http://" or "https://" (either case) at the start of p[0..n), or 0. */
static size_t absolute_scheme(const uint8_t *p, size_t n)
{
    static const char http[] = "http";
    if (n < 7)
        return 0;
    for (size_t k = 0; k < 4; k++)
        if ((p[k] | 0x20) != http[k])
            return 0;
    size_t at = 4;
    if ((p[at] | 0x20) == 's')
        at++;
    if (n < at + 3 || p[at] != ':' || p[at + 1] != '/' || p[at + 2] != '/')
        return 0;
    return at + 3;
}

int http_parse_request(const uint8_t *p, size_t len, const struct http_limits *lim,
                       struct http_request *req)
{
    if (lim == NULL)
        lim = &default_limits;
    size_t max_headers = lim->max_headers < HTTP_MAX_HEADERS ? lim->max_headers : HTTP_MAX_HEADERS;
    /* Never look past max_head: a head that does not end within it is -431 whatever
     * follows, and this bounds the work done on a slow or hostile client. */
    size_t max_head = lim->max_head < INT_MAX ? lim->max_head : INT_MAX; /* fits the result */
    size_t n = len < max_head ? len : max_head;
    size_t i = 0;
    int r;

    req->num_headers = 0;
    req->content_length = -1;
    req->has_transfer_encoding = 0;
    req->transfer_chunked = 0;
    req->query = NULL;
    req->query_len = 0;

    /* RFC 9112 §2.2: ignore empty lines before the request-line (some clients send a
     * CRLF after a POST body). */
    while (i < n && (p[i] == '\r' || p[i] == '\n')) {
        if ((r = line_end(p, n, &i)) <= 0)
            goto stop;
    }

    /* request-line = method SP request-target SP HTTP-version (RFC 9112 §3), single SPs. */
    size_t start = i;
    while (i < n && token_char[p[i]])
        i++;
    if (i >= n)
        goto incomplete;
    if (p[i] != ' ' || i == start)
        return -400;
    req->method_str = p + start;
    req->method_len = i - start;
    req->method = method_of(req->method_str, req->method_len);
    i++;

    /* Origin-form (RFC 9112 §3.2.1), or absolute-form, which a server must accept too
     * (§3.2.2): "http://host[:port]" and what follows, its path (or "/") taken as the
     * origin-form's; the Host header is not used for anything here. Authority-form and
     * '*' are for proxies and OPTIONS-to-server, which we do not serve. */
    if (i >= n)
        goto incomplete;
    if (p[i] != '/' && p[i] != 'h' && p[i] != 'H')
        return -400;
    start = i;
    while (i < n && p[i] > 0x20 && p[i] < 0x7f)
        i++;
    if (i >= n)
        goto incomplete;
    if (p[i] != ' ')
        return -400;
    size_t from = start;
    if (p[start] != '/') {
        size_t scheme = absolute_scheme(p + start, i - start);
        if (scheme == 0)
            return -400;
        from = start + scheme; /* the authority, then the path */
        while (from < i && p[from] != '/' && p[from] != '?')
            from++;
        if (from == start + scheme || memchr(p + start + scheme, '@', from - start - scheme))
            return -400; /* no host, or user info (RFC 9110 §4.2.4: not to be sent) */
    }
    const uint8_t *qmark = memchr(p + from, '?', i - from);
    size_t path_len = qmark ? (size_t)(qmark - (p + from)) : i - from;
    req->path = path_len ? p + from : (const uint8_t *)"/";
    req->path_len = path_len ? path_len : 1;
    if (qmark != NULL) {
        req->query = qmark + 1;
        req->query_len = (size_t)(p + i - qmark - 1);
    }
    i++;

    /* HTTP-version = "HTTP/" DIGIT "." DIGIT, checked byte by byte so garbage is
     * rejected before the line is complete. */
    static const char version_shape[] = "HTTP/d.d";
    for (size_t k = 0; k < 8; k++, i++) {
        if (i >= n)
            goto incomplete;
        uint8_t want = (uint8_t)version_shape[k];
        if (want == 'd' ? (p[i] < '0' || p[i] > '9') : p[i] != want)
            return -400;
    }
    if (i >= n)
        goto incomplete;
    if (p[i] != '\r' && p[i] != '\n')
        return -400;
    if (p[i - 3] != '1' || (p[i - 1] != '0' && p[i - 1] != '1'))
        return -505;
    req->minor_version = p[i - 1] - '0';
    if ((r = line_end(p, n, &i)) <= 0)
        goto stop;

    /* field-line = field-name ":" OWS field-value OWS (RFC 9112 §5). */
    int hosts = 0, conn_close = 0, conn_keep_alive = 0, te_last_chunked = 0, te_chunked = 0;
    for (;;) {
        if (i >= n)
            goto incomplete;
        uint8_t c = p[i];
        if (c == '\r' || c == '\n') {
            if ((r = line_end(p, n, &i)) <= 0)
                goto stop;
            break;
        }
        /* A line starting with whitespace is obs-fold (RFC 9112 §5.2), or whitespace
         * between the start-line and the first field (§2.2): reject both. */
        if (c == ' ' || c == '\t')
            return -400;
        if (req->num_headers == max_headers)
            return -431;

        start = i;
        i = scan_class(p, i, n, token_char);
        if (i >= n)
            goto incomplete;
        /* No whitespace between name and colon (RFC 9112 §5.1). */
        if (p[i] != ':' || i == start)
            return -400;
        const uint8_t *name = p + start;
        size_t name_len = i - start;
        i++;
        while (i < n && (p[i] == ' ' || p[i] == '\t'))
            i++;
        start = i;
        i = scan_class(p, i, n, value_char);
        if (i >= n)
            goto incomplete;
        if (p[i] != '\r' && p[i] != '\n')
            return -400; /* control character in the value */
        size_t end = i;
        while (end > start && (p[end - 1] == ' ' || p[end - 1] == '\t'))
            end--;
        if ((r = line_end(p, n, &i)) <= 0)
            goto stop;

        struct http_header *h = &req->headers[req->num_headers++];
        h->name = name;
        h->name_len = name_len;
        h->value = p + start;
        h->value_len = end - start;

        switch (name_len) {
        case 4:
            if (NAME_IS(name, name_len, "host"))
                hosts++;
            break;
        case 10:
            if (NAME_IS(name, name_len, "connection")) {
                conn_close |= http_value_has_token(h->value, h->value_len, "close");
                conn_keep_alive |= http_value_has_token(h->value, h->value_len, "keep-alive");
            }
            break;
        case 14:
            if (NAME_IS(name, name_len, "content-length")) {
                int64_t cl = parse_content_length(h->value, h->value_len);
                /* RFC 9112 §6.3: invalid, or several differing values, is unrecoverable. */
                if (cl < 0 || (req->content_length >= 0 && req->content_length != cl))
                    return -400;
                req->content_length = cl;
            }
            break;
        case 17:
            if (NAME_IS(name, name_len, "transfer-encoding")) {
                req->has_transfer_encoding = 1;
                transfer_codings(h->value, h->value_len, &te_last_chunked, &te_chunked);
            }
            break;
        }
    }

    /* RFC 9112 §3.2: 400 for a 1.1 request without Host, or any with more than one. */
    if ((req->minor_version == 1 && hosts == 0) || hosts > 1)
        return -400;
    /* RFC 9112 §6.1: both framings at once is a smuggling attempt; refuse it. */
    if (req->has_transfer_encoding && req->content_length >= 0)
        return -400;
    req->transfer_chunked = te_last_chunked && te_chunked == 1;
    if (req->minor_version == 1)
        req->keep_alive = !conn_close;
    else
        req->keep_alive = conn_keep_alive && !conn_close;
    return (int)i;

stop:
    if (r < 0)
        return -400;
incomplete:
    return len > max_head ? -431 : 0;
}

const struct http_header *http_find_header(const struct http_request *req, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < req->num_headers; i++) {
        const struct http_header *h = &req->headers[i];
        if (h->name_len != len)
            continue;
        size_t k = 0;
        while (k < len && ascii_lower(h->name[k]) == ascii_lower((uint8_t)name[k]))
            k++;
        if (k == len)
            return h;
    }
    return NULL;
}

int http_value_has_token(const uint8_t *value, size_t len, const char *token)
{
    size_t token_len = strlen(token);
    size_t i = 0;
    while (i < len) {
        const uint8_t *comma = memchr(value + i, ',', len - i);
        size_t end = comma ? (size_t)(comma - value) : len;
        size_t s = i, e = end;
        while (s < e && (value[s] == ' ' || value[s] == '\t'))
            s++;
        while (e > s && (value[e - 1] == ' ' || value[e - 1] == '\t'))
            e--;
        if (e - s == token_len) {
            size_t k = 0;
            while (k < token_len && ascii_lower(value[s + k]) == ascii_lower((uint8_t)token[k]))
                k++;
            if (k == token_len)
                return 1;
        }
        i = end + 1;
    }
    return 0;
}

const char *http_status_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    }
    return "Unknown";
}
