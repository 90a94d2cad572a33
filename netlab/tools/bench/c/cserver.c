/*
 * cserver: the fastest servers `netlab bench` knows how to run, to measure
 * its load generator's ceiling. One thread, epoll, non-blocking sockets.
 *
 *   cserver echo|http|ws --port PORT [--host 127.0.0.1] [--spin 0|1]
 *           [--body TEXT]
 *
 * echo: every byte back (stops reading from a client with unsent bytes);
 * http: every request head answered "200" with the body --body
 *       ("Hello, world!"), keep-alive;
 * ws:   a WebSocket handshake, then text m -> "Echo: m", binary -> same.
 * With --spin 1 it polls without sleeping while it has clients (a whole CPU
 * for itself): it then never waits to be woken, and only the load generator
 * can hold it back. With no client it sleeps, leaving the CPU to others.
 * Prints "listening on HOST port PORT"; SIGTERM stops it.
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { ECHO, HTTP, WS };

struct client {
    int open;
    int upgraded; /* ws: the handshake is done */
    int closing;  /* close once everything is written */
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
};

static int mode, ep, open_clients;
static struct client *clients;
static size_t nclients;

static char *http_reply;
static size_t http_reply_len;

static void make_http_reply(const char *body)
{
    size_t len = strlen(body), cap = len + 128;
    http_reply = xrealloc(NULL, cap);
    int n = snprintf(http_reply, cap,
                     "HTTP/1.1 200 OK\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\n"
                     "\r\n"
                     "%s",
                     len, body);
    http_reply_len = (size_t)n;
}

static struct client *client_of(int fd)
{
    if ((size_t)fd >= nclients) {
        size_t n = nclients ? nclients : 1024;
        while (n <= (size_t)fd)
            n *= 2;
        clients = xrealloc(clients, n * sizeof *clients);
        memset(clients + nclients, 0, (n - nclients) * sizeof *clients);
        nclients = n;
    }
    return &clients[fd];
}

static void drop(int fd)
{
    struct client *c = client_of(fd);
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    open_clients--;
    free(c->in);
    free(c->out);
    memset(c, 0, sizeof *c);
}

static void queue(struct client *c, const void *data, size_t len)
{
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + len > c->out_cap) {
        c->out_cap = (c->out_len + len) * 2;
        c->out = xrealloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
}

static void watch(int fd, struct client *c)
{
    struct epoll_event ev = {0};
    int pending = c->out_off < c->out_len;
    /* Back-pressure: a client with unsent bytes is not read from. */
    ev.events = pending ? EPOLLOUT : EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

/* Write what is queued; 0 when the client must be dropped. */
static int flush(int fd, struct client *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            return 0;
        }
        c->out_off += (size_t)n;
    }
    if (c->out_off == c->out_len && c->closing)
        return 0;
    watch(fd, c);
    return 1;
}

static void ws_frame(struct client *c, int opcode, const char *prefix,
                     const unsigned char *payload, size_t len)
{
    unsigned char head[10];
    size_t plen = strlen(prefix), total = plen + len, h = 2;
    head[0] = (unsigned char)(0x80 | opcode);
    if (total < 126) {
        head[1] = (unsigned char)total;
    } else if (total < 65536) {
        head[1] = 126;
        head[2] = (unsigned char)(total >> 8);
        head[3] = (unsigned char)total;
        h = 4;
    } else {
        head[1] = 127;
        for (int i = 0; i < 8; i++)
            head[2 + i] = (unsigned char)((uint64_t)total >> (8 * (7 - i)));
        h = 10;
    }
    queue(c, head, h);
    queue(c, prefix, plen);
    queue(c, payload, len);
}

