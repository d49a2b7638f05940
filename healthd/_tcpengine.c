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
 *
 * A check is timed out only after a last look at its socket (te_last_look): the kernel's
 * TCP_INFO says when the socket last received, so a connect established, or a response head
 * received, before the deadline counts although run() came round to it late (a loop busy
 * elsewhere; a budget of events used up while more were ready, which an HTTP check's events
 * that end nothing can do).  An HTTP connect found established late has its deadline moved on
 * by the time it waited for this engine (te_connected_late): the real server has the request
 * for as long as it would have had.
 *
 * Threaded (Engine(threaded=True), probes.engine_threads): a thread of the engine's own, at
 * ``nice`` relative to the process and with every signal blocked, waits on the epoll set and
 * makes the passes run() would make, under the engine's mutex and without the GIL; Python's
 * calls take the mutex (the thread lets a waiting call in between two passes, and cuts a pass
 * short while one waits: YIELD_EVENTS, no more expiries or starts).  A pass's
 * results wait in the engine (C records: no Python object is made inside a pass, threaded or
 * not) and an eventfd, the descriptor fileno() then gives, wakes the event loop; run() hands
 * them over.  While PENDING_MAX results wait, the thread starts no check (it still finishes
 * and times out the ones in flight); a removed target's waiting results go with it.
 *
 * This file is the Python type (adding and removing targets, run(), the quiet counts);
 * _tcpengine_check.c is one check (the heaps, a connect, an HTTP exchange, how a check ends,
 * the timer); _tcpengine.h holds what the two share.
 */
#include "_tcpengine.h"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>

/* ---- the engine's own thread (threaded) --------------------------------------------------- */

static void te_pass(Engine *self, int budget);

/* A Python call waits for the engine's lock (threaded): the pass in progress cuts short.  The
 * thread runs at a lower priority than the event loop's (``nice``); held by it, the lock would
 * make the loop wait for its turn on a busy CPU as well. */
static inline int yielding(Engine *self) {
    return self->threaded && atomic_load_explicit(&self->waiters, memory_order_relaxed) > 0;
}

/* Python's side of the lock (with the GIL: the thread never takes it, so waiting cannot
 * deadlock); the thread lets a waiting caller in between two passes. */
static void lock(Engine *self) {
    if (!self->threaded) return;
    atomic_fetch_add(&self->waiters, 1);
    pthread_mutex_lock(&self->lock);
    atomic_fetch_sub(&self->waiters, 1);
}

static void unlock(Engine *self) {
    if (self->threaded) pthread_mutex_unlock(&self->lock);
}

/* results wait: wake the event loop (once until run() takes them); under the lock */
static void notify(Engine *self) {
    if (self->notified) return;
    uint64_t one = 1;
    if (write(self->notefd, &one, sizeof one) == sizeof one) self->notified = 1;
}

