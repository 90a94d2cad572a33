/*
 * The C load generator of the ws-broadcast workload: the same run as
 * netlab/tools/bench/fanout.py (read its docstring), at a fraction of its
 * CPU per delivery, so that the generator is not what a row measures.
 *
 * --subscribers WebSocket connections (spread over the --port values,
 * i % ports) and one publisher (on the first port). The publisher sends
 * "sync" every 100 ms until every subscriber has one, then text messages
 * "SEQ NANOSECONDS" (CLOCK_MONOTONIC) with at most --window of them not yet
 * received by every subscriber. Each subscriber checks that it gets every
 * message once and in order. After --warmup seconds, for --seconds, each
 * delivery counts and its latency goes into a fixed-size histogram
 * (log-linear, 1/512 precision: bounded memory whatever the run's length).
 *
 * After the counted span the publisher stops and waits (--deliver-timeout
 * at most) for the messages in flight to reach every subscriber.
 *
 * The result is one JSON line on stdout, with the keys fanout.py prints
 * (and "window"). A message out of order, twice, never published, or not
 * delivered to every subscriber within --deliver-timeout seconds ends the
 * run: the JSON line has the error, stderr one line, and the exit status
 * is 1.
 *
 * Part of `netlab bench` (netlab/tools/bench/): compiled with gcc on first
 * use (build.py).
 */
#include "common.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_PORTS 16
#define MAX_WATCH 16
/* Connections opening at once. */
#define OPENING 64
/* A frame from the server larger than this is an error (the messages are a
 * few dozen bytes); a subscriber's input buffer holds one at least. */
#define MAX_FRAME 65536
#define IN_SIZE (MAX_FRAME + 16)
/* What a subscriber may have to send (handshake, pongs, a close) at once. */
#define OUT_SIZE 4096
/* The publisher's output: --window messages of < 64 bytes, and syncs. */
#define PUB_OUT_SIZE (1 << 20)
#define SYNC_INTERVAL 0.1
#define HIST_SUB 512
#define HIST_SIZE (2 * HIST_SUB + 40 * HIST_SUB)

enum { CONNECTING, HANDSHAKE, OPEN };

struct conn {
    int fd, port, state, synced, publisher, want_out;
    long long expect;
    char accept[32];
    char *in;
    size_t in_len;
    char *out;
    size_t out_len, out_cap;
};

static struct conn *conns;
static int nsubs, nports, nwatch, ep, window = 64;
static int ports[MAX_PORTS], watch[MAX_WATCH];
static const char *host = "127.0.0.1";
static double seconds = 3.0, warmup = 0.25, setup_timeout = 15.0,
              deliver_timeout = 5.0;
static int joined, counting;
static unsigned long long deliveries;
static long long next_seq, oldest;
/* By seq % window: how many subscribers still miss it, and when it left. */
static int *missing;
static double *sent_at;
static unsigned long long hist[HIST_SIZE];
static char error_text[300];
static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static uint64_t rand64(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 32)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* Print the report (and the error, if any); exit 1 on an error. */
static void report_and_exit(void) __attribute__((noreturn));

static double counted_seconds, cpu_share, watched_share[MAX_WATCH];
static int have_counts;

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_text, sizeof error_text, fmt, ap);
    va_end(ap);
    report_and_exit();
}

static void record(long long ns)
{
    uint64_t v = ns > 0 ? (uint64_t)ns / 1000 : 0; /* microseconds */
    int idx;
    if (v < 2 * HIST_SUB) {
        idx = (int)v;
    } else {
        int e = 63 - __builtin_clzll(v); /* >= 10 */
        int shift = e - 9;
        idx = 2 * HIST_SUB + (shift - 1) * HIST_SUB + (int)((v >> shift) - HIST_SUB);
        if (idx >= HIST_SIZE)
            idx = HIST_SIZE - 1;
    }
    hist[idx]++;
}

