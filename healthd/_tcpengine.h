/* healthd._tcpengine's shared declarations: the engine's state (one Engine of targets, their
 * heaps, the epoll set and timer) between _tcpengine.c (the Python type: adding, running,
 * draining) and _tcpengine_check.c (one check: the heaps, a connect, an HTTP exchange, the
 * timer).  See _tcpengine.c for what the engine does. */
#ifndef HEALTHD_TCPENGINE_H
#define HEALTHD_TCPENGINE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_CODE (-1)
/* an HTTP check's outcomes other than an errno (run()'s codes; extra: see run()) */
#define HTTP_STATUS_CODE (-2)       /* a status not expected; extra: the status */
#define HTTP_CLOSED_EARLY (-3)      /* closed without a byte of response */
#define HTTP_BAD_LINE (-4)          /* extra: the first line, at most 80 bytes */
#define HTTP_CLOSED_IN_HEAD (-5)
#define HTTP_HEAD_TOO_LONG (-6)
#define MAX_HEAD_BYTES 65536
#define READ_BYTES 4096
#define MAX_EVENTS 1024
#define YIELD_EVENTS 32 /* a threaded pass's events while a Python call waits for the lock */
#define MAX_STARTS 256
#define MAX_RUN_S 0.005
#define WAKE_SLACK_S 0.001
#define EARLY_S 0.040
#define EARLY_FRACTION 0.05
#define TIMER_TAG UINT64_MAX
#define LINE_BYTES 80
/* threaded: results waiting for Python beyond this, the engine starts no check (back-pressure) */
#define PENDING_MAX 16384
#define SYN_SENT 2
#define TCP_CLOSED 7
#define TCP_IS_ESTABLISHED 1
#define TCP_IS_CLOSE_WAIT 8

/* IDLE: waiting in a due heap; the others: in the deadline heap, with a socket */
enum { IDLE = 0, CONNECTING = 1, SENDING = 2, READING = 3 };

typedef struct {
    double when;      /* its heap's key: due time (IDLE) or deadline (CONNECTING) */
    double due;       /* planned start of the current or next check */
    double start;     /* when the current connect began */
    double delay;     /* start - due of the current connect */
    double interval;
    double timeout;
    int fd;           /* -1 unless CONNECTING */
    int state;
    int live;         /* 0: a free slot */
    int hpos;         /* position in its heap, -1 when in none */
    uint32_t gen;     /* bumped at every connect: tells stale epoll events apart */
    int retry;        /* in question: it waits in the retry heap, not the due heap */
    int rise;         /* successes in a row that settle it again after a failure */
    int oks;          /* successes since its last failure, at most rise */
    int quiet;        /* successes are counted here (drain()), not reported one by one */
    int reset;        /* close a connected socket with an RST (SO_LINGER 0), not a FIN */
    /* an HTTP check (request not NULL): send the request, read the response head, judge its
     * status against expect (nexpect inclusive ranges); the body is never read */
    PyObject *request; /* bytes */
    Py_ssize_t sent;
    int *expect;
    int nexpect;
    char *buf;        /* the response so far (READING), PyMem */
    Py_ssize_t buf_len;
    Py_ssize_t buf_cap;
    Py_ssize_t head_at; /* where the current response head begins (interim ones skipped) */
    int registered;   /* the socket is in the epoll set */
    int status;       /* of the current check's final response */
    int last_status;  /* of the latest result reported */
    uint32_t qn;      /* successes counted since the last drain */
    double qsum;      /* their durations, summed */
    double qlast;     /* when the latest of them ended (CLOCK_MONOTONIC) */
    double qlast_duration;
    socklen_t alen;
    int family;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } addr;
} target_t;

/* a finished check, as run() returns it */
typedef struct {
    int slot;
    int code;
    double duration;
    double delay;
    int status;   /* an HTTP check's status, or -1 */
    int line_len; /* HTTP_BAD_LINE: the first line's length */
    char *line;   /* HTTP_BAD_LINE: the first line (PyMem_Raw), else NULL */
} result_t;

typedef struct {
    result_t *items;
    int len, cap;
} results_t;

typedef struct {
    int *items; /* slot indexes */
    int len, cap;
} heap_t;

typedef struct {
    PyObject_HEAD
    int epfd;
    int tfd;
    double armed_at; /* the timerfd's expiry; INFINITY when disarmed or already fired */
    target_t *targets;
    int ntargets, cap;
    int *free_slots;
    int nfree;
    heap_t due;      /* IDLE targets */
    heap_t retry;    /* IDLE targets in question (see retry above): started first when due */
    heap_t deadline; /* CONNECTING targets */
    int in_flight;
    int max_in_flight;
    int held;
    int live_count;
    double jitter;
    uint64_t rng;
    /* quiet successes: duration buckets per target, schedule delays for all (drain()) */
    double *dbounds; /* upper bounds of the duration buckets */
    int ndb;
    uint32_t *qcounts; /* cap x ndb: per slot, successes by duration bucket */
    double *lbounds;   /* upper bounds of the schedule-delay buckets */
    int nlb;
    uint64_t *lcounts; /* nlb: quiet successes by schedule-delay bucket */
    uint64_t ln;
    double lsum;
    int finished; /* checks finished by the latest run(), quiet ones included */
    int finished_acc; /* checks finished since the latest run() */
    results_t out;    /* results not yet handed to Python */
    /* threaded (Engine(threaded=True)): one thread runs the engine, Python's calls take
     * ``lock``; the thread never takes the GIL */
    int threaded;
    int stopping;
    int notified;     /* notefd was written since Python last read it */
    int notefd;       /* eventfd: readable when results wait for run() */
    int stopfd;       /* eventfd: the thread is to stop */
    int nice;         /* the thread runs this much nicer than the process */
    atomic_int waiters; /* Python calls waiting for the lock: the thread lets them in */
    pthread_t thread;
    pthread_mutex_t lock;
    double end_at;  /* NAN, or when the check ending now ended (what the socket held at a last look) */
    int drain_at;  /* the slot where the next drain(limit) goes on */
} Engine;

static inline int te_heap_top(heap_t *h) { return h->len ? h->items[0] : -1; }

static inline void te_result_free(result_t *r) {
    PyMem_RawFree(r->line);
    r->line = NULL;
}

/* no check is to start: held by Python, or (threaded) too many results wait for it */
static inline int te_holding(const Engine *e) {
    return e->held || (e->threaded && e->out.len >= PENDING_MAX);
}

/* _tcpengine_check.c */
double te_now_s(void);
int te_heap_reserve(heap_t *h, int need);
void te_heap_push(Engine *e, heap_t *h, int slot);
void te_heap_remove(Engine *e, heap_t *h, int slot);
void te_finish(Engine *e, int slot, int code, double end, results_t *out, const char *line,
               int line_len);
void te_close_connect(Engine *e, int slot, int connected);
void te_start(Engine *e, int slot, double now, results_t *out);
void te_http_send(Engine *e, int slot, results_t *out);
void te_http_read(Engine *e, int slot, results_t *out);
int te_last_look(Engine *e, int slot, results_t *out);
void te_connected_late(Engine *e, int slot, double now);
void te_forget_http(target_t *t);
void te_rearm(Engine *e);

#endif
