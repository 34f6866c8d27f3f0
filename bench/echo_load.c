/* Load for echo servers, from a separate compiled process.
 *
 *   echo_load HOST PORT CONNS SIZE SECONDS      closed loop: each connection sends SIZE bytes, waits
 *                                                for SIZE bytes back, repeats; prints round trips/s
 *   echo_load --idle HOST PORT CONNS SECONDS     opens CONNS connections, holds them idle for SECONDS,
 *                                                prints "held N" once all are connected
 *
 * Every echoed byte is checked against what was sent. Bounded in connections and time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    size_t sent, got;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int open_conn(const char *host, int port) {
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    int fd;
    if (strchr(host, ':')) {
        memset(&a6, 0, sizeof a6);
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons(port);
        inet_pton(AF_INET6, host, &a6.sin6_addr);
        fd = socket(AF_INET6, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a6, sizeof a6) < 0) return -1;
    } else {
        memset(&a4, 0, sizeof a4);
        a4.sin_family = AF_INET;
        a4.sin_port = htons(port);
        inet_pton(AF_INET, host, &a4.sin_addr);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a4, sizeof a4) < 0) return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int idle(const char *host, int port, int n, double seconds) {
    int *fds = calloc(n, sizeof *fds);
    for (int i = 0; i < n; i++) {
        fds[i] = open_conn(host, port);
        if (fds[i] < 0) {
            fprintf(stderr, "connection %d failed: %s\n", i, strerror(errno));
            return 1;
        }
    }
    printf("held %d\n", n);
    fflush(stdout);
    double end = now() + seconds;
    while (now() < end) usleep(50000);
    for (int i = 0; i < n; i++) close(fds[i]);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "--idle") == 0) return idle(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]));
    if (argc != 6) {
        fprintf(stderr, "usage: echo_load HOST PORT CONNS SIZE SECONDS | --idle HOST PORT CONNS SECONDS\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]), n = atoi(argv[3]);
    size_t size = (size_t)atoi(argv[4]);
    double seconds = atof(argv[5]);
    if (n < 1 || n > 10000 || size < 1 || size > (1 << 20) || seconds <= 0 || seconds > 120) {
        fprintf(stderr, "out of bounds\n");
        return 2;
    }
    char *out = malloc(size), *in = malloc(size);
    for (size_t i = 0; i < size; i++) out[i] = (char)('a' + i % 26);
    struct conn *conns = calloc(n, sizeof *conns);
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        conns[i].fd = open_conn(host, port);
        if (conns[i].fd < 0) {
            fprintf(stderr, "connection %d failed: %s\n", i, strerror(errno));
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (unsigned)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
        if (write(conns[i].fd, out, size) != (ssize_t)size) return 1;
    }
    long trips = 0;
    double start = now(), end = start + seconds;
    struct epoll_event events[256];
    while (now() < end) {
        int k = epoll_wait(ep, events, 256, 100);
        for (int e = 0; e < k; e++) {
            struct conn *c = &conns[events[e].data.u32];
            ssize_t got = read(c->fd, in, size - c->got);
            if (got <= 0) {
                fprintf(stderr, "server closed or failed: %s\n", got ? strerror(errno) : "EOF");
                return 1;
            }
            if (memcmp(in, out + c->got, (size_t)got) != 0) {
                fprintf(stderr, "echo mismatch\n");
                return 1;
            }
            c->got += (size_t)got;
            if (c->got == size) {
                c->got = 0;
                trips++;
                if (write(c->fd, out, size) != (ssize_t)size) return 1;
            }
        }
    }
    double took = now() - start;
    printf("%.0f\n", trips / took);
    for (int i = 0; i < n; i++) close(conns[i].fd);
    return 0;
}
