/*
 * healthd._tcpengine: the TCP connect check's hot loop outside the interpreter.
 *
 * One Engine holds many plain TCP checks ("targets"), each with its interval, timeout and next
 * due time.  It keeps two index-tracked min-heaps (targets waiting for their due time; connects
 * in progress by deadline), one epoll set with every connect in progress and one timerfd armed
 * at the earliest time either heap needs.  The scheduler (healthd/scheduler.py) registers the
 * epoll set's descriptor as a reader of its event loop and calls run() when it is readable;
 * run() finishes every connect that is ready, times out the ones past their deadline, starts
 * the ones due, re-arms the timer and returns what finished as a list of
 * (handle, code, duration_s, delay_s): code 0 is a completed handshake, a positive code an
 * errno, TIMEOUT (-1) a connect that did not finish within its timeout.
 *
 * What a check does is what healthd/probes/tcp.py's tcp_start does: a non-blocking socket, a
 * connect; decided on the spot (a near backend, a refusal) its result is immediate; otherwise
 * TCP_INFO tells whether the handshake is still in SYN_SENT, and the socket waits for EPOLLOUT.
 * Every socket is closed when its check ends (also when the engine is closed or the target
 * removed); a connected one with an RST when its target was added with ``reset``.  Scheduling follows scheduler.py: the next due time is the last planned one plus
 * the interval, jittered by +-jitter of it, never in the past.  A target whose state is in
 * question (its last check failed, or fewer than ``rise`` checks succeeded since its last
 * failure) waits in a heap of its own (``retry``), due one interval after its last check began,
 * and is started before the targets of the main heap: when the engine falls behind (more checks
 * due than the CPU can start on time) the settled targets' checks slip, but the checks that
 * confirm a failure (fall) or a recovery (rise) do not queue behind them; a probe due within
 * EARLY_S (and
 * at most EARLY_FRACTION of its interval) starts with a wake-up that is already happening; one
 * run() starts at most MAX_STARTS probes, spends at most MAX_RUN_S starting them and returns at
 * most its budget of results, then lets the loop run other callbacks (what is left keeps the
 * descriptor readable: an expired timer, ready sockets, so the loop comes back at once); at most
 * max_in_flight connects wait at once; hold() starts nothing until released.
 *
 * Sockets are registered EPOLLONESHOT and never unregistered: closing the socket drops its
 * entry, and an entry that outlives the close (a child process between fork and exec holding
 * the descriptor) fires at most once, with a generation number that no longer matches.
 *
 * A target added with a request is a plain HTTP check, the one healthd/probes/http_lean.py
 * runs in Python: once connected it sends the request (built by Python, h11), reads until the
 * end of the first final response head (interim 1xx answers skipped, at most MAX_HEAD_BYTES),
 * judges its status line as http_lean's _STATUS_LINE does and its status against the expected
 * ranges, and closes (the body is never read: the kernel answers it with an RST).  Its outcomes
 * besides errnos and TIMEOUT are the HTTP_* codes; a quiet HTTP check counts only successes
 * with the status it last reported (another status is reported: the metrics show the latest).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
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
#define MAX_STARTS 256
#define MAX_RUN_S 0.005
#define WAKE_SLACK_S 0.001
#define EARLY_S 0.040
#define EARLY_FRACTION 0.05
#define TIMER_TAG UINT64_MAX
#define SYN_SENT 2
#define TCP_CLOSED 7

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
    int drain_at;  /* the slot where the next drain(limit) goes on */
} Engine;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double uniform(Engine *e, double a, double b) { /* xorshift64* */
    uint64_t x = e->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    e->rng = x;
    uint64_t r = x * 0x2545F4914F6CDD1DULL;
    return a + (b - a) * ((double)(r >> 11) * (1.0 / 9007199254740992.0));
}

/* the bucket of value: the first bound at or above it (as bisect_left); n: above every bound */
static int bucket_of(const double *bounds, int n, double value) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (bounds[mid] < value)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---- index-tracked min-heaps over target slots ------------------------------------------ */

static int heap_reserve(heap_t *h, int need) {
    if (need <= h->cap) return 0;
    int cap = h->cap ? h->cap * 2 : 64;
    while (cap < need) cap *= 2;
    int *items = PyMem_Realloc(h->items, sizeof(int) * (size_t)cap);
    if (!items) return -1;
    h->items = items;
    h->cap = cap;
    return 0;
}

static inline double key_of(Engine *e, int slot) { return e->targets[slot].when; }

static void heap_set(Engine *e, heap_t *h, int pos, int slot) {
    h->items[pos] = slot;
    e->targets[slot].hpos = pos;
}

static void sift_up(Engine *e, heap_t *h, int pos) {
    int slot = h->items[pos];
    double k = key_of(e, slot);
    while (pos > 0) {
        int parent = (pos - 1) / 2;
        if (key_of(e, h->items[parent]) <= k) break;
        heap_set(e, h, pos, h->items[parent]);
        pos = parent;
    }
    heap_set(e, h, pos, slot);
}

