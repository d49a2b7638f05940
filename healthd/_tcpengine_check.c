/* healthd._tcpengine, one check: the heaps of targets, a TCP connect, an HTTP exchange (the
 * request out, the response head in), how a check ends, and the timer.  See _tcpengine.c. */
#include "_tcpengine.h"

double te_now_s(void) {
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

int te_heap_reserve(heap_t *h, int need) {
    if (need <= h->cap) return 0;
    int cap = h->cap ? h->cap * 2 : 64;
    while (cap < need) cap *= 2;
    int *items = PyMem_RawRealloc(h->items, sizeof(int) * (size_t)cap);
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
void te_heap_push(Engine *e, heap_t *h, int slot) {
    heap_set(e, h, h->len++, slot);
    sift_up(e, h, h->len - 1);
}

void te_heap_remove(Engine *e, heap_t *h, int slot) {
    int pos = e->targets[slot].hpos;
    e->targets[slot].hpos = -1;
    int last = h->items[--h->len];
    if (pos == h->len) return;
    heap_set(e, h, pos, last);
    sift_down(e, h, pos);
    sift_up(e, h, e->targets[last].hpos);
}


/* ---- one check ------------------------------------------------------------------------- */

/* Append a result to ``out`` (without memory for it, it is dropped: the check is rescheduled
 * already, and its next result is reported). */
static void append_result(results_t *out, int slot, int code, double duration, double delay,
                          int status, const char *line, int line_len) {
    if (out->len == out->cap) {
        int cap = out->cap ? out->cap * 2 : 256;
        result_t *items = PyMem_RawRealloc(out->items, sizeof(result_t) * (size_t)cap);
        if (!items) return;
        out->items = items;
        out->cap = cap;
    }
    result_t *r = &out->items[out->len++];
    r->slot = slot;
    r->code = code;
    r->duration = duration;
    r->delay = delay;
    r->status = status;
    r->line = NULL;
    r->line_len = 0;
    if (line && (r->line = PyMem_RawMalloc(line_len ? (size_t)line_len : 1))) {
        memcpy(r->line, line, (size_t)line_len);
        r->line_len = line_len;
    }
}

/* The check of ``slot`` ended with ``code`` (its socket, if any, is already closed): report it
 * and put the target back in the due heap for its next check.  ``line``: the first line of a
 * response that could not be read (HTTP_BAD_LINE), else NULL (an HTTP check's status is added
 * here). */
void te_finish(Engine *e, int slot, int code, double end, results_t *out, const char *line,
               int line_len) {
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
    te_heap_push(e, t->retry ? &e->retry : &e->due, slot);
    e->finished_acc++;
    int http_answer = t->request && (code == 0 || code == HTTP_STATUS_CODE);
    /* nothing new (an HTTP check: the same status as last reported): counted, reported by
     * drain() */
    if (t->quiet && code == 0 && (!t->request || t->status == t->last_status)) {
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
        return;
    }
    t->quiet = 0; /* a failure or a new status: reported, and Python decides again */
    if (t->request) t->last_status = http_answer ? t->status : 0;
    append_result(out, slot, code, duration, t->delay, http_answer && !line ? t->status : -1,
                  line, line_len);
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

void te_close_connect(Engine *e, int slot, int connected) {
    target_t *t = &e->targets[slot];
    close_socket(t->fd, t->reset, connected);
    t->fd = -1;
    t->registered = 0;
    e->in_flight--;
    PyMem_RawFree(t->buf);
    t->buf = NULL;
    t->buf_len = t->buf_cap = t->head_at = 0;
}

/* A check in progress ends now with ``code`` (``line``: see te_finish). */
static void end_now(Engine *e, int slot, int code, results_t *out, const char *line,
                    int line_len) {
    te_heap_remove(e, &e->deadline, slot);
    te_close_connect(e, slot, 0);
    te_finish(e, slot, code, isnan(e->end_at) ? te_now_s() : e->end_at, out, line, line_len);
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

/* Send (the rest of) the request; then wait for the response. */
void te_http_send(Engine *e, int slot, results_t *out) {
    target_t *t = &e->targets[slot];
    const char *data = PyBytes_AS_STRING(t->request);
    Py_ssize_t len = PyBytes_GET_SIZE(t->request);
    while (t->sent < len) {
        ssize_t n = send(t->fd, data + t->sent, (size_t)(len - t->sent), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            t->state = SENDING;
            int code = watch(e, slot, EPOLLOUT);
            if (code) end_now(e, slot, code, out, NULL, 0);
            return;
        }
        if (n < 0) {
            end_now(e, slot, errno, out, NULL, 0);
            return;
        }
        t->sent += n;
    }
    t->state = READING;
    int code = watch(e, slot, EPOLLIN);
    if (code) end_now(e, slot, code, out, NULL, 0);
}

/* Read what the socket has; judge the first final response head; else wait for more. */
void te_http_read(Engine *e, int slot, results_t *out) {
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
                char *buf = PyMem_RawRealloc(t->buf, (size_t)cap);
                if (!buf) {
                    end_now(e, slot, ENOMEM, out, NULL, 0);
                    return;
                }
                t->buf = buf;
                t->buf_cap = cap;
            }
        }
        ssize_t n = recv(t->fd, t->buf + t->buf_len, (size_t)(t->buf_cap - t->buf_len), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int code = watch(e, slot, EPOLLIN);
            if (code) end_now(e, slot, code, out, NULL, 0);
            return;
        }
        if (n < 0) {
            end_now(e, slot, errno, out, NULL, 0);
            return;
        }
        if (n == 0) {
            int code = t->buf_len > t->head_at ? HTTP_CLOSED_IN_HEAD : HTTP_CLOSED_EARLY;
            end_now(e, slot, code, out, NULL, 0);
            return;
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
                char first[LINE_BYTES]; /* the buffer goes with the socket (end_now) */
                int first_len = (int)(line < LINE_BYTES ? line : LINE_BYTES);
                memcpy(first, head, (size_t)first_len);
                end_now(e, slot, HTTP_BAD_LINE, out, first, first_len);
                return;
            }
            if (100 <= status && status < 200 && status != 101) { /* interim: the real one follows */
                t->head_at = end + 4 - t->buf;
                continue;
            }
            t->status = status;
            end_now(e, slot, expected(t, status) ? 0 : HTTP_STATUS_CODE, out, NULL, 0);
            return;
        }
        if (t->buf_len - t->head_at > MAX_HEAD_BYTES) {
            end_now(e, slot, HTTP_HEAD_TOO_LONG, out, NULL, 0);
            return;
        }
    }
}

