/*
 * gwbench: the loopback backends and load generators of the gateway benchmark, in C so that
 * neither side is the bottleneck of what is measured (the forwarder in the middle).
 *
 *   gwbench serve                      greeting (220/QUIT/221), sink and echo servers on free ports;
 *                                      prints "greet=P sink=P echo=P" and serves until killed
 *   gwbench bulk HOST PORT STREAMS SECONDS    writes 256 KiB chunks on STREAMS connections;
 *                                              prints bytes per second
 *   gwbench churn HOST PORT CLIENTS SECONDS   CLIENTS threads each loop: connect, read the 220
 *                                              greeting, send QUIT, read 221, close; prints
 *                                              sessions per second and failures
 *   gwbench latency HOST DIRECT_PORT PORT COUNT  COUNT 64-byte round trips on each of two
 *                                              connections (direct, forwarded), alternating;
 *                                              prints both series' p50 and p99 in microseconds
 *
 * Build: cc -O2 -pthread -o gwbench gwbench.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define GREETING "220 bench.example.test ESMTP gwbench\r\n"
#define BYE "221 2.0.0 Bye\r\n"
#define CHUNK (256 * 1024)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int listen_any(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 4096) < 0) {
        perror("bind/listen");
        exit(1);
    }
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return fd;
}

enum kind { GREET_L = 1, SINK_L, ECHO_L, GREET_C, SINK_C, ECHO_C };

/* epoll data: kind in the high 32 bits, fd in the low 32 bits */
static uint64_t tag(enum kind k, int fd) { return ((uint64_t)k << 32) | (uint32_t)fd; }

static int serve(void) {
    int pg, ps, pe;
    int lg = listen_any(&pg), ls = listen_any(&ps), le = listen_any(&pe);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.u64 = tag(GREET_L, lg); epoll_ctl(ep, EPOLL_CTL_ADD, lg, &ev);
    ev.data.u64 = tag(SINK_L, ls); epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    ev.data.u64 = tag(ECHO_L, le); epoll_ctl(ep, EPOLL_CTL_ADD, le, &ev);
    printf("greet=%d sink=%d echo=%d\n", pg, ps, pe);
    fflush(stdout);
    static char buf[CHUNK];
    struct epoll_event events[256];
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            enum kind k = events[i].data.u64 >> 32;
            int fd = (int)(uint32_t)events[i].data.u64;
            if (k == GREET_L || k == SINK_L || k == ECHO_L) {
                for (;;) {
                    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK);
                    if (c < 0) break;
                    int one = 1;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    enum kind ck = k == GREET_L ? GREET_C : k == SINK_L ? SINK_C : ECHO_C;
                    if (ck == GREET_C && write(c, GREETING, sizeof GREETING - 1) < 0) { close(c); continue; }
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP};
                    cev.data.u64 = tag(ck, c);
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                close(fd);
                continue;
            }
            if (k == GREET_C) {
                if (memmem(buf, r, "QUIT", 4)) {
                    if (write(fd, BYE, sizeof BYE - 1) < 0) { /* client gone */ }
                    close(fd);
                }
            } else if (k == ECHO_C) {
                ssize_t off = 0;
                while (off < r) {  /* small messages: a blocking-ish retry is fine */
                    ssize_t w = write(fd, buf + off, r - off);
                    if (w < 0) { if (errno == EAGAIN) continue; break; }
                    off += w;
                }
            } /* SINK_C: discard */
        }
    }
    return 0;
}

static int dial(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { close(fd); return -1; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

struct job {
    const char *host;
    int port;
    double until;
    long long count;
    long long failures;
};

static void *bulk_thread(void *arg) {
    struct job *j = arg;
    static __thread char buf[CHUNK];
    int fd = dial(j->host, j->port);
    if (fd < 0) { j->failures++; return NULL; }
    memset(buf, 'x', sizeof buf);
    while (now() < j->until) {
        ssize_t w = write(fd, buf, sizeof buf);
        if (w <= 0) { j->failures++; break; }
        j->count += w;
    }
    close(fd);
    return NULL;
}

static int read_line(int fd, char *buf, int size) {
    int got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r <= 0) return -1;
        got += r;
        if (memchr(buf, '\n', got)) return got;
    }
    return got;
}