static void sift_down(Engine *e, heap_t *h, int pos) {
    int slot = h->items[pos];
    double k = key_of(e, slot);
    for (;;) {
        int child = 2 * pos + 1;
        if (child >= h->len) break;
        if (child + 1 < h->len && key_of(e, h->items[child + 1]) < key_of(e, h->items[child]))
            child++;
        if (key_of(e, h->items[child]) >= k) break;
        heap_set(e, h, pos, h->items[child]);
        pos = child;
    }
    heap_set(e, h, pos, slot);
}

/* Capacity is reserved when a target is added (each heap can hold every slot). */
static void heap_push(Engine *e, heap_t *h, int slot) {
    heap_set(e, h, h->len++, slot);
    sift_up(e, h, h->len - 1);
}

static void heap_remove(Engine *e, heap_t *h, int slot) {
    int pos = e->targets[slot].hpos;
    e->targets[slot].hpos = -1;
    int last = h->items[--h->len];
    if (pos == h->len) return;
    heap_set(e, h, pos, last);
    sift_down(e, h, pos);
    sift_up(e, h, e->targets[last].hpos);
}

static inline int heap_top(heap_t *h) { return h->len ? h->items[0] : -1; }

/* ---- one check ------------------------------------------------------------------------- */

static int append_result(PyObject *results, int slot, int code, double duration, double delay,
                         PyObject *extra) {
    PyObject *item = Py_BuildValue("(iiddO)", slot, code, duration, delay, extra ? extra : Py_None);
    if (!item) return -1;
    int rc = PyList_Append(results, item);
    Py_DECREF(item);
    return rc;
}

/* The check of ``slot`` ended with ``code`` (its socket, if any, is already closed): report it
 * and put the target back in the due heap for its next check.  ``extra``: a new reference or
 * NULL (an HTTP check's status is added here). */
static int finish(Engine *e, int slot, int code, double end, PyObject *results, PyObject *extra) {
    target_t *t = &e->targets[slot];
    double duration = code == TIMEOUT_CODE ? t->timeout : end - t->start;
    if (duration < 0) duration = 0;
    if (code != 0)
        t->oks = 0;
    else if (t->oks < t->rise)
        t->oks++;
    int in_question = code != 0 || t->oks < t->rise;
    /* the next check of a target in question is planned from when this one began: behind
     * schedule, the planned time has slipped with the backlog, and it is not to slip further */
    double from = in_question ? t->start : t->due;
    double due = from + t->interval * (1.0 + uniform(e, -e->jitter, e->jitter));
    if (due < end) due = end; /* fell behind: do not burst */
    t->due = due;
    t->when = due;
    t->state = IDLE;
    t->retry = in_question;
    heap_push(e, t->retry ? &e->retry : &e->due, slot);
    e->finished++;
    int http_answer = t->request && (code == 0 || code == HTTP_STATUS_CODE);
    /* nothing new (an HTTP check: the same status as last reported): counted, reported by
     * drain() */
    if (t->quiet && code == 0 && (!t->request || t->status == t->last_status)) {
        Py_XDECREF(extra);
        t->qn++;
        t->qsum += duration;
        t->qlast = end;
        t->qlast_duration = duration;
        int i = bucket_of(e->dbounds, e->ndb, duration);
        if (i < e->ndb) e->qcounts[(size_t)slot * (size_t)e->ndb + (size_t)i]++;
        i = bucket_of(e->lbounds, e->nlb, t->delay);
        if (i < e->nlb) e->lcounts[i]++;
        e->ln++;
        e->lsum += t->delay;
        return 0;
    }
    t->quiet = 0; /* a failure or a new status: reported, and Python decides again */
    if (t->request) t->last_status = http_answer ? t->status : 0;
    if (!extra && http_answer) {
        extra = PyLong_FromLong(t->status);
        if (!extra) return -1;
    }
    int rc = append_result(results, slot, code, duration, t->delay, extra);
    Py_XDECREF(extra);
    return rc;
}

/* Close a check's socket.  ``connected``: its handshake completed, so a plain close would send a
 * FIN and leave the socket in TIME_WAIT here for a minute; with ``reset`` it is aborted with an
 * RST instead, as keepalived's TCP_CHECK and HAProxy's checks do (no TIME_WAIT, fewer packets,
 * less kernel time per check).  A socket still in SYN_SENT sends nothing either way. */
static void close_socket(int fd, int reset, int connected) {
    if (reset && connected) {
        struct linger abort_close = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close);
    }
    close(fd);
}

static void close_connect(Engine *e, int slot, int connected) {
    target_t *t = &e->targets[slot];
    close_socket(t->fd, t->reset, connected);
    t->fd = -1;
    t->registered = 0;
    e->in_flight--;
    PyMem_Free(t->buf);
    t->buf = NULL;
    t->buf_len = t->buf_cap = t->head_at = 0;
}

/* A check in progress ends now with ``code`` (``extra``: a new reference or NULL). */
static int end_now(Engine *e, int slot, int code, PyObject *results, PyObject *extra) {
    heap_remove(e, &e->deadline, slot);
    close_connect(e, slot, 0);
    return finish(e, slot, code, now_s(), results, extra);
}