/* ---- what the kernel received before this engine looked ------------------------------ */

/* When the socket last received (``data``: a segment with data; else an ACK, such as the
 * SYN-ACK), on the engine's clock (the kernel says how many ms ago, in jiffies); INFINITY if
 * it does not say.  ``state``: the TCP state, set when known. */
static double received_at(int fd, int data, int *state) {
    struct tcp_info info;
    socklen_t len = sizeof info;
    double now = te_now_s();
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) < 0) return INFINITY;
    *state = info.tcpi_state;
    return now - (data ? info.tcpi_last_data_recv : info.tcpi_last_ack_recv) / 1000.0;
}

/* The deadline of ``slot`` passed: a last look at its socket before it is timed out.  What the
 * kernel received before the deadline counts, although this engine had not got round to it (a
 * loop busy elsewhere, a budget of events used up while more were ready): a connect established
 * in time succeeds, a response head that had arrived in time is judged, each with the duration
 * it took.  Returns 1 if the check ended here, 0 if it is to time out. */
int te_last_look(Engine *e, int slot, results_t *out) {
    target_t *t = &e->targets[slot];
    if (t->state == SENDING || (t->state == CONNECTING && t->request))
        return 0; /* the request is not out (all of it): no answer to look for */
    int state = -1;
    double at = received_at(t->fd, t->state == READING, &state);
    if (at > t->when) return 0;
    if (t->state == CONNECTING) {
        if (state != TCP_IS_ESTABLISHED && state != TCP_IS_CLOSE_WAIT) return 0;
        te_heap_remove(e, &e->deadline, slot);
        te_close_connect(e, slot, 1);
        te_finish(e, slot, 0, at, out, NULL, 0);
        return 1;
    }
    e->end_at = at; /* READING: what came in by the deadline, judged as it would have been */
    te_http_read(e, slot, out);
    e->end_at = NAN;
    return t->state == READING ? 0 : 1; /* still reading: no whole head by the deadline */
}

/* An HTTP check's connect is found established (its request goes out now).  If this engine saw
 * it late, the time it was established and not looked at is not the real server's: the
 * deadline moves on by as much.  Only looked up past half the timeout (a syscall). */
void te_connected_late(Engine *e, int slot, double now) {
    target_t *t = &e->targets[slot];
    if (now - t->start <= t->timeout / 2) return;
    int state = -1;
    double at = received_at(t->fd, 0, &state);
    if (at >= now || at > t->when) return;
    te_heap_remove(e, &e->deadline, slot);
    t->when += now - at;
    te_heap_push(e, &e->deadline, slot);
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
    te_heap_push(e, &e->deadline, slot);
}

void te_start(Engine *e, int slot, double now, results_t *out) {
    target_t *t = &e->targets[slot];
    t->start = now;
    t->delay = now > t->due ? now - t->due : 0.0;
    int fd = socket(t->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        te_finish(e, slot, errno, te_now_s(), out, NULL, 0);
        return;
    }
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
                return;
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
        te_http_send(e, slot, out);
        return;
    }
    close_socket(fd, t->reset, code == 0);
    te_finish(e, slot, code, te_now_s(), out, NULL, 0);
}

/* What an HTTP target holds, let go (it is removed). */
void te_forget_http(target_t *t) {
    Py_CLEAR(t->request); /* with the GIL: only Python's calls (remove, close) forget */
    PyMem_RawFree(t->expect);
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

void te_rearm(Engine *e) {
    double at = INFINITY;
    int top = te_heap_top(&e->deadline);
    if (top >= 0) at = e->targets[top].when;
    heap_t *waiting[2] = {&e->retry, &e->due};
    for (int i = 0; i < 2; i++) {
        top = te_heap_top(waiting[i]);
        if (top >= 0 && !te_holding(e) && e->in_flight < e->max_in_flight && e->targets[top].when < at)
            at = e->targets[top].when;
    }
    if (at < INFINITY) arm(e, at);
}