/* Handle what is in c->in; how many bytes were used. */
static size_t consume(struct client *c)
{
    size_t used = 0;
    for (;;) {
        char *p = c->in + used;
        size_t left = c->in_len - used;
        if (mode == HTTP || (mode == WS && !c->upgraded)) {
            char *end = memmem(p, left, "\r\n\r\n", 4);
            if (end == NULL) {
                if (left > 65536)
                    c->closing = 1;
                return used;
            }
            size_t head = (size_t)(end - p) + 4;
            if (mode == HTTP) {
                queue(c, http_reply, http_reply_len);
            } else {
                const char *key = find_ci(p, head, "\r\nSec-WebSocket-Key:");
                if (key == NULL) {
                    static const char bad[] = "HTTP/1.1 400 Bad Request\r\n"
                                              "Content-Length: 0\r\n\r\n";
                    queue(c, bad, sizeof bad - 1);
                    c->closing = 1;
                    return c->in_len;
                }
                key += strlen("\r\nSec-WebSocket-Key:");
                while (*key == ' ')
                    key++;
                const char *eol = memmem(key, (size_t)(p + head - key), "\r\n", 2);
                char accept[32], reply[256];
                ws_accept(key, (size_t)(eol - key), accept);
                int n = snprintf(reply, sizeof reply,
                                 "HTTP/1.1 101 Switching Protocols\r\n"
                                 "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                 "Sec-WebSocket-Accept: %s\r\n\r\n",
                                 accept);
                queue(c, reply, (size_t)n);
                c->upgraded = 1;
            }
            used += head;
            continue;
        }
        /* A WebSocket frame from a client: always masked. */
        if (left < 2)
            return used;
        unsigned char *u = (unsigned char *)p;
        int opcode = u[0] & 0x0f;
        uint64_t len = u[1] & 0x7f;
        size_t h = 2;
        if (!(u[1] & 0x80)) {
            c->closing = 1;
            return c->in_len;
        }
        if (len == 126) {
            if (left < 4)
                return used;
            len = (uint64_t)u[2] << 8 | u[3];
            h = 4;
        } else if (len == 127) {
            c->closing = 1; /* nothing this big is expected */
            return c->in_len;
        }
        if (left < h + 4 + len)
            return used;
        unsigned char *mask = u + h, *payload = u + h + 4;
        for (uint64_t i = 0; i < len; i++)
            payload[i] ^= mask[i & 3];
        if (opcode == 1)
            ws_frame(c, 1, "Echo: ", payload, len);
        else if (opcode == 2)
            ws_frame(c, 2, "", payload, len);
        else if (opcode == 9)
            ws_frame(c, 10, "", payload, len);
        else if (opcode == 8) {
            ws_frame(c, 8, "", payload, len < 2 ? len : 2);
            c->closing = 1;
            return c->in_len;
        }
        used += h + 4 + len;
    }
}

static void readable(int fd)
{
    struct client *c = client_of(fd);
    char buf[65536];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        drop(fd);
        return;
    }
    if (n < 0)
        return;
    if (mode == ECHO) {
        ssize_t sent = send(fd, buf, (size_t)n, MSG_NOSIGNAL);
        if (sent < 0 && errno != EAGAIN) {
            drop(fd);
            return;
        }
        if (sent < 0)
            sent = 0;
        if (sent < n) {
            queue(c, buf + sent, (size_t)(n - sent));
            watch(fd, c);
        }
        return;
    }
    if (c->in_len + (size_t)n > c->in_cap) {
        c->in_cap = (c->in_len + (size_t)n) * 2;
        c->in = xrealloc(c->in, c->in_cap);
    }
    memcpy(c->in + c->in_len, buf, (size_t)n);
    c->in_len += (size_t)n;
    size_t used = consume(c);
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
    if (!flush(fd, c))
        drop(fd);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *body = "Hello, world!";
    int port = -1, spin = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: cserver echo|http|ws --port PORT [--host H]\n");
        return 2;
    }
    if (strcmp(argv[1], "echo") == 0)
        mode = ECHO;
    else if (strcmp(argv[1], "http") == 0)
        mode = HTTP;
    else if (strcmp(argv[1], "ws") == 0)
        mode = WS;
    else {
        fprintf(stderr, "cserver: unknown mode %s\n", argv[1]);
        return 2;
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0)
            port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--host") == 0)
            host = argv[i + 1];
        else if (strcmp(argv[i], "--spin") == 0)
            spin = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--body") == 0)
            body = argv[i + 1];
        else {
            fprintf(stderr, "cserver: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (port < 0) {
        fprintf(stderr, "cserver: --port is required\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile(65536);
    make_http_reply(body);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "cserver: bad host %s\n", host);
        return 2;
    }
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0)
        die("cserver: bind");
    if (listen(lfd, 4096) != 0)
        die("cserver: listen");
    socklen_t alen = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &alen);
    printf("listening on %s port %d\n", host, ntohs(addr.sin_port));
    fflush(stdout);

    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event events[512];
    for (;;) {
        int n = epoll_wait(ep, events, 512, spin && open_clients > 0 ? 0 : -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("cserver: epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                int cfd;
                while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct client *c = client_of(cfd);
                    memset(c, 0, sizeof *c);
                    c->open = 1;
                    open_clients++;
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = cfd};
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev);
                }
                continue;
            }
            if (!client_of(fd)->open)
                continue;
            if (events[i].events & EPOLLOUT) {
                if (!flush(fd, client_of(fd)))
                    drop(fd);
            } else if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                readable(fd);
            }
        }
    }
}