/* (Re)arm the check's socket for ``events`` (once). */
static int watch(Engine *e, int slot, uint32_t events) {
    target_t *t = &e->targets[slot];
    struct epoll_event ev = {.events = events | EPOLLONESHOT};
    ev.data.u64 = ((uint64_t)t->gen << 32) | (uint32_t)slot;
    if (epoll_ctl(e->epfd, t->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, t->fd, &ev) < 0)
        return errno;
    t->registered = 1;
    return 0;
}

/* ---- an HTTP check: the request out, the response head in ------------------------------ */

/* The status of a response head that ends with a CRLF (``HTTP/1.x DDD[ reason]\r\n``, as
 * healthd/probes/http_lean.py's _STATUS_LINE), or -1. */
static int status_of(const char *head, Py_ssize_t len) {
    if (len < 14 || memcmp(head, "HTTP/1.", 7) != 0 || (head[7] != '0' && head[7] != '1') ||
        head[8] != ' ')
        return -1;
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (head[i] < '0' || head[i] > '9') return -1;
        status = status * 10 + (head[i] - '0');
    }
    const char *p = head + 12, *stop = head + len;
    if (*p == ' ')
        for (p++; p < stop && *p != '\r' && *p != '\n'; p++) {
        }
    return p + 1 < stop && p[0] == '\r' && p[1] == '\n' ? status : -1;
}

static int expected(const target_t *t, int status) {
    for (int i = 0; i < t->nexpect; i++)
        if (t->expect[2 * i] <= status && status <= t->expect[2 * i + 1]) return 1;
    return 0;
}

static int http_read(Engine *e, int slot, PyObject *results);

/* Send (the rest of) the request; then wait for the response. */
static int http_send(Engine *e, int slot, PyObject *results) {
    target_t *t = &e->targets[slot];
    const char *data = PyBytes_AS_STRING(t->request);
    Py_ssize_t len = PyBytes_GET_SIZE(t->request);
    while (t->sent < len) {
        ssize_t n = send(t->fd, data + t->sent, (size_t)(len - t->sent), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            t->state = SENDING;
            int code = watch(e, slot, EPOLLOUT);
            return code ? end_now(e, slot, code, results, NULL) : 0;
        }
        if (n < 0) return end_now(e, slot, errno, results, NULL);
        t->sent += n;
    }
    t->state = READING;
    int code = watch(e, slot, EPOLLIN);
    return code ? end_now(e, slot, code, results, NULL) : 0;
}

/* Read what the socket has; judge the first final response head; else wait for more. */
static int http_read(Engine *e, int slot, PyObject *results) {
    target_t *t = &e->targets[slot];
    for (;;) {
        if (t->buf_len == t->buf_cap) {
            if (t->head_at) { /* interim answers skipped: their bytes go */
                memmove(t->buf, t->buf + t->head_at, (size_t)(t->buf_len - t->head_at));
                t->buf_len -= t->head_at;
                t->head_at = 0;
            }
            if (t->buf_len == t->buf_cap) {
                Py_ssize_t cap = t->buf_cap ? t->buf_cap * 2 : 1024;
                if (cap > MAX_HEAD_BYTES + READ_BYTES) cap = MAX_HEAD_BYTES + READ_BYTES;
                char *buf = PyMem_Realloc(t->buf, (size_t)cap);
                if (!buf) {
                    PyErr_NoMemory();
                    return -1;
                }
                t->buf = buf;
                t->buf_cap = cap;
            }
        }
        ssize_t n = recv(t->fd, t->buf + t->buf_len, (size_t)(t->buf_cap - t->buf_len), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int code = watch(e, slot, EPOLLIN);
            return code ? end_now(e, slot, code, results, NULL) : 0;
        }
        if (n < 0) return end_now(e, slot, errno, results, NULL);
        if (n == 0) {
            int code = t->buf_len > t->head_at ? HTTP_CLOSED_IN_HEAD : HTTP_CLOSED_EARLY;
            return end_now(e, slot, code, results, NULL);
        }
        t->buf_len += n;
        for (;;) {
            const char *head = t->buf + t->head_at;
            Py_ssize_t avail = t->buf_len - t->head_at;
            const char *end = memmem(head, (size_t)avail, "\r\n\r\n", 4);
            if (!end) break;
            Py_ssize_t head_len = end + 2 - head;
            int status = status_of(head, head_len);
            if (status < 0) {
                const char *eol = memmem(head, (size_t)head_len, "\r\n", 2);
                Py_ssize_t line = eol ? eol - head : head_len;
                PyObject *text = PyBytes_FromStringAndSize(head, line < 80 ? line : 80);
                if (!text) return -1;
                return end_now(e, slot, HTTP_BAD_LINE, results, text);
            }
            if (100 <= status && status < 200 && status != 101) { /* interim: the real one follows */
                t->head_at = end + 4 - t->buf;
                continue;
            }
            t->status = status;
            return end_now(e, slot, expected(t, status) ? 0 : HTTP_STATUS_CODE, results, NULL);
        }
        if (t->buf_len - t->head_at > MAX_HEAD_BYTES)
            return end_now(e, slot, HTTP_HEAD_TOO_LONG, results, NULL);
    }
}

