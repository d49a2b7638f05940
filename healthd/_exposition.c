/*
 * healthd._exposition: the bulk of /metrics, the Prometheus text format (0.0.4), written in C.
 *
 * The per-check and per-real-server families are most of the exposition (10 000 real servers:
 * about 510 000 lines, 52 MB).  Written in Python they cost ~60 ms of CPU per scrape even when
 * most of the text was kept from the scrape before (31 MB of memory held between scrapes); here
 * each line is a few copies into one growing buffer.  healthd/metrics/text.py calls these three
 * functions for a slice of a family's rows at a time and falls back to Python when this module
 * is not built; the two write the same bytes (tests/test_metrics_text.py holds them to it and to
 * prometheus_client).
 *
 *   column(start, blocks, values) -> bytes
 *       start + block + "} " + number(value) + "\n" for each label block and value
 *   groups(start, blocks, label, pairs) -> bytes
 *       for each block and each (x, value) of its pairs:
 *       start + block + "," + label + "=\"" + x + "\"} " + number(value) + "\n"
 *   histograms(start, les, blocks, histograms) -> bytes
 *       for each block and histogram (counts, count, total; counts per bucket, not cumulative):
 *       start + "_bucket{" + block + le + "} " + cumulative count, per bucket, then +Inf,
 *       "_count{", "_sum{" (start is the family's name here)
 *
 * number() writes an int (exactly int) in decimal and anything else as a float the way
 * Python's repr does ("+Inf", "-Inf", "NaN" for the non-finite ones), as text.number does.
 * Label blocks and label values are str, written as their UTF-8 (escaped by the caller).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

/* The text is written straight into a bytes object that grows as needed (realloc) and is cut
 * to its length at the end: no copy of the whole at the end. */
typedef struct {
    PyObject *bytes; /* NULL until the first grow */
    char *data;
    Py_ssize_t len, cap;
} buf_t;

static int grow(buf_t *b, Py_ssize_t need) {
    if (b->len + need <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + need) cap *= 2;
    if (b->bytes == NULL) {
        b->bytes = PyBytes_FromStringAndSize(NULL, cap);
        if (!b->bytes) return -1;
    } else if (_PyBytes_Resize(&b->bytes, cap) < 0) {
        return -1; /* b->bytes is NULL now: freed */
    }
    b->data = PyBytes_AS_STRING(b->bytes);
    b->cap = cap;
    return 0;
}

static inline int put(buf_t *b, const char *s, Py_ssize_t n) {
    if (grow(b, n) < 0) return -1;
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

static inline int put_str(buf_t *b, PyObject *s) {
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(s, &n); /* ASCII: the str's own buffer, no copy */
    if (!p) return -1;
    return put(b, p, n);
}

static inline int put_u64(buf_t *b, uint64_t v) {
    char tmp[24];
    int i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return put(b, tmp + i, (Py_ssize_t)sizeof tmp - i);
}

static int put_double(buf_t *b, double v) {
    if (isnan(v)) return put(b, "NaN", 3);
    if (isinf(v)) return v > 0 ? put(b, "+Inf", 4) : put(b, "-Inf", 4);
    if (fabs(v) < 5e11) {
        /* a whole number of thousandths (healthd keeps its Unix times to the millisecond; a
         * whole number is one too): its decimal digits, as repr writes them.  Below 2**39 two doubles are less than
         * 0.0005 apart, so the three-decimal number closest to v is the only one that
         * reads back as v; any other string that does needs a fourth decimal, so a digit
         * more: this is the shortest, and repr writes the shortest. */
        long long x = llround(v * 1000.0);
        if ((double)x / 1000.0 == v) {
            if (x < 0 || signbit(v)) { /* -0.0 too */
                if (put(b, "-", 1) < 0) return -1;
                x = -x;
            }
            char frac[4] = {(char)('0' + x % 1000 / 100), (char)('0' + x % 100 / 10),
                            (char)('0' + x % 10), 0};
            Py_ssize_t digits = 3;
            while (digits > 1 && frac[digits - 1] == '0') digits--;
            if (put_u64(b, (uint64_t)(x / 1000)) < 0 || put(b, ".", 1) < 0) return -1;
            return put(b, frac, digits);
        }
    }
    char *text = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!text) return -1;
    int rc = put(b, text, (Py_ssize_t)strlen(text));
    PyMem_Free(text);
    return rc;
}

/* number(value): exactly int -> decimal; otherwise a float, as repr writes it */
static int put_number(buf_t *b, PyObject *v) {
    if (PyLong_CheckExact(v)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (x == -1 && PyErr_Occurred()) return -1;
        if (!overflow) {
            if (x < 0) {
                if (put(b, "-", 1) < 0) return -1;
                return put_u64(b, (uint64_t)0 - (uint64_t)x);
            }
            return put_u64(b, (uint64_t)x);
        }
        PyObject *text = PyObject_Str(v); /* beyond 64 bits: Python writes it */
        if (!text) return -1;
        int rc = put_str(b, text);
        Py_DECREF(text);
        return rc;
    }
    double d = PyFloat_AsDouble(v);
    if (d == -1.0 && PyErr_Occurred()) return -1;
    return put_double(b, d);
}

