/*
 * loadgen: the load generator of `netlab bench`. One thread, epoll,
 * non-blocking sockets; N connections, each with one request in flight;
 * every reply is checked, and a wrong one is an error.
 *
 *   loadgen MODE --port PORT [--host 127.0.0.1] [--connections N]
 *           [--seconds S] [--warmup S] [--size BYTES] [--window N]
 *           [--path /] [--expect TEXT] [--levels N,N,...] [--setup-timeout S]
 *           [--spin 0|1]
 *
 * echo:  --size-byte messages (64), one in flight per connection; an op is a
 *        round trip whose reply is the message sent.
 * bulk:  --size-byte writes (65536), at most --window writes (4) not yet echoed
 *        per connection; every byte echoed is checked against what was sent.
 * http:  HTTP/1.1 keep-alive "GET --path"; an op is a 200 whose body is --expect.
 * ws:    a real WebSocket handshake (Sec-WebSocket-Accept checked), then masked
 *        --size-byte text messages (32); an op is a reply "Echo: m" (or "m").
 * idle:  for each of --levels, open connections up to that many in all, each
 *        echoing one byte, then hold them; print a line per level and wait
 *        for a line on standard input before the next (end of input: exit).
 * ws-idle: idle, with WebSocket connections: each makes the handshake and
 *        has one message echoed, then holds (answering pings).
 *
 * Connections are opened at most 64 at a time, and each counts as
 * established only once its first reply came back (so the server really
 * accepted it). Then --warmup seconds not counted, then --seconds counted.
 * With --spin 1 it polls without sleeping once set up: on its own core, it
 * then answers at once instead of waiting to be woken.
 * The result is one JSON line on standard output.
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { M_ECHO, M_BULK, M_HTTP, M_WS, M_IDLE, M_WSIDLE };
#define IDLE_MODE (opt.mode == M_IDLE || opt.mode == M_WSIDLE)
#define WS_MODE (opt.mode == M_WS || opt.mode == M_WSIDLE)
enum { S_FREE, S_CONNECTING, S_HANDSHAKE, S_OPEN, S_DEAD };
enum { P_SETUP, P_WARMUP, P_MEASURE };

#define MAX_PENDING 64
#define PERIOD 251 /* the bulk pattern repeats every 251 bytes: a prime */
#define RBUF (256 * 1024)

struct conn {
    int fd, id, state, established, want_out;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
    unsigned long long seq, sent, recvd;
    char *msg;
    size_t msg_len;
    char accept[32];
};

static struct {
    int mode;
    const char *host, *path, *expect;
    int port, connections, size, window, spin;
    double seconds, warmup, setup_timeout;
    int levels[16], nlevels;
} opt = {.host = "127.0.0.1",
         .path = "/",
         .expect = "Hello, world!",
         .port = -1,
         .connections = 1,
         .size = -1,
         .window = 4,
         .seconds = 3,
         .warmup = 0.2,
         .setup_timeout = 10};

static struct conn *conns;
static int nconns, ep, phase;
static int opened, established, dead, in_progress, held;
static unsigned long long ops, bytes, errors;
static char first_error[300];
static unsigned char *pattern;
static struct sockaddr_in target;
static uint64_t rng;

static uint64_t rand64(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void kill_conn(struct conn *c)
{
    if (c->state == S_DEAD || c->state == S_FREE)
        return;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->established && c->state == S_OPEN)
        held--;
    if (!c->established)
        in_progress--;
    c->state = S_DEAD;
    dead++;
}

static void fail(struct conn *c, const char *fmt, ...)
{
    errors++;
    if (!first_error[0]) {
        int n = c ? snprintf(first_error, sizeof first_error, "connection %d: ", c->id)
                  : 0;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(first_error + n, sizeof first_error - (size_t)n, fmt, ap);
        va_end(ap);
    }
    if (c)
        kill_conn(c);
}

static void set_events(struct conn *c, int want_out)
{
    if (c->want_out == want_out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0),
                             .data.u32 = (uint32_t)c->id};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want_out;
}

static void flush_out(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            fail(c, "send: %s", strerror(errno));
            return;
        }
        c->out_off += (size_t)n;
    }
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    set_events(c, c->out_len > 0);
}