/* The check of ``slot`` goes on with socket ``fd`` (``registered``: in the epoll set) until it
 * ends or its deadline passes. */
static void in_progress(Engine *e, int slot, int fd, double now, int registered) {
    target_t *t = &e->targets[slot];
    t->fd = fd;
    t->registered = registered;
    t->sent = 0;
    t->state = CONNECTING;
    t->when = now + t->timeout;
    e->in_flight++;
    heap_push(e, &e->deadline, slot);
}

static int start(Engine *e, int slot, double now, PyObject *results) {
    target_t *t = &e->targets[slot];
    t->start = now;
    t->delay = now > t->due ? now - t->due : 0.0;
    int fd = socket(t->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return finish(e, slot, errno, now_s(), results, NULL);
    int code = 0;
    if (connect(fd, &t->addr.sa, t->alen) < 0) code = errno;
    if (code == EINPROGRESS) {
        unsigned char info[1] = {0};
        socklen_t len = sizeof info;
        if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, info, &len) < 0) {
            code = errno;
        } else if (info[0] == SYN_SENT) {
            struct epoll_event ev = {.events = EPOLLOUT | EPOLLONESHOT};
            t->gen++;
            ev.data.u64 = ((uint64_t)t->gen << 32) | (uint32_t)slot;
            if (epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                code = errno;
            } else {
                in_progress(e, slot, fd, now, 1);
                return 0;
            }
        } else {
            int err = 0;
            len = sizeof err;
            code = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 ? errno : err;
            if (code == 0 && info[0] == TCP_CLOSED) code = ECONNRESET;
        }
    }
    if (code == 0 && t->request) { /* connected at once: the request goes out now */
        t->gen++;
        in_progress(e, slot, fd, now, 0);
        return http_send(e, slot, results);
    }
    close_socket(fd, t->reset, code == 0);
    return finish(e, slot, code, now_s(), results, NULL);
}

/* What an HTTP target holds, let go (it is removed). */
static void forget_http(target_t *t) {
    Py_CLEAR(t->request);
    PyMem_Free(t->expect);
    t->expect = NULL;
    t->nexpect = 0;
}

/* ---- the timer ------------------------------------------------------------------------- */

static void arm(Engine *e, double at) {
    if (at >= e->armed_at) return;
    struct itimerspec its = {0};
    if (at <= 0) at = 1e-9; /* zero would disarm */
    its.it_value.tv_sec = (time_t)at;
    its.it_value.tv_nsec = (long)((at - (double)(time_t)at) * 1e9);
    if (timerfd_settime(e->tfd, TFD_TIMER_ABSTIME, &its, NULL) == 0) e->armed_at = at;
}

static void rearm(Engine *e) {
    double at = INFINITY;
    int top = heap_top(&e->deadline);
    if (top >= 0) at = e->targets[top].when;
    heap_t *waiting[2] = {&e->retry, &e->due};
    for (int i = 0; i < 2; i++) {
        top = heap_top(waiting[i]);
        if (top >= 0 && !e->held && e->in_flight < e->max_in_flight && e->targets[top].when < at)
            at = e->targets[top].when;
    }
    if (at < INFINITY) arm(e, at);
}

/* ---- the Python type ------------------------------------------------------------------- */

/* a sequence of increasing floats into a new array */
static int read_bounds(PyObject *seq, double **out, int *n) {
    *out = NULL;
    *n = 0;
    if (!seq) return 0;
    PyObject *fast = PySequence_Fast(seq, "bounds must be a sequence of numbers");
    if (!fast) return -1;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(fast);
    double *bounds = PyMem_Calloc(len ? (size_t)len : 1, sizeof(double));
    if (!bounds) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        bounds[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
        if (bounds[i] == -1.0 && PyErr_Occurred()) {
            PyMem_Free(bounds);
            Py_DECREF(fast);
            return -1;
        }
        if (i && !(bounds[i] > bounds[i - 1])) {
            PyMem_Free(bounds);
            Py_DECREF(fast);
            PyErr_SetString(PyExc_ValueError, "bounds must increase");
            return -1;
        }
    }
    Py_DECREF(fast);
    *out = bounds;
    *n = (int)len;
    return 0;
}