static PyObject *done(buf_t *b, int ok) {
    if (!ok) {
        Py_XDECREF(b->bytes);
        return NULL;
    }
    if (b->bytes == NULL) return PyBytes_FromStringAndSize("", 0);
    if (_PyBytes_Resize(&b->bytes, b->len) < 0) return NULL;
    return b->bytes;
}

/* Two sequences of the same length, as lists or tuples (a list or tuple is taken as it is). */
static int fast_pair(PyObject *a_in, PyObject *b_in, PyObject **a, PyObject **b) {
    *a = PySequence_Fast(a_in, "label blocks: a sequence");
    if (!*a) return -1;
    *b = PySequence_Fast(b_in, "values: a sequence");
    if (!*b) {
        Py_CLEAR(*a);
        return -1;
    }
    if (PySequence_Fast_GET_SIZE(*a) != PySequence_Fast_GET_SIZE(*b)) {
        PyErr_SetString(PyExc_ValueError, "label blocks and values differ in length");
        Py_CLEAR(*a);
        Py_CLEAR(*b);
        return -1;
    }
    return 0;
}

static PyObject *ex_column(PyObject *mod, PyObject *args) {
    const char *start;
    Py_ssize_t start_len;
    PyObject *blocks_in, *values_in;
    if (!PyArg_ParseTuple(args, "y#OO", &start, &start_len, &blocks_in, &values_in)) return NULL;
    PyObject *blocks = NULL, *values = NULL;
    if (fast_pair(blocks_in, values_in, &blocks, &values) < 0) return NULL;
    buf_t b = {0};
    int ok = 0;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(blocks);
    if (grow(&b, n * (start_len + 48)) < 0) goto out;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (put(&b, start, start_len) < 0 ||
            put_str(&b, PySequence_Fast_GET_ITEM(blocks, i)) < 0 || put(&b, "} ", 2) < 0 ||
            put_number(&b, PySequence_Fast_GET_ITEM(values, i)) < 0 || put(&b, "\n", 1) < 0)
            goto out;
    }
    ok = 1;
out:
    Py_DECREF(blocks);
    Py_DECREF(values);
    return done(&b, ok);
}

static PyObject *ex_groups(PyObject *mod, PyObject *args) {
    const char *start;
    Py_ssize_t start_len;
    PyObject *blocks_in, *label, *pairs_in;
    if (!PyArg_ParseTuple(args, "y#OUO", &start, &start_len, &blocks_in, &label, &pairs_in))
        return NULL;
    PyObject *blocks = NULL, *pairs = NULL;
    if (fast_pair(blocks_in, pairs_in, &blocks, &pairs) < 0) return NULL;
    buf_t b = {0};
    int ok = 0;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(blocks);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *block = PySequence_Fast_GET_ITEM(blocks, i);
        PyObject *row = PySequence_Fast_GET_ITEM(pairs, i);
        if (!PyTuple_Check(row)) {
            PyErr_SetString(PyExc_TypeError, "pairs: a tuple of (label value, sample) per block");
            goto out;
        }
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(row); j++) {
            PyObject *pair = PyTuple_GET_ITEM(row, j);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
                !PyUnicode_Check(PyTuple_GET_ITEM(pair, 0))) {
                PyErr_SetString(PyExc_TypeError, "a pair is (str, number)");
                goto out;
            }
            if (put(&b, start, start_len) < 0 || put_str(&b, block) < 0 || put(&b, ",", 1) < 0 ||
                put_str(&b, label) < 0 || put(&b, "=\"", 2) < 0 ||
                put_str(&b, PyTuple_GET_ITEM(pair, 0)) < 0 || put(&b, "\"} ", 3) < 0 ||
                put_number(&b, PyTuple_GET_ITEM(pair, 1)) < 0 || put(&b, "\n", 1) < 0)
                goto out;
        }
    }
    ok = 1;
out:
    Py_DECREF(blocks);
    Py_DECREF(pairs);
    return done(&b, ok);
}

static PyObject *s_counts, *s_count, *s_total; /* interned attribute names */