/* The latency (ms) of bucket idx: the middle of its range. */
static double bucket_ms(int idx)
{
    if (idx < 2 * HIST_SUB)
        return (idx + 0.5) / 1000.0;
    int shift = (idx - 2 * HIST_SUB) / HIST_SUB + 1;
    uint64_t sub = (uint64_t)((idx - 2 * HIST_SUB) % HIST_SUB) + HIST_SUB;
    return ((double)(sub << shift) + (double)(1ULL << shift) / 2) / 1000.0;
}

/* The latency at 0-based rank `rank` of the ordered deliveries. */
static double percentile(unsigned long long total, unsigned long long rank)
{
    unsigned long long seen = 0;
    (void)total;
    for (int i = 0; i < HIST_SIZE; i++) {
        seen += hist[i];
        if (seen > rank)
            return bucket_ms(i);
    }
    return 0;
}

static double group_cpu(int pgid)
{
    DIR *d = opendir("/proc");
    if (d == NULL)
        return 0;
    unsigned long long ticks = 0;
    struct dirent *e;
    char path[300], buf[1024];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        if (p == NULL)
            continue;
        /* After ") ": state ppid pgrp ... utime (12th) stime (13th). */
        char state;
        int ppid, pgrp;
        unsigned long long skip, utime, stime;
        if (sscanf(p + 2, "%c %d %d %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu",
                   &state, &ppid, &pgrp, &skip, &skip, &skip, &skip, &skip, &skip,
                   &skip, &skip, &utime, &stime) == 13 &&
            pgrp == pgid)
            ticks += utime + stime;
    }
    closedir(d);
    return (double)ticks / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void report_and_exit(void)
{
    FILE *f = stdout;
    fprintf(f, "{\"ops\": %llu, \"seconds\": %.6f, \"published\": %lld",
            have_counts ? deliveries : 0ULL, have_counts ? counted_seconds : 0.0,
            have_counts ? next_seq : 0LL);
    fprintf(f, ", \"subscribers\": {");
    for (int p = 0; p < nports; p++) {
        int seen = 0;
        for (int q = 0; q < p; q++)
            seen |= ports[q] == ports[p];
        if (seen)
            continue;
        int count = 0;
        for (int i = 0; i < nsubs; i++)
            count += ports[i % nports] == ports[p];
        fprintf(f, "%s\"%d\": %d", p ? ", " : "", ports[p], count);
    }
    fprintf(f, "}");
    if (have_counts) {
        fprintf(f, ", \"cpu\": %.3f, \"watched\": {", cpu_share);
        for (int w = 0; w < nwatch; w++)
            fprintf(f, "%s\"%d\": %.3f", w ? ", " : "", watch[w], watched_share[w]);
        fprintf(f, "}");
    }
    unsigned long long total = 0;
    for (int i = 0; i < HIST_SIZE; i++)
        total += hist[i];
    if (total && !error_text[0]) {
        /* As fanout.py: the median, and the entry at n * 99 // 100. */
        fprintf(f, ", \"p50_ms\": %.4f, \"p99_ms\": %.4f", percentile(total, total / 2),
                percentile(total, total * 99 / 100));
    }
    fprintf(f, ", \"errors\": %d, \"error\": ", error_text[0] ? 1 : 0);
    json_string(f, error_text);
    fprintf(f, ", \"window\": %d, \"generator\": \"c\"}\n", window);
    fflush(f);
    if (error_text[0]) {
        fprintf(stderr, "fanout: %s\n", error_text);
        exit(1);
    }
    exit(0);
}

static void set_events(struct conn *c, int want_out)
{
    if (c->want_out == want_out)
        return;
    c->want_out = want_out;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0),
                             .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        die("epoll_ctl");
}

static void flush_out(struct conn *c)
{
    size_t done = 0;
    while (done < c->out_len) {
        ssize_t n = send(c->fd, c->out + done, c->out_len - done, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            fail("connection: %s", strerror(errno));
        }
        done += (size_t)n;
    }
    memmove(c->out, c->out + done, c->out_len - done);
    c->out_len -= done;
    set_events(c, c->out_len > 0);
}

static void queue_bytes(struct conn *c, const void *data, size_t len)
{
    if (c->out_len + len > c->out_cap)
        fail("a connection's output went past %zu bytes (the server does not read)",
             c->out_cap);
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
}