static int Engine_init(Engine *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"max_in_flight", "jitter", "seed", "duration_bounds", "delay_bounds",
                             NULL};
    int max_in_flight = 1024;
    double jitter = 0.1;
    unsigned long long seed = 0x9E3779B97F4A7C15ULL;
    PyObject *duration_bounds = NULL, *delay_bounds = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|idKOO", kwlist, &max_in_flight, &jitter, &seed,
                                     &duration_bounds, &delay_bounds))
        return -1;
    if (self->epfd >= 0) {
        PyErr_SetString(PyExc_RuntimeError, "Engine already initialised");
        return -1;
    }
    if (read_bounds(duration_bounds, &self->dbounds, &self->ndb) < 0) return -1;
    if (read_bounds(delay_bounds, &self->lbounds, &self->nlb) < 0) return -1;
    self->lcounts = PyMem_Calloc(self->nlb ? (size_t)self->nlb : 1, sizeof(uint64_t));
    if (!self->lcounts) {
        PyErr_NoMemory();
        return -1;
    }
    self->max_in_flight = max_in_flight < 1 ? 1 : max_in_flight;
    self->jitter = jitter;
    self->rng = seed ? seed : 1;
    self->armed_at = INFINITY;
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (self->tfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TIMER_TAG};
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, self->tfd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Engine *self = (Engine *)type->tp_alloc(type, 0);
    if (self) {
        self->epfd = -1;
        self->tfd = -1;
        self->armed_at = INFINITY;
    }
    return (PyObject *)self;
}

static void close_all(Engine *self) {
    for (int i = 0; i < self->ntargets; i++) {
        target_t *t = &self->targets[i];
        if (t->live && t->fd >= 0) close(t->fd);
        t->fd = -1;
        PyMem_Free(t->buf);
        t->buf = NULL;
        if (t->live) forget_http(t);
        t->live = 0;
    }
    self->ntargets = self->nfree = self->live_count = self->in_flight = 0;
    self->due.len = self->retry.len = self->deadline.len = 0;
    if (self->tfd >= 0) close(self->tfd);
    if (self->epfd >= 0) close(self->epfd);
    self->tfd = self->epfd = -1;
}

static void Engine_dealloc(Engine *self) {
    close_all(self);
    PyMem_Free(self->targets);
    PyMem_Free(self->free_slots);
    PyMem_Free(self->due.items);
    PyMem_Free(self->retry.items);
    PyMem_Free(self->deadline.items);
    PyMem_Free(self->dbounds);
    PyMem_Free(self->lbounds);
    PyMem_Free(self->qcounts);
    PyMem_Free(self->lcounts);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_open(Engine *self) {
    if (self->epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "the engine is closed");
        return -1;
    }
    return 0;
}

static PyObject *Engine_add(Engine *self, PyObject *args) {
    const char *address;
    int port;
    double interval, timeout, due;
    int rise = 1;
    int reset = 0;
    PyObject *request = Py_None, *expect = Py_None;
    if (!PyArg_ParseTuple(args, "siddd|ipOO", &address, &port, &interval, &timeout, &due, &rise,
                          &reset, &request, &expect))
        return NULL;
    int *ranges = NULL;
    Py_ssize_t nranges = 0;
    if (request != Py_None) { /* an HTTP check: the request's bytes, the expected statuses */
        if (!PyBytes_Check(request) || PyBytes_GET_SIZE(request) == 0) {
            PyErr_SetString(PyExc_TypeError, "request: the request's bytes");
            return NULL;
        }
        PyObject *fast = PySequence_Fast(expect, "expect: a sequence of (low, high) statuses");
        if (!fast) return NULL;
        nranges = PySequence_Fast_GET_SIZE(fast);
        ranges = PyMem_Malloc(sizeof(int) * 2 * (size_t)(nranges ? nranges : 1));
        if (!ranges) {
            Py_DECREF(fast);
            return PyErr_NoMemory();
        }
        for (Py_ssize_t i = 0; i < nranges; i++) {
            int lo, hi;
            PyObject *pair = PySequence_Fast_GET_ITEM(fast, i);
            if (!PyTuple_Check(pair) || !PyArg_ParseTuple(pair, "ii", &lo, &hi)) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_TypeError, "expect: a sequence of (low, high) statuses");
                PyMem_Free(ranges);
                Py_DECREF(fast);
                return NULL;
            }
            ranges[2 * i] = lo;
            ranges[2 * i + 1] = hi;
        }
        Py_DECREF(fast);
    }
    if (check_open(self) < 0 || port < 0 || port > 65535 || !(interval > 0) || !(timeout > 0)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "port, interval or timeout out of range");
        PyMem_Free(ranges);
        return NULL;
    }
    target_t t;
    memset(&t, 0, sizeof t);
    if (inet_pton(AF_INET, address, &t.addr.in4.sin_addr) == 1) {
        t.family = AF_INET;
        t.addr.in4.sin_family = AF_INET;
        t.addr.in4.sin_port = htons((uint16_t)port);
        t.alen = sizeof t.addr.in4;
    } else if (inet_pton(AF_INET6, address, &t.addr.in6.sin6_addr) == 1) {
        t.family = AF_INET6;
        t.addr.in6.sin6_family = AF_INET6;
        t.addr.in6.sin6_port = htons((uint16_t)port);
        t.alen = sizeof t.addr.in6;
    } else {
        PyErr_Format(PyExc_ValueError, "not an IPv4 or IPv6 address: %s", address);
        goto fail;
    }
    int slot;
    if (self->nfree) {
        slot = self->free_slots[--self->nfree];
        t.gen = self->targets[slot].gen;
    } else {
        if (self->ntargets == self->cap) {
            int cap = self->cap ? self->cap * 2 : 64;
            target_t *targets = PyMem_Realloc(self->targets, sizeof(target_t) * (size_t)cap);
            if (!targets) goto no_memory;
            self->targets = targets;
            int *free_slots = PyMem_Realloc(self->free_slots, sizeof(int) * (size_t)cap);
            if (!free_slots) goto no_memory;
            self->free_slots = free_slots;
            if (self->ndb) {
                uint32_t *qcounts = PyMem_Realloc(
                    self->qcounts, sizeof(uint32_t) * (size_t)cap * (size_t)self->ndb);
                if (!qcounts) goto no_memory;
                self->qcounts = qcounts;
            }
            self->cap = cap;
        }
        if (heap_reserve(&self->due, self->cap) < 0 || heap_reserve(&self->retry, self->cap) < 0 ||
            heap_reserve(&self->deadline, self->cap) < 0)
            goto no_memory;
        slot = self->ntargets++;
    }
    if (self->ndb) memset(&self->qcounts[(size_t)slot * (size_t)self->ndb], 0,
                          sizeof(uint32_t) * (size_t)self->ndb);
    t.interval = interval;
    t.timeout = timeout;
    t.rise = rise < 1 ? 1 : rise;
    t.oks = t.rise; /* settled until a check fails */
    t.reset = request == Py_None ? reset : 0; /* an HTTP check: the kernel's RST, as ever */
    if (request != Py_None) {
        Py_INCREF(request);
        t.request = request;
        t.expect = ranges;
        t.nexpect = (int)nranges;
    }
    t.due = t.when = due;
    t.fd = -1;
    t.state = IDLE;
    t.live = 1;
    t.hpos = -1;
    self->targets[slot] = t;
    self->live_count++;
    heap_push(self, &self->due, slot);
    rearm(self);
    return PyLong_FromLong(slot);
