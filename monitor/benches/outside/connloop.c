/* The loop the `modes` benchmark measures from outside (issue 23): a separate process, in
 * a network namespace of its own, that a user could compile and run the same way.
 *
 *   bwconnloop tcp N DIR     N loopback TCP connects to its own listener (connect, accept,
 *                            close both ends), each timed
 *   bwconnloop serve 0 DIR   a server of its own: listens on loopback, writes its port to
 *                            DIR/port, accepts and closes (in batches, every 2 ms) until
 *                            killed
 *   bwconnloop client N DIR  N TCP connects to the server whose port is in DIR/port
 *                            (connect, close), each timed: as an app sees a server that
 *                            is not itself (its packets are the server's, not the app's)
 *   bwconnloop udp N DIR     N connect() calls of one UDP socket to a loopback address
 *   bwconnloop getpid N DIR  N getpid() system calls
 * (the last two are timed as a whole: a clock read per call would be a third of a UDP
 * connect's time).
 *
 * It waits for DIR/go, runs, writes {"mean_ns"} (tcp, client: also "p50_ns", "p99_ns") to
 * DIR/done; then runs again on DIR/go2 (writing DIR/done2), and so on, until DIR/stop (so
 * that an audit of it as its command is still loaded when the benchmark reads the kernel's
 * statistics, and one setting can be timed with them off and measured with them on).
 * Exit 2 on bad arguments, 3 when a call fails. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int by_value(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Waits for DIR/go (phase 1) or DIR/goN, or DIR/stop: 1 to run, 0 to stop. */
static int wait_go(const char *dir, int phase) {
    char go[4096], stop[4096];
    if (phase == 1)
        snprintf(go, sizeof go, "%s/go", dir);
    else
        snprintf(go, sizeof go, "%s/go%d", dir, phase);
    snprintf(stop, sizeof stop, "%s/stop", dir);
    for (;;) {
        if (access(go, F_OK) == 0)
            return 1;
        if (access(stop, F_OK) == 0)
            return 0;
        usleep(10000);
    }
}

/* Listens on 127.0.0.1, writes the port to DIR/port, accepts and closes until killed. */
static int serve(const char *dir) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t alen = sizeof a;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (void *)&a, sizeof a) || listen(l, 4096) ||
        getsockname(l, (void *)&a, &alen))
        return 3;
    char path[4096], port[4096];
    snprintf(path, sizeof path, "%s/port.tmp", dir);
    snprintf(port, sizeof port, "%s/port", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return 3;
    fprintf(f, "%d\n", ntohs(a.sin_port));
    fclose(f);
    rename(path, port);
    /* Accepts in batches, sleeping between them: a server blocked in accept() is woken by
     * every connect, and on a 2-CPU machine that wakeup lands on the loop's CPU in some
     * runs and not in others (p50s 30 % apart, run to run, with nothing watching). */
    int flags = fcntl(l, F_GETFL);
    if (flags < 0 || fcntl(l, F_SETFL, flags | O_NONBLOCK))
        return 3;
    for (;;) {
        int x;
        while ((x = accept(l, NULL, NULL)) >= 0)
            close(x);
        usleep(2000);
    }
}

/* The port in DIR/port, 0 when there is none. */
static int server_port(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/port", dir);
    FILE *f = fopen(path, "r");
    int port = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%d", &port) != 1)
        port = 0;
    fclose(f);
    return port;
}

/* One timed run of N calls; its figures in DIR/done (phase 1) or DIR/doneN. */
static int one_run(const char *mode, long n, long long *t, int l, int u,
                   const struct sockaddr_in *a, const struct sockaddr_in *server,
                   const char *dir, int phase) {
    long long start = now_ns();
    if (!strcmp(mode, "tcp")) {
        for (long i = 0; i < n; i++) {
            long long s = now_ns();
            int c = socket(AF_INET, SOCK_STREAM, 0);
            if (c < 0 || connect(c, (const void *)a, sizeof *a))
                return 3;
            int x = accept(l, NULL, NULL);
            if (x < 0)
                return 3;
            close(c);
            close(x);
            t[i] = now_ns() - s;
        }
    } else if (!strcmp(mode, "client")) {
        for (long i = 0; i < n; i++) {
            long long s = now_ns();
            int c = socket(AF_INET, SOCK_STREAM, 0);
            if (c < 0 || connect(c, (const void *)server, sizeof *server))
                return 3;
            close(c);
            t[i] = now_ns() - s;
        }
    } else if (!strcmp(mode, "udp")) {
        for (long i = 0; i < n; i++)
            if (connect(u, (const void *)a, sizeof *a))
                return 3;
    } else if (!strcmp(mode, "getpid")) {
        for (long i = 0; i < n; i++)
            syscall(SYS_getpid);
    } else {
        return 2;
    }
    double mean = (double)(now_ns() - start) / n;
    qsort(t, n, sizeof *t, by_value);
    char path[4096], done[4096];
    if (phase == 1) {
        snprintf(path, sizeof path, "%s/done.tmp", dir);
        snprintf(done, sizeof done, "%s/done", dir);
    } else {
        snprintf(path, sizeof path, "%s/done%d.tmp", dir, phase);
        snprintf(done, sizeof done, "%s/done%d", dir, phase);
    }
    FILE *f = fopen(path, "w");
    if (!f)
        return 3;
    if (!strcmp(mode, "tcp") || !strcmp(mode, "client"))
        fprintf(f, "{\"p50_ns\": %lld, \"p99_ns\": %lld, \"mean_ns\": %.1f}\n", t[n / 2],
                t[n * 99 / 100], mean);
    else
        fprintf(f, "{\"mean_ns\": %.2f}\n", mean);
    fclose(f);
    rename(path, done);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4)
        return 2;
    const char *mode = argv[1], *dir = argv[3];
    long n = atol(argv[2]);
    if (!strcmp(mode, "serve"))
        return serve(dir);
    if (n <= 0)
        return 2;
    long long *t = calloc(n, sizeof *t);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t alen = sizeof a;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (!t || l < 0 || bind(l, (void *)&a, sizeof a) || listen(l, 128) ||
        getsockname(l, (void *)&a, &alen))
        return 3;
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    if (u < 0)
        return 3;
    struct sockaddr_in server = a;
    if (!strcmp(mode, "client")) {
        int port = server_port(dir);
        if (port <= 0 || port > 65535)
            return 2;
        server.sin_port = htons(port);
    }
    for (int phase = 1; wait_go(dir, phase); phase++) {
        int rc = one_run(mode, n, t, l, u, &a, &server, dir, phase);
        if (rc)
            return rc;
    }
    return 0;
}