static void *churn_thread(void *arg) {
    struct job *j = arg;
    char buf[512];
    while (now() < j->until) {
        int fd = dial(j->host, j->port);
        if (fd < 0) { j->failures++; usleep(1000); continue; }
        if (read_line(fd, buf, sizeof buf) < 3 || memcmp(buf, "220", 3) != 0) { j->failures++; close(fd); continue; }
        if (write(fd, "QUIT\r\n", 6) != 6) { j->failures++; close(fd); continue; }
        if (read_line(fd, buf, sizeof buf) < 3 || memcmp(buf, "221", 3) != 0) { j->failures++; close(fd); continue; }
        close(fd);
        j->count++;
    }
    return NULL;
}

static int run_threads(void *(*fn)(void *), const char *host, int port, int n, double seconds) {
    pthread_t *t = calloc(n, sizeof *t);
    struct job *jobs = calloc(n, sizeof *jobs);
    double start = now();
    for (int i = 0; i < n; i++) {
        jobs[i] = (struct job){.host = host, .port = port, .until = start + seconds};
        pthread_create(&t[i], NULL, fn, &jobs[i]);
    }
    long long total = 0, failures = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        total += jobs[i].count;
        failures += jobs[i].failures;
    }
    double elapsed = now() - start;
    printf("rate=%.1f total=%lld failures=%lld seconds=%.3f\n", total / elapsed, total, failures, elapsed);
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int ping(int fd, double *sample) {
    char msg[64], buf[64];
    memset(msg, 'p', sizeof msg);
    double t0 = now();
    if (write(fd, msg, sizeof msg) != sizeof msg) { perror("write"); return -1; }
    int got = 0;
    while (got < (int)sizeof msg) {
        ssize_t r = read(fd, buf + got, sizeof msg - got);
        if (r <= 0) { perror("read"); return -1; }
        got += r;
    }
    *sample = (now() - t0) * 1e6;
    return 0;
}

/* Round trips alternate between the direct path and the forwarded one, so that noise from the
 * neighbours hits both series alike; the added latency is the difference of their percentiles. */
static int latency(const char *host, int direct_port, int port, int count) {
    int d = dial(host, direct_port), f = dial(host, port);
    if (d < 0 || f < 0) { perror("connect"); return 1; }
    double *sd = calloc(count, sizeof *sd), *sf = calloc(count, sizeof *sf), x;
    for (int i = 0; i < 100; i++)  /* warm-up */
        if (ping(d, &x) || ping(f, &x)) return 1;
    for (int i = 0; i < count; i++)
        if (ping(d, &sd[i]) || ping(f, &sf[i])) return 1;
    qsort(sd, count, sizeof *sd, cmp_double);
    qsort(sf, count, sizeof *sf, cmp_double);
    int i50 = count / 2, i99 = (int)(count * 0.99);
    printf("direct_p50=%.1f direct_p99=%.1f p50=%.1f p99=%.1f\n", sd[i50], sd[i99], sf[i50], sf[i99]);
    close(d);
    close(f);
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 2 && !strcmp(argv[1], "serve")) return serve();
    if (argc == 6 && !strcmp(argv[1], "bulk"))
        return run_threads(bulk_thread, argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]));
    if (argc == 6 && !strcmp(argv[1], "churn"))
        return run_threads(churn_thread, argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]));
    if (argc == 6 && !strcmp(argv[1], "latency"))
        return latency(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    fprintf(stderr, "usage: gwbench serve | bulk|churn HOST PORT N SECONDS"
                    " | latency HOST DIRECT_PORT PORT COUNT\n");
    return 2;
}