static void send_bytes(struct conn *c, const void *data, size_t len)
{
    if (c->out_len + len > c->out_cap) {
        c->out_cap = (c->out_len + len) * 2;
        c->out = xrealloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    flush_out(c);
}

static void make_message(struct conn *c)
{
    size_t size = (size_t)opt.size;
    int n = snprintf(c->msg, size + 1, "%08x %016llx ", (unsigned)c->id, c->seq);
    for (size_t i = (size_t)n; i < size; i++)
        c->msg[i] = (char)('a' + (c->seq + i) % 26);
    c->msg_len = size;
    c->seq++;
}

static void send_ws_message(struct conn *c, int opcode, const char *payload,
                            size_t len)
{
    unsigned char frame[16 + 65536];
    size_t h = 2;
    frame[0] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        frame[1] = (unsigned char)(0x80 | len);
    } else {
        frame[1] = 0x80 | 126;
        frame[2] = (unsigned char)(len >> 8);
        frame[3] = (unsigned char)len;
        h = 4;
    }
    uint64_t key = rand64();
    unsigned char *mask = frame + h;
    memcpy(mask, &key, 4);
    for (size_t i = 0; i < len; i++)
        frame[h + 4 + i] = (unsigned char)payload[i] ^ mask[i & 3];
    send_bytes(c, frame, h + 4 + len);
}

static void next_request(struct conn *c)
{
    char req[512];
    int n;
    switch (opt.mode) {
    case M_ECHO:
    case M_IDLE:
        make_message(c);
        send_bytes(c, c->msg, c->msg_len);
        break;
    case M_HTTP:
        n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n",
                     opt.path, opt.host, opt.port);
        send_bytes(c, req, (size_t)n);
        break;
    case M_WS:
    case M_WSIDLE:
        make_message(c);
        send_ws_message(c, 1, c->msg, c->msg_len);
        break;
    }
}

static void mark_established(struct conn *c)
{
    if (c->established)
        return;
    c->established = 1;
    established++;
    in_progress--;
    held++;
}

/* A reply checked and right. */
static void complete(struct conn *c)
{
    if (!c->established)
        mark_established(c);
    else if (phase == P_MEASURE)
        ops++;
    if (!IDLE_MODE)
        next_request(c);
}

static void pump(struct conn *c)
{
    size_t window = (size_t)opt.window * (size_t)opt.size;
    int blocked = 0;
    while (c->state == S_OPEN && c->sent - c->recvd < window) {
        size_t room = window - (size_t)(c->sent - c->recvd);
        size_t n = room < (size_t)opt.size ? room : (size_t)opt.size;
        ssize_t w = send(c->fd, pattern + c->sent % PERIOD, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                blocked = 1;
                break;
            }
            fail(c, "send: %s", strerror(errno));
            return;
        }
        c->sent += (unsigned long long)w;
    }
    set_events(c, blocked);
}

static void start(struct conn *c)
{
    c->state = S_OPEN;
    if (opt.mode == M_BULK) {
        pump(c);
    } else if (WS_MODE) {
        unsigned char raw[16];
        char req[512];
        for (int i = 0; i < 16; i++)
            raw[i] = (unsigned char)rand64();
        int n = ws_request(req, sizeof req, opt.path, opt.host, opt.port, raw, c->accept);
        c->state = S_HANDSHAKE;
        send_bytes(c, req, (size_t)n);
    } else {
        next_request(c);
    }
}

static void open_conn(struct conn *c)
{
    c->state = S_CONNECTING;
    opened++;
    in_progress++;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        c->state = S_DEAD;
        dead++;
        in_progress--;
        fail(NULL, "socket: %s", strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)c->id};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    c->want_out = 1;
    if (connect(c->fd, (struct sockaddr *)&target, sizeof target) != 0 &&
        errno != EINPROGRESS)
        fail(c, "connect: %s", strerror(errno));
}

static void connected(struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
        fail(c, "connect: %s", strerror(err));
        return;
    }
    set_events(c, 0);
    start(c);
}

static void check_http(struct conn *c)
{
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (end == NULL) {
        if (c->in_len > 65536)
            fail(c, "response head longer than 64 KiB");
        return;
    }
    size_t head = (size_t)(end - c->in) + 4;
    if (strncmp(c->in, "HTTP/1.1 200 ", 13) != 0) {
        size_t line = (size_t)((char *)memchr(c->in, '\r', head) - c->in);
        fail(c, "status %.*s", (int)(line < 60 ? line : 60), c->in);
        return;
    }
    if (find_ci(c->in, head, "\r\nConnection: close")) {
        fail(c, "the server closes keep-alive connections");
        return;
    }
    const char *cl = find_ci(c->in, head, "\r\nContent-Length:");
    if (cl == NULL) {
        fail(c, find_ci(c->in, head, "\r\nTransfer-Encoding:")
                    ? "chunked responses are not supported"
                    : "no Content-Length");
        return;
    }
    size_t body = (size_t)strtoul(cl + 17, NULL, 10);
    if (c->in_len < head + body)
        return;
    if (c->in_len > head + body) {
        fail(c, "more bytes than one response");
        return;
    }
    if (opt.expect[0] &&
        (body != strlen(opt.expect) || memcmp(c->in + head, opt.expect, body))) {
        fail(c, "body %.*s is not %s", (int)(body < 40 ? body : 40), c->in + head,
             opt.expect);
        return;
    }
    c->in_len = 0;
    complete(c);
}

