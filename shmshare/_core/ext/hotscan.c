/* parse_scan(data, n, decode): the records of a dict scan batch (src/dict_scan.c,
 * shms_dict_scan) as a list of (seq, key, value) tuples, in one C call instead
 * of a Python loop of struct unpacks and slices (_core/heap_dict.py dict_scan).
 *
 * A record is seq, klen, vlen (8 bytes each, native order), the key's klen
 * bytes, the value's vlen bytes (none when vlen is 2**64 - 1: the value is
 * None), padded to 8 bytes.  decode None: the key is its bytes.  Otherwise the
 * key is decoded as objects/codec.py decode_key decodes it -- here for the two
 * encodings that are their own canonical form (hotkeys.c): plain UTF-8 with no
 * 0xFF byte (a str), and an int's tag with no display suffix after it, of up
 * to 8 bytes; every other key is decode(key bytes). */
#include "hot.h"
#include <string.h>

#define NO_VALUE UINT64_MAX

static uint64_t u64_at(const char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint32_t u32_be(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A key codec.decode_key would decode to what this returns, or decode(key). */
static PyObject *key_object(const char *k, uint64_t klen, PyObject *decode)
{
    const unsigned char *u = (const unsigned char *)k;
    if (klen && u[0] != 0xFF && !memchr(k, 0xFF, (size_t)klen))
        return PyUnicode_DecodeUTF8(k, (Py_ssize_t)klen, "surrogatepass");
    if (klen >= 7 && u[0] == 0xFF && u[1] == 'I' && klen <= 6 + 8 && u32_be(u + 2) == klen - 6) {
        int64_t v = (u[6] & 0x80) ? -1 : 0;       /* two's complement, big-endian */
        for (uint64_t i = 6; i < klen; i++)
            v = (int64_t)((uint64_t)v << 8 | u[i]);
        return PyLong_FromLongLong((long long)v);
    }
    PyObject *raw = PyBytes_FromStringAndSize(k, (Py_ssize_t)klen);
    if (!raw)
        return NULL;
    PyObject *key = PyObject_CallFunctionObjArgs(decode, raw, NULL);
    Py_DECREF(raw);
    return key;
}

static PyObject *parse_scan(PyObject *Py_UNUSED(module), PyObject *args)
{
    const char *data;
    Py_ssize_t size, n;
    PyObject *decode, *out;
    if (!PyArg_ParseTuple(args, "y#nO", &data, &size, &n, &decode))
        return NULL;
    if (n < 0 || !(out = PyList_New(n)))
        return n < 0 ? (PyErr_SetString(PyExc_ValueError, "parse_scan: n < 0"), NULL) : NULL;
    uint64_t pos = 0, end = (uint64_t)size;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (pos > end || end - pos < 24)
            goto short_data;
        uint64_t seq = u64_at(data + pos), klen = u64_at(data + pos + 8),
                 vlen = u64_at(data + pos + 16);
        pos += 24;
        if (klen > end - pos || (vlen != NO_VALUE && vlen > end - pos - klen))
            goto short_data;
        PyObject *key = decode == Py_None
                            ? PyBytes_FromStringAndSize(data + pos, (Py_ssize_t)klen)
                            : key_object(data + pos, klen, decode);
        pos += klen;
        PyObject *val;
        if (vlen == NO_VALUE) {
            val = Py_NewRef(Py_None);
        } else {
            val = PyBytes_FromStringAndSize(data + pos, (Py_ssize_t)vlen);
            pos += vlen;
        }
        pos = (pos + 7) & ~(uint64_t)7;
        PyObject *rec = key && val ? Py_BuildValue("(KNN)", (unsigned long long)seq, key, val)
                                   : NULL;
        if (!rec) {
            Py_XDECREF(key);
            Py_XDECREF(val);
            Py_DECREF(out);
            return NULL;
        }
        PyList_SetItem(out, i, rec);
    }
    return out;
short_data:
    Py_DECREF(out);
    PyErr_SetString(PyExc_ValueError, "parse_scan: a record runs past the batch's bytes");
    return NULL;
}

static PyMethodDef scan_funcs[] = {
    {"parse_scan", parse_scan, METH_VARARGS,
     "parse_scan(data, n, decode): the n records of a dict scan batch, (seq, key, value), "
     "keys decoded as decode_key does (decode None: their bytes)."},
    {NULL, NULL, 0, NULL},
};

int shms_hot_add_scan_funcs(PyObject *module)
{
    return PyModule_AddFunctions(module, scan_funcs);
}