static void *engine_thread(void *arg) {
    Engine *self = arg;
    sigset_t all; /* the process's signals go to its other threads (Python handles them there) */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    if (self->nice) { /* per thread on Linux: this thread only */
        pid_t tid = (pid_t)syscall(SYS_gettid);
        errno = 0;
        int now = getpriority(PRIO_PROCESS, (id_t)tid);
        if (errno == 0) (void)setpriority(PRIO_PROCESS, (id_t)tid, now + self->nice);
    }
    struct pollfd fds[2] = {{.fd = self->epfd, .events = POLLIN},
                            {.fd = self->stopfd, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (fds[1].revents) break;
        if (!(fds[0].revents & POLLIN)) continue;
        pthread_mutex_lock(&self->lock);
        if (self->stopping) {
            pthread_mutex_unlock(&self->lock);
            break;
        }
        te_pass(self, MAX_EVENTS); /* holding: finishes and times out, starts nothing */
        if (self->out.len) notify(self);
        pthread_mutex_unlock(&self->lock);
        while (atomic_load(&self->waiters)) sched_yield();
    }
    return NULL;
}

static int start_thread(Engine *self, int nice) {
    self->notefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    self->stopfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->notefd < 0 || self->stopfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    pthread_mutex_init(&self->lock, NULL);
    self->nice = nice;
    self->threaded = 1;
    int rc = pthread_create(&self->thread, NULL, engine_thread, self);
    if (rc != 0) {
        self->threaded = 0;
        pthread_mutex_destroy(&self->lock);
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static void stop_thread(Engine *self) {
    if (!self->threaded) return;
    pthread_mutex_lock(&self->lock);
    self->stopping = 1;
    pthread_mutex_unlock(&self->lock);
    uint64_t one = 1;
    (void)!write(self->stopfd, &one, sizeof one);
    pthread_join(self->thread, NULL); /* it never takes the GIL: no need to let it go */
    pthread_mutex_destroy(&self->lock);
    self->threaded = 0;
    close(self->notefd);
    close(self->stopfd);
    self->notefd = self->stopfd = -1;
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
    double *bounds = PyMem_RawCalloc(len ? (size_t)len : 1, sizeof(double));
    if (!bounds) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        bounds[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
        if (bounds[i] == -1.0 && PyErr_Occurred()) {
            PyMem_RawFree(bounds);
            Py_DECREF(fast);
            return -1;
        }
        if (i && !(bounds[i] > bounds[i - 1])) {
            PyMem_RawFree(bounds);
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
                             "threaded", "nice", NULL};
    int max_in_flight = 1024;
    double jitter = 0.1;
    unsigned long long seed = 0x9E3779B97F4A7C15ULL;
    PyObject *duration_bounds = NULL, *delay_bounds = NULL;
    int threaded = 0, nice = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|idKOOpi", kwlist, &max_in_flight, &jitter,
                                     &seed, &duration_bounds, &delay_bounds, &threaded, &nice))
        return -1;
    if (self->epfd >= 0) {
        PyErr_SetString(PyExc_RuntimeError, "Engine already initialised");
        return -1;
    }
    if (read_bounds(duration_bounds, &self->dbounds, &self->ndb) < 0) return -1;
    if (read_bounds(delay_bounds, &self->lbounds, &self->nlb) < 0) return -1;
    self->lcounts = PyMem_RawCalloc(self->nlb ? (size_t)self->nlb : 1, sizeof(uint64_t));
    if (!self->lcounts) {
        PyErr_NoMemory();
        return -1;
    }
    self->max_in_flight = max_in_flight < 1 ? 1 : max_in_flight;
    self->jitter = jitter;
    self->rng = seed ? seed : 1;
    self->armed_at = INFINITY;
    self->end_at = NAN;
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
    if (threaded && start_thread(self, nice) < 0) return -1;
    return 0;
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Engine *self = (Engine *)type->tp_alloc(type, 0);
    if (self) {
        self->epfd = -1;
        self->tfd = -1;
        self->notefd = -1;
        self->stopfd = -1;
        self->armed_at = INFINITY;
    }
    return (PyObject *)self;
}

static void close_all(Engine *self) {
    stop_thread(self);
    for (int i = 0; i < self->ntargets; i++) {
        target_t *t = &self->targets[i];
        if (t->live && t->fd >= 0) close(t->fd);
        t->fd = -1;
        PyMem_RawFree(t->buf);
        t->buf = NULL;
        if (t->live) te_forget_http(t);
        t->live = 0;
    }
    self->ntargets = self->nfree = self->live_count = self->in_flight = 0;
    self->due.len = self->retry.len = self->deadline.len = 0;
    if (self->tfd >= 0) close(self->tfd);
    if (self->epfd >= 0) close(self->epfd);
    self->tfd = self->epfd = -1;
    for (int i = 0; i < self->out.len; i++) te_result_free(&self->out.items[i]);
    self->out.len = 0;
}

static void Engine_dealloc(Engine *self) {
    close_all(self);
    PyMem_RawFree(self->targets);
    PyMem_RawFree(self->free_slots);
    PyMem_RawFree(self->due.items);
    PyMem_RawFree(self->retry.items);
    PyMem_RawFree(self->deadline.items);
    PyMem_RawFree(self->dbounds);
    PyMem_RawFree(self->lbounds);
    PyMem_RawFree(self->qcounts);
    PyMem_RawFree(self->lcounts);
    PyMem_RawFree(self->out.items);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_open(Engine *self) {
    if (self->epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "the engine is closed");
        return -1;
    }
    return 0;
}

static PyObject *Engine_add_locked(Engine *self, PyObject *args) {
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
        ranges = PyMem_RawMalloc(sizeof(int) * 2 * (size_t)(nranges ? nranges : 1));
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
                PyMem_RawFree(ranges);
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
        PyMem_RawFree(ranges);
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
            target_t *targets = PyMem_RawRealloc(self->targets, sizeof(target_t) * (size_t)cap);
            if (!targets) goto no_memory;
            self->targets = targets;
            int *free_slots = PyMem_RawRealloc(self->free_slots, sizeof(int) * (size_t)cap);
            if (!free_slots) goto no_memory;
            self->free_slots = free_slots;
            if (self->ndb) {
                uint32_t *qcounts = PyMem_RawRealloc(
                    self->qcounts, sizeof(uint32_t) * (size_t)cap * (size_t)self->ndb);
                if (!qcounts) goto no_memory;
                self->qcounts = qcounts;
            }
            self->cap = cap;
        }
        if (te_heap_reserve(&self->due, self->cap) < 0 || te_heap_reserve(&self->retry, self->cap) < 0 ||
            te_heap_reserve(&self->deadline, self->cap) < 0)
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
    te_heap_push(self, &self->due, slot);
    te_rearm(self);
    return PyLong_FromLong(slot);
no_memory:
    PyErr_NoMemory();
fail:
    PyMem_RawFree(ranges);
    return NULL;
}

static PyObject *Engine_remove_locked(Engine *self, PyObject *arg) {
    long slot = PyLong_AsLong(arg);
    if (slot == -1 && PyErr_Occurred()) return NULL;
    if (check_open(self) < 0) return NULL;
    if (slot < 0 || slot >= self->ntargets || !self->targets[slot].live) {
        PyErr_Format(PyExc_KeyError, "no target %ld", slot);
        return NULL;
    }
    target_t *t = &self->targets[slot];
    if (t->state != IDLE) {
        te_heap_remove(self, &self->deadline, (int)slot);
        te_close_connect(self, (int)slot, 1); /* cancelled: no result (connected or not) */
    } else {
        te_heap_remove(self, t->retry ? &self->retry : &self->due, (int)slot);
    }
    te_forget_http(t);
    t->live = 0;
    t->gen++;
    int kept = 0; /* its results not yet taken go too: the slot may be reused */
    for (int i = 0; i < self->out.len; i++)
        if (self->out.items[i].slot != slot)
            self->out.items[kept++] = self->out.items[i];
        else
            te_result_free(&self->out.items[i]);
    self->out.len = kept;
    self->free_slots[self->nfree++] = (int)slot;
    self->live_count--;
    Py_RETURN_NONE;
}

/* due now: at ``soon`` or before, or within EARLY_S and EARLY_FRACTION of its interval */
static inline int starts_now(const target_t *t, double now, double soon, double early) {
    return t->when <= soon || (t->when <= early && t->when - now <= t->interval * EARLY_FRACTION);
}

/* One pass: finish what is ready, time out what is past its deadline, start what is due; at
 * most ``budget`` results (the rest on the next pass: the epoll set stays readable). */
static void te_pass(Engine *self, int budget) {
    int before = self->out.len;
    struct epoll_event events[MAX_EVENTS];
    /* threaded, with a Python call waiting for the lock: a short pass (the event loop waits) */
    if (yielding(self) && budget > YIELD_EVENTS) budget = YIELD_EVENTS;
    int n = epoll_wait(self->epfd, events, budget, 0);
    double now = te_now_s();
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
            te_http_send(self, slot, &self->out);
            continue;
        }
        if (t->state == READING) { /* a hang-up too: what came before it is read first */
            te_http_read(self, slot, &self->out);
            continue;
        }
        int code = 0;
        if (events[i].events & (EPOLLERR | EPOLLHUP)) {
            int err = 0;
            socklen_t len = sizeof err;
            code = getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 ? errno : err;
        }
        if (code == 0 && t->request) { /* connected: the request goes out */
            te_connected_late(self, slot, now);
            te_http_send(self, slot, &self->out);
            continue;
        }
        te_heap_remove(self, &self->deadline, slot);
        te_close_connect(self, slot, code == 0);
        te_finish(self, slot, code, now, &self->out, NULL, 0);
    }
    /* checks past their deadline: what their socket holds first */
    double expire_by = now + WAKE_SLACK_S;
    for (int top; self->out.len - before < budget && (top = te_heap_top(&self->deadline)) >= 0 &&
                  self->targets[top].when <= expire_by && !yielding(self);) {
        if (te_last_look(self, top, &self->out)) continue;
        te_heap_remove(self, &self->deadline, top);
        te_close_connect(self, top, 0);
        te_finish(self, top, TIMEOUT_CODE, now, &self->out, NULL, 0);
    }
    /* probes due */
    double soon = now + WAKE_SLACK_S;
    double early = now + EARLY_S;
    for (int started = 0; !te_holding(self) && started < MAX_STARTS; started++) {
        if (self->in_flight >= self->max_in_flight || self->out.len - before >= budget) break;
        if (yielding(self)) break; /* the rest on the next pass: the timer is re-armed for it */
        /* a retry that is due first, then the main heap */
        heap_t *from = &self->retry;
        int top = te_heap_top(from);
        if (top < 0 || !starts_now(&self->targets[top], now, soon, early)) {
            from = &self->due;
            top = te_heap_top(from);
            if (top < 0 || !starts_now(&self->targets[top], now, soon, early)) break;
        }
        double at = te_now_s();
        if (started && at - now > MAX_RUN_S) break; /* the rest once the loop had its turn */
        te_heap_remove(self, from, top);
        te_start(self, top, at, &self->out);
    }
    te_rearm(self);
}

