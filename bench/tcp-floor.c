/*
 * tcp-floor: the system calls of a TCP connect check in a bare C loop, for bench/host_floor.py.
 *
 *   tcp-floor ADDR BASE_PORT N SECONDS
 *
 * Checks ADDR:BASE_PORT .. BASE_PORT+N-1 in turn (a non-blocking socket, connect, SO_ERROR if
 * still in progress, close), then sleeps 50 ms, until SECONDS have passed (bounded in time and
 * count).  Prints "CHECKS FAILED USER_S SYS_S" of this process.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double seconds(struct timeval tv) { return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6; }

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: tcp-floor ADDR BASE_PORT N SECONDS\n");
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) return 2;
    int base = atoi(argv[2]), n = atoi(argv[3]);
    double limit = atof(argv[4]);
    long done = 0, failed = 0;
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    double start = now();
    while (now() - start < limit) {
        for (int port = base; port < base + n; port++) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0) return 1;
            addr.sin_port = htons((unsigned short)port);
            int code = connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 ? errno : 0;
            if (code == EINPROGRESS) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
                code = err;
            }
            failed += code != 0;
            done++;
            close(fd);
        }
        usleep(50000); /* let TIME_WAIT entries go (tcp_tw_reuse), as host_floor.py does */
    }
    getrusage(RUSAGE_SELF, &after);
    printf("%ld %ld %.6f %.6f\n", done, failed, seconds(after.ru_utime) - seconds(before.ru_utime),
           seconds(after.ru_stime) - seconds(before.ru_stime));
    return 0;
}