no_memory:
    PyErr_NoMemory();
fail:
    PyMem_Free(ranges);
    return NULL;
}

static PyObject *Engine_remove(Engine *self, PyObject *arg) {
    long slot = PyLong_AsLong(arg);
    if (slot == -1 && PyErr_Occurred()) return NULL;
    if (check_open(self) < 0) return NULL;
    if (slot < 0 || slot >= self->ntargets || !self->targets[slot].live) {
        PyErr_Format(PyExc_KeyError, "no target %ld", slot);
        return NULL;
    }
    target_t *t = &self->targets[slot];
    if (t->state != IDLE) {
        heap_remove(self, &self->deadline, (int)slot);
        close_connect(self, (int)slot, 1); /* cancelled: no result (connected or not) */
    } else {
        heap_remove(self, t->retry ? &self->retry : &self->due, (int)slot);
    }
    forget_http(t);
    t->live = 0;
    t->gen++;
    self->free_slots[self->nfree++] = (int)slot;
    self->live_count--;
    Py_RETURN_NONE;
}

/* due now: at ``soon`` or before, or within EARLY_S and EARLY_FRACTION of its interval */
static inline int starts_now(const target_t *t, double now, double soon, double early) {
    return t->when <= soon || (t->when <= early && t->when - now <= t->interval * EARLY_FRACTION);
}

static PyObject *Engine_run(Engine *self, PyObject *args) {
    int budget = MAX_EVENTS;
    if (!PyArg_ParseTuple(args, "|i", &budget)) return NULL;
    if (check_open(self) < 0) return NULL;
    if (budget < 1) budget = 1;
    if (budget > MAX_EVENTS) budget = MAX_EVENTS;
    PyObject *results = PyList_New(0);
    if (!results) return NULL;
    self->finished = 0;
    struct epoll_event events[MAX_EVENTS];
    int n = epoll_wait(self->epfd, events, budget, 0);
    double now = now_s();
    for (int i = 0; i < n; i++) {
        uint64_t data = events[i].data.u64;
        if (data == TIMER_TAG) {
            uint64_t ticks;
            if (read(self->tfd, &ticks, sizeof ticks) < 0) { /* EAGAIN: already read */ }
            self->armed_at = INFINITY;
            continue;
        }
        int slot = (int)(uint32_t)data;
        uint32_t gen = (uint32_t)(data >> 32);
        if (slot >= self->ntargets) continue;
        target_t *t = &self->targets[slot];
        if (!t->live || t->state == IDLE || t->gen != gen) continue; /* stale */
        if (t->state == SENDING) {
            if (http_send(self, slot, results) < 0) goto error;
            continue;
        }
        if (t->state == READING) { /* a hang-up too: what came before it is read first */
            if (http_read(self, slot, results) < 0) goto error;
            continue;
        }
        int code = 0;
        if (events[i].events & (EPOLLERR | EPOLLHUP)) {
            int err = 0;
            socklen_t len = sizeof err;
            code = getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 ? errno : err;
        }
        if (code == 0 && t->request) { /* connected: the request goes out */
            if (http_send(self, slot, results) < 0) goto error;
            continue;
        }
        heap_remove(self, &self->deadline, slot);
        close_connect(self, slot, code == 0);
        if (finish(self, slot, code, now, results, NULL) < 0) goto error;
    }
    /* connects past their deadline */
    double expire_by = now + WAKE_SLACK_S;
    for (int top; PyList_GET_SIZE(results) < budget && (top = heap_top(&self->deadline)) >= 0 &&
                  self->targets[top].when <= expire_by;) {
        heap_remove(self, &self->deadline, top);
        close_connect(self, top, 0);
        if (finish(self, top, TIMEOUT_CODE, now, results, NULL) < 0) goto error;
    }
    /* probes due */
    double soon = now + WAKE_SLACK_S;
    double early = now + EARLY_S;
    for (int started = 0; !self->held && started < MAX_STARTS; started++) {
        if (self->in_flight >= self->max_in_flight || PyList_GET_SIZE(results) >= budget) break;
        /* a retry that is due first, then the main heap */
        heap_t *from = &self->retry;
        int top = heap_top(from);
        if (top < 0 || !starts_now(&self->targets[top], now, soon, early)) {
            from = &self->due;
            top = heap_top(from);
            if (top < 0 || !starts_now(&self->targets[top], now, soon, early)) break;
        }
        double at = now_s();
        if (started && at - now > MAX_RUN_S) break; /* the rest once the loop had its turn */
        heap_remove(self, from, top);
        if (start(self, top, at, results) < 0) goto error;
    }
    rearm(self);
    return results;
error:
    Py_DECREF(results);
    return NULL;
}