static void check_ws(struct conn *c)
{
    size_t used = 0;
    if (c->state == S_HANDSHAKE) {
        char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (end == NULL) {
            if (c->in_len > 65536)
                fail(c, "handshake response longer than 64 KiB");
            return;
        }
        size_t head = (size_t)(end - c->in) + 4;
        if (strncmp(c->in, "HTTP/1.1 101", 12) != 0) {
            size_t line = (size_t)((char *)memchr(c->in, '\r', head) - c->in);
            fail(c, "handshake refused: %.*s", (int)(line < 60 ? line : 60), c->in);
            return;
        }
        const char *acc = find_ci(c->in, head, "\r\nSec-WebSocket-Accept:");
        if (acc == NULL) {
            fail(c, "handshake without Sec-WebSocket-Accept");
            return;
        }
        acc += 23;
        while (*acc == ' ')
            acc++;
        size_t alen = strlen(c->accept);
        if (strncmp(acc, c->accept, alen) != 0) {
            fail(c, "wrong Sec-WebSocket-Accept");
            return;
        }
        used = head;
        c->state = S_OPEN;
        next_request(c);
    }
    while (c->state == S_OPEN && c->in_len - used >= 2) {
        unsigned char *u = (unsigned char *)c->in + used;
        size_t left = c->in_len - used, h = 2;
        uint64_t len = u[1] & 0x7f;
        int opcode = u[0] & 0x0f, fin = u[0] & 0x80;
        if (u[1] & 0x80) {
            fail(c, "a masked frame from the server");
            return;
        }
        if (len == 126) {
            if (left < 4)
                break;
            len = (uint64_t)u[2] << 8 | u[3];
            h = 4;
        } else if (len == 127) {
            fail(c, "a frame of more than 64 KiB");
            return;
        }
        if (left < h + len)
            break;
        char *payload = (char *)u + h;
        used += h + len;
        if (opcode == 9) {
            send_ws_message(c, 10, payload, len);
            continue;
        }
        if (opcode == 10)
            continue;
        if (opcode == 8) {
            int code = len >= 2 ? (unsigned char)payload[0] << 8 |
                                      (unsigned char)payload[1]
                                : 1005;
            fail(c, "the server closed the WebSocket (%d)", code);
            return;
        }
        if (opcode != 1 || !fin) {
            fail(c, "unexpected frame (opcode %d, fin %d)", opcode, !!fin);
            return;
        }
        if (c->established && opt.mode == M_WSIDLE) {
            fail(c, "a message from the server on an idle connection");
            return;
        }
        int plain = len == c->msg_len && !memcmp(payload, c->msg, len);
        int prefixed = len == c->msg_len + 6 && !memcmp(payload, "Echo: ", 6) &&
                       !memcmp(payload + 6, c->msg, c->msg_len);
        if (!plain && !prefixed) {
            fail(c, "reply %.*s is not an echo of %s", (int)(len < 40 ? len : 40),
                 payload, c->msg);
            return;
        }
        complete(c);
    }
    if (c->state == S_OPEN || c->state == S_HANDSHAKE) {
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
    }
}

