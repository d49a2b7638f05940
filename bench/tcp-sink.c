/*
 * tcp-sink: N cheap real servers in one process, for the benchmarks (bench/README.md).
 *
 *   tcp-sink ADDR BASE_PORT N tcp|http CONTROL_FIFO
 *
 * One epoll loop, one listening socket per port BASE_PORT .. BASE_PORT+N-1 on ADDR.
 *   tcp:  accept, then close (a TCP connect check sees a completed handshake).
 *   http: accept, read the request, answer "HTTP/1.0 200 OK" with a 3-byte body, close.
 * "Killing" a real server closes its listening socket, so a connect gets an RST at once;
 * "reviving" it listens again. Commands, one per line, on CONTROL_FIFO (opened read-write so
 * that writers may come and go):
 *   kill PORT | up PORT | quit
 * Prints "ready" on stdout once every port listens. Exits on "quit", SIGTERM or SIGINT.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 256
/* epoll data: listening sockets carry their index, connections carry CONN_TAG | fd. */
#define CONN_TAG (1ULL << 40)
#define CTL_TAG (1ULL << 41)

static const char RESPONSE[] =
    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";

static int epfd;
static int *listeners; /* -1 when killed */
static struct sockaddr_in addr_template;
static int base_port;
static int nports;
static int http_mode;
static volatile sig_atomic_t stop;

static void on_signal(int sig) { (void)sig; stop = 1; }

static int listen_on(int index) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = addr_template;
    sa.sin_port = htons((unsigned short)(base_port + index));
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 4096) < 0) {
        close(fd);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (unsigned long long)index};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void command(char *line) {
    int port = 0;
    if (strncmp(line, "quit", 4) == 0) {
        stop = 1;
        return;
    }
    if (sscanf(line, "kill %d", &port) == 1) {
        int i = port - base_port;
        if (i >= 0 && i < nports && listeners[i] >= 0) {
            epoll_ctl(epfd, EPOLL_CTL_DEL, listeners[i], NULL);
            close(listeners[i]);
            listeners[i] = -1;
        }
    } else if (sscanf(line, "up %d", &port) == 1) {
        int i = port - base_port;
        if (i >= 0 && i < nports && listeners[i] < 0) listeners[i] = listen_on(i);
    }
}

static void read_control(int fd) {
    static char buf[4096];
    static size_t used;
    ssize_t n = read(fd, buf + used, sizeof buf - 1 - used);
    if (n <= 0) return;
    used += (size_t)n;
    buf[used] = 0;
    char *start = buf, *nl;
    while ((nl = strchr(start, '\n')) != NULL) {
        *nl = 0;
        command(start);
        start = nl + 1;
    }
    used = (size_t)(buf + used - start);
    memmove(buf, start, used);
    if (used == sizeof buf - 1) used = 0; /* a line too long: drop it */
}

static void accept_all(int lfd) {
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) return; /* EAGAIN, or an error: try again on the next event */
        if (!http_mode) {
            close(cfd);
            continue;
        }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP,
                                 .data.u64 = CONN_TAG | (unsigned long long)cfd};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, cfd, &ev) < 0) close(cfd);
    }
}

static void serve(int cfd) {
    char buf[4096];
    ssize_t n = read(cfd, buf, sizeof buf);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n > 0) {
        ssize_t w = write(cfd, RESPONSE, sizeof RESPONSE - 1);
        (void)w;
    }
    close(cfd); /* closing also removes it from the epoll set */
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s ADDR BASE_PORT N tcp|http CONTROL_FIFO\n", argv[0]);
        return 2;
    }
    memset(&addr_template, 0, sizeof addr_template);
    addr_template.sin_family = AF_INET;
    if (inet_pton(AF_INET, argv[1], &addr_template.sin_addr) != 1) {
        fprintf(stderr, "tcp-sink: bad address %s\n", argv[1]);
        return 2;
    }
    base_port = atoi(argv[2]);
    nports = atoi(argv[3]);
    http_mode = strcmp(argv[4], "http") == 0;
    if (nports <= 0 || base_port <= 0 || base_port + nports > 65536) {
        fprintf(stderr, "tcp-sink: bad port range\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    int ctl = open(argv[5], O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (epfd < 0 || ctl < 0) {
        perror("tcp-sink: epoll/control fifo");
        return 1;
    }
    struct epoll_event cev = {.events = EPOLLIN, .data.u64 = CTL_TAG};
    epoll_ctl(epfd, EPOLL_CTL_ADD, ctl, &cev);
    listeners = calloc((size_t)nports, sizeof *listeners);
    for (int i = 0; i < nports; i++) {
        listeners[i] = listen_on(i);
        if (listeners[i] < 0) {
            fprintf(stderr, "tcp-sink: cannot listen on port %d: %s\n", base_port + i,
                    strerror(errno));
            return 1;
        }
    }
    printf("ready\n");
    fflush(stdout);
    struct epoll_event events[MAX_EVENTS];
    while (!stop) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, 500);
        for (int i = 0; i < n; i++) {
            unsigned long long tag = events[i].data.u64;
            if (tag == CTL_TAG) {
                read_control(ctl);
            } else if (tag & CONN_TAG) {
                serve((int)(tag & 0xffffffffULL));
            } else if (listeners[tag] >= 0) {
                accept_all(listeners[tag]);
            }
        }
    }
    return 0;
}