/* A masked client frame (payloads under 126 bytes). */
static void queue_frame(struct conn *c, int opcode, const char *payload, size_t len)
{
    unsigned char head[6];
    char body[125];
    if (len > sizeof body)
        len = sizeof body;
    uint32_t mask = (uint32_t)rand64();
    head[0] = 0x80 | (unsigned char)opcode;
    head[1] = 0x80 | (unsigned char)len;
    memcpy(head + 2, &mask, 4);
    for (size_t i = 0; i < len; i++)
        body[i] = payload[i] ^ head[2 + (i & 3)];
    queue_bytes(c, head, 6);
    queue_bytes(c, body, len);
}

static void open_conn(struct conn *c)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(c->port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        errno = EINVAL;
        fail("connection: bad --host %s", host);
    }
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
        fail("connection: socket: %s", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0 &&
        errno != EINPROGRESS)
        fail("connection: %s", strerror(errno));
    c->state = CONNECTING;
    c->want_out = 1;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl");
}

static void connected(struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err)
        fail("connection: %s", strerror(err));
    unsigned char raw[16];
    char request[512];
    for (int i = 0; i < 16; i++)
        raw[i] = (unsigned char)rand64();
    int n = ws_request(request, sizeof request, "/", host, c->port, raw, c->accept);
    c->state = HANDSHAKE;
    queue_bytes(c, request, (size_t)n);
    flush_out(c);
}

static void delivered(long long seq, long long published)
{
    long long now = now_ns();
    if (seq >= next_seq || seq < oldest)
        fail("message %lld was never published, or came twice", seq);
    int slot = (int)(seq % window);
    if (--missing[slot] == 0) {
        while (oldest < next_seq && missing[oldest % window] == 0)
            oldest++;
    }
    if (counting) {
        deliveries++;
        record(now - published);
    }
}

/* One text frame's payload, at a subscriber. */
static void message(struct conn *c, const char *p, size_t len)
{
    if (len == 4 && memcmp(p, "sync", 4) == 0) {
        /* Not counted, and harmless again: a broker may hand one back late. */
        if (!c->synced) {
            c->synced = 1;
            joined++;
        }
        return;
    }
    long long seq = 0, stamp = 0;
    size_t i = 0;
    int digits = 0;
    for (; i < len && p[i] >= '0' && p[i] <= '9' && digits < 18; i++, digits++)
        seq = seq * 10 + (p[i] - '0');
    int ok = digits > 0 && i < len && p[i] == ' ';
    digits = 0;
    for (i++; ok && i < len && p[i] >= '0' && p[i] <= '9' && digits < 19; i++, digits++)
        stamp = stamp * 10 + (p[i] - '0');
    if (!ok || digits == 0 || i != len)
        fail("an unexpected message: %.*s", (int)(len < 40 ? len : 40), p);
    if (seq != c->expect)
        fail("message %lld arrived where %lld was due", seq, c->expect);
    c->expect = seq + 1;
    delivered(seq, stamp);
}

/* The frames in c->in, as far as they are complete. */
static void frames(struct conn *c)
{
    size_t start = 0;
    while (c->in_len - start >= 2) {
        unsigned char first = (unsigned char)c->in[start];
        unsigned char second = (unsigned char)c->in[start + 1];
        size_t size = second & 0x7F, at = start + 2;
        if (second & 0x80)
            fail("a masked frame from the server");
        if (size == 126) {
            if (c->in_len - at < 2)
                break;
            size = (size_t)(unsigned char)c->in[at] << 8 | (unsigned char)c->in[at + 1];
            at += 2;
        } else if (size == 127) {
            fail("a frame of more than 64 KiB");
        }
        if (size > MAX_FRAME)
            fail("a frame of more than 64 KiB");
        if (c->in_len - at < size)
            break;
        const char *payload = c->in + at;
        start = at + size;
        int opcode = first & 0x0F;
        if (opcode == 0x9) { /* ping: answer it */
            queue_frame(c, 0xA, payload, size);
            flush_out(c);
            continue;
        }
        if (opcode == 0xA)
            continue;
        if (opcode != 0x1 || !(first & 0x80))
            fail("an unexpected frame (opcode %d)", opcode);
        if (!c->publisher)
            message(c, payload, size);
        /* The publisher drops its own messages, if the room sends them. */
    }
    memmove(c->in, c->in + start, c->in_len - start);
    c->in_len -= start;
}

