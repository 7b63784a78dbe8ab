/* The keys the hot paths encode themselves (hot.h hot_key): into exactly the
 * bytes objects/codec.py encode_key makes for them, so that a key written
 * here is found by the general path and the other way round.
 *
 *   a non-empty str   its UTF-8 (the str keeps it: no copy);
 *   an int (no bool)  0xFF 'I', its length as 4 bytes big-endian, then its value
 *                     in two's complement, big-endian, in (bit_length + 8) // 8
 *                     bytes (codec._int), for values that fit 64 bits;
 *   bytes             0xFF 'B', its length, its bytes;
 *   a tuple           0xFF 'T', its length, then each item tagged: a str as
 *                     0xFF 'S', its length and its UTF-8, None as 0xFF 'N' and
 *                     a zero length, ints, bytes and tuples (8 deep) as above.
 *
 * Each of these is its own canonical form (no display suffix follows), so the
 * key's bytes are also its compared length.  Every other key -- subclasses
 * (bool, IntEnum, StrEnum, namedtuples), a str with lone surrogates, larger
 * ints, floats, frozensets, a tuple holding any of those, anything past
 * HOT_KEY_MAX bytes -- is the general path's. */
#include "hot.h"
#include <string.h>

#define MAX_DEPTH 8

typedef struct {
    unsigned char *buf;
    Py_ssize_t pos;
} writer;

static void put_u32_be(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Room for a tag, a length and n bytes after it: 1, or 0 (too long for buf). */
static int room(writer *w, Py_ssize_t n)
{
    return n >= 0 && n <= HOT_KEY_MAX - 6 - w->pos;
}

static void put_tagged(writer *w, char tag, const void *body, Py_ssize_t n)
{
    w->buf[w->pos] = 0xFF;
    w->buf[w->pos + 1] = (unsigned char)tag;
    put_u32_be(w->buf + w->pos + 2, (uint32_t)n);
    if (n)
        memcpy(w->buf + w->pos + 6, body, (size_t)n);
    w->pos += 6 + n;
}

/* int.bit_length() of v: the bits of |v|, without overflowing on INT64_MIN. */
static int bit_length(long long v)
{
    uint64_t mag = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    return mag ? 64 - __builtin_clzll(mag) : 0;
}

static int put_int(writer *w, PyObject *key)
{
    unsigned char body[9];
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(key, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    int n = (bit_length(v) + 8) / 8;    /* 1..9 */
    if (overflow || !room(w, n))
        return 0;
    for (int i = 0; i < n; i++)         /* byte n-1-i holds bits 8i..8i+7 */
        body[n - 1 - i] = i < 8 ? (unsigned char)((uint64_t)v >> (8 * i))
                                : (unsigned char)(v < 0 ? 0xFF : 0);
    put_tagged(w, 'I', body, n);
    return 1;
}

/* A str's UTF-8, or NULL: 0 in *rc for lone surrogates (no error left set), -1
 * for any other error. */
static const char *utf8(PyObject *s, Py_ssize_t *n, int *rc)
{
    const char *p = PyUnicode_AsUTF8AndSize(s, n);
    if (!p) {
        *rc = PyErr_ExceptionMatches(PyExc_UnicodeEncodeError) ? 0 : -1;
        if (!*rc)
            PyErr_Clear();  /* the general path encodes them (surrogatepass) */
    }
    return p;
}

/* One tagged item (the top-level key, or a tuple's item): 1, 0 (not ours), -1. */
static int put_item(writer *w, PyObject *o, int depth)
{
    Py_ssize_t n;
    int rc = 1;
    if (PyLong_CheckExact(o))
        return put_int(w, o);
    if (PyUnicode_CheckExact(o)) {
        const char *p = utf8(o, &n, &rc);
        if (!p || !room(w, n))
            return p ? 0 : rc;
        put_tagged(w, 'S', p, n);
        return 1;
    }
    if (PyBytes_CheckExact(o)) {
        n = PyBytes_Size(o);
        if (!room(w, n))
            return 0;
        put_tagged(w, 'B', PyBytes_AsString(o), n);
        return 1;
    }
    if (o == Py_None) {
        if (!room(w, 0))
            return 0;
        put_tagged(w, 'N', NULL, 0);
        return 1;
    }
    if (PyTuple_CheckExact(o) && depth < MAX_DEPTH && room(w, 0)) {
        Py_ssize_t start = w->pos;
        put_tagged(w, 'T', NULL, 0);
        for (Py_ssize_t i = 0; i < PyTuple_Size(o); i++)
            if ((rc = put_item(w, PyTuple_GetItem(o, i), depth + 1)) <= 0)
                return rc;
        put_u32_be(w->buf + start + 2, (uint32_t)(w->pos - start - 6));
        return 1;
    }
    return 0;
}

/* See hot.h. */
int hot_key(PyObject *key, char buf[HOT_KEY_MAX], const char **kp, Py_ssize_t *klen)
{
    writer w = {(unsigned char *)buf, 0};
    int rc = 1;
    if (PyUnicode_CheckExact(key)) {  /* the plain UTF-8, untagged */
        *kp = utf8(key, klen, &rc);
        return *kp ? *klen > 0 : rc;
    }
    if ((rc = put_item(&w, key, 0)) <= 0)
        return rc;
    *kp = buf;
    *klen = w.pos;
    return 1;
}