static PyObject *Engine_quiet(Engine *self, PyObject *args) {
    int slot, quiet;
    if (!PyArg_ParseTuple(args, "ip", &slot, &quiet)) return NULL;
    if (check_open(self) < 0) return NULL;
    if (slot < 0 || slot >= self->ntargets || !self->targets[slot].live) {
        PyErr_Format(PyExc_KeyError, "no target %d", slot);
        return NULL;
    }
    self->targets[slot].quiet = quiet;
    Py_RETURN_NONE;
}

static PyObject *counts_tuple_u32(const uint32_t *counts, int n) {
    PyObject *tuple = PyTuple_New(n);
    if (!tuple) return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *v = PyLong_FromUnsignedLong(counts[i]);
        if (!v) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, i, v);
    }
    return tuple;
}

static PyObject *Engine_drain_one(Engine *self, PyObject *args) {
    int slot;
    if (!PyArg_ParseTuple(args, "i", &slot)) return NULL;
    if (slot < 0 || slot >= self->ntargets || !self->targets[slot].live || !self->targets[slot].qn)
        Py_RETURN_NONE;
    target_t *t = &self->targets[slot];
    uint32_t *row = self->ndb ? &self->qcounts[(size_t)slot * (size_t)self->ndb] : NULL;
    PyObject *counts = counts_tuple_u32(row, self->ndb);
    if (!counts) return NULL;
    PyObject *out = Py_BuildValue("(IdNdd)", t->qn, t->qsum, counts, t->qlast, t->qlast_duration);
    if (!out) return NULL;
    t->qn = 0;
    t->qsum = 0;
    if (row) memset(row, 0, sizeof(uint32_t) * (size_t)self->ndb);
    return out;
}

static PyObject *Engine_drain(Engine *self, PyObject *args) {
    int limit = INT_MAX;
    if (!PyArg_ParseTuple(args, "|i", &limit)) return NULL;
    if (limit < 1) limit = 1;
    PyObject *checks = PyList_New(0);
    if (!checks) return NULL;
    int slot = self->drain_at;
    for (; slot < self->ntargets && PyList_GET_SIZE(checks) < limit; slot++) {
        target_t *t = &self->targets[slot];
        if (!t->live || !t->qn) continue;
        uint32_t *row = self->ndb ? &self->qcounts[(size_t)slot * (size_t)self->ndb] : NULL;
        PyObject *counts = counts_tuple_u32(row, self->ndb);
        if (!counts) goto error;
        PyObject *item = Py_BuildValue("(iIdNdd)", slot, t->qn, t->qsum, counts, t->qlast,
                                       t->qlast_duration);
        if (!item) goto error;
        int failed = PyList_Append(checks, item);
        Py_DECREF(item);
        if (failed < 0) goto error;
        t->qn = 0;
        t->qsum = 0;
        if (row) memset(row, 0, sizeof(uint32_t) * (size_t)self->ndb);
    }
    PyObject *delays = PyTuple_New(self->nlb);
    if (!delays) goto error;
    for (int i = 0; i < self->nlb; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(self->lcounts[i]);
        if (!v) {
            Py_DECREF(delays);
            goto error;
        }
        PyTuple_SET_ITEM(delays, i, v);
        self->lcounts[i] = 0;
    }
    int done = slot >= self->ntargets;
    self->drain_at = done ? 0 : slot;
    PyObject *out = Py_BuildValue("(N(NKd)O)", checks, delays, self->ln, self->lsum,
                                  done ? Py_True : Py_False);
    self->ln = 0;
    self->lsum = 0;
    return out;
error:
    Py_DECREF(checks);
    return NULL;
}