static PyObject *ex_histograms(PyObject *mod, PyObject *args) {
    const char *name;
    Py_ssize_t name_len;
    PyObject *les, *blocks_in, *hists_in;
    if (!PyArg_ParseTuple(args, "y#O!OO", &name, &name_len, &PyTuple_Type, &les, &blocks_in,
                          &hists_in))
        return NULL;
    PyObject *blocks = NULL, *hists = NULL;
    if (fast_pair(blocks_in, hists_in, &blocks, &hists) < 0) return NULL;
    Py_ssize_t nb = PyTuple_GET_SIZE(les);
    const char **le = PyMem_Malloc(sizeof(char *) * (size_t)(nb + 1));
    Py_ssize_t *le_len = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(nb + 1));
    buf_t b = {0};
    PyObject *counts = NULL, *count = NULL, *total = NULL;
    if (!le || !le_len) {
        PyErr_NoMemory();
        goto error;
    }
    for (Py_ssize_t j = 0; j < nb; j++) {
        PyObject *item = PyTuple_GET_ITEM(les, j);
        le[j] = PyUnicode_Check(item) ? PyUnicode_AsUTF8AndSize(item, &le_len[j]) : NULL;
        if (!le[j]) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "les: a tuple of str");
            goto error;
        }
    }
    le[nb] = ",le=\"+Inf\"";
    le_len[nb] = (Py_ssize_t)strlen(le[nb]);
    /* name + "_bucket{", "_count{", "_sum{": the start of every line */
    char starts[3][256];
    Py_ssize_t starts_len[3];
    const char *what[3] = {"_bucket{", "_count{", "_sum{"};
    if (name_len > 200) {
        PyErr_SetString(PyExc_ValueError, "a metric name that long");
        goto error;
    }
    for (int k = 0; k < 3; k++) {
        memcpy(starts[k], name, (size_t)name_len);
        size_t w = strlen(what[k]);
        memcpy(starts[k] + name_len, what[k], w);
        starts_len[k] = name_len + (Py_ssize_t)w;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(blocks);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *block = PySequence_Fast_GET_ITEM(blocks, i);
        PyObject *h = PySequence_Fast_GET_ITEM(hists, i);
        Py_ssize_t block_len;
        const char *block_text = PyUnicode_Check(block) ? PyUnicode_AsUTF8AndSize(block, &block_len)
                                                        : NULL;
        if (!block_text) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "blocks: a list of str");
            goto error;
        }
        counts = PyObject_GetAttr(h, s_counts);
        count = counts ? PyObject_GetAttr(h, s_count) : NULL;
        total = count ? PyObject_GetAttr(h, s_total) : NULL;
        if (!total) goto error;
        if (!PyList_Check(counts) || PyList_GET_SIZE(counts) != nb) {
            PyErr_SetString(PyExc_ValueError, "a histogram's counts and its bounds differ");
            goto error;
        }
        /* the longest line: a start, the block, an le, "} ", 20 digits, "\n" */
        Py_ssize_t longest = starts_len[0] + block_len + 64;
        for (Py_ssize_t j = 0; j <= nb; j++)
            if (starts_len[0] + block_len + le_len[j] + 24 > longest)
                longest = starts_len[0] + block_len + le_len[j] + 24;
        if (grow(&b, (nb + 3) * longest) < 0) goto error;
        uint64_t cumulative = 0;
        for (Py_ssize_t j = 0; j < nb; j++) {
            unsigned long long c = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(counts, j));
            if (c == (unsigned long long)-1 && PyErr_Occurred()) goto error;
            cumulative += c;
            if (put(&b, starts[0], starts_len[0]) < 0 || put(&b, block_text, block_len) < 0 ||
                put(&b, le[j], le_len[j]) < 0 || put(&b, "} ", 2) < 0 ||
                put_u64(&b, cumulative) < 0 || put(&b, "\n", 1) < 0)
                goto error;
        }
        if (put(&b, starts[0], starts_len[0]) < 0 || put(&b, block_text, block_len) < 0 ||
            put(&b, le[nb], le_len[nb]) < 0 || put(&b, "} ", 2) < 0 ||
            put_number(&b, count) < 0 || put(&b, "\n", 1) < 0 ||
            put(&b, starts[1], starts_len[1]) < 0 || put(&b, block_text, block_len) < 0 ||
            put(&b, "} ", 2) < 0 || put_number(&b, count) < 0 || put(&b, "\n", 1) < 0 ||
            put(&b, starts[2], starts_len[2]) < 0 || put(&b, block_text, block_len) < 0 ||
            put(&b, "} ", 2) < 0 || put_number(&b, total) < 0 || put(&b, "\n", 1) < 0)
            goto error;
        Py_CLEAR(counts);
        Py_CLEAR(count);
        Py_CLEAR(total);
    }
    PyMem_Free(le);
    PyMem_Free(le_len);
    Py_DECREF(blocks);
    Py_DECREF(hists);
    return done(&b, 1);
error:
    Py_XDECREF(counts);
    Py_XDECREF(count);
    Py_XDECREF(total);
    PyMem_Free(le);
    PyMem_Free(le_len);
    Py_DECREF(blocks);
    Py_DECREF(hists);
    return done(&b, 0);
}

static PyMethodDef methods[] = {
    {"column", ex_column, METH_VARARGS,
     "column(start, blocks, values) -> bytes: one line per label block and value"},
    {"groups", ex_groups, METH_VARARGS,
     "groups(start, blocks, label, pairs) -> bytes: per block, a line per (label value, sample)"},
    {"histograms", ex_histograms, METH_VARARGS,
     "histograms(name, les, blocks, histograms) -> bytes: per block, a histogram's lines"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "healthd._exposition",
    "The bulk of /metrics in the Prometheus text format (see healthd/metrics/text.py).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__exposition(void) {
    s_counts = PyUnicode_InternFromString("counts");
    s_count = PyUnicode_InternFromString("count");
    s_total = PyUnicode_InternFromString("total");
    if (!s_counts || !s_count || !s_total) return NULL;
    return PyModule_Create(&module);
}