static void handshake(struct conn *c)
{
    char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (end == NULL) {
        if (c->in_len >= IN_SIZE)
            fail("handshake: an answer of more than 64 KiB");
        return;
    }
    size_t head = (size_t)(end - c->in) + 4;
    if (c->in_len < 13 || memcmp(c->in, "HTTP/1.1 101 ", 13) != 0 ||
        memmem(c->in, head, c->accept, strlen(c->accept)) == NULL) {
        char *eol = memchr(c->in, '\r', head);
        int line = eol ? (int)(eol - c->in) : (int)head;
        fail("handshake: %.*s", line < 80 ? line : 80, c->in);
    }
    memmove(c->in, c->in + head, c->in_len - head);
    c->in_len -= head;
    c->state = OPEN;
}

static void readable(struct conn *c)
{
    for (;;) {
        if (c->in_len >= IN_SIZE)
            fail("a frame of more than 64 KiB");
        ssize_t n = recv(c->fd, c->in + c->in_len, IN_SIZE - c->in_len, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR)
                continue;
            fail("connection: %s", strerror(errno));
        }
        if (n == 0) {
            if (c->publisher)
                fail("the server closed the publisher's connection");
            fail("the server closed a subscriber's connection");
        }
        c->in_len += (size_t)n;
        if (c->state == HANDSHAKE)
            handshake(c);
        if (c->state == OPEN)
            frames(c);
    }
}

static void handle(struct conn *c, uint32_t events)
{
    if (c->state == CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        connected(c);
        return;
    }
    if (events & EPOLLOUT)
        flush_out(c);
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        readable(c);
}

static void poll_once(int timeout_ms)
{
    struct epoll_event events[256];
    int n = epoll_wait(ep, events, 256, timeout_ms);
    if (n < 0 && errno != EINTR)
        die("epoll_wait");
    for (int i = 0; i < n; i++)
        handle(events[i].data.ptr, events[i].events);
}

static void publish(struct conn *pub)
{
    char text[64];
    while (next_seq - oldest < window && pub->out_len + 128 < pub->out_cap) {
        int slot = (int)(next_seq % window);
        missing[slot] = nsubs;
        sent_at[slot] = now_sec();
        int n = snprintf(text, sizeof text, "%lld %lld", next_seq, now_ns());
        queue_frame(pub, 0x1, text, (size_t)n);
        next_seq++;
    }
    if (pub->out_len)
        flush_out(pub);
}

static int open_count(void)
{
    int open = 0;
    for (int i = 0; i <= nsubs; i++)
        open += conns[i].state == OPEN;
    return open;
}

static void usage(const char *why)
{
    fprintf(stderr, "fanout: %s\n", why);
    exit(2);
}

static double number(const char *name, const char *text, double low)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || v < low) {
        char why[200];
        snprintf(why, sizeof why, "%s must be a number of at least %g, not %.40s", name,
                 low, text);
        usage(why);
    }
    return v;
}

