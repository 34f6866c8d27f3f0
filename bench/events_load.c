/* Short connections for `sockscope events`, from a separate compiled process.
 *
 *   events_load --serve PORT IN OUT SECONDS   a server on 127.0.0.1:PORT: for each connection, read IN
 *                                            bytes, write OUT bytes, close (it closes first); prints
 *                                            "serving PID" once listening, "served N" at the end
 *   events_load HOST PORT RATE SECONDS OUT IN CONCURRENCY
 *                                            a client: RATE connections a second for SECONDS, each one
 *                                            connect, send OUT bytes, receive IN bytes until the server
 *                                            closes, close; at most CONCURRENCY at once. Prints
 *                                            "client PID", then "done N failed F short S seconds T"
 *
 * Every count is bounded (rate, seconds, concurrency); both sides check byte counts exactly.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONC 1024

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char buffer[1 << 20];

struct conn {
    int fd;
    long sent, got;
};

static int serve(int port, long in, long out, double seconds) {
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0) {
        perror("listen");
        return 1;
    }
    printf("serving %d\n", getpid());
    fflush(stdout);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    static struct conn conns[65536];
    long served = 0, bad = 0;
    double end = now() + seconds;
    struct epoll_event got[256];
    while (now() < end) {
        int n = epoll_wait(ep, got, 256, 100);
        for (int i = 0; i < n; i++) {
            int fd = got[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= 65536) { close(c); bad++; continue; }
                    conns[c] = (struct conn){c, 0, 0};
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            struct conn *k = &conns[fd];
            ssize_t r = read(fd, buffer, sizeof buffer);
            if (r > 0) k->got += r;
            if (r == 0 || (r < 0 && errno != EAGAIN) || k->got > in) { close(fd); bad++; continue; }
            if (k->got == in) {
                long left = out;
                while (left > 0) {  /* OUT is small: the socket buffer takes it at once */
                    ssize_t w = write(fd, buffer, left > (long)sizeof buffer ? (long)sizeof buffer : left);
                    if (w <= 0) break;
                    left -= w;
                }
                if (left) bad++;
                close(fd);
                served++;
            }
        }
    }
    printf("served %ld bad %ld\n", served, bad);
    return 0;
}

static int start(const struct sockaddr_in *a, int ep, struct conn *slot) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    if (connect(fd, (const struct sockaddr *)a, sizeof *a) < 0 && errno != EINPROGRESS) { close(fd); return -1; }
    *slot = (struct conn){fd, 0, 0};
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = slot};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static int client(const char *host, int port, double rate, double seconds, long out, long in, int conc) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    printf("client %d\n", getpid());
    fflush(stdout);
    static struct conn slots[MAX_CONC];
    int free_slots[MAX_CONC], nfree = conc;
    for (int i = 0; i < conc; i++) free_slots[i] = conc - 1 - i;
    int ep = epoll_create1(0);
    long started = 0, done = 0, failed = 0, shortc = 0;
    double t0 = now(), end = t0 + seconds;
    struct epoll_event got[256];
    while (1) {
        double t = now();
        long due = t < end ? (long)((t - t0) * rate) : (long)(seconds * rate);
        while (started < due && nfree > 0) {
            struct conn *slot = &slots[free_slots[--nfree]];
            if (start(&a, ep, slot) < 0) { failed++; nfree++; }
            started++;
        }
        if (t >= end && nfree == conc) break;
        if (t > end + 10) break;  /* bounded: stragglers do not hold the run */
        int n = epoll_wait(ep, got, 256, 1);
        for (int i = 0; i < n; i++) {
            struct conn *k = got[i].data.ptr;
            int finished = 0;
            if (k->sent < out && (got[i].events & EPOLLOUT)) {
                ssize_t w = write(k->fd, buffer, out - k->sent);
                if (w > 0) k->sent += w;
                else if (errno != EAGAIN) { failed++; finished = 1; }
                if (k->sent == out) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = k};
                    epoll_ctl(ep, EPOLL_CTL_MOD, k->fd, &ev);
                }
            }
            if (!finished && (got[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                ssize_t r = read(k->fd, buffer, sizeof buffer);
                if (r > 0) k->got += r;
                else if (r == 0) { if (k->got == in && k->sent == out) done++; else shortc++; finished = 1; }
                else if (errno != EAGAIN) { failed++; finished = 1; }
            }
            if (finished) {
                close(k->fd);
                free_slots[nfree++] = (int)(k - slots);
            }
        }
    }
    printf("done %ld failed %ld short %ld seconds %.3f\n", done, failed, shortc, now() - t0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "--serve") == 0) {
        long in = atol(argv[3]), out = atol(argv[4]);
        double seconds = atof(argv[5]);
        if (in < 1 || in > (1 << 16) || out < 0 || out > (1 << 16) || seconds <= 0 || seconds > 300) { fprintf(stderr, "out of bounds\n"); return 2; }
        return serve(atoi(argv[2]), in, out, seconds);
    }
    if (argc != 8) {
        fprintf(stderr, "usage: events_load --serve PORT IN OUT SECONDS | HOST PORT RATE SECONDS OUT IN CONCURRENCY\n");
        return 2;
    }
    double rate = atof(argv[3]), seconds = atof(argv[4]);
    long out = atol(argv[5]), in = atol(argv[6]);
    int conc = atoi(argv[7]);
    if (rate <= 0 || rate > 100000 || seconds <= 0 || seconds > 120 || out < 1 || out > (1 << 16) || in < 0 || in > (1 << 16) || conc < 1 || conc > MAX_CONC) {
        fprintf(stderr, "out of bounds\n");
        return 2;
    }
    return client(argv[1], atoi(argv[2]), rate, seconds, out, in, conc);
}