/* The results waiting, at most ``budget`` of them, as run() returns them; the rest stay. */
static PyObject *take_results(Engine *self, int budget) {
    int n = self->out.len < budget ? self->out.len : budget;
    PyObject *results = PyList_New(n);
    if (!results) return NULL;
    for (int i = 0; i < n; i++) {
        result_t *r = &self->out.items[i];
        PyObject *extra;
        if (r->line)
            extra = PyBytes_FromStringAndSize(r->line, r->line_len);
        else if (r->status >= 0)
            extra = PyLong_FromLong(r->status);
        else
            extra = Py_NewRef(Py_None);
        PyObject *item = extra ? Py_BuildValue("(iiddN)", r->slot, r->code, r->duration,
                                               r->delay, extra)
                               : NULL;
        if (!item) {
            Py_DECREF(results);
            return NULL;
        }
        PyList_SET_ITEM(results, i, item);
    }
    for (int i = 0; i < n; i++) te_result_free(&self->out.items[i]);
    self->out.len -= n;
    if (self->out.len)
        memmove(self->out.items, self->out.items + n, sizeof(result_t) * (size_t)self->out.len);
    else if (self->out.cap > 4096) { /* a backlog's room goes back (a slow start-up) */
        PyMem_RawFree(self->out.items);
        self->out.items = NULL;
        self->out.cap = 0;
    }
    return results;
}