int main(int argc, char **argv)
{
    nsubs = 1000;
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (i + 1 >= argc) {
            char why[200];
            snprintf(why, sizeof why, "%.60s needs a value", opt);
            usage(why);
        }
        const char *val = argv[++i];
        if (!strcmp(opt, "--host")) {
            host = val;
        } else if (!strcmp(opt, "--port")) {
            if (nports == MAX_PORTS)
                usage("at most 16 --port");
            ports[nports++] = (int)number(opt, val, 1);
            if (ports[nports - 1] > 65535)
                usage("--port must be at most 65535");
        } else if (!strcmp(opt, "--subscribers")) {
            nsubs = (int)number(opt, val, 1);
        } else if (!strcmp(opt, "--window")) {
            window = (int)number(opt, val, 1);
        } else if (!strcmp(opt, "--seconds")) {
            seconds = number(opt, val, 0);
        } else if (!strcmp(opt, "--warmup")) {
            warmup = number(opt, val, 0);
        } else if (!strcmp(opt, "--setup-timeout")) {
            setup_timeout = number(opt, val, 0);
        } else if (!strcmp(opt, "--deliver-timeout")) {
            deliver_timeout = number(opt, val, 0);
        } else if (!strcmp(opt, "--watch")) {
            if (nwatch == MAX_WATCH)
                usage("at most 16 --watch");
            watch[nwatch++] = (int)number(opt, val, 1);
        } else {
            char why[200];
            snprintf(why, sizeof why, "unknown option %.60s", opt);
            usage(why);
        }
    }
    if (nports == 0)
        usage("--port is required");
    if (nsubs > 1000000 || window > 1000000)
        usage("--subscribers and --window must be at most 1000000");
    rng ^= (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32);
    raise_nofile((rlim_t)nsubs + 64);
    ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    missing = calloc((size_t)window, sizeof *missing);
    sent_at = calloc((size_t)window, sizeof *sent_at);
    conns = calloc((size_t)nsubs + 1, sizeof *conns);
    if (!missing || !sent_at || !conns)
        usage("out of memory");
    for (int i = 0; i <= nsubs; i++) {
        struct conn *c = &conns[i];
        c->publisher = i == nsubs;
        c->port = c->publisher ? ports[0] : ports[i % nports];
        c->in = xrealloc(NULL, IN_SIZE);
        c->out_cap = c->publisher ? PUB_OUT_SIZE : OUT_SIZE;
        c->out = xrealloc(NULL, c->out_cap);
        c->fd = -1;
        c->state = -1;
    }

    /* Set up: at most OPENING handshakes at once. */
    double deadline = now_sec() + setup_timeout;
    int started = 0;
    for (;;) {
        int open = open_count();
        if (open == nsubs + 1)
            break;
        if (now_sec() >= deadline)
            fail("set-up took more than %g s", setup_timeout);
        while (started <= nsubs && started - open < OPENING)
            open_conn(&conns[started++]);
        poll_once(50);
    }

    /* Sync: every subscriber in the room before the first message. */
    struct conn *pub = &conns[nsubs];
    deadline = now_sec() + deliver_timeout;
    double next_sync = 0;
    while (joined < nsubs) {
        double now = now_sec();
        if (now >= deadline)
            fail("the room's first message was not delivered to every subscriber "
                 "within %g s (%d of %d got one)",
                 deliver_timeout, joined, nsubs);
        if (now >= next_sync) {
            queue_frame(pub, 0x1, "sync", 4);
            flush_out(pub);
            next_sync = now + SYNC_INTERVAL;
        }
        poll_once(20);
    }

    /* Publish; count from begin to end. */
    double begin = now_sec() + warmup, end = begin + seconds;
    double counted_from = 0, cpu_from = 0, watched_from[MAX_WATCH];
    for (;;) {
        double now = now_sec();
        if (!counting && !have_counts && now >= begin) {
            counting = 1;
            counted_from = now_sec();
            cpu_from = self_cpu();
            for (int w = 0; w < nwatch; w++)
                watched_from[w] = group_cpu(watch[w]);
        }
        if (counting && now >= end) {
            counting = 0;
            counted_seconds = now_sec() - counted_from;
            cpu_share = (self_cpu() - cpu_from) / counted_seconds;
            for (int w = 0; w < nwatch; w++)
                watched_share[w] = (group_cpu(watch[w]) - watched_from[w]) / counted_seconds;
            have_counts = 1;
        }
        /* Past the counted span, no more messages; those in flight must
         * still reach every subscriber (none lost at the end either). */
        if (have_counts && oldest == next_seq)
            break;
        if (oldest < next_seq && now - sent_at[oldest % window] > deliver_timeout)
            fail("a message was not delivered to every subscriber within %g s "
                 "(message %lld: %d of %d subscribers still miss it)",
                 deliver_timeout, oldest, missing[oldest % window], nsubs);
        if (!have_counts)
            publish(pub);
        poll_once(10);
    }
    report_and_exit();
}