static void readable(struct conn *c)
{
    static char *rbuf;
    if (rbuf == NULL)
        rbuf = xrealloc(NULL, RBUF);
    char *into = rbuf;
    size_t room = RBUF;
    if (opt.mode != M_BULK) {
        if (c->in_cap - c->in_len < 65536) {
            c->in_cap = c->in_len + 65536;
            c->in = xrealloc(c->in, c->in_cap);
        }
        into = c->in + c->in_len;
        room = c->in_cap - c->in_len;
    }
    ssize_t n = recv(c->fd, into, room, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            fail(c, "recv: %s", strerror(errno));
        return;
    }
    if (n == 0) {
        fail(c, c->established && IDLE_MODE
                    ? "the server closed an idle connection"
                    : "the server closed the connection");
        return;
    }
    switch (opt.mode) {
    case M_BULK:
        if (c->recvd + (unsigned long long)n > c->sent) {
            fail(c, "more bytes echoed than sent");
            return;
        }
        if (memcmp(rbuf, pattern + c->recvd % PERIOD, (size_t)n) != 0) {
            fail(c, "echoed bytes differ from those sent at offset %llu", c->recvd);
            return;
        }
        c->recvd += (unsigned long long)n;
        if (phase == P_MEASURE)
            bytes += (unsigned long long)n;
        mark_established(c);
        pump(c);
        return;
    case M_ECHO:
    case M_IDLE:
        c->in_len += (size_t)n;
        if (c->established && opt.mode == M_IDLE) {
            fail(c, "bytes from the server on an idle connection");
            return;
        }
        if (c->in_len < c->msg_len)
            return;
        if (c->in_len > c->msg_len || memcmp(c->in, c->msg, c->msg_len) != 0) {
            fail(c, "reply differs from the message sent");
            return;
        }
        c->in_len = 0;
        if (phase == P_MEASURE)
            bytes += c->msg_len;
        complete(c);
        return;
    case M_HTTP:
        c->in_len += (size_t)n;
        check_http(c);
        return;
    case M_WS:
    case M_WSIDLE:
        c->in_len += (size_t)n;
        check_ws(c);
        return;
    }
}

static void poll_once(int timeout_ms)
{
    struct epoll_event events[512];
    int n = epoll_wait(ep, events, 512, timeout_ms);
    for (int i = 0; i < n; i++) {
        struct conn *c = &conns[events[i].data.u32];
        if (c->state == S_DEAD)
            continue;
        if (c->state == S_CONNECTING) {
            if (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                connected(c);
            continue;
        }
        if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            readable(c);
        if (c->state != S_DEAD && (events[i].events & EPOLLOUT)) {
            if (opt.mode == M_BULK)
                pump(c);
            else
                flush_out(c);
        }
    }
}

static void open_more(int upto)
{
    while (opened < upto && in_progress < MAX_PENDING)
        open_conn(&conns[opened]);
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            printf("\\u%04x", ch < 0x20 ? ch : '?');
        else
            putchar(ch);
    }
    putchar('"');
}

static const char *mode_name(void)
{
    static const char *names[] = {"echo", "bulk", "http", "ws", "idle", "ws-idle"};
    return names[opt.mode];
}

static void run_idle(void)
{
    char line[64];
    for (int l = 0; l < opt.nlevels; l++) {
        int level = opt.levels[l];
        double deadline = now_sec() + opt.setup_timeout;
        while ((opened < level || in_progress > 0) && now_sec() < deadline) {
            open_more(level);
            poll_once(50);
        }
        if (in_progress > 0 || opened < level) {
            int stuck = in_progress + (level - opened);
            for (int i = 0; i < opened; i++)
                if (conns[i].state != S_DEAD && !conns[i].established)
                    kill_conn(&conns[i]);
            fail(NULL, "%d of %d connections not established within %gs", stuck,
                 level, opt.setup_timeout);
            errors += (unsigned long long)stuck - 1;
            /* What was never opened is given up, not tried again later. */
            while (opened < level) {
                conns[opened].state = S_DEAD;
                dead++;
                opened++;
            }
        }
        double settle = now_sec() + 0.3;
        while (now_sec() < settle)
            poll_once(50);
        printf("{\"mode\":\"%s\",\"level\":%d,\"opened\":%d,\"held\":%d,"
               "\"errors\":%llu,\"error\":",
               mode_name(), level, opened, held, errors);
        json_string(first_error);
        printf("}\n");
        fflush(stdout);
        if (fgets(line, sizeof line, stdin) == NULL)
            return;
    }
}