static PyObject *Engine_run(Engine *self, PyObject *args) {
    int budget = MAX_EVENTS;
    if (!PyArg_ParseTuple(args, "|i", &budget)) return NULL;
    if (check_open(self) < 0) return NULL;
    if (budget < 1) budget = 1;
    if (budget > MAX_EVENTS) budget = MAX_EVENTS;
    if (!self->threaded) {
        self->finished_acc = 0;
        te_pass(self, budget);
        self->finished = self->finished_acc;
        return take_results(self, budget);
    }
    lock(self);
    uint64_t ticks;
    if (read(self->notefd, &ticks, sizeof ticks) < 0) { /* EAGAIN: nothing was written */ }
    self->notified = 0;
    int was_full = self->out.len >= PENDING_MAX;
    PyObject *results = take_results(self, budget);
    self->finished = self->finished_acc;
    self->finished_acc = 0;
    if (self->out.len) notify(self); /* the rest on the next call */
    if (was_full && self->out.len < PENDING_MAX) te_rearm(self); /* start checks again */
    unlock(self);
    return results;
}

static PyObject *Engine_quiet_locked(Engine *self, PyObject *args) {
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

static PyObject *Engine_drain_one_locked(Engine *self, PyObject *args) {
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

static PyObject *Engine_drain_locked(Engine *self, PyObject *args) {
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

static PyObject *Engine_hold_locked(Engine *self, PyObject *arg) {
    int held = PyObject_IsTrue(arg);
    if (held < 0) return NULL;
    self->held = held;
    if (!held && self->epfd >= 0) te_rearm(self);
    Py_RETURN_NONE;
}

/* Python's calls: each under the lock (threaded) */
#define UNDER_LOCK(name)                                                  \
    static PyObject *Engine_##name(Engine *self, PyObject *arg) {         \
        lock(self);                                                       \
        PyObject *r = Engine_##name##_locked(self, arg);                  \
        unlock(self);                                                     \
        return r;                                                         \
    }

UNDER_LOCK(add)
UNDER_LOCK(remove)
UNDER_LOCK(quiet)
UNDER_LOCK(drain_one)
UNDER_LOCK(drain)
UNDER_LOCK(hold)

static PyObject *Engine_fileno(Engine *self, PyObject *Py_UNUSED(ignored)) {
    if (check_open(self) < 0) return NULL;
    return PyLong_FromLong(self->threaded ? self->notefd : self->epfd);
}

static PyObject *Engine_close(Engine *self, PyObject *Py_UNUSED(ignored)) {
    close_all(self);
    Py_RETURN_NONE;
}

static PyObject *Engine_get_in_flight(Engine *self, void *Py_UNUSED(closure)) {
    lock(self);
    int in_flight = self->in_flight;
    unlock(self);
    return PyLong_FromLong(in_flight);
}

static PyObject *Engine_get_finished(Engine *self, void *Py_UNUSED(closure)) {
    return PyLong_FromLong(self->finished);
}

static Py_ssize_t Engine_len(Engine *self) { return self->live_count; } /* Python's count */

static PyObject *Engine_get_threaded(Engine *self, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(self->threaded);
}

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
    {"threaded", (getter)Engine_get_threaded, NULL, "the engine runs in a thread of its own", NULL},
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
        PyModule_AddIntConstant(m, "MAX_HEAD_BYTES", MAX_HEAD_BYTES) < 0 ||
        PyModule_AddIntConstant(m, "PENDING_MAX", PENDING_MAX) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