static PyObject *Engine_hold(Engine *self, PyObject *arg) {
    int held = PyObject_IsTrue(arg);
    if (held < 0) return NULL;
    self->held = held;
    if (!held && self->epfd >= 0) rearm(self);
    Py_RETURN_NONE;
}

static PyObject *Engine_fileno(Engine *self, PyObject *Py_UNUSED(ignored)) {
    if (check_open(self) < 0) return NULL;
    return PyLong_FromLong(self->epfd);
}

static PyObject *Engine_close(Engine *self, PyObject *Py_UNUSED(ignored)) {
    close_all(self);
    Py_RETURN_NONE;
}

static PyObject *Engine_get_in_flight(Engine *self, void *Py_UNUSED(closure)) {
    return PyLong_FromLong(self->in_flight);
}

static PyObject *Engine_get_finished(Engine *self, void *Py_UNUSED(closure)) {
    return PyLong_FromLong(self->finished);
}

static Py_ssize_t Engine_len(Engine *self) { return self->live_count; }

static PyMethodDef Engine_methods[] = {
    {"add", (PyCFunction)Engine_add, METH_VARARGS,
     "add(address, port, interval_s, timeout_s, due, rise=1, reset=False, request=None, "
     "expect=None) -> handle: check address:port from due on (after a failure, until rise "
     "successes, ahead of any backlog); reset: close a connected socket with an RST; request: "
     "an HTTP check, send these bytes and judge the response's status by expect, a sequence of "
     "(low, high)"},
    {"remove", (PyCFunction)Engine_remove, METH_O,
     "remove(handle): stop checking it (a connect in progress is closed, with no result)"},
    {"run", (PyCFunction)Engine_run, METH_VARARGS,
     "run(budget=1024) -> [(handle, code, duration_s, delay_s, extra)]: finish, time out and "
     "start what is due, stopping at budget results (the rest on the next call: the descriptor "
     "stays readable); extra: an HTTP check's status (code 0 or HTTP_STATUS), the first line "
     "of a response it could not read (HTTP_BAD_LINE), else None"},
    {"hold", (PyCFunction)Engine_hold, METH_O, "hold(flag): while true, start no check"},
    {"quiet", (PyCFunction)Engine_quiet, METH_VARARGS,
     "quiet(handle, flag): while true, its successes are counted (drain()), not reported; its"
     " first failure is reported and ends it"},
    {"drain_one", (PyCFunction)Engine_drain_one, METH_VARARGS,
     "drain_one(handle) -> (n, total_s, counts, last_end, last_duration_s) or None: that target's"
     " successes counted since they were last drained"},
    {"drain", (PyCFunction)Engine_drain, METH_VARARGS,
     "drain(limit) -> ([(handle, n, total_s, counts, last_end, last_duration_s)], (delay_counts,"
     " n, delay_total_s), done): the successes counted since they were last drained, for at"
     " most limit targets (by duration bucket) from where the last call stopped, and for all"
     " (by schedule-delay bucket); done: the last target was reached (the next call starts"
     " over). What is drained counts again from zero"},
    {"fileno", (PyCFunction)Engine_fileno, METH_NOARGS,
     "the descriptor to wait on: readable when run() has work"},
    {"close", (PyCFunction)Engine_close, METH_NOARGS, "close every socket and the engine"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"in_flight", (getter)Engine_get_in_flight, NULL, "connects waiting on the network", NULL},
    {"finished", (getter)Engine_get_finished, NULL,
     "checks the latest run() finished, those counted quietly included", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Engine_as_sequence = {
    .sq_length = (lenfunc)Engine_len,
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "healthd._tcpengine.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "TCP connect checks scheduled, started and waited for in C",
    .tp_new = Engine_new,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
    .tp_as_sequence = &Engine_as_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "healthd._tcpengine",
    "TCP connect checks in C (see healthd/_tcpengine.c)", -1, NULL,
};

PyMODINIT_FUNC PyInit__tcpengine(void) {
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "TIMEOUT", TIMEOUT_CODE) < 0 ||
        PyModule_AddIntConstant(m, "HTTP_STATUS", HTTP_STATUS_CODE) < 0 ||
        PyModule_AddIntConstant(m, "HTTP_CLOSED_EARLY", HTTP_CLOSED_EARLY) < 0 ||
        PyModule_AddIntConstant(m, "HTTP_BAD_LINE", HTTP_BAD_LINE) < 0 ||
        PyModule_AddIntConstant(m, "HTTP_CLOSED_IN_HEAD", HTTP_CLOSED_IN_HEAD) < 0 ||
        PyModule_AddIntConstant(m, "HTTP_HEAD_TOO_LONG", HTTP_HEAD_TOO_LONG) < 0 ||
        PyModule_AddIntConstant(m, "MAX_HEAD_BYTES", MAX_HEAD_BYTES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