static int parse_levels(const char *s)
{
    char *end;
    opt.nlevels = 0;
    while (*s && opt.nlevels < 16) {
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0)
            return -1;
        opt.levels[opt.nlevels++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return opt.nlevels ? 0 : -1;
}

int main(int argc, char **argv)
{
    static const char *modes[] = {"echo", "bulk", "http", "ws", "idle", "ws-idle"};
    if (argc < 2) {
        fprintf(stderr, "usage: loadgen echo|bulk|http|ws|idle|ws-idle --port PORT ...\n");
        return 2;
    }
    opt.mode = -1;
    for (int i = 0; i < (int)(sizeof modes / sizeof *modes); i++)
        if (strcmp(argv[1], modes[i]) == 0)
            opt.mode = i;
    if (opt.mode < 0) {
        fprintf(stderr, "loadgen: unknown mode %s\n", argv[1]);
        return 2;
    }
    opt.levels[0] = 1000;
    opt.nlevels = 1;
    for (int i = 2; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            fprintf(stderr, "loadgen: %s needs a value\n", k);
            return 2;
        }
        if (!strcmp(k, "--host"))
            opt.host = v;
        else if (!strcmp(k, "--port"))
            opt.port = atoi(v);
        else if (!strcmp(k, "--connections"))
            opt.connections = atoi(v);
        else if (!strcmp(k, "--seconds"))
            opt.seconds = atof(v);
        else if (!strcmp(k, "--warmup"))
            opt.warmup = atof(v);
        else if (!strcmp(k, "--size"))
            opt.size = atoi(v);
        else if (!strcmp(k, "--window"))
            opt.window = atoi(v);
        else if (!strcmp(k, "--path"))
            opt.path = v;
        else if (!strcmp(k, "--expect"))
            opt.expect = v;
        else if (!strcmp(k, "--spin"))
            opt.spin = atoi(v);
        else if (!strcmp(k, "--setup-timeout"))
            opt.setup_timeout = atof(v);
        else if (!strcmp(k, "--levels")) {
            if (parse_levels(v) != 0) {
                fprintf(stderr, "loadgen: bad --levels %s\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "loadgen: unknown option %s\n", k);
            return 2;
        }
    }
    if (opt.size < 0)
        opt.size = opt.mode == M_BULK ? 65536 : WS_MODE ? 32 : 64;
    if (opt.mode == M_IDLE)
        opt.size = 1;
    if (opt.port <= 0 || opt.connections <= 0 || opt.size <= 0 ||
        (WS_MODE && opt.size > 65000) || opt.window <= 0) {
        fprintf(stderr, "loadgen: bad options\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    rng = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull ^ (uint64_t)(now_sec() * 1e9);
    if (rng == 0)
        rng = 1;
    memset(&target, 0, sizeof target);
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &target.sin_addr) != 1) {
        fprintf(stderr, "loadgen: --host must be an IPv4 address\n");
        return 2;
    }
    nconns = opt.connections;
    if (IDLE_MODE)
        for (int l = 0; l < opt.nlevels; l++)
            if (opt.levels[l] > nconns)
                nconns = opt.levels[l];
    raise_nofile((rlim_t)nconns + 64);
    conns = calloc((size_t)nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) {
        conns[i].id = i;
        conns[i].msg = xrealloc(NULL, (size_t)opt.size + 32);
    }
    if (opt.mode == M_BULK) {
        size_t plen = PERIOD + (RBUF > (size_t)opt.size ? RBUF : (size_t)opt.size);
        pattern = xrealloc(NULL, plen);
        for (size_t i = 0; i < plen; i++)
            pattern[i] = (unsigned char)((i % PERIOD) * 7 + 13);
    }
    ep = epoll_create1(0);
    if (ep < 0)
        die("loadgen: epoll_create1");

    if (IDLE_MODE) {
        run_idle();
        return 0;
    }

    double start = now_sec(), phase_end = start + opt.setup_timeout;
    double measured_from = 0, measured = 0;
    phase = P_SETUP;
    for (;;) {
        double now = now_sec();
        if (phase == P_SETUP) {
            if (opened == nconns && in_progress == 0) {
                phase = P_WARMUP;
                phase_end = now + opt.warmup;
            } else if (now >= phase_end) {
                int stuck = in_progress + (nconns - opened);
                fail(NULL, "%d of %d connections not established within %gs", stuck,
                     nconns, opt.setup_timeout);
                break;
            }
        }
        if (phase == P_WARMUP && now >= phase_end) {
            phase = P_MEASURE;
            measured_from = now;
            phase_end = now + opt.seconds;
        }
        if (phase == P_MEASURE && now >= phase_end) {
            measured = now - measured_from;
            break;
        }
        if (opened == nconns && dead == nconns)
            break;
        if (phase == P_SETUP)
            open_more(nconns);
        int wait = (int)((phase_end - now) * 1000) + 1;
        if (opt.spin && phase != P_SETUP)
            wait = 0; /* busy-poll: never sleep, so never wait to be woken */
        poll_once(wait > 100 ? 100 : wait < 1 && !opt.spin ? 1 : wait);
    }
    if (phase == P_MEASURE && measured == 0)
        measured = now_sec() - measured_from;
    printf("{\"mode\":\"%s\",\"connections\":%d,\"established\":%d,"
           "\"held\":%d,\"seconds\":%.6f,\"ops\":%llu,\"bytes\":%llu,"
           "\"errors\":%llu,\"error\":",
           mode_name(), nconns, established, held, measured, ops, bytes, errors);
    json_string(first_error);
    printf("}\n");
    return 0;
}
